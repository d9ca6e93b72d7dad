"""Speed where users feel it: second calls, first fits against dynamax, parallel smoothers, scaling, multi-process.

Prints one JSON object as its last line with ``second_call_seconds`` (median of 5 repeated calls at T=200, same
shapes: ``kalman_smoother``, ``hmm_smoother``, ``hmm_viterbi``, ``simulate``, ``paris`` with an inline lambda),
``first_fit_seconds`` / ``dynamax_first_fit_seconds`` (a 2-state Gaussian HMM, 50 EM iterations on 2,048 points,
each in a fresh process: import excluded, compile included; alternating, median of 3), ``parallel_kalman_max_abs_err``
/ ``parallel_fb_max_abs_err`` (float64, against the sequential versions), ``parallel_over_sequential_seconds_T1e5``
(CPU, Kalman and forward-backward), ``pf_cost_slope_N`` / ``pf_cost_slope_T`` / ``paris_cost_slope_N`` (log-log
slopes of the compiled run time), ``multiprocess_equals_single`` (2 CPU processes with jax.distributed),
``ohg_fit_seconds`` / ``ohg_state_acc`` / ``ohg_adj_bal_acc`` (the one-hot HMM-GLM fit at the Table-1 size by
``hmmglm_table1.py --models ohg`` in a fresh process; 3 seeds, 1 with ``--quick``).  The speed-ups against
``particles`` are measured by ``smc_vs_particles.py``.  ``--quick``: T=1e4 for the parallel timing, fewer sizes, one
first-fit pair, one OHG seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIRST_FIT = {
    "pssm": """
import time, numpy as np, jax, jax.numpy as jnp
from pssm.models import HMM, GaussianEmissions
from pssm.inference import fit_em
y = np.load("{data}")
t0 = time.perf_counter()
m = HMM(2, GaussianEmissions(1))
r = fit_em(jax.random.PRNGKey(0), m, m.initialize(jax.random.PRNGKey(1), y), y, num_iters=50, tol=0.0)
jax.block_until_ready(r.params)
print(time.perf_counter() - t0)
""",
    "dynamax": """
import time, numpy as np, jax, jax.numpy as jnp
from dynamax.hidden_markov_model import GaussianHMM
y = jnp.asarray(np.load("{data}"))
t0 = time.perf_counter()
hmm = GaussianHMM(2, 1)
params, props = hmm.initialize(jax.random.PRNGKey(1), method="kmeans", emissions=y)
params, lls = hmm.fit_em(params, props, y, num_iters=50, verbose=False)
jax.block_until_ready(lls)
print(time.perf_counter() - t0)
""",
}


def _median_call(fn, repeats: int = 5) -> float:
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def second_calls(T: int = 200) -> dict:
    import jax
    import numpy as np

    from pssm import simulate
    from pssm.inference import hmm_smoother, hmm_viterbi, kalman_smoother
    from pssm.inference.smc import paris
    from pssm.models import LinearGaussianSSM

    lg = LinearGaussianSSM(2, 1)
    p = lg.random_params(jax.random.PRNGKey(0))
    _, y = simulate(jax.random.PRNGKey(1), lg, p, T)
    rng = np.random.default_rng(0)
    li, lt, ll = np.log(np.full(3, 1 / 3)), np.log(np.full((3, 3), 1 / 3)), rng.normal(size=(T, 3))
    calls = {
        "kalman_smoother": lambda: kalman_smoother(p, y).smoothed_means,
        "hmm_smoother": lambda: hmm_smoother(li, lt, ll).smoothed_probs,
        "hmm_viterbi": lambda: hmm_viterbi(li, lt, ll),
        "simulate": lambda: simulate(jax.random.PRNGKey(2), lg, p, T)[1],
        "paris": lambda: paris(jax.random.PRNGKey(3), lg, p, y, 100, lambda xp, x, t: x * xp).estimate,
    }
    return {name: round(_median_call(fn), 5) for name, fn in calls.items()}


def first_fits(pairs: int) -> tuple[float, float | None]:
    import numpy as np

    rng = np.random.default_rng(0)
    z = np.repeat(rng.integers(0, 2, 64), 32)
    y = (np.where(z == 1, 2.0, -1.0) + rng.normal(size=z.size))[:, None]
    path = Path("/tmp/pssm_speed_first_fit.npy")
    np.save(path, y)
    ours, theirs = [], []
    for _ in range(pairs):
        for name, out in (("pssm", ours), ("dynamax", theirs)):
            proc = subprocess.run(
                [sys.executable, "-c", FIRST_FIT[name].format(data=path)], capture_output=True, text=True
            )
            if proc.returncode == 0:
                out.append(float(proc.stdout.strip().splitlines()[-1]))
            elif name == "dynamax":
                print(f"dynamax unavailable: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    return statistics.median(ours), (statistics.median(theirs) if theirs else None)


def parallel(T_time: int) -> dict:
    code = f"""
import json, time, jax, numpy as np
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from pssm import simulate
from pssm.models import LinearGaussianSSM
from pssm.inference import kalman_smoother, hmm_smoother
m = LinearGaussianSSM(3, 2); p = m.random_params(jax.random.PRNGKey(0))
_, y = simulate(jax.random.PRNGKey(1), m, p, 500)
a, b = kalman_smoother(p, y), kalman_smoother(p, y, parallel=True)
ek = max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(a, b) if u.size)
rng = np.random.default_rng(0); S = 6
li = jnp.log(jnp.full(S, 1 / S)); lt = jnp.log(jnp.asarray(rng.dirichlet(np.ones(S), S)))
ll = jnp.asarray(rng.normal(size=(500, S)))
a, b = hmm_smoother(li, lt, ll), hmm_smoother(li, lt, ll, parallel=True)
ef = max(float(jnp.max(jnp.abs(getattr(a, f) - getattr(b, f)))) for f in ("smoothed_probs", "filtered_probs"))
ef = max(ef, abs(float(a.log_likelihood - b.log_likelihood)))
_, y = simulate(jax.random.PRNGKey(2), m, p, {T_time})
ll = jnp.asarray(rng.normal(size=({T_time}, S)))
def best(f):
    jax.block_until_ready(f()); ts = []
    for _ in range(3):
        t0 = time.perf_counter(); jax.block_until_ready(f()); ts.append(time.perf_counter() - t0)
    return min(ts)
ks = best(lambda: kalman_smoother(p, y).smoothed_means)
kp = best(lambda: kalman_smoother(p, y, parallel=True).smoothed_means)
fs = best(lambda: hmm_smoother(li, lt, ll).smoothed_probs)
fp = best(lambda: hmm_smoother(li, lt, ll, parallel=True).smoothed_probs)
print(json.dumps(dict(ek=ek, ef=ef, kalman=kp / ks, fb=fp / fs, ks=ks, kp=kp, fs=fs, fp=fp)))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "parallel_kalman_max_abs_err": r["ek"],
        "parallel_fb_max_abs_err": r["ef"],
        f"parallel_over_sequential_seconds_T{T_time:.0e}".replace("+0", ""): {"kalman": r["kalman"], "fb": r["fb"]},
        "parallel_seconds": {k: r[k] for k in ("ks", "kp", "fs", "fp")},
    }


def slopes(quick: bool) -> dict:
    import jax
    import numpy as np

    from pssm import simulate
    from pssm.inference.smc import paris, particle_filter
    from pssm.models import LinearGaussianSSM

    lg = LinearGaussianSSM(1, 1)
    p = lg.random_params(jax.random.PRNGKey(0))
    _, y = simulate(jax.random.PRNGKey(1), lg, p, 1000)

    def slope(xs, fn) -> float:
        ts = [_median_call(lambda x=x: fn(x), repeats=3) for x in xs]
        return float(np.polyfit(np.log(xs), np.log(ts), 1)[0])

    Ns = [2_000, 20_000, 200_000] if quick else [1_000, 10_000, 100_000, 300_000]
    Ts = [250, 500, 1000]
    return {
        "pf_cost_slope_N": slope(
            Ns, lambda n: particle_filter(jax.random.PRNGKey(2), lg, p, y[:200], n).log_likelihood
        ),
        "pf_cost_slope_T": slope(
            Ts, lambda t: particle_filter(jax.random.PRNGKey(2), lg, p, y[:t], 10_000).log_likelihood
        ),
        "paris_cost_slope_N": slope(
            [500, 2_000, 8_000],
            lambda n: paris(jax.random.PRNGKey(3), lg, p, y[:100], n, lambda a, b, t: a * b).estimate,
        ),
    }


def ohg(seeds: int) -> dict:
    """The one-hot HMM-GLM fit at the Table-1 size (S=5, N=20, 10 x 5000 bins) in a fresh process, compile included:
    ``hmmglm_table1.py --models ohg`` (Gumbel-sampled M-steps for 5 iterations, then the deterministic finisher,
    tol 1e-4, at most 40 iterations)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "hmmglm_table1.py"), "--models", "ohg", "--seeds", str(seeds)]
    proc = subprocess.run([*cmd, "--tol", "1e-4"], capture_output=True, text=True, check=True, cwd=ROOT)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "ohg_fit_seconds": r["ohg_fit_seconds"],
        "ohg_state_acc": r["ohg_state_acc"],
        "ohg_adj_bal_acc": r["ohg_adj_bal_acc"],
        "ohg_em_iterations": r["ohg_em_iterations"],
        "ohg_em_converged": r["ohg_em_converged"],
        "ohg_fit_seconds_per_seed": [p["ohg"]["fit_seconds"] for p in r["per_seed"]],
        "ohg_seeds": seeds,
    }


def multiprocess() -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_multiprocess.py")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return proc.returncode == 0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out: dict = {"second_call_seconds": second_calls()}
    out["first_fit_seconds"], out["dynamax_first_fit_seconds"] = first_fits(1 if args.quick else 3)
    out.update(ohg(1 if args.quick else 3))
    out.update(parallel(10_000 if args.quick else 100_000))
    out.update(slopes(args.quick))
    out["multiprocess_equals_single"] = multiprocess()
    out["gpu_ran"] = False  # benchmarks/gpu.py is the accelerator run
    out["quick"] = args.quick
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
