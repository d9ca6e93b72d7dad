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
from pssm.models import LinearGaussianSSM
from pssm.models.hmm import HMM, HMMParams, PoissonEmissions, PoissonParams

from pssm.numpyro_model import make_numpyro_model, site_names
from pssm.protocol import discrete_log_potentials, simulate


def test_svi_elbo_on_linear_gaussian_reaches_kalman_log_likelihood(x64):
    """With params fixed, the ELBO of a full-rank Gaussian guide can equal log p(y); stated gap: 1.0 nat."""
    m = LinearGaussianSSM(1, 1)
    p = m.make_params(dynamics_weights=[[0.9]], dynamics_cov=[[1.0]], emission_weights=[[1.0]], emission_cov=[[0.25]])
    _, y = simulate(jax.random.PRNGKey(0), m, p, 30)
    fn = make_numpyro_model(m, params=p)
    svi = SVI(fn, AutoMultivariateNormal(fn), numpyro.optim.optax_to_numpyro(optax.adam(0.02)), Trace_ELBO(16))
    res = svi.run(jax.random.PRNGKey(1), 3000, y, progress_bar=False)
    elbo = -float(np.mean(res.losses[-300:]))
    exact = float(kalman_log_likelihood(p, y))
    assert exact - 1.0 < elbo < exact + 0.3  # ELBO <= log p(y) up to Monte Carlo noise


def test_discrete_model_factor_equals_forward_algorithm(x64):
    m = HMM(2, PoissonEmissions(1))
    p = HMMParams(jnp.array([0.3, 0.7]), jnp.array([[0.9, 0.1], [0.2, 0.8]]), PoissonParams(jnp.array([[1.0], [5.0]])))
    _, y = simulate(jax.random.PRNGKey(2), m, p, 40)
    fn = make_numpyro_model(m, prior=jax.tree.map(lambda _: None, p), params=p)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(fn, 0)).get_trace(y)
    lp = tr["log_likelihood"]["fn"].log_prob(tr["log_likelihood"]["value"])
    np.testing.assert_allclose(lp, hmm_log_likelihood(*discrete_log_potentials(m, p, y)), atol=1e-10)


def test_nuts_recovers_two_poisson_rates_with_states_summed_out(x64):
    m = HMM(2, PoissonEmissions(1))
    truth = HMMParams(
        jnp.array([0.5, 0.5]), jnp.array([[0.95, 0.05], [0.05, 0.95]]), PoissonParams(jnp.array([[2.0], [8.0]]))
    )
    _, y = simulate(jax.random.PRNGKey(2), m, truth, 300)
    prior = HMMParams(None, None, PoissonParams(dist.Gamma(2.0, 0.4).expand([2, 1]).to_event(2)))
    fn = make_numpyro_model(m, prior=prior, params=truth)
    assert site_names(prior) == ["emissions.rates"]
    mcmc = MCMC(NUTS(fn), num_warmup=300, num_samples=400, num_chains=1, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(3), y)
    r = np.sort(np.asarray(mcmc.get_samples()["emissions.rates"]).reshape(-1, 2), axis=1)
    mean, sd = r.mean(0), r.std(0)
    assert np.all(np.abs(mean - np.array([2.0, 8.0])) < 3 * sd), (mean, sd)


def test_fixed_leaf_without_params_is_a_clear_error():
    m = HMM(2, PoissonEmissions(1))
    prior = HMMParams(None, None, PoissonParams(dist.Gamma(2.0, 0.4).expand([2, 1]).to_event(2)))
    fn = make_numpyro_model(m, prior=prior)
    with pytest.raises(ValueError, match="initial_probs"):
        numpyro.handlers.seed(fn, 0)(jnp.zeros((5, 1)))
