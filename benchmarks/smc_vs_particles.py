"""pssm's SMC engine vs the ``particles`` library (Chopin) on one 1-D linear Gaussian model and the same saved data.

Model: x_0 ~ N(0, 1), x_t = 0.9 x_{t-1} + N(0, 1), y_t = x_t + N(0, 0.5^2).

* Bootstrap filter, systematic resampling at ESS < N/2: particle-steps/s (N=1e5, T=1e3) and speedup.
* PaRIS (N=1000, Ñ=2, hybrid rejection backward kernel in both libraries) for the additive functional
  S = sum_t x_t: backward draws/s, speedup, RMSE of S/T against the RTS smoother over repeated runs.  The timed
  runs of both libraries happen on one pinned CPU (a child process pinned before JAX starts, and particles workers
  pinned to the same CPU; particles' collector is single-threaded numpy), so the speedup compares like with like;
  the all-cores figure (XLA's default thread pool) is also reported.  The IMH backward kernel (Dau & Chopin) is
  timed beside it.
* Peak resident memory of a PaRIS run at T=1e5 over T=1e3 (fresh processes; O(N) memory means ratio ~1).

``particles`` 0.4 needs numpy<2, so it runs in its own virtual environment (``benchmarks/.venv-particles``,
created on first use) driven as a subprocess; its timings are taken inside that process (import excluded).  Runs
of the two libraries alternate.  The last line printed is one JSON object.  ``--quick`` shrinks every size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-particles"
OUT = HERE / "output"
RHO, SX, SY = 0.9, 1.0, 0.5

PARTICLES_WORKER = r"""
import json, sys, time
import numpy as np
import particles
from particles import state_space_models as ssms
from particles import distributions as dists
from particles import collectors

RHO, SX, SY = 0.9, 1.0, 0.5

class LG(ssms.StateSpaceModel):
    def PX0(self):
        return dists.Normal(loc=0.0, scale=1.0)
    def PX(self, t, xp):
        return dists.Normal(loc=RHO * xp, scale=SX)
    def PY(self, t, xp, x):
        return dists.Normal(loc=x, scale=SY)
    def upper_bound_log_pt(self, t):
        return -0.5 * np.log(2 * np.pi) - np.log(SX)
    def add_func(self, t, xp, x):
        return x

mode, path, N, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
y = np.load(path)["y"]
np.random.seed(seed)
data = list(y)
fk = ssms.Bootstrap(ssm=LG(), data=data)
if mode == "pf":
    alg = particles.SMC(fk=fk, N=N, resampling="systematic", ESSrmin=0.5, collect=None, store_history=False,
                        verbose=False)
else:
    alg = particles.SMC(fk=fk, N=N, resampling="systematic", ESSrmin=0.5, collect=[collectors.Paris(Nparis=2)],
                        store_history=False, verbose=False)
t0 = time.perf_counter()
alg.run()
dt = time.perf_counter() - t0
out = {"time": dt, "loglik": float(alg.logLt)}
if mode == "paris":
    out["estimate"] = float(np.asarray(alg.summaries.paris[-1]).ravel()[0])
print(json.dumps(out))
"""


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import particles, numpy"], capture_output=True).returncode == 0
    if not ok:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy<2", "particles==0.4"], check=True)
    return py


def _pin(cpu: int | None):
    """A ``preexec_fn`` pinning a child process to one CPU (``None``: no pinning)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def run_particles(py: Path, mode: str, data: Path, n: int, seed: int, cpu: int | None = None) -> dict:
    worker = OUT / "particles_worker.py"
    worker.write_text(PARTICLES_WORKER)
    proc = subprocess.run(
        [str(py), str(worker), mode, str(data), str(n), str(seed)], capture_output=True, text=True, preexec_fn=_pin(cpu)
    )
    if proc.returncode != 0:
        raise RuntimeError(f"particles worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- pssm side
def _model():
    import jax.numpy as jnp
    import numpyro.distributions as dist

    from pssm.protocol import SSM

    class ScalarLG(SSM):
        """The benchmark model with scalar states (numpyro Normal), as in the particles model."""

        def initial(self, params, inputs=None):
            return dist.Normal(jnp.zeros(()), 1.0)

        def transition(self, params, state, t, inputs=None):
            return dist.Normal(RHO * state, SX)

        def emission(self, params, state, t, inputs=None):
            return dist.Normal(state, SY)

        def log_transition_bound(self, params, t, inputs=None):
            return -0.5 * jnp.log(2 * jnp.pi) - jnp.log(SX)

        @property
        def emission_shape(self):
            return ()

        def param_constraints(self):
            return ()

    return ScalarLG()


def _rts_sum(y):
    import jax.numpy as jnp

    from pssm.inference.exact.kalman import kalman_smoother
    from pssm.models.nonlinear.linear_gaussian import LinearGaussianSSM

    p = LinearGaussianSSM(1, 1).make_params(
        dynamics_weights=[[RHO]], dynamics_cov=[[SX**2]], emission_weights=[[1.0]], emission_cov=[[SY**2]]
    )
    return float(kalman_smoother(p, jnp.asarray(y)[:, None]).smoothed_means.sum())


def _simulate(key_seed: int, T: int):
    import jax
    import numpy as np

    from pssm.protocol import simulate

    _, y = simulate(jax.random.key(key_seed), _model(), (), T)
    return np.asarray(y, dtype=np.float64)


def rss_child(T: int, N: int) -> None:
    """Run PaRIS over T steps in this (fresh) process and print the peak RSS in MiB."""
    import jax

    from pssm.inference.smc import AdditiveFunctional, paris

    y = _simulate(7, T)
    fn = AdditiveFunctional.from_fn(lambda xp, x, t: x, lambda x: x)
    res = paris(jax.random.key(0), _model(), (), y, N, fn, num_backward=2)
    jax.block_until_ready(res.estimate)
    print(json.dumps({"T": T, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


def _paris_runner(model, n, backward):
    import jax

    from pssm.inference.smc import AdditiveFunctional, paris

    fn = AdditiveFunctional.from_fn(lambda xp, x, t: x, lambda x: x)
    return jax.jit(
        lambda k, y: (
            paris(
                k, model, (), y, n, fn, num_backward=2, backward=backward, resampling="systematic", ess_threshold=0.5
            ).estimate
        )
    )


def paris_timing_child(data: str, n: int, reps: int, cpu: int) -> None:
    """Time PaRIS (hybrid rejection and IMH kernels) in this process, pinned to ``cpu`` before JAX starts, alternating
    with ``particles`` runs pinned to the same CPU; print one JSON line."""
    os.sched_setaffinity(0, {cpu})
    import jax
    import numpy as np

    from pssm.inference.smc import MCMCBackward, RejectionBackward

    py = ensure_venv()
    y = np.load(data)["y"]
    model = _model()
    runs = {"rejection": _paris_runner(model, n, RejectionBackward()), "mcmc": _paris_runner(model, n, MCMCBackward())}
    for f in runs.values():
        jax.block_until_ready(f(jax.random.key(0), y))  # compile
    times = {k: [] for k in runs}
    theirs, est_theirs = [], []
    for r in range(reps):
        for name, f in runs.items():
            for i in range(5):  # five of ours (each ~25 ms) per particles run (~30 s)
                t0 = time.perf_counter()
                jax.block_until_ready(f(jax.random.key(100 + 5 * r + i), y))
                times[name].append(time.perf_counter() - t0)
        res = run_particles(py, "paris", Path(data), n, 100 + r, cpu)
        theirs.append(res["time"])
        est_theirs.append(res["estimate"])
    print(
        json.dumps(
            {
                "pssm_rejection": times["rejection"],
                "pssm_mcmc": times["mcmc"],
                "particles": theirs,
                "particles_estimates": est_theirs,
                "cpu": cpu,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (< 1 min)")
    ap.add_argument("--repeats", type=int, default=None, help="alternating runs per library")
    ap.add_argument("--rss-child", nargs=2, type=int, metavar=("T", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--paris-child", nargs=4, metavar=("DATA", "N", "REPS", "CPU"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    if args.paris_child:
        d, n, r, c = args.paris_child
        paris_timing_child(d, int(n), int(r), int(c))
        return

    import jax
    import numpy as np

    from pssm.inference.smc import MCMCBackward, RejectionBackward, particle_filter

    q = args.quick
    pf_n, pf_t = (10_000, 100) if q else (100_000, 1000)
    pa_n, pa_t = (200, 20) if q else (1000, 100)
    rss_t = (100, 3_000) if q else (1_000, 100_000)
    reps = args.repeats or (2 if q else 3)
    OUT.mkdir(exist_ok=True)
    py = ensure_venv()
    model = _model()

    # ---- bootstrap filter
    y_pf = _simulate(1, pf_t)
    pf_path = OUT / "smc_bench_pf.npz"
    np.savez(pf_path, y=y_pf)
    pf = jax.jit(
        lambda k, y: particle_filter(k, model, (), y, pf_n, resampling="systematic", ess_threshold=0.5).log_likelihood
    )
    jax.block_until_ready(pf(jax.random.key(0), y_pf))  # compile
    ours, theirs, ll_ours, ll_theirs = [], [], [], []
    for r in range(reps):
        t0 = time.perf_counter()
        ll_ours.append(float(jax.block_until_ready(pf(jax.random.key(r + 1), y_pf))))
        ours.append(time.perf_counter() - t0)
        res = run_particles(py, "pf", pf_path, pf_n, r)
        theirs.append(res["time"])
        ll_theirs.append(res["loglik"])

    # ---- PaRIS.  Timing: a child process pinned to one CPU (before JAX starts) alternates its runs with
    # `particles` runs pinned to the same CPU, so both use one core (numpy runs this collector on one core).  The
    # all-cores figure (this process, XLA's default thread pool) is reported beside it.
    y_pa = _simulate(2, pa_t)
    pa_path = OUT / "smc_bench_paris.npz"
    np.savez(pa_path, y=y_pa)
    truth = _rts_sum(y_pa) / pa_t
    cpu = sorted(os.sched_getaffinity(0))[-1]
    proc = subprocess.run(
        [sys.executable, __file__, "--paris-child", str(pa_path), str(pa_n), str(reps), str(cpu)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    p_ours, m_ours, p_theirs = child["pssm_rejection"], child["pssm_mcmc"], child["particles"]
    est_theirs = child["particles_estimates"]

    run_paris = _paris_runner(model, pa_n, RejectionBackward())
    run_mcmc = _paris_runner(model, pa_n, MCMCBackward())
    jax.block_until_ready(run_paris(jax.random.key(0), y_pa))
    p_all = []
    for r in range(max(reps, 5)):
        t0 = time.perf_counter()
        jax.block_until_ready(run_paris(jax.random.key(300 + r), y_pa))
        p_all.append(time.perf_counter() - t0)
    # RMSE of S/T against RTS over repeated runs (same data, same N)
    est_all = np.asarray(jax.vmap(lambda k: run_paris(k, y_pa))(jax.random.split(jax.random.key(999), 25)))
    rmse_ours = float(np.sqrt(np.mean((est_all / pa_t - truth) ** 2)))
    rmse_theirs = float(np.sqrt(np.mean((np.asarray(est_theirs) / pa_t - truth) ** 2)))
    est_mcmc = np.asarray(jax.vmap(lambda k: run_mcmc(k, y_pa))(jax.random.split(jax.random.key(998), 25)))
    rmse_mcmc = float(np.sqrt(np.mean((est_mcmc / pa_t - truth) ** 2)))

    # ---- memory: fresh processes at two lengths
    rss = {}
    for T in rss_t:
        proc = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(T), str(pa_n)],
            capture_output=True,
            text=True,
            env=dict(os.environ),
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        rss[T] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mib"]

    med = lambda xs: float(np.median(xs))  # noqa: E731
    out = {
        "benchmark": "smc_vs_particles",
        "quick": q,
        "pf_num_particles": pf_n,
        "pf_num_timesteps": pf_t,
        "pf_seconds_pssm": med(ours),
        "pf_seconds_particles": med(theirs),
        "pf_particle_steps_per_s": pf_n * pf_t / med(ours),
        "pf_speedup_vs_particles": med(theirs) / med(ours),
        "pf_loglik_pssm_mean": float(np.mean(ll_ours)),
        "pf_loglik_particles_mean": float(np.mean(ll_theirs)),
        "paris_num_particles": pa_n,
        "paris_num_backward": 2,
        "paris_num_timesteps": pa_t,
        "paris_seconds_pssm": med(p_ours),
        "paris_seconds_particles": med(p_theirs),
        "paris_backward_draws_per_s": pa_n * 2 * (pa_t - 1) / med(p_ours),
        "paris_speedup_vs_particles": med(p_theirs) / med(p_ours),
        "paris_timing_cpus": 1,
        "paris_seconds_pssm_all_cores": med(p_all),
        "paris_speedup_vs_particles_all_cores": med(p_theirs) / med(p_all),
        "paris_rmse_vs_rts": rmse_ours,
        "particles_paris_rmse_vs_rts": rmse_theirs,
        "paris_rmse_runs_pssm": int(est_all.size),
        "paris_mcmc_kernel_seconds_pssm": med(m_ours),
        "paris_mcmc_kernel_backward_draws_per_s": pa_n * 2 * (pa_t - 1) / med(m_ours),
        "paris_mcmc_kernel_speedup_vs_particles": med(p_theirs) / med(m_ours),
        "paris_mcmc_kernel_rmse_vs_rts": rmse_mcmc,
        "paris_rmse_runs_particles": len(est_theirs),
        "paris_rss_timesteps": list(rss_t),
        "paris_peak_rss_mib": [rss[t] for t in rss_t],
        "paris_peak_rss_ratio_T1e5_vs_T1e3": rss[rss_t[1]] / rss[rss_t[0]],
        "repeats": reps,
        "jax_backend": jax.default_backend(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
