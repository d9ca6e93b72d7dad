"""Conditional SMC leaves the smoothing distribution invariant (exact draws in, one sweep, marginals unchanged)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from pssm.inference import kalman_posterior_sample, kalman_smoother
from pssm.inference.chunked import run_chunked
from pssm.inference.mcmc.csmc import CSMCResult, conditional_smc, csmc_kernel
from pssm.inference.smc import ExactBackward, FeynmanKac, RejectionBackward, particle_smoother
from pssm.models import LinearGaussianSSM
from pssm.models.testing import ScalarLinearGaussian as ScalarLG
from pssm.protocol import simulate

# one worker runs this file: its module fixtures are built once, not on both workers (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_csmc")


def _problem(T=15):
    lg = LinearGaussianSSM(1, 1)
    p = lg.make_params(dynamics_weights=[[0.9]], dynamics_cov=[[1.0]], emission_weights=[[1.0]], emission_cov=[[0.1]])
    _, y = simulate(jax.random.PRNGKey(0), lg, p, T)
    return p, y


def _invariance_z(new, refs, sm):
    """max |z| of (a) paired tests E[new - ref] = 0 for x and x^2 (powerful: pairs are correlated) and
    (b) unpaired tests of new against the exact smoothed mean and variance."""
    M = new.shape[0]
    z = []
    for f in (lambda a: a, lambda a: a**2):
        d = f(new) - f(refs)
        sd = d.std(0)
        ok = sd > 0
        z.append(np.where(ok, d.mean(0) / np.where(ok, sd, 1.0) * np.sqrt(M), 0.0))
    mu, var = np.asarray(sm.smoothed_means[:, 0]), np.asarray(sm.smoothed_covs[:, 0, 0])
    z.append((new.mean(0) - mu) / np.sqrt(var / M))
    z.append((new.var(0) - var) / (var * np.sqrt(2.0 / M)))
    return float(np.max(np.abs(np.stack(z))))


@pytest.fixture(scope="module")
def exact_draws():
    p, y = _problem()
    sm = kalman_smoother(p, y)
    refs = jax.jit(jax.vmap(lambda k: kalman_posterior_sample(k, p, y)))(jax.random.split(jax.random.PRNGKey(1), 4000))
    return p, y, sm, refs


@pytest.mark.parametrize("method,backward", [("ancestor", None), ("backward", RejectionBackward()), ("trace", None)])
def test_csmc_leaves_smoothing_distribution_invariant(exact_draws, method, backward):
    """4000 exact posterior paths, one CSMC sweep each with N=3 (a stressed filter); 4 z-tests per step, |z| < 4.5
    over 60 statistics (per-test two-sided p ~ 7e-6)."""
    p, y, sm, refs = exact_draws
    M = refs.shape[0]
    fk = FeynmanKac.bootstrap(ScalarLG())
    step = jax.jit(jax.vmap(lambda k, r: csmc_kernel(k, fk, p, y, r, 3, method=method, backward=backward)[0]))
    new = np.asarray(step(jax.random.split(jax.random.PRNGKey(2), M), refs))[..., 0]
    refs = np.asarray(refs)[..., 0]
    assert _invariance_z(new, refs, sm) < 4.5
    moved = np.mean(new != refs)
    assert moved > (0.005 if method == "trace" else 0.2)  # the kernel does move the path


def test_invariance_check_detects_a_biased_smoother(exact_draws):
    """Negative control: FFBSi paths from an unconditional N=3 filter are not exact posterior draws."""
    p, y, sm, refs = exact_draws
    M = refs.shape[0]
    refs = np.asarray(refs)[..., 0]
    m = ScalarLG()
    draw = jax.jit(jax.vmap(lambda k: particle_smoother(k, m, p, y, 3, 1).trajectories[0]))
    bad = np.asarray(draw(jax.random.split(jax.random.PRNGKey(3), M)))[..., 0]
    assert _invariance_z(bad, refs, sm) > 6.0


def test_guided_conditional_smc_with_ancestor_sampling_is_invariant(exact_draws):
    """A user proposal q(x_t | x_{t-1}, y_t) = N((F x_{t-1} + y_t) / 2, 0.5) (guided FK: weights f g / q), PGAS."""
    p, y, sm, refs = exact_draws
    M = refs.shape[0]

    def proposal(params, x_prev, t, y_t, u):
        return dist.Normal(0.5 * (params.dynamics_weights[0] * x_prev + y_t), jnp.sqrt(0.5)).to_event(1)

    fk = FeynmanKac.guided(ScalarLG(), proposal)
    new = jax.jit(jax.vmap(lambda k, r: csmc_kernel(k, fk, p, y, r, 3)[0]))(
        jax.random.split(jax.random.PRNGKey(8), M), refs
    )
    assert _invariance_z(np.asarray(new)[..., 0], np.asarray(refs)[..., 0], sm) < 4.5


def test_conditional_smc_result_and_float32_and_validation(x32):
    p, y = _problem(T=12)
    m = ScalarLG()
    ref = jnp.zeros((12, 1), jnp.float32)
    r = conditional_smc(jax.random.PRNGKey(0), m, p, y, ref, 8, method="backward", backward=ExactBackward())
    assert isinstance(r, CSMCResult)
    assert r.path.shape == (12, 1) and r.path.dtype == jnp.float32
    assert r.history.particles.shape == (12, 8, 1) and r.ess.shape == (12,)
    assert np.all(np.asarray(r.history.particles[:, 0, 0]) == 0.0)  # slot 0 holds the reference
    assert np.isfinite(r.log_likelihood)
    # the path is made of particles of the sweep
    np.testing.assert_array_equal(r.path[:, 0], r.history.particles[jnp.arange(12), r.indices, 0])
    with pytest.raises(ValueError, match="method"):
        conditional_smc(jax.random.PRNGKey(0), m, p, y, ref, 8, method="pg")
    with pytest.raises(ValueError, match="reference"):
        conditional_smc(jax.random.PRNGKey(0), m, p, y, ref[:5], 8)
    with pytest.raises(ValueError, match="num_particles"):
        conditional_smc(jax.random.PRNGKey(0), m, p, y, ref, 1)
    with pytest.raises(TypeError, match="key"):
        conditional_smc(None, m, p, y, ref, 8)
    with pytest.raises(ValueError, match="backward"):
        conditional_smc(jax.random.PRNGKey(0), m, p, y, ref, 8, method="ancestor", backward=ExactBackward())
    with pytest.raises(ValueError, match="mask"):
        conditional_smc(jax.random.PRNGKey(0), m, p, y, ref, 8, mask=jnp.ones(3, bool))


def test_run_chunked_equals_one_scan_and_pads_the_last_chunk():
    def step(k, c):
        c = c + jax.random.normal(k)
        return c, c

    c1, out1 = run_chunked(step, jnp.zeros(()), jax.random.PRNGKey(0), 7, chunk_size=3)
    c2, out2 = run_chunked(step, jnp.zeros(()), jax.random.PRNGKey(0), 7, chunk_size=7)
    assert out1.shape == (7,)
    np.testing.assert_allclose(out1, out2, rtol=1e-6)
    np.testing.assert_allclose(c1, out1[-1], rtol=1e-6)
