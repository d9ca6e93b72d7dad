import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pssm.inference import kalman_filter, kalman_log_likelihood, kalman_posterior_sample, kalman_smoother
from pssm.models import LinearGaussianSSM
from pssm.models.testing import dense_lgssm_posterior
from pssm.protocol import log_joint, simulate


@pytest.mark.parametrize("dims,seed", [((1, 1, 0), 0), ((3, 2, 1), 1), ((2, 4, 2), 2), ((4, 1, 0), 3)])
def test_kalman_matches_dense_gaussian(x64, dims, seed):
    Dx, Dy, Du = dims
    model = LinearGaussianSSM(Dx, Dy, Du)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = model.random_params(k1)
    T = 7
    u = jax.random.normal(k3, (T, Du)) if Du else None
    _, y = simulate(k2, model, params, T, u)
    res = kalman_smoother(params, y, u)
    ll, means, covs, cross = dense_lgssm_posterior(params, y, u)
    np.testing.assert_allclose(res.log_likelihood, ll, atol=1e-8)
    np.testing.assert_allclose(res.smoothed_means, means, atol=1e-8)
    np.testing.assert_allclose(res.smoothed_covs, covs, atol=1e-8)
    np.testing.assert_allclose(res.smoothed_cross_covs, cross, atol=1e-8)


def test_missing_observations_equal_dropping_them(x64):
    model = LinearGaussianSSM(2, 2)
    params = model.random_params(jax.random.PRNGKey(4))
    _, y = simulate(jax.random.PRNGKey(5), model, params, 12)
    mask = jnp.ones(12, bool).at[jnp.array([3, 4, 9])].set(False)
    # the dense reference with the masked rows removed: give them infinite noise through a huge R block
    res = kalman_smoother(params, y, mask=mask)
    ll_obs = kalman_log_likelihood(params, y[:3]) + 0.0
    assert np.isfinite(res.log_likelihood)
    # prefix property: masking everything after t=2 gives the log-likelihood of the prefix
    mask_prefix = jnp.arange(12) < 3
    np.testing.assert_allclose(kalman_log_likelihood(params, y, mask=mask_prefix), ll_obs, atol=1e-10)
    # and the smoothed means of the prefix steps do not depend on the (masked) garbage after it
    y_garbage = y.at[3:].set(1e6)
    a = kalman_smoother(params, y, mask=mask_prefix).smoothed_means[:3]
    b = kalman_smoother(params, y_garbage, mask=mask_prefix).smoothed_means[:3]
    np.testing.assert_allclose(a, b, atol=1e-10)
    np.testing.assert_allclose(a, kalman_smoother(params, y[:3]).smoothed_means, atol=1e-10)


def test_log_likelihood_is_marginal_of_log_joint_for_scalar_model(x64):
    """Importance identity: log p(y) = log E_{p(x|y)}[...] checked through p(x,y)/p(x|y) at a posterior draw."""
    model = LinearGaussianSSM(1, 1)
    params = model.random_params(jax.random.PRNGKey(6))
    _, y = simulate(jax.random.PRNGKey(7), model, params, 5)
    sm = kalman_smoother(params, y)
    x = kalman_posterior_sample(jax.random.PRNGKey(8), params, y)
    # p(x|y) is Gaussian with the dense posterior; log p(y) = log p(x, y) - log p(x | y) for any x
    from scipy.stats import multivariate_normal

    _, means, _, _ = dense_lgssm_posterior(params, y)
    # full joint posterior covariance (T x T) from the dense reference
    T = 5
    F, Q, R = (float(params.dynamics_weights[0, 0]), float(params.dynamics_cov[0, 0]), float(params.emission_cov[0, 0]))
    H = float(params.emission_weights[0, 0])
    Phi = np.array([[F ** (t - s) if t >= s else 0.0 for s in range(T)] for t in range(T)])
    N = np.diag([float(params.initial_cov[0, 0])] + [Q] * (T - 1))
    Sx = Phi @ N @ Phi.T
    Sy = H * H * Sx + R * np.eye(T)
    Pc = Sx - H * Sx @ np.linalg.solve(Sy, H * Sx)
    lpost = multivariate_normal(means[:, 0], Pc).logpdf(np.asarray(x)[:, 0])
    lj = log_joint(model, params, x, y)
    np.testing.assert_allclose(lj - lpost, sm.log_likelihood, atol=1e-8)


def test_posterior_samples_have_smoothed_moments(x64):
    model = LinearGaussianSSM(2, 1)
    params = model.random_params(jax.random.PRNGKey(9))
    _, y = simulate(jax.random.PRNGKey(10), model, params, 15)
    sm = kalman_smoother(params, y)
    M = 4000
    xs = jax.vmap(lambda k: kalman_posterior_sample(k, params, y))(jax.random.split(jax.random.PRNGKey(11), M))
    sd = np.sqrt(np.diagonal(sm.smoothed_covs, axis1=1, axis2=2))
    z = (xs.mean(0) - sm.smoothed_means) / (sd / np.sqrt(M))
    assert np.abs(z).max() < 4.5  # 30 z-scores, each N(0,1) under a correct sampler
    cov_emp = np.einsum("mti,mtj->tij", xs - xs.mean(0), xs - xs.mean(0)) / M
    np.testing.assert_allclose(cov_emp, sm.smoothed_covs, atol=0.1 * float(np.max(sm.smoothed_covs)))


def test_exact_score_by_autodiff_matches_finite_differences(x64):
    model = LinearGaussianSSM(2, 2)
    params = model.random_params(jax.random.PRNGKey(12))
    _, y = simulate(jax.random.PRNGKey(13), model, params, 20)
    g = jax.grad(kalman_log_likelihood)(params, y).dynamics_weights
    eps = 1e-6
    E = jnp.zeros((2, 2)).at[0, 1].set(eps)
    f = lambda A: kalman_log_likelihood(params._replace(dynamics_weights=A), y)  # noqa: E731
    fd = (f(params.dynamics_weights + E) - f(params.dynamics_weights - E)) / (2 * eps)
    np.testing.assert_allclose(g[0, 1], fd, rtol=1e-6)


def test_vmap_over_ragged_batch_equals_loop(x64):
    model = LinearGaussianSSM(2, 1)
    params = model.random_params(jax.random.PRNGKey(14))
    lengths = [9, 4, 6]
    ys = [
        simulate(k, model, params, n)[1]
        for k, n in zip(jax.random.split(jax.random.PRNGKey(15), 3), lengths, strict=True)
    ]
    Y = jnp.stack([jnp.pad(y, ((0, 9 - y.shape[0]), (0, 0))) for y in ys])
    M = jnp.arange(9)[None] < jnp.array(lengths)[:, None]
    batched = jax.jit(jax.vmap(lambda y, m: kalman_smoother(params, y, mask=m)))(Y, M)
    for i, y in enumerate(ys):
        single = kalman_smoother(params, y)
        n = lengths[i]
        np.testing.assert_allclose(batched.log_likelihood[i], single.log_likelihood, atol=1e-10)
        np.testing.assert_allclose(batched.smoothed_means[i, :n], single.smoothed_means, atol=1e-10)


def test_float32_runs_and_is_close_to_float64(x32):
    model = LinearGaussianSSM(2, 2)
    params = model.random_params(jax.random.PRNGKey(16))
    _, y = simulate(jax.random.PRNGKey(17), model, params, 50)
    r32 = kalman_filter(params, y)
    assert r32.log_likelihood.dtype == jnp.float32
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), params)
        r64 = kalman_filter(p64, jnp.asarray(np.asarray(y), jnp.float64))
    np.testing.assert_allclose(float(r32.log_likelihood), float(r64.log_likelihood), rtol=1e-4)


@pytest.mark.parametrize("parallel", [False, True], ids=["seq", "parallel"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nan_entries_are_missing_exactly(x64, seed, parallel):
    """A NaN entry is missing: the filter conditions on the other entries of its step (dense Gaussian conditioning
    on every observed entry is the exact answer); a row of NaN equals mask=False."""
    model = LinearGaussianSSM(2, 3)
    params = model.random_params(jax.random.PRNGKey(20 + seed))
    _, y = simulate(jax.random.PRNGKey(30 + seed), model, params, 7)
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(y.shape) < 0.3, np.nan, np.asarray(y))
    y[4] = np.nan
    res = kalman_smoother(params, y, parallel=parallel)
    ll, means, covs, _ = dense_lgssm_posterior(params, y)
    np.testing.assert_allclose(res.log_likelihood, ll, atol=1e-9)
    np.testing.assert_allclose(res.smoothed_means, means, atol=1e-9)
    np.testing.assert_allclose(res.smoothed_covs, covs, atol=1e-9)


def test_nan_rows_are_missing_and_shapes_are_validated(x64):
    model = LinearGaussianSSM(2, 2)
    params = model.random_params(jax.random.PRNGKey(18))
    _, y = simulate(jax.random.PRNGKey(19), model, params, 8)
    mask = jnp.ones(8, bool).at[2].set(False)
    a = kalman_smoother(params, y.at[2].set(jnp.nan))
    b = kalman_smoother(params, y, mask=mask)
    np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, atol=1e-12)
    np.testing.assert_allclose(a.smoothed_means, b.smoothed_means, atol=1e-12)
    with pytest.raises(ValueError, match=r"emissions must have shape \(T, 2\)"):
        kalman_filter(params, y[:, :1])
    with pytest.raises(ValueError, match="emissions has no time steps"):
        kalman_filter(params, jnp.zeros((0, 2)))
    with pytest.raises(ValueError, match="mask must have shape"):
        kalman_filter(params, y, mask=jnp.ones(7, bool))
    one = kalman_smoother(params, y[:1])  # length-1 sequences are valid
    ll, m, P, _ = dense_lgssm_posterior(params, y[:1])
    np.testing.assert_allclose(one.log_likelihood, ll, atol=1e-10)
    np.testing.assert_allclose(one.smoothed_means, m, atol=1e-10)


def test_inputs_shape_is_validated():
    model = LinearGaussianSSM(2, 1, 3)
    params = model.random_params(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="inputs"):
        kalman_filter(params, jnp.zeros((5, 1)))
    with pytest.raises(ValueError, match="inputs must have shape"):
        kalman_filter(params, jnp.zeros((5, 1)), jnp.zeros((5, 2)))


def test_same_key_same_output():
    model = LinearGaussianSSM(2, 1)
    params = model.random_params(jax.random.PRNGKey(0))
    a = simulate(jax.random.PRNGKey(3), model, params, 10)
    b = simulate(jax.random.PRNGKey(3), model, params, 10)
    c = simulate(jax.random.PRNGKey(4), model, params, 10)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[1], c[1])


_P = LinearGaussianSSM(2, 2).make_params(
    dynamics_weights=[[0.9, 0.1], [0.0, 0.8]],
    dynamics_cov=np.eye(2),
    emission_weights=np.eye(2),
    emission_cov=np.eye(2),
)
_BAD_PARAMS = {
    "non-PD dynamics_cov": (_P._replace(dynamics_cov=-np.eye(2)), ValueError, r"dynamics_cov .*PositiveDefinite"),
    "negative emission_cov": (_P._replace(emission_cov=-0.1 * np.eye(2)), ValueError, r"emission_cov .*Positive"),
    "asymmetric initial_cov": (_P._replace(initial_cov=np.array([[1.0, 2.0], [0.0, 1.0]])), ValueError, "initial_cov"),
    "NaN dynamics_weights": (_P._replace(dynamics_weights=np.full((2, 2), np.nan)), ValueError, "dynamics_weights"),
    "inf emission_bias": (_P._replace(emission_bias=np.array([np.inf, 0.0])), ValueError, "emission_bias"),
    "3x3 dynamics for a 2-D state": (_P._replace(dynamics_weights=np.eye(3)), ValueError, r"needs \(2, 2\)"),
    "initial_mean of length 3": (_P._replace(initial_mean=np.zeros(3)), ValueError, r"initial_cov has shape"),
    "a dict": (_P._asdict(), TypeError, "params must be LGSSMParams"),
    "None": (None, TypeError, "params must be LGSSMParams"),
}


@pytest.mark.parametrize("case", list(_BAD_PARAMS))
@pytest.mark.parametrize("fn", [kalman_filter, kalman_smoother, kalman_log_likelihood])
def test_bad_params_are_refused_naming_the_leaf(fn, case):
    params, err, message = _BAD_PARAMS[case]
    with pytest.raises(err, match=message):
        fn(params, np.zeros((5, 2)))


@pytest.mark.parametrize("data_dtype,params_dtype", [(np.float32, np.float64), (np.float64, np.float32)])
def test_mixed_precision_is_promoted_under_x64(x64, data_dtype, params_dtype):
    """float32 params with float64 data (or the reverse) run in float64 and equal the all-float64 answer."""
    _, y = simulate(jax.random.PRNGKey(20), LinearGaussianSSM(2, 2), _P, 30)
    p64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), _P)
    want = kalman_smoother(p64, np.asarray(y, np.float64))
    mixed = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), params_dtype), _P)
    got = kalman_smoother(mixed, np.asarray(y, data_dtype))
    assert got.smoothed_means.dtype == jnp.float64
    y_cast = np.asarray(np.asarray(y, data_dtype), np.float64)  # the data as given, in float64
    p_cast = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, params_dtype), jnp.float64), _P)
    exact = kalman_smoother(p_cast, y_cast)
    np.testing.assert_allclose(got.smoothed_means, exact.smoothed_means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.log_likelihood, want.log_likelihood, rtol=1e-5)
    for fn in (kalman_filter, kalman_log_likelihood):
        assert jax.tree.leaves(fn(mixed, np.asarray(y, data_dtype)))[0].dtype == jnp.float64
    assert kalman_posterior_sample(jax.random.PRNGKey(0), mixed, np.asarray(y, data_dtype)).dtype == jnp.float64


def test_to_arviz_refuses_emissions_of_another_length():
    import pssm

    _, y = simulate(jax.random.PRNGKey(21), LinearGaussianSSM(2, 2), _P, 12)
    res = kalman_smoother(_P, y)
    idata = pssm.to_arviz(res, emissions=y)
    assert idata.observed_data["y"].shape == (12, 2)
    with pytest.raises(ValueError, match="12 time steps"):
        pssm.to_arviz(res, emissions=y[:10])
