"""Switching brain states in ADn/CA1: HMM-GLMs with coupled spike histories on the bundled NWB recording.

15 units (7 anterodorsal thalamus, 8 CA1) recorded through 600 s of sleep and 600 s of wake.  Spikes are binned
(default 100 ms) and alternate 60 s blocks are held out.  On the training blocks we fit, by EM with k-means
starts and restarts (the best by training objective is kept):

* ``GLM``: one state, a Poisson GLM with coupled spike histories (the paper's exponential K=5 filter);
* ``HG``: S states with free coupling ``W_s`` per state;
* ``GHG``: ``W_s ~ N(W0, sigma^2)`` around a learned shared ``W0``;
* ``OHG``: one-hot adjacency ``a_s`` (inh/none/exc) with a Concrete prior around a learned shared ``A0``; EM
  samples the adjacency with Gumbel-softmax (the paper's scheme) and evaluation uses the hard argmax adjacency,

for S in ``--states`` (default 2, 3, 4), all with a softplus link, per-state biases (brain states change firing
rates; the paper shares the bias, ``--shared-bias`` restores that) and a sticky Dirichlet transition prior.

Reported: held-out log-likelihood per bin of every model (and bits per spike over a homogeneous Poisson with the
training rates); how the Viterbi states of the whole recording (decoded with the train-fitted params) align with
the recorded sleep/wake epochs -- best-mapping agreement (Hungarian for 2 states, else each state to the epoch it
overlaps most) next to a chance control (the same mapping on the path circularly shifted by a quarter of the
recording); which states hold the sleep ripples (occupancy of ripple bins vs of all sleep bins); the learned
``A0`` and per-state adjacencies between ADn and CA1 units, and GHG's ``W0`` (figure, units grouped ADn | CA1);
state rasters; and an ArviZ summary of the best model (EM point estimates, plus an SVI AutoNormal posterior
started at the EM fit when ``--svi-steps`` > 0, which gives posterior sd and HDIs).

Writes ``figure_states.png``, ``figure_states_zoom.png``, ``figure_adjacency.png``, ``figure_heldout.png``,
``arviz_summary.csv``/``.md``, ``report.md``, ``summary.json`` under ``--out``; the JSON is also the last printed
line.  ``--quick`` (the test suite) uses 200 ms bins, 2 states, one restart and few iterations.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import arviz as az
import jax
import matplotlib.pyplot as plt
import numpy as np

from pssm.arviz import to_arviz
from pssm.boundary import as_sequences
from pssm.data import bin_spikes, intervals_to_labels, intervals_to_mask, train_test_split_blocks
from pssm.inference import bits_per_spike, fit_em_restarts, marginal_log_likelihood, most_likely_states, smoother
from pssm.inference.optim.svi import fit_svi
from pssm.metrics import confusion_matrix, match_states
from pssm.models.glm import HMMGLM, GLMEmissions, hard_adjacency, hard_adjacency_params
from pssm.nwb import read_nwb
from pssm.plotting import plot_raster_states

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "data" / "A2929-200711.nwb"
PRIORS = {"HG": "none", "GHG": "gaussian", "OHG": "onehot"}
# ArviZ variables (params leaf names, pssm.params.leaf_names) summarised for the best multi-state model
SUMMARY_VARS = ("transitions.matrix", "emissions.bias", "emissions.weights_mean", "emissions.adjacency_prior_probs")
SVI_SUMMARY_VARS = ("transitions.matrix", "emissions.bias", "emissions.weights_mean", "emissions.prior_logits")


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


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="NWB file (default: the bundled recording)")
    ap.add_argument("--bin-size", type=float, default=0.1, help="seconds per bin (0.05-0.1 for the real run)")
    ap.add_argument("--states", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--models", nargs="+", default=["HG", "GHG", "OHG"], choices=list(PRIORS))
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--iters", type=int, default=80, help="EM iterations (at most)")
    ap.add_argument("--inner-steps", type=int, default=10, help="Adam steps per M-step")
    ap.add_argument("--block", type=float, default=60.0, help="held-out block length (s); alternate blocks held out")
    ap.add_argument("--stickiness", type=float, default=10.0)
    ap.add_argument("--shared-bias", action="store_true", help="bias shared across states (the paper's choice)")
    ap.add_argument("--ohg-sampling", choices=["gumbel", "deterministic"], default="gumbel")
    ap.add_argument("--svi-steps", type=int, default=400, help="SVI steps for the posterior summary (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "case_studies" / "output" / "brain_states"))
    ap.add_argument("--quick", action="store_true", help="200 ms bins, S=2, 1 restart, 25 iterations, no SVI")
    args = ap.parse_args(argv)
    if args.quick:
        args.bin_size, args.states, args.restarts, args.iters, args.svi_steps = 0.2, [2], 1, 25, 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
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
    T, N = counts.shape
    epochs = rec.epochs
    epoch_names = [str(t) for t in epochs["tags"]]
    labels = intervals_to_labels(binned.bin_edges, epochs["start"], epochs["stop"])
    ripples = rec.interval("sleep_ripples")
    in_ripple = intervals_to_mask(binned.bin_edges, ripples["start"], ripples["stop"])
    sleep_id = epoch_names.index("sleep") if "sleep" in epoch_names else 0
    in_sleep = labels == sleep_id

    block = int(round(args.block / args.bin_size))
    num_blocks = T // block
    split = train_test_split_blocks(counts, np.arange(1, num_blocks, 2), block_length=block, kind="counts")
    train = [np.asarray(s.emissions) for s in split.train]
    test = [np.asarray(s.emissions) for s in split.test]
    train_rates = np.concatenate(train).mean(0)

    # ---------------------------------------------------------------- fits
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
            post = smoother(model, p_eval, counts)
            vit = np.asarray(most_likely_states(model, p_eval, counts))[0]
            agree, mapping = epoch_agreement(vit, labels, S)
            agree_chance, _ = epoch_agreement(np.roll(vit, T // 4), labels, S)
            occ_ripple = np.bincount(vit[in_ripple], minlength=S) / max(int(in_ripple.sum()), 1)
            occ_sleep = np.bincount(vit[in_sleep], minlength=S) / max(int(in_sleep.sum()), 1)
            n_state = np.bincount(vit, minlength=S)
            sleep_frac = np.bincount(vit[in_sleep], minlength=S) / np.maximum(n_state, 1)
            r.update(
                smoothed_probs=np.asarray(post.smoothed_probs[0]),
                viterbi=vit,
                sleep_wake_agreement=agree,
                chance_agreement=agree_chance,
                state_to_epoch=[epoch_names[m] for m in mapping],
                state_sleep_fraction=sleep_frac,
                state_occupancy=n_state / T,
                ripple_occupancy=occ_ripple,
                sleep_occupancy=occ_sleep,
                ripple_enrichment=np.where(occ_sleep > 0, occ_ripple / np.maximum(occ_sleep, 1e-12), np.nan),
                rates_hz=np.asarray(
                    [counts[vit == s].mean(0) / args.bin_size if (vit == s).any() else np.zeros(N) for s in range(S)]
                ),
            )
        results[f"{name}-{S}" if name != "GLM" else "GLM"] = r
        print(
            f"{name} S={S}: held-out LL/bin {r['heldout_ll_per_bin']:.4f}, bits/spike {r['heldout_bits_per_spike']:.4f}"
            f", agreement {r.get('sleep_wake_agreement', float('nan')):.3f} ({fit_s:.1f} s)",
            flush=True,
        )

    best_key = max(results, key=lambda k: results[k]["heldout_ll_per_bin"])
    multi = [k for k in results if results[k]["S"] > 1]
    best_multi = max(multi, key=lambda k: results[k]["heldout_ll_per_bin"])
    rb = results[best_multi]
    unit_labels = [f"{u}:{g}" for u, g in zip(unit_ids, groups, strict=True)]

    # ---------------------------------------------------------------- figures: states
    fig = plot_raster_states(counts, binned.bin_edges, rb["smoothed_probs"], epochs=epochs, unit_labels=unit_labels)
    fig.suptitle(
        f"{best_multi}: state posteriors on the whole recording (fitted on alternate {args.block:.0f} s blocks); "
        f"sleep/wake agreement {rb['sleep_wake_agreement']:.3f} (chance {rb['chance_agreement']:.3f})",
        fontsize=9,
    )
    fig.savefig(out / "figure_states.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    lo, hi = max(0.0, 600.0 - 45.0), min(t_stop, 600.0 + 15.0)  # the end of sleep (ripples) into wake
    sel = (binned.bin_edges[:-1] >= lo) & (binned.bin_edges[1:] <= hi)
    idx = np.flatnonzero(sel)
    clipped = [
        (max(float(a), lo), min(float(b), hi), str(t))
        for a, b, t in zip(epochs["start"], epochs["stop"], epochs["tags"], strict=True)
        if b > lo and a < hi
    ]
    fig = plot_raster_states(
        counts[idx],
        binned.bin_edges[idx[0] : idx[-1] + 2],
        rb["smoothed_probs"][idx],
        epochs=clipped,
        unit_labels=unit_labels,
    )
    ax_r = fig.axes[0]
    rip = ripples[(ripples["stop"] > lo) & (ripples["start"] < hi)]
    for s, e in zip(rip["start"], rip["stop"], strict=True):
        ax_r.axvspan(s, e, color="tab:red", alpha=0.35, lw=0)
        ax_r.plot([(s + e) / 2], [N - 0.5], "v", color="tab:red", ms=4, clip_on=False)
    fig.axes[1].set_xlim(lo, hi)
    fig.suptitle(f"{best_multi}, {lo:.0f}-{hi:.0f} s: sleep ripples in red", fontsize=9)
    fig.savefig(out / "figure_states_zoom.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    # ---------------------------------------------------------------- figure: held-out LL
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
    plt.close(fig)

    # ---------------------------------------------------------------- figure: A0 / adjacency
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
                occ = np.mean(ro["viterbi"] == s)
                group_axes(axes[col], groups, f"{ko}: state {s} adjacency (occ. {occ:.2f})")
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
            off = ~np.eye(N, dtype=bool)
            adjacency_summary["W0_mean_abs_by_block"] = {
                f"{src}->{tgt}": float(np.abs(W0[(groups[:, None] == tgt) & (groups[None, :] == src) & off]).mean())
                for src in np.unique(groups)
                for tgt in np.unique(groups)
            }
        fig.savefig(out / "figure_adjacency.png", dpi=110, bbox_inches="tight")
        plt.close(fig)

    # ---------------------------------------------------------------- ArviZ summary of the best multi-state model
    m_best, f_best = rb["model"], rb["fit"]
    idata = to_arviz(f_best, model=m_best)
    if (
        f_best.params.emissions.prior_logits is not None
    ):  # the learned A0 = softmax(prior_logits), as a derived variable
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
    md = [f"# ArviZ summary: {best_multi} (training blocks)", "", "EM point estimates:", "", _markdown(summ)]
    if svi_summary is not None:
        md += ["", svi_note, "", _markdown(svi_summary)]
    (out / "arviz_summary.md").write_text("\n".join(md) + "\n")

    # ---------------------------------------------------------------- report
    n_spk = counts.sum()
    lines = [
        "# Switching brain states in ADn/CA1 with HMM-GLMs (A2929-200711, 15 units)",
        "",
        f"Bins: {args.bin_size * 1000:.0f} ms, {T} bins, {N} units ({int((groups == 'adn').sum())} ADn, "
        f"{int((groups == 'ca1').sum())} CA1), {int(n_spk)} spikes. Alternate {args.block:.0f} s blocks held out "
        f"({len(train)} train / {len(test)} test blocks). EM: up to {args.iters} iterations × {args.inner_steps} "
        f"Adam steps, {args.restarts} k-means restarts per multi-state model; exponential K=5 history filter, "
        f"softplus link, {'shared' if args.shared_bias else 'per-state'} bias, stickiness {args.stickiness:g}. "
        f"OHG: {args.ohg_sampling} adjacency sampling in EM, hard argmax adjacency for evaluation and decoding.",
        "",
        "| model | S | held-out LL/bin | held-out bits/spike | train bits/spike | sleep/wake agreement | chance | "
        "state → epoch | fraction of each state's bins in sleep | ripple-bin occupancy | ripple enrichment vs sleep |"
        " EM iters | s/iter | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        multi_ = r["S"] > 1
        lines.append(
            f"| {r['name']} | {r['S']} | {r['heldout_ll_per_bin']:.4f} | {r['heldout_bits_per_spike']:.4f} | "
            f"{r['train_bits_per_spike']:.4f} | "
            + (
                f"{r['sleep_wake_agreement']:.3f} | {r['chance_agreement']:.3f} | {', '.join(r['state_to_epoch'])} | "
                f"{', '.join(f'{v:.2f}' for v in r['state_sleep_fraction'])} | "
                f"{', '.join(f'{v:.2f}' for v in r['ripple_occupancy'])} | "
                f"{', '.join(f'{v:.2f}' for v in r['ripple_enrichment'])} | "
                if multi_
                else "– | – | – | – | – | – | "
            )
            + f"{'/'.join(map(str, r['em_iterations']))} | {r['seconds_per_iteration']:.3f} | {r['fit_seconds']:.1f} |"
        )
    if ohg_keys:
        lines += [
            "",
            "OHG held-out LL/bin with the soft adjacency instead of the hard one: "
            + ", ".join(f"{k} {results[k]['heldout_ll_per_bin_soft']:.4f}" for k in ohg_keys),
        ]
    lines += [
        "",
        f"Best model by held-out likelihood: **{best_key}**; best multi-state model: **{best_multi}** "
        f"(sleep/wake agreement {rb['sleep_wake_agreement']:.3f} vs chance {rb['chance_agreement']:.3f}; "
        f"{int(in_ripple.sum())} ripple bins).",
        "",
        f"Firing rates (Hz) in each Viterbi state of {best_multi} (rows: states; columns: units "
        + " ".join(unit_labels)
        + "):",
        "",
    ]
    lines += ["    " + " ".join(f"{v:6.1f}" for v in row) for row in rb["rates_hz"]]
    lines += ["", "Transition matrix:", ""]
    lines += ["    " + " ".join(f"{v:.4f}" for v in row) for row in np.asarray(f_best.params.transitions.matrix)]
    if adjacency_summary:
        lines += [
            "",
            "Edges between regions (rows = target, columns = source; diagonal excluded):",
            "",
            "```",
            json.dumps(adjacency_summary, indent=1),
            "```",
        ]
    lines += [
        "",
        "![held-out](figure_heldout.png)",
        "",
        "![states](figure_states.png)",
        "",
        "![zoom](figure_states_zoom.png)",
        "",
        "![adjacency](figure_adjacency.png)",
        "",
        f"ArviZ summary: [arviz_summary.md](arviz_summary.md) ({svi_note})",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))

    summary = {
        "heldout_ll_per_model": {k: r["heldout_ll_per_bin"] for k, r in results.items()},
        "heldout_ll_units": "nats per held-out bin",
        "heldout_bits_per_spike": {k: r["heldout_bits_per_spike"] for k, r in results.items()},
        "train_ll_per_model": {k: r["train_ll_per_bin"] for k, r in results.items()},
        "best_model": best_key,
        "best_multistate_model": best_multi,
        "sleep_wake_state_agreement": rb["sleep_wake_agreement"],
        "sleep_wake_chance_agreement": rb["chance_agreement"],
        "agreement_per_model": {k: results[k]["sleep_wake_agreement"] for k in multi},
        "chance_agreement_per_model": {k: results[k]["chance_agreement"] for k in multi},
        "ripple_occupancy_best": [float(v) for v in rb["ripple_occupancy"]],
        "ripple_enrichment_best": [float(v) for v in rb["ripple_enrichment"]],
        "state_to_epoch_best": rb["state_to_epoch"],
        "state_sleep_fraction_best": [float(v) for v in rb["state_sleep_fraction"]],
        "state_occupancy_best": [float(v) for v in rb["state_occupancy"]],
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
        "svi_seconds": round(svi_seconds, 2),
        "seconds": round(time.perf_counter() - t_start, 2),
        "output_dir": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


def _markdown(df) -> str:
    """A DataFrame as a GitHub markdown table (no ``tabulate`` dependency)."""
    cols = list(df.columns)
    rows = ["| | " + " | ".join(map(str, cols)) + " |", "|---" * (len(cols) + 1) + "|"]
    for idx, row in df.iterrows():
        rows.append(f"| {idx} | " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
