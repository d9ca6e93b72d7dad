"""Property tests (hypothesis) at the public boundary: random shapes, lengths, NaN and -inf patterns and dtypes.

Every generated call either raises the documented error class naming the argument, or returns a finite result
equal to the exact answer: brute-force enumeration over all paths for forward-backward, dense Gaussian conditioning
on the observed entries for the Kalman smoother.  Examples are drawn deterministically (``derandomize``) from small
shape ranges, so the set of compiled programs stays small.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import pssm.models as pm
from pssm.boundary import as_sequences
from pssm.inference import hmm_log_likelihood, hmm_smoother, hmm_viterbi, kalman_smoother, smoother
from pssm.models.testing import dense_lgssm_posterior, enumerate_hmm

pytestmark = pytest.mark.xdist_group("properties")
SETTINGS = settings(
    max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FINITE = st.floats(-4.0, 4.0, allow_nan=False, width=32)
SPARSE = st.sampled_from([False, False, True])  # a mask with about one entry in three set


@st.composite
def hmm_problems(draw):
    """Log potentials with some impossible entries (-inf), a stochastic transition matrix with some zeros."""
    S, T = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    li = draw(arrays(np.float64, S, elements=FINITE))
    li = li - np.logaddexp.reduce(li)  # log-probabilities
    raw = draw(arrays(np.float64, (S, S), elements=st.floats(0.05, 1.0)))
    zeros = draw(arrays(bool, (S, S), elements=st.booleans())) & ~np.eye(S, dtype=bool)
    A = np.where(zeros, 0.0, raw)
    A /= A.sum(1, keepdims=True)
    ll = draw(arrays(np.float64, (T, S), elements=FINITE))
    ll = np.where(draw(arrays(bool, (T, S), elements=SPARSE)), -np.inf, ll)
    length = draw(st.integers(1, T))
    with np.errstate(divide="ignore"):
        return li, np.log(A), ll, length


@SETTINGS
@given(problem=hmm_problems(), parallel=st.booleans())
def test_forward_backward_equals_enumeration_or_flags_an_impossible_sequence(problem, parallel, x64):
    li, lt, ll, n = problem
    post = hmm_smoother(li, lt, ll, n, parallel=parallel)
    logz, marg, _, best, _, _ = enumerate_hmm(li, lt, ll[:n])
    if np.isneginf(logz):  # the data have probability zero: flagged, log-likelihood -inf, Viterbi refuses
        assert 0 <= int(post.impossible_step) < n and float(post.log_likelihood) == -np.inf
        with pytest.raises(ValueError, match="no state path"):
            hmm_viterbi(li, lt, ll, n)
        return
    assert int(post.impossible_step) == -1
    np.testing.assert_allclose(post.log_likelihood, logz, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(post.smoothed_probs[:n], marg, atol=1e-9)
    np.testing.assert_allclose(hmm_log_likelihood(li, lt, ll, n, parallel=parallel), logz, rtol=1e-9, atol=1e-9)
    path = np.asarray(hmm_viterbi(li, lt, ll, n))
    assert (path[n:] == -1).all()
    # the decoded path is a maximiser (ties allowed): its log-probability equals the brute-force maximum
    np.testing.assert_allclose(_path_log_prob(li, lt, ll, path[:n]), _path_log_prob(li, lt, ll, best), rtol=1e-9,
                               atol=1e-9)  # fmt: skip


def _path_log_prob(li, lt, ll, z) -> float:
    """:math:`\\log p(z, y)` of one state path ``z`` under the potentials (the steps of ``z`` only)."""
    return li[z[0]] + ll[0, z[0]] + sum(lt[z[t - 1], z[t]] + ll[t, z[t]] for t in range(1, len(z)))


@SETTINGS
@given(problem=hmm_problems(), where=st.sampled_from(["log_initial", "log_transitions", "log_likelihoods"]),
       bad=st.sampled_from([np.nan, np.inf]))  # fmt: skip
def test_nan_or_plus_inf_potentials_are_refused_naming_the_argument(problem, where, bad):
    li, lt, ll, n = problem
    args = {"log_initial": li.copy(), "log_transitions": lt.copy(), "log_likelihoods": ll.copy()}
    args[where].reshape(-1)[0] = bad
    with pytest.raises(ValueError, match=where):
        hmm_smoother(**args, length=n)


@st.composite
def lgssm_problems(draw):
    Dx, Dy, T = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    params = pm.LinearGaussianSSM(Dx, Dy).random_params(jax.random.PRNGKey(draw(st.integers(0, 50))))
    y = draw(arrays(np.float64, (T, Dy), elements=FINITE))
    missing = draw(arrays(bool, (T, Dy), elements=SPARSE))
    return params, np.where(missing, np.nan, y)


@SETTINGS
@given(problem=lgssm_problems(), parallel=st.booleans())
def test_kalman_with_missing_entries_equals_dense_conditioning(problem, parallel, x64):
    params, y = problem
    res = kalman_smoother(params, y, parallel=parallel)
    ll, means, covs, _ = dense_lgssm_posterior(params, y)
    np.testing.assert_allclose(res.log_likelihood, ll, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(res.smoothed_means, means, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(res.smoothed_covs, covs, rtol=1e-6, atol=1e-6)


DTYPES = st.sampled_from(["float32", "float64", "int32", "int64", "bool", "object", "str"])


@SETTINGS
@given(T=st.integers(0, 4), D=st.integers(1, 3), lead=st.integers(0, 2), dtype=DTYPES, as_list=st.booleans())
def test_sequences_boundary_accepts_or_names_the_problem(T, D, lead, dtype, as_list):
    """Any array or list of arrays given to an HMM with D-dimensional Gaussian emissions: a Sequences with the
    model's emission shape, or a ValueError/TypeError that names the data."""
    model = pm.HMM(2, pm.GaussianEmissions(2))
    shape = (2,) * lead + (T, D)
    y = np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)
    data = list(y) if as_list and lead else y
    try:
        seqs = as_sequences(model, data)
    except (ValueError, TypeError) as e:
        assert "data" in str(e)
        bad_dtype, bad_shape, empty = dtype in ("object", "str"), D != 2 or lead > 1, T == 0
        assert bad_dtype or bad_shape or empty, f"refused a valid input: {e}"
        return
    assert dtype not in ("object", "str") and D == 2 and T >= 1
    assert tuple(seqs.emission_shape) == (2,) and seqs.emissions.shape[1] == T


@SETTINGS
@given(T=st.integers(1, 5), lengths=st.lists(st.integers(-1, 6), min_size=2, max_size=2))
def test_ragged_lengths_within_range_or_refused(T, lengths):
    model = pm.HMM(2, pm.PoissonEmissions(1))
    params = model.initialize(jax.random.PRNGKey(0), np.ones((4, 1)))
    y = np.ones((2, T, 1))
    if all(1 <= n <= T for n in lengths):
        post = smoother(model, params, y, lengths=np.asarray(lengths))
        for b, n in enumerate(lengths):
            np.testing.assert_allclose(post.log_likelihood[b], smoother(model, params, y[b, :n]).log_likelihood,
                                       rtol=1e-5)  # fmt: skip
    else:
        with pytest.raises(ValueError, match="length"):
            smoother(model, params, y, lengths=np.asarray(lengths))


@st.composite
def sv_data(draw):
    T = draw(st.integers(1, 6))
    y = draw(arrays(np.float64, T, elements=FINITE))
    missing = draw(arrays(bool, T, elements=SPARSE))
    shape = draw(st.sampled_from(["(T,)", "(T, 1)", "(T, 2)", "(1, T)"]))
    return np.where(missing, np.nan, y), shape, draw(st.sampled_from(["float32", "float64", "list"]))


@SETTINGS
@given(problem=sv_data())
def test_particle_filter_nan_means_missing_or_the_shape_is_refused(problem):
    """Stochastic volatility (scalar emissions, ``emission_shape ()``): a (T,) series runs and its NaN steps equal
    ``mask=False`` with the same key (no reweighting there); any other shape is refused naming the emissions."""
    from pssm.inference.smc import particle_filter

    y, shape, dtype = problem
    model = pm.StochasticVolatility()
    params = model.make_params()
    data = {"(T,)": y, "(T, 1)": y[:, None], "(T, 2)": np.stack([y, y], 1), "(1, T)": y[None]}[shape]
    data = data.tolist() if dtype == "list" else data.astype(dtype)
    if shape != "(T,)":
        with pytest.raises(ValueError, match="emissions"):
            particle_filter(jax.random.PRNGKey(0), model, params, data, 8)
        return
    res = particle_filter(jax.random.PRNGKey(0), model, params, data, 8)
    ref = particle_filter(jax.random.PRNGKey(0), model, params, np.nan_to_num(y), 8, mask=~np.isnan(y))
    assert np.isfinite(res.log_likelihood)
    np.testing.assert_allclose(res.log_likelihood, ref.log_likelihood, rtol=1e-5)


GAUSS_HMMS = {cov: pm.HMM(2, pm.GaussianEmissions(3, cov)) for cov in ("full", "tied", "diagonal")}


@st.composite
def gaussian_hmm_data(draw):
    """Six steps of 3-D data with a random NaN pattern (any entry, whole steps included) and an HMM to fit."""
    cov = draw(st.sampled_from(sorted(GAUSS_HMMS)))
    y = draw(arrays(np.float64, (6, 3), elements=FINITE))
    holes = draw(arrays(bool, (6, 3), elements=SPARSE))
    holes[0] = False  # one complete step, so the start (k-means on complete steps) sees data
    return cov, np.where(holes, np.nan, y)


@settings(SETTINGS, max_examples=12)  # three models x a few NaN patterns; each example fits (a compiled EM step)
@given(problem=gaussian_hmm_data())
def test_gaussian_hmms_with_nan_entries_equal_enumeration_and_em_ascends(problem, x64):
    """Any NaN pattern: the log-likelihood equals enumeration over every path of the observed entries'
    marginal densities, and one EM step (EM over the missing entries) does not lower log-lik + log prior."""
    from scipy import stats

    from pssm.inference import fit_em, marginal_log_likelihood

    cov, y = problem
    model = GAUSS_HMMS[cov]
    rng = np.random.default_rng(0)
    params = model.initialize(jax.random.key(0), np.vstack([y[~np.isnan(y).any(1)], rng.normal(size=(8, 3))]))
    e = params.emissions
    covs = np.asarray(e.covs, float)
    lik = np.zeros((6, 2))
    for t in range(6):
        o = ~np.isnan(y[t])
        for s in range(2):
            c = np.diag(covs[s]) if cov == "diagonal" else covs[s] if cov == "full" else covs
            if o.any():
                lik[t, s] = stats.multivariate_normal(np.asarray(e.means[s])[o], c[np.ix_(o, o)]).logpdf(y[t][o])
    log_pi = np.asarray(model.log_initial(params), float)
    log_A = np.log(np.asarray(model.transition_component.matrix(params.transitions), float))
    ref, *_ = enumerate_hmm(log_pi, np.broadcast_to(log_A, (5, 2, 2)), lik)
    np.testing.assert_allclose(float(marginal_log_likelihood(model, params, y)), ref, rtol=1e-8, atol=1e-8)
    fit = fit_em(jax.random.key(1), model, params, y, num_iters=2, tol=0.0)
    obj = np.asarray(fit.log_objective)
    assert np.isfinite(obj).all() and obj[1] >= obj[0] - 1e-8 * abs(obj[0]), obj
