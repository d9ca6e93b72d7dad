# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A tour of the SMC engine, each piece against its exact reference
#
# On a scalar linear Gaussian model, where the Kalman filter and RTS smoother give exact answers, we run the
# bootstrap filter (likelihood estimates vs the exact likelihood), the forward-filtering backward-smoothing
# marginals (vs RTS), PaRIS for an additive functional (vs its exact value), particle Gibbs with conjugate
# parameter updates (vs the exact posterior by NUTS on the Kalman likelihood) and PaRIS particle Gibbs; then a
# particle filter on stochastic volatility, with a report. `PSSM_QUICK=1` shrinks the sizes.

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

import pssm
from pssm import simulate
from pssm.inference import kalman_log_likelihood, kalman_smoother, paris_particle_gibbs
from pssm.inference.mcmc.particle_gibbs import particle_gibbs
from pssm.inference.smc import AdditiveFunctional, ExactBackward, marginal_smoother, paris, particle_filter
from pssm.models import LinearGaussianSSM, StochasticVolatility
from pssm.models.testing import ScalarLinearGaussian, scalar_kalman_log_likelihood, scalar_lg_conjugate_conditional

QUICK = os.environ.get("PSSM_QUICK") == "1"
OUT = os.environ.get("PSSM_NOTEBOOK_OUT", "smc_tour_output")
T, N = (30, 64) if QUICK else (200, 1000)

lg = LinearGaussianSSM(1, 1)
p = lg.make_params(dynamics_weights=[[0.8]], dynamics_cov=[[1.0]], emission_weights=[[1.0]], emission_cov=[[0.25]])
x, y = simulate(jax.random.PRNGKey(0), lg, p, T)
exact_ll = float(kalman_log_likelihood(p, y))
rts = kalman_smoother(p, y)

# %% [markdown]
# ## Bootstrap filter: the likelihood estimate is unbiased on the natural scale
# Across independent runs, the mean of $\hat Z / Z$ is 1 within its Monte Carlo error.

# %%
keys = jax.random.split(jax.random.PRNGKey(1), 20 if QUICK else 100)
lls = np.asarray(jax.vmap(lambda k: particle_filter(k, lg, p, y, N).log_likelihood)(keys))
ratio = np.exp(lls - exact_ll)
print(
    f"exact {exact_ll:.3f}; mean log-lik estimate {lls.mean():.3f}; "
    f"E[Z_hat/Z] = {ratio.mean():.3f} ± {ratio.std(ddof=1) / np.sqrt(len(ratio)):.3f}"
)

# %% [markdown]
# ## Forward filtering, backward smoothing: marginal means against RTS

# %%
pf = particle_filter(jax.random.PRNGKey(2), lg, p, y, N, history=True)
ms = marginal_smoother(lg, p, pf.history)
err = float(jnp.max(jnp.abs(ms.means[:, 0] - rts.smoothed_means[:, 0])))
print(f"max |FFBSm mean - RTS mean| = {err:.3f} (posterior sd ~ {float(jnp.sqrt(rts.smoothed_covs.min())):.2f})")

# %% [markdown]
# ## PaRIS: $S = x_0^2 + \sum_t x_t x_{t-1}$, online, $O(N)$ memory; exact value from RTS moments

# %%
h = AdditiveFunctional.from_fn(lambda xp, xt, t: xt * xp, lambda x0: x0**2)
m_, P, C = rts.smoothed_means[:, 0], rts.smoothed_covs[:, 0, 0], rts.smoothed_cross_covs[:, 0, 0]
exact_S = float(m_[0] ** 2 + P[0] + jnp.sum(m_[1:] * m_[:-1] + C))
est = np.asarray(jax.vmap(lambda k: paris(k, lg, p, y, N, h).estimate)(keys[:5]))
print(f"PaRIS {est.mean():.2f} ± {est.std(ddof=1) / np.sqrt(len(est)):.2f} vs exact {exact_S:.2f}")

# %% [markdown]
# ## Particle Gibbs (ancestor sampling) with conjugate updates of (ρ, q), against NUTS on the exact likelihood

# %%
A0, B0 = 3.0, 2.0
num = 100 if QUICK else 1500
pg = particle_gibbs(
    jax.random.PRNGKey(3),
    ScalarLinearGaussian(),
    p,
    y,
    conditional=lambda k, path, yy, pp: scalar_lg_conjugate_conditional(k, path, yy, pp, A0, B0),
    num_samples=num,
    num_particles=15,
    num_chains=2,
    num_warmup=50,
)
prior = p._replace(**{k: None for k in p._fields})


def exact_model(y):
    rho = numpyro.sample("rho", dist.Normal(0.0, 1.0))
    q = numpyro.sample("q", dist.InverseGamma(A0, B0))
    numpyro.factor("ll", scalar_kalman_log_likelihood(rho, q, 0.25, y))


nuts = MCMC(NUTS(exact_model), num_warmup=100 if QUICK else 500, num_samples=num, progress_bar=False)
nuts.run(jax.random.PRNGKey(4), y)
ref = nuts.get_samples()
pg_rho = np.asarray(pg.params.dynamics_weights).ravel()
print(
    f"rho: particle Gibbs {pg_rho.mean():.3f} ± {pg_rho.std():.3f}; NUTS {float(ref['rho'].mean()):.3f} "
    f"± {float(ref['rho'].std()):.3f}"
)
print(pssm.to_arviz(pg, var_names=["dynamics_weights", "dynamics_cov"]))

# %% [markdown]
# ## PaRIS particle Gibbs: the same functional with a conditional PaRIS, which removes PaRIS's bias at small N

# %%
ppg = paris_particle_gibbs(
    jax.random.PRNGKey(5),
    ScalarLinearGaussian(),
    p,
    y,
    functional=h,
    num_particles=16,
    num_iters=20 if QUICK else 400,
    burn_in=5 if QUICK else 50,
    backward=ExactBackward(),
)
print(f"PPG estimate {float(ppg.estimate[0]):.2f} vs exact {exact_S:.2f}")

# %% [markdown]
# ## Stochastic volatility: a particle filter and its diagnostics report

# %%
sv = StochasticVolatility()
psv = sv.make_params(mu=-1.0, phi=0.95, sigma=0.3)
xs, ys = simulate(jax.random.PRNGKey(6), sv, psv, T)
res = particle_filter(jax.random.PRNGKey(7), sv, psv, ys, N)
print(res)
print("report:", pssm.report(res, os.path.join(OUT, "sv_filter_report.html")))
