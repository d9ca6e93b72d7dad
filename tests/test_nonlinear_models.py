"""Nonlinear models: simulators, transition bounds, and particle filters against brute-force grid filters."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from pssm.distributions import GaussianTril
from pssm.inference.smc import particle_filter
from pssm.models.nonlinear.models import (
    ChaoticRNN,
    KitagawaGrowth,
    Lorenz96,
    PoissonLDS,
    StochasticVolatility,
)
from pssm.protocol import simulate


def _grid_log_likelihood(model, params, ys, grid):
    """Exact-up-to-quadrature log p(y) of a scalar-state model by a dense grid (brute-force forward algorithm)."""
    dx = grid[1] - grid[0]
    t = jnp.arange(ys.shape[0])
    p0 = jnp.exp(model.initial(params).log_prob(grid)) * dx
    ll = 0.0
    trans = None
    for s in range(ys.shape[0]):
        if s > 0:
            trans = jax.vmap(lambda xp, s=s: jnp.exp(model.transition(params, xp, t[s]).log_prob(grid)) * dx)(grid)
            p0 = p0 @ trans
        lik = jnp.exp(jax.vmap(lambda x, s=s: model.emission(params, x, t[s]).log_prob(ys[s]))(grid))
        z = jnp.sum(p0 * lik)
        ll += jnp.log(z)
        p0 = p0 * lik / z
    return ll


@pytest.mark.parametrize(
    "model,grid",
    [(StochasticVolatility(), (-7.0, 5.0)), pytest.param(KitagawaGrowth(), (-35.0, 35.0), marks=pytest.mark.slow)],
    ids=["sv", "kitagawa"],
)
def test_scalar_models_pf_unbiased_vs_grid(x64, model, grid):
    params = model.make_params()
    _, ys = model.simulate(jax.random.key(0), params, 15)
    exact = _grid_log_likelihood(model, params, ys, jnp.linspace(*grid, 1500))
    keys = jax.random.split(jax.random.key(1), 200)
    ll = jax.vmap(lambda k: particle_filter(k, model, params, ys, 256).log_likelihood)(keys)
    r = np.asarray(jnp.exp(ll - exact))
    assert abs(r.mean() - 1) < 3 * r.std() / np.sqrt(r.size), (r.mean(), r.std())


@pytest.mark.parametrize(
    "model,make",
    [
        (StochasticVolatility(), lambda m: m.make_params()),
        (KitagawaGrowth(), lambda m: m.make_params()),
        (Lorenz96(state_dim=8, obs_every=2), lambda m: m.make_params()),
        (ChaoticRNN(state_dim=6, emission_dim=3), lambda m: m.make_params(jax.random.key(3))),
        (PoissonLDS(state_dim=2, num_neurons=5), lambda m: m.random_params(jax.random.key(4))),
    ],
    ids=["sv", "kitagawa", "lorenz96", "rnn", "plds"],
)
def test_simulate_shapes_bound_and_constraints(model, make):
    params = make(model)
    xs, ys = simulate(jax.random.key(5), model, params, 12)
    assert xs.shape[0] == ys.shape[0] == 12 and np.all(np.isfinite(np.asarray(xs)))
    # the bound holds for random pairs and is attained at the transition mean
    bound = model.log_transition_bound(params, jnp.asarray(3))
    d = model.transition(params, xs[4], jnp.asarray(3))
    assert float(d.log_prob(d.mean)) == pytest.approx(float(bound), rel=1e-5, abs=1e-5)
    lps = jax.vmap(lambda xp, x: model.transition(params, xp, jnp.asarray(3)).log_prob(x))(xs[:-1], xs[1:])
    assert np.all(np.asarray(lps) <= float(bound) + 1e-5)
    assert jax.tree.structure(model.param_constraints(), is_leaf=lambda c: not isinstance(c, tuple)).num_leaves == len(
        params
    )


def test_poisson_lds_filter_tracks_latents():
    model = PoissonLDS(state_dim=2, num_neurons=30)
    params = model.random_params(jax.random.key(6), base_rate=2.0)
    xs, ys = model.simulate(jax.random.key(7), params, 100)
    assert ys.dtype in (jnp.int32, jnp.int64, jnp.float32, jnp.float64) and np.all(np.asarray(ys) >= 0)
    res = particle_filter(jax.random.key(8), model, params, ys, 2000)
    assert np.isfinite(float(res.log_likelihood)) and not bool(res.collapsed)
    for k in range(2):
        assert np.corrcoef(np.asarray(res.filtered[:, k]), np.asarray(xs[:, k]))[0, 1] > 0.8


def test_lorenz96_fixed_point_and_filter_beats_observations():
    model = Lorenz96(state_dim=8)
    params = model.make_params(sigma_x=0.2, sigma_y=1.0)
    x_eq = jnp.full((8,), 8.0)
    np.testing.assert_allclose(model.flow(params, x_eq), x_eq, atol=1e-5)  # x_i = F is an equilibrium
    xs, ys = model.simulate(jax.random.key(9), params, 60)
    res = particle_filter(jax.random.key(10), model, params, ys, 2000)
    rmse_pf = float(jnp.sqrt(jnp.mean((res.filtered[10:] - xs[10:]) ** 2)))
    rmse_obs = float(jnp.sqrt(jnp.mean((ys[10:] - xs[10:]) ** 2)))
    assert rmse_pf < 0.8 * rmse_obs, (rmse_pf, rmse_obs)


def test_gaussian_tril_matches_numpyro_mvn(x64):
    k1, k2 = jax.random.split(jax.random.key(11))
    A = jax.random.normal(k1, (3, 3))
    cov = A @ A.T + 0.5 * jnp.eye(3)
    loc = jnp.array([0.5, -1.0, 2.0])
    d, ref = GaussianTril.from_cov(loc, cov), dist.MultivariateNormal(loc, cov)
    x = jax.random.normal(k2, (10, 3))
    np.testing.assert_allclose(jax.vmap(d.log_prob)(x), ref.log_prob(x), rtol=1e-10)
    s = d.sample(jax.random.key(12), (20_000,))
    np.testing.assert_allclose(jnp.cov(s.T), cov, atol=0.1 * float(jnp.max(cov)))
