"""Particle filters and resampling: unbiasedness against Kalman, resampling statistics, reproducibility."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from pssm.arviz import to_arviz
from pssm.inference.exact.kalman import kalman_filter
from pssm.inference.smc import (
    RESAMPLERS,
    FeynmanKac,
    filter_init,
    filter_step,
    particle_filter,
    resampling,
)
from pssm.models.nonlinear.linear_gaussian import LinearGaussianSSM
from pssm.models.testing import ScalarLinearGaussian as ScalarLG
from pssm.protocol import SSM, simulate


def scalar_params(rho=0.9, q=1.0, r=0.25, m0=0.0, p0=1.0):
    return LinearGaussianSSM(1, 1).make_params(
        dynamics_weights=[[rho]],
        dynamics_cov=[[q]],
        emission_weights=[[1.0]],
        emission_cov=[[r]],
        initial_mean=[m0],
        initial_cov=[[p0]],
    )


# ----------------------------------------------------------------------------------------------- resampling
@pytest.mark.parametrize("name", sorted(RESAMPLERS))
def test_resampling_counts_have_expectation_nw(name):
    """E[n_i] = N w_i: z-test per particle over R repeats (|z| < 4.5), zero weights never drawn."""
    w = np.array([0.3, 0.0, 0.05, 0.2, 0.0, 0.125, 0.0, 0.325], np.float32)
    lw = jnp.log(jnp.asarray(w))
    N, R = w.size, 4000
    keys = jax.random.split(jax.random.key(0), R)
    idx = jax.vmap(lambda k: RESAMPLERS[name](k, lw, N))(keys)
    counts = np.asarray(jax.vmap(lambda i: jnp.bincount(i, length=N))(idx))
    assert counts.sum(1).tolist() == [N] * R
    assert counts[:, w == 0].sum() == 0
    mean, sd = counts.mean(0), counts.std(0)
    z = (mean - N * w) / np.maximum(sd, 0.05) * np.sqrt(R)
    assert np.all(np.abs(z) < 4.5), z
    if name == "systematic":  # counts within one of N w_i
        assert np.all(np.abs(counts - N * w) < 1.0 + 1e-6)
    if name == "residual":  # at least the deterministic floor(N w_i) copies
        assert np.all(counts >= np.floor(N * w + 1e-6))


@pytest.mark.parametrize("name", sorted(RESAMPLERS))
def test_resampling_float32_edge_cases(name):
    """Huge dynamic range, -inf and NaN weights, weights below float32 resolution, M != N, all weights zero."""
    f = jax.jit(RESAMPLERS[name], static_argnums=2)
    n = 50_000
    key = jax.random.key(1)
    dead = jnp.full((n,), -jnp.inf, jnp.float32)
    alive = jnp.array([0, 7, 5000, n - 1])
    lw = dead.at[alive].set(jnp.array([0.0, -80.0, -30.0, 5.0], jnp.float32))  # exp(-85) underflows
    lw = lw.at[3].set(jnp.nan)
    for m in (n, 17):
        idx = np.asarray(f(key, lw, m))
        assert idx.shape == (m,) and idx.min() >= 0 and idx.max() < n
        assert set(np.unique(idx)) <= set(np.asarray(alive).tolist())
    # a single surviving particle gets everything
    assert np.all(np.asarray(f(key, dead.at[n - 2].set(-1e4), n)) == n - 2)
    # all weights zero: still valid indices (the filter reports the collapse separately)
    idx = np.asarray(f(key, dead, n))
    assert idx.min() >= 0 and idx.max() < n


def test_ess_formulas_agree():
    """ESS of unnormalised log-weights, its one-pass form for normalised ones, and the textbook 1 / sum W^2."""
    lw = jax.random.normal(jax.random.key(0), (200,)) * 3.0 + 50.0
    w = np.exp(np.asarray(lw, np.float64) - np.max(np.asarray(lw, np.float64)))
    w /= w.sum()
    expected = 1.0 / np.sum(w**2)
    norm, _ = resampling.normalize_log_weights(lw)
    np.testing.assert_allclose(float(resampling.ess(lw)), expected, rtol=1e-4)
    np.testing.assert_allclose(float(resampling.ess_of_normalized(norm)), expected, rtol=1e-4)
    assert float(resampling.ess(jnp.full((5,), -jnp.inf))) == 0.0


# ----------------------------------------------------------------------------------------------- unbiasedness
def _ratios(model, params, ys, N, R, key, fk=None, **kw):
    exact = kalman_filter(params, ys).log_likelihood
    keys = jax.random.split(key, R)
    ll = jax.vmap(lambda k: particle_filter(k, fk or model, params, ys, N, **kw).log_likelihood)(keys)
    return np.asarray(jnp.exp(ll - exact)), np.asarray(ll)


@pytest.mark.parametrize("dim", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_bootstrap_likelihood_unbiased_vs_kalman(x64, dim):
    """mean of exp(loglik - exact) is 1 within 3 SE on a random LG model; its variance falls as N grows."""
    model = LinearGaussianSSM(dim, dim)
    params = model.random_params(jax.random.key(10 + dim))
    _, ys = simulate(jax.random.key(20 + dim), model, params, 10)
    var = []
    for N in (32, 256):
        r, _ = _ratios(model, params, ys, N, 200, jax.random.key(N))
        se = r.std() / np.sqrt(r.size)
        assert abs(r.mean() - 1.0) < 3 * se, (N, r.mean(), se)
        var.append(r.var())
    assert var[1] < 0.5 * var[0], var


@pytest.mark.slow
def test_guided_optimal_proposal_beats_bootstrap_and_auxiliary_unbiased(x64):
    model = ScalarLG()
    params = scalar_params(r=0.05)  # informative observations: bootstrap weights are uneven
    _, ys = simulate(jax.random.key(3), model, params, 30)
    rb, _ = _ratios(model, params, ys, 64, 200, jax.random.key(4))
    rg, _ = _ratios(model, params, ys, 64, 200, jax.random.key(4), fk=FeynmanKac.guided(model))
    assert abs(rg.mean() - 1) < 3 * rg.std() / np.sqrt(rg.size)
    assert rg.var() < 0.05 * rb.var(), (rg.var(), rb.var())

    def lookahead(p, x, t, y, u):  # log N(y; H F x, H Q H' + R), the exact predictive
        return (
            dist.Normal(
                p.emission_weights @ (p.dynamics_weights @ x), jnp.sqrt(p.dynamics_cov[0, 0] + p.emission_cov[0, 0])
            )
            .log_prob(y)
            .sum()
        )

    # fully adapted auxiliary filter (exact predictive look-ahead + optimal proposal): equal second-stage weights
    fk = FeynmanKac.auxiliary(model, lookahead, model.proposal, model.initial_proposal)
    ra, _ = _ratios(model, params, ys, 64, 200, jax.random.key(5), fk=fk, ess_threshold=1.0)
    assert abs(ra.mean() - 1) < 3 * ra.std() / np.sqrt(ra.size), ra.mean()
    assert ra.var() < 0.05 * rb.var(), (ra.var(), rb.var())


def test_filtered_means_match_kalman_and_mask(x64):
    model = ScalarLG()
    params = scalar_params()
    _, ys = simulate(jax.random.key(6), model, params, 40)
    mask = jnp.arange(40) % 7 != 3
    kf = kalman_filter(params, ys, mask=mask)
    res = particle_filter(jax.random.key(7), model, params, ys, 20_000, mask=mask, resampling="stratified")
    # 4.5 Monte Carlo sd of the worst step (sd <= 0.0115 over 30 keys; the missing steps are the widest)
    np.testing.assert_allclose(res.filtered, kf.filtered_means, atol=0.05)
    assert abs(float(res.log_likelihood - kf.log_likelihood)) < 0.3
    assert res.ess.shape == (40,) and res.resampled.dtype == bool and not bool(res.collapsed)
    idata = to_arviz(res, observations=ys)
    assert set(idata.to_datatree().children) == set(idata.groups())  # ArviZ 1.x container
    assert "ess" in idata.sample_stats and idata.posterior["filtered"].dims[:3] == ("chain", "draw", "time")


def test_float32_filter_runs_close_to_kalman(x32):
    model = ScalarLG()
    params = scalar_params()
    _, ys = simulate(jax.random.key(8), model, params, 200)
    res = particle_filter(jax.random.key(9), model, params, ys, 5000)
    assert res.log_likelihood.dtype == jnp.float32
    exact = kalman_filter(params, ys).log_likelihood
    assert abs(float(res.log_likelihood - exact)) < 1.0
    assert np.all(np.isfinite(np.asarray(res.filtered)))


def test_reproducible_vmap_equals_loop_and_streaming_equals_scan():
    model = ScalarLG()
    params = scalar_params()
    _, ys = simulate(jax.random.key(10), model, params, 25)
    keys = jax.random.split(jax.random.key(11), 3)
    run = lambda k: particle_filter(k, model, params, ys, 128, history=True)  # noqa: E731
    a, b = run(keys[0]), run(jnp.array(keys)[0])
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a, b))
    batched = jax.vmap(run)(keys)
    for i in range(3):
        single = run(keys[i])
        np.testing.assert_allclose(batched.log_likelihood[i], single.log_likelihood, rtol=1e-5)
        np.testing.assert_array_equal(batched.history.ancestors[i], single.history.ancestors)
    # the streaming kernels reproduce the scan (same key schedule)
    k0, key = jax.random.split(keys[0])
    state, _ = jax.jit(lambda k: filter_init(k, FeynmanKac.bootstrap(model), params, ys[0], 128))(k0)
    step = jax.jit(lambda k, s, y: filter_step(k, s, FeynmanKac.bootstrap(model), params, y)[0])
    for k, y in zip(jax.random.split(key, 24), ys[1:], strict=True):
        state = step(k, state, y)
    np.testing.assert_allclose(state.log_likelihood, a.log_likelihood, rtol=1e-5)
    np.testing.assert_allclose(state.particles, a.final_state.particles, rtol=1e-5)


class _Boxed(SSM):
    """Random walk observed through a uniform window: an observation outside every window kills all particles."""

    def initial(self, params, inputs=None):
        return dist.Normal(0.0, 1.0)

    def transition(self, params, state, t, inputs=None):
        return dist.Normal(state, 1.0)

    def emission(self, params, state, t, inputs=None):
        return dist.Uniform(state - 1.0, state + 1.0)

    @property
    def emission_shape(self):
        return ()

    def param_constraints(self):
        return ()


def test_weight_collapse_is_flagged_not_nan():
    ys = jnp.array([0.0, 0.5, 1e4, 0.0, 0.1])
    res = particle_filter(jax.random.key(12), _Boxed(), (), ys, 64)
    assert bool(res.collapsed)
    assert res.log_likelihood == -jnp.inf
    assert np.all(np.isfinite(np.asarray(res.filtered)))
    assert not np.any(np.isnan(np.asarray(res.log_likelihood_increments)))


def test_input_validation_messages():
    model = ScalarLG()
    params = scalar_params()
    ys = jnp.zeros((5, 1))
    with pytest.raises(ValueError, match="num_particles"):
        particle_filter(jax.random.key(0), model, params, ys, 0)
    with pytest.raises(ValueError, match="ess_threshold"):
        particle_filter(jax.random.key(0), model, params, ys, 10, ess_threshold=2.0)
    with pytest.raises(ValueError, match="resampling"):
        particle_filter(jax.random.key(0), model, params, ys, 10, resampling="bogus")
    with pytest.raises(ValueError, match="mask"):
        particle_filter(jax.random.key(0), model, params, ys, 10, mask=jnp.ones(4, bool))
    with pytest.raises(ValueError, match="proposal"):
        FeynmanKac.guided(_Boxed())


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "legacy"])
def test_particle_keys_give_distinct_independent_standard_streams(impl):
    """particle_keys (the index XOR-ed into the key, no hash): every key distinct, within a step and across the keys
    of 20 consecutive steps; normal draws over 20 step keys x 4096 particles have mean 0 and variance 1 (z-tests at
    4.5 sd), and neither neighbouring particles nor particle i across consecutive steps correlate."""
    from pssm.inference.smc import particle_keys

    n, steps = 4096, 20
    root = jax.random.PRNGKey(3) if impl == "legacy" else jax.random.key(3, impl=impl)
    step_keys = jax.random.split(root, steps)
    keys = jax.vmap(lambda k: particle_keys(k, n))(step_keys)  # (steps, n)
    assert str(keys.dtype) == ("key<rbg>" if impl == "rbg" else "key<fryu>")
    data = np.asarray(jax.random.key_data(keys)).reshape(steps * n, -1)
    assert len({row.tobytes() for row in data}) == steps * n
    if impl == "legacy":  # the legacy path equals the typed one on the same key data
        typed = particle_keys(jax.random.wrap_key_data(step_keys[0]), n)
        np.testing.assert_array_equal(np.asarray(jax.random.key_data(typed)), data[:n])
    z = np.asarray(jax.vmap(jax.vmap(lambda k: jax.random.normal(k, (), jnp.float32)))(keys), float)
    m = z.size
    assert abs(z.mean()) * np.sqrt(m) < 4.5
    assert abs(z.var() - 1.0) / np.sqrt(2.0 / m) < 4.5
    for a, b in ((z[:, :-1], z[:, 1:]), (z[:-1], z[1:])):
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r) * np.sqrt(a.size) < 4.5


def test_fast_key_draws_equal_jax_threefry_draws_bit_for_bit():
    """THREEFRY_UNROLLED (JAX's hash traced unrolled) reproduces jax.random's Threefry draws exactly, for bits,
    uniforms and normals of several shapes and per-particle keys (x64 runs cover the 64-bit path)."""
    from pssm.inference.smc import fast_key, particle_keys

    key = jax.random.key(5)
    for shape in ((), (3,), (1001,), (4, 5)):
        for draw in (jax.random.normal, jax.random.uniform, jax.random.bits):
            want, got = np.asarray(draw(key, shape)), np.asarray(draw(fast_key(key), shape))
            assert want.dtype == got.dtype
            np.testing.assert_array_equal(got, want)
    keys = particle_keys(key, 7)
    got = jax.vmap(lambda k: jax.random.normal(k, (2,)))(keys)
    want = jax.vmap(lambda d: jax.random.normal(jax.random.wrap_key_data(d), (2,)))(jax.random.key_data(keys))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert str(fast_key(jax.random.key(0, impl="rbg")).dtype) == "key<rbg>"  # other generators are left alone
