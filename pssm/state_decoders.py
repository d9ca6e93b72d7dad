"""Exact state decoders of discrete-state models, as the core's reports find them.

The algorithms live in :mod:`pssm.inference` (forward-backward smoothing, Viterbi); the core does not import it.
:mod:`pssm.inference.exact.discrete` registers its functions here when it is imported, which has happened by the
time any result from it reaches :func:`pssm.reporting.report`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register_state_decoders", "state_decoder"]

_DECODERS: dict[str, Callable[..., Any]] = {}


def register_state_decoders(*, smoother: Callable[..., Any], most_likely_states: Callable[..., Any]) -> None:
    """Register ``smoother(model, params, data)`` (posterior state probabilities) and
    ``most_likely_states(model, params, data)`` (the Viterbi path)."""
    _DECODERS.update(smoother=smoother, most_likely_states=most_likely_states)


def state_decoder(name: str) -> Callable[..., Any] | None:
    """The registered ``"smoother"`` or ``"most_likely_states"`` (``None`` before :mod:`pssm.inference` loads)."""
    return _DECODERS.get(name)
