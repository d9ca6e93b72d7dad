import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pssm.inference import hmm_filter, hmm_posterior_sample, hmm_smoother, hmm_viterbi
from pssm.models.testing import enumerate_hmm


def random_potentials(key, T, S, time_varying=False):
    k1, k2, k3 = jax.random.split(key, 3)
    li = jax.nn.log_softmax(jax.random.normal(k1, (S,)))
    shape = (T - 1, S, S) if time_varying else (S, S)
    lt = jax.nn.log_softmax(2.0 * jax.random.normal(k2, shape), axis=-1)
    ll = 3.0 * jax.random.normal(k3, (T, S))
    return li, lt, ll


@pytest.mark.parametrize(
    "T,S,tv,seed", [(1, 3, False, 0), (2, 2, False, 1), (5, 3, False, 2), (6, 2, True, 3), (4, 4, True, 4)]
)
def test_forward_backward_and_viterbi_match_enumeration(x64, T, S, tv, seed):
    li, lt, ll = random_potentials(jax.random.PRNGKey(seed), T, S, tv)
    logZ, marg, pair, map_path, _, _ = enumerate_hmm(li, lt, ll)
    post = hmm_smoother(li, lt, ll, return_pairwise=True)
    np.testing.assert_allclose(post.log_likelihood, logZ, atol=1e-10)
    np.testing.assert_allclose(post.smoothed_probs, marg, atol=1e-10)
    if T > 1:
        np.testing.assert_allclose(post.pairwise_probs, pair, atol=1e-10)
        np.testing.assert_allclose(post.expected_transitions, pair.sum(0), atol=1e-10)
    np.testing.assert_array_equal(hmm_viterbi(li, lt, ll), map_path)


def test_filtered_probs_match_enumeration_of_prefixes(x64):
    li, lt, ll = random_potentials(jax.random.PRNGKey(5), 5, 3)
    filt = hmm_filter(li, lt, ll).filtered_probs
    for t in range(5):
        _, marg, *_ = enumerate_hmm(li, lt, ll[: t + 1])
        np.testing.assert_allclose(filt[t], marg[t], atol=1e-10)


def test_posterior_sample_matches_enumerated_path_distribution(x64):
    li, lt, ll = random_potentials(jax.random.PRNGKey(6), 4, 2)
    *_, paths, logp = enumerate_hmm(li, lt, ll)
    M = 20000
    draws = jax.vmap(lambda k: hmm_posterior_sample(k, li, lt, ll))(jax.random.split(jax.random.PRNGKey(7), M))
    codes = np.asarray(draws) @ (2 ** np.arange(3, -1, -1))
    freq = np.bincount(codes, minlength=16) / M
    p = np.exp(logp)  # paths are enumerated in the same binary order
    z = (freq - p) / np.sqrt(p * (1 - p) / M + 1e-12)
    assert np.abs(z).max() < 4.5


def test_ragged_lengths_equal_truncated_sequences(x64):
    li, lt, ll = random_potentials(jax.random.PRNGKey(8), 9, 3)
    for n in (1, 4, 9):
        full = hmm_smoother(li, lt, ll, length=n)
        ref = hmm_smoother(li, lt, ll[:n])
        np.testing.assert_allclose(full.log_likelihood, ref.log_likelihood, atol=1e-10)
        np.testing.assert_allclose(full.smoothed_probs[:n], ref.smoothed_probs, atol=1e-10)
        np.testing.assert_allclose(full.expected_transitions, ref.expected_transitions, atol=1e-10)
        vit = hmm_viterbi(li, lt, ll, length=n)
        np.testing.assert_array_equal(vit[:n], hmm_viterbi(li, lt, ll[:n]))
        assert np.all(np.asarray(vit[n:]) == -1)
        s = hmm_posterior_sample(jax.random.PRNGKey(0), li, lt, ll, length=n)
        assert np.all(np.asarray(s[n:]) == -1) and np.all(np.asarray(s[:n]) >= 0)


def test_vmap_batch_and_jit(x64):
    keys = jax.random.split(jax.random.PRNGKey(9), 4)
    li, lt, ll = jax.vmap(lambda k: random_potentials(k, 6, 3))(keys)
    batched = jax.jit(jax.vmap(hmm_smoother))(li, lt, ll)
    for i in range(4):
        ref = hmm_smoother(li[i], lt[i], ll[i])
        np.testing.assert_allclose(batched.smoothed_probs[i], ref.smoothed_probs, atol=1e-12)


def test_impossible_transitions_give_no_nan():
    """Zero-probability states (log 0 = -inf) are handled without NaN (float32)."""
    li = jnp.log(jnp.array([1.0, 0.0, 0.0]))
    lt = jnp.log(jnp.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]))
    ll = jnp.array([[0.0, -1e4, 0.0], [-50.0, 0.0, 0.0], [0.0, -3.0, 0.0], [-5.0, -5.0, 0.0]])
    post = hmm_smoother(li, lt, ll)
    assert np.all(np.isfinite(post.smoothed_probs)) and np.isfinite(post.log_likelihood)
    np.testing.assert_allclose(post.smoothed_probs.sum(1), 1.0, atol=1e-5)
    assert post.smoothed_probs[0, 0] == pytest.approx(1.0)
    logZ, marg, *_ = enumerate_hmm(li, lt, ll)
    np.testing.assert_allclose(post.smoothed_probs, marg, atol=1e-5)
    np.testing.assert_allclose(post.log_likelihood, logZ, rtol=1e-5)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="log_initial"):
        hmm_filter(jnp.zeros(2), jnp.zeros((3, 3)), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="log_transitions"):
        hmm_filter(jnp.zeros(3), jnp.zeros((2, 3, 3)), jnp.zeros((4, 3)))


def test_float32_agrees_with_float64_on_long_sequence(x32):
    li, lt, ll = random_potentials(jax.random.PRNGKey(10), 2000, 4)
    r32 = hmm_smoother(li, lt, ll)
    with jax.enable_x64(True):
        c = lambda a: jnp.asarray(np.asarray(a), jnp.float64)  # noqa: E731
        r64 = hmm_smoother(c(li), c(lt), c(ll))
    np.testing.assert_allclose(float(r32.log_likelihood), float(r64.log_likelihood), rtol=1e-5)
    np.testing.assert_allclose(r32.smoothed_probs, r64.smoothed_probs, atol=1e-4)


_LI, _LT = np.log(np.full(3, 1 / 3)), np.log(np.full((3, 3), 1 / 3))
_LL = np.random.default_rng(0).normal(size=(6, 3))
_BAD = {
    "1-D log_likelihoods": ((_LI, _LT, _LL[:, 0], None), "log_likelihoods must be 2-dimensional"),
    "3-D log_likelihoods": ((_LI, _LT, _LL[None], None), "log_likelihoods must be 2-dimensional"),
    "length 0": ((_LI, _LT, _LL, 0), r"length must be an integer in \[1, T=6\]"),
    "length T + 1": ((_LI, _LT, _LL, 7), r"length must be an integer in \[1, T=6\]"),
    "negative length": ((_LI, _LT, _LL, -3), r"length must be an integer in \[1, T=6\]"),
    "fractional length": ((_LI, _LT, _LL, 2.5), r"length must be an integer in \[1, T=6\]"),
    "rows not stochastic": ((_LI, np.log(np.full((3, 3), 0.5)), _LL, None), r"row \(0,\) sums to 1.5"),
    "+inf log-likelihood": ((_LI, _LT, np.where(np.arange(6)[:, None] == 2, np.inf, _LL), None), r"\+inf value"),
    "NaN log-likelihood": ((_LI, _LT, np.where(np.arange(6)[:, None] == 2, np.nan, _LL), None), "NaN value"),
    "NaN transition": ((_LI, np.where(np.eye(3) > 0, np.nan, _LT), _LL, None), "log_transitions contains 3 NaN"),
}


@pytest.mark.parametrize("case", list(_BAD))
@pytest.mark.parametrize("fn", ["filter", "smoother", "smoother_parallel", "viterbi", "sample"])
def test_bad_potentials_and_lengths_are_refused_naming_the_argument(fn, case):
    """No silent answer from a wrong rank, an impossible length, a non-stochastic matrix, NaN or +inf."""
    (li, lt, ll, length), message = _BAD[case]
    call = {
        "filter": lambda: hmm_filter(li, lt, ll, length),
        "smoother": lambda: hmm_smoother(li, lt, ll, length),
        "smoother_parallel": lambda: hmm_smoother(li, lt, ll, length, parallel=True),
        "viterbi": lambda: hmm_viterbi(li, lt, ll, length),
        "sample": lambda: hmm_posterior_sample(jax.random.PRNGKey(0), li, lt, ll, length),
    }[fn]
    with pytest.raises(ValueError, match=message):
        call()


def test_checks_leave_traced_and_impossible_values_alone():
    """-inf (impossible) entries pass; under jit/vmap the values are not inspected and lengths vary per sequence."""
    lt = np.log(np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]))
    ll = _LL.copy()
    ll[3, 1] = -np.inf
    full = hmm_filter(_LI, lt, ll).log_likelihood
    batch = jax.vmap(lambda n: hmm_filter(_LI, lt, ll, n).log_likelihood)(jnp.array([6, 4]))
    np.testing.assert_allclose(batch[0], full, rtol=1e-6)
    np.testing.assert_allclose(batch[1], hmm_filter(_LI, lt, ll[:4]).log_likelihood, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda x: hmm_smoother(_LI, lt, x).log_likelihood)(ll), full, rtol=1e-6)
