"""Particle filters (bootstrap, guided, auxiliary) as pure ``init`` / ``step`` kernels scanned with ``lax.scan``.

A :class:`FeynmanKac` object says how particles move and are weighted.  With filter weights :math:`W_{t-1}^i` and
an optional look-ahead :math:`\\eta_t(x_{t-1})` (auxiliary filter; 0 otherwise), one step is

1. first-stage weights :math:`V^i \\propto W_{t-1}^i e^{\\eta_t(x^i_{t-1})}`; if :math:`\\mathrm{ESS}(V) <
   \\kappa N` draw ancestors :math:`a_k \\sim V` and set base log-weights
   :math:`b_k = \\log\\sum_i W^i_{t-1} e^{\\eta^i} - \\log N - \\eta_t(x^{a_k}_{t-1})`; otherwise
   :math:`a_k = k`, :math:`b_k = \\log W^k_{t-1}`;
2. propose :math:`x_t^k \\sim q_t(\\cdot \\mid x_{t-1}^{a_k}, y_t)` (the transition for the bootstrap filter);
3. weight :math:`\\log w_t^k = b_k + \\log f(x_t^k \\mid x_{t-1}^{a_k}) + \\log g(y_t \\mid x_t^k) -
   \\log q_t(x_t^k \\mid x^{a_k}_{t-1}, y_t)` (only :math:`\\log g` for the bootstrap filter).

The likelihood increment :math:`\\log \\hat p(y_t \\mid y_{0:t-1}) = \\log\\sum_k w_t^k` gives an unbiased estimate
:math:`\\hat p(y_{0:T-1})` of the likelihood.  Step 1 (:func:`select_ancestors`), step 2 (:func:`propagate`) and
step 3 (:func:`reweight`) are separate pure functions so conditional filters can pin a particle between them.
If every weight vanishes the running log-likelihood becomes ``-inf``, ``collapsed`` is set and the weights are
reset to uniform so nothing downstream turns into NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from pssm.arviz import summary_group, to_arviz
from pssm.boundary import check_inputs_taken
from pssm.display import short_repr
from pssm.distributions import observed_log_prob
from pssm.inference.smc.keys import particle_keys
from pssm.inference.smc.resampling import (
    Resampler,
    ess_of_normalized,
    get_resampler,
    log_ess,
    normalize_log_weights,
)
from pssm.protocol import SSM, PyTree, complete_steps, inputs_at, lags_observed, model_inputs
from pssm.validation import check_array, check_key, fill_missing, is_tracer, split_missing

__all__ = [
    "FeynmanKac",
    "ParticleFilterState",
    "ParticleFilterInfo",
    "ParticleHistory",
    "ParticleFilterResult",
    "select_ancestors",
    "particle_keys",
    "propagate",
    "reweight",
    "filter_init",
    "filter_step",
    "particle_filter",
    "as_feynman_kac",
]


class FeynmanKac(eqx.Module):
    """How a particle filter moves and weights particles on an :class:`~pssm.SSM` (final).

    ``proposal(params, x_prev, t, y_t, u_t) -> Distribution`` and ``initial_proposal(params, y_0, u_0) ->
    Distribution`` replace the transition / initial distribution (``None``: bootstrap);
    ``lookahead(params, x_prev, t, y_t, u_t) -> log eta`` adds auxiliary first-stage weights (``None``: none).
    Build with :meth:`bootstrap`, :meth:`guided` or :meth:`auxiliary`.
    """

    model: SSM
    proposal: Callable[..., dist.Distribution] | None = None
    initial_proposal: Callable[..., dist.Distribution] | None = None
    lookahead: Callable[..., Array] | None = None

    @classmethod
    def bootstrap(cls, model: SSM) -> FeynmanKac:
        """Bootstrap filter: propose from the transition, weight by the emission density."""
        _check_model(model)
        return cls(model)

    @classmethod
    def guided(
        cls,
        model: SSM,
        proposal: Callable[..., dist.Distribution] | None = None,
        initial_proposal: Callable[..., dist.Distribution] | None = None,
    ) -> FeynmanKac:
        """Guided filter with a user proposal, or the model's own ``proposal`` / ``initial_proposal`` hooks."""
        _check_model(model)
        if proposal is None:
            if type(model).proposal is SSM.proposal:
                raise ValueError(
                    f"{type(model).__name__} defines no proposal; pass proposal=fn(params, x_prev, t, y_t, u_t) "
                    "returning a numpyro Distribution, or use FeynmanKac.bootstrap(model)."
                )
            proposal = model.proposal
        if initial_proposal is None and type(model).initial_proposal is not SSM.initial_proposal:
            initial_proposal = model.initial_proposal
        return cls(model, proposal, initial_proposal)

    @classmethod
    def auxiliary(
        cls,
        model: SSM,
        lookahead: Callable[..., Array],
        proposal: Callable[..., dist.Distribution] | None = None,
        initial_proposal: Callable[..., dist.Distribution] | None = None,
    ) -> FeynmanKac:
        """Auxiliary filter: resample with first-stage weights :math:`W e^{\\eta(x_{t-1})}` (e.g. a predictive
        log-likelihood :math:`\\log g(y_t \\mid E[x_t \\mid x_{t-1}])`), then correct."""
        _check_model(model)
        if not callable(lookahead):
            raise TypeError("lookahead must be a callable (params, x_prev, t, y_t, u_t) -> log-weight scalar.")
        return cls(model, proposal, initial_proposal, lookahead)

    # ---- single-particle pieces (vmapped by the kernels) ----
    def sample_initial(self, key: PRNGKeyArray, params: PyTree, y0: Array, u0: PyTree) -> Array:
        if self.initial_proposal is None:
            return self.model.initial(params, u0).sample(key)
        return self.initial_proposal(params, fill_missing(y0), u0).sample(key)

    def log_weight_initial(self, params: PyTree, x0: Array, y0: Array, u0: PyTree, observed) -> Array:
        t0 = jnp.zeros((), jnp.int32)
        lg = jnp.where(observed, observed_log_prob(self.model.emission(params, x0, t0, u0), y0), 0.0)
        if self.initial_proposal is None:
            return lg
        q = self.initial_proposal(params, fill_missing(y0), u0)
        return lg + self.model.initial(params, u0).log_prob(x0) - q.log_prob(x0)

    def sample(self, key: PRNGKeyArray, params: PyTree, x_prev: Array, t, y: Array, u: PyTree) -> Array:
        if self.proposal is None:
            return self.model.transition(params, x_prev, t, u).sample(key)
        return self.proposal(params, x_prev, t, fill_missing(y), u).sample(key)

    def log_weight(self, params: PyTree, x_prev: Array, x: Array, t, y: Array, u: PyTree, observed) -> Array:
        """:math:`\\log f(x \\mid x_{prev}) + \\log g(y \\mid x) - \\log q(x \\mid x_{prev}, y)` (bootstrap: log g)."""
        lg = jnp.where(observed, observed_log_prob(self.model.emission(params, x, t, u), y), 0.0)
        if self.proposal is None:
            return lg
        lf = self.model.transition(params, x_prev, t, u).log_prob(x)
        return lg + lf - self.proposal(params, x_prev, t, fill_missing(y), u).log_prob(x)

    def log_transition(self, params: PyTree, x_prev: Array, x: Array, t, u: PyTree) -> Array:
        return self.model.transition(params, x_prev, t, u).log_prob(x)


def _check_model(model):
    if not isinstance(model, SSM):
        raise TypeError(f"model must be a pssm.SSM; got {type(model).__name__}.")


def as_feynman_kac(model_or_fk: SSM | FeynmanKac) -> FeynmanKac:
    """An :class:`SSM` becomes its bootstrap filter; a :class:`FeynmanKac` passes through."""
    if isinstance(model_or_fk, FeynmanKac):
        return model_or_fk
    if isinstance(model_or_fk, SSM):
        return FeynmanKac.bootstrap(model_or_fk)
    raise TypeError(f"expected a pssm.SSM or a FeynmanKac; got {type(model_or_fk).__name__}.")


class ParticleFilterState(NamedTuple):
    particles: Array
    """``(N, *event)`` particles at time ``t``."""
    log_weights: Float[Array, " N"]
    """Normalised log-weights :math:`\\log W_t`."""
    log_likelihood: Float[Array, ""]
    """Running :math:`\\log \\hat p(y_{0:t})`."""
    collapsed: Bool[Array, ""]
    """True once all weights have vanished at some step."""
    t: Int[Array, ""]


class ParticleFilterInfo(NamedTuple):
    ancestors: Int[Array, " N"]
    resampled: Bool[Array, ""]
    ess: Float[Array, ""]
    log_likelihood_increment: Float[Array, ""]


class ParticleHistory(NamedTuple):
    particles: Array
    """``(T, N, *event)``."""
    log_weights: Float[Array, "T N"]
    """Normalised filter log-weights :math:`\\log W_t`."""
    ancestors: Int[Array, "T N"]
    """``ancestors[t, k]`` indexes the particle at ``t-1`` that particle ``k`` at ``t`` descends from
    (``ancestors[0] = arange(N)``)."""
    collapsed: Bool[Array, " T"] | None = None
    """``collapsed[t]``: every weight vanished at step ``t`` (the weights were reset to uniform there)."""

    __repr__ = short_repr


class ParticleFilterResult(NamedTuple):
    log_likelihood: Float[Array, ""]
    log_likelihood_increments: Float[Array, " T"]
    ess: Float[Array, " T"]
    resampled: Bool[Array, " T"]
    filtered: PyTree
    """Filtering expectations :math:`\\sum_i W_t^i \\varphi(x_t^i)` with leading axis ``T`` (means by default)."""
    collapsed: Bool[Array, ""]
    final_state: ParticleFilterState
    history: ParticleHistory | None

    __repr__ = short_repr


def _constrain(tree, sharding):
    if sharding is None:
        return tree
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)


def _log_n(n, dtype):
    return jnp.log(jnp.asarray(n, dtype))


def select_ancestors(
    key: PRNGKeyArray,
    fk: FeynmanKac,
    params: PyTree,
    particles: Array,
    log_weights: Float[Array, " N"],
    t: Int[Array, ""],
    y: Array,
    u: PyTree,
    resampler: Resampler,
    ess_threshold: float,
    num_samples: int | None = None,
) -> tuple[Int[Array, " M"], Float[Array, " M"], Bool[Array, ""]]:
    """Step 1: ``(ancestors, base_log_weights, resampled)`` (see the module docstring).

    ``ess_threshold`` :math:`\\kappa`: resample when :math:`\\mathrm{ESS} < \\kappa N`; ``>= 1`` always, ``<= 0``
    never (then ``num_samples`` must equal ``N``).
    """
    n = log_weights.shape[0]
    m = n if num_samples is None else num_samples
    dtype = log_weights.dtype
    if fk.lookahead is None:
        eta = None
        lv, c1 = log_weights, jnp.zeros((), dtype)
    else:
        y_seen = fill_missing(y)
        eta = jax.vmap(lambda x: fk.lookahead(params, x, t, y_seen, u))(particles).astype(dtype)
        lv, c1 = normalize_log_weights(log_weights + eta)
        c1 = jnp.where(jnp.isfinite(c1), c1, 0.0)

    def do_resample(_):
        a = resampler(key, lv, m).astype(jnp.int32)
        base = jnp.full((m,), c1 - _log_n(m, dtype), dtype)
        if eta is not None:
            base = base - eta[a]
        return a, base

    def keep(_):
        return jnp.arange(n, dtype=jnp.int32), log_weights

    if ess_threshold >= 1.0:
        a, base = do_resample(None)
        return a, base, jnp.asarray(True)
    if ess_threshold <= 0.0:
        if m != n:
            raise ValueError(f"num_samples={m} differs from N={n} but ess_threshold <= 0 never resamples.")
        a, base = keep(None)
        return a, base, jnp.asarray(False)
    if m != n:
        raise ValueError("num_samples != N requires ess_threshold >= 1 (always resample).")
    resampled = log_ess(lv) < jnp.log(jnp.asarray(ess_threshold * n, dtype))
    a, base = jax.lax.cond(resampled, do_resample, keep, None)
    return a, base, resampled


def propagate(
    key: PRNGKeyArray, fk: FeynmanKac, params: PyTree, particles_prev: Array, t: Int[Array, ""], y: Array, u: PyTree
) -> Array:
    """Step 2: one proposal draw per (already selected) parent, ``particles_prev = x_{t-1}[ancestors]``."""
    keys = particle_keys(key, particles_prev.shape[0])
    return jax.vmap(lambda k, x: fk.sample(k, params, x, t, y, u))(keys, particles_prev)


def reweight(
    fk: FeynmanKac,
    params: PyTree,
    particles_prev: Array,
    particles: Array,
    base_log_weights: Float[Array, " N"],
    t: Int[Array, ""],
    y: Array,
    u: PyTree,
    observed: Bool[Array, ""] | bool = True,
) -> tuple[Float[Array, " N"], Float[Array, ""]]:
    """Step 3: ``(normalised log W_t, log-likelihood increment)`` from base log-weights and incremental weights."""
    lg = jax.vmap(lambda xp, x: fk.log_weight(params, xp, x, t, y, u, observed))(particles_prev, particles)
    return normalize_log_weights(base_log_weights + lg.astype(base_log_weights.dtype))


def filter_init(
    key: PRNGKeyArray,
    fk: FeynmanKac,
    params: PyTree,
    y0: Array,
    num_particles: int,
    u0: PyTree = None,
    observed: Bool[Array, ""] | bool = True,
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[ParticleFilterState, ParticleFilterInfo]:
    """Draw and weight the particles at ``t = 0``: :math:`\\hat p(y_0) = N^{-1}\\sum_i w_0^i`."""
    keys = particle_keys(key, num_particles)
    x0 = jax.vmap(lambda k: fk.sample_initial(k, params, y0, u0))(keys)
    x0 = _constrain(x0, sharding)
    lw = jax.vmap(lambda x: fk.log_weight_initial(params, x, y0, u0, observed))(x0)
    dtype = jnp.result_type(lw.dtype, float)
    lw = lw.astype(dtype)
    base = jnp.full((num_particles,), -_log_n(num_particles, dtype), dtype)
    lw, inc = normalize_log_weights(base + lw)
    lw = _constrain(lw, sharding)
    state = ParticleFilterState(x0, lw, inc, ~jnp.isfinite(inc), jnp.zeros((), jnp.int32))
    info = ParticleFilterInfo(
        jnp.arange(num_particles, dtype=jnp.int32), jnp.asarray(False), ess_of_normalized(lw), inc
    )
    return state, info


def filter_step(
    key: PRNGKeyArray,
    state: ParticleFilterState,
    fk: FeynmanKac,
    params: PyTree,
    y: Array,
    u: PyTree = None,
    observed: Bool[Array, ""] | bool = True,
    *,
    resampling: str | Resampler = "systematic",
    ess_threshold: float = 0.5,
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[ParticleFilterState, ParticleFilterInfo]:
    """Advance the filter from ``state.t`` to ``state.t + 1`` with observation ``y`` (and inputs ``u``) there."""
    resampler = get_resampler(resampling)
    k_res, k_prop = jax.random.split(key)
    t = state.t + 1
    a, base, resampled = select_ancestors(
        k_res, fk, params, state.particles, state.log_weights, t, y, u, resampler, ess_threshold
    )
    a = _constrain(a, sharding)
    xp = _constrain(jnp.take(state.particles, a, axis=0), sharding)
    x = _constrain(propagate(k_prop, fk, params, xp, t, y, u), sharding)
    lw, inc = reweight(fk, params, xp, x, base, t, y, u, observed)
    lw = _constrain(lw, sharding)
    collapsed = state.collapsed | ~jnp.isfinite(inc)
    new = ParticleFilterState(x, lw, state.log_likelihood + inc, collapsed, t)
    return new, ParticleFilterInfo(a, resampled, ess_of_normalized(lw), inc)


def _weighted_mean(test_fn, particles, log_weights):
    w = jnp.exp(log_weights)
    vals = jax.vmap(test_fn)(particles)
    return jax.tree.map(lambda v: jnp.tensordot(w.astype(jnp.result_type(v.dtype, w.dtype)), v, axes=1), vals)


def _identity(x):
    return x


def _with_time(shape: tuple) -> str:
    return "(T, " + ", ".join(map(str, shape)) + ")" if shape else "(T,)"


def refuse_collapsed(collapsed: Any, what: str, allow_collapsed: bool) -> None:
    """``FloatingPointError`` when a filter behind ``what`` collapsed (every weight zero at some step), unless
    ``allow_collapsed``; a traced flag (inside a user's ``jit``) is left to the result's ``collapsed`` field."""
    if allow_collapsed or is_tracer(collapsed) or not bool(np.any(np.asarray(collapsed))):
        return
    raise FloatingPointError(
        f"{what}: the particle filter collapsed (every particle's weight is zero at some step), so the estimate "
        "would be meaningless. Use more particles or a better proposal, check the data for impossible "
        "observations (NaN marks a missing one), or pass allow_collapsed=True to get the result flagged "
        "collapsed=True."
    )


def history_collapsed(history: ParticleHistory) -> Any:
    """Whether any step of a filter history has no particle of positive weight."""
    if history.collapsed is None:
        return ~jnp.all(jnp.any(jnp.isfinite(history.log_weights), axis=-1))
    return jnp.any(history.collapsed)


def validate_sequence(emissions, inputs, mask, name: str = "emissions", *, model=None):
    """Boundary checks for one sequence: returns ``(emissions, mask, inputs)`` as jax arrays (mask defaults to all
    observed); every ``inputs`` leaf must share the leading time axis.  With ``model`` (an SSM or FeynmanKac) the
    per-step shape is checked against ``model.emission_shape`` and ``inputs`` becomes the model inputs
    (:func:`pssm.protocol.model_inputs`: lagged features for AR and GLM emissions)."""
    if emissions is None:
        raise TypeError(f"{name} is None; pass an array with a leading time axis.")
    check_array(emissions, name, finite=False)  # numeric dtype (object/str refused, naming the argument)
    emissions = jnp.asarray(emissions)
    if emissions.ndim < 1 or emissions.shape[0] < 1:
        raise ValueError(f"{name} must have a leading time axis of length >= 1; got shape {emissions.shape}.")
    T = emissions.shape[0]
    for leaf in jax.tree.leaves(inputs):
        if jnp.shape(leaf)[:1] != (T,):
            raise ValueError(f"every inputs leaf needs a leading time axis of length {T}; got {jnp.shape(leaf)}.")
    if mask is None:
        mask = jnp.ones((T,), bool)
    else:
        mask = jnp.asarray(mask)
        if mask.shape != (T,):
            raise ValueError(f"mask must have shape ({T},) (True = observed); got {mask.shape}.")
        mask = mask.astype(bool)
    if jnp.issubdtype(emissions.dtype, jnp.floating) and not is_tracer(emissions):
        inf_rows = np.isinf(np.asarray(emissions)).reshape(T, -1).any(-1)  # host-side: works inside a user's jit
        if inf_rows.any():
            t = int(np.argmax(inf_rows))
            raise ValueError(
                f"{name} holds ±inf (first at step {t}); an infinite observation has no likelihood. Use NaN to mark "
                "a missing observation, or fix the data."
            )
    # NaN = missing: no reweighting at an all-NaN step; the observed entries of a partly missing step are weighed
    ssm = None if model is None else (model.model if isinstance(model, FeynmanKac) else model)
    entries = True if ssm is None else ssm.missing_entries  # without a model: left to the model's own check
    complete = complete_steps(emissions) if ssm is not None and ssm.emission_lags else None
    emissions, mask = split_missing(emissions, 1, mask, entries=entries)
    if complete is not None:
        mask = mask & lags_observed(ssm, complete)
    if ssm is not None:
        hooks = (model.proposal, model.initial_proposal, model.lookahead) if isinstance(model, FeynmanKac) else ()
        custom = any(h is not None for h in hooks)
        if not custom:  # a user's proposal or lookahead may read inputs the model itself does not
            check_inputs_taken(ssm, inputs)
        want = tuple(ssm.emission_shape)
        got = tuple(emissions.shape[1:])
        if got != want and not (want == (1,) and got == ()):
            raise ValueError(
                f"{name} has per-step shape {got} but {type(ssm).__name__} declares emission_shape {want}; give "
                f"one sequence of shape {_with_time(want)} (vmap over sequences for a batch)."
            )
        if ssm.emission_lags:
            inputs = model_inputs(ssm, emissions, inputs)
    return emissions, mask, inputs


def _validate_common(num_particles, ess_threshold, sharding):
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive Python int; got {num_particles!r}.")
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"ess_threshold must lie in [0, 1] (fraction of N); got {ess_threshold}.")
    if sharding is not None:
        n_dev = len(sharding.device_set)
        if num_particles % n_dev:
            raise ValueError(f"num_particles={num_particles} must be a multiple of the {n_dev} devices in sharding.")


def particle_filter(
    key: PRNGKeyArray,
    model: SSM | FeynmanKac,
    params: PyTree,
    emissions: Array,
    num_particles: int,
    *,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
    resampling: str | Resampler = "systematic",
    ess_threshold: float = 0.5,
    test_fn: Callable[[Array], PyTree] | None = None,
    history: bool = False,
    sharding: jax.sharding.Sharding | None = None,
) -> ParticleFilterResult:
    """Run a particle filter over ``emissions`` (leading axis ``T``) with ``num_particles`` particles.

    ``model`` is an SSM (bootstrap filter) or a :class:`FeynmanKac` (guided / auxiliary).  ``test_fn(x)`` (one
    particle, any pytree output) gives the reported filtering expectations (default: means).  ``history=True``
    also returns all particles, weights and ancestors (:math:`O(NT)` memory; needed by FFBSi).  ``sharding``
    (see :func:`pssm.inference.smc.particle_sharding`) splits the particle axis across devices.
    ``mask[t] == False`` drops the emission term at ``t``, and so does a NaN in ``emissions[t]`` (a missing
    observation: no reweighting at that step); ±inf is refused.
    """
    check_key(key)
    fk = as_feynman_kac(model)
    fk.model.check_params(params)
    emissions, mask, inputs = validate_sequence(emissions, inputs, mask, model=fk)
    _validate_common(num_particles, ess_threshold, sharding)
    get_resampler(resampling)
    return _particle_filter(
        key,
        fk,
        params,
        emissions,
        inputs,
        mask,
        num_particles,
        resampling,
        float(ess_threshold),
        test_fn or _identity,
        bool(history),
        sharding,
    )


@eqx.filter_jit
def _particle_filter(
    key, fk, params, emissions, inputs, mask, num_particles, resampling, ess_threshold, test_fn, history, sharding
) -> ParticleFilterResult:
    T = emissions.shape[0]
    k0, key = jax.random.split(key)
    state, info0 = filter_init(k0, fk, params, emissions[0], num_particles, inputs_at(inputs, 0), mask[0], sharding)

    def out(state, info):
        o: dict[str, Any] = {
            "filtered": _weighted_mean(test_fn, state.particles, state.log_weights),
            "ess": info.ess,
            "resampled": info.resampled,
            "inc": info.log_likelihood_increment,
        }
        if history:
            vanished = ~jnp.isfinite(info.log_likelihood_increment)
            o["hist"] = ParticleHistory(state.particles, state.log_weights, info.ancestors, vanished)
        return o

    def body(state, xs):
        k, y, u, obs = xs
        state, info = filter_step(
            k, state, fk, params, y, u, obs, resampling=resampling, ess_threshold=ess_threshold, sharding=sharding
        )
        return state, out(state, info)

    first = out(state, info0)
    u_rest = None if inputs is None else jax.tree.map(lambda a: a[1:], inputs)
    state, rest = jax.lax.scan(body, state, (jax.random.split(key, T - 1), emissions[1:], u_rest, mask[1:]))
    outs = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], axis=0), first, rest)
    return ParticleFilterResult(
        log_likelihood=state.log_likelihood,
        log_likelihood_increments=outs["inc"],
        ess=outs["ess"],
        resampled=outs["resampled"],
        filtered=outs["filtered"],
        collapsed=state.collapsed,
        final_state=state,
        history=outs.get("hist"),
    )


@to_arviz.register(ParticleFilterResult)
def _filter_to_arviz(result: ParticleFilterResult, *, observations: Array | None = None):
    """Filtering expectations (single draw) over ``time``; ESS, resampling flags and the collapse flag in
    ``sample_stats``; per-step log-likelihood increments in ``log_likelihood``."""
    import numpy as np

    post: dict[str, Any] = {}
    dims: dict[str, list[str]] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(result.filtered):
        name = "filtered" + "".join(f"_{getattr(p, 'name', getattr(p, 'key', getattr(p, 'idx', '')))}" for p in path)
        post[name] = np.asarray(leaf)
        dims[name] = ["time"] + [f"latent_dim_{k}" if k else "latent_dim" for k in range(np.ndim(leaf) - 1)]
    stats = {
        "ess": np.asarray(result.ess),
        "resampled": np.asarray(result.resampled),
        "collapsed": np.asarray(result.collapsed),
        "log_likelihood_estimate": np.asarray(result.log_likelihood),
    }
    dims.update({"ess": ["time"], "resampled": ["time"], "y": ["time"]})
    obs = None
    if observations is not None:
        obs_arr = np.asarray(observations)
        obs = {"y": obs_arr}
        dims["y"] = ["time"] + [f"obs_dim_{k}" if k else "obs_dim" for k in range(obs_arr.ndim - 1)]
    return summary_group(
        post,
        dims,
        observed_data=obs,
        sample_stats=stats,
        log_likelihood={"y": np.asarray(result.log_likelihood_increments)},
    )
