"""Expectation–maximisation for discrete-state models over many (ragged) sequences.

E-step: exact forward-backward on the protocol's log potentials for every sequence (``vmap``), giving
:math:`\\gamma_t(s) = p(z_t = s \\mid y)` and expected transition counts
:math:`\\xi(i,j) = \\sum_t p(z_t=i, z_{t+1}=j \\mid y)`.  M-step: closed form for the initial distribution and the
transition matrix (MAP under the model's Dirichlet prior, if any),

.. math::  \\hat A_{ij} \\propto \\textstyle\\sum_{\\text{seq}} \\xi(i,j) + \\alpha_{ij} - 1,

and for the emissions a user-supplied (or the model's closed-form) weighted update.  Each EM iteration is one
jitted function; the Python loop around it gives a progress bar, a log-likelihood trace, a convergence test on the
relative change of the objective, and resumability (pass the returned params back in).  :func:`fit_em_restarts`
runs several initialisations and keeps the best.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray
from pssm.inference.forward_backward import HMMPosterior, hmm_smoother
from tqdm.auto import tqdm

from pssm.protocol import SSM, PyTree, discrete_log_potentials

__all__ = [
    "EMResult",
    "Batch",
    "as_batch",
    "closed_form_emission_m_step",
    "e_step",
    "fit_em",
    "fit_em_restarts",
    "m_step_transitions",
]


class Batch(NamedTuple):
    """A padded batch of sequences (the arrays EM works on)."""

    emissions: Array  # (B, T, ...)
    mask: Bool[Array, "B T"]
    lengths: Int[Array, " B"]
    inputs: PyTree = None  # leaves (B, T, ...)


class EMResult(NamedTuple):
    params: PyTree
    log_likelihoods: Float[Array, " iters"]
    """Marginal log-likelihood of all sequences at the params *entering* each iteration."""
    log_objective: Float[Array, " iters"]
    """Log-likelihood + log prior (what EM increases monotonically)."""
    converged: bool
    num_iterations: int
    posterior: HMMPosterior | None = None
    """Batched forward-backward output at the final params."""


def as_batch(emissions: Any, mask=None, lengths=None, inputs=None, kind: str | None = None) -> Batch:
    """Normalise user data: one sequence ``(T, D)``, a padded batch ``(B, T, D)`` or a ``Sequences`` object.

    Rows holding a NaN are missing observations: they are masked out of the likelihood (and set to 0).
    ``kind`` (``'counts'``, ``'categorical'``, ``'real'``) checks the observed values at this boundary.
    """
    if hasattr(emissions, "mask") and hasattr(emissions, "lengths"):
        return Batch(
            jnp.asarray(emissions.emissions),
            jnp.asarray(emissions.mask, bool),
            jnp.asarray(emissions.lengths),
            getattr(emissions, "inputs", None),
        )
    y = jnp.asarray(emissions)
    if y.ndim == 2:  # single sequence (T, D)
        y = y[None]
        mask = None if mask is None else jnp.asarray(mask)[None]
        inputs = None if inputs is None else jax.tree.map(lambda a: jnp.asarray(a)[None], inputs)
    if y.ndim < 3:
        raise ValueError(f"emissions must be (T, D) or (B, T, D); got shape {y.shape}.")
    B, T = y.shape[:2]
    if T < 1:
        raise ValueError("emissions has no time steps; every sequence needs length >= 1.")
    lengths = jnp.full((B,), T) if lengths is None else jnp.asarray(lengths)
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one length per sequence); got {lengths.shape}.")
    if not isinstance(lengths, jax.core.Tracer) and (
        np.any(np.asarray(lengths) < 1) or np.any(np.asarray(lengths) > T)
    ):
        raise ValueError(f"lengths must lie in [1, {T}] (every sequence needs at least one step); got {lengths}.")
    valid = jnp.arange(T)[None, :] < lengths[:, None]
    mask = valid if mask is None else jnp.asarray(mask, bool) & valid
    if mask.shape != (B, T):
        raise ValueError(f"mask must have shape ({B}, {T}); got {mask.shape}.")
    if jnp.issubdtype(y.dtype, jnp.floating):
        nan_rows = jnp.isnan(y.reshape(B, T, -1)).any(-1)
        mask = mask & ~nan_rows
        y = jnp.where(jnp.isnan(y), 0, y)
    if kind is not None and not isinstance(y, jax.core.Tracer):
        _check_kind(np.asarray(y)[np.asarray(mask)], kind)
    return Batch(y, mask, lengths, inputs)


def _check_kind(observed: np.ndarray, kind: str) -> None:
    from pssm.validation import check_array, check_counts

    if kind == "counts":
        check_counts(observed, "emissions")
    elif kind == "categorical":
        check_counts(observed, "emissions")  # class labels are non-negative integers
    else:
        check_array(observed, "emissions", finite=True)


def _posterior_one(model, params, y, mask, length, inputs):
    li, lt, ll = discrete_log_potentials(model, params, y, inputs, mask)
    return hmm_smoother(li, lt, ll, length)


@eqx.filter_jit
def e_step(model: SSM, params: PyTree, batch: Batch) -> HMMPosterior:
    """Batched forward-backward (leading axis = sequence)."""
    fn = lambda y, m, n, u: _posterior_one(model, params, y, m, n, u)  # noqa: E731
    return jax.vmap(fn)(batch.emissions, batch.mask, batch.lengths, batch.inputs)


def m_step_transitions(
    posterior: HMMPosterior, concentration: Float[Array, "S S"] | None = None
) -> tuple[Float[Array, " S"], Float[Array, "S S"]]:
    """Closed-form MAP initial distribution and transition matrix from batched posteriors."""
    pi = posterior.smoothed_probs[:, 0].sum(0)
    pi = pi / pi.sum()
    counts = posterior.expected_transitions.sum(0)
    if concentration is not None:
        counts = counts + concentration - 1.0
    counts = jnp.maximum(counts, 1e-12)
    return pi, counts / counts.sum(1, keepdims=True)


def closed_form_emission_m_step(model: SSM, eparams: PyTree, batch: Batch, weights: Array) -> PyTree:
    """The model's closed-form weighted emission update (``model.emission_model.m_step``) on a flattened batch."""
    y = batch.emissions.reshape((-1,) + batch.emissions.shape[2:])
    if y.ndim == 1:
        y = y[:, None]
    w = weights.reshape(-1, weights.shape[-1])
    return model.emission_model.m_step(eparams, y, w)


@eqx.filter_jit
def _em_iteration(model, emission_m_step, log_prior, params, batch):
    post = e_step(model, params, batch)
    ll = post.log_likelihood.sum()
    obj = ll + (log_prior(params) if log_prior is not None else 0.0)
    conc = model.transition_prior_concentration() if hasattr(model, "transition_prior_concentration") else None
    pi, A = m_step_transitions(post, conc)
    weights = post.smoothed_probs * batch.mask[..., None]
    if emission_m_step is None:
        em = closed_form_emission_m_step(model, params.emissions, batch, weights)
    else:
        em = emission_m_step(params.emissions, batch, weights)
    return params._replace(initial_probs=pi, transition_matrix=A, emissions=em), ll, obj


def _data_kind(model) -> str | None:
    em = getattr(model, "emission_model", None)
    return em.data_kind() if em is not None and hasattr(em, "data_kind") else None


def fit_em(
    model: SSM,
    params: PyTree,
    emissions: Any,
    *,
    mask: Bool[Array, "B T"] | None = None,
    lengths: Int[Array, " B"] | None = None,
    inputs: PyTree = None,
    num_iters: int = 100,
    tol: float = 1e-6,
    emission_m_step: Callable[[PyTree, Batch, Array], PyTree] | None = None,
    log_prior: Callable[[PyTree], Array] | None = None,
    progress: bool = False,
) -> EMResult:
    """Fit a discrete-state model by EM.

    ``params`` must have fields ``initial_probs``, ``transition_matrix`` and ``emissions``.  ``emission_m_step``
    maps ``(emission_params, batch, weights (B, T, S))`` to new emission params (default: the model's
    closed-form ``emission_model.m_step``); ``weights`` are zero at masked/padded steps.  Stops when the
    relative change of the objective is below ``tol``.  Resume by passing ``result.params`` back in.
    """
    batch = as_batch(emissions, mask, lengths, inputs, kind=_data_kind(model))
    if emission_m_step is None and not hasattr(getattr(model, "emission_model", None), "m_step"):
        raise TypeError(
            f"{type(model).__name__} has no closed-form emission M-step; pass emission_m_step="
            "(emission_params, batch, weights) -> emission_params."
        )
    if log_prior is None:
        log_prior = getattr(model, "log_prior", None)

    lls, objs = [], []
    converged = False
    it = tqdm(range(num_iters), desc="EM", disable=not progress)
    for _ in it:
        new_params, ll, obj = _em_iteration(model, emission_m_step, log_prior, params, batch)
        ll, obj = float(ll), float(obj)
        if not np.isfinite(obj):
            raise FloatingPointError(
                f"EM objective became {obj} at iteration {len(lls)}; check the data (NaN/inf, counts for a "
                "Poisson model) and the initial params (zero rates/probabilities)."
            )
        lls.append(ll)
        objs.append(obj)
        it.set_postfix(loglik=f"{ll:.3f}")
        if len(objs) > 1 and abs(objs[-1] - objs[-2]) <= tol * (abs(objs[-2]) + 1.0):
            converged = True
            break
        params = new_params
    posterior = e_step(model, params, batch)
    return EMResult(params, jnp.asarray(lls), jnp.asarray(objs), converged, len(lls), posterior)


def fit_em_restarts(
    key: PRNGKeyArray,
    model: SSM,
    emissions: Any,
    *,
    num_restarts: int = 5,
    init_fn: Callable[[PRNGKeyArray], PyTree] | None = None,
    **kwargs: Any,
) -> tuple[EMResult, list[EMResult]]:
    """Run EM from ``num_restarts`` initialisations (``init_fn(key)``, default ``model.initialize(key, data)``)
    and return ``(best, all_results)``, best by final objective."""
    batch = as_batch(
        emissions, kwargs.pop("mask", None), kwargs.pop("lengths", None), kwargs.pop("inputs", None), _data_kind(model)
    )
    if init_fn is None:
        observed = np.asarray(batch.emissions)[np.asarray(batch.mask)]
        init_fn = lambda k: model.initialize(k, observed)  # noqa: E731
    results = [fit_em(model, init_fn(k), batch, **kwargs) for k in jax.random.split(key, num_restarts)]
    best = max(results, key=lambda r: float(r.log_objective[-1]))
    return best, results
