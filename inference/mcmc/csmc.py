"""Conditional SMC: a particle filter with one particle pinned to a reference path (a Markov kernel on paths).

Slot 0 holds the reference path :math:`x^*_{0:T-1}` at every step; the other :math:`N-1` particles follow the
filter of :mod:`pssm.inference.smc.filter` with multinomial resampling at every step, which makes

.. math::  P(x^*, \\cdot) = \\int \\text{(conditional filter)} \\times \\text{(draw of a new path)}

a Markov kernel that leaves the smoothing distribution :math:`p_\\theta(x_{0:T-1} \\mid y_{0:T-1})` invariant
(Andrieu, Doucet & Holenstein 2010).  The new path is drawn by

* ``"ancestor"`` — ancestor sampling (PGAS, Lindsten, Jordan & Schön 2014): at each step the reference's ancestor
  is redrawn, :math:`P(a^0_t = i) \\propto W^i_{t-1} f_\\theta(x^*_t \\mid x^i_{t-1})`, and the new path is the
  genealogy of a final index :math:`b \\sim W_{T-1}`;
* ``"backward"`` — backward sampling (Whiteley 2010): :math:`b_{T-1} \\sim W_{T-1}`, then
  :math:`b_s \\sim W_s^l f_\\theta(x^{b_{s+1}}_{s+1} \\mid x^l_s)` with any backward kernel of
  :mod:`pssm.inference.smc.backward` (exact, hybrid rejection, independent MH);
* ``"trace"`` — plain ancestral tracing (the original CSMC; mixes poorly for long series, kept as a baseline).

Pure kernels :func:`csmc_init` / :func:`csmc_step` are scanned by :func:`conditional_smc`; :func:`csmc_kernel`
is the path-to-path Markov kernel used by particle Gibbs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from pssm.arviz import summary_group, to_arviz
from pssm.display import short_repr
from pssm.inference.smc.backward import BackwardKernel, check_backward_kernel
from pssm.inference.smc.ffbsi import ffbsi
from pssm.inference.smc.filter import (
    FeynmanKac,
    ParticleFilterInfo,
    ParticleFilterState,
    ParticleHistory,
    as_feynman_kac,
    particle_keys,
    propagate,
    reweight,
    select_ancestors,
    validate_sequence,
)
from pssm.inference.smc.resampling import ess_of_normalized, multinomial, normalize_log_weights
from pssm.protocol import SSM, PyTree, inputs_at
from pssm.validation import check_key, fill_missing, is_tracer

__all__ = [
    "REFERENCE_SLOT",
    "PATH_METHODS",
    "CSMCResult",
    "csmc_init",
    "csmc_step",
    "conditional_smc",
    "csmc_kernel",
    "trace_genealogy",
]

REFERENCE_SLOT = 0
"""Index of the pinned (reference) particle at every step."""

PATH_METHODS = ("ancestor", "backward", "trace")


class CSMCResult(NamedTuple):
    path: Array
    """New path ``(T, *event)``."""
    log_likelihood: Float[Array, ""]
    """Log normaliser of the conditional filter (not an unbiased likelihood estimate; a diagnostic)."""
    ess: Float[Array, " T"]
    """Particle ESS per step."""
    indices: Int[Array, " T"]
    """Particle index of the new path at each step (0 = the reference slot)."""
    history: ParticleHistory

    __repr__ = short_repr


@to_arviz.register(CSMCResult)
def _csmc_to_arviz(result: CSMCResult, *, emissions=None) -> Any:
    """The new path (one draw; dims ``time`` and ``latent_dim_*``), ESS and lineage per step, the conditional
    filter's log normaliser (a diagnostic)."""
    path = np.asarray(result.path)
    dims = {"path": ["time"] + [f"latent_dim_{i}" for i in range(path.ndim - 1)], "ess": ["time"], "indices": ["time"]}
    observed = None
    if emissions is not None:
        y = np.asarray(emissions)
        dims["y"] = ["time"] + [f"obs_dim_{i}" for i in range(y.ndim - 1)]
        observed = {"y": y}
    return summary_group(
        {"path": path},
        dims,
        observed_data=observed,
        log_likelihood={"log_likelihood": result.log_likelihood},
        sample_stats={"ess": result.ess, "indices": result.indices},
    )


# ------------------------------------------------------------------------------------------------ kernels


def _lookahead(fk, params, x, t, y, u, dtype):
    return fk.lookahead(params, x, t, fill_missing(y), u).astype(dtype)


def csmc_init(
    key: PRNGKeyArray,
    fk: FeynmanKac,
    params: PyTree,
    reference: Array,
    y0: Array,
    num_particles: int,
    u0: PyTree = None,
    observed: Bool[Array, ""] | bool = True,
) -> tuple[ParticleFilterState, ParticleFilterInfo]:
    """Draw :math:`N-1` particles at ``t = 0`` and pin slot 0 to ``reference`` (the reference state at 0)."""
    keys = particle_keys(key, num_particles)
    x0 = jax.vmap(lambda k: fk.sample_initial(k, params, y0, u0))(keys)
    x0 = x0.at[REFERENCE_SLOT].set(jnp.asarray(reference, x0.dtype))
    lw = jax.vmap(lambda x: fk.log_weight_initial(params, x, y0, u0, observed))(x0)
    dtype = jnp.result_type(lw.dtype, float)
    lw = lw.astype(dtype) - jnp.log(jnp.asarray(num_particles, dtype))
    lw, inc = normalize_log_weights(lw)
    state = ParticleFilterState(x0, lw, inc, ~jnp.isfinite(inc), jnp.zeros((), jnp.int32))
    info = ParticleFilterInfo(jnp.arange(num_particles, dtype=jnp.int32), jnp.asarray(True), ess_of_normalized(lw), inc)
    return state, info


def csmc_step(
    key: PRNGKeyArray,
    state: ParticleFilterState,
    fk: FeynmanKac,
    params: PyTree,
    reference: Array,
    y: Array,
    u: PyTree = None,
    observed: Bool[Array, ""] | bool = True,
    *,
    ancestor_sampling: bool = True,
) -> tuple[ParticleFilterState, ParticleFilterInfo]:
    """One conditional step ``t -> t+1`` with the reference state ``reference`` = :math:`x^*_{t+1}` in slot 0.

    Ancestors of the free particles are drawn by multinomial resampling (the first-stage weights of an auxiliary
    filter included); the reference's ancestor is slot 0 (plain CSMC) or, with ``ancestor_sampling``, drawn with
    probability :math:`\\propto W^i_t f_\\theta(x^*_{t+1} \\mid x^i_t)` (this is :math:`V^i f / e^{\\eta^i}` for an
    auxiliary filter, i.e. the same expression).
    """
    k_res, k_prop, k_as = jax.random.split(key, 3)
    t = state.t + 1
    xs, lw_prev = state.particles, state.log_weights
    dtype = lw_prev.dtype
    reference = jnp.asarray(reference, xs.dtype)
    a, base, _ = select_ancestors(k_res, fk, params, xs, lw_prev, t, y, u, multinomial, 1.0)
    if ancestor_sampling:
        lf = jax.vmap(lambda xp: fk.log_transition(params, xp, reference, t, u))(xs).astype(dtype)
        a_ref = jax.random.categorical(k_as, jnp.where(jnp.isnan(lf), -jnp.inf, lw_prev + lf)).astype(jnp.int32)
    else:
        a_ref = jnp.asarray(REFERENCE_SLOT, jnp.int32)
    if fk.lookahead is not None:  # base_k = c - log N - eta(x^{a_k}): move slot 0's eta to its new ancestor
        other = (REFERENCE_SLOT + 1) % a.shape[0]
        eta_o = _lookahead(fk, params, xs[a[other]], t, y, u, dtype)
        eta_r = _lookahead(fk, params, xs[a_ref], t, y, u, dtype)
        base = base.at[REFERENCE_SLOT].set(base[other] + eta_o - eta_r)
    else:
        base = base.at[REFERENCE_SLOT].set(base[(REFERENCE_SLOT + 1) % a.shape[0]])
    a = a.at[REFERENCE_SLOT].set(a_ref)
    xp = jnp.take(xs, a, axis=0)
    x = propagate(k_prop, fk, params, xp, t, y, u)
    x = x.at[REFERENCE_SLOT].set(reference)
    lw, inc = reweight(fk, params, xp, x, base, t, y, u, observed)
    new = ParticleFilterState(x, lw, state.log_likelihood + inc, state.collapsed | ~jnp.isfinite(inc), t)
    return new, ParticleFilterInfo(a, jnp.asarray(True), ess_of_normalized(lw), inc)


# ------------------------------------------------------------------------------------------------ path draws


def _take(tree_like, i):
    return jnp.take(tree_like, i, axis=0)


def trace_genealogy(key: PRNGKeyArray, history: ParticleHistory) -> tuple[Array, Int[Array, " T"]]:
    """``(path, indices)``: final index :math:`b \\sim W_{T-1}`, then ancestors back to ``t = 0``."""
    T = history.log_weights.shape[0]
    b_last = jax.random.categorical(key, history.log_weights[-1]).astype(jnp.int32)

    def body(b, anc_t):
        b_prev = anc_t[b]
        return b_prev, b_prev

    if T > 1:
        _, bs = jax.lax.scan(body, b_last, history.ancestors[1:], reverse=True)
        idx = jnp.concatenate([bs, b_last[None]])
    else:
        idx = b_last[None]
    path = jax.vmap(_take)(history.particles, idx)
    return path, idx


# ------------------------------------------------------------------------------------------------ top level


def _csmc_forward(key, fk, params, emissions, inputs, mask, reference, num_particles, ancestor_sampling):
    T = emissions.shape[0]
    k0, key = jax.random.split(key)
    state, info0 = csmc_init(k0, fk, params, reference[0], emissions[0], num_particles, inputs_at(inputs, 0), mask[0])

    def body(state, xs):
        k, ref_t, y, u, obs = xs
        state, info = csmc_step(k, state, fk, params, ref_t, y, u, obs, ancestor_sampling=ancestor_sampling)
        return state, (state.particles, state.log_weights, info.ancestors, info.ess)

    first = (state.particles, state.log_weights, info0.ancestors, info0.ess)
    if T > 1:
        u_rest = None if inputs is None else jax.tree.map(lambda a: a[1:], inputs)
        keys = jax.random.split(key, T - 1)
        state, rest = jax.lax.scan(body, state, (keys, reference[1:], emissions[1:], u_rest, mask[1:]))
        outs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], axis=0), first, rest)
    else:
        outs = jax.tree.map(lambda a: a[None], first)
    parts, lws, ancs, ess = outs
    return state, ParticleHistory(parts, lws, ancs), ess


def _csmc(key, fk, params, emissions, inputs, mask, reference, num_particles, method, backward):
    k_fwd, k_path = jax.random.split(key)
    state, hist, ess = _csmc_forward(
        k_fwd, fk, params, emissions, inputs, mask, reference, num_particles, method == "ancestor"
    )
    if method == "backward":
        r = ffbsi(k_path, fk.model, params, hist, 1, backward=backward, inputs=inputs)
        path, idx = r.trajectories[0], r.indices[:, 0]
    else:
        path, idx = trace_genealogy(k_path, hist)
    return CSMCResult(path, state.log_likelihood, ess, idx, hist)


def validate_num_particles(num_particles, minimum: int = 2, name: str = "num_particles") -> int:
    if isinstance(num_particles, bool) or not isinstance(num_particles, int | np.integer) or num_particles < minimum:
        raise ValueError(f"{name} must be a Python int >= {minimum}; got {num_particles!r}.")
    return int(num_particles)


def validate_method(method: str) -> str:
    if method not in PATH_METHODS:
        raise ValueError(f"method={method!r} is unknown; use one of {PATH_METHODS}.")
    return method


def validate_reference(reference, T: int, name: str = "reference") -> Array:
    if reference is None:
        raise TypeError(f"{name} is None; pass a path with leading axis {T} (e.g. from kalman_posterior_sample).")
    reference = jnp.asarray(reference)
    if reference.ndim < 1 or reference.shape[0] != T:
        raise ValueError(f"{name} must have leading time axis {T} (one state per emission); got {reference.shape}.")
    if not is_tracer(reference) and jnp.issubdtype(reference.dtype, jnp.floating):
        bad = ~np.isfinite(np.asarray(reference)).reshape(T, -1).all(-1)
        if bad.any():
            raise ValueError(
                f"{name} holds NaN or ±inf at {int(bad.sum())} step(s) (first at t={int(np.argmax(bad))}); a "
                "reference path must be a full, finite state path (missing data belongs in the emissions)."
            )
    return reference


def conditional_smc(
    key: PRNGKeyArray,
    model: SSM | FeynmanKac,
    params: PyTree,
    emissions: Array,
    reference: Array,
    num_particles: int,
    *,
    method: str = "ancestor",
    backward: BackwardKernel | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
) -> CSMCResult:
    """One conditional SMC sweep pinned to ``reference`` ``(T, *event)``; returns the new path and the sweep.

    ``method``: ``"ancestor"`` (PGAS), ``"backward"`` (backward sampling with the kernel ``backward``, default
    :class:`~pssm.inference.smc.ExactBackward`),
    or ``"trace"``.  ``model`` may be a :class:`FeynmanKac` (guided / auxiliary conditional filters).
    """
    check_key(key)
    fk = as_feynman_kac(model)
    fk.model.check_params(params)
    emissions, mask, inputs = validate_sequence(emissions, inputs, mask, model=fk)
    reference = validate_reference(reference, emissions.shape[0])
    num_particles = validate_num_particles(num_particles)
    validate_method(method)
    if backward is not None:
        if method != "backward":
            raise ValueError("backward= (a backward kernel) is only used with method='backward'.")
        check_backward_kernel(backward)
    return _csmc_jit(key, fk, params, emissions, inputs, mask, reference, num_particles, method, backward)


@eqx.filter_jit
def _csmc_jit(key, fk, params, emissions, inputs, mask, reference, num_particles, method, backward):
    return _csmc(key, fk, params, emissions, inputs, mask, reference, num_particles, method, backward)


def csmc_kernel(
    key: PRNGKeyArray,
    fk: FeynmanKac,
    params: PyTree,
    emissions: Array,
    reference: Array,
    num_particles: int,
    *,
    method: str = "ancestor",
    backward: BackwardKernel | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
) -> tuple[Array, Float[Array, ""], Float[Array, ""]]:
    """Traceable Markov kernel on paths (no validation; for use inside ``jit``/``vmap``/``scan``).

    Returns ``(new_path, conditional log normaliser, mean particle ESS)``.
    """
    if mask is None:
        mask = jnp.ones((emissions.shape[0],), bool)
    r = _csmc(key, fk, params, emissions, inputs, mask, reference, num_particles, method, backward)
    return r.path, r.log_likelihood, jnp.mean(r.ess)
