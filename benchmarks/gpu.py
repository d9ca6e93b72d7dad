"""The accelerator run, prepared: one script sized to finish in under 8 minutes on one GPU.

Prints one JSON object as its last line with ``gpu_ran`` (a GPU was the default backend), ``device``,
``pf_particle_steps_per_s`` (bootstrap filter, linear Gaussian, N=1e6 particles, T=1e3, systematic resampling at
ESS < N/2; best of 3 after compiling), ``paris_backward_draws_per_s`` (PaRIS at N=1e5, T=200, 2 backward draws
per particle by the hybrid rejection kernel: N * 2 * (T-1) draws per run), ``kalman_{sequential,parallel}_seconds``
and ``fb_{sequential,parallel}_seconds`` at T=1e5 (RTS smoother of a 4-D state, 2-D emissions; forward-backward of
an 8-state HMM) with ``parallel_over_sequential_*`` ratios, and ``hmmglm_em_seconds_per_iter`` (one-hot HMM-GLM EM
at the Table-1 size: S=5, N=20, 10 sequences x 5000 bins).  Each part reports its own wall time.  ``--quick``
(sizes divided by 100, any backend) checks that the script runs.  Run it whenever a GPU is lent:
``.venv/bin/python benchmarks/gpu.py``.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np


def _best_time(fn, *args, repeats: int = 3) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return min(times)


def _lgssm(state_dim: int, emission_dim: int, T: int, seed: int = 0):
    from pssm import simulate
    from pssm.models import LinearGaussianSSM

    model = LinearGaussianSSM(state_dim, emission_dim)
    params = model.random_params(jax.random.PRNGKey(seed))
    _, y = simulate(jax.random.PRNGKey(seed + 1), model, params, T)
    return model, params, y


def particle_filter_rate(N: int, T: int) -> dict:
    from pssm.inference.smc import particle_filter

    model, params, y = _lgssm(1, 1, T)
    run = jax.jit(lambda k: particle_filter(k, model, params, y, N).log_likelihood)
    secs = _best_time(run, jax.random.key(0))
    return {"pf_N": N, "pf_T": T, "pf_seconds": secs, "pf_particle_steps_per_s": N * T / secs}


def paris_rate(N: int, T: int) -> dict:
    from pssm.inference.smc import paris

    model, params, y = _lgssm(1, 1, T)
    run = jax.jit(lambda k: paris(k, model, params, y, N, lambda xp, x, t: x * xp, num_backward=2).estimate)
    secs = _best_time(run, jax.random.key(1))
    return {"paris_N": N, "paris_T": T, "paris_seconds": secs, "paris_backward_draws_per_s": N * 2 * (T - 1) / secs}


def smoothers(T: int) -> dict:
    from pssm.inference import hmm_smoother, kalman_smoother

    _, params, y = _lgssm(4, 2, T, seed=3)
    out = {"smoother_T": T}
    for flag in (False, True):
        name = "parallel" if flag else "sequential"
        out[f"kalman_{name}_seconds"] = _best_time(lambda p, yy, f=flag: kalman_smoother(p, yy, parallel=f), params, y)
    rng = np.random.default_rng(0)
    S = 8
    li = jnp.log(jnp.full(S, 1.0 / S))
    lt = jnp.log(jnp.asarray(rng.dirichlet(np.ones(S) + 20 * np.eye(S)[0], S)))
    ll = jnp.asarray(rng.normal(size=(T, S)))
    for flag in (False, True):
        name = "parallel" if flag else "sequential"
        out[f"fb_{name}_seconds"] = _best_time(lambda a, b, c, f=flag: hmm_smoother(a, b, c, parallel=f), li, lt, ll)
    out["parallel_over_sequential_kalman"] = out["kalman_parallel_seconds"] / out["kalman_sequential_seconds"]
    out["parallel_over_sequential_fb"] = out["fb_parallel_seconds"] / out["fb_sequential_seconds"]
    return out


def hmmglm_em(T: int, sequences: int, iters: int) -> dict:
    from pssm.boundary import as_model_data
    from pssm.inference import fit_em
    from pssm.models import HMMGLM, simulate_hmm_glm, synthetic_hmm_glm

    truth = synthetic_hmm_glm(jax.random.PRNGKey(0), 5, 20)
    _, y = simulate_hmm_glm(jax.random.PRNGKey(1), truth.model, truth.params, T, num_sequences=sequences)
    model = HMMGLM(5, 20, basis="exponential", link=truth.model.emission_component.link, coupling_prior="onehot")
    data = as_model_data(model, y)
    p0 = model.initialize(jax.random.PRNGKey(2), data)
    fit = fit_em(jax.random.PRNGKey(3), model, p0, data, num_iters=iters, tol=0.0)
    return {"hmmglm_T": T, "hmmglm_sequences": sequences, "hmmglm_em_seconds_per_iter": fit.seconds_per_iter}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sizes / 100 on any backend (checks the script runs)")
    args = ap.parse_args(argv)
    q = 100 if args.quick else 1
    device = jax.devices()[0]
    out: dict = {"gpu_ran": device.platform == "gpu", "device": str(device.device_kind), "quick": args.quick}
    t_all = time.perf_counter()
    parts = [
        ("pf", lambda: particle_filter_rate(1_000_000 // q, 1000 // (10 if args.quick else 1))),
        ("paris", lambda: paris_rate(100_000 // q, 200)),
        ("smoothers", lambda: smoothers(100_000 // q)),
        ("hmmglm", lambda: hmmglm_em(5000 // q, 10, 6 if args.quick else 11)),
    ]
    for name, run in parts:
        t0 = time.perf_counter()
        out.update(run())
        out[f"{name}_wall_seconds"] = round(time.perf_counter() - t0, 2)
        print(f"{name}: {out[f'{name}_wall_seconds']} s", flush=True)
    out["seconds"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
