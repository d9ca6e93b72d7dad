"""Missing entries under correlated Gaussian emissions (full/tied covariances, AR-HMMs) and under emission lags.

The E-step completes a partly missing step with the conditional moments of its missing entries (EM over them),
checked against the block formulas of the Gaussian conditional in NumPy; a step whose lags hold a missing entry
is not evaluated, checked against enumeration over every state path with those terms left out.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from pssm import discrete_log_potentials, log_joint
from pssm.boundary import as_model_data
from pssm.distributions import gaussian_conditional
from pssm.inference import fit_em, marginal_log_likelihood, smoother
from pssm.inference.optim.em import em_init, em_step
from pssm.inference.smc import particle_filter
from pssm.models import HMM, AutoregressiveEmissions, GaussianEmissions
from pssm.params import trainable_mask

pytestmark = pytest.mark.xdist_group("test_missing_gaussian_em")


def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + np.eye(d)


def _holes(rng, y, frac=0.3):
    y = np.array(y, dtype=float)
    y[rng.random(y.shape) < frac] = np.nan
    y[len(y) // 3] = np.nan  # one step wholly missing
    return y


def _block_conditional(mu, cov, y):
    """E[y | y_o] and Cov[y | y_o] by the block formulas (NaN = missing)."""
    o = ~np.isnan(y)
    m = ~o
    mean, c = np.where(o, y, mu).astype(float), np.zeros_like(cov)
    if m.any() and o.any():
        k = cov[np.ix_(m, o)] @ np.linalg.inv(cov[np.ix_(o, o)])
        mean[m] = mu[m] + k @ (y[o] - mu[o])
        c[np.ix_(m, m)] = cov[np.ix_(m, m)] - k @ cov[np.ix_(o, m)]
    elif m.any():
        c[np.ix_(m, m)] = cov[np.ix_(m, m)]
    return mean, c


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_conditional_is_the_block_formula(seed):
    rng = np.random.default_rng(seed)
    mu, cov = rng.normal(size=5), _spd(rng, 5)
    for miss in ([1, 3], [0], [0, 1, 2, 3, 4], []):
        y = rng.normal(size=5)
        y[miss] = np.nan
        want_mean, want_cov = _block_conditional(mu, cov, y)
        got_mean, got_cov = gaussian_conditional(jnp.asarray(mu), jnp.asarray(cov), jnp.asarray(y), ~np.isnan(y))
        np.testing.assert_allclose(np.asarray(got_mean), want_mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(got_cov), want_cov, rtol=1e-4, atol=1e-5)
        assert np.isfinite(np.asarray(got_mean)).all()


def _weights(model, params, y):
    """Posterior state probabilities, 0 at the steps that are not evaluated (as EM weighs them)."""
    data = as_model_data(model, y)
    g = np.asarray(smoother(model, params, y).smoothed_probs, float)
    return g * np.asarray(data.mask[0])[:, None], data


def _one_em_step(model, params, y):
    new, _ = em_step(
        jax.random.key(9), em_init(model, params), model, as_model_data(model, y), trainable_mask(model.param_spec())
    )
    return new.params.emissions


def gaussian_em_reference(model, params, y):
    """One EM update of a full/tied Gaussian HMM's emissions with missing entries, in NumPy (block formulas)."""
    comp = model.emission_component
    g, _ = _weights(model, params, y)
    e = params.emissions
    means0, covs0 = np.asarray(e.means, float), np.asarray(e.covs, float)
    S, D = means0.shape
    yhat, csum = np.zeros((len(y), S, D)), np.zeros((S, D, D))
    for n in range(len(y)):
        for s in range(S):
            yhat[n, s], c = _block_conditional(means0[s], covs0[s] if covs0.ndim == 3 else covs0, y[n])
            csum[s] += g[n, s] * c
    n_s = g.sum(0)
    means = np.einsum("ns,nsd->sd", g, yhat) / n_s[:, None]
    r = yhat - means[None]
    scatter = np.einsum("ns,nsd,nse->sde", g, r, r) + csum
    if comp.covariance == "tied":
        scatter, n_s = scatter.sum(0), n_s.sum()
    covs = (scatter + comp.covariance_reg * np.eye(D)) / (np.asarray(n_s) + comp._dof + D + 1.0)[..., None, None]
    return means, covs


@pytest.mark.parametrize("covariance", ["full", "tied"])
@pytest.mark.parametrize("seed", [0, 1])
def test_full_and_tied_m_steps_are_em_over_the_missing_entries(covariance, seed):
    rng = np.random.default_rng(seed)
    D = 3
    y = rng.normal(size=(120, D)) @ np.linalg.cholesky(_spd(rng, D)).T + np.where(rng.random((120, 1)) < 0.5, 2, 0)
    y = _holes(rng, y)
    comp = GaussianEmissions(D, covariance)
    model = HMM(2, comp)
    params = model.initialize(jax.random.key(seed), y)
    means, covs = gaussian_em_reference(model, params, y)
    got = _one_em_step(model, params, y)
    np.testing.assert_allclose(np.asarray(got.means), means, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(np.asarray(got.covs), covs, rtol=2e-3, atol=2e-4)


def _ar_reference(comp, params, data, g, y):
    """One EM update of a switching-coefficient full-covariance AR component, in NumPy."""
    e = params.emissions
    b, A, covs = (np.asarray(a, float) for a in (e.biases, e.coefficients, e.covs))
    x = np.asarray(data.inputs[0], float)
    S, D = b.shape
    out_b, out_A, out_c = [], [], []
    for s in range(S):
        mu = b[s] + x @ A[s].T
        pairs = [_block_conditional(mu[n], covs[s], y[n]) for n in range(len(y))]
        yh = np.array([p[0] for p in pairs])
        csum = sum(g[n, s] * pairs[n][1] for n in range(len(y)))
        xt = np.concatenate([np.ones((len(y), 1)), x], 1)
        coef = np.linalg.solve((g[:, s, None] * xt).T @ xt, (g[:, s, None] * xt).T @ yh)
        r = yh - xt @ coef
        scatter = (g[:, s, None] * r).T @ r + csum
        out_b.append(coef[0])
        out_A.append(coef[1:].T)
        out_c.append((scatter + comp.covariance_reg * np.eye(D)) / (g[:, s].sum() + comp._dof + D + 1.0))
    return np.array(out_b), np.array(out_A), np.array(out_c)


@pytest.mark.parametrize("seed", [0, 1])
def test_ar_m_step_is_em_over_the_missing_entries(seed):
    rng = np.random.default_rng(seed)
    comp = AutoregressiveEmissions(2, num_lags=1)
    model = HMM(2, comp)
    z = np.cumsum(rng.normal(size=(150, 2)), 0) * 0.3
    y = _holes(rng, z, 0.15)
    params = model.initialize(jax.random.key(seed), y)
    g, data = _weights(model, params, y)
    yn = np.where(np.asarray(data.entries[0]), np.nan_to_num(y), np.nan)  # the entries EM evaluates
    b, A, covs = _ar_reference(comp, params, data, g, yn)
    got = _one_em_step(model, params, y)
    np.testing.assert_allclose(np.asarray(got.biases), b, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(got.coefficients), A, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(got.covs), covs, rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize(
    "comp",
    [
        GaussianEmissions(3, "full"),
        GaussianEmissions(3, "tied"),
        AutoregressiveEmissions(3, num_lags=1),
        AutoregressiveEmissions(3, num_lags=2, covariance="diagonal"),
        AutoregressiveEmissions(3, num_lags=1, switching_coefficients=False, switching_covariance=False),
    ],
    ids=["full", "tied", "ar_full", "ar_diag_lag2", "ar_shared"],
)
def test_em_with_missing_entries_increases_the_objective(comp):
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(size=(200, 3)), 0) * 0.2 + np.where(rng.random((200, 1)) < 0.5, 1.5, 0)
    y = _holes(rng, y, 0.1)
    model = HMM(2, comp)
    fit = fit_em(jax.random.key(1), model, model.initialize(jax.random.key(0), y), y, num_iters=12, tol=0.0)
    obj = np.asarray(fit.log_objective)
    assert np.isfinite(obj).all()
    assert np.diff(obj).min() > -1e-4 * abs(obj[-1]), np.diff(obj)


# ----------------------------------------------------------------------------------------- emission lags
def _lagged_problem():
    """AR(1)-HMM: y[2, 0] and all of y[4] missing.  Steps 3 and 5 (their lag holds a missing entry) and 4 add no
    term; step 2 adds the density of its observed entry.  Enumeration over every state path."""
    rng = np.random.default_rng(0)
    comp = AutoregressiveEmissions(2, num_lags=1)
    model = HMM(2, comp)
    y = np.cumsum(rng.normal(size=(7, 2)), 0)
    params = model.initialize(jax.random.key(0), np.cumsum(rng.normal(size=(60, 2)), 0))
    y[2, 0] = np.nan
    y[4] = np.nan
    e = params.emissions
    b, A, covs = (np.asarray(a, float) for a in (e.biases, e.coefficients, e.covs))
    T, S = len(y), 2
    lik = np.zeros((T, S))
    for t in (0, 1, 2, 6):
        lag = np.zeros(2) if t == 0 else y[t - 1]
        o = ~np.isnan(y[t])
        for s in range(S):
            mu = b[s] + A[s] @ lag
            lik[t, s] = stats.multivariate_normal(mu[o], covs[s][np.ix_(o, o)]).logpdf(y[t][o])
    pi = np.exp(np.asarray(model.log_initial(params), float))
    P = np.asarray(model.transition_component.matrix(params.transitions), float)
    paths = np.array(list(itertools.product(range(S), repeat=T)))
    lp = np.log(pi[paths[:, 0]]) + np.log(P[paths[:, :-1], paths[:, 1:]]).sum(1) + lik[np.arange(T), paths].sum(1)
    total = logsumexp(lp)
    post = np.array([[np.exp(logsumexp(lp[paths[:, t] == s]) - total) for s in range(S)] for t in range(T)])
    return model, params, y, lik, paths, lp, total, post


def test_a_step_whose_lags_are_missing_is_not_evaluated():
    """Forward-backward, the potentials, log_joint and the particle filter's increments against enumeration."""
    model, params, y, lik, paths, lp, total, post = _lagged_problem()
    np.testing.assert_allclose(float(marginal_log_likelihood(model, params, y)), total, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(smoother(model, params, y).smoothed_probs), post, atol=1e-5)
    _, _, ll = discrete_log_potentials(model, params, jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(ll), lik, rtol=1e-5, atol=1e-6)
    for path in paths[:3]:
        np.testing.assert_allclose(
            float(log_joint(model, params, jnp.asarray(path), jnp.asarray(y))),
            lp[np.flatnonzero((paths == path).all(1))[0]],
            rtol=1e-5,
        )
    pf = particle_filter(jax.random.key(1), model, params, jnp.asarray(y), 64)
    inc = np.asarray(pf.log_likelihood_increments)
    assert (inc[[3, 4, 5]] == 0).all() and (inc[[0, 1, 2, 6]] != 0).all()


@pytest.mark.slow
def test_particle_filter_with_missing_lags_is_unbiased_for_the_exact_likelihood():
    model, params, y, *_, total, _ = _lagged_problem()
    lls = np.asarray(
        jax.vmap(lambda k: particle_filter(k, model, params, jnp.asarray(y), 128).log_likelihood)(
            jax.random.split(jax.random.key(2), 200)
        )
    )
    ratio = np.exp(lls - total)
    assert abs(ratio.mean() - 1.0) < 4 * ratio.std() / np.sqrt(len(ratio)) + 1e-3
