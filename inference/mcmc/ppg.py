"""PaRIS particle Gibbs (PPG): bias-reduced smoothing of additive functionals with a frozen path.

Target: :math:`\\Pi h = E[h_0(x_0) + \\sum_{t \\ge 1} h_t(x_{t-1}, x_t) \\mid y_{0:T-1}]`, e.g. the score by
Fisher's identity (:func:`pssm.inference.smc.score_functional`).

**PaRIS** (Olsson & Westerborn 2017; :mod:`pssm.inference.smc.paris`) carries statistics :math:`\\tau_t^i`
updated with :math:`\\tilde N` backward draws :math:`J^{i,j} \\sim \\Lambda_{t-1}(i, \\cdot) \\propto
W_{t-1}^l f_\\theta(x_t^i \\mid x_{t-1}^l)`: :math:`\\tau_t^i = \\tilde N^{-1} \\sum_j [\\tau_{t-1}^{J^{i,j}} +
h_t(x_{t-1}^{J^{i,j}}, x_t^i)]`, estimate :math:`\\sum_i W_{T-1}^i \\tau_{T-1}^i`.  Its bias is :math:`O(T/N)`.

**PPG** (Cardoso, Janati El Idrissi, Le Corff, Moulines, Olsson, ICML 2023; our reconstruction, DESIGN §2) makes
PaRIS the inner step of a Gibbs sampler on an extended target.  Iteration :math:`\\ell` runs a *conditional*
filter with the frozen path :math:`\\zeta` pinned to slot 0 (its ancestor is slot 0 at every step) and PaRIS on all
:math:`N` particles, where the frozen particle's first backward index is its own frozen predecessor,
:math:`J^{0,1}_t = 0`; it outputs :math:`\\widehat{\\Pi h}_\\ell` and refreshes the frozen path through the stored
backward indices: :math:`b_{T-1} \\sim W_{T-1}`, then :math:`b_{t-1} = J_t^{b_t, U_t}` with :math:`U_t` uniform on
:math:`1..\\tilde N`.  The estimate averages the iterations after a burn-in :math:`k_0`:
:math:`\\widehat{\\Pi h}^{\\mathrm{PPG}} = (k - k_0)^{-1} \\sum_{\\ell = k_0 + 1}^{k} \\widehat{\\Pi h}_\\ell`.

The refresh leaves :math:`p_\\theta(x_{0:T-1} \\mid y)` invariant (checked statistically in the tests, which is
how the frozen-index convention above was validated), so :func:`ppg_step` is a pure Markov kernel that can be
carried across parameter updates (score ascent, Markov score climbing).  Memory :math:`O(NT\\tilde N)`.
Backward draws use any kernel of :mod:`pssm.inference.smc.backward` (default: hybrid rejection when the model
bounds its transition density, else exact).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from pssm.arviz import to_arviz
from pssm.display import short_repr
from pssm.inference.chunked import run_chunked
from pssm.inference.mcmc.csmc import (
    REFERENCE_SLOT,
    csmc_init,
    csmc_step,
    validate_num_particles,
    validate_reference,
    validate_sequence,
)
from pssm.inference.smc.backward import BackwardKernel, check_backward_kernel
from pssm.inference.smc.filter import FeynmanKac, as_feynman_kac, filter_step
from pssm.inference.smc.paris import (
    AdditiveFunctional,
    as_functional,
    default_backward_kernel,
    paris_tau_from_indices,
)
from pssm.inference.smc.resampling import log_ess
from pssm.params import path_name
from pssm.protocol import SSM, PyTree, inputs_at
from pssm.validation import check_key

if TYPE_CHECKING:
    import arviz as az

__all__ = [
    "PaRISSweep",
    "paris_sweep",
    "PPGState",
    "PPGInfo",
    "PPGResult",
    "ppg_init",
    "ppg_step",
    "paris_particle_gibbs",
]


class PaRISSweep(NamedTuple):
    estimate: PyTree
    """:math:`\\sum_i W_{T-1}^i \\tau_{T-1}^i`."""
    log_likelihood: Float[Array, ""]
    """Log normaliser of the filter (an unbiased likelihood estimate, on the natural scale, only when
    unconditional; a diagnostic otherwise)."""
    ess: Float[Array, " T"]
    path: Array | None
    """A path drawn through the stored backward indices (``None`` when nothing was stored)."""


class PPGState(NamedTuple):
    """What PPG carries between iterations (and across parameter updates)."""

    frozen_path: Array
    """``(T, *event)``."""


class PPGInfo(NamedTuple):
    estimate: PyTree
    log_likelihood: Float[Array, ""]
    mean_ess: Float[Array, ""]


class PPGResult(NamedTuple):
    estimate: PyTree
    """Average of the per-iteration estimates after burn-in."""
    estimates: PyTree
    """Per-iteration estimates, leading axis ``num_iters``."""
    log_likelihoods: Float[Array, " k"]
    mean_ess: Float[Array, " k"]
    burn_in: int
    state: PPGState
    paths: Array | None = None
    """Frozen path after each iteration ``(k, T, *event)`` when ``store_paths``."""

    __repr__ = short_repr


def _weighted(tau, lw):
    w = jnp.exp(lw)
    return jax.tree.map(lambda v: jnp.tensordot(w.astype(v.dtype), v, axes=1), tau)


def _sweep(key, fk, params, emissions, inputs, mask, frozen, functional, n, num_backward, backward, conditional, store):
    """One PaRIS pass (conditional on ``frozen`` in slot 0 when ``conditional``); with ``store``, keep particles
    and backward indices and draw a new path through them (the PPG refresh)."""
    model = fk.model
    T = emissions.shape[0]
    k_main, k_ref = jax.random.split(key)
    k0, key = jax.random.split(k_main)
    u0 = inputs_at(inputs, 0)
    ref0 = frozen[0] if conditional else fk.sample_initial(k0, params, emissions[0], u0)
    state, _ = csmc_init(k0, fk, params, ref0, emissions[0], n, u0, mask[0])  # unconditional: slot 0 is a prior draw
    tau = jax.vmap(lambda x: functional.initial(x, emissions[0], u0, mask[0]))(state.particles)
    x0 = state.particles
    ess0 = jnp.exp(log_ess(state.log_weights))

    def body(carry, xs_):
        state, tau = carry
        k, ref_t, y, u, obs = xs_
        k_f, k_b = jax.random.split(k)
        t = state.t + 1
        if conditional:
            new, info = csmc_step(k_f, state, fk, params, ref_t, y, u, obs, ancestor_sampling=False)
        else:
            new, info = filter_step(k_f, state, fk, params, y, u, obs, resampling="multinomial", ess_threshold=1.0)

        def lt(xp, x):
            return model.transition(params, xp, t, u).log_prob(x)

        J = backward(
            k_b,
            lt,
            state.particles,
            state.log_weights,
            new.particles,
            info.ancestors,
            model.log_transition_bound(params, t, u),
            num_backward,
        ).astype(jnp.int32)
        if conditional:
            J = J.at[REFERENCE_SLOT, 0].set(REFERENCE_SLOT)
        tau = paris_tau_from_indices(
            tau, state.particles, new.particles, J, lambda a, x: functional.step(a, x, t, y, u, obs)
        )
        return (new, tau), (info.ess, (new.particles, J) if store else None)

    u_rest = None if inputs is None else jax.tree.map(lambda a: a[1:], inputs)
    stored = None
    if T > 1:
        (state, tau), (ess, stored) = jax.lax.scan(
            body, (state, tau), (jax.random.split(key, T - 1), frozen[1:], emissions[1:], u_rest, mask[1:])
        )
        ess = jnp.concatenate([ess0[None], ess])
    else:
        ess = ess0[None]
    est = _weighted(tau, state.log_weights)
    if not store:
        return PaRISSweep(est, state.log_likelihood, ess, None)
    # refresh: final index ~ W_{T-1}; then, going back, one of the Ñ stored backward indices uniformly
    k_last, k_u = jax.random.split(k_ref)
    b_last = jax.random.categorical(k_last, state.log_weights).astype(jnp.int32)
    if T == 1:
        return PaRISSweep(est, state.log_likelihood, ess, jnp.take(x0, b_last, axis=0)[None])
    parts, Js = stored
    us = jax.random.randint(k_u, (T - 1,), 0, num_backward)

    def back(b, args):
        J_t, u_ = args
        b_prev = J_t[b, u_]
        return b_prev, b_prev

    _, bs = jax.lax.scan(back, b_last, (Js, us), reverse=True)  # bs[s] = index at time s (s = 0..T-2)
    all_parts = jnp.concatenate([x0[None], parts], axis=0)
    idx = jnp.concatenate([bs, b_last[None]])
    path = jax.vmap(lambda xs, i: jnp.take(xs, i, axis=0))(all_parts, idx)
    return PaRISSweep(est, state.log_likelihood, ess, path)


def paris_sweep(
    key: PRNGKeyArray,
    fk: FeynmanKac,
    params: PyTree,
    emissions: Array,
    functional: AdditiveFunctional,
    num_particles: int,
    *,
    frozen_path: Array | None = None,
    num_backward: int = 2,
    backward: BackwardKernel | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
    store: bool = False,
) -> PaRISSweep:
    """One PaRIS pass (traceable, no validation): unconditional if ``frozen_path is None``, else conditional.

    Multinomial resampling at every step (as the conditional filter needs).  With ``store=True`` (always when
    conditional) particles and backward indices are kept and a path is drawn through them (the PPG refresh);
    otherwise memory is :math:`O(N)` as in plain PaRIS.
    """
    if mask is None:
        mask = jnp.ones((emissions.shape[0],), bool)
    backward = default_backward_kernel(fk.model) if backward is None else backward
    conditional = frozen_path is not None
    frozen = frozen_path if conditional else jnp.zeros((emissions.shape[0],), emissions.dtype)
    return _sweep(
        key,
        fk,
        params,
        emissions,
        inputs,
        mask,
        frozen,
        functional,
        num_particles,
        num_backward,
        backward,
        conditional,
        conditional or store,
    )


def ppg_init(frozen_path: Array) -> PPGState:
    """PPG state from a starting frozen path (any path; e.g. from a particle smoother or a previous run)."""
    return PPGState(jnp.asarray(frozen_path))


def ppg_step(
    key: PRNGKeyArray,
    state: PPGState,
    fk: FeynmanKac,
    params: PyTree,
    emissions: Array,
    functional: AdditiveFunctional,
    num_particles: int,
    *,
    num_backward: int = 2,
    backward: BackwardKernel | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
) -> tuple[PPGState, PPGInfo]:
    """One PPG iteration (pure kernel): conditional PaRIS around ``state.frozen_path``, then the refresh."""
    r = paris_sweep(
        key,
        fk,
        params,
        emissions,
        functional,
        num_particles,
        frozen_path=state.frozen_path,
        num_backward=num_backward,
        backward=backward,
        inputs=inputs,
        mask=mask,
    )
    return PPGState(r.path), PPGInfo(r.estimate, r.log_likelihood, jnp.mean(r.ess))


def _ppg_iteration(
    kk, st, fk, params, emissions, functional, num_particles, num_backward, backward, inputs, mask, store
):
    """One PPG iteration with its stored outputs; module level, so repeated calls compile once."""
    st, info = ppg_step(
        kk,
        st,
        fk,
        params,
        emissions,
        functional,
        num_particles,
        num_backward=num_backward,
        backward=backward,
        inputs=inputs,
        mask=mask,
    )
    return st, (info, st.frozen_path if store else None)


def validate_backward(num_backward, backward):
    if isinstance(num_backward, bool) or not isinstance(num_backward, int | np.integer) or num_backward < 1:
        raise ValueError(
            f"num_backward must be a Python int >= 1 (PaRIS needs >= 2 for stability); got {num_backward!r}."
        )
    check_backward_kernel(backward)
    return int(num_backward)


def paris_particle_gibbs(
    key: PRNGKeyArray,
    model: SSM | FeynmanKac,
    params: PyTree,
    emissions: Array,
    *,
    functional: AdditiveFunctional | Callable,
    num_particles: int,
    num_iters: int,
    burn_in: int,
    num_backward: int = 2,
    backward: BackwardKernel | None = None,
    state: PPGState | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
    store_paths: bool = False,
    progress: bool = False,
    chunk_size: int = 50,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> PPGResult:
    """PPG with ``num_iters`` (k) iterations averaged after ``burn_in`` (k0).

    ``functional``: an :class:`~pssm.inference.smc.AdditiveFunctional` or ``h(x_prev, x, t)``.  Without
    ``state`` the first iteration is an unconditional PaRIS pass whose refreshed path starts the chain; pass
    ``result.state`` back in to continue (then every iteration is conditional).
    ``checkpoint``: a file the run is saved to every ``checkpoint_every`` chunks of ``chunk_size`` iterations and
    resumed from when it exists, ending exactly as an uninterrupted run (:func:`pssm.inference.chunked.run_chunked`).
    """
    check_key(key)
    fk = as_feynman_kac(model)
    emissions, mask, inputs = validate_sequence(emissions, inputs, mask, model=fk)
    num_particles = validate_num_particles(num_particles)
    num_backward = validate_backward(num_backward, backward)
    functional = as_functional(functional)
    backward = default_backward_kernel(fk.model) if backward is None else backward
    k, k0 = int(num_iters), int(burn_in)
    if k < 1 or not 0 <= k0 < k:
        raise ValueError(f"need num_iters >= 1 and 0 <= burn_in < num_iters; got {k} and {k0}.")
    if state is not None:
        if not isinstance(state, PPGState):
            raise TypeError("state must be a PPGState (result.state of a previous run) or None.")
        validate_reference(state.frozen_path, emissions.shape[0], "state.frozen_path")
    k_first, key = jax.random.split(key)
    first = None
    if state is None:
        r = eqx.filter_jit(paris_sweep)(
            k_first,
            fk,
            params,
            emissions,
            functional,
            num_particles,
            num_backward=num_backward,
            backward=backward,
            inputs=inputs,
            mask=mask,
            store=True,
        )
        state = PPGState(r.path)
        first = (PPGInfo(r.estimate, r.log_likelihood, jnp.mean(r.ess)), r.path if store_paths else None)
        k_rest = k - 1
    else:
        k_rest = k

    args = (fk, params, emissions, functional, num_particles, num_backward, backward, inputs, mask, store_paths)
    state, outs = run_chunked(
        _ppg_iteration,
        state,
        key,
        k_rest,
        args=args,
        chunk_size=chunk_size,
        progress=progress,
        desc="PPG",
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )
    if first is not None:
        first = jax.tree.map(lambda a: np.asarray(a)[None], first)
        outs = first if outs is None else jax.tree.map(lambda a, b: np.concatenate([a, b]), first, outs)
    infos, paths = outs
    est = jax.tree.map(lambda v: np.mean(v[k0:], axis=0), infos.estimate)
    return PPGResult(est, infos.estimate, infos.log_likelihood, infos.mean_ess, k0, state, paths)


@to_arviz.register(PPGResult)
def _ppg_to_arviz(result: PPGResult, *, names: list[str] | None = None) -> az.InferenceData:
    """Per-iteration estimates as draws of one chain (``posterior``; burn-in included, see ``attrs``) and the
    frozen paths (``path`` with dims ``time``, ``latent_dim``) when stored; ``sample_stats``: the conditional
    log normaliser and the mean particle ESS of each iteration."""
    import arviz as az

    post = _named_leaves(result.estimates, names, prefix="estimate")
    dims: dict[str, list[str]] = {}
    if result.paths is not None:
        p = np.asarray(result.paths)
        post["path"] = p.reshape(p.shape[:2] + (-1,))
        dims["path"] = ["time", "latent_dim"]
    post = {k: np.asarray(v)[None] for k, v in post.items()}
    stats = {
        "log_likelihood_estimate": np.asarray(result.log_likelihoods)[None],
        "ess": np.asarray(result.mean_ess)[None],
    }
    idata = az.from_dict(posterior=post, sample_stats=stats, dims=dims)
    idata.posterior.attrs["burn_in"] = int(result.burn_in)
    return idata


def _named_leaves(tree: Any, names: list[str] | None, prefix: str) -> dict[str, np.ndarray]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    if names is not None and len(names) != len(flat):
        raise ValueError(f"names has {len(names)} entries but the estimate has {len(flat)} leaves.")
    out = {}
    for i, (path, leaf) in enumerate(flat):
        if names is not None:
            key = names[i]
        else:
            parts = path_name(path).split(".") if path else []
            key = ".".join([prefix, *parts]) if parts else prefix
        out[key] = np.asarray(leaf)
    return out
