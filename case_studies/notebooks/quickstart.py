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
# # pssm quickstart: model → fit → smooth → ArviZ → report
#
# A model is fixed settings plus three conditional distributions over a params pytree. We build a 3-state
# Poisson HMM, simulate spike counts from known parameters, fit it by EM from k-means starts, smooth and decode
# the states, compare with the truth, convert to ArviZ and write an HTML diagnostics report.
# `PSSM_QUICK=1` (set by the test suite) shrinks the sizes.

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np

import pssm
from pssm import simulate, to_arviz
from pssm.inference import fit_em_restarts, kalman_smoother, smoother
from pssm.metrics import match_states
from pssm.models import HMM, LinearGaussianSSM, PoissonEmissions, StickyTransitions
from pssm.plotting import plot_states_true_vs_decoded

QUICK = os.environ.get("PSSM_QUICK") == "1"
T = 300 if QUICK else 2000
OUT = os.environ.get("PSSM_NOTEBOOK_OUT", "quickstart_output")

# %% [markdown]
# ## A Poisson HMM with a sticky transition prior
# `StickyTransitions(stickiness=κ)` puts a Dirichlet prior with extra mass κ on the diagonal of each transition
# row: the prior expected dwell time grows with κ. Keys are explicit and first.

# %%
model = HMM(3, PoissonEmissions(8), transition_component=StickyTransitions(stickiness=10.0))
truth = model.initialize(jax.random.PRNGKey(0), jnp.ones((10, 8)))
rates = jnp.array([[0.5] * 8, [3.0] * 4 + [0.5] * 4, [0.5] * 4 + [3.0] * 4])
truth = truth._replace(
    emissions=truth.emissions._replace(rates=rates),
    transitions=truth.transitions._replace(matrix=jnp.full((3, 3), 0.01) + jnp.eye(3) * (1 - 0.03)),
)
states, counts = simulate(jax.random.PRNGKey(1), model, truth, T)
print(truth)
print("counts", counts.shape, "mean rate", float(counts.mean()))

# %% [markdown]
# ## Fit by EM (three k-means restarts, the best by objective = log-likelihood + log prior)

# %%
best, runs = fit_em_restarts(jax.random.PRNGKey(2), model, counts, num_restarts=3, num_iters=50)
print(best)
print("objective per restart:", [round(float(r.log_objective[-1]), 2) for r in runs])

# %% [markdown]
# ## Smooth and decode; compare with the truth (up to a relabelling of the states)

# %%
posterior = smoother(model, best.params, counts)  # one sequence in: (T, S) probabilities
decoded = best.most_likely_states()  # Viterbi path (T,)
fig = plot_states_true_vs_decoded(np.asarray(states), np.asarray(decoded), 3)
perm = match_states(np.asarray(states), np.asarray(decoded), 3)  # decoded state j is true state perm[j]
accuracy = float(np.mean(perm[np.asarray(decoded)] == np.asarray(states)))
print(f"decoded-state accuracy {accuracy:.3f}; posterior probabilities {posterior.smoothed_probs.shape}")
assert accuracy > 0.8

# %% [markdown]
# ## ArviZ, and the report

# %%
idata = to_arviz(best)
print(idata)
# with model, params and data the page adds posterior predictive checks (simulated replicates: the key is explicit)
path = pssm.report(
    best, os.path.join(OUT, "hmm_report.html"), model=model, params=best.params, data=counts, key=jax.random.PRNGKey(5)
)
print("report:", path)

# %% [markdown]
# ## The same workflow for a continuous state: the Kalman / RTS smoother

# %%
lg = LinearGaussianSSM(state_dim=2, emission_dim=1)
p = lg.random_params(jax.random.PRNGKey(3))
x, y = simulate(jax.random.PRNGKey(4), lg, p, 200)
post = kalman_smoother(p, y)
print(post)
rmse = float(jnp.sqrt(jnp.mean((post.smoothed_means - x) ** 2)))
print(f"RMSE of the smoothed means {rmse:.3f}")
pssm.report(post, os.path.join(OUT, "kalman_report.html"), states=x)
