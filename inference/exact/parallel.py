"""Parallel-in-time smoothers: forward-backward and Kalman/RTS as associative scans (O(log T) depth).

With :math:`e_0(i, j) = \\log\\pi_j + \\ell_0(j)` and :math:`e_t(i, j) = \\log A_{ij} + \\ell_t(j)` for
``t >= 1``, the log-semiring product :math:`(a \\otimes b)(i, k) = \\log\\sum_j \\exp(a(i,j) + b(j,k))` is
associative, and the prefix products give :math:`\\log p(z_t = j, y_{0:t})` (every row of the prefix is the same,
since :math:`e_0` does not depend on ``i``).  The suffix products of :math:`e_{t+1} \\otimes \\dots` give the
backward messages :math:`\\beta_t(i) = \\log p(y_{t+1:T-1} \\mid z_t = i)`.  Smoothed marginals and pairwise
expectations follow in one vectorised pass.  On a GPU the depth is O(log T) instead of O(T); on a CPU the
sequential :func:`~pssm.inference.exact.forward_backward.hmm_smoother` is faster (the scan does O(S^3 T log T)
work).  Padded steps (``t >= length``) get an identity transition and no likelihood, so they change nothing.

Kalman/RTS: the filtering and smoothing elements and operators of Särkkä & García-Fernández (2021, "Temporal
parallelization of Bayesian smoothers"): each step is an affine-Gaussian map
:math:`p(x_t \\mid x_{t-1}, y_t) = N(A x_{t-1} + b, C)` with the information-form likelihood of :math:`y_t` in
:math:`x_{t-1}` (:math:`\\eta, J`); smoothing combines :math:`p(x_t \\mid x_{t+1}, y_{0:t}) = N(E x_{t+1} + g, L)`.
The log-likelihood is the sum of the innovation densities at the (parallel) predicted moments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp
from jaxtyping import Array, Float, Int

from pssm.inference.exact.forward_backward import HMMPosterior, _prep, impossible_step

__all__ = ["hmm_smoother_parallel", "hmm_filter_parallel", "kalman_filter_parallel", "kalman_smoother_parallel"]


def _log_matmul(a, b):
    """Batched log-semiring matrix product ``(..., S, S) x (..., S, S)``."""
    return logsumexp(a[..., :, :, None] + b[..., None, :, :], axis=-2)


def _elements(log_initial, log_transitions, log_likelihoods, length):
    T, S, length = _prep(log_initial, log_transitions, log_likelihoods, length)
    dtype = log_likelihoods.dtype
    ts = jnp.arange(T)
    valid = ts < length
    ll = jnp.where(valid[:, None], log_likelihoods, 0.0)
    lA = jnp.broadcast_to(log_transitions, (T - 1, S, S)) if log_transitions.ndim == 2 else log_transitions
    eye = jnp.where(jnp.eye(S, dtype=bool), 0.0, -jnp.inf).astype(dtype)
    lA = jnp.where(valid[1:, None, None], lA, eye)  # padded steps: stay put
    log_pi = log_initial - logsumexp(log_initial)
    first = jnp.broadcast_to(log_pi + ll[0], (S, S))[None]
    rest = lA + ll[1:, None, :]
    return T, S, length, ll, lA, log_pi, jnp.concatenate([first, rest], axis=0)


def hmm_filter_parallel(
    log_initial: Float[Array, " S"],
    log_transitions: Float[Array, "... S S"],
    log_likelihoods: Float[Array, "T S"],
    length: Int[Array, ""] | int | None = None,
) -> tuple[Float[Array, ""], Float[Array, "T S"]]:
    """``(log p(y), log alpha)`` with :math:`\\log\\alpha_t(j) = \\log p(z_t = j, y_{0:t})` by an associative scan."""
    _, _, _, _, _, _, elems = _elements(log_initial, log_transitions, log_likelihoods, length)
    prefix = jax.lax.associative_scan(_log_matmul, elems)
    log_alpha = prefix[:, 0, :]
    return logsumexp(log_alpha[-1]), log_alpha


def hmm_smoother_parallel(
    log_initial: Float[Array, " S"],
    log_transitions: Float[Array, "... S S"],
    log_likelihoods: Float[Array, "T S"],
    length: Int[Array, ""] | int | None = None,
) -> HMMPosterior:
    """Forward-backward by associative scans; the same :class:`HMMPosterior` as the sequential smoother."""
    T, S, length, ll, lA, log_pi, elems = _elements(log_initial, log_transitions, log_likelihoods, length)
    log_alpha = jax.lax.associative_scan(_log_matmul, elems)[:, 0, :]
    log_lik = logsumexp(log_alpha[-1])
    if T > 1:
        # reverse=True combines later elements first: swap the arguments so suffix[t] = e_{t+1} x ... x e_{T-1}
        suffix = jax.lax.associative_scan(lambda a, b: _log_matmul(b, a), elems[1:], reverse=True)
        log_beta = jnp.concatenate([logsumexp(suffix, axis=-1), jnp.zeros((1, S), ll.dtype)], axis=0)
    else:
        log_beta = jnp.zeros((1, S), ll.dtype)
    log_filt = log_alpha - logsumexp(log_alpha, axis=-1, keepdims=True)
    filt = jnp.exp(log_filt)
    pred0 = jnp.exp(log_pi)[None]
    pred_rest = jnp.exp(logsumexp(log_filt[:-1, :, None] + lA, axis=1))
    pred = jnp.concatenate([pred0, pred_rest], axis=0)
    log_gamma = log_alpha + log_beta
    smoothed = jnp.exp(log_gamma - logsumexp(log_gamma, axis=-1, keepdims=True))
    if T > 1:
        log_xi = log_alpha[:-1, :, None] + lA + (ll[1:] + log_beta[1:])[:, None, :] - log_lik
        valid_pair = (jnp.arange(1, T) < length)[:, None, None]
        counts = jnp.where(valid_pair, jnp.exp(log_xi), 0.0).sum(0)
    else:
        counts = jnp.zeros((S, S), ll.dtype)
    log_lik, bad = impossible_step(log_lik, filt, length)
    return HMMPosterior(log_lik, filt, pred, smoothed, counts, None, bad)


# --------------------------------------------------------------------------------------------- Kalman / RTS
def _solve(A, B):
    return jnp.linalg.solve(A, B)


def _filter_combine(ei, ej):
    """Särkkä & García-Fernández (2021) filtering operator; ``ei`` earlier, ``ej`` later (batched)."""
    Ai, bi, Ci, etai, Ji = ei
    Aj, bj, Cj, etaj, Jj = ej
    eye = jnp.eye(Ai.shape[-1], dtype=Ai.dtype)
    T1 = jnp.swapaxes(_solve(eye + jnp.swapaxes(Ci @ Jj, -1, -2), jnp.swapaxes(Aj, -1, -2)), -1, -2)  # Aj (I+Ci Jj)^-1
    A = T1 @ Ai
    b = (T1 @ (bi + (Ci @ etaj[..., None])[..., 0])[..., None])[..., 0] + bj
    C = _sym(T1 @ Ci @ jnp.swapaxes(Aj, -1, -2) + Cj)
    T2 = jnp.swapaxes(_solve(eye + jnp.swapaxes(Jj @ Ci, -1, -2), Ai), -1, -2)  # Ai' (I + Jj Ci)^-1
    eta = (T2 @ (etaj - (Jj @ bi[..., None])[..., 0])[..., None])[..., 0] + etai
    J = _sym(T2 @ Jj @ Ai + Ji)
    return A, b, C, eta, J


def _smoother_combine(ei, ej):
    """Smoothing operator on ``(E, g, L)``: ``ei`` earlier, ``ej`` later."""
    Ei, gi, Li = ei
    Ej, gj, Lj = ej
    return Ei @ Ej, (Ei @ gj[..., None])[..., 0] + gi, _sym(Ei @ Lj @ jnp.swapaxes(Ei, -1, -2) + Li)


def _sym(P):
    return 0.5 * (P + jnp.swapaxes(P, -1, -2))


def kalman_filter_parallel(params, emissions, inputs=None, mask=None):
    """Kalman filter by an associative scan (same :class:`KalmanFilterResult` as the sequential filter)."""
    from pssm.inference.exact.kalman import KalmanFilterResult, _emissions_and_mask, _inputs, observed_parts

    params, y, observed = _emissions_and_mask(params, emissions, mask)
    T = y.shape[0]
    u = _inputs(params, inputs, T)
    F, Q, H, R = params.dynamics_weights, params.dynamics_cov, params.emission_weights, params.emission_cov
    c = u @ params.dynamics_input_weights.T + params.dynamics_bias  # (T, Dx) dynamics offsets
    d = u @ params.emission_input_weights.T + params.emission_bias  # (T, Dy)
    Dx = F.shape[0]
    eye = jnp.eye(Dx, dtype=F.dtype)

    def element(t, yt, ct, dt, om):
        first, obs = t == 0, om.any()
        Ht, Rt, yt, _ = observed_parts(H, R, yt, dt, om)  # the observed entries only (NaN = missing)
        m_prior = jnp.where(first, params.initial_mean, ct)
        P_prior = jnp.where(first, params.initial_cov, Q)
        S = _sym(Ht @ P_prior @ Ht.T + Rt)
        K = jnp.linalg.solve(S, Ht @ P_prior).T
        r = yt - Ht @ m_prior
        A = jnp.where(first, 0.0, jnp.where(obs, (eye - K @ Ht) @ F, F))
        b = jnp.where(obs, m_prior + K @ r, m_prior)
        C = jnp.where(obs, _sym((eye - K @ Ht) @ P_prior), P_prior)
        HF = Ht @ F
        Sinv_HF = jnp.linalg.solve(S, HF)
        eta = jnp.where(obs & ~first, Sinv_HF.T @ (yt - Ht @ ct), 0.0)
        J = jnp.where(obs & ~first, _sym(HF.T @ Sinv_HF), 0.0)
        return A, b, C, eta, J

    elems = jax.vmap(element)(jnp.arange(T), y, c, d, observed)
    _, mf, Pf, _, _ = jax.lax.associative_scan(_filter_combine, elems)
    mp = jnp.concatenate([params.initial_mean[None], mf[:-1] @ F.T + c[1:]], axis=0)
    Pp = jnp.concatenate([params.initial_cov[None], _sym(F @ Pf[:-1] @ F.T + Q)], axis=0)

    def inc(yt, m, P, dt, om):
        Ht, Rt, yt, n = observed_parts(H, R, yt, dt, om)
        missing = (om.shape[0] - n) * 0.5 * jnp.log(2.0 * jnp.pi)  # the unit normals standing in for them
        lp = jax.scipy.stats.multivariate_normal.logpdf(yt, Ht @ m, _sym(Ht @ P @ Ht.T + Rt)) + missing
        return jnp.where(om.any(), lp, 0.0)

    ll = jax.vmap(inc)(y, mp, Pp, d, observed).sum()
    return KalmanFilterResult(ll, mf, Pf, mp, Pp)


def kalman_smoother_parallel(params, emissions, inputs=None, mask=None):
    """RTS smoother by associative scans (same :class:`KalmanSmootherResult` as the sequential smoother)."""
    from pssm.inference.exact.kalman import KalmanSmootherResult

    fr = kalman_filter_parallel(params, emissions, inputs, mask)
    F = params.dynamics_weights
    mf, Pf, mp, Pp = fr.filtered_means, fr.filtered_covs, fr.predicted_means, fr.predicted_covs
    G = jnp.swapaxes(jnp.linalg.solve(Pp[1:], F @ Pf[:-1]), -1, -2)  # (T-1, Dx, Dx): Pf F' Pp^-1
    E = jnp.concatenate([G, jnp.zeros_like(Pf[-1:])], axis=0)
    g = jnp.concatenate([mf[:-1] - (G @ mp[1:, :, None])[..., 0], mf[-1:]], axis=0)
    L = jnp.concatenate([_sym(Pf[:-1] - G @ Pp[1:] @ jnp.swapaxes(G, -1, -2)), Pf[-1:]], axis=0)
    _, ms, Ps = jax.lax.associative_scan(lambda a, b: _smoother_combine(b, a), (E, g, L), reverse=True)
    cross = Ps[1:] @ jnp.swapaxes(G, -1, -2)
    return KalmanSmootherResult(fr.log_likelihood, mf, Pf, ms, Ps, cross)
