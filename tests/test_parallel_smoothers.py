"""Parallel-in-time (associative scan) smoothers equal the sequential ones to 1e-6 in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pssm.inference import hmm_log_likelihood, hmm_smoother, kalman_log_likelihood, kalman_smoother
from pssm.models import LinearGaussianSSM
from pssm.models.testing import enumerate_hmm
from pssm.protocol import simulate


@pytest.mark.parametrize("T,S,length", [(1, 3, 1), (3, 2, 3), (37, 4, 37), (37, 4, 20)])
def test_parallel_forward_backward_equals_sequential_and_enumeration(T, S, length, x64):
    rng = np.random.default_rng(T + S)
    A = rng.dirichlet(np.ones(S), S)
    A[0, 1] = 0.0  # an impossible move
    A /= A.sum(1, keepdims=True)
    li = jnp.log(jnp.asarray(rng.dirichlet(np.ones(S))))
    lt = jnp.log(jnp.asarray(A))
    ll = jnp.asarray(3.0 * rng.normal(size=(T, S)))
    seq = hmm_smoother(li, lt, ll, length)
    par = hmm_smoother(li, lt, ll, length, parallel=True)
    valid = np.arange(T) < length
    np.testing.assert_allclose(float(par.log_likelihood), float(seq.log_likelihood), atol=1e-10)
    for name in ("filtered_probs", "predicted_probs", "smoothed_probs"):
        np.testing.assert_allclose(
            np.asarray(getattr(par, name))[valid], np.asarray(getattr(seq, name))[valid], atol=1e-10, err_msg=name
        )
    np.testing.assert_allclose(np.asarray(par.expected_transitions), np.asarray(seq.expected_transitions), atol=1e-10)
    np.testing.assert_allclose(
        float(hmm_log_likelihood(li, lt, ll, length, parallel=True)), float(seq.log_likelihood), atol=1e-10
    )
    if T <= 4 and length == T:
        logZ, marg, *_ = enumerate_hmm(li, lt, ll)
        np.testing.assert_allclose(float(par.log_likelihood), float(logZ), atol=1e-10)
        np.testing.assert_allclose(np.asarray(par.smoothed_probs), np.asarray(marg), atol=1e-10)


@pytest.mark.parametrize("dims,T", [((2, 1, 0), 1), ((3, 2, 1), 12)])
def test_parallel_kalman_equals_sequential_with_missing_rows(dims, T, x64):
    model = LinearGaussianSSM(*dims)
    params = model.random_params(jax.random.PRNGKey(T))
    u = None if dims[2] == 0 else jax.random.normal(jax.random.PRNGKey(5), (T, dims[2]))
    _, y = simulate(jax.random.PRNGKey(1), model, params, T, u)
    if T > 3:
        y = y.at[T // 3].set(jnp.nan)
    seq = kalman_smoother(params, y, u)
    par = kalman_smoother(params, y, u, parallel=True)
    for name, a, b in zip(seq._fields, seq, par, strict=True):
        if a.size:
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-8, rtol=1e-8, err_msg=name)
    if dims[2] == 0:
        return  # the score check below compiles two gradients: once (with inputs) is enough
    g_seq = jax.grad(lambda p: kalman_log_likelihood(p, y, u))(params)
    g_par = jax.grad(lambda p: kalman_log_likelihood(p, y, u, parallel=True))(params)
    for name, a, b in zip(params._fields, g_seq, g_par, strict=True):
        if name.endswith("_cov"):  # derivatives along symmetric perturbations (Cholesky reads one triangle)
            a, b = a + a.T, b + b.T
        if a.size:
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-7, rtol=1e-7, err_msg=name)
