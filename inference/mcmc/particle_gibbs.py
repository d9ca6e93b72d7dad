"""Particle Gibbs over (path, θ): conditional SMC path updates alternating with parameter updates.

One iteration (Andrieu, Doucet & Holenstein 2010; ancestor sampling: Lindsten, Jordan & Schön 2014):

.. math::  x^{(k)} \\sim P^{\\mathrm{CSMC}}_{\\theta^{(k-1)}}(x^{(k-1)}, \\cdot), \\qquad
           \\theta^{(k)} \\sim p(\\theta \\mid x^{(k)}, y)

leaves :math:`p(\\theta, x_{0:T-1} \\mid y_{0:T-1})` invariant.  Two ways to draw :math:`\\theta`:

* :func:`particle_gibbs`: a user-supplied conditional ``conditional(key, path, emissions, params) -> params``
  (conjugate updates; it must return frozen leaves unchanged), all chains ``vmap``-ed, jitted chunks with an
  optional progress bar, resumable from ``result.state``;
* :func:`particle_gibbs_nuts`: NUTS on :math:`\\theta \\mid x, y` through NumPyro's ``HMCGibbs`` on the NumPyro model
  derived from the SSM (:func:`pssm.inference.make_numpyro_model`: by default the model's ``param_spec()`` with
  ``frozen`` leaves held at ``params``; the path is its latent sites ``"x_0"``, ``"x"``), with CSMC as the Gibbs
  function (:func:`make_csmc_gibbs_fn`).  It returns a ``numpyro.infer.MCMC`` (multiple chains);
  :func:`mcmc_to_arviz` converts it with the path as ``path`` over ``(chain, draw, time, latent_dim)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jaxtyping import Array, Bool, Float, PRNGKeyArray
from numpyro.infer import MCMC, NUTS, HMCGibbs

from pssm.arviz import to_arviz
from pssm.display import short_repr
from pssm.inference.chunked import run_chunked
from pssm.inference.mcmc.csmc import (
    csmc_kernel,
    validate_method,
    validate_num_particles,
    validate_reference,
    validate_sequence,
)
from pssm.inference.numpyro_model import make_numpyro_model, sample_params
from pssm.inference.smc.backward import BackwardKernel
from pssm.inference.smc.filter import FeynmanKac, as_feynman_kac
from pssm.jit import SameFunction
from pssm.params import freeze, is_spec, path_name
from pssm.protocol import SSM, PyTree, simulate
from pssm.validation import check_key

if TYPE_CHECKING:
    import arviz as az

__all__ = [
    "ParticleGibbsState",
    "ParticleGibbsInfo",
    "ParticleGibbsResult",
    "particle_gibbs_init",
    "particle_gibbs_step",
    "particle_gibbs",
    "params_from_sites",
    "make_csmc_gibbs_fn",
    "particle_gibbs_nuts",
    "mcmc_to_arviz",
]

Conditional = Callable[[PRNGKeyArray, Array, Array, PyTree], PyTree]


class ParticleGibbsState(NamedTuple):
    path: Array
    """``(T, *event)`` (leading ``chain`` axis in results)."""
    params: PyTree


class ParticleGibbsInfo(NamedTuple):
    log_likelihood: Float[Array, ""]
    """Log normaliser of the conditional filter (a diagnostic, not an unbiased likelihood estimate)."""
    mean_ess: Float[Array, ""]
    """Particle ESS averaged over time steps."""
    path_update_rate: Float[Array, ""]
    """Fraction of time steps whose state changed (path degeneracy diagnostic)."""


class ParticleGibbsResult(NamedTuple):
    params: PyTree
    """Draws, leaves ``(chain, draw, ...)``."""
    paths: Array | None
    """``(chain, draw, T, *event)`` when ``store_paths``."""
    log_likelihood: Float[Array, "C D"]
    mean_ess: Float[Array, "C D"]
    path_update_rate: Float[Array, "C D"]
    state: ParticleGibbsState
    """Final state of every chain (leading ``chain`` axis): pass it back as ``state=`` to continue."""

    __repr__ = short_repr


def particle_gibbs_init(path: Array, params: PyTree) -> ParticleGibbsState:
    return ParticleGibbsState(jnp.asarray(path), params)


def particle_gibbs_step(
    key: PRNGKeyArray,
    state: ParticleGibbsState,
    fk: FeynmanKac,
    emissions: Array,
    conditional: Conditional,
    num_particles: int,
    *,
    method: str = "ancestor",
    backward: BackwardKernel | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
) -> tuple[ParticleGibbsState, ParticleGibbsInfo]:
    """One sweep (pure kernel): CSMC path update at the current params, then ``conditional`` for the params."""
    k_path, k_theta = jax.random.split(key)
    path, ll, ess = csmc_kernel(
        k_path,
        fk,
        state.params,
        emissions,
        state.path,
        num_particles,
        method=method,
        backward=backward,
        inputs=inputs,
        mask=mask,
    )
    changed = jnp.mean(jnp.any((path != state.path).reshape(path.shape[0], -1), axis=-1).astype(ll.dtype))
    params = conditional(k_theta, path, emissions, state.params)
    return ParticleGibbsState(path, params), ParticleGibbsInfo(ll, ess, changed)


def _sweep(key, st, fk, emissions, inputs, mask, conditional, num_particles, method, backward, store_paths):
    """One sweep of every chain (``vmap``); module level, so repeated calls compile once."""

    def one(k, s):
        return particle_gibbs_step(
            k, s, fk, emissions, conditional, num_particles, method=method, backward=backward, inputs=inputs, mask=mask
        )

    st, info = jax.vmap(one)(jax.random.split(key, st.path.shape[0]), st)
    return st, (info, st.path if store_paths else None, st.params)


def particle_gibbs(
    key: PRNGKeyArray,
    model: SSM | FeynmanKac,
    params: PyTree | None,
    emissions: Array,
    *,
    conditional: Conditional,
    num_samples: int,
    num_particles: int,
    num_chains: int = 4,
    num_warmup: int = 0,
    method: str = "ancestor",
    backward: BackwardKernel | None = None,
    state: ParticleGibbsState | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
    store_paths: bool = True,
    progress: bool = False,
    chunk_size: int = 100,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> ParticleGibbsResult:
    """Particle Gibbs with a user-supplied parameter conditional, ``num_chains`` chains in parallel (``vmap``).

    ``conditional(key, path, emissions, params) -> params`` must draw from :math:`p(\\theta \\mid x, y)`; it owns
    which leaves move, so it must return frozen (fixed) leaves unchanged — the sampler does not reset them.  Each
    chain starts at ``params`` and a path simulated from the model there (or from ``state``, a previous
    ``result.state``, to continue; then ``params`` may be ``None``).  ``num_warmup`` sweeps are discarded.  CSMC
    path updates use ``method`` (``"ancestor"``, ``"backward"`` with kernel ``backward``, ``"trace"``).
    ``checkpoint``: a file the run is saved to every ``checkpoint_every`` chunks of ``chunk_size`` iterations and
    resumed from when it exists, ending exactly as an uninterrupted run (:func:`pssm.inference.chunked.run_chunked`).
    """
    check_key(key)
    fk = as_feynman_kac(model)
    emissions, mask, inputs = validate_sequence(emissions, inputs, mask, model=fk)
    num_particles = validate_num_particles(num_particles)
    validate_method(method)
    if not callable(conditional):
        raise TypeError("conditional must be a callable (key, path, emissions, params) -> params.")
    num_chains = validate_num_particles(num_chains, 1, "num_chains")
    num_samples = validate_num_particles(num_samples, 1, "num_samples")
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, int) or num_warmup < 0:
        raise ValueError(f"num_warmup must be a non-negative int; got {num_warmup!r}.")
    T = emissions.shape[0]
    k_init, k_run = jax.random.split(key)
    if state is None:
        if params is None:
            raise TypeError("params is None; pass a params pytree to start the chains from (or state=).")
        paths = jax.vmap(lambda k: simulate(k, fk.model, params, T, inputs)[0])(jax.random.split(k_init, num_chains))
        params0 = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (num_chains, *jnp.shape(a))), params)
        state = ParticleGibbsState(paths, params0)
    else:
        if not isinstance(state, ParticleGibbsState):
            raise TypeError("state must be a ParticleGibbsState (result.state of a previous run) or None.")
        if state.path.ndim < 2 or state.path.shape[0] != num_chains:
            raise ValueError(f"state.path must have shape (num_chains={num_chains}, {T}, ...); got {state.path.shape}.")
        validate_reference(state.path[0], T, "state.path[chain]")

    # warm-up and sampling share one compiled chunk; warm-up outputs are dropped
    args = (fk, emissions, inputs, mask, SameFunction(conditional), num_particles, method, backward, store_paths)
    state, (info, paths, params) = run_chunked(
        _sweep,
        state,
        k_run,
        num_warmup + num_samples,
        args=args,
        chunk_size=chunk_size,
        progress=progress,
        desc="PG",
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )
    info, paths, params = jax.tree.map(lambda a: a[num_warmup:], (info, paths, params))
    sw = lambda a: None if a is None else np.swapaxes(a, 0, 1)  # noqa: E731  (draw, chain) -> (chain, draw)
    return ParticleGibbsResult(
        params=jax.tree.map(sw, params),
        paths=sw(paths),
        log_likelihood=sw(info.log_likelihood),
        mean_ess=sw(info.mean_ess),
        path_update_rate=sw(info.path_update_rate),
        state=state,
    )


def _leaf_name(path) -> str:
    return path_name(path)


def _event_dims(name: str, arr: np.ndarray, lead: int) -> list[str]:
    return [f"{name}_dim_{i}" for i in range(arr.ndim - lead)]


def _path_var(paths: np.ndarray) -> np.ndarray:
    p = np.asarray(paths)
    return p.reshape(p.shape[:3] + (-1,))


@to_arviz.register(ParticleGibbsResult)
def _pg_to_arviz(result: ParticleGibbsResult, *, var_names: Sequence[str] | None = None) -> az.InferenceData:
    """Parameter draws (named by their pytree path, e.g. ``dynamics_weights``) and the paths ``path`` over
    ``(chain, draw, time, latent_dim)``; ``sample_stats``: conditional log normaliser (``log_likelihood``), mean
    particle ESS (``ess``), ``path_update_rate``.  ``var_names`` keeps only those parameters."""
    import arviz as az

    post: dict[str, np.ndarray] = {}
    dims: dict[str, list[str]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(result.params)[0]:
        name = _leaf_name(path) or "params"
        if var_names is not None and name not in var_names:
            continue
        post[name] = np.asarray(leaf)
        dims[name] = _event_dims(name, post[name], 2)
    if result.paths is not None:
        post["path"] = _path_var(result.paths)
        dims["path"] = ["time", "latent_dim"]
    stats = {
        "log_likelihood_estimate": np.asarray(result.log_likelihood),
        "ess": np.asarray(result.mean_ess),
        "path_update_rate": np.asarray(result.path_update_rate),
    }
    return az.from_dict(posterior=post, sample_stats=stats, dims=dims)


# ------------------------------------------------------------------------------------------------ NumPyro route


def params_from_sites(prior: PyTree, params: PyTree | None, sites: dict[str, Array]) -> PyTree:
    """The params pytree with the prior's sampled leaves taken from ``sites`` (constrained values by site name)."""
    return numpyro.handlers.substitute(lambda: sample_params(prior, params), data=sites)()


def _resolve_spec(model: SSM, frozen: Sequence[str]) -> PyTree:
    spec = model.param_spec()
    spec = freeze(spec, *frozen) if frozen else spec
    if not any(s.trainable for s in jax.tree.leaves(spec, is_leaf=is_spec)):
        raise ValueError(
            f"frozen={tuple(frozen)!r} freezes every parameter: nothing is left for NUTS to sample. Unfreeze at "
            "least one leaf (or run particle_gibbs with a conditional that only moves the path)."
        )
    return spec


def _spec_params_from_sites(spec: PyTree, params: PyTree | None, sites: dict[str, Array]) -> PyTree:
    """Params from the bridge's spec path: trainable leaves from ``sites`` (by dotted name), frozen ones from
    ``params`` (the same rule as :func:`pssm.inference.numpyro_model.spec_sample_params`)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(spec, is_leaf=is_spec)
    given = None if params is None else treedef.flatten_up_to(params)
    leaves = [sites[path_name(k)] if s.trainable else given[i] for i, (k, s) in enumerate(flat)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _check_prior_frozen(prior: PyTree | None, frozen: Sequence[str]) -> tuple[str, ...]:
    if isinstance(frozen, str):
        frozen = (frozen,)
    frozen = tuple(frozen)
    if prior is not None and frozen:
        raise ValueError(
            "frozen= applies to the model's param_spec (prior=None); with an explicit prior pytree hold a leaf fixed "
            "by giving it None there."
        )
    return frozen


def make_csmc_gibbs_fn(
    model: SSM | FeynmanKac,
    params: PyTree | None,
    emissions: Array,
    *,
    num_particles: int,
    prior: PyTree | None = None,
    frozen: Sequence[str] = (),
    method: str = "ancestor",
    backward: BackwardKernel | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
) -> Callable[..., dict[str, Array]]:
    """A ``gibbs_fn(rng_key, gibbs_sites, hmc_sites)`` for ``numpyro.infer.HMCGibbs`` on the derived NumPyro model:
    one CSMC sweep pinned to the current path ``(x_0, x)`` at the params given by ``hmc_sites``.

    ``prior``/``params``/``frozen`` must be those given to :func:`pssm.inference.make_numpyro_model` (``prior=None``:
    the model's ``param_spec()`` with ``frozen`` leaves at ``params``)."""
    fk = as_feynman_kac(model)
    emissions, mask, inputs = validate_sequence(emissions, inputs, mask, model=fk)
    if emissions.shape[0] < 2:
        raise ValueError("particle Gibbs through NumPyro needs at least 2 time steps (sites 'x_0' and 'x').")
    num_particles = validate_num_particles(num_particles)
    validate_method(method)
    frozen = _check_prior_frozen(prior, frozen)
    if prior is None:
        spec = _resolve_spec(fk.model, frozen)
        to_params = lambda sites: _spec_params_from_sites(spec, params, sites)  # noqa: E731
    else:
        to_params = lambda sites: params_from_sites(prior, params, sites)  # noqa: E731

    def gibbs_fn(rng_key, gibbs_sites, hmc_sites):
        p = to_params(hmc_sites)
        ref = jnp.concatenate([gibbs_sites["x_0"][None], gibbs_sites["x"]], axis=0)
        path, _, _ = csmc_kernel(
            rng_key, fk, p, emissions, ref, num_particles, method=method, backward=backward, inputs=inputs, mask=mask
        )
        return {"x_0": path[0], "x": path[1:]}

    return gibbs_fn


def particle_gibbs_nuts(
    key: PRNGKeyArray,
    model: SSM | FeynmanKac,
    params: PyTree | None,
    emissions: Array,
    *,
    prior: PyTree | None = None,
    frozen: Sequence[str] = (),
    num_particles: int,
    num_warmup: int,
    num_samples: int,
    num_chains: int = 4,
    method: str = "ancestor",
    backward: BackwardKernel | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
    chain_method: str | Callable = "vectorized",
    progress: bool = False,
    nuts_kwargs: dict[str, Any] | None = None,
) -> MCMC:
    """Particle Gibbs with NUTS for :math:`\\theta \\mid x, y` (``HMCGibbs``), returning the run ``MCMC``.

    With ``prior=None`` the parameters follow the model's ``param_spec()`` through the NumPyro bridge: every
    trainable leaf is a site (its spec prior, or a flat prior on its constraint) and the leaves named in ``frozen``
    (dotted paths, :func:`pssm.params.freeze`) are held at ``params``; the density includes ``model.log_prior``.
    An explicit ``prior`` pytree (NumPyro distributions for sampled leaves, ``None`` for leaves fixed at ``params``)
    replaces the spec (then ``frozen`` must be empty).  The path lives in the sites ``"x_0"`` and ``"x"``; convert
    with :func:`mcmc_to_arviz` (or ``arviz.from_numpyro``).  ``chain_method``: ``"vectorized"`` (chains vmapped),
    ``"sequential"``, ``"parallel"`` or a jax transform.
    """
    check_key(key)
    fk = as_feynman_kac(model)
    frozen = _check_prior_frozen(prior, frozen)
    gibbs_fn = make_csmc_gibbs_fn(
        fk,
        params,
        emissions,
        num_particles=num_particles,
        prior=prior,
        frozen=frozen,
        method=method,
        backward=backward,
        inputs=inputs,
        mask=mask,
    )
    emissions, mask, inputs = validate_sequence(emissions, inputs, mask)  # the Gibbs function prepares the inputs
    for name, v in (("num_warmup", num_warmup), ("num_samples", num_samples), ("num_chains", num_chains)):
        validate_num_particles(v, 0 if name == "num_warmup" else 1, name)
    npm = make_numpyro_model(fk.model, prior, params, frozen=frozen)
    kernel = HMCGibbs(NUTS(npm, **(nuts_kwargs or {})), gibbs_fn=gibbs_fn, gibbs_sites=["x_0", "x"])
    if chain_method == "vectorized":  # Gibbs kernels take one key: vectorise the whole chain with vmap
        chain_method = jax.vmap
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress and num_chains == 1,
    )
    mcmc.run(key, emissions, inputs, mask)
    return mcmc


def mcmc_to_arviz(mcmc: MCMC, **kwargs: Any) -> az.InferenceData:
    """``arviz.from_numpyro`` plus the path as ``path`` over ``(chain, draw, time, latent_dim)`` (sites ``x_0``,
    ``x`` joined) and ``sample_stats`` from NUTS."""
    import arviz as az

    idata = az.from_numpyro(mcmc, **kwargs)
    s = mcmc.get_samples(group_by_chain=True)
    if "x_0" in s and "x" in s:
        x0, x = np.asarray(s["x_0"]), np.asarray(s["x"])
        x0 = x0.reshape(x0.shape[:2] + (1, -1))
        x = x.reshape(x.shape[:3] + (-1,))
        path = np.concatenate([x0, x], axis=2)
        extra = az.from_dict(posterior={"path": path}, dims={"path": ["time", "latent_dim"]})
        idata.posterior["path"] = extra.posterior["path"]
    return idata
