"""Independent reference computations used by tests and benchmarks (dense Gaussians, brute-force enumeration).

These are deliberately naive (O(T^3) dense algebra, O(S^T) enumeration) so that they share no code path with
the recursive algorithms they check.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from scipy.special import logsumexp as np_logsumexp
from scipy.stats import multivariate_normal

from pssm.models.nonlinear.linear_gaussian import LinearGaussianSSM
from pssm.protocol import SSM

__all__ = [
    "ScalarLinearGaussian",
    "dense_lgssm_posterior",
    "enumerate_hmm",
    "scalar_kalman_log_likelihood",
    "scalar_lg_conjugate_conditional",
]


def dense_lgssm_posterior(params, emissions, inputs=None):
    """Joint Gaussian of (x_{0:T-1}, y_{0:T-1}) for an LG-SSM, conditioned densely on the observed (non-NaN)
    entries of ``emissions``.

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
    o = ~np.isnan(y.ravel())  # condition on the observed entries only (NaN = missing)
    yo, myo, Hbo = y.ravel()[o], my[o], Hb[o]
    ll = multivariate_normal(myo, Sy[np.ix_(o, o)]).logpdf(yo) if o.any() else 0.0
    K = np.linalg.solve(Sy[np.ix_(o, o)], Hbo @ Sx).T
    pm = (mx.ravel() + K @ (yo - myo)).reshape(T, Dx)
    pc = Sx - K @ Hbo @ Sx
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


class ScalarLinearGaussian(SSM):
    """1-D linear Gaussian SSM on :class:`pssm.models.LGSSMParams` with scalar ``Normal`` densities.

    The same law as ``LinearGaussianSSM(1, 1)`` (so the Kalman references apply to its params), written with
    univariate normals for fast particle-method tests.  Bounds its transition density (rejection backward
    kernels) and offers the locally optimal proposal (guided filters).
    """

    def initial(self, params, inputs=None):
        return dist.Normal(params.initial_mean, jnp.sqrt(params.initial_cov[0])).to_event(1)

    def transition(self, params, state, t, inputs=None):
        mean = params.dynamics_weights @ state + params.dynamics_bias
        return dist.Normal(mean, jnp.sqrt(params.dynamics_cov[0])).to_event(1)

    @property
    def emission_shape(self) -> tuple[int, ...]:
        return (1,)

    def emission(self, params, state, t, inputs=None):
        mean = params.emission_weights @ state + params.emission_bias
        return dist.Normal(mean, jnp.sqrt(params.emission_cov[0])).to_event(1)

    def param_constraints(self):
        return LinearGaussianSSM(1, 1).param_constraints()

    def log_transition_bound(self, params, t, inputs=None):
        return -0.5 * jnp.log(2 * jnp.pi * params.dynamics_cov[0, 0])

    def proposal(self, params, state, t, emission, inputs=None):
        return LinearGaussianSSM(1, 1).proposal(params, state, t, emission)

    def initial_proposal(self, params, emission, inputs=None):
        return LinearGaussianSSM(1, 1).initial_proposal(params, emission)


def scalar_kalman_log_likelihood(rho, q, r, y):
    """Kalman log-likelihood of ``x_t = rho x_{t-1} + N(0, q)``, ``y_t = x_t + N(0, r)``, ``x_0 ~ N(0, 1)``, in
    plain scalar arithmetic (cheap inside NUTS); ``y`` has shape ``(T, 1)``."""

    def step(c, args):
        m, P, ll = c
        yt, first = args
        m = jnp.where(first, m, rho * m)
        P = jnp.where(first, P, rho**2 * P + q)
        S = P + r
        ll = ll - 0.5 * (jnp.log(2 * jnp.pi * S) + (yt - m) ** 2 / S)
        K = P / S
        return (m + K * (yt - m), (1 - K) * P, ll), None

    (_, _, ll), _ = jax.lax.scan(step, (0.0, 1.0, 0.0), (y[:, 0], jnp.arange(y.shape[0]) == 0))
    return ll


def scalar_lg_conjugate_conditional(key, path, y, params, a0: float = 3.0, b0: float = 2.0):
    """One Gibbs draw of (ρ, q) for :class:`ScalarLinearGaussian` given a state path ``(T, 1)``.

    Prior ρ ~ N(0, 1), q ~ InvGamma(a0, b0): draws ρ | x, q from its normal conditional, then q | x, ρ from its
    inverse-gamma conditional (``y`` is unused: the emission parameters are held fixed).
    """
    k1, k2 = jax.random.split(key)
    x = path[:, 0]
    xp, xn = x[:-1], x[1:]
    q = params.dynamics_cov[0, 0]
    prec = 1.0 + jnp.sum(xp**2) / q
    rho = jnp.sum(xp * xn) / q / prec + jax.random.normal(k1, dtype=x.dtype) / jnp.sqrt(prec)
    b = b0 + 0.5 * jnp.sum((xn - rho * xp) ** 2)
    q = b / jax.random.gamma(k2, a0 + 0.5 * (x.shape[0] - 1), dtype=x.dtype)
    return params._replace(dynamics_weights=rho.reshape(1, 1), dynamics_cov=q.reshape(1, 1))


def posterior_max_z(idata, reference, var_names) -> float:
    """Largest |z| over ``var_names`` of the differences in posterior mean and sd between two ArviZ results,
    each difference standardised by the two Monte Carlo standard errors (``arviz.mcse``, mean and sd methods)."""
    import arviz as az

    zs = []
    for v in var_names:
        a, b = idata.posterior[v].values.reshape(-1), reference.posterior[v].values.reshape(-1)
        ma, mb = az.mcse(idata, var_names=[v])[v].values.item(), az.mcse(reference, var_names=[v])[v].values.item()
        sa = az.mcse(idata, var_names=[v], method="sd")[v].values.item()
        sb = az.mcse(reference, var_names=[v], method="sd")[v].values.item()
        zs.append(abs(a.mean() - b.mean()) / np.hypot(ma, mb))
        zs.append(abs(a.std() - b.std()) / np.hypot(sa, sb))
    return float(max(zs))
