"""Forward filtering, backward simulation (FFBSi) and marginal (forward–backward) particle smoothing.

FFBSi draws ``M`` trajectories: :math:`b_{T-1} \\sim W_{T-1}`, then for :math:`t = T-2, \\dots, 0`,
:math:`b_t \\sim B_t(\\cdot \\mid b_{t+1}) \\propto W_t^{l} f(x^{b_{t+1}}_{t+1} \\mid x^l_t)` with any
:mod:`backward kernel <pssm.inference.smc.backward>`; the trajectories :math:`x_{0:T-1}^{b}` are approximate draws
from :math:`p(x_{0:T-1} \\mid y_{0:T-1})`.

The marginal smoother (FFBSm) computes smoothing weights exactly given the particles, :math:`O(N^2 T)`:

.. math::

    w^i_{t \\mid T} = W^i_t \\sum_j w^j_{t+1 \\mid T}
        \\frac{f(x^j_{t+1} \\mid x^i_t)}{\\sum_l W^l_t f(x^j_{t+1} \\mid x^l_t)}.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from pssm.arviz import summary_group, to_arviz
from pssm.display import short_repr
from pssm.inference.smc.backward import BackwardKernel, ExactBackward
from pssm.inference.smc.filter import (
    ParticleHistory,
    as_feynman_kac,
    history_collapsed,
    particle_filter,
    refuse_collapsed,
    validate_sequence,
)
from pssm.inference.smc.resampling import multinomial, normalize_log_weights
from pssm.protocol import SSM, PyTree
from pssm.validation import check_key

__all__ = ["FFBSiResult", "MarginalSmootherResult", "ffbsi", "marginal_smoother", "particle_smoother"]


class FFBSiResult(NamedTuple):
    trajectories: Array
    """``(M, T, *event)`` smoothed trajectories."""
    indices: Int[Array, "T M"]
    """Particle index of each trajectory at each time."""
    log_likelihood: Float[Array, ""]
    """The forward filter's log-likelihood estimate (``nan`` if only a history was given)."""

    __repr__ = short_repr


class MarginalSmootherResult(NamedTuple):
    log_weights: Float[Array, "T N"]
    """Normalised marginal smoothing log-weights of the filter particles."""
    means: Array
    """``(T, *event)`` smoothed means :math:`E[x_t \\mid y_{0:T-1}]`."""
    variances: Array
    """``(T, *event)`` smoothed (elementwise) variances."""
    log_likelihood: Float[Array, ""]

    __repr__ = short_repr


def _log_transition_at(model: SSM, params, t, u):
    return lambda xp, x: model.transition(params, xp, t, u).log_prob(x)


def _bound_at(model: SSM, params, t, u):
    return model.log_transition_bound(params, t, u)


def _validate_history(history, inputs):
    if not isinstance(history, ParticleHistory):
        raise TypeError("history must be a ParticleHistory: run particle_filter(..., history=True).history.")
    T = history.log_weights.shape[0]
    for leaf in jax.tree.leaves(inputs):
        if leaf.shape[:1] != (T,):
            raise ValueError(f"every inputs leaf needs a leading time axis of length {T}; got {leaf.shape}.")
    return T


def ffbsi(
    key: PRNGKeyArray,
    model: SSM,
    params: PyTree,
    history: ParticleHistory,
    num_trajectories: int,
    *,
    backward: BackwardKernel | None = None,
    inputs: PyTree = None,
    allow_collapsed: bool = False,
) -> FFBSiResult:
    """Draw ``num_trajectories`` smoothed trajectories from a filter history (default kernel: exact).

    A history with a step of zero total weight (a collapsed filter) raises ``FloatingPointError`` unless
    ``allow_collapsed=True``."""
    check_key(key)
    model = as_feynman_kac(model).model
    _validate_history(history, inputs)
    refuse_collapsed(history_collapsed(history), "ffbsi", allow_collapsed)
    if not isinstance(num_trajectories, int) or num_trajectories < 1:
        raise ValueError(f"num_trajectories must be a positive int; got {num_trajectories!r}.")
    return _ffbsi(key, model, params, history, num_trajectories, backward or ExactBackward(), inputs)


@eqx.filter_jit
def _ffbsi(key, model, params, history, num_trajectories, backward, inputs):
    T = history.log_weights.shape[0]
    k_last, key = jax.random.split(key)
    b_last = multinomial(k_last, history.log_weights[-1], num_trajectories)

    def body(b_next, xs):
        k, x_prev, lw_prev, x_all_next, anc_next, t_next, u_next = xs
        x_next = jnp.take(x_all_next, b_next, axis=0)
        lt = _log_transition_at(model, params, t_next, u_next)
        b = backward(k, lt, x_prev, lw_prev, x_next, anc_next[b_next], _bound_at(model, params, t_next, u_next), 1)
        return b[:, 0], b[:, 0]

    u_next = None if inputs is None else jax.tree.map(lambda a: a[1:], inputs)
    xs = (
        jax.random.split(key, T - 1),
        history.particles[:-1],
        history.log_weights[:-1],
        history.particles[1:],
        history.ancestors[1:],
        jnp.arange(1, T, dtype=jnp.int32),
        u_next,
    )
    _, bs = jax.lax.scan(body, b_last, xs, reverse=True)
    idx = jnp.concatenate([bs, b_last[None]], axis=0)
    traj = jax.vmap(lambda x, i: jnp.take(x, i, axis=0), out_axes=1)(history.particles, idx)
    return FFBSiResult(traj, idx, jnp.asarray(jnp.nan, history.log_weights.dtype))


def marginal_smoother(
    model: SSM,
    params: PyTree,
    history: ParticleHistory,
    *,
    inputs: PyTree = None,
    chunk_size: int = 256,
    allow_collapsed: bool = False,
) -> MarginalSmootherResult:
    """Forward filtering, backward smoothing of the marginals (:math:`O(N^2 T)`, memory
    :math:`O(N \\cdot \\text{chunk\\_size})` per step); a collapsed history raises unless ``allow_collapsed``."""
    model = as_feynman_kac(model).model
    _validate_history(history, inputs)
    refuse_collapsed(history_collapsed(history), "marginal_smoother", allow_collapsed)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")
    return _marginal(model, params, history, inputs, int(chunk_size))


@eqx.filter_jit
def _marginal(model, params, history, inputs, chunk_size):
    T, N = history.log_weights.shape
    c = min(chunk_size, N)
    n_chunks = -(-N // c)
    pad = n_chunks * c - N

    def body(lw_next_smooth, xs):
        x_prev, lw_prev, x_next, t_next, u_next = xs
        lt = _log_transition_at(model, params, t_next, u_next)
        xn = jnp.concatenate([x_next, jnp.repeat(x_next[:1], pad, axis=0)], axis=0).reshape(
            (n_chunks, c) + x_next.shape[1:]
        )
        ln = jnp.concatenate([lw_next_smooth, jnp.full((pad,), -jnp.inf, lw_next_smooth.dtype)]).reshape(n_chunks, c)

        def chunk(acc, args):
            xs_c, lws_c = args
            # L[i, j] = log W_t^i + log f(x_{t+1}^j | x_t^i)
            L = lw_prev[:, None] + jax.vmap(lambda xj: jax.vmap(lambda xi: lt(xi, xj))(x_prev), out_axes=1)(xs_c)
            log_den = jax.scipy.special.logsumexp(L, axis=0)
            coef = jnp.where(jnp.isfinite(lws_c), lws_c - log_den, -jnp.inf)
            contrib = jax.scipy.special.logsumexp(L + coef[None, :], axis=1)
            return jnp.logaddexp(acc, contrib), None

        acc0 = jnp.full((N,), -jnp.inf, lw_prev.dtype)
        acc, _ = jax.lax.scan(chunk, acc0, (xn, ln))
        lw_s, _ = normalize_log_weights(acc)
        return lw_s, lw_s

    u_next = None if inputs is None else jax.tree.map(lambda a: a[1:], inputs)
    xs = (
        history.particles[:-1],
        history.log_weights[:-1],
        history.particles[1:],
        jnp.arange(1, T, dtype=jnp.int32),
        u_next,
    )
    lw_last = history.log_weights[-1]
    _, lws = jax.lax.scan(body, lw_last, xs, reverse=True)
    lws = jnp.concatenate([lws, lw_last[None]], axis=0)
    w = jnp.exp(lws)
    x = history.particles.astype(w.dtype)
    wx = w.reshape(w.shape + (1,) * (x.ndim - 2))
    means = jnp.sum(wx * x, axis=1)
    var = jnp.sum(wx * (x - means[:, None]) ** 2, axis=1)
    return MarginalSmootherResult(lws, means, var, jnp.asarray(jnp.nan, w.dtype))


def particle_smoother(
    key: PRNGKeyArray,
    model: SSM,
    params: PyTree,
    emissions: Array,
    num_particles: int,
    num_trajectories: int,
    *,
    backward: BackwardKernel | None = None,
    inputs: PyTree = None,
    mask=None,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    allow_collapsed: bool = False,
) -> FFBSiResult:
    """Run a bootstrap (or given :class:`FeynmanKac`) filter with history, then FFBSi (a collapsed filter raises
    ``FloatingPointError`` unless ``allow_collapsed=True``)."""
    check_key(key)
    emissions, mask, inputs = validate_sequence(emissions, inputs, mask)  # particle_filter prepares the inputs
    kf, kb = jax.random.split(key)
    fr = particle_filter(
        kf,
        model,
        params,
        emissions,
        num_particles,
        inputs=inputs,
        mask=mask,
        resampling=resampling,
        ess_threshold=ess_threshold,
        history=True,
    )
    refuse_collapsed(fr.collapsed, "particle_smoother", allow_collapsed)
    res = ffbsi(kb, model, params, fr.history, num_trajectories, backward=backward, inputs=inputs, allow_collapsed=True)
    return res._replace(log_likelihood=fr.log_likelihood)


def _time_dims(arr_ndim_after_time: int):
    return ["time"] + [f"latent_dim_{k}" if k else "latent_dim" for k in range(arr_ndim_after_time)]


@to_arviz.register(FFBSiResult)
def _ffbsi_to_arviz(result: FFBSiResult, *, observations: Array | None = None, truth: Array | None = None):
    """Trajectories become posterior draws (``chain=1``, ``draw=M``) over ``time`` and ``latent_dim``."""
    import arviz as az
    import numpy as np

    traj = np.asarray(result.trajectories)
    dims = {"x": _time_dims(traj.ndim - 2)}
    kw: dict = {"posterior": {"x": traj[None]}, "dims": dims}
    if observations is not None:
        obs = np.asarray(observations)
        kw["observed_data"] = {"y": obs}
        kw["dims"]["y"] = ["time"] + [f"obs_dim_{k}" if k else "obs_dim" for k in range(obs.ndim - 1)]
    if truth is not None:
        kw["constant_data"] = {"x_true": np.asarray(truth)}
        kw["dims"]["x_true"] = dims["x"]
    if np.isfinite(np.asarray(result.log_likelihood)):
        kw["sample_stats"] = {"log_likelihood_estimate": np.asarray(result.log_likelihood)[None, None]}
    return az.from_dict(**kw)


@to_arviz.register(MarginalSmootherResult)
def _marginal_to_arviz(result: MarginalSmootherResult, *, interval: float = 0.9, observations: Array | None = None):
    """Smoothed means, standard deviations and Gaussian ``interval`` bands (single draw) over ``time``."""
    import numpy as np
    from scipy.stats import norm

    mean = np.asarray(result.means)
    sd = np.sqrt(np.asarray(result.variances))
    z = norm.ppf(0.5 + interval / 2)
    dims = _time_dims(mean.ndim - 1)
    post = {"smoothed_mean": mean, "smoothed_sd": sd, "smoothed_lower": mean - z * sd, "smoothed_upper": mean + z * sd}
    obs = None if observations is None else {"y": np.asarray(observations)}
    d = {k: dims for k in post}
    if obs is not None:
        d["y"] = ["time"] + [f"obs_dim_{k}" if k else "obs_dim" for k in range(obs["y"].ndim - 1)]
    return summary_group(post, d, observed_data=obs)
