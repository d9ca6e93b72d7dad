"""Kalman filter and Rauch–Tung–Striebel smoother for the linear Gaussian SSM.

.. math::

    x_0 \\sim N(m_0, P_0),\\quad x_t = F x_{t-1} + B u_t + b + \\varepsilon_t,\\ \\varepsilon_t \\sim N(0, Q),\\quad
    y_t = H x_t + D u_t + d + \\eta_t,\\ \\eta_t \\sim N(0, R).

``params`` is any object with the fields of :class:`pssm.models.LGSSMParams` (the algorithm never needs the model
object).  ``mask[t] == False`` skips the update at ``t`` (missing observation or padding of a ragged sequence);
padding at the end leaves the log-likelihood and the smoothed moments of the observed steps unchanged, so batches
of ragged sequences ``vmap`` cleanly.  Results include lag-one cross-covariances
:math:`\\mathrm{Cov}(x_{t+1}, x_t \\mid y_{0:T-1})` for EM and the exact score (``jax.grad`` of the log-likelihood).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_factor, cho_solve
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from pssm.arviz import summary_group, to_arviz
from pssm.display import short_repr
from pssm.jit import trace_once
from pssm.validation import is_tracer

if TYPE_CHECKING:
    import arviz as az

__all__ = [
    "KalmanFilterResult",
    "KalmanSmootherResult",
    "kalman_filter",
    "kalman_smoother",
    "kalman_log_likelihood",
    "kalman_posterior_sample",
]


class KalmanFilterResult(NamedTuple):
    log_likelihood: Float[Array, ""]
    filtered_means: Float[Array, "T Dx"]
    filtered_covs: Float[Array, "T Dx Dx"]
    predicted_means: Float[Array, "T Dx"]
    predicted_covs: Float[Array, "T Dx Dx"]

    __repr__ = short_repr


class KalmanSmootherResult(NamedTuple):
    log_likelihood: Float[Array, ""]
    filtered_means: Float[Array, "T Dx"]
    filtered_covs: Float[Array, "T Dx Dx"]
    smoothed_means: Float[Array, "T Dx"]
    smoothed_covs: Float[Array, "T Dx Dx"]
    smoothed_cross_covs: Float[Array, "Tm1 Dx Dx"]
    """``smoothed_cross_covs[t] = Cov(x_{t+1}, x_t | y)``."""

    __repr__ = short_repr


_KALMAN_ARRAYS = ("emissions", "inputs", "mask")


def _check_emissions(arguments: dict) -> None:
    """Boundary check outside ``jit`` (concrete values only): ``emissions`` must be free of ±inf (NaN stays a
    missing observation), as :func:`pssm.inference.smc.filter.validate_sequence` requires."""
    emissions = arguments.get("emissions")
    if emissions is None or is_tracer(emissions):
        return
    values = np.asarray(emissions)
    if values.ndim >= 1 and values.shape[0] > 0 and np.issubdtype(values.dtype, np.floating):  # shape: checked later
        inf_rows = np.isinf(values).reshape(values.shape[0], -1).any(-1)
        if inf_rows.any():
            t = int(np.argmax(inf_rows))
            raise ValueError(
                f"emissions holds ±inf (first at step {t}); an infinite observation has no likelihood. Use NaN to "
                "mark a missing observation, or fix the data."
            )


def _check_params(params: Any) -> None:
    """``params``: an :class:`LGSSMParams` whose leaves agree with the dimensions of ``initial_mean`` (state),
    ``emission_weights`` (emissions) and ``dynamics_input_weights`` (inputs) and lie in their supports (finite;
    symmetric positive-definite covariances).  Values only when concrete."""
    from pssm.models.nonlinear.linear_gaussian import LinearGaussianSSM, lgssm_params_dims

    LinearGaussianSSM(*lgssm_params_dims(params)).check_params(params)


def _check_arguments(arguments: dict) -> None:
    _check_params(arguments.get("params"))
    _check_emissions(arguments)


def _sym(P):
    return 0.5 * (P + jnp.swapaxes(P, -1, -2))


def _inputs(params, inputs, T):
    du = params.dynamics_input_weights.shape[-1]
    if inputs is None:
        if du != 0:
            raise ValueError(f"params expect inputs with {du} columns; pass inputs of shape (T, {du}).")
        return jnp.zeros((T, 0), params.dynamics_bias.dtype)
    inputs = jnp.asarray(inputs)
    if inputs.shape != (T, du):
        raise ValueError(f"inputs must have shape ({T}, {du}); got {inputs.shape}.")
    return inputs


def _promote(params, emissions):
    """Params and emissions in one float dtype (float32 params with float64 data under ``jax_enable_x64`` would
    give the scan carry two types); integer emissions take the params' dtype."""
    emissions = jnp.asarray(emissions)
    leaves = [jnp.asarray(a) for a in params]
    floats = [a.dtype for a in leaves if jnp.issubdtype(a.dtype, jnp.floating)]
    if jnp.issubdtype(emissions.dtype, jnp.floating):
        floats.append(emissions.dtype)
    dtype = jnp.result_type(*floats) if floats else jnp.result_type(float)
    return type(params)(*(a.astype(dtype) for a in leaves)), emissions.astype(dtype)


def observed_parts(H, R, y, offset, observed):
    """The emission restricted to the observed entries of one step, at full size: ``(H', R', r_y, n)`` with the
    rows of ``H`` and the offset zeroed where ``observed`` is False, ``R'`` the observed block of ``R`` plus the
    identity on the missing entries, ``r_y = y'`` minus the masked offset and ``n`` the number observed.  Then
    ``N(y'; H' m + offset', H' P H'^T + R')`` is the density of the observed entries times ``N(0; 0, 1)`` per
    missing entry (add ``(D - n) log(2 pi) / 2`` back), and the Kalman update with ``(H', R')`` conditions on the
    observed entries only (a fully missing step updates nothing)."""
    o = observed.astype(H.dtype)
    Hm = H * o[:, None]
    Rm = R * (o[:, None] * o[None, :]) + jnp.diag(1.0 - o)
    return Hm, Rm, jnp.where(observed, y - offset, 0.0), o.sum()


def _emissions_and_mask(params, emissions, mask):
    """Validate shapes; NaN entries are missing (the update conditions on the others), as documented in the
    module.  Returns ``(params, emissions with NaN set to 0, observed entries (T, Dy))`` in one float dtype."""
    params, emissions = _promote(params, emissions)
    Dy = params.emission_weights.shape[0]
    if emissions.ndim != 2 or emissions.shape[1] != Dy:
        raise ValueError(
            f"emissions must have shape (T, {Dy}) for these params; got {emissions.shape}. "
            "For one scalar series pass y[:, None]; for a batch, jax.vmap over sequences."
        )
    T = emissions.shape[0]
    if T < 1:
        raise ValueError("emissions has no time steps; a sequence needs length >= 1.")
    mask = jnp.ones(T, bool) if mask is None else jnp.asarray(mask, bool)
    if mask.shape != (T,):
        raise ValueError(f"mask must have shape ({T},) (one flag per time step); got {mask.shape}.")
    observed = ~jnp.isnan(emissions) & mask[:, None]
    return params, jnp.where(observed, emissions, 0.0), observed


@trace_once(static_argnames=("parallel",), array_argnames=_KALMAN_ARRAYS, check=_check_arguments)
def kalman_filter(
    params: Any,
    emissions: Float[Array, "T Dy"],
    inputs: Float[Array, "T Du"] | None = None,
    mask: Bool[Array, " T"] | None = None,
    *,
    parallel: bool = False,
) -> KalmanFilterResult:
    """Kalman filter: marginal log-likelihood and filtered/predicted moments.

    NaN entries of ``emissions`` are missing: the update conditions on the observed entries of the step (a row of
    NaN is skipped, like ``mask == False``).
    ``parallel=True``: the associative-scan filter (:mod:`pssm.inference.exact.parallel`, O(log T) depth).
    """
    # T = 1: nothing to parallelise (XLA has no empty potrf); not 2-D: the sequential path raises the shape error
    if parallel and jnp.ndim(emissions) == 2 and jnp.shape(emissions)[0] > 1:
        from pssm.inference.exact.parallel import kalman_filter_parallel

        return kalman_filter_parallel(params, emissions, inputs, mask)
    params, emissions, observed = _emissions_and_mask(params, emissions, mask)
    T = emissions.shape[0]
    u = _inputs(params, inputs, T)
    F, Q, H, R = params.dynamics_weights, params.dynamics_cov, params.emission_weights, params.emission_cov
    B, b, D, d = (
        params.dynamics_input_weights,
        params.dynamics_bias,
        params.emission_input_weights,
        params.emission_bias,
    )

    def step(carry, args):
        ll, m, P = carry
        y, ut, om, t = args
        obs = om.any()
        m = jnp.where(t > 0, F @ m + B @ ut + b, m)
        P = jnp.where(t > 0, _sym(F @ P @ F.T + Q), P)
        Ht, Rt, yt, n = observed_parts(H, R, y, D @ ut + d, om)
        S = _sym(Ht @ P @ Ht.T + Rt)
        r = yt - Ht @ m
        cf = cho_factor(S, lower=True)
        Sinv_r = cho_solve(cf, r)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(cf[0])))
        inc = -0.5 * (r @ Sinv_r + logdet + n * jnp.log(2.0 * jnp.pi))
        K = cho_solve(cf, Ht @ P).T
        mf = jnp.where(obs, m + K @ r, m)
        Pf = jnp.where(obs, _sym(P - K @ S @ K.T), P)
        ll = ll + jnp.where(obs, inc, 0.0)
        return (ll, mf, Pf), (mf, Pf, m, P)

    init = (jnp.zeros((), emissions.dtype), params.initial_mean, params.initial_cov)
    (ll, _, _), (mf, Pf, mp, Pp) = jax.lax.scan(step, init, (emissions, u, observed, jnp.arange(T)))
    return KalmanFilterResult(ll, mf, Pf, mp, Pp)


@trace_once(static_argnames=("parallel",), array_argnames=_KALMAN_ARRAYS, check=_check_arguments)
def kalman_log_likelihood(
    params: Any, emissions, inputs=None, mask=None, *, parallel: bool = False
) -> Float[Array, ""]:
    """:math:`\\log p_\\theta(y_{0:T-1})`; differentiate it with ``jax.grad`` for the exact score."""
    return kalman_filter(params, emissions, inputs, mask, parallel=parallel).log_likelihood


@trace_once(static_argnames=("parallel",), array_argnames=_KALMAN_ARRAYS, check=_check_arguments)
def kalman_smoother(
    params: Any,
    emissions: Float[Array, "T Dy"],
    inputs: Float[Array, "T Du"] | None = None,
    mask: Bool[Array, " T"] | None = None,
    *,
    parallel: bool = False,
) -> KalmanSmootherResult:
    """RTS smoother: smoothed means, covariances and lag-one cross-covariances (``parallel=True``: by
    associative scans, :func:`pssm.inference.exact.parallel.kalman_smoother_parallel`)."""
    # T = 1: nothing to parallelise (XLA has no empty potrf); not 2-D: the sequential path raises the shape error
    if parallel and jnp.ndim(emissions) == 2 and jnp.shape(emissions)[0] > 1:
        from pssm.inference.exact.parallel import kalman_smoother_parallel

        return kalman_smoother_parallel(params, emissions, inputs, mask)
    fr = kalman_filter(params, emissions, inputs, mask)
    F = params.dynamics_weights

    def step(carry, args):
        ms_next, Ps_next = carry
        mf, Pf, mp_next, Pp_next = args
        G = cho_solve(cho_factor(Pp_next, lower=True), F @ Pf).T
        ms = mf + G @ (ms_next - mp_next)
        Ps = _sym(Pf + G @ (Ps_next - Pp_next) @ G.T)
        cross = Ps_next @ G.T
        return (ms, Ps), (ms, Ps, cross)

    init = (fr.filtered_means[-1], fr.filtered_covs[-1])
    args = (fr.filtered_means[:-1], fr.filtered_covs[:-1], fr.predicted_means[1:], fr.predicted_covs[1:])
    _, (ms, Ps, cross) = jax.lax.scan(step, init, args, reverse=True)
    ms = jnp.concatenate([ms, fr.filtered_means[-1:]], axis=0)
    Ps = jnp.concatenate([Ps, fr.filtered_covs[-1:]], axis=0)
    return KalmanSmootherResult(fr.log_likelihood, fr.filtered_means, fr.filtered_covs, ms, Ps, cross)


@trace_once(array_argnames=_KALMAN_ARRAYS, key_argnames=("key",), check=_check_arguments)
def kalman_posterior_sample(
    key: PRNGKeyArray,
    params: Any,
    emissions: Float[Array, "T Dy"],
    inputs: Float[Array, "T Du"] | None = None,
    mask: Bool[Array, " T"] | None = None,
) -> Float[Array, "T Dx"]:
    """One exact draw :math:`x_{0:T-1} \\sim p(x \\mid y)` (forward filtering, backward sampling)."""
    fr = kalman_filter(params, emissions, inputs, mask)
    T = fr.filtered_means.shape[0]
    u = _inputs(params, inputs, T)
    F, Q, B, b = params.dynamics_weights, params.dynamics_cov, params.dynamics_input_weights, params.dynamics_bias
    keys = jax.random.split(key, T)
    x_last = jax.random.multivariate_normal(keys[-1], fr.filtered_means[-1], fr.filtered_covs[-1])

    def step(x_next, args):
        mf, Pf, u_next, k = args
        # p(x_t | x_{t+1}, y_{0:t}) by Gaussian conditioning
        S = _sym(F @ Pf @ F.T + Q)
        G = cho_solve(cho_factor(S, lower=True), F @ Pf).T
        mean = mf + G @ (x_next - (F @ mf + B @ u_next + b))
        cov = _sym(Pf - G @ S @ G.T)
        x = jax.random.multivariate_normal(k, mean, cov)
        return x, x

    args = (fr.filtered_means[:-1], fr.filtered_covs[:-1], u[1:], keys[:-1])
    _, xs = jax.lax.scan(step, x_last, args, reverse=True)
    return jnp.concatenate([xs, x_last[None]], axis=0)


@to_arviz.register(KalmanSmootherResult)
@to_arviz.register(KalmanFilterResult)
def _kalman_to_arviz(result, *, emissions=None, credible_mass: float = 0.9) -> az.InferenceData:
    """Means, marginal standard deviations and central intervals over ``time``/``latent_dim``."""
    from scipy.stats import norm

    smoothed = isinstance(result, KalmanSmootherResult)
    mean = result.smoothed_means if smoothed else result.filtered_means
    cov = result.smoothed_covs if smoothed else result.filtered_covs
    sd = np.sqrt(np.clip(np.diagonal(np.asarray(cov), axis1=-2, axis2=-1), 0.0, None))
    z = norm.ppf(0.5 + credible_mass / 2)
    kind = "smoothed" if smoothed else "filtered"
    post = {
        f"{kind}_mean": mean,
        f"{kind}_sd": sd,
        f"{kind}_lower": np.asarray(mean) - z * sd,
        f"{kind}_upper": np.asarray(mean) + z * sd,
        f"{kind}_cov": cov,
    }
    dims = {k: ["time", "latent_dim"] for k in post}
    dims[f"{kind}_cov"] = ["time", "latent_dim", "latent_dim_"]
    observed = None
    if emissions is not None:
        y = np.asarray(emissions)
        y = y[:, None] if y.ndim == 1 else y
        if y.ndim != 2 or y.shape[0] != np.shape(mean)[0]:
            raise ValueError(
                f"emissions has shape {np.shape(emissions)}; this result has {np.shape(mean)[0]} time steps, so "
                f"give the (T={np.shape(mean)[0]}, obs_dim) emissions it was computed from."
            )
        observed = {"y": y}
        dims["y"] = ["time", "obs_dim"]
    return summary_group(post, dims, observed_data=observed, log_likelihood={"log_likelihood": result.log_likelihood})
