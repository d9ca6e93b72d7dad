"""Independent reference computations used by tests and benchmarks (dense Gaussians, brute-force enumeration).

These are deliberately naive (O(T^3) dense algebra, O(S^T) enumeration) so that they share no code path with
the recursive algorithms they check.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.special import logsumexp as np_logsumexp
from scipy.stats import multivariate_normal

__all__ = ["dense_lgssm_posterior", "enumerate_hmm"]


def dense_lgssm_posterior(params, emissions, inputs=None):
    """Joint Gaussian of (x_{0:T-1}, y_{0:T-1}) for an LG-SSM, conditioned densely.

    Returns ``(log_likelihood, means (T, Dx), covs (T, Dx, Dx), cross (T-1, Dx, Dx))`` with
    ``cross[t] = Cov(x_{t+1}, x_t | y)``.
    """
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params._asdict().items()}
    y = np.asarray(emissions, dtype=np.float64)
    T, Dy = y.shape
    Dx = p["initial_mean"].shape[0]
    u = np.zeros((T, p["dynamics_input_weights"].shape[1])) if inputs is None else np.asarray(inputs, np.float64)
    F, Q, H, R = p["dynamics_weights"], p["dynamics_cov"], p["emission_weights"], p["emission_cov"]
    # prior mean of x by iterating the mean dynamics; covariance via x = Phi @ noise
    mx = np.zeros((T, Dx))
    mx[0] = p["initial_mean"]
    for t in range(1, T):
        mx[t] = F @ mx[t - 1] + p["dynamics_input_weights"] @ u[t] + p["dynamics_bias"]
    Phi = np.zeros((T * Dx, T * Dx))
    for t in range(T):
        for s in range(t + 1):
            Phi[t * Dx : (t + 1) * Dx, s * Dx : (s + 1) * Dx] = np.linalg.matrix_power(F, t - s)
    noise = np.zeros((T * Dx, T * Dx))
    noise[:Dx, :Dx] = p["initial_cov"]
    for t in range(1, T):
        noise[t * Dx : (t + 1) * Dx, t * Dx : (t + 1) * Dx] = Q
    Sx = Phi @ noise @ Phi.T
    Hb = np.kron(np.eye(T), H)
    my = Hb @ mx.ravel() + (u @ p["emission_input_weights"].T + p["emission_bias"]).ravel()
    Sy = Hb @ Sx @ Hb.T + np.kron(np.eye(T), R)
    ll = multivariate_normal(my, Sy).logpdf(y.ravel())
    K = np.linalg.solve(Sy, Hb @ Sx).T
    pm = (mx.ravel() + K @ (y.ravel() - my)).reshape(T, Dx)
    pc = Sx - K @ Hb @ Sx
    blocks = lambda i, j: pc[i * Dx : (i + 1) * Dx, j * Dx : (j + 1) * Dx]  # noqa: E731
    covs = np.stack([blocks(t, t) for t in range(T)])
    cross = np.stack([blocks(t + 1, t) for t in range(T - 1)]) if T > 1 else np.zeros((0, Dx, Dx))
    return ll, pm, covs, cross


def enumerate_hmm(log_initial, log_transitions, log_likelihoods):
    """Brute force over all S^T paths: log-likelihood, marginals, pairwise marginals, MAP path, path log-probs."""
    li, lt, ll = (np.asarray(a, np.float64) for a in (log_initial, log_transitions, log_likelihoods))
    T, S = ll.shape
    if lt.ndim == 2:
        lt = np.broadcast_to(lt, (max(T - 1, 0), S, S))
    paths = np.array(list(itertools.product(range(S), repeat=T)))
    lp = li[paths[:, 0]] + ll[0, paths[:, 0]]
    for t in range(1, T):
        lp = lp + lt[t - 1, paths[:, t - 1], paths[:, t]] + ll[t, paths[:, t]]
    logZ = np_logsumexp(lp)
    w = np.exp(lp - logZ)
    marg = np.zeros((T, S))
    pair = np.zeros((max(T - 1, 0), S, S))
    for t in range(T):
        np.add.at(marg[t], paths[:, t], w)
    for t in range(T - 1):
        np.add.at(pair[t], (paths[:, t], paths[:, t + 1]), w)
    return logZ, marg, pair, paths[np.argmax(lp)], paths, lp - logZ
