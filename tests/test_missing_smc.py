"""NaN is missing data in the SMC engine too: no reweighting at that step, the same as mask=False; ±inf refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pssm import simulate
from pssm.inference import kalman_log_likelihood
from pssm.inference.smc import paris, particle_filter
from pssm.models import LinearGaussianSSM

# one worker runs this file: its module fixtures are built once, not on both workers (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_missing_smc")

T, N = 20, 64


@pytest.fixture(scope="module")
def problem():
    lg = LinearGaussianSSM(1, 1)
    p = lg.make_params(dynamics_weights=[[0.8]], dynamics_cov=[[1.0]], emission_weights=[[1.0]], emission_cov=[[0.5]])
    _, y = simulate(jax.random.PRNGKey(0), lg, p, T)
    y_nan = y.at[7].set(jnp.nan).at[12].set(jnp.nan)
    mask = jnp.ones(T, bool).at[7].set(False).at[12].set(False)
    return lg, p, y, y_nan, mask


def test_nan_rows_equal_masked_rows_and_the_likelihood_stays_unbiased(problem):
    lg, p, y, y_nan, mask = problem
    a = particle_filter(jax.random.PRNGKey(1), lg, p, y_nan, N)
    b = particle_filter(jax.random.PRNGKey(1), lg, p, y, N, mask=mask)
    assert np.isfinite(float(a.log_likelihood)) and not bool(a.collapsed)
    np.testing.assert_array_equal(np.asarray(a.log_likelihood), np.asarray(b.log_likelihood))
    np.testing.assert_array_equal(np.asarray(a.ess), np.asarray(b.ess))
    # unbiased for the likelihood of the observed rows only (Kalman skips NaN rows): z-test over 300 runs
    exact = float(kalman_log_likelihood(p, y_nan))
    lls = jax.vmap(lambda k: particle_filter(k, lg, p, y_nan, N).log_likelihood)(
        jax.random.split(jax.random.key(2), 300)
    )
    ratio = np.exp(np.asarray(lls, np.float64) - exact)
    z = (ratio.mean() - 1.0) / (ratio.std(ddof=1) / np.sqrt(ratio.size))
    assert abs(z) < 4.0, (ratio.mean(), z)


def test_paris_with_nan_rows_equals_masked_and_is_finite(problem):
    lg, p, y, y_nan, mask = problem

    def h(xp, x, t):
        return x

    a = paris(jax.random.PRNGKey(3), lg, p, y_nan, N, h)
    b = paris(jax.random.PRNGKey(3), lg, p, y, N, h, mask=mask)
    assert np.isfinite(np.asarray(a.estimate)).all()
    np.testing.assert_array_equal(np.asarray(a.estimate), np.asarray(b.estimate))


def test_infinite_observations_are_refused(problem):
    lg, p, y, *_ = problem
    with pytest.raises(ValueError, match=r"±inf \(first at step 3\)"):
        particle_filter(jax.random.PRNGKey(0), lg, p, y.at[3].set(jnp.inf), N)
    with pytest.raises(ValueError, match="±inf"):
        paris(jax.random.PRNGKey(0), lg, p, y.at[5].set(-jnp.inf), N, lambda xp, x, t: x)
