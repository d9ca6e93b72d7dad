"""Exact inference against dense/enumeration references (float64), plus timings.

Prints one JSON object as its last line with ``kalman_max_abs_err`` (log-likelihood, smoothed means, covariances
and lag-one cross-covariances against a dense joint Gaussian), ``forward_backward_max_abs_err`` (log-likelihood,
marginals and pairwise marginals against brute-force enumeration), ``viterbi_mismatches`` (steps where the Viterbi
path differs from the enumerated MAP path, summed over problems) and timings of jitted calls.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

jax.config.update("jax_enable_x64", True)  # a script, not the library: references are float64

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from pssm.inference import hmm_smoother, hmm_viterbi, kalman_smoother  # noqa: E402
from pssm.models import LinearGaussianSSM  # noqa: E402
from pssm.models.testing import dense_lgssm_posterior, enumerate_hmm  # noqa: E402
from pssm.protocol import simulate  # noqa: E402


def kalman_errors(num_problems: int, T: int) -> float:
    err = 0.0
    rng = np.random.default_rng(0)
    for i in range(num_problems):
        Dx, Dy, Du = (int(v) for v in rng.integers(1, 4, size=3))
        model = LinearGaussianSSM(Dx, Dy, Du)
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(i), 3)
        params = model.random_params(k1)
        u = jax.random.normal(k3, (T, Du))
        _, y = simulate(k2, model, params, T, u)
        r = kalman_smoother(params, y, u)
        ll, m, P, C = dense_lgssm_posterior(params, y, u)
        err = max(
            err,
            abs(float(r.log_likelihood) - ll),
            float(np.abs(r.smoothed_means - m).max()),
            float(np.abs(r.smoothed_covs - P).max()),
            float(np.abs(r.smoothed_cross_covs - C).max()),
        )
    return err


def fb_errors(num_problems: int, T: int) -> tuple[float, int]:
    err, mismatches = 0.0, 0
    for i in range(num_problems):
        S = 2 + i % 3
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(100 + i), 3)
        li = jax.nn.log_softmax(jax.random.normal(k1, (S,)))
        lt = jax.nn.log_softmax(2 * jax.random.normal(k2, (T - 1, S, S)), -1)
        ll = 3 * jax.random.normal(k3, (T, S))
        logZ, marg, pair, path, _, _ = enumerate_hmm(li, lt, ll)
        post = hmm_smoother(li, lt, ll, return_pairwise=True)
        err = max(
            err,
            abs(float(post.log_likelihood) - logZ),
            float(np.abs(post.smoothed_probs - marg).max()),
            float(np.abs(post.pairwise_probs - pair).max()),
        )
        mismatches += int(np.sum(np.asarray(hmm_viterbi(li, lt, ll)) != path))
    return err, mismatches


def timings(T: int, S: int, repeats: int = 5) -> dict:
    li = jnp.log(jnp.ones(S) / S)
    lt = jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(0), (S, S)), -1)
    ll = jax.random.normal(jax.random.PRNGKey(1), (T, S))
    f = jax.jit(hmm_smoother)
    jax.block_until_ready(f(li, lt, ll))
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(f(li, lt, ll))
    fb = (time.perf_counter() - t0) / repeats
    model = LinearGaussianSSM(4, 4)
    params = model.random_params(jax.random.PRNGKey(2))
    _, y = simulate(jax.random.PRNGKey(3), model, params, T)
    g = jax.jit(kalman_smoother)
    jax.block_until_ready(g(params, y))
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(g(params, y))
    ks = (time.perf_counter() - t0) / repeats
    return {"forward_backward_seconds": fb, "kalman_smoother_seconds": ks, "timing_T": T, "timing_S": S}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer problems and shorter sequences (< 1 min)")
    args = ap.parse_args()
    n, T_kf, T_fb, T_time = (2, 8, 5, 2000) if args.quick else (20, 25, 8, 100_000)
    kf = kalman_errors(n, T_kf)
    fb, vm = fb_errors(n, T_fb)
    out = {
        "kalman_max_abs_err": kf,
        "forward_backward_max_abs_err": fb,
        "viterbi_mismatches": vm,
        "num_problems": n,
        "dtype": "float64",
        **timings(T_time, 5),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
