import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pssm.boundary import as_model_data
from pssm.data import Sequences
from pssm.inference.optim.em import fit_em, fit_em_restarts
from pssm.metrics import match_states, permuted_state_accuracy
from pssm.models import (
    HMM,
    CategoricalEmissions,
    CategoricalParams,
    GaussianEmissions,
    GaussianParams,
    HMMParams,
    InitialParams,
    PoissonEmissions,
    PoissonParams,
    StickyTransitions,
    TransitionParams,
)
from pssm.protocol import simulate


def P(pi, A, em):
    return HMMParams(InitialParams(jnp.asarray(pi)), TransitionParams(jnp.asarray(A)), em)


KEY = jax.random.PRNGKey(11)

A3 = jnp.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.1, 0.1, 0.8]])


def _simulate_batch(model, params, B, T, seed):
    keys = jax.random.split(jax.random.PRNGKey(seed), B)
    return jax.vmap(lambda k: simulate(k, model, params, T))(keys)


def test_poisson_hmm_em_recovers_parameters():
    model = HMM(3, PoissonEmissions(4))
    rates = jnp.array([[1.0, 5, 2, 8], [6, 1, 3, 1], [2, 2, 9, 0.5]])
    truth = P(jnp.ones(3) / 3, A3, PoissonParams(rates))
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
    est_A = np.asarray(best.params.transitions.matrix)[np.ix_(order, order)]
    np.testing.assert_allclose(est_A, A3, atol=0.04)


def test_gaussian_hmm_em_recovers_means_and_covs():
    model = HMM(2, GaussianEmissions(2))
    truth = P(
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
    truth = P(jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.1, 0.9]]), CategoricalParams(probs))
    z, y = _simulate_batch(model, truth, 5, 400, 4)
    best, _ = fit_em_restarts(jax.random.PRNGKey(5), model, y, num_restarts=3, num_iters=200)
    z_est = best.posterior.smoothed_probs.argmax(-1)
    assert permuted_state_accuracy(z, z_est, 2) > 0.9
    order = np.argsort(match_states(z, z_est, 2))
    np.testing.assert_allclose(np.asarray(best.params.emissions.probs)[order], probs, atol=0.05)


def test_em_on_ragged_batch_equals_em_on_concatenated_statistics():
    """Padding must not leak into the statistics: a ragged batch == the same sequences given one by one."""
    model = HMM(2, PoissonEmissions(2))
    truth = P(
        jnp.array([0.5, 0.5]), jnp.array([[0.9, 0.1], [0.2, 0.8]]), PoissonParams(jnp.array([[1.0, 4.0], [5.0, 1.0]]))
    )
    _, y = _simulate_batch(model, truth, 2, 60, 6)
    init = model.initialize(jax.random.PRNGKey(0), as_model_data(model, y[0]))
    y_pad = y.at[1, 25:].set(999)  # garbage in the padding
    r1 = fit_em(KEY, model, init, y_pad, lengths=jnp.array([60, 25]), num_iters=5, tol=0.0)
    r2 = fit_em(KEY, model, init, [y[0], y[1, :25]], num_iters=5, tol=0.0)
    np.testing.assert_allclose(r1.log_likelihoods, r2.log_likelihoods, rtol=1e-6)
    np.testing.assert_allclose(r1.params.emissions.rates, r2.params.emissions.rates, rtol=1e-5)


def test_sticky_prior_increases_self_transition():
    model = HMM(2, PoissonEmissions(1))
    sticky = HMM(2, PoissonEmissions(1), transition_component=StickyTransitions(stickiness=500.0))
    truth = P(jnp.array([0.5, 0.5]), jnp.array([[0.8, 0.2], [0.2, 0.8]]), PoissonParams(jnp.array([[1.0], [6.0]])))
    _, y = _simulate_batch(model, truth, 1, 300, 7)
    init = model.initialize(jax.random.PRNGKey(1), as_model_data(model, y[0]))
    a = fit_em(KEY, model, init, y, num_iters=30).params.transitions.matrix
    b = fit_em(KEY, sticky, init, y, num_iters=30).params.transitions.matrix
    assert float(jnp.diag(b).min()) > float(jnp.diag(a).max())


def test_match_states_hungarian():
    z_true = np.array([0, 0, 1, 1, 2, 2, 2])
    z_est = np.array([2, 2, 0, 0, 1, 1, 0])
    perm = match_states(z_true, z_est, 3)
    np.testing.assert_array_equal(perm, [1, 2, 0])
    assert permuted_state_accuracy(z_true, z_est, 3) == pytest.approx(6 / 7)


def test_em_reports_non_finite_objective():
    """Params outside their support (a zero rate) are refused; params that make the data impossible (a zero
    probability class for observed data) stop EM with a clear error."""
    model = HMM(2, PoissonEmissions(1))
    params = P(jnp.array([0.5, 0.5]), jnp.eye(2) * 0.8 + 0.1, PoissonParams(jnp.array([[0.0], [0.0]])))
    y = jnp.array([[[1.0], [3.0], [2.0]]])
    with pytest.raises(ValueError, match="emissions.rates is outside its support"):
        fit_em(KEY, model, params, y, num_iters=3)
    cat = HMM(2, CategoricalEmissions(1, 3, concentration=1.0))
    cp = P(jnp.array([0.5, 0.5]), jnp.eye(2) * 0.8 + 0.1, CategoricalParams(jnp.array([[[0.5, 0.5, 0.0]]] * 2)))
    with pytest.raises(FloatingPointError, match="impossible"):
        fit_em(KEY, cat, cp, jnp.array([[[2], [0], [1]]]), num_iters=3)


def test_zero_transition_entries_are_valid_under_the_default_prior(x64):
    """A left-to-right HMM (exact zeros in A) fits without NaN, and the zeros stay zero."""
    model = HMM(3, PoissonEmissions(1))
    A = jnp.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0]])
    truth = P(jnp.array([1.0, 0.0, 0.0]), A, PoissonParams(jnp.array([[1.0], [5.0], [10.0]])))
    _, y = simulate(jax.random.PRNGKey(0), model, truth, 100)
    assert np.isfinite(float(model.log_prior(truth)))
    r = fit_em(KEY, model, truth, y, num_iters=20)
    assert np.all(np.isfinite(r.log_objective))
    np.testing.assert_array_equal(np.asarray(r.params.transitions.matrix)[np.asarray(A) == 0], 0.0)
    assert np.all(np.diff(r.log_objective) > -1e-9 * np.abs(r.log_objective[:-1]))


def test_em_objective_is_log_likelihood_plus_the_one_log_prior(x64):
    """log_objective[i] = sum_b log p(y_b | theta_i) + model.log_prior(theta_i) at the params entering step i."""
    from pssm.inference import marginal_log_likelihood

    model = HMM(
        2,
        PoissonEmissions(2, rate_prior_shape=2.0, rate_prior_rate=0.5),
        transition_component=StickyTransitions(concentration=1.5, stickiness=3.0),
    )
    truth = P(
        jnp.array([0.3, 0.7]), jnp.array([[0.9, 0.1], [0.2, 0.8]]), PoissonParams(jnp.array([[1.0, 4.0], [5.0, 1.0]]))
    )
    _, y = _simulate_batch(model, truth, 3, 50, 9)
    r0 = fit_em(KEY, model, truth, y, num_iters=1)
    want = float(marginal_log_likelihood(model, truth, y).sum() + model.log_prior(truth))
    np.testing.assert_allclose(float(r0.log_objective[0]), want, rtol=1e-12)
    r = fit_em(KEY, model, truth, y, num_iters=6, tol=0.0)
    want = float(marginal_log_likelihood(model, r.params, y).sum() + model.log_prior(r.params))
    r_next = fit_em(KEY, model, r.params, y, num_iters=1)
    np.testing.assert_allclose(float(r_next.log_objective[0]), want, rtol=1e-12)


def test_frozen_leaves_do_not_move_and_the_rest_still_improves(x64):
    model = HMM(2, GaussianEmissions(2, covariance="tied"))
    truth = P(
        jnp.array([0.5, 0.5]),
        jnp.array([[0.9, 0.1], [0.1, 0.9]]),
        GaussianParams(jnp.array([[-1.0, 0.0], [1.0, 1.0]]), jnp.eye(2)),
    )
    _, y = _simulate_batch(model, truth, 2, 200, 3)
    init = model.initialize(jax.random.PRNGKey(4), as_model_data(model, y))
    r = fit_em(KEY, model, init, y, num_iters=15, frozen=["emissions.covs", "initial"])
    np.testing.assert_array_equal(np.asarray(r.params.emissions.covs), np.asarray(init.emissions.covs))
    np.testing.assert_array_equal(np.asarray(r.params.initial.probs), np.asarray(init.initial.probs))
    assert np.all(np.diff(r.log_objective) > -1e-9 * np.abs(r.log_objective[:-1]))
    assert float(r.log_objective[-1]) > float(r.log_objective[0])
    with pytest.raises(KeyError, match="emissions.rates"):
        fit_em(KEY, model, init, y, num_iters=1, frozen=["emissions.rates"])


@pytest.mark.parametrize("covariance", ["full", "diagonal", "tied"])
def test_gaussian_m_step_is_the_map_of_its_declared_prior(covariance, x64):
    """The closed-form M-step maximises sum_n w log N(y|mu,Sigma) + log_prior: random perturbations never beat it."""
    comp = GaussianEmissions(2, covariance=covariance, covariance_reg=0.3)
    y = jax.random.normal(jax.random.PRNGKey(0), (1, 40, 2)) * jnp.array([1.0, 2.0])
    w = jax.random.dirichlet(jax.random.PRNGKey(1), jnp.ones(3), (1, 40))
    data = Sequences(y, jnp.ones((1, 40), bool), jnp.array([40]))
    p, _ = comp.m_step(None, data, w, None, KEY)

    def objective(q):
        ll = comp.log_likelihoods(q, y[0])
        return float(jnp.sum(w[0] * ll) + comp.log_prior(q, 3))

    best = objective(p)
    for i in range(20):
        k1, k2 = jax.random.split(jax.random.PRNGKey(100 + i))
        dm = 0.05 * jax.random.normal(k1, p.means.shape)
        scale = jnp.exp(0.05 * jax.random.normal(k2, p.covs.shape[:-1] if covariance != "diagonal" else p.covs.shape))
        covs = p.covs * scale if covariance == "diagonal" else p.covs * scale[..., None] * scale[..., None, :]
        assert objective(GaussianParams(p.means + dm, covs)) <= best + 1e-9


@pytest.mark.parametrize(
    "y,match",
    [
        (jnp.array([[1.0], [-1.0], [2.0]]), "non-negative"),
        (jnp.array([[1.0], [0.5], [2.0]]), "integer"),
        (jnp.array([[1.0], [jnp.inf], [2.0]]), "emissions"),
        (jnp.zeros((4, 2)), "emission_shape"),
    ],
)
def test_poisson_em_rejects_bad_counts(y, match):
    model = HMM(2, PoissonEmissions(1))
    params = P(jnp.array([0.5, 0.5]), jnp.eye(2) * 0.8 + 0.1, PoissonParams(jnp.array([[1.0], [3.0]])))
    with pytest.raises(ValueError, match=match):
        fit_em(KEY, model, params, y, num_iters=2)


def test_data_shape_must_match_the_model():
    """(T, 1) counts for a 5-neuron model, or params for 2 states in a 3-state model, are clear errors."""
    model = HMM(3, PoissonEmissions(5))
    params = P(jnp.ones(3) / 3, jnp.eye(3) * 0.7 + 0.1, PoissonParams(jnp.ones((3, 5))))
    with pytest.raises(ValueError, match=r"per-step shape \(1,\).*emission_shape \(5,\)"):
        fit_em(KEY, model, params, jnp.ones((20, 1)), num_iters=1)
    bad = P(jnp.ones(2) / 2, jnp.eye(2) * 0.8 + 0.1, PoissonParams(jnp.ones((2, 5))))
    with pytest.raises(ValueError, match="3 states"):
        fit_em(KEY, model, bad, jnp.ones((20, 5)), num_iters=1)


def test_nan_rows_are_missing_observations_and_length_one_sequences_work(x64):
    model = HMM(2, PoissonEmissions(2))
    params = P(
        jnp.array([0.4, 0.6]), jnp.array([[0.9, 0.1], [0.3, 0.7]]), PoissonParams(jnp.array([[1.0, 4.0], [5.0, 1.0]]))
    )
    y = jnp.array([[[1.0, 3.0], [jnp.nan, jnp.nan], [4.0, 0.0]]])
    r_nan = fit_em(KEY, model, params, y, num_iters=1)
    masked = Sequences(y.at[0, 1].set(0.0), jnp.array([[True, False, True]]), jnp.array([3]))
    r_mask = fit_em(KEY, model, params, masked, num_iters=1)
    np.testing.assert_allclose(r_nan.log_likelihoods, r_mask.log_likelihoods, rtol=1e-12)
    np.testing.assert_allclose(r_nan.posterior.smoothed_probs, r_mask.posterior.smoothed_probs, rtol=1e-12)
    r1 = fit_em(KEY, model, params, jnp.array([[[2.0, 1.0]]]), num_iters=2)
    assert np.isfinite(r1.log_likelihoods).all() and r1.posterior.smoothed_probs.shape == (1, 1, 2)
    with pytest.raises(ValueError, match="lengths"):
        fit_em(KEY, model, params, y.at[0, 1].set(0.0), lengths=jnp.array([0]), num_iters=1)


@pytest.mark.parametrize("tol", [0.0, 1e-2])
def test_fit_posterior_is_the_forward_backward_at_the_returned_params(tol):
    """Run to the cap (the final E-step after the last M-step) or stopped by the tolerance (the E-step of the
    converged iteration): either way the posterior is the smoother at ``fit.params``, and the last objective is
    taken at them."""
    from pssm.inference.exact.discrete import smoother

    rng = np.random.default_rng(3)
    y = np.concatenate([rng.normal(-1.0, 1.0, (60, 1)), rng.normal(2.0, 1.0, (60, 1))])
    model = HMM(2, GaussianEmissions(1))
    cap = 3 if tol == 0 else 50
    fit = fit_em(jax.random.PRNGKey(0), model, model.initialize(jax.random.PRNGKey(1), y), y, num_iters=cap, tol=tol)
    assert fit.converged == (tol > 0) and (fit.num_iters < cap) == (tol > 0)
    exact = smoother(model, fit.params, y)
    np.testing.assert_allclose(fit.posterior.smoothed_probs, exact.smoothed_probs, atol=1e-6)
    np.testing.assert_allclose(fit.posterior.log_likelihood, exact.log_likelihood, rtol=1e-6)
