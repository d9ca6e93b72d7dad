"""Markov score climbing (Naesseth, Lindsten & Blei 2020) with a Gaussian Markov variational family over paths.

MSC minimises the inclusive divergence :math:`\\mathrm{KL}(p(x \\mid y) \\,\\|\\, q_\\lambda)` by stochastic
approximation along a Markov chain that leaves the posterior invariant:

.. math::  x^{(k)} \\sim K_{\\lambda_{k-1}}(x^{(k-1)}, \\cdot), \\qquad
           \\lambda_k = \\lambda_{k-1} + \\gamma_k \\nabla_\\lambda \\log q_\\lambda(x^{(k)}) .

Here :math:`K` is a conditional SMC sweep (PGAS, proposals from the model or from :math:`q_\\lambda` itself — the
latter is the conditional importance sampler of the paper generalised to a particle filter) or a PPG refresh.
The family (:class:`GaussianMarkovQ`):

.. math::  q_\\lambda(x_{0:T-1}) = N(x_0; m_0, L_0 L_0^\\top)
           \\prod_{t \\ge 1} N(x_t; A_t x_{t-1} + b_t, L_t L_t^\\top),

lower-triangular :math:`L` with positive (exponentiated) diagonals; it contains the exact posterior of a linear
Gaussian model, so there MSC's fixed point is the RTS smoother (``marginals``).  The update direction is averaged
over ``num_chains`` parallel chains and divided by :math:`T`; the optimiser is any ``optax`` transformation.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from pssm.arviz import summary_group, to_arviz
from pssm.display import short_repr
from pssm.inference.chunked import run_chunked
from pssm.inference.mcmc.csmc import (
    csmc_kernel,
    validate_method,
    validate_num_particles,
    validate_sequence,
)
from pssm.inference.mcmc.ppg import PPGState, ppg_step
from pssm.inference.smc.filter import FeynmanKac
from pssm.inference.smc.paris import AdditiveFunctional
from pssm.protocol import SSM, PyTree, simulate
from pssm.validation import check_key

if TYPE_CHECKING:
    import arviz as az

__all__ = [
    "GaussianMarkovQ",
    "gaussian_markov_q_init",
    "q_log_prob",
    "q_sample",
    "q_marginals",
    "ScoreClimbingState",
    "ScoreClimbingResult",
    "markov_score_climbing",
]

KERNELS = ("csmc", "ppg")
PROPOSALS = ("model", "q")


class GaussianMarkovQ(NamedTuple):
    """Parameters of the Gaussian Markov family (raw: exponentiate the diagonals of ``chol*``)."""

    mean0: Float[Array, " D"]
    chol0: Float[Array, "D D"]
    weights: Float[Array, "Tm1 D D"]
    bias: Float[Array, "Tm1 D"]
    chol: Float[Array, "Tm1 D D"]

    __repr__ = short_repr


def _tril(raw):
    d = raw.shape[-1]
    low = jnp.tril(raw, -1)
    return low + jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))[..., None] * jnp.eye(d, dtype=raw.dtype)


def gaussian_markov_q_init(
    num_timesteps: int, state_dim: int, *, scale: float = 1.0, dtype: Any = None
) -> GaussianMarkovQ:
    """:math:`q` with every :math:`x_t \\sim N(0, \\text{scale}^2 I)` independently (:math:`A_t = 0`)."""
    T, D = int(num_timesteps), int(state_dim)
    if T < 2 or D < 1:
        raise ValueError(f"need num_timesteps >= 2 and state_dim >= 1; got {T}, {D}.")
    dtype = jnp.result_type(float) if dtype is None else dtype
    ls = jnp.log(jnp.asarray(scale, dtype)) * jnp.eye(D, dtype=dtype)
    return GaussianMarkovQ(
        jnp.zeros(D, dtype),
        ls,
        jnp.zeros((T - 1, D, D), dtype),
        jnp.zeros((T - 1, D), dtype),
        jnp.broadcast_to(ls, (T - 1, D, D)),
    )


def _step_dist(q: GaussianMarkovQ, i, x_prev):
    return dist.MultivariateNormal(q.weights[i] @ x_prev + q.bias[i], scale_tril=_tril(q.chol[i]))


def _initial_dist(q: GaussianMarkovQ):
    return dist.MultivariateNormal(q.mean0, scale_tril=_tril(q.chol0))


def q_log_prob(q: GaussianMarkovQ, path: Float[Array, "T D"]) -> Float[Array, ""]:
    """:math:`\\log q_\\lambda(x_{0:T-1})`."""
    lp0 = _initial_dist(q).log_prob(path[0])
    L = jax.vmap(_tril)(q.chol)
    mean = jnp.einsum("tij,tj->ti", q.weights, path[:-1]) + q.bias
    lps = dist.MultivariateNormal(mean, scale_tril=L).log_prob(path[1:])
    return lp0 + jnp.sum(lps)


def q_sample(key: PRNGKeyArray, q: GaussianMarkovQ) -> Float[Array, "T D"]:
    """One path from :math:`q_\\lambda`."""
    k0, key = jax.random.split(key)
    x0 = _initial_dist(q).sample(k0)

    def body(x, args):
        k, i = args
        x = _step_dist(q, i, x).sample(k)
        return x, x

    _, xs = jax.lax.scan(body, x0, (jax.random.split(key, q.bias.shape[0]), jnp.arange(q.bias.shape[0])))
    return jnp.concatenate([x0[None], xs])


def q_marginals(q: GaussianMarkovQ) -> tuple[Float[Array, "T D"], Float[Array, "T D D"]]:
    """Marginal means and covariances: :math:`m_t = A_t m_{t-1} + b_t`, :math:`P_t = A_t P_{t-1} A_t^\\top +
    L_t L_t^\\top`."""
    L0 = _tril(q.chol0)

    def body(carry, args):
        m, P = carry
        A, b, c = args
        L = _tril(c)
        m = A @ m + b
        P = A @ P @ A.T + L @ L.T
        return (m, P), (m, P)

    init = (q.mean0, L0 @ L0.T)
    _, (ms, Ps) = jax.lax.scan(body, init, (q.weights, q.bias, q.chol))
    return jnp.concatenate([q.mean0[None], ms]), jnp.concatenate([(L0 @ L0.T)[None], Ps])


def _q_feynman_kac(model: SSM, q: GaussianMarkovQ) -> FeynmanKac:
    """A guided filter proposing from :math:`q_\\lambda` (its conditionals are indexed by time)."""

    def proposal(params, x_prev, t, y, u):
        return _step_dist(q, t - 1, x_prev)

    def initial_proposal(params, y, u):
        return _initial_dist(q)

    return FeynmanKac.guided(model, proposal, initial_proposal)


class ScoreClimbingState(NamedTuple):
    q: GaussianMarkovQ
    opt_state: Any
    paths: Array
    """``(num_chains, T, D)`` current states of the Markov chains."""
    iteration: Int[Array, ""]


class ScoreClimbingResult(NamedTuple):
    q: GaussianMarkovQ
    means: Float[Array, "T D"]
    """Marginal means of the final :math:`q`."""
    covs: Float[Array, "T D D"]
    log_q_trace: Float[Array, " k"]
    """:math:`\\log q_\\lambda(x^{(k)})` averaged over chains (rises as :math:`q` fits the chain's draws)."""
    log_likelihood_trace: Float[Array, " k"]
    """Conditional filter log normalisers averaged over chains (diagnostic)."""
    mean_trace: Float[Array, "k T D"] | None
    """Marginal means of :math:`q` after each iteration when ``store_means``."""
    state: ScoreClimbingState

    __repr__ = short_repr


def _zero_functional():
    return AdditiveFunctional.from_fn(lambda xp, x, t: jnp.zeros((), jnp.result_type(float)))


def _move(kk, q, path, model, params, emissions, inputs, mask, settings):
    """One Markov-kernel move of a chain's path (CSMC or a PPG refresh) targeting :math:`p_\\theta(x \\mid y)`."""
    num_particles, kernel, proposal, method, _ = settings
    fk = _q_feynman_kac(model, q) if proposal == "q" else FeynmanKac.bootstrap(model)
    if kernel == "ppg":
        functional = _zero_functional()
        st, info = ppg_step(
            kk, PPGState(path), fk, params, emissions, functional, num_particles, inputs=inputs, mask=mask
        )
        return st.frozen_path, info.log_likelihood
    new, ll, _ = csmc_kernel(kk, fk, params, emissions, path, num_particles, method=method, inputs=inputs, mask=mask)
    return new, ll


def _sweep(kk, st, model, params, emissions, inputs, mask, optimizer, settings):
    """Move every chain, then one optimiser step on the mean of :math:`-\\log q_\\lambda` over the new paths
    (module level, so repeated calls compile once)."""
    T = emissions.shape[0]
    q_stop = jax.lax.stop_gradient(st.q)
    data = (model, params, emissions, inputs, mask, settings)
    keys = jax.random.split(kk, st.paths.shape[0])
    paths, lls = jax.vmap(lambda k_, p_: _move(k_, q_stop, p_, *data))(keys, st.paths)
    lq, g = jax.value_and_grad(lambda q: jnp.mean(jax.vmap(lambda p_: q_log_prob(q, p_))(paths)))(st.q)
    neg = jax.tree.map(lambda v: -v / T, g)
    updates, opt_state = optimizer.update(neg, st.opt_state, st.q)
    q = optax.apply_updates(st.q, updates)
    out = (lq, jnp.mean(lls), q_marginals(q)[0] if settings[-1] else None)
    return ScoreClimbingState(q, opt_state, paths, st.iteration + 1), out


def markov_score_climbing(
    key: PRNGKeyArray,
    model: SSM,
    params: PyTree,
    emissions: Array,
    *,
    optimizer: optax.GradientTransformation,
    num_iters: int,
    num_particles: int = 20,
    num_chains: int = 4,
    kernel: str = "csmc",
    proposal: str = "model",
    method: str = "ancestor",
    q0: GaussianMarkovQ | None = None,
    state: ScoreClimbingState | None = None,
    inputs: PyTree = None,
    mask: Bool[Array, " T"] | None = None,
    store_means: bool = False,
    progress: bool = False,
    chunk_size: int = 100,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> ScoreClimbingResult:
    """Fit a :class:`GaussianMarkovQ` to :math:`p_\\theta(x \\mid y)` by Markov score climbing.

    ``kernel``: ``"csmc"`` (conditional SMC with path update ``method``; proposals from the ``model`` transition or
    from ``q``) or ``"ppg"`` (PaRIS particle Gibbs refresh).  States must be vectors ``(D,)``.  Resume with
    ``state=result.state`` (same optimiser).
    ``checkpoint``: a file the run is saved to every ``checkpoint_every`` chunks of ``chunk_size`` iterations and
    resumed from when it exists, ending exactly as an uninterrupted run (:func:`pssm.inference.chunked.run_chunked`).
    """
    check_key(key)
    if not isinstance(model, SSM):
        raise TypeError(f"model must be a pssm.SSM; got {type(model).__name__}.")
    if model.discrete_states:
        raise TypeError("Markov score climbing with a Gaussian q needs continuous (vector) states.")
    emissions, mask, inputs = validate_sequence(emissions, inputs, mask, model=model)
    T = emissions.shape[0]
    if T < 2:
        raise ValueError("emissions needs at least 2 time steps.")
    num_particles = validate_num_particles(num_particles)
    num_chains = validate_num_particles(num_chains, 1, "num_chains")
    k = validate_num_particles(num_iters, 1, "num_iters")
    validate_method(method)
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is unknown; use one of {KERNELS}.")
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal={proposal!r} is unknown; use one of {PROPOSALS}.")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError("optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-2)).")
    k_init, k_run = jax.random.split(key)
    if state is None:
        x_shape = jax.eval_shape(lambda kk: simulate(kk, model, params, T, inputs)[0], k_init).shape
        if len(x_shape) != 2:
            raise ValueError(f"states must be vectors (T, D); this model's states have shape {x_shape}.")
        if q0 is None:
            q0 = gaussian_markov_q_init(T, x_shape[1])
        elif not isinstance(q0, GaussianMarkovQ) or q0.bias.shape != (T - 1, x_shape[1]):
            raise ValueError(f"q0 must be a GaussianMarkovQ for T={T}, D={x_shape[1]} (see gaussian_markov_q_init).")
        paths = jax.vmap(lambda kk: simulate(kk, model, params, T, inputs)[0])(jax.random.split(k_init, num_chains))
        state = ScoreClimbingState(q0, optimizer.init(q0), paths, jnp.zeros((), jnp.int32))
    elif not isinstance(state, ScoreClimbingState):
        raise TypeError("state must be a ScoreClimbingState (result.state of a previous run) or None.")
    elif state.paths.shape[:2] != (num_chains, T):
        raise ValueError(f"state.paths must have shape ({num_chains}, {T}, D); got {state.paths.shape}.")

    settings = (num_particles, kernel, proposal, method, store_means)
    state, (lqs, lls, means_tr) = run_chunked(
        _sweep,
        state,
        k_run,
        k,
        args=(model, params, emissions, inputs, mask, optimizer, settings),
        chunk_size=chunk_size,
        progress=progress,
        desc="Markov score climbing",
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )
    means, covs = jax.jit(q_marginals)(state.q)
    return ScoreClimbingResult(state.q, means, covs, lqs, lls, means_tr, state)


@to_arviz.register(ScoreClimbingResult)
def _msc_to_arviz(result: ScoreClimbingResult) -> az.InferenceData:
    """Marginal means and standard deviations of the fitted :math:`q` over ``(time, latent_dim)`` (one draw) and the
    traces of :math:`\\log q` and the conditional log normaliser in ``sample_stats`` (over ``iteration``)."""
    import arviz as az

    sd = np.sqrt(np.clip(np.diagonal(np.asarray(result.covs), axis1=-2, axis2=-1), 0.0, None))
    post = {"q_mean": np.asarray(result.means), "q_sd": sd}
    dims = {
        "q_mean": ["time", "latent_dim"],
        "q_sd": ["time", "latent_dim"],
        "log_q": ["iteration"],
        "log_likelihood_estimate": ["iteration"],
    }
    idata = summary_group(post, dims)
    stats = az.from_dict(
        sample_stats={
            "log_q": np.asarray(result.log_q_trace)[None, None],
            "log_likelihood_estimate": np.asarray(result.log_likelihood_trace)[None, None],
        },
        dims=dims,
    )
    idata.add_groups(sample_stats=stats.sample_stats)
    return idata
