"""Plots for binned recordings and decoded states (matplotlib; works with the Agg backend, never calls show)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pssm.validation import check_array

__all__ = ["plot_raster_states"]


def _epoch_rows(epochs: Any) -> list[tuple[float, float, str]]:
    """Epochs from a DataFrame (``start``/``stop`` or ``start_time``/``stop_time``, optional ``tags``/``label``)
    or a sequence of ``(start, stop)`` / ``(start, stop, label)`` tuples."""
    if isinstance(epochs, pd.DataFrame):
        s = "start" if "start" in epochs else "start_time"
        e = "stop" if "stop" in epochs else "stop_time"
        if s not in epochs or e not in epochs:
            raise ValueError("epochs DataFrame needs 'start' and 'stop' (or 'start_time'/'stop_time') columns.")
        lab = next((c for c in ("label", "tags", "name") if c in epochs), None)
        labels = [str(v) for v in epochs[lab]] if lab else [""] * len(epochs)
        return [(float(a), float(b), t) for a, b, t in zip(epochs[s], epochs[e], labels, strict=True)]
    rows = []
    for i, row in enumerate(epochs):
        if len(row) not in (2, 3):
            raise ValueError(f"epochs[{i}] must be (start, stop) or (start, stop, label); got {row!r}.")
        rows.append((float(row[0]), float(row[1]), str(row[2]) if len(row) == 3 else ""))
    return rows


def plot_raster_states(
    counts: Any,
    bin_edges: Any,
    state_probs: Any,
    epochs: Any = None,
    unit_labels: Sequence[Any] | None = None,
    ax: Sequence[Axes] | None = None,
    normalize: bool = True,
) -> Figure:
    """Spike-count raster (units × time) above stacked state probabilities, with epochs shaded on both panels.

    ``counts`` ``(T, N)``, ``bin_edges`` ``(T+1,)`` seconds, ``state_probs`` ``(T, S)`` (rows sum to 1, e.g.
    smoothed posteriors; one-hot rows for a Viterbi path).  ``epochs``: DataFrame with ``start``/``stop``
    (and ``tags``) or ``[(start, stop, label), ...]``.  ``ax``: two axes to draw into (else a new figure).
    ``normalize``: scale each unit by its own 99th-percentile count (at least 1) so low-rate units stay visible.
    Returns the figure.
    """
    counts = np.asarray(check_array(counts, "counts", ndim=2))
    T, N = counts.shape
    edges = np.asarray(check_array(bin_edges, "bin_edges", shape=(T + 1,)), float)
    probs = np.asarray(check_array(state_probs, "state_probs", ndim=2))
    if probs.shape[0] != T:
        raise ValueError(f"state_probs must have {T} rows (one per bin, like counts); got shape {probs.shape}.")
    if (probs < -1e-4).any() or (probs > 1 + 1e-4).any():
        raise ValueError("state_probs must be probabilities in [0, 1].")
    probs = np.clip(probs, 0.0, 1.0)  # float32 rounding
    if unit_labels is not None and len(unit_labels) != N:
        raise ValueError(f"unit_labels must have {N} entries (one per column of counts); got {len(unit_labels)}.")
    if ax is None:
        fig, axes = plt.subplots(
            2, 1, sharex=True, figsize=(10, 5), gridspec_kw={"height_ratios": [max(N, 3), 3]}, constrained_layout=True
        )
    else:
        axes = list(ax)
        if len(axes) != 2:
            raise ValueError(f"ax must be two axes (raster, states); got {len(axes)}.")
        fig = axes[0].figure
    a_r, a_s = axes
    scale = np.maximum(np.percentile(counts, 99, axis=0), 1.0) if normalize else np.ones(N)
    shown = counts.T / scale[:, None]
    a_r.imshow(
        shown,
        aspect="auto",
        interpolation="nearest",
        cmap="Greys",
        origin="lower",
        extent=(edges[0], edges[-1], -0.5, N - 0.5),
        vmin=0.0,
        vmax=1.0 if normalize else max(float(np.percentile(counts, 99)), 1.0),
    )
    a_r.set_ylabel("unit")
    if unit_labels is not None:
        a_r.set_yticks(np.arange(N))
        a_r.set_yticklabels([str(u) for u in unit_labels], fontsize=6)
    centers = 0.5 * (edges[:-1] + edges[1:])
    S = probs.shape[1]
    a_s.stackplot(centers, probs.T, labels=[f"state {k}" for k in range(S)], step=None)
    a_s.set_ylim(0, 1)
    a_s.set_xlim(edges[0], edges[-1])
    a_s.set_ylabel("p(state)")
    a_s.set_xlabel("time (s)")
    a_s.legend(loc="upper right", fontsize=7, ncol=S)
    if epochs is not None:
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (s, e, label) in enumerate(_epoch_rows(epochs)):
            c = colors[i % len(colors)]
            for a in (a_r, a_s):
                a.axvspan(s, e, color=c, alpha=0.15, lw=0)
            if label:
                a_r.text((s + e) / 2, N - 0.5, label, ha="center", va="bottom", fontsize=8)
    return fig
