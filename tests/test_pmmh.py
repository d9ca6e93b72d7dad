"""PMMH with an adaptive random walk matches the exact posterior of a linear Gaussian model."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import log_density

from pssm import to_arviz
from pssm.inference.mcmc.pmmh import ParamSpace, PMMHResult, pmmh
from pssm.inference.numpyro_model import sample_params
from pssm.models import LinearGaussianSSM, StochasticVolatility
from pssm.models.testing import ScalarLinearGaussian as ScalarLG
from pssm.models.testing import scalar_kalman_log_likelihood as scalar_kalman_ll
from pssm.protocol import simulate

A0, B0 = 3.0, 2.0
T = 60


@pytest.fixture(scope="module")
def problem():
    lg = LinearGaussianSSM(1, 1)
    p = lg.make_params(dynamics_weights=[[0.8]], dynamics_cov=[[1.0]], emission_weights=[[1.0]], emission_cov=[[0.25]])
    _, y = simulate(jax.random.PRNGKey(0), lg, p, T)
    prior = p._replace(**{k: None for k in p._fields})._replace(
        dynamics_weights=dist.Normal(0.0, 1.0).expand([1, 1]).to_event(2),
        dynamics_cov=dist.InverseGamma(A0, B0).expand([1, 1]).to_event(2),
    )
    return p, y, prior


def exact_moments(y):
    """Posterior mean and sd of (rho, q) by quadrature of the exact Kalman likelihood on a fine grid."""
    rho = jnp.linspace(0.0, 1.4, 281)
    q = jnp.linspace(0.05, 3.5, 346)
    R, Q = jnp.meshgrid(rho, q, indexing="ij")
    ll = jax.jit(jax.vmap(lambda a, b: scalar_kalman_ll(a, b, 0.25, y)))(R.ravel(), Q.ravel()).reshape(R.shape)
    lp = ll + dist.Normal(0.0, 1.0).log_prob(R) + dist.InverseGamma(A0, B0).log_prob(Q)
    w = np.exp(np.asarray(lp - lp.max(), np.float64))
    w /= w.sum()
    out = {}
    for name, g in (("dynamics_weights", np.asarray(R)), ("dynamics_cov", np.asarray(Q))):
        m = (w * g).sum()
        out[name] = (m, np.sqrt((w * (g - m) ** 2).sum()))
    return out


@pytest.mark.slow
def test_pmmh_matches_exact_posterior_within_mcse(problem):
    """4 chains x 2500 draws (N=60 particles, 500 adaptive warm-up steps): means and sds within 4 MCSEs (ArviZ)
    of the exact posterior (quadrature of the Kalman likelihood, which is also what NUTS targets)."""
    p, y, prior = problem
    r = pmmh(
        jax.random.PRNGKey(1),
        ScalarLG(),
        p,
        y,
        prior=prior,
        num_samples=2500,
        num_particles=60,
        num_warmup=500,
        num_chains=4,
        chunk_size=500,
    )
    assert isinstance(r, PMMHResult)
    assert np.all((r.acceptance_rate > 0.05) & (r.acceptance_rate < 0.6)), r.acceptance_rate
    idata = to_arviz(r)
    assert set(idata.to_datatree().children) == set(idata.groups())  # ArviZ 1.x container
    assert {"accepted", "log_likelihood_estimate", "ess"} <= set(idata.sample_stats.data_vars)
    assert idata.posterior["dynamics_weights"].shape == (4, 2500, 1, 1)
    exact = exact_moments(y)
    for v, (m, s) in exact.items():
        draws = idata.posterior[v].values.reshape(-1)
        se_m = az.mcse(idata, var_names=[v])[v].values.item()
        se_s = az.mcse(idata, var_names=[v], method="sd")[v].values.item()
        assert abs(draws.mean() - m) < 4 * se_m, (v, draws.mean(), m, se_m)
        assert abs(draws.std() - s) < 4 * se_s, (v, draws.std(), s, se_s)
    # resume from the returned state: no warm-up, the adapted proposal is kept
    r2 = pmmh(
        jax.random.PRNGKey(2),
        ScalarLG(),
        p,
        y,
        prior=prior,
        num_samples=3,
        num_particles=60,
        num_warmup=0,
        num_chains=4,
        state=r.state,
    )
    np.testing.assert_allclose(r2.proposal_cov, r.proposal_cov, rtol=1e-6)


def test_param_space_log_prior_is_numpyro_unconstrained_density(problem):
    p, _, prior = problem
    space = ParamSpace(prior, p)
    assert space.names == ["dynamics_weights", "dynamics_cov"] and space.dim == 2
    u = jnp.array([0.3, -0.4])
    sites = space.to_sites(u)
    np.testing.assert_allclose(sites["dynamics_cov"], np.exp(-0.4) * np.ones((1, 1)), rtol=1e-6)
    np.testing.assert_allclose(space.from_sites(sites), u, rtol=1e-6)
    params = space.to_params(u)
    assert params.emission_cov.shape == (1, 1) and float(params.dynamics_weights[0, 0]) == pytest.approx(0.3)
    # density of u = prior density of T(u) times |dT/du|  (q = exp(u): Jacobian exp(u))
    lp_sites, _ = log_density(lambda: sample_params(prior, p), (), {}, sites)
    np.testing.assert_allclose(space.log_prior(u), lp_sites + (-0.4), rtol=1e-5)


def test_pmmh_validation(problem):
    p, y, prior = problem
    m = ScalarLG()
    kw = dict(num_samples=2, num_particles=10)
    with pytest.raises(ValueError, match="proposal_cov"):
        pmmh(jax.random.PRNGKey(0), m, p, y, prior=prior, proposal_cov=jnp.eye(3), **kw)
    with pytest.raises(ValueError, match="nothing is left to sample"):  # ScalarLG's param_spec has no priors
        pmmh(jax.random.PRNGKey(0), m, p, y, **kw)
    with pytest.raises(ValueError, match="frozen"):
        pmmh(jax.random.PRNGKey(0), m, p, y, prior=prior, frozen=("emission_cov",), **kw)
    with pytest.raises(ValueError, match="init is missing"):
        pmmh(jax.random.PRNGKey(0), m, p, y, prior=prior, init={"dynamics_cov": 1.0}, **kw)
    with pytest.raises(ValueError, match="num_warmup"):
        pmmh(jax.random.PRNGKey(0), m, p, y, prior=prior, num_warmup=-1, **kw)
    with pytest.raises(ValueError, match="resampling"):
        pmmh(jax.random.PRNGKey(0), m, p, y, prior=prior, resampling="nope", **kw)


def test_pmmh_spec_prior_holds_frozen_leaves_bit_for_bit():
    """prior=None: the stochastic-volatility spec priors (all three leaves) with ``phi`` frozen — phi is no site, every
    draw's params carry the given phi bit for bit, and the other leaves move."""
    sv = StochasticVolatility()
    p = sv.make_params(mu=-1.0, phi=0.9, sigma=0.4)
    _, y = simulate(jax.random.PRNGKey(3), sv, p, 40)
    r = pmmh(
        jax.random.PRNGKey(4), sv, p, y, frozen=("phi",), num_samples=30, num_particles=32, num_warmup=10, num_chains=2
    )
    assert r.names == ["mu", "sigma"] and set(r.samples) == {"mu", "sigma"}
    assert r.params.phi.shape == (2, 30)
    assert np.all(r.params.phi == np.asarray(p.phi)) and r.params.phi.dtype == np.asarray(p.phi).dtype
    np.testing.assert_array_equal(r.params.mu, r.samples["mu"])
    assert np.ptp(r.samples["mu"]) > 0 and np.ptp(r.samples["sigma"]) > 0
    with pytest.raises(ValueError, match="nothing is left to sample"):
        pmmh(jax.random.PRNGKey(4), sv, p, y, frozen=("*",), num_samples=2, num_particles=8)
