import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoMultivariateNormal

from pssm.inference import hmm_log_likelihood, kalman_log_likelihood
from pssm.inference.numpyro_model import make_numpyro_model, site_names
from pssm.models import (
    HMM,
    HMMParams,
    InitialParams,
    LinearGaussianSSM,
    PoissonEmissions,
    PoissonParams,
    StickyTransitions,
    TransitionParams,
)
from pssm.protocol import discrete_log_potentials, simulate


def _params(pi, A, rates):
    return HMMParams(
        InitialParams(jnp.asarray(pi)), TransitionParams(jnp.asarray(A)), PoissonParams(jnp.asarray(rates))
    )


def _sites(params):
    from pssm.params import leaf_names

    return dict(zip(leaf_names(params), jax.tree.leaves(params), strict=True))


def test_default_bridge_density_is_em_objective_and_frozen_leaves_are_constants(x64):
    """With the model's own spec, log density(sites) = sum log p(y_b) + model.log_prior (EM's objective)."""
    from numpyro.infer.util import log_density

    from pssm.inference import fit_em, marginal_log_likelihood

    m = HMM(
        2,
        PoissonEmissions(1, rate_prior_shape=2.0, rate_prior_rate=0.5),
        transition_component=StickyTransitions(concentration=1.2, stickiness=2.0),
    )
    p = _params([0.3, 0.7], [[0.9, 0.1], [0.2, 0.8]], [[1.0], [5.0]])
    _, y = simulate(jax.random.PRNGKey(2), m, p, 40)
    fn = make_numpyro_model(m, params=p)
    ld, _ = log_density(fn, (y,), {}, _sites(p))
    want = float(marginal_log_likelihood(m, p, y).sum() + m.log_prior(p))
    np.testing.assert_allclose(float(ld), want, rtol=1e-12)
    em = fit_em(jax.random.PRNGKey(0), m, p, y, num_iters=1)
    np.testing.assert_allclose(float(ld), float(em.log_objective[0]), rtol=1e-12)
    frozen = make_numpyro_model(m, params=p, frozen=("initial", "emissions.rates"))
    tr = numpyro.handlers.trace(numpyro.handlers.seed(frozen, 0)).get_trace(y)
    sampled = [k for k, v in tr.items() if v["type"] == "sample" and not v.get("is_observed", False)]
    assert [k for k in sampled if k not in ("log_prior", "log_likelihood")] == ["transitions.matrix"]


@pytest.mark.slow
def test_svi_through_the_bridge_fits_an_hmm_to_its_em_map(x64):
    """A delta guide on the bridge maximises the same objective as EM: the two maxima agree."""
    from numpyro.infer.autoguide import AutoDelta

    from pssm.inference import fit_em

    m = HMM(2, PoissonEmissions(1))
    truth = _params([0.5, 0.5], [[0.95, 0.05], [0.05, 0.95]], [[2.0], [8.0]])
    _, y = simulate(jax.random.PRNGKey(2), m, truth, 300)
    em = fit_em(jax.random.PRNGKey(0), m, truth, y, num_iters=200, tol=1e-10)
    fn = make_numpyro_model(m, params=truth, frozen=("initial",))
    guide = AutoDelta(fn, init_loc_fn=numpyro.infer.init_to_value(values=_sites(truth)))
    svi = SVI(fn, guide, numpyro.optim.optax_to_numpyro(optax.adam(0.02)), Trace_ELBO())
    res = svi.run(jax.random.PRNGKey(1), 3000, y, progress_bar=False)
    rates = np.sort(np.asarray(res.params["emissions.rates_auto_loc"]).ravel())
    np.testing.assert_allclose(rates, np.sort(np.asarray(em.params.emissions.rates).ravel()), rtol=2e-3)


@pytest.mark.slow
def test_svi_elbo_on_linear_gaussian_reaches_kalman_log_likelihood(x64):
    """With params fixed, the ELBO of a full-rank Gaussian guide can equal log p(y); stated gap: 1.0 nat."""
    m = LinearGaussianSSM(1, 1)
    p = m.make_params(dynamics_weights=[[0.9]], dynamics_cov=[[1.0]], emission_weights=[[1.0]], emission_cov=[[0.25]])
    _, y = simulate(jax.random.PRNGKey(0), m, p, 30)
    fn = make_numpyro_model(m, params=p, frozen=("*",))  # params held fixed: only the states are latent
    svi = SVI(fn, AutoMultivariateNormal(fn), numpyro.optim.optax_to_numpyro(optax.adam(0.02)), Trace_ELBO(16))
    res = svi.run(jax.random.PRNGKey(1), 3000, y, progress_bar=False)
    elbo = -float(np.mean(res.losses[-300:]))
    exact = float(kalman_log_likelihood(p, y))
    assert exact - 1.0 < elbo < exact + 0.3  # ELBO <= log p(y) up to Monte Carlo noise


def test_discrete_model_factor_equals_forward_algorithm(x64):
    m = HMM(2, PoissonEmissions(1))
    p = _params([0.3, 0.7], [[0.9, 0.1], [0.2, 0.8]], [[1.0], [5.0]])
    _, y = simulate(jax.random.PRNGKey(2), m, p, 40)
    fn = make_numpyro_model(m, prior=jax.tree.map(lambda _: None, p), params=p)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(fn, 0)).get_trace(y)
    lp = tr["log_likelihood"]["fn"].log_prob(tr["log_likelihood"]["value"])
    np.testing.assert_allclose(lp, hmm_log_likelihood(*discrete_log_potentials(m, p, y)), atol=1e-10)


@pytest.mark.slow
def test_nuts_recovers_two_poisson_rates_with_states_summed_out(x64):
    m = HMM(2, PoissonEmissions(1))
    truth = _params([0.5, 0.5], [[0.95, 0.05], [0.05, 0.95]], [[2.0], [8.0]])
    _, y = simulate(jax.random.PRNGKey(2), m, truth, 300)
    prior = HMMParams(
        InitialParams(None), TransitionParams(None), PoissonParams(dist.Gamma(2.0, 0.4).expand([2, 1]).to_event(2))
    )
    fn = make_numpyro_model(m, prior=prior, params=truth)
    assert site_names(prior) == ["emissions.rates"]
    mcmc = MCMC(NUTS(fn), num_warmup=300, num_samples=400, num_chains=1, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(3), y)
    r = np.sort(np.asarray(mcmc.get_samples()["emissions.rates"]).reshape(-1, 2), axis=1)
    mean, sd = r.mean(0), r.std(0)
    assert np.all(np.abs(mean - np.array([2.0, 8.0])) < 3 * sd), (mean, sd)


def test_fixed_leaf_without_params_is_a_clear_error():
    m = HMM(2, PoissonEmissions(1))
    prior = HMMParams(
        InitialParams(None), TransitionParams(None), PoissonParams(dist.Gamma(2.0, 0.4).expand([2, 1]).to_event(2))
    )
    fn = make_numpyro_model(m, prior=prior)
    with pytest.raises(ValueError, match="initial.probs"):
        numpyro.handlers.seed(fn, 0)(jnp.zeros((5, 1)))


def test_continuous_bridge_and_svi_treat_nan_rows_as_missing_and_check_the_data(x64):
    """NaN rows: the bridge's density equals the masked one; fit_svi runs on them (and on a model with empty
    input weights); a wrong emission dimension, ±inf and a negative step size are refused."""
    from numpyro.infer.util import log_density

    from pssm.inference import fit_svi
    from pssm.params import leaf_names

    lg = LinearGaussianSSM(1, 1)
    p = lg.random_params(jax.random.PRNGKey(0))
    x, y = simulate(jax.random.PRNGKey(1), lg, p, 20)
    y_nan = np.asarray(y).copy()
    y_nan[[3, 11]] = np.nan
    mask = ~np.isnan(y_nan[:, 0])
    sites = {**dict(zip(leaf_names(p), jax.tree.leaves(p), strict=True)), "x_0": x[0], "x": x[1:]}
    fn = make_numpyro_model(lg, params=p)
    got = log_density(fn, (jnp.asarray(y_nan),), {}, sites)[0]
    want = log_density(fn, (jnp.where(mask[:, None], y, 0.0),), {"mask": jnp.asarray(mask)}, sites)[0]
    assert np.isfinite(got)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    res = fit_svi(jax.random.PRNGKey(2), lg, p, y_nan, num_iters=30)
    assert np.all(np.isfinite(res.losses)) and res.params.dynamics_input_weights.shape == (1, 0)
    with pytest.raises(ValueError, match="emission_shape"):
        fit_svi(jax.random.PRNGKey(2), lg, p, np.asarray(y)[:, [0, 0]], num_iters=2)
    with pytest.raises(ValueError, match="±inf"):
        fit_svi(jax.random.PRNGKey(2), lg, p, np.where(np.arange(20)[:, None] == 4, np.inf, y), num_iters=2)
    with pytest.raises(ValueError, match="learning_rate"):
        fit_svi(jax.random.PRNGKey(2), lg, p, y, num_iters=2, learning_rate=-1.0)
    with pytest.raises(ValueError, match="emission_shape"):
        log_density(fn, (jnp.zeros((20, 2)),), {}, sites)
