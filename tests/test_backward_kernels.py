"""Exactness of the backward kernels' draws against the enumerated backward probabilities.

Each case checks index frequencies against :math:`B(l \\mid j) \\propto W_l f(x_j \\mid x_l)` with a chi-square test
per row (cells with small expectation pooled), that zero-weight particles are never drawn, and the shapes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from pssm.inference.smc import ExactBackward, RejectionBackward, backward

SIG = 0.7


def _lt(a, b):
    return jax.scipy.stats.norm.logpdf(b[0], 0.9 * a[0], SIG)


BOUND = float(jax.scipy.stats.norm.logpdf(0.0, 0.0, SIG))


def _problem(n, m, key=1, zero=()):
    k1, k2, k3 = jax.random.split(jax.random.key(key), 3)
    xp = jax.random.normal(k1, (n, 1))
    lw = jax.random.normal(k2, (n,))
    lw = lw.at[jnp.asarray(zero, jnp.int32)].set(-jnp.inf) if zero else lw
    # next points: some in the bulk, some far in the tails (forcing the exact fallback)
    xn = 0.9 * xp[:m] + SIG * jax.random.normal(k3, (m, 1))
    xn = xn.at[0].set(4.5).at[1].set(-5.0)
    return xp, lw, xn


def _chi2_pvalues(idx, probs):
    """Per-row chi-square p-values of index counts against probabilities (cells with expectation < 5 pooled)."""
    out = []
    for r, p in zip(np.asarray(idx), probs, strict=True):
        d = r.size
        cnt = np.bincount(r, minlength=p.size).astype(float)
        exp = d * p
        big = exp >= 5
        obs_c = np.append(cnt[big], cnt[~big].sum())
        exp_c = np.append(exp[big], exp[~big].sum())
        keep = exp_c > 0
        out.append(stats.chisquare(obs_c[keep], exp_c[keep] * obs_c[keep].sum() / exp_c[keep].sum()).pvalue)
    return np.array(out)


KERNELS = {
    "exact": ExactBackward(chunk_size=3),
    "rejection_default": RejectionBackward(),
    # one proposal, no retries, tiny chunks: nearly every pair goes through the exact fallback while_loop
    "rejection_fallback_heavy": RejectionBackward(num_proposals=1, retries=(), fallback_chunk=3),
    "rejection_three_rounds": RejectionBackward(num_proposals=1, retries=((1.0, 30), (0.5, 4))),
}


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("n", [37, 130])
def test_kernel_draws_follow_backward_probabilities(x64, name, n):
    m, d = 6, 6000
    xp, lw, xn = _problem(n, m, zero=(3, 11, n - 1))
    kern = KERNELS[name]
    idx = jax.jit(lambda k: kern(k, _lt, xp, lw, xn, jnp.arange(m), BOUND, d))(jax.random.key(7))
    assert idx.shape == (m, d) and idx.dtype == jnp.int32
    probs = np.exp(np.asarray(jax.vmap(lambda x: backward.backward_log_weights(_lt, xp, lw, x))(xn)))
    assert not np.isin(np.asarray(idx), [3, 11, n - 1]).any(), "a zero-weight particle was drawn"
    pv = _chi2_pvalues(idx, probs)
    # 6 rows x 8 cases: a Bonferroni-style floor keeps the family-wise false alarm rate below 1e-3
    assert pv.min() > 2e-5, (name, pv)


def test_rejection_float32_tail_rows_and_vanishing_rows(x32):
    """float32: rows so far out that the bound-shifted weights underflow use the exact row maxima; rows where every
    transition density vanishes fall back to the filter weights (never NaN, never a zero-weight index)."""
    n, m, d = 200, 4, 4000
    xp, lw, _ = _problem(n, m, zero=(0, 5))
    xn = jnp.array([[60.0], [-45.0], [jnp.inf], [0.1]])
    kern = RejectionBackward(num_proposals=1, retries=())
    idx = np.asarray(jax.jit(lambda k: kern(k, _lt, xp, lw, xn, None, BOUND, d))(jax.random.key(3)))
    assert not np.isin(idx, [0, 5]).any()
    lf = np.asarray(jax.vmap(lambda x: jax.vmap(lambda a: _lt(a, x))(xp))(xn[:2]), dtype=np.float64)
    lw64 = np.asarray(lw, np.float64)
    for r in range(2):
        # the far rows concentrate on the most extreme previous particle(s)
        lp = lw64 + lf[r]
        p = np.exp(lp - lp.max())
        p /= p.sum()
        top = np.argmax(p)
        assert abs(np.mean(idx[r] == top) - p[top]) < 5 * np.sqrt(p[top] * (1 - p[top]) / d) + 1e-3
    w = np.exp(lw64 - lw64.max())
    w /= w.sum()
    assert _chi2_pvalues(idx[2:3], [w]).min() > 1e-4  # vanishing row: filter weights


def test_block_size_and_blocked_padding():
    assert [backward._block_size(n) for n in (1, 2, 64, 65, 1000, 10_000)] == [8, 8, 8, 16, 32, 104]
    xpb, lwb = backward._blocked(jnp.arange(10.0)[:, None], jnp.zeros(10))
    assert xpb.shape == (2, 8, 1) and lwb.shape == (2, 8)
    assert np.isneginf(np.asarray(lwb).ravel()[10:]).all()
    np.testing.assert_allclose(np.exp(np.asarray(lwb).ravel()[:10]), 0.1, rtol=1e-6)


def test_rejection_settings_are_validated():
    with pytest.raises(ValueError, match="retries"):
        RejectionBackward(retries=((0.5, -1),))
    with pytest.raises(ValueError, match="retries"):
        RejectionBackward(retries=((1.5, 4),))
    backward.check_backward_kernel(None)
    backward.check_backward_kernel(ExactBackward(), allow_none=False)
    with pytest.raises(TypeError, match=r"BackwardKernel \(ExactBackward\(\).*got str"):
        backward.check_backward_kernel("exact")
    with pytest.raises(TypeError, match="got NoneType"):
        backward.check_backward_kernel(None, allow_none=False)
    with pytest.raises(ValueError, match="log_bound"):
        RejectionBackward()(jax.random.key(0), _lt, jnp.zeros((4, 1)), jnp.zeros(4), jnp.zeros((2, 1)), None, None, 2)


@pytest.mark.parametrize("precision", ["x32", "x64"])
def test_multinomial_with_uniforms_joint_law(precision, request):
    """Indices ~ W (chi-square), zero weights never drawn, and the recycled uniform is U(0, 1) given the index
    (Kolmogorov-Smirnov per frequent index) and uncorrelated with it; float32 (31-bit words) and float64 (63-bit)."""
    request.getfixturevalue(precision)
    from pssm.inference.smc.resampling import multinomial_with_uniforms

    n, m = 12, 200_000
    lw = jnp.log(jnp.array([0.3, 0.0, 0.2, 1e-4, 0.1, 0.05, 0.15, 0.0, 0.1, 0.05, 0.0499, 1e-5]))
    idx, v = jax.jit(multinomial_with_uniforms, static_argnums=2)(jax.random.key(4), lw, m)
    idx, v = np.asarray(idx), np.asarray(v)
    assert v.dtype == (np.float64 if precision == "x64" else np.float32)
    w = np.exp(np.asarray(lw, np.float64))
    w /= w.sum()
    assert not np.isin(idx, np.flatnonzero(w == 0)).any()
    assert _chi2_pvalues(idx[None], [w]).min() > 1e-4
    assert v.min() > 0 and v.max() < 1
    for i in np.flatnonzero(w > 0.04):
        assert stats.kstest(v[idx == i], "uniform").pvalue > 1e-4, i
    # P(l = i, v < a) = W_i a
    a = 0.37
    joint = np.bincount(idx[v < a], minlength=n) / m
    se = np.sqrt(w * a * (1 - w * a) / m) + 1e-12
    assert np.all(np.abs(joint - w * a) < 5 * se)
