"""Conversion of pssm results to ArviZ ``InferenceData``.

:func:`to_arviz` is a ``functools.singledispatch`` function: each results ``NamedTuple`` registers its converter
next to the algorithm that produces it (``@to_arviz.register(MyResult)``), so the core imports no algorithm.
Conventions: exact posterior summaries (no draws) go to the ``posterior`` group with ``chain`` and ``draw`` of
length 1; per-time log-likelihood increments to ``log_likelihood``; data to ``observed_data``; diagnostics
(ESS, resampling flags, acceptance) to ``sample_stats``.  Dimension names: ``time``, ``state``, ``latent_dim``,
``obs_dim``, ``neuron``, ``presyn``, ``trial``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import arviz as az

__all__ = ["to_arviz", "summary_group", "as_single_draw"]


@functools.singledispatch
def to_arviz(result: Any, **kwargs: Any) -> az.InferenceData:
    """Convert a pssm result to :class:`arviz.InferenceData` (see the module docstring for conventions)."""
    raise TypeError(
        f"to_arviz has no converter for {type(result).__name__}; pass a pssm result NamedTuple "
        "(or a numpyro.infer.MCMC, which converts with arviz.from_numpyro)."
    )


def as_single_draw(values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Add leading ``chain`` and ``draw`` axes of length 1 to exact (non-sampled) quantities."""
    return {k: np.asarray(v)[None, None] for k, v in values.items() if v is not None}


def summary_group(
    posterior: Mapping[str, Any],
    dims: Mapping[str, list[str]],
    coords: Mapping[str, Any] | None = None,
    *,
    observed_data: Mapping[str, Any] | None = None,
    log_likelihood: Mapping[str, Any] | None = None,
    sample_stats: Mapping[str, Any] | None = None,
    constant_data: Mapping[str, Any] | None = None,
) -> az.InferenceData:
    """Build ``InferenceData`` for exact results (``posterior``, ``log_likelihood``, ``sample_stats``: one draw)."""
    import arviz as az

    kw: dict[str, Any] = {"posterior": as_single_draw(posterior), "dims": dict(dims), "coords": dict(coords or {})}
    if observed_data is not None:
        kw["observed_data"] = {k: np.asarray(v) for k, v in observed_data.items()}
    if log_likelihood is not None:
        kw["log_likelihood"] = as_single_draw(log_likelihood)
    if sample_stats is not None:
        kw["sample_stats"] = as_single_draw(sample_stats)
    if constant_data is not None:
        kw["constant_data"] = {k: np.asarray(v) for k, v in constant_data.items()}
    return az.from_dict(**kw)
