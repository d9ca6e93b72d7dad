"""AR-HMM emissions and Hamilton's Markov-switching autoregression (regime-history HMM)."""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pssm.boundary import as_model_data
from pssm.inference.exact.discrete import marginal_log_likelihood
from pssm.inference.optim.em import fit_em
from pssm.models.hmm.autoregressive import AutoregressiveEmissions, AutoregressiveParams
from pssm.models.hmm.components import InitialDistribution, TransitionParams, stationary_distribution
from pssm.models.hmm.model import HMM, HMMParams
from pssm.models.hmm.regimes import (
    RegimeHistoryTransitions,
    conditional_sequences,
    markov_switching_ar,
    markov_switching_ar_params,
    regime_table,
    to_base_params,
)
from pssm.protocol import model_inputs

RGNP = Path(__file__).resolve().parents[1] / "data" / "hamilton_rgnp.csv"

CONFIGS = [
    dict(switching_coefficients=sc, switching_covariance=sv, covariance=cov)
    for sc, sv, cov in itertools.product([True, False], [True, False], ["full", "diagonal"])
]


def _random_params(key, comp, S):
    D, K = comp.emission_dim, comp.num_features
    k1, k2, k3 = jax.random.split(key, 3)
    b = jax.random.normal(k1, (S, D))
    A = 0.3 * jax.random.normal(k2, (S, D, K) if comp.switching_coefficients else (D, K))
    n = S if comp.switching_covariance else 1
    if comp.covariance == "full":
        m = jax.random.normal(k3, (n, D, D))
        c = m @ jnp.swapaxes(m, 1, 2) / D + 0.5 * jnp.eye(D)
    else:
        c = jnp.exp(0.3 * jax.random.normal(k3, (n, D)))
    return AutoregressiveParams(b, A, c if comp.switching_covariance else c[0])


@pytest.mark.parametrize("cfg", CONFIGS)
def test_ar_loglik_and_features_match_protocol(x64, cfg):
    S, D, p, T = 3, 2, 2, 12
    comp = AutoregressiveEmissions(D, p, **cfg)
    model = HMM(S, comp)
    em = _random_params(jax.random.PRNGKey(1), comp, S)
    y = np.random.default_rng(2).normal(size=(T, D))
    u = model_inputs(model, jnp.asarray(y))
    # features: (y_{t-1}, ..., y_{t-p}) flattened, zeros before the start, by hand
    padded = np.concatenate([np.zeros((p, D)), y])
    by_hand = np.stack([np.concatenate([padded[t + p - l] for l in range(1, p + 1)]) for t in range(T)])
    np.testing.assert_array_equal(np.asarray(u), by_hand)
    ll = comp.log_likelihoods(em, jnp.asarray(y), u)
    params = HMMParams(None, None, em)  # the emission reads only params.emissions

    def one(s, t):
        return model.emission(params, s, t, u[t]).log_prob(jnp.asarray(y)[t])

    ref = jax.vmap(lambda t: jax.vmap(lambda s: one(s, t))(jnp.arange(S)))(jnp.arange(T))
    np.testing.assert_allclose(np.asarray(ll), ref, rtol=1e-10, atol=1e-10)


def _wls(X, Y, w):
    sw = np.sqrt(w)[:, None]
    return np.linalg.lstsq(sw * X, sw * Y, rcond=None)[0]


@pytest.mark.parametrize("switching_coefficients", [True, False])
def test_ar_m_step_is_weighted_least_squares(x64, switching_coefficients):
    S, D, p, B, T = 3, 2, 2, 2, 40
    comp = AutoregressiveEmissions(
        D, p, switching_coefficients=switching_coefficients, switching_covariance=False, covariance="full"
    )
    model = HMM(S, comp)
    rng = np.random.default_rng(3)
    y = rng.normal(size=(B, T, D)).cumsum(1) * 0.3
    data = as_model_data(model, y)
    w = rng.dirichlet(np.ones(S), size=(B, T))
    new, _ = comp.m_step(None, data, jnp.asarray(w), None, jax.random.PRNGKey(0))
    Yf, Xf, Wf = y.reshape(-1, D), np.asarray(data.inputs).reshape(-1, p * D), w.reshape(-1, S)
    resid = []
    if switching_coefficients:
        Xt = np.concatenate([np.ones((len(Xf), 1)), Xf], 1)
        for s in range(S):
            coef = _wls(Xt, Yf, Wf[:, s])
            np.testing.assert_allclose(np.asarray(new.biases[s]), coef[0], rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(np.asarray(new.coefficients[s]), coef[1:].T, rtol=1e-8, atol=1e-10)
            resid.append(Yf - Xt @ coef)
    else:
        # stacked rows (e_s, x_n) with weight w_ns: intercept per state, one A
        Z = np.concatenate([np.kron(np.eye(S), np.ones((len(Xf), 1))), np.tile(Xf, (S, 1))], 1)
        coef = _wls(Z, np.tile(Yf, (S, 1)), Wf.T.reshape(-1))
        np.testing.assert_allclose(np.asarray(new.biases), coef[:S], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(np.asarray(new.coefficients), coef[S:].T, rtol=1e-8, atol=1e-10)
        resid = [Yf - coef[s] - Xf @ coef[S:] for s in range(S)]
    scatter = sum(np.einsum("n,nd,ne->de", Wf[:, s], resid[s], resid[s]) for s in range(S))
    np.testing.assert_allclose(np.asarray(new.covs), (scatter + comp.covariance_reg * np.eye(D)) / Wf.sum(), rtol=1e-8)


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[5]])
def test_ar_hmm_em_objective_never_decreases(x64, cfg):
    S, D, p = 2, 2, 2
    model = HMM(S, AutoregressiveEmissions(D, p, **cfg))
    truth = HMMParams(
        InitialDistribution().initialize(None, S),
        TransitionParams(jnp.array([[0.95, 0.05], [0.1, 0.9]])),
        _random_params(jax.random.PRNGKey(4), model.emission_component, S),
    )
    truth = truth._replace(emissions=truth.emissions._replace(coefficients=0.5 * truth.emissions.coefficients))
    ys = model.simulate(jax.random.PRNGKey(5), truth, 200)[1]
    start = model.initialize(jax.random.PRNGKey(6), as_model_data(model, ys))
    res = fit_em(jax.random.PRNGKey(7), model, start, ys, num_iters=15, tol=0.0)
    obj = np.asarray(res.log_objective)
    assert np.all(np.isfinite(obj))
    assert np.all(np.diff(obj) >= -1e-8 * np.abs(obj[:-1])), np.diff(obj).min()
    assert obj[-1] > obj[0] + 1.0


def test_regime_history_matrix_is_stochastic_with_impossible_moves_zero(x64):
    k, p = 3, 2
    tc = RegimeHistoryTransitions(k, p)
    P = jnp.array([[0.7, 0.3, 0.0], [0.2, 0.5, 0.3], [0.0, 0.4, 0.6]])
    E = np.asarray(tc.matrix(TransitionParams(P)))
    Pn = np.asarray(P)
    R = regime_table(k, p)
    assert E.shape == (k ** (p + 1),) * 2
    np.testing.assert_allclose(E.sum(1), 1.0, rtol=1e-12)
    for i, j in itertools.product(range(len(R)), repeat=2):
        possible = tuple(R[j, 1:]) == tuple(R[i, :-1])
        assert E[i, j] == (Pn[R[i, 0], R[j, 0]] if possible else 0.0)
    # stationary law of the history: closed form == solve on the expanded chain
    np.testing.assert_allclose(
        np.asarray(tc.stationary_history(P)), np.asarray(stationary_distribution(jnp.asarray(E))), atol=1e-12
    )
    # M-step aggregates the expanded counts into base counts (flat prior: row-normalised)
    xi = E * np.random.default_rng(0).uniform(1, 2, E.shape)
    N = np.zeros((k, k))
    for i, j in itertools.product(range(len(R)), repeat=2):
        N[R[i, 0], R[j, 0]] += xi[i, j]
    new = tc.m_step(TransitionParams(P), jnp.asarray(xi))
    np.testing.assert_allclose(np.asarray(new.matrix), N / N.sum(1, keepdims=True), rtol=1e-12)


# Hamilton (1989) AR(4), two regimes, switching mean only: statsmodels' TestHamiltonAR4 reference (E-views
# estimates, statsmodels 0.15 test suite): p[0->0], p[1->0], mu_0, mu_1, sigma^2, phi_1..phi_4 and the log-likelihood.
HAMILTON_PARAMS = dict(
    p00=0.754673,
    p10=0.095915,
    means=[-0.358811, 1.163516],
    sigma2=np.exp(-0.262658) ** 2,
    phi=[0.013486, -0.057521, -0.246983, -0.212923],
)
HAMILTON_LLF = -181.26339  # published (5 decimals)
HAMILTON_LLF_AT_ROUNDED = -181.26339426301064  # statsmodels 0.15 MarkovAutoregression.loglike at these params


def test_hamilton_loglik_at_published_params(x64):
    y = np.loadtxt(RGNP, skiprows=1)
    assert y.shape == (135,)
    model = markov_switching_ar(2, 4)
    h = HAMILTON_PARAMS
    P = np.array([[h["p00"], 1 - h["p00"]], [h["p10"], 1 - h["p10"]]])
    params = markov_switching_ar_params(model, h["means"], h["phi"], h["sigma2"], P)
    ll = float(marginal_log_likelihood(model, params, conditional_sequences(y, 4))[0])
    assert abs(ll - HAMILTON_LLF) < 2e-5
    assert abs(ll - HAMILTON_LLF_AT_ROUNDED) < 1e-6
    base = to_base_params(model, params)
    np.testing.assert_allclose(np.asarray(base.transition_matrix), P)


def test_markov_switching_ar_em_monotone(x64):
    """Switching AR and variance, stationary initial distribution (the refined transition M-step)."""
    y = np.loadtxt(RGNP, skiprows=1)
    model = markov_switching_ar(2, 1, switching_ar=True, switching_variance=True)
    data = conditional_sequences(y, 1)
    start = model.initialize(jax.random.PRNGKey(0), as_model_data(model, data))
    res = fit_em(jax.random.PRNGKey(1), model, start, data, num_iters=15, tol=0.0)
    obj = np.asarray(res.log_objective)
    assert np.all(np.isfinite(obj))
    assert np.all(np.diff(obj) >= -1e-9 * np.abs(obj[:-1])), np.diff(obj).min()
    assert obj[-1] > obj[0] + 1.0
