"""Exact inference for any discrete-state model on a batch of sequences (states summed out).

The model gives the log potentials (:func:`pssm.protocol.discrete_log_potentials`, via its vectorised hooks);
forward-backward and Viterbi run on each sequence (``vmap``).  The public functions coerce and check ``data``
against the model once (:func:`pssm.boundary.as_model_data`); the ``*_batch`` functions take the prepared data
and are what the fitting routines call inside ``jit``.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from pssm.boundary import as_model_data, is_single_sequence, unbatch
from pssm.data import Sequences
from pssm.inference.exact.forward_backward import HMMPosterior, hmm_filter, hmm_smoother, hmm_viterbi
from pssm.jit import runtime_checks
from pssm.protocol import DiscreteSSM, PyTree
from pssm.state_decoders import register_state_decoders

__all__ = [
    "log_potentials_batch",
    "posterior_batch",
    "smoother",
    "most_likely_states",
    "marginal_log_likelihood",
    "bits_per_spike",
]


def _potentials_one(model, params, y, mask, u, observed=None):
    T = y.shape[0]
    li = model.log_initial(params, u)
    lt = model.log_transition_matrices(params, T, u)
    if observed is None:
        ll = model.log_likelihoods(params, y, u)
    else:  # partly missing steps: only the observed entries count
        ll = model.observed_log_likelihoods(params, y, observed, u)
    return li, lt, jnp.where(mask[:, None], ll, 0.0)


def _each_sequence(fn, data: Sequences):
    """``vmap`` of ``fn(emissions, mask, lengths, inputs, observed)`` over the sequences of ``data``."""
    return jax.vmap(fn)(data.emissions, data.mask, data.lengths, data.inputs, data.observed)


def log_potentials_batch(model: DiscreteSSM, params: PyTree, data: Sequences):
    """``(log_initial, log_transitions, log_likelihoods)`` with a leading sequence axis (masked steps 0)."""
    return _each_sequence(lambda y, m, n, u, o: _potentials_one(model, params, y, m, u, o), data)


def posterior_batch(model: DiscreteSSM, params: PyTree, data: Sequences) -> HMMPosterior:
    """Forward-backward on every sequence of prepared ``data`` (leading axis = sequence)."""

    def one(y, m, n, u, o):
        return hmm_smoother(*_potentials_one(model, params, y, m, u, o), n)

    return _each_sequence(one, data)


@eqx.filter_jit
def _smoother(model, params, data):
    return posterior_batch(model, params, data)


@eqx.filter_jit
def _viterbi(model, params, data):
    def one(y, m, n, u, o):
        return hmm_viterbi(*_potentials_one(model, params, y, m, u, o), n)

    return _each_sequence(one, data)


@eqx.filter_jit
def _log_likelihood(model, params, data):
    def one(y, m, n, u, o):
        return hmm_filter(*_potentials_one(model, params, y, m, u, o), n).log_likelihood

    return _each_sequence(one, data)


def _prepare(model, params, data, inputs, lengths=None):
    if not getattr(model, "discrete_states", False):
        raise TypeError(f"{type(model).__name__} has continuous states; use kalman_smoother or the SMC engine.")
    if hasattr(model, "check_params"):
        model.check_params(params)
    return as_model_data(model, data, inputs, lengths=lengths)


def smoother(
    model: DiscreteSSM, params: PyTree, data: Any, *, inputs: PyTree = None, lengths: Any = None
) -> HMMPosterior:
    """Posterior state probabilities ``(B, T, S)``, expected transitions and log-likelihoods per sequence
    (``(T, S)`` etc. without the sequence axis when ``data`` is one array ``(T, ...)``)."""
    out = _smoother(model, params, _prepare(model, params, data, inputs, lengths))
    return unbatch(out) if is_single_sequence(model, data) else out


def most_likely_states(
    model: DiscreteSSM, params: PyTree, data: Any, *, inputs: PyTree = None, lengths: Any = None
) -> Int[Array, "B T"]:
    """Viterbi paths ``(B, T)`` (``-1`` at padded steps; ``(T,)`` when ``data`` is one array).  ``ValueError``
    when a sequence has probability zero (see ``smoother(...).impossible_step``)."""
    with runtime_checks("most_likely_states"):
        out = _viterbi(model, params, _prepare(model, params, data, inputs, lengths))
    return out[0] if is_single_sequence(model, data) else out


def marginal_log_likelihood(
    model: DiscreteSSM, params: PyTree, data: Any, *, inputs: PyTree = None, lengths: Any = None
) -> Float[Array, " B"]:
    """:math:`\\log p(y_b \\mid \\theta)` of every sequence (states summed out; a scalar for one array)."""
    out = _log_likelihood(model, params, _prepare(model, params, data, inputs, lengths))
    return out[0] if is_single_sequence(model, data) else out


def bits_per_spike(model: DiscreteSSM, params: PyTree, data: Any, baseline_rates: Any = None) -> float:
    """:math:`(\\log p(y) - \\log p_{hom}(y)) / (n_{spikes} \\ln 2)`: the information gain of a discrete-state
    count model (states summed out) over a homogeneous Poisson (or Bernoulli) model with one rate per unit;
    ``baseline_rates``: the training mean counts per bin (default: the data's own)."""
    import numpy as np

    from pssm.boundary import as_sequences
    from pssm.models.glm.metrics import homogeneous_log_likelihood

    seqs = as_sequences(model, data)
    ll = float(marginal_log_likelihood(model, params, seqs).sum())
    observation = getattr(getattr(model, "emission_component", None), "observation", "poisson")
    ll0 = float(homogeneous_log_likelihood(seqs, baseline_rates, observation))
    n = float((seqs.emissions * seqs.entries).sum())
    if n <= 0:
        raise ValueError("data contains no spikes; bits per spike is undefined.")
    return (ll - ll0) / (n * np.log(2.0))


register_state_decoders(smoother=smoother, most_likely_states=most_likely_states)  # for pssm.reporting (the core)
