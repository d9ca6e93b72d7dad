"""Brain states in ADn/CA1 at two timescales: fast heading assemblies and slow sleep/wake states.

15 units (7 anterodorsal thalamus, 8 CA1) recorded through 600 s of sleep and 600 s of wake, with the head angle
tracked during wake and 594 sleep ripples.  The page ``report.html`` under ``--out`` tells the story:

1. **Model comparison (fast bins, default 100 ms).**  Alternate 60 s blocks are held out.  On the training blocks
   we fit, by EM with k-means starts and restarts: ``GLM`` (one state, Poisson GLM with coupled spike histories,
   the paper's exponential K=5 filter), ``HG`` (S states, free coupling ``W_s``), ``GHG`` (``W_s ~ N(W0,
   sigma^2)``), ``OHG`` (one-hot adjacency with a Concrete prior around a learned ``A0``; Gumbel-softmax EM,
   hard argmax adjacency for evaluation), for S in ``--states``; softplus link, per-state biases, sticky
   Dirichlet transitions.  Held-out log-likelihood per bin (and bits per spike) picks ``best_model``.
2. **Fast states are heading assemblies.**  The best held-out multi-state model's states are present in sleep
   *and* wake (their sleep/wake agreement is near its chance control).  During tracked wake we measure the mutual
   information (bits) between its Viterbi state and the head angle (``--heading-bins`` angular bins): plug-in
   estimate with the Miller-Madow bias correction, next to a shifted control (the state path circularly shifted
   against the angle by 20-80 % of the tracked period, five offsets averaged; same marginals, same
   autocorrelation, same bias, no alignment).  The figure shows each state's occupancy as a function of heading.
3. **Slow brain states.**  A two-timescale Poisson HMM at ``--slow-bin`` (default 0.5 s) bins: K=2 slow states,
   each with its own F=``--fast-substates`` (4) fast sub-states (a hierarchical HMM written as one HMM on K*F
   states, :class:`TwoTimescaleTransitions`).  The slow chain's dwell time is **fixed a priori** at
   ``--slow-dwell`` = 60 s (self-transition ``1 - bin/60``, frozen during EM; not tuned on the agreement):
   NREM and wake bouts in rodents last tens of seconds to minutes, so a minute is the natural prior scale, and
   the fast sub-states, whose transitions are learned, absorb the sub-second to second fluctuations (heading,
   ripples) that otherwise dominate a 2-state model.  A one-timescale control -- a plain 2-state Poisson HMM with
   the same frozen 60 s dwell -- shows why the fast sub-states are needed.  Reported: Viterbi agreement of the
   slow state with the recorded sleep/wake epochs (Hungarian mapping; ``sleep_wake_state_agreement``) against the
   chance control (the same on the path circularly shifted by a quarter of the recording,
   ``sleep_wake_chance_agreement``), held-out likelihood, ripple occupancy per slow state, and the ADn/CA1
   coupling per slow state: the one-state coupled GLM (fast bins) fitted on the bins of each slow state (runs of
   at least 2 s cut into pieces of at most one block; the longest pieces, as many as there are training blocks,
   so each state's coupling rests on at most as much data as the GLM's own fit).
4. ArviZ summary of the best multi-state model (EM point estimates; an SVI AutoNormal posterior started at the EM
   fit when ``--svi-steps`` > 0).

Writes ``report.html`` (every figure and table), the figures as PNGs, ``arviz_summary.csv`` and ``summary.json``
under ``--out``; the JSON is also the last printed line.  ``--quick`` (the test suite) uses 200 ms fast bins and
1 s slow bins, GHG with S=2 only, one restart, few iterations and no SVI, and compiles with most XLA
optimisations off (compilation dominates such small fits).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from numpyro.distributions import constraints

from pssm.arviz import to_arviz
from pssm.boundary import as_sequences
from pssm.data import (
    Sequences,
    bin_spikes,
    intervals_to_labels,
    intervals_to_mask,
    train_test_split_blocks,
)
from pssm.distributions import Dirichlet
from pssm.inference import (
    bits_per_spike,
    fit_em,
    fit_em_restarts,
    marginal_log_likelihood,
    most_likely_states,
    smoother,
)
from pssm.inference.optim.svi import fit_svi
from pssm.metrics import confusion_matrix, match_states
from pssm.models import HMM, PoissonEmissions, StickyTransitions
from pssm.models.glm import HMMGLM, GLMEmissions, hard_adjacency, hard_adjacency_params
from pssm.models.glm.metrics import homogeneous_log_likelihood
from pssm.models.hmm.components import TransitionComponent, sticky_matrix
from pssm.models.hmm.init import kmeans_labels
from pssm.nwb import read_nwb
from pssm.params import ParamSpec
from pssm.plotting import plot_raster_states
from pssm.reporting.page import Page

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "data" / "A2929-200711.nwb"
PRIORS = {"HG": "none", "GHG": "gaussian", "OHG": "onehot"}
# ArviZ variables (params leaf names, pssm.params.leaf_names) summarised for the best multi-state model
SUMMARY_VARS = ("transitions.matrix", "emissions.bias", "emissions.weights_mean", "emissions.adjacency_prior_probs")
SVI_SUMMARY_VARS = ("transitions.matrix", "emissions.bias", "emissions.weights_mean", "emissions.prior_logits")
SHIFT_FRACTIONS = (0.2, 0.35, 0.5, 0.65, 0.8)  # heading control: shifts as fractions of the tracked wake period
MIN_RUN_S = 2.0  # per-slow-state coupling: runs of a slow state shorter than this are left out


# --------------------------------------------------------------------------------------------- two timescales
class TwoTimescaleParams(NamedTuple):
    slow: Any  # (K, K) slow-state transition matrix
    fast: Any  # (K, F, F) fast sub-state transitions within each slow state
    entry: Any  # (K, F) fast sub-state entered when the slow state switches to k


class TwoTimescaleTransitions(TransitionComponent):
    """Hierarchical (two-timescale) transitions on K*F states ``z = k*F + f`` (slow state k, fast sub-state f):

    :math:`A[(k,f),(k',f')] = P_{kk'}\\,(\\delta_{kk'} B^{(k)}_{ff'} + (1-\\delta_{kk'})\\,e^{(k')}_{f'})`.

    Priors: rows of the slow matrix :math:`P \\sim \\mathrm{Dir}(\\alpha\\mathbf 1 + \\kappa e_k)`, of each
    :math:`B^{(k)}` and the entry distributions :math:`e^{(k)}` :math:`\\sim \\mathrm{Dir}(\\alpha\\mathbf 1)`.
    The log-likelihood of the expected transition counts separates over ``P``, ``B`` and ``e``, so the M-step is
    each block's closed-form MAP.  Freeze ``transitions.slow`` to hold the slow dwell time at its a-priori value.
    """

    num_slow: int
    num_fast: int
    slow_stickiness: float = 0.0
    concentration: float = 1.0
    fast_self_transition: float = 0.8

    def _kf(self, num_states: int) -> tuple[int, int]:
        K, F = int(self.num_slow), int(self.num_fast)
        if K * F != int(num_states):
            raise ValueError(f"TwoTimescaleTransitions({K}, {F}) drives {K * F} states; the model has {num_states}.")
        return K, F

    def slow_self_transition(self) -> float:
        """Prior mean of the slow self-transition, :math:`(\\alpha + \\kappa) / (K\\alpha + \\kappa)`."""
        a, k = float(self.concentration), float(self.slow_stickiness)
        return (a + k) / (int(self.num_slow) * a + k)

    def param_spec(self, num_states: int) -> TwoTimescaleParams:
        K, F = self._kf(num_states)
        a = float(self.concentration)
        slow = Dirichlet(a * jnp.ones((K, K)) + float(self.slow_stickiness) * jnp.eye(K)).to_event(1)
        fast = Dirichlet(a * jnp.ones((K, F, F))).to_event(2)
        entry = Dirichlet(a * jnp.ones((K, F))).to_event(1)
        return TwoTimescaleParams(
            ParamSpec(constraints.simplex, slow),
            ParamSpec(constraints.simplex, fast),
            ParamSpec(constraints.simplex, entry),
        )

    def matrix(self, params: TwoTimescaleParams):
        K, F = params.fast.shape[0], params.fast.shape[1]
        eye = jnp.eye(K, dtype=params.slow.dtype)
        within = jnp.einsum("ij,iab->iajb", eye, params.fast)
        across = (1.0 - eye)[:, None, :, None] * params.entry[None, None, :, :]
        return (params.slow[:, None, :, None] * (within + across)).reshape(K * F, K * F)

    def initialize(self, key, num_states: int, dtype: Any = None) -> TwoTimescaleParams:
        K, F = self._kf(num_states)
        dtype = dtype or jnp.result_type(float)
        slow = sticky_matrix(K, self.slow_self_transition(), dtype)
        fast = jnp.broadcast_to(sticky_matrix(F, self.fast_self_transition, dtype), (K, F, F))
        return TwoTimescaleParams(slow, fast, jnp.full((K, F), 1.0 / F, dtype))

    def m_step(self, params, expected_transitions, stationary_weights=None):
        if stationary_weights is not None:
            raise ValueError("TwoTimescaleTransitions supports a learned or fixed initial distribution only.")
        K, F = params.fast.shape[0], params.fast.shape[1]
        X = expected_transitions.reshape(K, F, K, F)
        a = float(self.concentration)
        eye = jnp.eye(K, dtype=X.dtype)

        def rows(c, old):
            c = jnp.maximum(c, 0.0)
            r = c.sum(-1, keepdims=True)
            return jnp.where(r > 0, c / jnp.where(r > 0, r, 1.0), old).astype(old.dtype)

        slow = rows(X.sum((1, 3)) + a - 1.0 + float(self.slow_stickiness) * eye, params.slow)
        fast = rows(jnp.einsum("iaib->iab", X) + a - 1.0, params.fast)
        entry = rows(jnp.einsum("iajb,ij->jb", X, 1.0 - eye) + a - 1.0, params.entry)
        return TwoTimescaleParams(slow, fast, entry)


def two_timescale_start(key, model: HMM, train: list[np.ndarray], K: int, F: int, window: int):
    """Unsupervised start: k-means (K) on each bin's unit rates smoothed over ``window`` bins (log1p, z-scored,
    within its training block) gives provisional slow labels; k-means (F) on the bins of each gives the F
    sub-state rates.  No epoch labels are used."""
    k1, k2, k3 = jax.random.split(key, 3)
    ker = np.ones(window) / window
    smooth = []
    for y in train:
        norm = np.convolve(np.ones(len(y)), ker, mode="same")
        smooth.append(np.stack([np.convolve(np.log1p(y[:, n]), ker, mode="same") / norm for n in range(y.shape[1])], 1))
    Z = np.concatenate(smooth)
    Z = (Z - Z.mean(0)) / (Z.std(0) + 1e-9)
    Y = np.concatenate(train)
    slow_lab = kmeans_labels(k1, Z, K, num_runs=5)
    rates = []
    for k in range(K):
        Yk = Y[slow_lab == k] if (slow_lab == k).sum() >= F else Y
        lab = kmeans_labels(jax.random.fold_in(k2, k), np.log1p(Yk), F, num_runs=5)
        rates += [Yk[lab == f].mean(0) if (lab == f).any() else Yk.mean(0) for f in range(F)]
    p0 = model.initialize(k3, train)
    rates = jnp.asarray(np.maximum(np.asarray(rates), 1e-3), p0.emissions.rates.dtype)
    return p0._replace(emissions=p0.emissions._replace(rates=rates))


# --------------------------------------------------------------------------------------------- helpers
def epoch_agreement(states: np.ndarray, epoch_labels: np.ndarray, num_states: int) -> tuple[float, np.ndarray]:
    """Best-mapping agreement of decoded states with epoch labels (``-1`` labels ignored): one-to-one
    (Hungarian) when there are as many states as epochs, else each state to the epoch it overlaps most."""
    ok = epoch_labels >= 0
    n_ep = int(epoch_labels[ok].max()) + 1
    if num_states == n_ep:
        mapping = match_states(epoch_labels[ok], states[ok], num_states)
    else:
        mapping = confusion_matrix(epoch_labels[ok], states[ok], n_ep, num_states).argmax(axis=0)
    return float(np.mean(mapping[states[ok]] == epoch_labels[ok])), mapping


def edge_matrix(glm: GLMEmissions, flat_weights: np.ndarray) -> np.ndarray:
    """``(..., N, N*K)`` coupling -> ``(..., N, N)`` edge weights (sum over the basis of ``W * sum_l phi``)."""
    N, K = glm.num_neurons, glm.num_basis
    W = np.asarray(flat_weights).reshape(*np.shape(flat_weights)[:-1], N, K)
    return W @ np.asarray(glm.basis, float).sum(0)


def num_bins(seqs) -> int:
    return int(np.asarray(seqs.mask).sum())


def first_sequence(x) -> np.ndarray:
    """Results for the batch ``[y]`` of one sequence: drop the sequence axis."""
    return np.asarray(x)[0]


def block_counts(adj: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, int]]:
    """Excitatory / inhibitory edge counts per (source region -> target region) block of an adjacency in
    {-1, 0, 1} with rows = postsynaptic (target) and columns = presynaptic (source); diagonal excluded."""
    out = {}
    N = adj.shape[-1]
    off = ~np.eye(N, dtype=bool)
    for src in np.unique(groups):
        for tgt in np.unique(groups):
            sel = (groups[:, None] == tgt) & (groups[None, :] == src) & off
            out[f"{src}->{tgt}"] = {
                "exc": int((adj[..., sel] == 1).sum()),
                "inh": int((adj[..., sel] == -1).sum()),
                "pairs": int(sel.sum()),
            }
    return out


def block_means(W: np.ndarray, groups: np.ndarray, fn=np.mean) -> dict[str, float]:
    """``fn`` of the off-diagonal edge weights per (source -> target) region block."""
    off = ~np.eye(W.shape[-1], dtype=bool)
    return {
        f"{src}->{tgt}": float(fn(W[(groups[:, None] == tgt) & (groups[None, :] == src) & off]))
        for src in np.unique(groups)
        for tgt in np.unique(groups)
    }


def group_axes(ax, groups: np.ndarray, title: str) -> None:
    names, starts = np.unique(groups, return_index=True)
    order = np.argsort(starts)
    names, starts = names[order], starts[order]
    N = groups.size
    for s in starts[1:]:
        ax.axhline(s - 0.5, color="k", lw=1)
        ax.axvline(s - 0.5, color="k", lw=1)
    mids = [(s + e - 1) / 2 for s, e in zip(starts, list(starts[1:]) + [N], strict=True)]
    ax.set_xticks(mids)
    ax.set_xticklabels([f"{n.upper()}" for n in names])
    ax.set_yticks(mids)
    ax.set_yticklabels([f"{n.upper()}" for n in names], rotation=90, va="center")
    ax.set_xlabel("presynaptic (source)")
    ax.set_ylabel("postsynaptic (target)")
    ax.set_title(title, fontsize=9)


def angle_per_bin(times: np.ndarray, angles: np.ndarray, bin_edges: np.ndarray) -> np.ndarray:
    """Circular mean of the tracked angle in each bin, in [0, 2 pi) (NaN for bins without samples)."""
    T = len(bin_edges) - 1
    idx = np.searchsorted(bin_edges, times, side="right") - 1
    ok = (idx >= 0) & (idx < T) & np.isfinite(angles)
    n = np.bincount(idx[ok], minlength=T)
    c = np.bincount(idx[ok], np.cos(angles[ok]), minlength=T)
    s = np.bincount(idx[ok], np.sin(angles[ok]), minlength=T)
    out = np.mod(np.arctan2(s, c), 2 * np.pi)
    out[n == 0] = np.nan
    return out


def mutual_information_bits(x: np.ndarray, y: np.ndarray, nx: int, ny: int) -> tuple[float, float]:
    """``(Miller-Madow corrected, plug-in)`` mutual information in bits between two label sequences.

    Plug-in :math:`I = H(X) + H(Y) - H(X,Y)` from the joint histogram; Miller-Madow adds :math:`(m-1)/(2n)`
    nats to each entropy (m: occupied cells), i.e. subtracts :math:`(m_{XY} - m_X - m_Y + 1)/(2n\\ln 2)` bits.
    """
    C = np.zeros((nx, ny))
    np.add.at(C, (x, y), 1.0)
    n = C.sum()
    p = C / n
    px, py = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float(np.sum(p[nz] * np.log2(p[nz] / (px[:, None] * py[None, :])[nz])))
    bias = (nz.sum() - (px > 0).sum() - (py > 0).sum() + 1) / (2.0 * n * np.log(2.0))
    return mi - float(bias), mi


def heading_information(states: np.ndarray, angle_bin: np.ndarray, num_states: int, num_angle_bins: int) -> dict:
    """MI between a state path and the binned heading (both on the same valid bins) and its shifted control."""
    mi_mm, mi_plugin = mutual_information_bits(states, angle_bin, num_states, num_angle_bins)
    n = len(states)
    shifted = [
        mutual_information_bits(np.roll(states, int(f * n)), angle_bin, num_states, num_angle_bins)
        for f in SHIFT_FRACTIONS
    ]
    C = np.zeros((num_states, num_angle_bins))
    np.add.at(C, (states, angle_bin), 1.0)
    occ = np.bincount(states, minlength=num_states) / max(n, 1)
    H = -float(np.sum(occ[occ > 0] * np.log2(occ[occ > 0])))
    return dict(
        bits=mi_mm,
        bits_plugin=mi_plugin,
        shifted_bits=float(np.mean([s[0] for s in shifted])),
        shifted_bits_plugin=float(np.mean([s[1] for s in shifted])),
        shifted_bits_sd=float(np.std([s[0] for s in shifted])),
        state_entropy_bits=H,
        occupancy_by_heading=C / np.maximum(C.sum(0, keepdims=True), 1.0),
        wake_occupancy=occ,
    )


def state_runs(labels: np.ndarray, state: int, min_len: int, max_len: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of ``state`` in ``labels`` at least ``min_len`` long, cut into pieces of
    ``max_len`` (and a remainder, kept if at least ``min_len``)."""
    is_s = np.concatenate([[False], labels == state, [False]])
    d = np.diff(is_s.astype(int))
    out = []
    for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True):
        if b - a < min_len:
            continue
        cuts = list(range(a, b, max_len)) + [b]
        out += [(u, v) for u, v in zip(cuts[:-1], cuts[1:], strict=True) if v - u >= min_len]
    return out


def split_to_count(runs: list[tuple[int, int]], count: int, min_len: int) -> list[tuple[int, int]]:
    """Split the longest runs in two until there are ``count`` (while pieces stay at least ``min_len`` long)."""
    runs = list(runs)
    while runs and len(runs) < count:
        i = int(np.argmax([b - a for a, b in runs]))
        a, b = runs[i]
        if b - a < 2 * min_len:
            break
        m = (a + b) // 2
        runs[i : i + 1] = [(a, m), (m, b)]
    return sorted(runs)


def padded_sequences(counts: np.ndarray, runs: list[tuple[int, int]], length: int) -> Sequences:
    arr = np.zeros((len(runs), length, counts.shape[1]), np.float32)
    for i, (a, b) in enumerate(runs):
        arr[i, : b - a] = counts[a:b]
    lens = np.asarray([b - a for a, b in runs], np.int64)
    return Sequences.from_arrays(arr, lengths=lens, kind="counts")


def _dashes(df: pd.DataFrame) -> pd.DataFrame:
    """Missing cells shown as a dash."""
    df = df.astype(object)
    return df.where(df.notna(), "–")


def _fmt(v) -> str:
    return ", ".join(f"{x:.2f}" for x in v)


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="NWB file (default: the bundled recording)")
    ap.add_argument("--bin-size", type=float, default=0.1, help="fast bins (s)")
    ap.add_argument("--states", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--models", nargs="+", default=["HG", "GHG", "OHG"], choices=list(PRIORS))
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--iters", type=int, default=80, help="EM iterations (at most)")
    ap.add_argument("--inner-steps", type=int, default=10, help="Adam steps per M-step")
    ap.add_argument("--block", type=float, default=60.0, help="held-out block length (s); alternate blocks held out")
    ap.add_argument("--stickiness", type=float, default=10.0, help="sticky transition prior of the fast models")
    ap.add_argument("--shared-bias", action="store_true", help="bias shared across states (the paper's choice)")
    ap.add_argument("--ohg-sampling", choices=["gumbel", "deterministic"], default="gumbel")
    ap.add_argument("--heading-bins", type=int, default=12, help="angular bins for the heading information")
    ap.add_argument("--slow-bin", type=float, default=0.5, help="bins (s) of the slow-state model")
    ap.add_argument("--slow-dwell", type=float, default=60.0, help="a-priori mean dwell (s) of a slow state")
    ap.add_argument("--fast-substates", type=int, default=4, help="fast sub-states per slow state")
    ap.add_argument("--slow-restarts", type=int, default=3)
    ap.add_argument("--svi-steps", type=int, default=400, help="SVI steps for the posterior summary (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "case_studies" / "output" / "brain_states"))
    ap.add_argument("--quick", action="store_true", help="200 ms / 1 s bins, GHG S=2, 1 restart, 25 iterations")
    args = ap.parse_args(argv)
    if args.quick:
        args.bin_size, args.states, args.models, args.restarts, args.iters = 0.2, [2], ["GHG"], 1, 25
        args.svi_steps, args.slow_bin, args.slow_restarts = 0, 1.0, 1
    # --quick fits are tiny, so XLA compilation dominates: compile them with most optimisations off (about a third
    # less time; results agree to float rounding).  The previous setting is restored on return.
    previous = jax.config.read("jax_disable_most_optimizations")
    if args.quick:
        jax.config.update("jax_disable_most_optimizations", True)
    try:
        return _run(args)
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


def _run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def tick(stage: str) -> None:
        timings[stage] = round(time.perf_counter() - t_start - sum(timings.values()), 2)

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # ArviZ on single-draw point estimates
    warnings.filterwarnings("ignore", category=UserWarning)

    # ---------------------------------------------------------------- data
    rec = read_nwb(args.data)
    t_stop = float(rec.epochs["stop"].max())
    binned = bin_spikes(rec.spike_times, args.bin_size, t_start=0.0, t_stop=t_stop)
    locations = rec.units["location"].astype(str).to_numpy()
    order = np.argsort(locations, kind="stable")  # units grouped by region (adn | ca1)
    counts = binned.counts[:, order].astype(np.float32)
    groups = locations[order]
    unit_ids = np.asarray(binned.units)[order]
    unit_labels = [f"{u}:{g}" for u, g in zip(unit_ids, groups, strict=True)]
    T, N = counts.shape
    edges = np.asarray(binned.bin_edges, float)
    epochs = rec.epochs
    epoch_names = [str(t) for t in epochs["tags"]]
    labels = intervals_to_labels(edges, epochs["start"], epochs["stop"])
    ripples = rec.interval("sleep_ripples")
    in_ripple = intervals_to_mask(edges, ripples["start"], ripples["stop"])
    sleep_id = epoch_names.index("sleep") if "sleep" in epoch_names else 0
    wake_id = epoch_names.index("wake") if "wake" in epoch_names else 1
    in_sleep = labels == sleep_id
    head = rec.timeseries("CompassDirection/ry")
    angle = angle_per_bin(np.asarray(head.timestamps), np.asarray(head.data, float).ravel(), edges)
    heading_ok = (labels == wake_id) & np.isfinite(angle)
    angle_bin = np.minimum((np.nan_to_num(angle) / (2 * np.pi) * args.heading_bins).astype(int), args.heading_bins - 1)

    block = int(round(args.block / args.bin_size))
    num_blocks = T // block
    split = train_test_split_blocks(counts, np.arange(1, num_blocks, 2), block_length=block, kind="counts")
    train = [np.asarray(s.emissions) for s in split.train]
    test = [np.asarray(s.emissions) for s in split.test]
    train_rates = np.concatenate(train).mean(0)
    tick("data")

    # ---------------------------------------------------------------- fast models
    configs = [("GLM", 1)] + [(m, S) for m in args.models for S in args.states]
    key = jax.random.PRNGKey(args.seed)
    results: dict[str, dict] = {}
    for name, S in configs:
        key, k_fit = jax.random.split(key)
        model = HMMGLM(
            S,
            N,
            basis="exponential",
            link="softplus",
            shared_bias=args.shared_bias,
            coupling_prior=PRIORS.get(name, "none"),
            stickiness=args.stickiness if S > 1 else 0.0,
            inner_steps=args.inner_steps,
            adjacency_sampling=args.ohg_sampling if name == "OHG" else "gumbel",
        )
        d_train, d_test = as_sequences(model, train), as_sequences(model, test)
        t0 = time.perf_counter()
        best, fits = fit_em_restarts(
            k_fit,
            model,
            d_train,
            num_restarts=args.restarts if S > 1 else 1,
            num_iters=args.iters,
            tol=1e-6,
            min_iters=5,
        )
        fit_s = time.perf_counter() - t0
        # OHG is evaluated and decoded at the hard (argmax) adjacency, the others at their fitted params
        p_eval = hard_adjacency_params(best.params) if name == "OHG" else best.params
        ll_test = float(marginal_log_likelihood(model, p_eval, d_test).sum())
        ll_train = float(marginal_log_likelihood(model, p_eval, d_train).sum())
        r = dict(
            name=name,
            S=S,
            model=model,
            fit=best,
            data_train=d_train,
            heldout_ll_per_bin=ll_test / num_bins(d_test),
            train_ll_per_bin=ll_train / num_bins(d_train),
            heldout_bits_per_spike=bits_per_spike(model, p_eval, d_test, train_rates),
            train_bits_per_spike=bits_per_spike(model, p_eval, d_train, train_rates),
            em_iterations=[int(f.num_iters) for f in fits],
            seconds_per_iteration=float(best.seconds_per_iter),
            fit_seconds=fit_s,
        )
        if name == "OHG":
            r["heldout_ll_per_bin_soft"] = float(marginal_log_likelihood(model, best.params, d_test).sum()) / (
                num_bins(d_test)
            )
        if S > 1:
            post = smoother(model, p_eval, [counts])
            vit = first_sequence(most_likely_states(model, p_eval, [counts]))
            agree, mapping = epoch_agreement(vit, labels, S)
            agree_chance, _ = epoch_agreement(np.roll(vit, T // 4), labels, S)
            occ_ripple = np.bincount(vit[in_ripple], minlength=S) / max(int(in_ripple.sum()), 1)
            occ_sleep = np.bincount(vit[in_sleep], minlength=S) / max(int(in_sleep.sum()), 1)
            n_state = np.bincount(vit, minlength=S)
            info = heading_information(vit[heading_ok], angle_bin[heading_ok], S, args.heading_bins)
            r.update(
                smoothed_probs=first_sequence(post.smoothed_probs),
                viterbi=vit,
                sleep_wake_agreement=agree,
                chance_agreement=agree_chance,
                state_to_epoch=[epoch_names[m] for m in mapping],
                state_sleep_fraction=np.bincount(vit[in_sleep], minlength=S) / np.maximum(n_state, 1),
                state_occupancy=n_state / T,
                ripple_occupancy=occ_ripple,
                sleep_occupancy=occ_sleep,
                ripple_enrichment=np.where(occ_sleep > 0, occ_ripple / np.maximum(occ_sleep, 1e-12), np.nan),
                heading=info,
                rates_hz=np.asarray(
                    [counts[vit == s].mean(0) / args.bin_size if (vit == s).any() else np.zeros(N) for s in range(S)]
                ),
            )
        results[f"{name}-{S}" if name != "GLM" else "GLM"] = r
        print(
            f"{name} S={S}: held-out LL/bin {r['heldout_ll_per_bin']:.4f}, bits/spike {r['heldout_bits_per_spike']:.4f}"
            f", agreement {r.get('sleep_wake_agreement', float('nan')):.3f}"
            f", heading MI {r.get('heading', {}).get('bits', float('nan')):.3f} bits ({fit_s:.1f} s)",
            flush=True,
        )

    best_key = max(results, key=lambda k: results[k]["heldout_ll_per_bin"])
    multi = [k for k in results if results[k]["S"] > 1]
    best_multi = max(multi, key=lambda k: results[k]["heldout_ll_per_bin"])
    rb = results[best_multi]
    hb = rb["heading"]
    tick("fast models")

    # ---------------------------------------------------------------- slow states (two timescales)
    t0 = time.perf_counter()
    sb = bin_spikes(rec.spike_times, args.slow_bin, t_start=0.0, t_stop=t_stop)
    s_counts = sb.counts[:, order].astype(np.float32)
    s_edges = np.asarray(sb.bin_edges, float)
    Ts = s_counts.shape[0]
    s_labels = intervals_to_labels(s_edges, epochs["start"], epochs["stop"])
    s_block = int(round(args.block / args.slow_bin))
    s_split = train_test_split_blocks(s_counts, np.arange(1, Ts // s_block, 2), block_length=s_block, kind="counts")
    s_train = [np.asarray(s.emissions) for s in s_split.train]
    s_test = [np.asarray(s.emissions) for s in s_split.test]
    K, F = 2, int(args.fast_substates)
    p_stay = 1.0 - args.slow_bin / args.slow_dwell  # geometric dwell: mean slow_bin / (1 - p_stay) = slow_dwell
    kappa = (K * p_stay - 1.0) / (1.0 - p_stay)  # Dir(1 + kappa e_k) rows: mean (1+kappa)/(K+kappa) = p_stay
    tt_model = HMM(
        K * F, PoissonEmissions(N), transition_component=TwoTimescaleTransitions(K, F, slow_stickiness=kappa)
    )
    window = max(int(round(args.slow_dwell / 2 / args.slow_bin)), 1)
    tt_fits = []
    for i in range(args.slow_restarts):
        k_init = jax.random.fold_in(jax.random.PRNGKey(args.seed + 10), i)
        p0 = two_timescale_start(k_init, tt_model, s_train, K, F, window)
        tt_fits.append(fit_em(k_init, tt_model, p0, s_train, num_iters=300, tol=1e-7, frozen=("transitions.slow",)))
    tt = max(tt_fits, key=lambda f: float(f.log_objective[-1]))
    tt_vit = first_sequence(most_likely_states(tt_model, tt.params, [s_counts]))
    tt_post = first_sequence(smoother(tt_model, tt.params, [s_counts]).smoothed_probs)
    slow_path = tt_vit // F
    slow_probs = tt_post.reshape(Ts, K, F).sum(-1)
    slow_agree, slow_map = epoch_agreement(slow_path, s_labels, K)
    slow_chance, _ = epoch_agreement(np.roll(slow_path, Ts // 4), s_labels, K)
    slow_name = [f"slow {k} ({epoch_names[slow_map[k]]}-like)" for k in range(K)]
    sleep_like = np.flatnonzero(slow_map == sleep_id)
    # one-timescale control: a 2-state Poisson HMM with the same frozen 60 s dwell
    one_model = HMM(
        K,
        PoissonEmissions(N),
        transition_component=StickyTransitions(1.0, kappa, self_transition=p_stay),
    )
    one, _ = fit_em_restarts(
        jax.random.PRNGKey(args.seed + 20),
        one_model,
        s_train,
        num_restarts=args.slow_restarts,
        num_iters=300,
        tol=1e-7,
        frozen=("transitions.matrix",),
    )
    one_vit = first_sequence(most_likely_states(one_model, one.params, [s_counts]))
    one_agree, _ = epoch_agreement(one_vit, s_labels, K)
    one_chance, _ = epoch_agreement(np.roll(one_vit, Ts // 4), s_labels, K)
    s_test_seqs = as_sequences(tt_model, s_test)
    n_s_test = num_bins(s_test_seqs)
    s_rates = np.concatenate(s_train).mean(0)
    slow_heldout = {
        f"two-timescale {K}x{F}": float(marginal_log_likelihood(tt_model, tt.params, s_test_seqs).sum()) / n_s_test,
        f"one-timescale {K}-state": float(marginal_log_likelihood(one_model, one.params, s_test_seqs).sum()) / n_s_test,
        "homogeneous Poisson": float(homogeneous_log_likelihood(s_test_seqs, s_rates)) / n_s_test,
    }
    # slow states on the fast grid (bin centres): ripples and coupling per slow state
    centres = (edges[:-1] + edges[1:]) / 2
    slow_fine = slow_path[np.minimum((centres / args.slow_bin).astype(int), Ts - 1)]
    slow_occ = np.bincount(slow_fine, minlength=K) / T
    slow_ripple_occ = np.bincount(slow_fine[in_ripple], minlength=K) / max(int(in_ripple.sum()), 1)
    slow_sleep_occ = np.bincount(slow_fine[in_sleep], minlength=K) / max(int(in_sleep.sum()), 1)
    slow_sleep_frac = np.bincount(slow_fine[in_sleep], minlength=K) / np.maximum(np.bincount(slow_fine, minlength=K), 1)
    dwell = np.diff(np.flatnonzero(np.diff(np.concatenate([[-1], slow_path, [-1]])) != 0))
    sleep_like_ripples = float(slow_ripple_occ[sleep_like].sum())
    slow_switches = int((np.diff(slow_path) != 0).sum())
    fast_heading_in_slow = heading_information(
        tt_vit[np.minimum((centres / args.slow_bin).astype(int), Ts - 1)][heading_ok],
        angle_bin[heading_ok],
        K * F,
        args.heading_bins,
    )
    slow_seconds = time.perf_counter() - t0
    tick("slow models")
    print(
        f"two-timescale {K}x{F} at {args.slow_bin:g} s, dwell {args.slow_dwell:g} s (frozen): sleep/wake agreement "
        f"{slow_agree:.3f} (chance {slow_chance:.3f}; one-timescale {one_agree:.3f}) ({slow_seconds:.1f} s)",
        flush=True,
    )

    # coupled GLM per slow state on the fast bins
    t0 = time.perf_counter()
    # each state's runs (>= MIN_RUN_S) cut into pieces of at most one block; the longest pieces fill a batch shaped
    # like the training blocks (as much data per state as the GLM had, and the GLM's compiled EM is reused)
    min_run = max(int(round(MIN_RUN_S / args.bin_size)), 6)
    n_seq = len(train)
    runs = []
    for k in range(K):
        r = sorted(state_runs(slow_fine, k, min_run, block), key=lambda ab: ab[0] - ab[1])[:n_seq]
        runs.append(split_to_count(r, n_seq, min_run))
    glm1 = results["GLM"]["model"]
    slow_W, slow_bias, slow_glm_bins = [], [], []
    for k in range(K):
        if not runs[k]:
            slow_W.append(np.full((N, N), np.nan))
            slow_bias.append(np.full(N, np.nan))
            slow_glm_bins.append(0)
            continue
        seqs = padded_sequences(counts, runs[k], block)
        g, _ = fit_em_restarts(
            jax.random.PRNGKey(args.seed + 30 + k),
            glm1,
            seqs,
            num_restarts=1,
            num_iters=args.iters,
            tol=1e-6,
            min_iters=5,
        )
        slow_W.append(edge_matrix(glm1.emission_component, np.asarray(g.params.emissions.weights)[0]))
        slow_bias.append(np.asarray(g.params.emissions.bias).reshape(-1)[:N])
        slow_glm_bins.append(num_bins(seqs))
    slow_W = np.asarray(slow_W)
    slow_conn = {
        slow_name[k]: {
            **{f"mean W {b}": v for b, v in block_means(slow_W[k], groups).items()},
            **{f"mean |W| {b}": v for b, v in block_means(slow_W[k], groups, lambda x: np.mean(np.abs(x))).items()},
            "bins": slow_glm_bins[k],
        }
        for k in range(K)
    }
    coupling_seconds = time.perf_counter() - t0
    tick("coupling per slow state")

    # ---------------------------------------------------------------- page
    page = Page("Brain states in ADn/CA1 at two timescales (A2929-200711, 15 units)")
    n_spk = counts.sum()
    page.section("The story")
    page.text(
        f"{N} units ({int((groups == 'adn').sum())} ADn head-direction cells, {int((groups == 'ca1').sum())} CA1), "
        f"{int(n_spk)} spikes, {t_stop:.0f} s: sleep then wake; head angle tracked during wake, "
        f"{len(ripples)} sleep ripples. Alternate {args.block:.0f} s blocks are held out; every model is fitted on "
        f"the others and decoded on the whole recording."
    )
    page.text(
        f"Fast states ({args.bin_size * 1000:.0f} ms bins). By held-out likelihood the best model is {best_key} "
        f"(best multi-state model {best_multi}). Viterbi agreement of its states with the sleep/wake epochs: "
        f"{rb['sleep_wake_agreement']:.3f} against {rb['chance_agreement']:.3f} for the shifted path"
        + (
            " (no better than chance: its states are not sleep and wake). "
            if rb["sleep_wake_agreement"] < rb["chance_agreement"] + 0.05
            else ". "
        )
        + f"During wake they carry {hb['bits']:.3f} bits about the head angle ({args.heading_bins} bins, Miller-Madow "
        f"corrected; the shifted control carries {hb['shifted_bits']:.3f} ± {hb['shifted_bits_sd']:.3f}) out of the "
        f"{hb['state_entropy_bits']:.2f} bits of state entropy"
        + (
            ": the fast states are head-direction cell assemblies, and their occupancy in sleep too "
            f"({_fmt(rb['sleep_occupancy'])} of the sleep bins per state) says the assemblies recur in both epochs."
            if hb["bits"] > hb["shifted_bits"] + 3 * hb["shifted_bits_sd"] + 0.02
            else "."
        )
    )
    page.text(
        f"Slow states ({args.slow_bin:g} s bins). A two-timescale HMM ({K} slow states x {F} fast sub-states) whose "
        f"slow dwell time is fixed a priori at {args.slow_dwell:g} s (self-transition {p_stay:.4f} per bin, frozen; "
        f"NREM and wake bouts last tens of seconds to minutes) recovers sleep and wake: Viterbi agreement "
        f"{slow_agree:.3f} against {slow_chance:.3f} for the shifted path. The same frozen dwell without fast "
        f"sub-states (a 2-state Poisson HMM) reaches only {one_agree:.3f} (chance {one_chance:.3f}): without a "
        f"place for the fast fluctuations, two states split by them instead. "
        f"{sleep_like_ripples:.0%} of the ripple bins fall in the sleep-like slow state."
    )

    # held-out comparison
    page.section("Held-out comparison of the fast models")
    rows = {}
    for k, r in results.items():
        row = {
            "S": r["S"],
            "held-out LL/bin": r["heldout_ll_per_bin"],
            "held-out bits/spike": r["heldout_bits_per_spike"],
            "train bits/spike": r["train_bits_per_spike"],
        }
        if r["S"] > 1:
            row.update(
                {
                    "sleep/wake agreement": r["sleep_wake_agreement"],
                    "chance": r["chance_agreement"],
                    "heading MI (bits)": r["heading"]["bits"],
                    "shifted MI (bits)": r["heading"]["shifted_bits"],
                    "state → epoch": ", ".join(r["state_to_epoch"]),
                    "ripple occupancy": _fmt(r["ripple_occupancy"]),
                    "ripple enrichment vs sleep": _fmt(r["ripple_enrichment"]),
                }
            )
        row.update(
            {
                "EM iters": "/".join(map(str, r["em_iterations"])),
                "s/iter": r["seconds_per_iteration"],
                "fit s": r["fit_seconds"],
            }
        )
        rows[k] = row
    df_models = pd.DataFrame(rows).T
    df_models = df_models[[c for c in next(r for r in rows.values() if "chance" in r) if c in df_models.columns]]
    best_flags = pd.DataFrame(False, index=df_models.index, columns=df_models.columns)
    best_flags.loc[best_key, "held-out LL/bin"] = True
    page.table(
        _dashes(df_models),
        flags=best_flags,
        caption=f"Fast models ({args.bin_size * 1000:.0f} ms bins; highlighted: best held-out likelihood)",
    )
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    for name in args.models:
        ks = [k for k in results if results[k]["name"] == name]
        Ss = [results[k]["S"] for k in ks]
        axes[0].plot(Ss, [results[k]["heldout_ll_per_bin"] for k in ks], "o-", label=name)
        axes[1].plot(Ss, [results[k]["heldout_bits_per_spike"] for k in ks], "o-", label=name)
    for a, key_ in zip(axes, ("heldout_ll_per_bin", "heldout_bits_per_spike"), strict=True):
        a.axhline(results["GLM"][key_], color="k", ls="--", label="GLM (1 state)")
        a.set_xlabel("number of states S")
        a.set_xticks(args.states)
    axes[0].set_ylabel("held-out log-likelihood / bin (nats)")
    axes[1].set_ylabel("held-out bits / spike vs homogeneous Poisson")
    axes[0].legend(fontsize=8)
    fig.savefig(out / "figure_heldout.png", dpi=110, bbox_inches="tight")
    page.figure(fig, "Held-out log-likelihood per bin and bits per spike against the number of states.")
    if any(r["name"] == "OHG" for r in results.values()):
        page.text(
            "OHG held-out LL/bin with the soft adjacency instead of the hard one: "
            + ", ".join(f"{k} {r['heldout_ll_per_bin_soft']:.4f}" for k, r in results.items() if r["name"] == "OHG"),
            note=True,
        )

    # fast states: heading
    page.section(f"Fast states are heading assemblies ({best_multi})")
    S_b = rb["S"]
    angles_c = (np.arange(args.heading_bins) + 0.5) * 2 * np.pi / args.heading_bins
    fig, axes = plt.subplots(
        1, S_b, figsize=(2.6 * S_b, 2.9), subplot_kw={"projection": "polar"}, constrained_layout=True, squeeze=False
    )
    for s in range(S_b):
        ax = axes[0, s]
        occ = hb["occupancy_by_heading"][s]
        ax.plot(np.append(angles_c, angles_c[0]), np.append(occ, occ[0]), "o-", color=f"C{s}", ms=3)
        th = np.linspace(0, 2 * np.pi, 100)
        ax.plot(th, np.full_like(th, hb["wake_occupancy"][s]), "k--", lw=0.8)
        ax.set_ylim(0, 1)
        ax.set_yticks([0.5, 1.0])
        ax.tick_params(labelsize=7)
        ax.set_title(f"state {s} (wake occ. {hb['wake_occupancy'][s]:.2f})", fontsize=9)
    fig.suptitle(
        f"{best_multi}: P(state | head angle) in wake; MI {hb['bits']:.3f} bits (shifted {hb['shifted_bits']:.3f})",
        fontsize=9,
    )
    fig.savefig(out / "figure_heading.png", dpi=110, bbox_inches="tight")
    page.figure(
        fig,
        f"Occupancy of each fast state as a function of head angle during tracked wake ({int(heading_ok.sum())} "
        f"bins, {args.heading_bins} angular bins); dashed: the state's overall wake occupancy (no tuning).",
    )
    heading_rows = {
        k: {
            "MI (bits, Miller-Madow)": results[k]["heading"]["bits"],
            "MI plug-in": results[k]["heading"]["bits_plugin"],
            "shifted MI (Miller-Madow)": results[k]["heading"]["shifted_bits"],
            "shifted sd": results[k]["heading"]["shifted_bits_sd"],
            "shifted plug-in": results[k]["heading"]["shifted_bits_plugin"],
            "state entropy (bits)": results[k]["heading"]["state_entropy_bits"],
        }
        for k in multi
    }
    heading_rows[f"two-timescale {K}x{F} (all {K * F} states, {args.slow_bin:g} s)"] = {
        "MI (bits, Miller-Madow)": fast_heading_in_slow["bits"],
        "MI plug-in": fast_heading_in_slow["bits_plugin"],
        "shifted MI (Miller-Madow)": fast_heading_in_slow["shifted_bits"],
        "shifted sd": fast_heading_in_slow["shifted_bits_sd"],
        "shifted plug-in": fast_heading_in_slow["shifted_bits_plugin"],
        "state entropy (bits)": fast_heading_in_slow["state_entropy_bits"],
    }
    page.table(
        pd.DataFrame(heading_rows).T,
        caption=(
            "Mutual information between the decoded state and the head angle in wake; shifted: the state path "
            f"circularly shifted by {', '.join(f'{f:.0%}' for f in SHIFT_FRACTIONS)} of the tracked period (mean, sd)"
        ),
    )
    page.table(
        pd.DataFrame(rb["rates_hz"], index=[f"state {s}" for s in range(S_b)], columns=unit_labels),
        caption=f"Firing rates (Hz) in each Viterbi state of {best_multi}",
        digits=3,
    )

    # fast states: rasters
    page.section(f"Fast-state rasters ({best_multi})")
    fig = plot_raster_states(counts, edges, rb["smoothed_probs"], epochs=epochs, unit_labels=unit_labels)
    fig.suptitle(
        f"{best_multi}: state posteriors on the whole recording (fitted on alternate {args.block:.0f} s blocks); "
        f"sleep/wake agreement {rb['sleep_wake_agreement']:.3f} (chance {rb['chance_agreement']:.3f})",
        fontsize=9,
    )
    fig.savefig(out / "figure_states.png", dpi=110, bbox_inches="tight")
    page.figure(fig, "Spike raster (units grouped ADn | CA1) and the fast states' smoothed posteriors.")
    lo, hi = max(0.0, 600.0 - 45.0), min(t_stop, 600.0 + 15.0)  # the end of sleep (ripples) into wake
    idx = np.flatnonzero((edges[:-1] >= lo) & (edges[1:] <= hi))
    clipped = [
        (max(float(a), lo), min(float(b), hi), str(t))
        for a, b, t in zip(epochs["start"], epochs["stop"], epochs["tags"], strict=True)
        if b > lo and a < hi
    ]
    fig = plot_raster_states(
        counts[idx], edges[idx[0] : idx[-1] + 2], rb["smoothed_probs"][idx], epochs=clipped, unit_labels=unit_labels
    )
    rip = ripples[(ripples["stop"] > lo) & (ripples["start"] < hi)]
    for s, e in zip(rip["start"], rip["stop"], strict=True):
        fig.axes[0].axvspan(s, e, color="tab:red", alpha=0.35, lw=0)
        fig.axes[0].plot([(s + e) / 2], [N - 0.5], "v", color="tab:red", ms=4, clip_on=False)
    fig.axes[1].set_xlim(lo, hi)
    fig.suptitle(f"{best_multi}, {lo:.0f}-{hi:.0f} s: sleep ripples in red", fontsize=9)
    fig.savefig(out / "figure_states_zoom.png", dpi=110, bbox_inches="tight")
    page.figure(fig, f"{lo:.0f}-{hi:.0f} s, from the end of sleep into wake; sleep ripples in red.")

    # slow states
    page.section(f"Slow brain states: two-timescale HMM, {K} x {F} states at {args.slow_bin:g} s")
    page.text(
        f"Slow dwell time fixed a priori at {args.slow_dwell:g} s: slow self-transition {p_stay:.4f} per "
        f"{args.slow_bin:g} s bin (the prior mean of Dir(1 + κ e_k) rows with κ = {kappa:.0f}, held there during "
        "EM; not tuned on the agreement). Sub-state transitions, entry distributions, rates and the initial "
        f"distribution are learned (EM, {args.slow_restarts} unsupervised starts: k-means on "
        f"{window * args.slow_bin:g} s-smoothed rates for the slow split, then per slow cluster for the sub-states; "
        "the best by training objective is kept). Caveat: that unsupervised start on smoothed rates already "
        "separates sleep from wake on the training blocks, so the slow split comes mostly from the data's slow rate "
        "changes; EM decodes the held-out blocks and learns the sub-states."
    )
    slow_rows = {
        f"two-timescale {K}x{F}": {
            "sleep/wake agreement": slow_agree,
            "chance (shifted 1/4)": slow_chance,
            "held-out LL/bin": slow_heldout[f"two-timescale {K}x{F}"],
            "slow switches": slow_switches,
            "median run (s)": float(np.median(dwell)) * args.slow_bin,
        },
        f"one-timescale {K}-state (same dwell)": {
            "sleep/wake agreement": one_agree,
            "chance (shifted 1/4)": one_chance,
            "held-out LL/bin": slow_heldout[f"one-timescale {K}-state"],
            "slow switches": int((np.diff(one_vit) != 0).sum()),
            "median run (s)": float(
                np.median(np.diff(np.flatnonzero(np.diff(np.concatenate([[-1], one_vit, [-1]])) != 0)))
            )
            * args.slow_bin,
        },
        "homogeneous Poisson": {"held-out LL/bin": slow_heldout["homogeneous Poisson"]},
    }
    page.table(_dashes(pd.DataFrame(slow_rows).T), caption=f"Slow models ({args.slow_bin:g} s bins)")
    page.table(
        {
            slow_name[k]: {
                "occupancy": float(slow_occ[k]),
                "fraction of its bins in sleep": float(slow_sleep_frac[k]),
                "ripple-bin occupancy": float(slow_ripple_occ[k]),
                "sleep-bin occupancy": float(slow_sleep_occ[k]),
                "ripple enrichment vs sleep": float(slow_ripple_occ[k] / slow_sleep_occ[k])
                if slow_sleep_occ[k] > 0
                else float("nan"),
            }
            for k in range(K)
        },
        caption=f"Slow states on the {args.bin_size * 1000:.0f} ms grid: occupancy and ripples",
    )
    s_rates_hz = np.asarray(tt.params.emissions.rates) / args.slow_bin
    page.table(
        pd.DataFrame(
            s_rates_hz, index=[f"{slow_name[z // F]}, sub {z % F}" for z in range(K * F)], columns=unit_labels
        ),
        caption="Firing rates (Hz) of the fast sub-states of each slow state",
        digits=3,
    )
    fig = plot_raster_states(s_counts, s_edges, slow_probs, epochs=epochs, unit_labels=unit_labels)
    rip_counts, _ = np.histogram((ripples["start"] + ripples["stop"]) / 2, bins=s_edges)
    ax_r = fig.axes[1].twinx()
    win = max(int(round(10.0 / args.slow_bin)), 1)
    ax_r.plot(
        (s_edges[:-1] + s_edges[1:]) / 2,
        np.convolve(rip_counts, np.ones(win) / (win * args.slow_bin), mode="same"),
        color="tab:red",
        lw=0.8,
    )
    ax_r.set_ylabel("ripples / s (10 s)", color="tab:red", fontsize=8)
    fig.suptitle(
        f"Slow states ({K}x{F} two-timescale HMM, {args.slow_dwell:g} s a-priori dwell): P(slow state); "
        f"agreement {slow_agree:.3f} (chance {slow_chance:.3f}); " + "; ".join(slow_name),
        fontsize=9,
    )
    fig.savefig(out / "figure_slow_states.png", dpi=110, bbox_inches="tight")
    page.figure(
        fig,
        f"Raster at {args.slow_bin:g} s bins, the slow-state posterior (summed over sub-states) and the ripple rate "
        "(red, 10 s window); recorded epochs shaded.",
    )

    # connectivity
    page.section("Connectivity between ADn and CA1")
    vmax = float(np.nanmax(np.abs(slow_W))) or 1.0
    fig, axes = plt.subplots(1, K + 1, figsize=(3.1 * (K + 1), 3.3), constrained_layout=True)
    for k in range(K):
        im = axes[k].imshow(slow_W[k], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        group_axes(axes[k], groups, f"{slow_name[k]}: W ({slow_glm_bins[k]} bins)")
    fig.colorbar(im, ax=axes[K - 1], shrink=0.7)
    diff = slow_W[0] - slow_W[1]
    dv = float(np.nanmax(np.abs(diff))) or 1.0
    im = axes[K].imshow(diff, cmap="PuOr_r", vmin=-dv, vmax=dv)
    group_axes(axes[K], groups, f"{slow_name[0].split(' (')[0]} - {slow_name[1].split(' (')[0]}")
    fig.colorbar(im, ax=axes[K], shrink=0.7)
    fig.savefig(out / "figure_slow_connectivity.png", dpi=110, bbox_inches="tight")
    page.figure(
        fig,
        f"Coupling per slow state: a one-state coupled GLM ({args.bin_size * 1000:.0f} ms bins, exponential K=5 "
        f"history, softplus) fitted on the bins of each slow state (runs ≥ {MIN_RUN_S:g} s; the longest "
        f"pieces of at most {args.block:g} s, as many as there are training blocks). Rows: target; columns: "
        "source; the diagonal is each unit's own spike history (left out of the block means below).",
    )
    page.table(slow_conn, caption="Edge weights per region block (source->target) and slow state")

    ohg_keys = [k for k in results if results[k]["name"] == "OHG"]
    ghg_keys = [k for k in results if results[k]["name"] == "GHG"]
    adjacency_summary: dict = {}
    if ohg_keys or ghg_keys:
        ko = max(ohg_keys, key=lambda k: results[k]["heldout_ll_per_bin"]) if ohg_keys else None
        kg = max(ghg_keys, key=lambda k: results[k]["heldout_ll_per_bin"]) if ghg_keys else None
        n_state_panels = results[ko]["S"] if ko else 0
        ncols = (1 if ko else 0) + n_state_panels + (1 if kg else 0)
        fig, axes = plt.subplots(1, ncols, figsize=(3.0 * ncols, 3.3), constrained_layout=True, squeeze=False)
        axes = axes[0]
        col = 0
        if ko:
            ro = results[ko]
            m, p = ro["model"], ro["fit"].params
            A0 = np.asarray(m.emission_component.adjacency_prior_probs(p.emissions))
            im = axes[col].imshow(A0[..., 2] - A0[..., 0], cmap="RdBu_r", vmin=-1, vmax=1)
            group_axes(axes[col], groups, f"{ko}: learned A0, P(exc) - P(inh)")
            fig.colorbar(im, ax=axes[col], shrink=0.7)
            col += 1
            hard = np.asarray(hard_adjacency(p.emissions))
            a0_hard = A0.argmax(-1) - 1
            for s in range(ro["S"]):
                axes[col].imshow(hard[s], cmap="RdBu_r", vmin=-1, vmax=1)
                group_axes(axes[col], groups, f"{ko}: state {s} adjacency (occ. {np.mean(ro['viterbi'] == s):.2f})")
                col += 1
            adjacency_summary["ohg_model"] = ko
            adjacency_summary["A0_argmax_edges"] = block_counts(a0_hard, groups)
            adjacency_summary["state_adjacency_edges"] = {str(s): block_counts(hard[s], groups) for s in range(ro["S"])}
            adjacency_summary["A0_edge_density"] = float(1.0 - A0[..., 1][~np.eye(N, dtype=bool)].mean())
        if kg:
            rg = results[kg]
            W0 = edge_matrix(rg["model"].emission_component, np.asarray(rg["fit"].params.emissions.weights_mean))
            v = float(np.abs(W0).max()) or 1.0
            im = axes[col].imshow(W0, cmap="RdBu_r", vmin=-v, vmax=v)
            group_axes(axes[col], groups, f"{kg}: learned W0 (edge weight)")
            fig.colorbar(im, ax=axes[col], shrink=0.7)
            adjacency_summary["ghg_model"] = kg
            adjacency_summary["W0_mean_abs_by_block"] = block_means(W0, groups, lambda x: np.mean(np.abs(x)))
        fig.savefig(out / "figure_adjacency.png", dpi=110, bbox_inches="tight")
        page.figure(
            fig,
            "Connectivity of the fast models: "
            + "; ".join(
                ([f"{ko}'s learned A0 and per-state hard adjacencies"] if ko else [])
                + ([f"{kg}'s shared W0"] if kg else [])
            )
            + " (rows: target, columns: source).",
        )
        if "A0_argmax_edges" in adjacency_summary:
            page.table(adjacency_summary["A0_argmax_edges"], caption=f"{ko}: edges of the argmax A0 per region block")
        if "W0_mean_abs_by_block" in adjacency_summary:
            page.table(adjacency_summary["W0_mean_abs_by_block"], caption=f"{kg}: mean |W0| per region block")

    tick("figures")
    # ---------------------------------------------------------------- ArviZ summary of the best multi-state model
    m_best, f_best = rb["model"], rb["fit"]
    idata = to_arviz(f_best, model=m_best)
    if f_best.params.emissions.prior_logits is not None:  # the learned A0 = softmax(prior_logits), derived
        A0_best = np.asarray(m_best.emission_component.adjacency_prior_probs(f_best.params.emissions))
        dims = ("chain", "draw", "a0_target", "a0_source", "adjacency_class")
        idata.posterior["emissions.adjacency_prior_probs"] = (dims, A0_best[None, None])
    var_names = [v for v in SUMMARY_VARS if v in idata.posterior]
    summ = az.summary(idata, var_names=var_names, kind="stats")
    summ.to_csv(out / "arviz_summary.csv")
    svi_note = "EM point estimates (one draw: sd and HDI are undefined)."
    svi_summary = None
    svi_seconds = 0.0
    if args.svi_steps > 0:
        t0 = time.perf_counter()
        svi = fit_svi(
            jax.random.PRNGKey(args.seed + 1),
            m_best,
            f_best.params,
            rb["data_train"],
            guide="normal",
            num_iters=args.svi_steps,
            learning_rate=0.005,
        )
        idata_svi = to_arviz(svi, model=m_best, key=jax.random.PRNGKey(args.seed + 2), num_samples=200)
        sv = [v for v in SVI_SUMMARY_VARS if v in idata_svi.posterior]
        svi_summary = az.summary(idata_svi, var_names=sv, kind="stats", hdi_prob=0.94)
        svi_summary.to_csv(out / "arviz_summary_svi.csv")
        svi_seconds = time.perf_counter() - t0
        svi_note = (
            f"SVI (AutoNormal, {args.svi_steps} Adam steps started at the EM fit, 200 guide draws; "
            f"final -ELBO {float(svi.losses[-1]):.1f}) on the training blocks."
        )
    page.section(f"ArviZ summary: {best_multi} (training blocks)")
    short = [i for i in summ.index if not i.startswith("emissions.weights_mean")]
    page.table(
        summ.loc[short],
        caption="EM point estimates (the coupling mean W0 is in the figure above and in arviz_summary.csv)",
    )
    if svi_summary is not None:
        page.text(svi_note)
        page.table(
            svi_summary.loc[[i for i in svi_summary.index if not i.startswith("emissions.weights_mean")]],
            caption="SVI posterior (all variables in arviz_summary_svi.csv)",
        )
    else:
        page.text(svi_note, note=True)
    page.text(
        f"Run: fast bins {args.bin_size * 1000:.0f} ms, {T} bins; EM up to {args.iters} iterations × "
        f"{args.inner_steps} Adam steps, {args.restarts} k-means restarts per multi-state model; stickiness "
        f"{args.stickiness:g}; {'shared' if args.shared_bias else 'per-state'} bias; OHG {args.ohg_sampling} "
        f"sampling. Slow model {slow_seconds:.1f} s, per-slow-state coupling {coupling_seconds:.1f} s, SVI "
        f"{svi_seconds:.1f} s; total {time.perf_counter() - t_start:.0f} s.",
        note=True,
    )
    report_path = page.write(out / "report.html")
    tick("arviz and page")

    summary = {
        "sleep_wake_state_agreement": slow_agree,
        "sleep_wake_chance_agreement": slow_chance,
        "heading_state_information_bits": hb["bits"],
        "heading_state_information_shifted_bits": hb["shifted_bits"],
        "heading_state_information_plugin_bits": hb["bits_plugin"],
        "heading_state_information_shifted_sd_bits": hb["shifted_bits_sd"],
        "heading_state_entropy_bits": hb["state_entropy_bits"],
        "heading_information_per_model": {k: results[k]["heading"]["bits"] for k in multi},
        "heading_information_shifted_per_model": {k: results[k]["heading"]["shifted_bits"] for k in multi},
        "heading_bins": args.heading_bins,
        "heading_num_bins_wake": int(heading_ok.sum()),
        "best_model": best_key,
        "best_multistate_model": best_multi,
        "heldout_ll_per_model": {k: r["heldout_ll_per_bin"] for k, r in results.items()},
        "heldout_ll_units": "nats per held-out bin",
        "heldout_bits_per_spike": {k: r["heldout_bits_per_spike"] for k, r in results.items()},
        "train_ll_per_model": {k: r["train_ll_per_bin"] for k, r in results.items()},
        "fast_sleep_wake_agreement": rb["sleep_wake_agreement"],
        "fast_sleep_wake_chance_agreement": rb["chance_agreement"],
        "agreement_per_model": {k: results[k]["sleep_wake_agreement"] for k in multi},
        "chance_agreement_per_model": {k: results[k]["chance_agreement"] for k in multi},
        "ripple_occupancy_best": [float(v) for v in rb["ripple_occupancy"]],
        "ripple_enrichment_best": [float(v) for v in rb["ripple_enrichment"]],
        "state_to_epoch_best": rb["state_to_epoch"],
        "state_occupancy_best": [float(v) for v in rb["state_occupancy"]],
        "slow_model": f"two-timescale Poisson HMM, {K} slow x {F} fast sub-states",
        "slow_bin_s": args.slow_bin,
        "slow_dwell_prior_s": args.slow_dwell,
        "slow_self_transition": p_stay,
        "slow_stickiness_kappa": kappa,
        "slow_state_to_epoch": [epoch_names[m] for m in slow_map],
        "slow_state_occupancy": [float(v) for v in slow_occ],
        "slow_state_sleep_fraction": [float(v) for v in slow_sleep_frac],
        "slow_ripple_occupancy": [float(v) for v in slow_ripple_occ],
        "slow_switches": slow_switches,
        "slow_heldout_ll_per_bin": slow_heldout,
        "one_timescale_agreement": one_agree,
        "one_timescale_chance_agreement": one_chance,
        "slow_state_connectivity": slow_conn,
        "ohg_heldout_ll_soft_adjacency": {k: results[k]["heldout_ll_per_bin_soft"] for k in ohg_keys},
        "adjacency_edges": adjacency_summary.get("A0_argmax_edges"),
        "bin_size_s": args.bin_size,
        "num_bins": T,
        "num_units": N,
        "num_train_bins": int(sum(len(x) for x in train)),
        "num_test_bins": int(sum(len(x) for x in test)),
        "states": args.states,
        "restarts": args.restarts,
        "em_iters": args.iters,
        "fit_seconds": {k: round(r["fit_seconds"], 2) for k, r in results.items()},
        "slow_seconds": round(slow_seconds, 2),
        "coupling_seconds": round(coupling_seconds, 2),
        "svi_seconds": round(svi_seconds, 2),
        "seconds": round(time.perf_counter() - t_start, 2),
        "timings": timings,
        "report": str(report_path),
        "num_figures": page.num_figures,
        "output_dir": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
