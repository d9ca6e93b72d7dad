"""Sleep and wake as hidden states: a Poisson HMM on 15 ADn/CA1 units (bundled NWB recording).

Bins the spike trains (default 500 ms), fits Poisson HMMs with 2, 4 and 8 states by EM (k-means starts,
restarts), decodes the states (Viterbi) and asks how well they separate the recorded sleep (0–600 s) and wake
(600–1200 s) epochs.  Agreement is the fraction of bins whose decoded state matches the epoch after the best
mapping of states to epochs (one-to-one by the Hungarian algorithm for 2 states, otherwise each state to the epoch
it overlaps most).  Because a many-to-one mapping gains agreement as states are added, each model also reports a
chance control: the same mapping applied to its decoded path circularly shifted by a quarter of the recording (300 s).
The number of states is chosen by held-out log-likelihood (fit on alternate 60 s blocks, score the others), and
the headline ``sleep_wake_state_agreement`` is that model's.  Within wake, head-direction tuning of the ADn cells
dominates the population activity, so two states split by heading rather than by sleep/wake.

Writes ``figure_states.png``, ``report.md``, ``summary.json`` under ``--out``; the JSON is also the last printed
line.  ``--quick`` uses coarser bins and fewer restarts (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from pssm.data import bin_spikes, intervals_to_labels, intervals_to_mask, train_test_split_blocks
from pssm.inference import fit_em_restarts, marginal_log_likelihood
from pssm.metrics import confusion_matrix, match_states
from pssm.models import HMM, PoissonEmissions, StickyTransitions
from pssm.nwb import read_nwb
from pssm.plotting import plot_raster_states

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "data" / "A2929-200711.nwb"


def epoch_agreement(states: np.ndarray, epoch_labels: np.ndarray, num_states: int) -> tuple[float, np.ndarray]:
    """Best-mapping agreement between decoded states and epoch labels (``-1`` labels ignored)."""
    ok = epoch_labels >= 0
    n_ep = int(epoch_labels[ok].max()) + 1
    if num_states == n_ep:
        mapping = match_states(epoch_labels[ok], states[ok], num_states)
    else:  # many-to-one: each state to the epoch it overlaps most
        C = confusion_matrix(epoch_labels[ok], states[ok], n_ep, num_states)
        mapping = C.argmax(axis=0)
    return float(np.mean(mapping[states[ok]] == epoch_labels[ok])), mapping


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="NWB file (default: the bundled recording)")
    ap.add_argument("--bin-size", type=float, default=0.5, help="seconds per bin")
    ap.add_argument("--states", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "case_studies" / "output" / "sleep_wake_hmm"))
    ap.add_argument("--quick", action="store_true", help="1 s bins, 2 and 4 states, 2 restarts, 60 iterations")
    args = ap.parse_args(argv)
    if args.quick:
        args.bin_size, args.restarts, args.iters, args.states = 1.0, 2, 60, [2, 4]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    rec = read_nwb(args.data)
    binned = bin_spikes(rec.spike_times, args.bin_size, t_start=0.0, t_stop=1200.0)
    counts = binned.counts
    ep = rec.epochs
    epoch_names = [str(t) for t in ep["tags"]]
    labels = intervals_to_labels(binned.bin_edges, ep["start"], ep["stop"])
    ripples = rec.interval("sleep_ripples")
    in_ripple = intervals_to_mask(binned.bin_edges, ripples["start"], ripples["stop"])
    locations = rec.units["location"].astype(str).to_numpy()

    # held-out split: alternate 60 s blocks
    block = int(round(60 / args.bin_size))
    num_blocks = counts.shape[0] // block
    split = train_test_split_blocks(counts, np.arange(1, num_blocks, 2), block_length=block, kind="counts")
    results, key = {}, jax.random.PRNGKey(args.seed)
    best_overall = None
    for S in args.states:
        key, k_fit, k_cv = jax.random.split(key, 3)
        model = HMM(S, PoissonEmissions(counts.shape[1]), transition_component=StickyTransitions(stickiness=10.0))
        best, _ = fit_em_restarts(
            k_fit, model, counts.astype(np.float32), num_restarts=args.restarts, num_iters=args.iters, tol=1e-7
        )
        post = best.posterior  # one sequence in, one sequence out: (T, S)
        vit = np.asarray(best.most_likely_states())
        agree_vit, mapping = epoch_agreement(vit, labels, S)
        agree_post, _ = epoch_agreement(np.asarray(post.smoothed_probs.argmax(-1)), labels, S)
        agree_chance, _ = epoch_agreement(np.roll(vit, vit.shape[0] // 4), labels, S)
        # held-out log-likelihood per bin: fit on train blocks, score test blocks
        cv_best, _ = fit_em_restarts(
            k_cv, model, split.train, num_restarts=args.restarts, num_iters=args.iters, tol=1e-7
        )
        test_ll = float(marginal_log_likelihood(model, cv_best.params, split.test).sum())
        n_test_bins = int(np.asarray(split.test.lengths).sum())
        ripple_state = np.bincount(vit[in_ripple], minlength=S) / max(int(in_ripple.sum()), 1)
        results[S] = dict(
            params=best.params,
            posterior=post,
            viterbi=vit,
            agreement_viterbi=agree_vit,
            agreement_posterior=agree_post,
            agreement_chance=agree_chance,
            state_to_epoch=[epoch_names[m] for m in mapping],
            log_likelihood_per_bin=float(best.log_likelihoods[-1]) / counts.shape[0],
            heldout_ll_per_bin=test_ll / n_test_bins,
            em_iterations=int(best.num_iters),
            ripple_state_occupancy=ripple_state.tolist(),
        )
        if best_overall is None or results[S]["heldout_ll_per_bin"] > results[best_overall]["heldout_ll_per_bin"]:
            best_overall = S

    # figure and headline for the model with the best held-out likelihood
    S_fig = best_overall
    r = results[S_fig]
    unit_labels = [f"{u}:{loc}" for u, loc in zip(binned.units, locations, strict=True)]
    fig = plot_raster_states(
        counts, binned.bin_edges, np.asarray(r["posterior"].smoothed_probs), epochs=ep, unit_labels=unit_labels
    )
    fig.suptitle(
        f"Poisson HMM, {S_fig} states: decoded states vs recorded epochs (agreement {r['agreement_viterbi']:.3f})"
    )
    fig.savefig(out / "figure_states.png", dpi=110, bbox_inches="tight")

    rates = {S: np.asarray(results[S]["params"].emissions.rates) / args.bin_size for S in results}
    lines = [
        "# Sleep/wake states from a Poisson HMM (A2929-200711, 15 units)",
        "",
        f"Bins: {args.bin_size * 1000:.0f} ms, {counts.shape[0]} bins, {counts.shape[1]} units "
        f"({int((locations == 'adn').sum())} ADn, {int((locations == 'ca1').sum())} CA1); "
        f"{args.restarts} EM restarts per fit.",
        "",
        "| states | agreement with sleep/wake (Viterbi) | (posterior argmax) | chance control | state → epoch |"
        " held-out LL/bin | ripple-bin occupancy |",
        "|---|---|---|---|---|---|---|",
    ]
    for S, rr in results.items():
        lines.append(
            f"| {S} | {rr['agreement_viterbi']:.3f} | {rr['agreement_posterior']:.3f} | {rr['agreement_chance']:.3f} | "
            f"{', '.join(rr['state_to_epoch'])} | {rr['heldout_ll_per_bin']:.4f} | "
            f"{', '.join(f'{v:.2f}' for v in rr['ripple_state_occupancy'])} |"
        )
    lines += ["", f"Firing rates (Hz) per state, {S_fig}-state model (rows: states; columns: units):", ""]
    lines += ["    " + " ".join(f"{v:6.1f}" for v in row) for row in rates[S_fig]]
    lines += [
        "",
        f"Model chosen by held-out likelihood: {S_fig} states. Chance control: the decoded path shifted by a "
        "quarter of the recording, mapped the same way.",
        "",
        "![states](figure_states.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))

    summary = {
        "sleep_wake_state_agreement": results[S_fig]["agreement_viterbi"],
        "num_states_for_agreement": S_fig,
        "agreement_by_num_states": {str(S): rr["agreement_viterbi"] for S, rr in results.items()},
        "chance_agreement_by_num_states": {str(S): rr["agreement_chance"] for S, rr in results.items()},
        "heldout_ll_per_bin": {str(S): rr["heldout_ll_per_bin"] for S, rr in results.items()},
        "best_num_states_heldout": best_overall,
        "bin_size_s": args.bin_size,
        "num_bins": int(counts.shape[0]),
        "seconds": round(time.perf_counter() - t_start, 2),
        "output_dir": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
