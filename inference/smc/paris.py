"""PaRIS: online particle smoothing of additive functionals (Olsson & Westerborn 2017).

For :math:`S_T = h_0(x_0) + \\sum_{t=1}^{T-1} h_t(x_{t-1}, x_t)` (any pytree-valued :math:`h`), each filter
particle carries a statistic :math:`\\tau_t^i \\approx E[S_t \\mid x_t = x_t^i, y_{0:t}]`, updated with
:math:`\\tilde N \\ge 2` draws :math:`J_{ij}` from a backward kernel :math:`\\propto W_{t-1}^l f(x_t^i \\mid
x_{t-1}^l)`:

.. math::

    \\tau_t^i = \\frac{1}{\\tilde N} \\sum_{j=1}^{\\tilde N}
        \\bigl[\\tau_{t-1}^{J_{ij}} + h_t(x_{t-1}^{J_{ij}}, x_t^i)\\bigr],
    \\qquad E[S_t \\mid y_{0:t}] \\approx \\sum_i W_t^i \\tau_t^i .

Cost :math:`O(N \\tilde N)` per step with the rejection or MCMC kernels; memory :math:`O(N)`, independent of
:math:`T` (no path history is stored).  Use :func:`paris_init` / :func:`paris_step` for streaming data and
:func:`paris` for a whole sequence.  :func:`score_functional` makes :math:`h_t = \\nabla_\\theta[\\log
f_\\theta(x_t \\mid x_{t-1}) + \\log g_\\theta(y_t \\mid x_t)]`, so the estimate is the score
:math:`\\nabla_\\theta \\log p_\\theta(y_{0:T-1})` by Fisher's identity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from pssm.arviz import summary_group, to_arviz
from pssm.display import short_repr
from pssm.distributions import observed_log_prob
from pssm.inference.smc.backward import BackwardKernel, ExactBackward, RejectionBackward, check_backward_kernel
from pssm.inference.smc.filter import (
    FeynmanKac,
    ParticleFilterInfo,
    ParticleFilterState,
    _constrain,
    _validate_common,
    as_feynman_kac,
    filter_init,
    filter_step,
    refuse_collapsed,
    validate_sequence,
)
from pssm.inference.smc.resampling import Resampler, get_resampler
from pssm.jit import SameFunction
from pssm.protocol import SSM, PyTree, inputs_at
from pssm.validation import check_key

__all__ = [
    "AdditiveFunctional",
    "score_functional",
    "PaRISState",
    "PaRISResult",
    "paris_init",
    "paris_tau_update",
    "paris_tau_from_indices",
    "paris_update",
    "paris_step",
    "paris_estimate",
    "paris",
    "paris_score",
    "default_backward_kernel",
]


class AdditiveFunctional(eqx.Module):
    """:math:`h_0(x_0) + \\sum_t h_t(x_{t-1}, x_t)` with access to observations and inputs (final).

    ``step_fn(x_prev, x, t, y_t, u_t, observed) -> pytree``; ``initial_fn(x_0, y_0, u_0, observed) -> pytree`` or
    ``None`` (zero).  :meth:`from_fn` wraps a plain ``h(x_prev, x, t)`` (and optional ``h0(x0)``).  Two
    functionals built from the same functions (same code and closure, e.g. an inline lambda in a loop) are equal,
    so :func:`paris` and PPG compile once for them.
    """

    step_fn: Callable[..., PyTree] = eqx.field(converter=SameFunction)
    initial_fn: Callable[..., PyTree] | None = eqx.field(
        default=None, converter=lambda f: None if f is None else SameFunction(f)
    )
    simple: bool = eqx.field(default=False, static=True)
    """True when built by :meth:`from_fn`: ``step_fn(x_prev, x, t)`` and ``initial_fn(x_0)``."""

    @classmethod
    def from_fn(cls, h: Callable[..., PyTree], h0: Callable[..., PyTree] | None = None) -> AdditiveFunctional:
        return cls(h, h0, simple=True)

    def initial(self, x0, y0, u0, observed) -> PyTree:
        if self.initial_fn is None:
            shape = jax.eval_shape(self.step, x0, x0, jnp.ones((), jnp.int32), y0, u0, observed)
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
        return self.initial_fn(x0) if self.simple else self.initial_fn(x0, y0, u0, observed)

    def step(self, x_prev, x, t, y, u, observed) -> PyTree:
        return self.step_fn(x_prev, x, t) if self.simple else self.step_fn(x_prev, x, t, y, u, observed)


def as_functional(h) -> AdditiveFunctional:
    if isinstance(h, AdditiveFunctional):
        return h
    if callable(h):
        return AdditiveFunctional.from_fn(h)
    raise TypeError("functional must be an AdditiveFunctional or a callable h(x_prev, x, t) -> pytree.")


def score_functional(model: SSM, params: PyTree) -> AdditiveFunctional:
    """The Fisher-identity score: :math:`h_t = \\nabla_\\theta[\\log f_\\theta(x_t\\mid x_{t-1}) + \\log
    g_\\theta(y_t \\mid x_t)]`, :math:`h_0 = \\nabla_\\theta[\\log \\mu_\\theta(x_0) + \\log g_\\theta(y_0\\mid x_0)]`
    (``equinox.filter_grad`` w.r.t. every inexact-array leaf of ``params``, so params may hold equinox modules with
    non-array leaves — those get ``None``; masked steps drop the emission term)."""

    def step(xp, x, t, y, u, obs):
        def lp(th):
            lg = jnp.where(obs, observed_log_prob(model.emission(th, x, t, u), y), 0.0)
            return model.transition(th, xp, t, u).log_prob(x) + lg

        return eqx.filter_grad(lp)(params)

    def initial(x, y, u, obs):
        def lp(th):
            lg = jnp.where(obs, observed_log_prob(model.emission(th, x, jnp.zeros((), jnp.int32), u), y), 0.0)
            return model.initial(th, u).log_prob(x) + lg

        return eqx.filter_grad(lp)(params)

    return AdditiveFunctional(step, initial)


class PaRISState(NamedTuple):
    filter: ParticleFilterState
    tau: PyTree
    """Per-particle statistics, leaves with leading axis ``N``."""


class PaRISResult(NamedTuple):
    estimate: PyTree
    """:math:`\\sum_i W^i_{T-1} \\tau^i_{T-1} \\approx E[S_{T-1} \\mid y_{0:T-1}]`."""
    estimates: PyTree | None
    """Running estimates :math:`E[S_t \\mid y_{0:t}]` with leading axis ``T`` (only if asked)."""
    log_likelihood: Float[Array, ""]
    ess: Float[Array, " T"]
    resampled: Bool[Array, " T"]
    collapsed: Bool[Array, ""]
    final_state: PaRISState

    __repr__ = short_repr


def default_backward_kernel(model: SSM) -> BackwardKernel:
    """Hybrid rejection when the model bounds its transition density, else the exact kernel."""
    if type(model).log_transition_bound is SSM.log_transition_bound:
        return ExactBackward()
    return RejectionBackward()


def paris_estimate(state: PaRISState) -> PyTree:
    """:math:`\\sum_i W_t^i \\tau_t^i`."""
    w = jnp.exp(state.filter.log_weights)
    return jax.tree.map(lambda v: jnp.tensordot(w.astype(v.dtype), v, axes=1), state.tau)


def paris_init(
    key: PRNGKeyArray,
    fk: FeynmanKac | SSM,
    params: PyTree,
    y0: Array,
    num_particles: int,
    functional: AdditiveFunctional | Callable,
    u0: PyTree = None,
    observed: Bool[Array, ""] | bool = True,
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[PaRISState, ParticleFilterInfo]:
    """Start PaRIS at ``t = 0``: filter particles and :math:`\\tau_0^i = h_0(x_0^i)`."""
    fk = as_feynman_kac(fk)
    functional = as_functional(functional)
    fstate, info = filter_init(key, fk, params, y0, num_particles, u0, observed, sharding)
    tau = jax.vmap(lambda x: functional.initial(x, y0, u0, observed))(fstate.particles)
    return PaRISState(fstate, _constrain(tau, sharding)), info


def paris_tau_update(
    key: PRNGKeyArray,
    tau_prev: PyTree,
    particles_prev: Array,
    log_weights_prev: Float[Array, " N"],
    particles: Array,
    ancestors: Int[Array, " N"] | None,
    log_transition: Callable[[Array, Array], Array],
    increment: Callable[[Array, Array], PyTree],
    backward: BackwardKernel,
    num_backward: int,
    log_bound: Array | None,
) -> PyTree:
    """The PaRIS recursion on arrays: ``increment(x_prev, x) = h_t(x_prev, x)``; returns :math:`\\tau_t`."""
    J = backward(key, log_transition, particles_prev, log_weights_prev, particles, ancestors, log_bound, num_backward)
    return paris_tau_from_indices(tau_prev, particles_prev, particles, J, increment)


def paris_tau_from_indices(
    tau_prev: PyTree,
    particles_prev: Array,
    particles: Array,
    backward_indices: Int[Array, "N D"],
    increment: Callable[[Array, Array], PyTree],
) -> PyTree:
    """:math:`\\tau_t^i = \\tilde N^{-1} \\sum_j [\\tau_{t-1}^{J_{ij}} + h_t(x_{t-1}^{J_{ij}}, x_t^i)]` from given
    backward indices ``J`` (PaRIS particle Gibbs draws and edits them itself)."""

    def per_particle(j_row, x):
        xp = jnp.take(particles_prev, j_row, axis=0)
        h = jax.vmap(lambda a: increment(a, x))(xp)
        t_prev = jax.tree.map(lambda v: jnp.take(v, j_row, axis=0), tau_prev)
        return jax.tree.map(lambda a, b: jnp.mean(a + b.astype(a.dtype), axis=0), t_prev, h)

    return jax.vmap(per_particle)(backward_indices, particles)


def paris_update(
    key: PRNGKeyArray,
    state: PaRISState,
    filter_state: ParticleFilterState,
    ancestors: Int[Array, " N"],
    fk: FeynmanKac,
    params: PyTree,
    y: Array,
    u: PyTree = None,
    observed: Bool[Array, ""] | bool = True,
    *,
    functional: AdditiveFunctional,
    backward: BackwardKernel,
    num_backward: int = 2,
    sharding: jax.sharding.Sharding | None = None,
) -> PaRISState:
    """PaRIS update from the previous state and the new filter state (particles, weights) and ancestors.

    The filter state may come from any (e.g. conditional) filter step; only ``state.filter`` at ``t-1`` and the
    new particles at ``t = filter_state.t`` are used.
    """
    prev = state.filter
    t = filter_state.t
    model = fk.model

    def lt(xp, x):
        return model.transition(params, xp, t, u).log_prob(x)

    def inc(xp, x):
        return functional.step(xp, x, t, y, u, observed)

    tau = paris_tau_update(
        key,
        state.tau,
        prev.particles,
        prev.log_weights,
        filter_state.particles,
        ancestors,
        lt,
        inc,
        backward,
        num_backward,
        model.log_transition_bound(params, t, u),
    )
    return PaRISState(filter_state, _constrain(tau, sharding))


def paris_step(
    key: PRNGKeyArray,
    state: PaRISState,
    fk: FeynmanKac,
    params: PyTree,
    y: Array,
    u: PyTree = None,
    observed: Bool[Array, ""] | bool = True,
    *,
    functional: AdditiveFunctional,
    backward: BackwardKernel,
    num_backward: int = 2,
    resampling: str | Resampler = "systematic",
    ess_threshold: float = 0.5,
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[PaRISState, ParticleFilterInfo]:
    """One filter step followed by the PaRIS update (streaming: call once per new observation)."""
    k_f, k_b = jax.random.split(key)
    fstate, info = filter_step(
        k_f,
        state.filter,
        fk,
        params,
        y,
        u,
        observed,
        resampling=resampling,
        ess_threshold=ess_threshold,
        sharding=sharding,
    )
    new = paris_update(
        k_b,
        state,
        fstate,
        info.ancestors,
        fk,
        params,
        y,
        u,
        observed,
        functional=functional,
        backward=backward,
        num_backward=num_backward,
        sharding=sharding,
    )
    return new, info


def paris(
    key: PRNGKeyArray,
    model: SSM | FeynmanKac,
    params: PyTree,
    emissions: Array,
    num_particles: int,
    functional: AdditiveFunctional | Callable,
    *,
    num_backward: int = 2,
    backward: BackwardKernel | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
    resampling: str | Resampler = "systematic",
    ess_threshold: float = 0.5,
    return_estimates: bool = False,
    sharding: jax.sharding.Sharding | None = None,
    allow_collapsed: bool = False,
) -> PaRISResult:
    """Offline PaRIS over a whole sequence (a ``lax.scan`` of :func:`paris_step`; memory :math:`O(N)`).

    ``functional``: an :class:`AdditiveFunctional` or ``h(x_prev, x, t)``.  ``backward`` defaults to
    :func:`default_backward_kernel`.  ``return_estimates=True`` also returns :math:`E[S_t \\mid y_{0:t}]` for every
    ``t`` (``T`` times the size of the functional).  A collapsed filter (every weight zero at some step) raises
    ``FloatingPointError`` unless ``allow_collapsed=True`` (then the result says ``collapsed=True``).
    """
    check_key(key)
    fk = as_feynman_kac(model)
    fk.model.check_params(params)
    emissions, mask, inputs = validate_sequence(emissions, inputs, mask, model=fk)
    _validate_common(num_particles, ess_threshold, sharding)
    get_resampler(resampling)
    if not isinstance(num_backward, int) or num_backward < 1:
        raise ValueError(f"num_backward must be a positive int (>= 2 recommended for PaRIS); got {num_backward!r}.")
    if backward is None:
        backward = default_backward_kernel(fk.model)
    check_backward_kernel(backward, allow_none=False)
    result = _paris(
        key,
        fk,
        params,
        emissions,
        inputs,
        mask,
        num_particles,
        as_functional(functional),
        num_backward,
        backward,
        resampling,
        float(ess_threshold),
        bool(return_estimates),
        sharding,
    )
    refuse_collapsed(result.collapsed, "paris", allow_collapsed)
    return result


@eqx.filter_jit
def _paris(
    key,
    fk,
    params,
    emissions,
    inputs,
    mask,
    num_particles,
    functional,
    num_backward,
    backward,
    resampling,
    ess_threshold,
    return_estimates,
    sharding,
):
    T = emissions.shape[0]
    k0, key = jax.random.split(key)
    state, info0 = paris_init(
        k0, fk, params, emissions[0], num_particles, functional, inputs_at(inputs, 0), mask[0], sharding
    )

    def out(state, info):
        o = {"ess": info.ess, "resampled": info.resampled}
        if return_estimates:
            o["est"] = paris_estimate(state)
        return o

    def body(state, xs):
        k, y, u, obs = xs
        state, info = paris_step(
            k,
            state,
            fk,
            params,
            y,
            u,
            obs,
            functional=functional,
            backward=backward,
            num_backward=num_backward,
            resampling=resampling,
            ess_threshold=ess_threshold,
            sharding=sharding,
        )
        return state, out(state, info)

    first = out(state, info0)
    u_rest = None if inputs is None else jax.tree.map(lambda a: a[1:], inputs)
    state, rest = jax.lax.scan(body, state, (jax.random.split(key, T - 1), emissions[1:], u_rest, mask[1:]))
    outs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], axis=0), first, rest)
    return PaRISResult(
        estimate=paris_estimate(state),
        estimates=outs.get("est"),
        log_likelihood=state.filter.log_likelihood,
        ess=outs["ess"],
        resampled=outs["resampled"],
        collapsed=state.filter.collapsed,
        final_state=state,
    )


def paris_score(
    key: PRNGKeyArray,
    model: SSM | FeynmanKac,
    params: PyTree,
    emissions: Array,
    num_particles: int,
    **kwargs,
) -> PaRISResult:
    """PaRIS estimate of the score :math:`\\nabla_\\theta \\log p_\\theta(y_{0:T-1})` (a pytree like ``params``).

    Keyword arguments are those of :func:`paris`.
    """
    check_key(key)
    fk = as_feynman_kac(model)
    return paris(key, fk, params, emissions, num_particles, score_functional(fk.model, params), **kwargs)


def _flatten_named(tree, prefix):
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    out = {}
    for path, leaf in leaves:
        name = prefix + "".join(f"_{getattr(p, 'name', getattr(p, 'key', getattr(p, 'idx', '')))}" for p in path)
        out[name] = leaf
    return out


@to_arviz.register(PaRISResult)
def _paris_to_arviz(result: PaRISResult):
    """The estimate (single draw; one variable per leaf, named ``estimate_<field>``), running estimates over
    ``time`` if present, ESS and resampling flags in ``sample_stats``, the log-likelihood estimate."""
    import numpy as np

    post = _flatten_named(result.estimate, "estimate")
    dims: dict[str, list[str]] = {}
    for k, v in list(post.items()):
        dims[k] = [f"{k}_dim_{i}" for i in range(np.ndim(v))]
    if result.estimates is not None:
        for k, v in _flatten_named(result.estimates, "running_estimate").items():
            post[k] = v
            dims[k] = ["time"] + [f"{k}_dim_{i}" for i in range(np.ndim(v) - 1)]
    stats = {
        "ess": np.asarray(result.ess),
        "resampled": np.asarray(result.resampled),
        "log_likelihood_estimate": np.asarray(result.log_likelihood),
        "collapsed": np.asarray(result.collapsed),
    }
    dims.update({"ess": ["time"], "resampled": ["time"]})
    return summary_group(post, dims, sample_stats=stats)
