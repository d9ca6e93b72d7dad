"""Particle marginal Metropolis–Hastings (Andrieu, Doucet & Holenstein 2010) with an adaptive random walk.

Parameters live in an unconstrained space :math:`u = T^{-1}(\\theta)` built from the prior's supports
(:class:`ParamSpace`; ``numpyro`` ``biject_to``).  With :math:`\\hat p_\\theta(y)` the bootstrap (or any
:class:`~pssm.inference.smc.FeynmanKac`) particle-filter likelihood estimate, one step proposes
:math:`u' = u + L z`, :math:`z \\sim N(0, I)`, and accepts with probability

.. math::  \\min\\Big(1, \\frac{\\hat p_{\\theta'}(y)\\, p(\\theta')\\, |J_T(u')|}
           {\\hat p_\\theta(y)\\, p(\\theta)\\, |J_T(u)|}\\Big),

keeping the current estimate :math:`\\hat p_\\theta(y)` (never recomputed) — an exact MCMC for
:math:`p(\\theta \\mid y)` because the estimate is unbiased.  During warm-up the proposal covariance adapts as
in Haario, Saksman & Tamminen (2001): :math:`LL^\\top = (2.38^2 / d)(\\hat\\Sigma_n + \\varepsilon I)` with
:math:`\\hat \\Sigma_n` the running covariance of the chain; it is frozen after warm-up so the kept draws come from
a fixed, valid kernel.  Chains run in parallel with ``vmap``.

Which leaves are sampled: by default (``prior=None``) those of ``model.param_spec()`` that are trainable (after
``frozen``, :func:`pssm.params.freeze`) and have a prior of their own; every other leaf is held at ``params``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray
from numpyro.distributions.transforms import biject_to

from pssm.arviz import to_arviz
from pssm.display import short_repr
from pssm.inference.chunked import run_chunked
from pssm.inference.mcmc.csmc import validate_num_particles, validate_sequence
from pssm.inference.numpyro_model import site_names
from pssm.inference.smc.filter import FeynmanKac, as_feynman_kac, particle_filter
from pssm.inference.smc.resampling import get_resampler
from pssm.params import freeze, is_spec, leaf_names, path_name, spec_log_prior
from pssm.protocol import SSM, PyTree
from pssm.validation import check_key

if TYPE_CHECKING:
    import arviz as az

__all__ = ["ParamSpace", "PMMHState", "PMMHInfo", "PMMHResult", "spec_prior", "pmmh_init", "pmmh_step", "pmmh"]


def _is_leaf(x):
    return x is None or isinstance(x, dist.Distribution)


@jax.tree_util.register_pytree_node_class
class ParamSpace:
    """Flat unconstrained coordinates for the sampled leaves of a prior pytree (``None`` leaves fixed at
    ``params``).  ``to_sites(u)`` gives constrained values by site name, ``to_params(u)`` the params pytree,
    ``log_prior(u)`` the prior density of :math:`T(u)` times the Jacobian (the density of :math:`u`).

    A pytree: the fixed params, the prior distributions and the transforms are its children (traced under
    ``jit``), the layout its static part, so samplers compile once per layout, not once per call."""

    _STATIC = ("treedef", "names", "shapes", "ushapes", "slots", "sizes", "dim")

    def __init__(self, prior: PyTree, params: PyTree | None = None):
        flat, treedef = jax.tree_util.tree_flatten_with_path(prior, is_leaf=_is_leaf)
        if not any(leaf is not None for _, leaf in flat):
            raise ValueError("prior has no distribution leaves: nothing to sample. Give at least one leaf a prior.")
        self.treedef = treedef
        self.fixed = None if params is None else treedef.flatten_up_to(params)
        self.names = site_names(prior)
        self.dists, self.transforms, self.shapes, self.ushapes, self.slots = [], [], [], [], []
        for i, (path, leaf) in enumerate(flat):
            if leaf is None:
                if self.fixed is None:
                    name = path_name(path)
                    raise ValueError(f"prior leaf '{name}' is None (fixed) but params= was not given; pass params.")
                continue
            shape = tuple(leaf.batch_shape) + tuple(leaf.event_shape)
            tr = biject_to(leaf.support)
            self.dists.append(leaf)
            self.transforms.append(tr)
            self.shapes.append(shape)
            self.ushapes.append(tuple(tr.inverse_shape(shape)))
            self.slots.append(i)
        self.sizes = [int(np.prod(s)) for s in self.ushapes]
        self.dim = int(sum(self.sizes))

    def tree_flatten(self):
        static = tuple(getattr(self, a) for a in self._STATIC)
        return (self.fixed, self.dists, self.transforms), tuple(tuple(v) if isinstance(v, list) else v for v in static)

    @classmethod
    def tree_unflatten(cls, aux, children):
        space = object.__new__(cls)
        space.fixed, space.dists, space.transforms = children
        for name, value in zip(cls._STATIC, aux, strict=True):
            setattr(space, name, list(value) if name != "dim" and name != "treedef" else value)
        return space

    def _split(self, u):
        out, start = [], 0
        for size, ushape in zip(self.sizes, self.ushapes, strict=True):
            out.append(u[start : start + size].reshape(ushape))
            start += size
        return out

    def to_sites(self, u: Float[Array, " d"]) -> dict[str, Array]:
        return {n: tr(v) for n, tr, v in zip(self.names, self.transforms, self._split(u), strict=True)}

    def to_params(self, u: Float[Array, " d"]) -> PyTree:
        leaves = list(self.fixed) if self.fixed is not None else [None] * self.treedef.num_leaves
        for slot, tr, v in zip(self.slots, self.transforms, self._split(u), strict=True):
            leaves[slot] = tr(v)
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def log_prior(self, u: Float[Array, " d"]) -> Float[Array, ""]:
        lp = jnp.zeros((), u.dtype)
        for d, tr, v in zip(self.dists, self.transforms, self._split(u), strict=True):
            x = tr(v)
            lp = lp + jnp.sum(d.log_prob(x)) + jnp.sum(tr.log_abs_det_jacobian(v, x))
        return lp

    def from_sites(self, sites: dict[str, Any]) -> Float[Array, " d"]:
        missing = [n for n in self.names if n not in sites]
        if missing:
            raise ValueError(f"init is missing sites {missing}; give a value for each of {self.names}.")
        parts = []
        for n, tr, shape in zip(self.names, self.transforms, self.shapes, strict=True):
            v = jnp.asarray(sites[n], jnp.result_type(float))
            if v.shape != shape:
                raise ValueError(f"init value for site '{n}' must have shape {shape}; got {v.shape}.")
            parts.append(jnp.ravel(tr.inv(v)))
        return jnp.concatenate(parts)

    def from_params(self, params: PyTree) -> Float[Array, " d"]:
        leaves = self.treedef.flatten_up_to(params)
        return self.from_sites({n: leaves[s] for n, s in zip(self.names, self.slots, strict=True)})

    def sample_prior(self, key: PRNGKeyArray) -> Float[Array, " d"]:
        keys = jax.random.split(key, len(self.dists))
        return self.from_sites({n: d.sample(k) for n, d, k in zip(self.names, self.dists, keys, strict=True)})


class PMMHState(NamedTuple):
    u: Float[Array, " d"]
    log_prior: Float[Array, ""]
    log_likelihood: Float[Array, ""]
    mean: Float[Array, " d"]
    """Running mean of the chain (adaptation)."""
    cov: Float[Array, "d d"]
    """Running covariance of the chain (adaptation)."""
    count: Int[Array, ""]
    proposal_chol: Float[Array, "d d"]


class PMMHInfo(NamedTuple):
    accepted: Bool[Array, ""]
    log_likelihood: Float[Array, ""]
    """Estimate at the state after the step."""
    proposal_log_likelihood: Float[Array, ""]
    mean_ess: Float[Array, ""]
    """Particle ESS of the proposal's filter, averaged over time."""


class PMMHResult(NamedTuple):
    samples: dict[str, Array]
    """Constrained draws of the sampled leaves by site name, ``(chain, draw, ...)``."""
    accepted: Bool[Array, "C D"]
    log_likelihood: Float[Array, "C D"]
    mean_ess: Float[Array, "C D"]
    acceptance_rate: Float[Array, " C"]
    proposal_cov: Float[Array, "C d d"]
    state: PMMHState
    """Final state of every chain (leading ``chain`` axis): pass as ``state=`` to continue."""
    names: list[str]
    params: PyTree = None
    """The draws as params pytrees, leaves ``(chain, draw, ...)``: sampled leaves from ``samples``, fixed leaves
    the given ``params`` bit for bit (read-only broadcast views, no copies)."""

    __repr__ = short_repr


def spec_prior(model: SSM, frozen: Sequence[str] = ()) -> PyTree:
    """The prior pytree PMMH samples by default: for each leaf of ``model.param_spec()`` (after
    :func:`pssm.params.freeze` of ``frozen``) its spec prior when the leaf is trainable and has one, else ``None``
    (held at ``params``).  Raises ``ValueError`` when no leaf is left to sample."""
    spec = model.param_spec()
    spec = freeze(spec, *frozen) if frozen else spec
    flat, treedef = jax.tree_util.tree_flatten(spec, is_leaf=is_spec)
    prior = jax.tree_util.tree_unflatten(treedef, [s.prior if s.trainable else None for s in flat])
    if all(s.prior is None or not s.trainable for s in flat):
        with_prior = [n for n, s in zip(leaf_names(spec, is_spec), flat, strict=True) if s.prior is not None]
        raise ValueError(
            "pmmh: no trainable parameter of model.param_spec() has a prior, so nothing is left to sample "
            f"(frozen={tuple(frozen)!r}; leaves with a prior: {with_prior or 'none'}). PMMH needs a proper prior: "
            "unfreeze a leaf that has one, give the model priors, or pass prior= (a pytree of NumPyro "
            "distributions, None = fixed at params)."
        )
    return prior


def pmmh_init(u: Float[Array, " d"], log_prior, log_likelihood, proposal_cov: Float[Array, "d d"]) -> PMMHState:
    d = u.shape[0]
    return PMMHState(
        u,
        log_prior,
        log_likelihood,
        u,
        jnp.zeros((d, d), u.dtype),
        jnp.zeros((), jnp.int32),
        jnp.linalg.cholesky(proposal_cov).astype(u.dtype),
    )


def pmmh_step(
    key: PRNGKeyArray,
    state: PMMHState,
    log_prior_fn,
    log_likelihood_fn,
    *,
    adapt: bool | Bool[Array, ""] = False,
    adapt_start: int = 100,
    epsilon: float = 1e-6,
) -> tuple[PMMHState, PMMHInfo]:
    """One PMMH step.  ``log_likelihood_fn(key, u) -> (log p̂(y), mean ESS)``; ``log_prior_fn(u)`` includes the
    Jacobian.  With ``adapt`` the running moments are updated and, after ``adapt_start`` steps, the proposal is
    :math:`(2.38^2/d)(\\hat\\Sigma + \\varepsilon I)`."""
    k_z, k_ll, k_u = jax.random.split(key, 3)
    d = state.u.shape[0]
    dtype = state.u.dtype
    prop = state.u + state.proposal_chol @ jax.random.normal(k_z, (d,), dtype)
    lp = log_prior_fn(prop)
    ll, ess = log_likelihood_fn(k_ll, prop)
    log_alpha = (ll + lp) - (state.log_likelihood + state.log_prior)
    log_alpha = jnp.where(jnp.isnan(log_alpha), -jnp.inf, log_alpha)
    accept = jnp.log(jax.random.uniform(k_u, (), dtype)) < log_alpha
    u = jnp.where(accept, prop, state.u)
    new_ll = jnp.where(accept, ll, state.log_likelihood)
    new_lp = jnp.where(accept, lp, state.log_prior)
    # Welford update of the running moments; proposal from them once enough steps were seen
    n = state.count + 1
    nf = n.astype(dtype)
    delta = u - state.mean
    mean = state.mean + delta / nf
    cov = state.cov + (jnp.outer(delta, u - mean) - state.cov) / nf
    sd2 = (2.38**2) / d
    chol_new = jnp.linalg.cholesky(sd2 * (cov + epsilon * jnp.eye(d, dtype=dtype)))
    use_new = (n >= adapt_start) & jnp.all(jnp.isfinite(chol_new))
    adapt = jnp.asarray(adapt)
    chol = jnp.where(adapt & use_new, chol_new, state.proposal_chol)
    mean = jnp.where(adapt, mean, state.mean)
    cov = jnp.where(adapt, cov, state.cov)
    n = jnp.where(adapt, n, state.count)
    new = PMMHState(u, new_lp, new_ll, mean, cov, n, chol)
    return new, PMMHInfo(accept, new_ll, ll, ess)


class _Options(NamedTuple):
    """PMMH's static settings (hashable: one compilation per combination)."""

    num_particles: int
    resampling: str
    ess_threshold: float
    adapt: bool
    adapt_start: int
    use_spec: bool
    """The prior is the model's ``param_spec`` (then ``model.log_prior``'s coupling terms are added)."""


def _log_prior_u(fk: FeynmanKac, space: ParamSpace, opts: _Options, u: Array) -> Array:
    if not opts.use_spec:
        return space.log_prior(u)
    p = space.to_params(u)  # the coupling terms of model.log_prior that the leaf priors do not carry
    return space.log_prior(u) + (fk.model.log_prior(p) - spec_log_prior(fk.model.param_spec(), p))


def _log_lik(key, u, fk, space, emissions, inputs, mask, opts):
    r = particle_filter(
        key,
        fk,
        space.to_params(u),
        emissions,
        opts.num_particles,
        inputs=inputs,
        mask=mask,
        resampling=opts.resampling,
        ess_threshold=opts.ess_threshold,
    )
    return jnp.where(r.collapsed, -jnp.inf, r.log_likelihood), jnp.mean(r.ess)


@eqx.filter_jit
def _start(keys, u0, proposal_cov, target):
    fk, space, *_, opts = target
    lls, _ = jax.vmap(lambda k, u: _log_lik(k, u, *target))(keys, u0)
    lps = jax.vmap(lambda u: _log_prior_u(fk, space, opts, u))(u0)
    return jax.vmap(lambda u, lp, ll: pmmh_init(u, lp, ll, proposal_cov))(u0, lps, lls)


def _sweep(key, carry, fk, space, emissions, inputs, mask, opts):
    """One PMMH step of every chain (the phase, adapting or not, in the carry)."""
    st, adapting = carry
    target = (fk, space, emissions, inputs, mask, opts)
    st, info = jax.vmap(
        lambda kk, s: pmmh_step(
            kk,
            s,
            lambda u: _log_prior_u(fk, space, opts, u),
            lambda k, u: _log_lik(k, u, *target),
            adapt=adapting & opts.adapt,
            adapt_start=opts.adapt_start,
        )
    )(jax.random.split(key, st.u.shape[0]), st)
    return (st, adapting), (info, st.u)


@eqx.filter_jit
def _to_sites(space, us):
    return jax.vmap(jax.vmap(space.to_sites))(us)


def pmmh(
    key: PRNGKeyArray,
    model: SSM | FeynmanKac,
    params: PyTree | None,
    emissions: Array,
    *,
    prior: PyTree | None = None,
    frozen: Sequence[str] = (),
    num_samples: int,
    num_particles: int,
    num_warmup: int = 1000,
    num_chains: int = 4,
    init: dict[str, Any] | None = None,
    proposal_cov: Array | None = None,
    proposal_scale: float = 0.1,
    adapt: bool = True,
    adapt_start: int = 100,
    state: PMMHState | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    progress: bool = False,
    chunk_size: int = 250,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> PMMHResult:
    """PMMH on the sampled leaves of ``prior``; all other leaves are held at ``params`` bit for bit.

    ``prior=None`` (default) builds the prior pytree from ``model.param_spec()`` after
    ``pssm.params.freeze(spec, *frozen)``: a trainable leaf with a spec prior is sampled with that prior; every
    other leaf — frozen, or trainable without a prior of its own (PMMH needs a proper prior) — is fixed at
    ``params``.  The target is then :math:`p(y \\mid \\theta) \\exp(\\text{model.log\\_prior}(\\theta))`, i.e.
    hierarchical terms of ``model.log_prior`` beyond the leaf priors are included.  ``ValueError`` when nothing is
    left to sample.  An explicit ``prior`` pytree (NumPyro distributions for sampled leaves, ``None`` for leaves
    fixed at ``params``) replaces the spec; then ``frozen`` must be empty.

    Chains start at ``init`` (constrained values by site name), else at the sampled leaves' values in ``params``,
    else at prior draws; or continue from ``state`` (then warm-up is skipped unless asked).  The proposal starts at
    ``proposal_cov`` (unconstrained space; default ``proposal_scale**2 * I``) and adapts during ``num_warmup``.
    ``checkpoint``: a file the run is saved to every ``checkpoint_every`` chunks of ``chunk_size`` iterations and
    resumed from when it exists, ending exactly as an uninterrupted run (:func:`pssm.inference.chunked.run_chunked`).
    """
    check_key(key)
    fk = as_feynman_kac(model)
    if params is not None:  # the fixed leaves and (without init or state) the chains' start
        fk.model.check_params(params)
    emissions, mask, inputs = validate_sequence(emissions, inputs, mask)  # particle_filter prepares the inputs
    num_particles = validate_num_particles(num_particles, 1)
    num_samples = validate_num_particles(num_samples, 1, "num_samples")
    num_chains = validate_num_particles(num_chains, 1, "num_chains")
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, int) or num_warmup < 0:
        raise ValueError(f"num_warmup must be a non-negative int; got {num_warmup!r}.")
    get_resampler(resampling)
    if isinstance(frozen, str):
        frozen = (frozen,)
    frozen = tuple(frozen)
    if prior is not None and frozen:
        raise ValueError(
            "frozen= applies to the model's param_spec (prior=None); with an explicit prior pytree hold a leaf fixed "
            "by giving it None there."
        )
    use_spec = prior is None
    if use_spec:
        prior = spec_prior(fk.model, frozen)
    space = ParamSpace(prior, params)
    d = space.dim
    dtype = jnp.result_type(float)
    opts = _Options(num_particles, resampling, float(ess_threshold), bool(adapt), int(adapt_start), use_spec)
    target = (fk, space, emissions, inputs, mask, opts)

    k_init, k_warm, k_run = jax.random.split(key, 3)
    if state is None:
        if init is not None:
            u0 = jnp.broadcast_to(space.from_sites(init), (num_chains, d))
        elif params is not None:
            u0 = jnp.broadcast_to(space.from_params(params), (num_chains, d))
        else:
            u0 = jax.vmap(space.sample_prior)(jax.random.split(k_init, num_chains))
        u0 = u0.astype(dtype)
        if proposal_cov is None:
            proposal_cov = (float(proposal_scale) ** 2) * jnp.eye(d, dtype=dtype)
        proposal_cov = jnp.asarray(proposal_cov, dtype)
        if proposal_cov.shape != (d, d):
            raise ValueError(
                f"proposal_cov must be ({d}, {d}) for the {d} unconstrained coordinates of "
                f"{space.names}; got {proposal_cov.shape}."
            )
        state = _start(jax.random.split(k_init, num_chains), u0, proposal_cov, target)
    elif not isinstance(state, PMMHState):
        raise TypeError("state must be a PMMHState (result.state of a previous run) or None.")
    elif state.u.shape != (num_chains, d):
        raise ValueError(f"state.u must have shape ({num_chains}, {d}); got {state.u.shape}.")

    # warm-up and sampling share one compiled chunk: the phase (adapting or not) rides in the carry
    chunk = max(1, min(int(chunk_size), max(num_warmup, num_samples)))
    kw = dict(args=target, chunk_size=chunk, exact_chunk=True, progress=progress, checkpoint_every=checkpoint_every)
    if num_warmup:
        warm_file = None if checkpoint is None else f"{os.fspath(checkpoint)}.warmup"
        (state, _), _ = run_chunked(
            _sweep, (state, jnp.asarray(True)), k_warm, num_warmup, desc="PMMH warmup", checkpoint=warm_file, **kw
        )
    (state, _), (info, us) = run_chunked(
        _sweep, (state, jnp.asarray(False)), k_run, num_samples, desc="PMMH", checkpoint=checkpoint, **kw
    )
    us = np.swapaxes(us, 0, 1)  # (chain, draw, d)
    sites = _to_sites(space, jnp.asarray(us))
    sw = lambda a: np.swapaxes(np.asarray(a), 0, 1)  # noqa: E731
    acc = sw(info.accepted)
    chol = np.asarray(state.proposal_chol)
    draws = _draws_as_params(space, sites, us.shape[:2])
    return PMMHResult(
        samples={k: np.asarray(v) for k, v in sites.items()},
        accepted=acc,
        log_likelihood=sw(info.log_likelihood),
        mean_ess=sw(info.mean_ess),
        acceptance_rate=acc.mean(axis=1),
        proposal_cov=chol @ np.swapaxes(chol, -1, -2),
        state=state,
        names=list(space.names),
        params=draws,
    )


def _draws_as_params(space: ParamSpace, sites: dict[str, Array], lead: tuple[int, ...]) -> PyTree:
    """Params pytrees over ``lead = (chain, draw)``: sampled leaves from ``sites``, fixed ones broadcast views."""
    leaves: list[Any] = [None] * space.treedef.num_leaves
    if space.fixed is not None:
        for i, v in enumerate(space.fixed):
            if v is not None:
                a = np.asarray(v)
                leaves[i] = np.broadcast_to(a, (*lead, *a.shape))
    for name, slot in zip(space.names, space.slots, strict=True):
        leaves[slot] = np.asarray(sites[name])
    return jax.tree_util.tree_unflatten(space.treedef, leaves)


@to_arviz.register(PMMHResult)
def _pmmh_to_arviz(result: PMMHResult, *, var_names: Sequence[str] | None = None) -> az.InferenceData:
    """Draws by site name over ``(chain, draw, ...)``; ``sample_stats``: ``accepted``, ``log_likelihood``
    (particle estimate at the current state) and ``ess`` (mean particle ESS of each proposal's filter)."""
    import arviz as az

    post = {k: np.asarray(v) for k, v in result.samples.items() if var_names is None or k in var_names}
    dims = {k: [f"{k}_dim_{i}" for i in range(v.ndim - 2)] for k, v in post.items()}
    stats = {
        "accepted": np.asarray(result.accepted),
        "log_likelihood_estimate": np.asarray(result.log_likelihood),
        "ess": np.asarray(result.mean_ess),
    }
    return az.from_dict(posterior=post, sample_stats=stats, dims=dims)
