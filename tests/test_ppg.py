"""PaRIS particle Gibbs: the frozen-path refresh keeps the posterior invariant and PPG removes PaRIS's bias."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pssm import to_arviz
from pssm.inference import kalman_log_likelihood, kalman_posterior_sample, kalman_smoother
from pssm.inference.mcmc.ppg import PPGResult, PPGState, paris_particle_gibbs, paris_sweep, ppg_step
from pssm.inference.smc import AdditiveFunctional, ExactBackward, FeynmanKac, paris, score_functional
from pssm.models import LinearGaussianSSM
from pssm.models.testing import ScalarLinearGaussian as ScalarLG
from pssm.protocol import simulate


def _params(rho=0.9, sx=1.0, sy=0.5):
    return LinearGaussianSSM(1, 1).make_params(
        dynamics_weights=[[rho]], dynamics_cov=[[sx**2]], emission_weights=[[1.0]], emission_cov=[[sy**2]]
    )


def test_ppg_refresh_leaves_smoothing_distribution_invariant():
    """Exact posterior paths as frozen paths, one PPG iteration (N=4, Ñ=2), refreshed paths: paired z-tests of the
    first two moments at every step and unpaired tests against the RTS moments, |z| < 4.5 (40 statistics)."""
    p = _params(sy=0.3)
    T, M = 10, 3000
    _, y = simulate(jax.random.PRNGKey(0), LinearGaussianSSM(1, 1), p, T)
    sm = kalman_smoother(p, y)
    refs = jax.jit(jax.vmap(lambda k: kalman_posterior_sample(k, p, y)))(jax.random.split(jax.random.PRNGKey(1), M))
    fk = FeynmanKac.bootstrap(ScalarLG())
    h = AdditiveFunctional.from_fn(lambda xp, x, t: jnp.zeros(()))  # the refresh does not depend on h
    kern = ExactBackward()
    one = jax.jit(jax.vmap(lambda k, r: ppg_step(k, PPGState(r), fk, p, y, h, 4, backward=kern)[0].frozen_path))
    new = np.asarray(one(jax.random.split(jax.random.PRNGKey(2), M), refs))[..., 0]
    refs = np.asarray(refs)[..., 0]
    z = []
    for f in (lambda a: a, lambda a: a**2):
        d = f(new) - f(refs)
        z.append(d.mean(0) / d.std(0) * np.sqrt(M))
    mu, var = np.asarray(sm.smoothed_means[:, 0]), np.asarray(sm.smoothed_covs[:, 0, 0])
    z.append((new.mean(0) - mu) / np.sqrt(var / M))
    z.append((new.var(0) - var) / (var * np.sqrt(2.0 / M)))
    assert np.max(np.abs(np.stack(z))) < 4.5
    assert np.mean(new != refs) > 0.2


@pytest.mark.slow
def test_ppg_bias_of_the_score_is_at_most_a_fifth_of_paris_bias():
    """DESIGN §2 model (scalar LG rho=0.9, sigma_x=1, sigma_y=0.5, Ñ=2) at half its size, T=100 and N=25 (the same
    T/N, which sets PaRIS's O(T/N) bias); target d log p(y)/d rho by autodiff of the Kalman log-likelihood.  The
    bias of one data set varies a lot (PaRIS +0.2 to +4.6 over data seeds 3, 7, 11, 13, in float32 and float64), so
    it is averaged over four data sets: per data set PaRIS 100 replicates, PPG 40 replicates of k=40 iterations,
    k0=10.  Checks: PaRIS's mean bias is significant (> 3 se), |PPG mean bias| <= PaRIS's / 5, and the reduction is
    significant (> 3 combined se); the tolerances are in the runs' own standard errors.  Calibration (200 PaRIS
    replicates per data set): PaRIS +2.27 (float32) / +1.76 (float64) +- 0.1, PPG +0.15 / +0.16 +- 0.07.  Larger
    runs: benchmarks/ppg_bias.py."""
    p = _params()
    T, N, seeds = 100, 25, (3, 7, 11, 13)
    ys = jnp.stack([simulate(jax.random.PRNGKey(s), LinearGaussianSSM(1, 1), p, T)[1] for s in seeds])
    score = jax.grad(lambda r, y: kalman_log_likelihood(p._replace(dynamics_weights=r), y))
    true = np.array([float(score(p.dynamics_weights, y)[0, 0]) for y in ys])
    m = ScalarLG()
    h = score_functional(m, p)
    pick = lambda est: est.dynamics_weights[0, 0]  # noqa: E731
    kern = ExactBackward()
    fk = FeynmanKac.bootstrap(m)

    def paris_one(k, y):
        return pick(paris(k, m, p, y, N, h, resampling="multinomial", ess_threshold=1.0, backward=kern).estimate)

    def ppg_one(k, y):
        k1, k2 = jax.random.split(k)
        r = paris_sweep(k1, fk, p, y, h, N, store=True, backward=kern)

        def body(st, kk):
            st, info = ppg_step(kk, st, fk, p, y, h, N, backward=kern)
            return st, pick(info.estimate)

        _, ests = jax.lax.scan(body, PPGState(r.path), jax.random.split(k2, 39))
        return jnp.concatenate([pick(r.estimate)[None], ests])[10:].mean()

    def replicate(fn, key, n):  # (data set, replicate) estimates, one program for all data sets
        per_data = jax.vmap(lambda k, y: jax.vmap(lambda kk: fn(kk, y))(jax.random.split(k, n)))
        return np.asarray(jax.jit(per_data)(jax.random.split(key, len(seeds)), ys), np.float64)

    def mean_bias(e):  # mean over data sets of each set's bias, and its standard error
        return float((e.mean(1) - true).mean()), float(np.sqrt((e.var(1, ddof=1) / e.shape[1]).sum()) / len(seeds))

    paris_bias, paris_se = mean_bias(replicate(paris_one, jax.random.PRNGKey(4), 100))
    ppg_bias, ppg_se = mean_bias(replicate(ppg_one, jax.random.PRNGKey(5), 40))
    info = (ppg_bias, ppg_se, paris_bias, paris_se)
    assert paris_bias > 3 * paris_se, info
    assert abs(ppg_bias) <= paris_bias / 5, info
    assert paris_bias - abs(ppg_bias) > 3 * np.hypot(paris_se, ppg_se), info  # the reduction is significant


def test_paris_particle_gibbs_api_resume_arviz_and_validation():
    p = _params()
    T = 30
    _, y = simulate(jax.random.PRNGKey(6), LinearGaussianSSM(1, 1), p, T)
    m = ScalarLG()
    h = AdditiveFunctional.from_fn(lambda xp, x, t: x * xp, lambda x0: x0**2)  # S = x_0^2 + sum_t x_t x_{t-1}
    r = paris_particle_gibbs(
        jax.random.PRNGKey(7),
        m,
        p,
        y,
        functional=h,
        num_particles=16,
        num_iters=6,
        burn_in=2,
        backward=ExactBackward(),
        store_paths=True,
        chunk_size=4,
    )
    assert isinstance(r, PPGResult)
    assert r.estimates.shape == (6, 1) and r.paths.shape == (6, T, 1)
    np.testing.assert_allclose(r.estimate, r.estimates[2:].mean(0), rtol=1e-5)
    np.testing.assert_array_equal(r.paths[-1], r.state.frozen_path)
    # the estimates target E[S | y]: exact value from the RTS smoother (loose: 6 iterations at N=16; over 30 keys
    # the error has mean 0.03 and sd 1.8, so the bound is 4.5 sd)
    sm = kalman_smoother(p, y)
    m_, P, C = sm.smoothed_means[:, 0], sm.smoothed_covs[:, 0, 0], sm.smoothed_cross_covs[:, 0, 0]
    exact = float(m_[0] ** 2 + P[0] + jnp.sum(m_[1:] * m_[:-1] + C))
    assert abs(float(r.estimate[0]) - exact) < 8.2
    idata = to_arviz(r)
    assert set(idata.to_datatree().children) == set(idata.groups())  # ArviZ 1.x container
    assert isinstance(idata, az.InferenceData)
    assert idata.posterior["path"].dims == ("chain", "draw", "time", "latent_dim")
    assert idata.posterior["estimate"].shape == (1, 6, 1)
    assert set(idata.sample_stats.data_vars) == {"log_likelihood_estimate", "ess"}
    kw = dict(functional=h, num_particles=16, num_iters=5)
    with pytest.raises(ValueError, match="burn_in"):
        paris_particle_gibbs(jax.random.PRNGKey(7), m, p, y, burn_in=5, **kw)
    with pytest.raises(ValueError, match="num_backward"):
        paris_particle_gibbs(jax.random.PRNGKey(7), m, p, y, burn_in=1, num_backward=0, **kw)
    with pytest.raises(ValueError, match="frozen_path"):
        paris_particle_gibbs(jax.random.PRNGKey(7), m, p, y, burn_in=1, state=PPGState(jnp.zeros((3, 1))), **kw)
    with pytest.raises(TypeError, match="key"):
        paris_particle_gibbs(0, m, p, y, burn_in=1, **kw)
