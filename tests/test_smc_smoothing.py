"""Backward kernels, FFBSi, marginal smoothing and PaRIS against the RTS smoother and the exact Kalman score."""

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from test_smc_filter import ScalarLG, scalar_params

from pssm.arviz import to_arviz
from pssm.inference.exact.kalman import kalman_log_likelihood, kalman_smoother
from pssm.inference.smc import (
    AdditiveFunctional,
    ExactBackward,
    FeynmanKac,
    MCMCBackward,
    RejectionBackward,
    backward,
    marginal_smoother,
    paris,
    paris_init,
    paris_score,
    paris_step,
    particle_filter,
    particle_smoother,
    plot_smoothed_states,
)
from pssm.protocol import simulate

matplotlib.use("Agg")

T = 20


@pytest.fixture
def lg_data():
    """Data made in the test's own precision (request after ``x64`` where used)."""
    model, params = ScalarLG(), scalar_params()
    _, ys = simulate(jax.random.key(0), model, params, T)
    return model, params, ys


def _moments(x):
    return jnp.stack([x[0], x[0] ** 2])


def _fit_slope(ns, errs):
    return np.polyfit(np.log(ns), np.log(errs), 1)[0]


@pytest.mark.slow
def test_ffbsi_and_paris_errors_shrink_like_root_n(x64, lg_data):
    """Smoothed first and second moments vs RTS: RMSE ~ N^-1/2 (log-log slope in [-0.8, -0.3]).

    Two particle numbers 16x apart (each costs one compilation): a least-squares slope over three equally spaced
    log N has exactly the variance of the end-point slope (sum of squared deviations 2 (log 4)^2 either way), so the
    middle size added no power to the slope check."""
    model, params, ys = lg_data
    ks = kalman_smoother(params, ys)
    m, v = ks.smoothed_means[:, 0], ks.smoothed_covs[:, 0, 0]
    exact_sum = jnp.array([m.sum(), (v + m**2).sum()])
    fn = AdditiveFunctional.from_fn(lambda xp, x, t: _moments(x), _moments)
    ns, R = (64, 1024), 12
    err_paris, err_ffbsi = [], []
    for N in ns:

        def both(k, N=N):  # one compilation per N for both smoothers
            k1, k2 = jax.random.split(k)
            est = paris(k1, model, params, ys, N, fn).estimate
            traj = particle_smoother(k2, model, params, ys, N, N, backward=RejectionBackward()).trajectories
            return est, traj[..., 0]

        est, traj = jax.jit(jax.vmap(both))(jax.random.split(jax.random.key(N), R))
        err_paris.append(float(jnp.sqrt(jnp.mean((est - exact_sum) ** 2)) / T))
        e1 = traj.mean(1) - m
        e2 = (traj**2).mean(1) - (v + m**2)
        err_ffbsi.append(float(jnp.sqrt(jnp.mean(e1**2) + jnp.mean(e2**2))))
    sp, sf = _fit_slope(ns, err_paris), _fit_slope(ns, err_ffbsi)
    assert -0.8 < sp < -0.3, (sp, err_paris)
    assert -0.8 < sf < -0.3, (sf, err_ffbsi)
    assert err_paris[-1] < 0.05 and err_ffbsi[-1] < 0.2


def test_three_backward_kernels_agree(x64):
    """Index frequencies of each kernel vs the exact backward probabilities (total variation < 0.04)."""
    N, M, D = 16, 4, 10_000
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    xp = jax.random.normal(k1, (N, 1))
    lw = jax.random.normal(k2, (N,))
    xn = 0.9 * xp[:4] + 0.7 * jax.random.normal(k3, (M, 1))
    anc = jnp.array([0, 1, 2, 3])

    def lt(a, b):
        return jax.scipy.stats.norm.logpdf(b[0], 0.9 * a[0], 0.7)

    bound = jax.scipy.stats.norm.logpdf(0.0, 0.0, 0.7)
    exact = np.exp(np.asarray(jax.vmap(lambda x: backward.backward_log_weights(lt, xp, lw, x))(xn)))
    kernels = [
        ExactBackward(chunk_size=3),
        RejectionBackward(),
        RejectionBackward(num_proposals=1, fallback_chunk=3),
        MCMCBackward(num_steps=25),
    ]
    for kern in kernels:
        idx = jax.jit(lambda k: kern(k, lt, xp, lw, xn, anc, bound, D))(jax.random.key(7))  # noqa: B023
        assert idx.shape == (M, D)
        freq = np.stack([np.bincount(np.asarray(r), minlength=N) / D for r in idx])
        tv = 0.5 * np.abs(freq - exact).sum(1)
        assert np.all(tv < 0.04), (type(kern).__name__, tv)


def test_marginal_smoother_matches_rts(x64, lg_data):
    model, params, ys = lg_data
    ks = kalman_smoother(params, ys)
    # N=4000: the worst step's Monte Carlo sd is ~0.021 (0.043 at N=1000 over 40 keys), so atol 0.1 is ~4.7 sd
    fr = particle_filter(jax.random.key(2), model, params, ys, 4000, history=True)
    ms = marginal_smoother(model, params, fr.history, chunk_size=500)
    np.testing.assert_allclose(ms.means[:, 0], ks.smoothed_means[:, 0], atol=0.1)
    np.testing.assert_allclose(ms.variances[:, 0], ks.smoothed_covs[:, 0, 0], atol=0.1)
    np.testing.assert_allclose(jnp.exp(ms.log_weights).sum(1), 1.0, rtol=1e-8)
    idata = to_arviz(ms, observations=ys)
    assert set(idata.to_datatree().children) == set(idata.groups())  # ArviZ 1.x container
    assert {"smoothed_mean", "smoothed_lower", "smoothed_upper"} <= set(idata.posterior.data_vars)
    axes = plot_smoothed_states(ms, observations=ys)
    assert len(axes) == 1 and len(axes[0].lines) >= 2


def test_paris_score_matches_kalman_autodiff(x64):
    """PaRIS score (Fisher identity, jax.grad of log f + log g) vs jax.grad of the Kalman log-likelihood."""
    model, params = ScalarLG(), scalar_params()
    _, ys = simulate(jax.random.key(3), model, params, 30)
    exact = jax.grad(kalman_log_likelihood)(params, ys)
    R = 10
    est = jax.vmap(lambda k: paris_score(k, model, params, ys, 300).estimate)(jax.random.split(jax.random.key(4), R))
    for name, e, g in zip(params._fields, est, exact, strict=True):
        if g.size == 0:
            continue
        mean, se = np.asarray(e.mean(0)), np.asarray(e.std(0)) / np.sqrt(R)
        tol = 4 * se + 0.05 * np.abs(np.asarray(g)) + 0.02
        assert np.all(np.abs(mean - np.asarray(g)) < tol), (name, mean, se, g)


def test_paris_streaming_equals_offline_and_results(lg_data):
    """init/step by hand reproduce the scan (same key schedule); O(N) state independent of T; ArviZ output."""
    model, params, ys = lg_data
    fn = AdditiveFunctional.from_fn(lambda xp, x, t: xp[0] * x[0])
    kern = MCMCBackward()
    res = paris(jax.random.key(5), model, params, ys, 128, fn, backward=kern, return_estimates=True)
    np.testing.assert_allclose(res.estimates[-1], res.estimate, rtol=1e-6)
    k0, key = jax.random.split(jax.random.key(5))
    fk = FeynmanKac.bootstrap(model)
    state, _ = jax.jit(lambda k: paris_init(k, fk, params, ys[0], 128, fn))(k0)
    step = jax.jit(lambda k, s, y: paris_step(k, s, fk, params, y, functional=fn, backward=kern)[0])
    for k, y in zip(jax.random.split(key, T - 1), ys[1:], strict=True):
        state = step(k, state, y)
    np.testing.assert_allclose(state.tau, res.final_state.tau, rtol=1e-5)
    # memory: the carried state has the same shapes whatever the length of the data
    shapes = [
        jax.eval_shape(
            lambda y: paris(jax.random.key(0), model, params, y, 128, fn).final_state,  # noqa: B023
            jnp.zeros((n, 1)),
        )
        for n in (10, 10_000)
    ]
    assert jax.tree.map(lambda a: a.shape, shapes[0]) == jax.tree.map(lambda a: a.shape, shapes[1])
    idata = to_arviz(res)
    assert set(idata.to_datatree().children) == set(idata.groups())  # ArviZ 1.x container
    assert "ess" in idata.sample_stats and "estimate" in idata.posterior


def test_ffbsi_results_to_arviz_and_plot(lg_data):
    model, params, ys = lg_data
    res = particle_smoother(jax.random.key(6), model, params, ys, 200, 50)
    assert res.trajectories.shape == (50, T, 1) and np.isfinite(float(res.log_likelihood))
    xs = jnp.zeros((T, 1))
    idata = to_arviz(res, observations=ys, truth=xs)
    assert set(idata.to_datatree().children) == set(idata.groups())  # ArviZ 1.x container
    assert idata.posterior["x"].shape == (1, 50, T, 1)
    axes = plot_smoothed_states(res, truth=xs, observations=ys)
    assert len(axes[0].lines) == 3
