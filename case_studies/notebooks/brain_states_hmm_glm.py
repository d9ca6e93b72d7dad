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
# # Brain states in ADn/CA1 with switching HMM-GLMs
#
# The bundled NWB session (15 units: 7 anterodorsal thalamus, 8 CA1; 600 s of sleep, then 600 s of wake, with the
# head angle and the sleep ripples). We bin the spikes, hold out alternate blocks, fit a one-state coupled GLM and
# two-state HMM-GLMs with a Gaussian coupling prior (GHG) and a one-hot adjacency prior (OHG, Li et al. 2024),
# compare held-out log-likelihoods, look at the decoded states against the recorded epochs, and draw the learned
# connectivity. The full study is `case_studies/brain_states.py` (`make demo`). `PSSM_QUICK=1` shrinks it.

# %%
import os
from pathlib import Path

import jax
import numpy as np

import pssm
from pssm.boundary import as_sequences
from pssm.data import bin_spikes, intervals_to_labels, train_test_split_blocks
from pssm.inference import fit_em_restarts, marginal_log_likelihood, most_likely_states
from pssm.models import HMMGLM, hard_adjacency_params
from pssm.plotting import plot_connectivity, plot_raster_states

QUICK = os.environ.get("PSSM_QUICK") == "1"
ROOT = Path(os.environ.get("PSSM_REPO", Path.cwd()))
while not (ROOT / "data" / "A2929-200711.nwb").exists() and ROOT != ROOT.parent:
    ROOT = ROOT.parent
OUT = os.environ.get("PSSM_NOTEBOOK_OUT", "brain_states_output")
BIN = 0.2 if QUICK else 0.1
ITERS = 8 if QUICK else 60

# %% [markdown]
# ## Data: spikes binned, units grouped by region, alternate 60 s blocks held out

# %%
rec = pssm.read_nwb(ROOT / "data" / "A2929-200711.nwb")
t_stop = float(rec.epochs["stop"].max())
binned = bin_spikes(rec.spike_times, BIN, t_start=0.0, t_stop=t_stop)
region = rec.units["location"].astype(str).to_numpy()
order = np.argsort(region, kind="stable")
counts = binned.counts[:, order].astype(np.float32)
T, N = counts.shape
labels = intervals_to_labels(binned.bin_edges, rec.epochs["start"], rec.epochs["stop"])
block = int(round(60 / BIN))
split = train_test_split_blocks(counts, np.arange(1, T // block, 2), block_length=block, kind="counts")
print(f"{T} bins of {BIN} s, {N} units ({dict(zip(*np.unique(region, return_counts=True), strict=True))})")

# %% [markdown]
# ## Fit: GLM (one state), GHG-2 and OHG-2 by EM with k-means restarts

# %%
fits = {}
for name, S, prior in [("GLM", 1, "none"), ("GHG-2", 2, "gaussian"), ("OHG-2", 2, "onehot")]:
    model = HMMGLM(S, N, basis="exponential", link="softplus", coupling_prior=prior, stickiness=10.0 if S > 1 else 0.0)
    train = as_sequences(model, [np.asarray(b.emissions) for b in split.train])  # one sequence per block
    test = as_sequences(model, [np.asarray(b.emissions) for b in split.test])
    best, _ = fit_em_restarts(jax.random.PRNGKey(0), model, train, num_restarts=1 if QUICK else 3, num_iters=ITERS)
    p_eval = hard_adjacency_params(best.params) if prior == "onehot" else best.params
    ll = float(marginal_log_likelihood(model, p_eval, test).sum()) / float(test.mask.sum())
    fits[name] = dict(model=model, fit=best, params=p_eval, heldout_ll_per_bin=ll)
    print(f"{name}: held-out log-likelihood per bin {ll:.4f}")

# %% [markdown]
# ## Decoded states of the whole recording against the sleep/wake epochs

# %%
name = max((k for k in fits if k != "GLM"), key=lambda k: fits[k]["heldout_ll_per_bin"])
f = fits[name]
path = np.asarray(most_likely_states(f["model"], f["params"], counts))
probs = np.eye(2)[path]
fig = plot_raster_states(counts, binned.bin_edges, probs, epochs=rec.epochs)
for s in range(2):
    print(f"{name} state {s}: fraction of time in sleep {np.mean(labels[path == s] == 0):.2f}")

# %% [markdown]
# ## Learned connectivity (units grouped ADn | CA1) and the report page

# %%
W = np.asarray(f["model"].emission_component.coupling_weights(f["params"].emissions))  # (S, N, N*K)
W = W.reshape(W.shape[0], N, N, -1).sum(-1)  # summed over the K history basis functions: (S, post, pre)
fig = plot_connectivity(W, groups=region[order], suptitle=f"{name}: coupling per state")
out = pssm.report(f["fit"], os.path.join(OUT, "hmm_glm_report.html"), model=f["model"], params=f["params"])
print("report:", out)
