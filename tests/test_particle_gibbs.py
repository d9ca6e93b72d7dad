"""Particle Gibbs (conjugate and NUTS-within-Gibbs) matches NUTS on the exact Kalman marginal likelihood."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS

from pssm import to_arviz
from pssm.inference import kalman_log_likelihood
from pssm.inference.mcmc.csmc import csmc_kernel
from pssm.inference.mcmc.particle_gibbs import (
    ParticleGibbsResult,
    make_csmc_gibbs_fn,
    mcmc_to_arviz,
    particle_gibbs,
    particle_gibbs_nuts,
)
from pssm.inference.numpyro_model import sample_params
from pssm.models import LinearGaussianSSM
from pssm.models.testing import ScalarLinearGaussian as ScalarLG
from pssm.models.testing import posterior_max_z, scalar_lg_conjugate_conditional
from pssm.models.testing import scalar_kalman_log_likelihood as scalar_kalman_ll
from pssm.protocol import simulate

# one worker runs this file: its module fixtures are built once, not on both workers (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_particle_gibbs")

A0, B0 = 3.0, 2.0  # inverse-gamma prior on the transition variance q
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
    np.testing.assert_allclose(
        scalar_kalman_ll(0.7, 1.3, 0.25, y),
        kalman_log_likelihood(p._replace(dynamics_weights=jnp.array([[0.7]]), dynamics_cov=jnp.array([[1.3]])), y),
        rtol=1e-4,
    )
    return p, y, prior


@pytest.fixture(scope="module")
def reference(problem):
    """NUTS on the exact (Kalman) likelihood: the posterior the particle Gibbs samplers must match."""
    p, y, prior = problem

    def exact_model(y):
        pp = sample_params(prior, p)
        numpyro.factor("ll", scalar_kalman_ll(pp.dynamics_weights[0, 0], pp.dynamics_cov[0, 0], 0.25, y))

    mc = MCMC(
        NUTS(exact_model), num_warmup=300, num_samples=1000, num_chains=2, chain_method="vectorized", progress_bar=False
    )
    mc.run(jax.random.PRNGKey(1), y)
    return az.from_numpyro(mc)


VARS = ["dynamics_weights", "dynamics_cov"]


def max_z(idata, ref):
    """Largest |z| of posterior mean and sd differences, standardised by the two MCSEs (ArviZ)."""
    return posterior_max_z(idata, ref, VARS)


def conditional(key, path, y, pp):
    """Conjugate draws: rho | x, q ~ Normal; q | x, rho ~ InverseGamma (prior A0, B0)."""
    return scalar_lg_conjugate_conditional(key, path, y, pp, A0, B0)


@pytest.mark.slow
def test_conjugate_particle_gibbs_matches_nuts_on_the_kalman_likelihood(problem, reference):
    """PGAS (N=15) with conjugate θ-updates, 4 chains x 1500: means and sds within 4 combined MCSEs of NUTS."""
    (p, y, _), ref = problem, reference
    r = particle_gibbs(
        jax.random.PRNGKey(2),
        ScalarLG(),
        p,
        y,
        conditional=conditional,
        num_samples=1500,
        num_particles=15,
        num_chains=4,
        num_warmup=100,
        chunk_size=400,
    )
    assert isinstance(r, ParticleGibbsResult)
    idata = to_arviz(r, var_names=VARS)
    assert set(idata.to_datatree().children) == set(idata.groups())  # ArviZ 1.x container
    assert idata.posterior["path"].dims == ("chain", "draw", "time", "latent_dim")
    assert idata.posterior["path"].shape == (4, 1500, T, 1)
    assert {"log_likelihood_estimate", "ess", "path_update_rate"} <= set(idata.sample_stats.data_vars)
    assert float(idata.sample_stats["path_update_rate"].mean()) > 0.5
    assert max_z(idata, ref) < 4.0
    # resume: one more short run from the returned state continues every chain
    r2 = particle_gibbs(
        jax.random.PRNGKey(3),
        ScalarLG(),
        None,
        y,
        conditional=conditional,
        num_samples=5,
        num_particles=15,
        num_chains=4,
        state=r.state,
        chunk_size=400,
        store_paths=False,
    )
    assert r2.params.dynamics_weights.shape == (4, 5, 1, 1) and r2.paths is None


@pytest.mark.slow
def test_particle_gibbs_with_nuts_through_numpyro_hmcgibbs(problem, reference):
    """HMCGibbs(NUTS on θ | path, CSMC backward sampling on the path), 2 chains x 500: within 4 MCSEs of NUTS."""
    (p, y, prior), ref = problem, reference
    mcmc = particle_gibbs_nuts(
        jax.random.PRNGKey(4),
        ScalarLG(),
        p,
        y,
        prior=prior,
        num_particles=15,
        num_warmup=200,
        num_samples=500,
        num_chains=2,
        method="backward",
    )
    idata = mcmc_to_arviz(mcmc)
    assert set(idata.to_datatree().children) == set(idata.groups())  # ArviZ 1.x container
    assert idata.posterior["path"].dims == ("chain", "draw", "time", "latent_dim")
    assert idata.posterior["path"].shape == (2, 500, T, 1)
    assert max_z(idata, ref) < 4.0


def test_particle_gibbs_validation(problem):
    p, y, prior = problem
    m = ScalarLG()
    kw = dict(num_samples=10, num_particles=10)
    with pytest.raises(TypeError, match="conditional"):
        particle_gibbs(jax.random.PRNGKey(0), m, p, y, conditional=None, **kw)
    with pytest.raises(ValueError, match="num_chains"):
        particle_gibbs(jax.random.PRNGKey(0), m, p, y, conditional=conditional, num_chains=0, **kw)
    with pytest.raises(ValueError, match="method"):
        particle_gibbs(jax.random.PRNGKey(0), m, p, y, conditional=conditional, method="foo", **kw)
    with pytest.raises(TypeError, match="params is None"):
        particle_gibbs(jax.random.PRNGKey(0), m, None, y, conditional=conditional, **kw)
    nuts_kw = dict(num_particles=10, num_warmup=1, num_samples=1)
    with pytest.raises(ValueError, match="frozen"):
        particle_gibbs_nuts(jax.random.PRNGKey(0), m, p, y, prior=prior, frozen=("emission_cov",), **nuts_kw)
    with pytest.raises(ValueError, match="nothing is left"):
        particle_gibbs_nuts(jax.random.PRNGKey(0), m, p, y, frozen=("*",), **nuts_kw)
    with pytest.raises(KeyError, match="dynamics_weights"):
        particle_gibbs_nuts(jax.random.PRNGKey(0), m, p, y, frozen=("nope",), **nuts_kw)
    with pytest.raises(ValueError, match="2 time steps"):
        particle_gibbs_nuts(jax.random.PRNGKey(0), m, p, y[:1], prior=prior, **nuts_kw)


def test_particle_gibbs_nuts_spec_path_holds_frozen_leaves(problem):
    """prior=None: the sites are the trainable leaves of the model's param_spec; frozen leaves are not sites and the
    Gibbs function rebuilds them from params bit for bit."""
    p, y, _ = problem
    m = ScalarLG()
    frozen = tuple(f for f in p._fields if f not in VARS)
    mcmc = particle_gibbs_nuts(
        jax.random.PRNGKey(5), m, p, y[:20], frozen=frozen, num_particles=8, num_warmup=5, num_samples=5, num_chains=1
    )
    s = mcmc.get_samples()
    assert set(s) == {"dynamics_weights", "dynamics_cov", "x_0", "x"}
    assert s["dynamics_weights"].shape == (5, 1, 1) and s["x"].shape == (5, 19, 1)
    gibbs_fn = make_csmc_gibbs_fn(m, p, y[:20], num_particles=8, frozen=frozen)
    sites = {"dynamics_weights": jnp.array([[0.3]]), "dynamics_cov": jnp.array([[2.0]])}
    seen = {}

    def spy(key, fk, params, *args, **kwargs):
        seen["params"] = params
        return csmc_kernel(key, fk, params, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pssm.inference.mcmc.particle_gibbs.csmc_kernel", spy)
        out = gibbs_fn(jax.random.PRNGKey(0), {"x_0": jnp.zeros(1), "x": jnp.zeros((19, 1))}, sites)
    assert out["x"].shape == (19, 1)
    got = seen["params"]
    assert float(got.dynamics_weights[0, 0]) == pytest.approx(0.3) and float(got.dynamics_cov[0, 0]) == 2.0
    for f in frozen:
        np.testing.assert_array_equal(getattr(got, f), getattr(p, f))
