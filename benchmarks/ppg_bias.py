"""PPG vs PaRIS bias, particle Gibbs / PMMH vs NUTS, score ascent vs the Kalman MLE, and PG / PPG speed.

Setting (DESIGN §2): scalar linear Gaussian SSM, rho=0.9, sigma_x=1, sigma_y=0.5, T=200, Ñ=2, N=50; target
d log p(y) / d rho by autodiff of the Kalman log-likelihood.  PaRIS: multinomial resampling every step (as PPG's
conditional filter), exact backward kernel; PPG: k=40 iterations, burn-in k0=10.

Prints one JSON object as its last line: ``paris_bias``, ``paris_bias_se``, ``ppg_bias``, ``ppg_bias_se``,
``pg_vs_nuts_max_z`` (largest |z| of posterior mean/sd differences of (rho, q) between conjugate particle Gibbs and
NUTS on the exact Kalman likelihood, standardised by the ArviZ MCSEs), ``pmmh_vs_nuts_max_z``,
``score_ascent_rel_err_paris`` / ``_ppg`` (largest relative error of (rho, sigma_x) against the Kalman MLE),
``pg_iterations_per_s`` and ``ppg_iterations_per_s`` at N=100, T=1000.  ``--quick`` keeps every key (< 1 min).
"""

from __future__ import annotations

import argparse
import json
import time

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import MCMC, NUTS
from scipy.optimize import minimize

from pssm import to_arviz
from pssm.inference import kalman_log_likelihood
from pssm.inference.mcmc.csmc import csmc_kernel
from pssm.inference.mcmc.particle_gibbs import particle_gibbs
from pssm.inference.mcmc.pmmh import pmmh
from pssm.inference.mcmc.ppg import PPGState, paris_sweep, ppg_step
from pssm.inference.numpyro_model import sample_params
from pssm.inference.optim.score_ascent import score_ascent
from pssm.inference.smc import ExactBackward, FeynmanKac, paris, score_functional
from pssm.models import LinearGaussianSSM
from pssm.models.testing import ScalarLinearGaussian as ScalarLG
from pssm.models.testing import posterior_max_z, scalar_lg_conjugate_conditional
from pssm.models.testing import scalar_kalman_log_likelihood as scalar_kalman_ll
from pssm.protocol import simulate


def lg_params(rho, sx, sy):
    return LinearGaussianSSM(1, 1).make_params(
        dynamics_weights=[[rho]], dynamics_cov=[[sx**2]], emission_weights=[[1.0]], emission_cov=[[sy**2]]
    )


def bias_study(n_paris: int, n_ppg: int, k: int, k0: int, seeds: list[int]):
    """Biases pooled over data sets (one bias per data set, then averaged; se from the replicate variances)."""
    p = lg_params(0.9, 1.0, 0.5)
    m = ScalarLG()
    fk = FeynmanKac.bootstrap(m)
    h = score_functional(m, p)
    kern = ExactBackward()
    N, T = 50, 200
    pick = lambda est: est.dynamics_weights[0, 0]  # noqa: E731
    pb, pv, gb, gv = [], [], [], []
    for seed in seeds:
        _, y = simulate(jax.random.PRNGKey(seed), LinearGaussianSSM(1, 1), p, T)
        true = float(
            jax.grad(lambda r, y=y: kalman_log_likelihood(p._replace(dynamics_weights=r), y))(p.dynamics_weights)[0, 0]
        )
        run_paris = jax.jit(
            jax.vmap(
                lambda kk, y=y: pick(
                    paris(kk, m, p, y, N, h, resampling="multinomial", ess_threshold=1.0, backward=kern).estimate
                )
            )
        )
        e = np.asarray(run_paris(jax.random.split(jax.random.PRNGKey(100 + seed), n_paris)), np.float64)

        def ppg_one(kk, y=y):
            k1, k2 = jax.random.split(kk)
            r = paris_sweep(k1, fk, p, y, h, N, store=True, backward=kern)

            def body(st, kkk):
                st, info = ppg_step(kkk, st, fk, p, y, h, N, backward=kern)
                return st, pick(info.estimate)

            _, ests = jax.lax.scan(body, PPGState(r.path), jax.random.split(k2, k - 1))
            return jnp.concatenate([pick(r.estimate)[None], ests])[k0:].mean()

        e2 = np.asarray(jax.jit(jax.vmap(ppg_one))(jax.random.split(jax.random.PRNGKey(200 + seed), n_ppg)), np.float64)
        pb.append(e.mean() - true)
        pv.append(e.var(ddof=1) / e.size)
        gb.append(e2.mean() - true)
        gv.append(e2.var(ddof=1) / e2.size)
    n = len(seeds)
    return (
        float(np.mean(pb)),
        float(np.sqrt(np.sum(pv)) / n),
        float(np.mean(gb)),
        float(np.sqrt(np.sum(gv)) / n),
        [float(b) for b in pb],
        [float(b) for b in gb],
    )


A0, B0 = 3.0, 2.0


def conditional(key, path, y, pp):
    """Conjugate draws: rho | x, q ~ Normal; q | x, rho ~ InverseGamma (prior A0, B0)."""
    return scalar_lg_conjugate_conditional(key, path, y, pp, A0, B0)


def max_z(idata, ref, names):
    return posterior_max_z(idata, ref, names)


def mcmc_study(T: int, n_draws: int, n_warm: int):
    p = lg_params(0.8, 1.0, 0.5)
    _, y = simulate(jax.random.PRNGKey(0), LinearGaussianSSM(1, 1), p, T)
    prior = p._replace(**{k: None for k in p._fields})._replace(
        dynamics_weights=dist.Normal(0.0, 1.0).expand([1, 1]).to_event(2),
        dynamics_cov=dist.InverseGamma(A0, B0).expand([1, 1]).to_event(2),
    )

    def exact_model(y):
        pp = sample_params(prior, p)
        numpyro.factor("ll", scalar_kalman_ll(pp.dynamics_weights[0, 0], pp.dynamics_cov[0, 0], 0.25, y))

    mc = MCMC(
        NUTS(exact_model),
        num_warmup=n_warm,
        num_samples=n_draws,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mc.run(jax.random.PRNGKey(1), y)
    ref = az.from_numpyro(mc)
    names = ["dynamics_weights", "dynamics_cov"]
    r = particle_gibbs(
        jax.random.PRNGKey(2),
        ScalarLG(),
        p,
        y,
        conditional=conditional,
        num_samples=n_draws,
        num_particles=20,
        num_chains=4,
        num_warmup=n_warm // 2,
        chunk_size=500,
    )
    z_pg = max_z(to_arviz(r, var_names=names), ref, names)
    r2 = pmmh(
        jax.random.PRNGKey(3),
        ScalarLG(),
        p,
        y,
        prior=prior,
        num_samples=2 * n_draws,
        num_particles=100,
        num_warmup=n_warm,
        num_chains=4,
        chunk_size=500,
    )
    z_pmmh = max_z(to_arviz(r2), ref, names)
    return z_pg, z_pmmh


def score_study(T: int, n_it: int, N: int):
    p0 = lg_params(0.8, 1.0, 0.5)
    _, y = simulate(jax.random.PRNGKey(0), LinearGaussianSSM(1, 1), p0, T)

    def params_fn(th):
        return p0._replace(
            dynamics_weights=th["rho"].reshape(1, 1), dynamics_cov=jnp.exp(2 * th["log_sx"]).reshape(1, 1)
        )

    vg = jax.jit(jax.value_and_grad(lambda v: -kalman_log_likelihood(params_fn({"rho": v[0], "log_sx": v[1]}), y)))
    res = minimize(
        lambda v: tuple(np.asarray(a, np.float64) for a in vg(jnp.asarray(v, jnp.float32))),
        np.array([0.5, -0.5]),
        jac=True,
        method="L-BFGS-B",
    )
    mle = np.array([res.x[0], np.exp(res.x[1])])
    th0 = {"rho": jnp.asarray(0.5), "log_sx": jnp.asarray(-0.5)}
    out = {}
    for est in ("paris", "ppg"):
        opt = optax.adam(optax.exponential_decay(0.05, max(n_it // 4, 1), 0.5))
        r = score_ascent(
            jax.random.PRNGKey(1),
            ScalarLG(),
            th0,
            y,
            params_fn=params_fn,
            optimizer=opt,
            num_iters=n_it,
            estimator=est,
            num_particles=N,
            backward=ExactBackward(),
            chunk_size=n_it,
        )
        th = np.array([float(r.theta_average["rho"]), float(np.exp(r.theta_average["log_sx"]))])
        out[est] = float(np.max(np.abs(th - mle) / np.abs(mle)))
    return out["paris"], out["ppg"]


def speed_study(N: int, T: int, reps: int):
    p = lg_params(0.9, 1.0, 0.5)
    m = ScalarLG()
    fk = FeynmanKac.bootstrap(m)
    _, y = simulate(jax.random.PRNGKey(0), LinearGaussianSSM(1, 1), p, T)
    x0 = jnp.zeros((T, 1))

    @jax.jit
    def pg(key, path, pp):
        def body(c, k):
            path, pp = c
            k1, k2 = jax.random.split(k)
            path, _, _ = csmc_kernel(k1, fk, pp, y, path, N)
            return (path, conditional(k2, path, y, pp)), None

        (path, pp), _ = jax.lax.scan(body, (path, pp), jax.random.split(key, reps))
        return path

    h = score_functional(m, p)
    kern = ExactBackward()

    @jax.jit
    def ppg(key, path):
        def body(st, k):
            st, info = ppg_step(k, st, fk, p, y, h, N, backward=kern)
            return st, info.estimate

        st, _ = jax.lax.scan(body, PPGState(path), jax.random.split(key, reps))
        return st.frozen_path

    rates = []
    for f, args in ((pg, (x0, p)), (ppg, (x0,))):
        f(jax.random.PRNGKey(0), *args).block_until_ready()
        t0 = time.perf_counter()
        f(jax.random.PRNGKey(1), *args).block_until_ready()
        rates.append(reps / (time.perf_counter() - t0))
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small replicate counts (< 1 min); every key kept")
    args = ap.parse_args()
    t0 = time.time()
    if args.quick:
        bias = bias_study(n_paris=40, n_ppg=8, k=12, k0=4, seeds=[3])
        z_pg, z_pmmh = mcmc_study(T=40, n_draws=300, n_warm=150)
        rel_paris, rel_ppg = score_study(T=100, n_it=60, N=20)
        rates = speed_study(N=100, T=1000, reps=2)
    else:
        bias = bias_study(n_paris=1000, n_ppg=200, k=40, k0=10, seeds=[1, 2, 3, 4])
        z_pg, z_pmmh = mcmc_study(T=100, n_draws=3000, n_warm=1000)
        rel_paris, rel_ppg = score_study(T=200, n_it=400, N=50)
        rates = speed_study(N=100, T=1000, reps=10)
    out = {
        "paris_bias": bias[0],
        "paris_bias_se": bias[1],
        "ppg_bias": bias[2],
        "ppg_bias_se": bias[3],
        "paris_bias_per_dataset": bias[4],
        "ppg_bias_per_dataset": bias[5],
        "pg_vs_nuts_max_z": z_pg,
        "pmmh_vs_nuts_max_z": z_pmmh,
        "score_ascent_rel_err_paris": rel_paris,
        "score_ascent_rel_err_ppg": rel_ppg,
        "pg_iterations_per_s": rates[0],
        "ppg_iterations_per_s": rates[1],
        "pg_ppg_speed_setting": "N=100, T=1000, scalar LG, float32, CPU (PG: PGAS + conjugate theta; PPG: exact "
        "backward kernel, Ñ=2)",
        "quick": bool(args.quick),
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
