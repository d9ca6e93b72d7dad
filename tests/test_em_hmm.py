import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pssm.inference.em import fit_em, fit_em_restarts
from pssm.models.hmm import (
    HMM,
    CategoricalEmissions,
    CategoricalParams,
    GaussianEmissions,
    GaussianParams,
    HMMParams,
    PoissonEmissions,
    PoissonParams,
)

from pssm.metrics import match_states, permuted_state_accuracy
from pssm.protocol import simulate

A3 = jnp.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.1, 0.1, 0.8]])


def _simulate_batch(model, params, B, T, seed):
    keys = jax.random.split(jax.random.PRNGKey(seed), B)
    return jax.vmap(lambda k: simulate(k, model, params, T))(keys)


def test_poisson_hmm_em_recovers_parameters():
    model = HMM(3, PoissonEmissions(4))
    rates = jnp.array([[1.0, 5, 2, 8], [6, 1, 3, 1], [2, 2, 9, 0.5]])
    truth = HMMParams(jnp.ones(3) / 3, A3, PoissonParams(rates))
    z, y = _simulate_batch(model, truth, 6, 400, 0)
    best, runs = fit_em_restarts(jax.random.PRNGKey(1), model, y, num_restarts=3, num_iters=200, tol=1e-7)
    assert len(runs) == 3
    # EM is monotone, up to float32 rounding of a sum of ~2400 terms (relative 1e-6)
    assert np.all(np.diff(best.log_objective) > -1e-6 * np.abs(best.log_objective[:-1]))
    z_est = best.posterior.smoothed_probs.argmax(-1)
    assert permuted_state_accuracy(z, z_est, 3) > 0.98
    order = np.argsort(match_states(z, z_est, 3))
    est_rates = np.asarray(best.params.emissions.rates)[order]
    # rates within 4 standard errors (sd of a Poisson mean over ~800 steps per state)
    se = np.sqrt(np.asarray(rates) / 600)
    assert np.all(np.abs(est_rates - np.asarray(rates)) < 5 * se + 0.05)
    est_A = np.asarray(best.params.transition_matrix)[np.ix_(order, order)]
    np.testing.assert_allclose(est_A, A3, atol=0.04)


def test_gaussian_hmm_em_recovers_means_and_covs():
    model = HMM(2, GaussianEmissions(2))
    truth = HMMParams(
        jnp.array([0.5, 0.5]),
        jnp.array([[0.95, 0.05], [0.1, 0.9]]),
        GaussianParams(
            jnp.array([[-2.0, 0.0], [2.0, 1.0]]), jnp.array([[[1.0, 0.3], [0.3, 0.5]], [[0.5, 0.0], [0.0, 2.0]]])
        ),
    )
    z, y = _simulate_batch(model, truth, 4, 500, 2)
    best, _ = fit_em_restarts(jax.random.PRNGKey(3), model, y, num_restarts=2, num_iters=100)
    z_est = best.posterior.smoothed_probs.argmax(-1)
    assert permuted_state_accuracy(z, z_est, 2) > 0.97
    order = np.argsort(match_states(z, z_est, 2))
    # within 4 standard errors of the per-state sample mean / covariance (n_k steps in state k):
    # Var(mean_i) = S_ii / n_k, Var(S_ij hat) = (S_ij^2 + S_ii S_jj) / n_k for Gaussian data
    n_k = np.bincount(np.asarray(z).ravel(), minlength=2)[:, None]
    S = np.asarray(truth.emissions.covs)
    d = np.diagonal(S, axis1=1, axis2=2)
    se_mean = np.sqrt(d / n_k)
    se_cov = np.sqrt((S**2 + d[:, :, None] * d[:, None, :]) / n_k[:, :, None])
    err_mean = np.abs(np.asarray(best.params.emissions.means)[order] - np.asarray(truth.emissions.means))
    err_cov = np.abs(np.asarray(best.params.emissions.covs)[order] - S)
    assert np.all(err_mean < 4 * se_mean + 0.01), (err_mean, se_mean)
    assert np.all(err_cov < 4 * se_cov + 0.01), (err_cov, se_cov)


def test_categorical_hmm_em_recovers_emission_probs():
    model = HMM(2, CategoricalEmissions(1, 3))
    probs = jnp.array([[[0.8, 0.15, 0.05]], [[0.05, 0.15, 0.8]]])
    truth = HMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.1, 0.9]]), CategoricalParams(probs))
    z, y = _simulate_batch(model, truth, 5, 400, 4)
    best, _ = fit_em_restarts(jax.random.PRNGKey(5), model, y, num_restarts=3, num_iters=200)
    z_est = best.posterior.smoothed_probs.argmax(-1)
    assert permuted_state_accuracy(z, z_est, 2) > 0.9
    order = np.argsort(match_states(z, z_est, 2))
    np.testing.assert_allclose(np.asarray(best.params.emissions.probs)[order], probs, atol=0.05)


def test_em_on_ragged_batch_equals_em_on_concatenated_statistics():
    """Padding must not leak into the statistics: a ragged batch == the same sequences given one by one."""
    model = HMM(2, PoissonEmissions(2))
    truth = HMMParams(
        jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.2, 0.8]]), PoissonParams(jnp.array([[1.0, 4.0], [5.0, 1.0]]))
    )
    _, y = _simulate_batch(model, truth, 2, 60, 6)
    lengths = jnp.array([60, 25])
    y_pad = y.at[1, 25:].set(999)  # garbage in the padding
    init = model.initialize(jax.random.PRNGKey(0), np.asarray(y[0]))
    r1 = fit_em(model, init, y_pad, lengths=lengths, num_iters=5, tol=0.0)
    y_trunc = jnp.stack([y[0], jnp.pad(y[1, :25], ((0, 35), (0, 0)))])
    r2 = fit_em(model, init, y_trunc, lengths=lengths, num_iters=5, tol=0.0)
    np.testing.assert_allclose(r1.log_likelihoods, r2.log_likelihoods, rtol=1e-6)
    np.testing.assert_allclose(r1.params.emissions.rates, r2.params.emissions.rates, rtol=1e-5)


def test_sticky_prior_increases_self_transition():
    model = HMM(2, PoissonEmissions(1))
    sticky = HMM(2, PoissonEmissions(1), stickiness=500.0)
    truth = HMMParams(
        jnp.array([0.5, 0.5]), jnp.array([[0.8, 0.2], [0.2, 0.8]]), PoissonParams(jnp.array([[1.0], [6.0]]))
    )
    _, y = _simulate_batch(model, truth, 1, 300, 7)
    init = model.initialize(jax.random.PRNGKey(1), np.asarray(y[0]))
    a = fit_em(model, init, y, num_iters=30).params.transition_matrix
    b = fit_em(sticky, init, y, num_iters=30).params.transition_matrix
    assert float(jnp.diag(b).min()) > float(jnp.diag(a).max())


def test_match_states_hungarian():
    z_true = np.array([0, 0, 1, 1, 2, 2, 2])
    z_est = np.array([2, 2, 0, 0, 1, 1, 0])
    perm = match_states(z_true, z_est, 3)
    np.testing.assert_array_equal(perm, [1, 2, 0])
    assert permuted_state_accuracy(z_true, z_est, 3) == pytest.approx(6 / 7)


def test_em_reports_non_finite_objective():
    """Params that make the data impossible (a zero rate with positive counts) stop EM with a clear error."""
    model = HMM(2, PoissonEmissions(1))
    params = HMMParams(jnp.array([0.5, 0.5]), jnp.eye(2) * 0.8 + 0.1, PoissonParams(jnp.array([[0.0], [0.0]])))
    y = jnp.array([[[1.0], [3.0], [2.0]]])
    with pytest.raises(FloatingPointError, match="objective"):
        fit_em(model, params, y, num_iters=3)


@pytest.mark.parametrize(
    "y,match",
    [
        (jnp.array([[1.0], [-1.0], [2.0]]), "non-negative"),
        (jnp.array([[1.0], [0.5], [2.0]]), "integer"),
        (jnp.array([[1.0], [jnp.inf], [2.0]]), "emissions"),
        (jnp.zeros((4,)), "emissions must be"),
    ],
)
def test_poisson_em_rejects_bad_counts(y, match):
    model = HMM(2, PoissonEmissions(1))
    params = HMMParams(jnp.array([0.5, 0.5]), jnp.eye(2) * 0.8 + 0.1, PoissonParams(jnp.array([[1.0], [3.0]])))
    with pytest.raises(ValueError, match=match):
        fit_em(model, params, y, num_iters=2)


def test_nan_rows_are_missing_observations_and_length_one_sequences_work(x64):
    model = HMM(2, PoissonEmissions(2))
    params = HMMParams(
        jnp.array([0.4, 0.6]), jnp.array([[0.9, 0.1], [0.3, 0.7]]), PoissonParams(jnp.array([[1.0, 4.0], [5.0, 1.0]]))
    )
    y = jnp.array([[[1.0, 3.0], [jnp.nan, 2.0], [4.0, 0.0]]])
    r_nan = fit_em(model, params, y, num_iters=1)
    r_mask = fit_em(model, params, y.at[0, 1].set(0.0), mask=jnp.array([[True, False, True]]), num_iters=1)
    np.testing.assert_allclose(r_nan.log_likelihoods, r_mask.log_likelihoods, rtol=1e-12)
    np.testing.assert_allclose(r_nan.posterior.smoothed_probs, r_mask.posterior.smoothed_probs, rtol=1e-12)
    r1 = fit_em(model, params, jnp.array([[[2.0, 1.0]]]), num_iters=2)
    assert np.isfinite(r1.log_likelihoods).all() and r1.posterior.smoothed_probs.shape == (1, 1, 2)
    with pytest.raises(ValueError, match="lengths"):
        fit_em(model, params, y.at[0, 1].set(0.0), lengths=jnp.array([0]), num_iters=1)
