"""Variational smoothing (SVI, Gaussian-Markov guide) against exact and particle references.

* Linear Gaussian SSM (random stable params): max abs error of the smoothed means and covariances against the RTS
  smoother, and the ELBO gap :math:`\\log p(y) - \\mathrm{ELBO}` (the KL to the posterior; 0 at the optimum, as the
  family holds the exact posterior).
* Stochastic volatility (mu=-1, phi=0.95, sigma=0.3): smoothed means and sds against PaRIS marginal moments (the
  additive functional :math:`h_t = e_t (x_t, x_t^2)`), pooled over independent runs; the pooled Monte Carlo sd is
  reported beside the differences so the Gaussian-approximation gap can be read off.
* Seconds: first call (compiles) and a repeat call (runs only) of the variational smoother.

``--quick`` (under a minute): LGSSM D=2, T=30; SV T=50; 2000 SVI steps; PaRIS 4 x 1000 particles.  Full: LGSSM
D=3, T=200; SV T=200; 5000 steps; PaRIS 8 x 5000 particles.  Float32.  The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from pssm import simulate
from pssm.inference import kalman_smoother
from pssm.inference.smc import AdditiveFunctional, paris
from pssm.inference.variational.smoothing import variational_smoother
from pssm.models import LinearGaussianSSM, StochasticVolatility


def _timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def lgssm(T: int, D: int, steps: int) -> dict:
    model = LinearGaussianSSM(D, 2)
    params = model.random_params(jax.random.PRNGKey(0))
    _, y = simulate(jax.random.PRNGKey(1), model, params, T)
    sm = kalman_smoother(params, y)
    r, t_first = _timed(lambda: variational_smoother(jax.random.PRNGKey(2), model, params, y, num_steps=steps))
    _, t_again = _timed(lambda: variational_smoother(jax.random.PRNGKey(3), model, params, y, num_steps=steps))
    sd = np.sqrt(np.diagonal(np.asarray(sm.smoothed_covs), axis1=-2, axis2=-1))
    err = np.abs(np.asarray(r.smoothed_means) - np.asarray(sm.smoothed_means))
    return {
        "lgssm_T": T,
        "lgssm_state_dim": D,
        "lgssm_vi_smoothed_mean_max_err_vs_rts": float(err.max()),
        "lgssm_vi_smoothed_mean_max_err_in_posterior_sds": float((err / sd).max()),
        "lgssm_vi_smoothed_cov_max_err_vs_rts": float(
            np.abs(np.asarray(r.smoothed_covariances) - np.asarray(sm.smoothed_covs)).max()
        ),
        "lgssm_vi_elbo_gap": float(np.mean(np.asarray(r.losses)[-200:]) + float(sm.log_likelihood)),
        "lgssm_vi_seconds_first_call": t_first,
        "lgssm_vi_seconds_repeat_call": t_again,
    }


def sv(T: int, steps: int, num_particles: int, runs: int) -> dict:
    model = StochasticVolatility()
    params = model.make_params()
    _, y = simulate(jax.random.PRNGKey(7), model, params, T)
    r, t_first = _timed(lambda: variational_smoother(jax.random.PRNGKey(2), model, params, y, num_steps=steps))
    _, t_again = _timed(lambda: variational_smoother(jax.random.PRNGKey(3), model, params, y, num_steps=steps))
    eye = jnp.eye(T)
    moments = AdditiveFunctional.from_fn(
        lambda xp, x, t: jnp.stack([eye[t] * x, eye[t] * x**2]), lambda x0: jnp.stack([eye[0] * x0, eye[0] * x0**2])
    )
    t0 = time.perf_counter()
    est = np.stack(
        [
            np.asarray(paris(jax.random.PRNGKey(100 + k), model, params, y, num_particles, moments).estimate)
            for k in range(runs)
        ]
    )  # (runs, 2, T)
    t_paris = time.perf_counter() - t0
    means = est[:, 0]
    m_ref = means.mean(0)
    sd_ref = np.sqrt(np.clip(est[:, 1].mean(0) - m_ref**2, 0.0, None))
    mc_sd = means.std(0, ddof=1) / np.sqrt(runs)  # of the pooled reference mean, per step
    m_vi = np.asarray(r.smoothed_means[:, 0])
    sd_vi = np.sqrt(np.asarray(r.smoothed_covariances[:, 0, 0]))
    diff = np.abs(m_vi - m_ref)
    ratio = sd_vi / sd_ref
    return {
        "sv_T": T,
        "sv_paris_particles": num_particles,
        "sv_paris_runs": runs,
        "sv_vi_vs_paris_mean_max_abs_diff": float(diff.max()),
        "sv_vi_vs_paris_mean_mean_abs_diff": float(diff.mean()),
        "sv_paris_pooled_mc_sd_max": float(mc_sd.max()),
        "sv_paris_pooled_mc_sd_mean": float(mc_sd.mean()),
        "sv_vi_vs_paris_mean_max_abs_diff_in_mc_sds": float((diff / mc_sd).max()),
        "sv_posterior_sd_mean": float(sd_ref.mean()),
        "sv_vi_vs_paris_sd_ratio_mean": float(ratio.mean()),
        "sv_vi_vs_paris_sd_ratio_min": float(ratio.min()),
        "sv_vi_vs_paris_sd_ratio_max": float(ratio.max()),
        "sv_vi_seconds_first_call": t_first,
        "sv_vi_seconds_repeat_call": t_again,
        "sv_paris_seconds_all_runs": t_paris,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (< 1 min)")
    args = ap.parse_args()
    q = args.quick
    steps = 2000 if q else 5000
    t0 = time.perf_counter()
    out = {"quick": q, "num_steps": steps, "backend": jax.default_backend(), "machine": platform.machine()}
    out.update(lgssm(30 if q else 200, 2 if q else 3, steps))
    out.update(sv(50 if q else 200, steps, 1000 if q else 5000, 4 if q else 8))
    out["seconds"] = time.perf_counter() - t0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
