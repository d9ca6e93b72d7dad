"""Diagnostic plots (matplotlib; work with the Agg backend, never call ``show``; every function returns the figure).

Recordings and states (:func:`plot_raster_states`, :func:`plot_state_probs`, :func:`plot_states_true_vs_decoded`),
HMM and HMM-GLM parameters (:func:`plot_transition_matrix`, :func:`plot_connectivity`), fits and filters
(:func:`plot_objective_trace`, :func:`plot_ess`, :func:`plot_latent_bands`) and posterior predictive checks
(:func:`plot_ppc`).  matplotlib and pandas are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pssm.validation import check_array

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_connectivity",
    "plot_ess",
    "plot_latent_bands",
    "plot_objective_trace",
    "plot_ppc",
    "plot_raster_states",
    "plot_state_probs",
    "plot_states_true_vs_decoded",
    "plot_transition_matrix",
]


def _epoch_rows(epochs: Any) -> list[tuple[float, float, str]]:
    """Epochs from a DataFrame (``start``/``stop`` or ``start_time``/``stop_time``, optional ``tags``/``label``)
    or a sequence of ``(start, stop)`` / ``(start, stop, label)`` tuples."""
    import pandas as pd

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
    import matplotlib.pyplot as plt

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


# ------------------------------------------------------------------------------------------------ helpers


def _as_2d(x: Any, name: str) -> np.ndarray:
    """``(T,)`` -> ``(T, 1)``; ``(T, ...)`` -> ``(T, D)``."""
    a = np.asarray(x, float)
    if a.ndim == 0:
        raise ValueError(f"{name} must have a leading time axis; got a scalar.")
    return a.reshape(a.shape[0], -1)


def _grid(n: int, ncols: int, size: tuple[float, float], **kw: Any) -> tuple[Figure, list[Axes]]:
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, constrained_layout=True, **kw
    )
    flat = list(axes.ravel())
    for a in flat[n:]:
        a.set_visible(False)
    return fig, flat[:n]


# ------------------------------------------------------------------------------------------------ fits and filters


def plot_objective_trace(
    traces: Mapping[str, Any] | Any,
    *,
    xlabel: str = "iteration",
    ylabel: str | None = None,
    title: str | None = None,
) -> Figure:
    """One panel per objective trace: ``traces`` maps a label (used as the y-axis label) to an array ``(iters,)`` or
    ``(chains, iters)`` (one line per chain); a bare array is one trace labelled ``ylabel`` (default
    ``"objective"``).  Non-finite values are dropped.  Returns the figure."""
    items = dict(traces) if isinstance(traces, Mapping) else {ylabel or "objective": traces}
    if not items:
        raise ValueError("traces is empty; pass at least one trace.")
    fig, axes = _grid(len(items), 3, (4.2, 3.0))
    for a, (label, v) in zip(axes, items.items(), strict=True):
        arr = np.asarray(v, float)
        if arr.ndim == 0 or arr.ndim > 2:
            raise ValueError(f"trace {label!r} must be (iters,) or (chains, iters); got shape {arr.shape}.")
        arr = np.atleast_2d(arr)
        for c, row in enumerate(arr):
            it = np.arange(row.size)
            ok = np.isfinite(row)
            a.plot(it[ok], row[ok], marker="." if row.size <= 50 else None, lw=1, label=f"chain {c}")
        if arr.shape[0] > 1:
            a.legend(fontsize=7)
        a.set_xlabel(xlabel)
        a.set_ylabel(label)
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_ess(
    ess: Any,
    *,
    resampled: Any = None,
    num_particles: int | None = None,
    log_likelihood_increments: Any = None,
    title: str | None = None,
) -> Figure:
    """Particle ESS over time (``ess`` ``(T,)``) with the resampling times (``resampled`` booleans ``(T,)``) marked
    as ticks, ``num_particles`` as a reference line, and below it the log-likelihood increments ``(T,)`` if given."""
    import matplotlib.pyplot as plt

    e = np.asarray(ess, float).ravel()
    T = e.size
    n = 2 if log_likelihood_increments is not None else 1
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.8 * n), sharex=True, squeeze=False, constrained_layout=True)
    a = axes[0, 0]
    t = np.arange(T)
    a.plot(t, e, lw=1, label="ESS")
    if num_particles is not None:
        a.axhline(num_particles, color="grey", ls=":", lw=1, label=f"N = {num_particles}")
    if resampled is not None:
        r = np.asarray(resampled, bool).ravel()
        if r.shape != (T,):
            raise ValueError(f"resampled must have {T} entries (one per step, like ess); got {r.size}.")
        top = np.nanmax(e) if np.isfinite(e).any() else 1.0
        a.plot(t[r], np.full(r.sum(), top * 1.04), "|", color="C3", ms=8, label=f"resampled ({int(r.sum())}×)")
    a.set_ylabel("effective sample size")
    a.set_ylim(bottom=0)
    a.legend(fontsize=7, loc="lower left")
    a.grid(alpha=0.3)
    if log_likelihood_increments is not None:
        inc = np.asarray(log_likelihood_increments, float).ravel()
        b = axes[1, 0]
        b.plot(np.arange(inc.size), inc, lw=1, color="C2")
        b.set_ylabel(r"$\log \hat p(y_t \mid y_{0:t-1})$")
        b.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time step")
    if title:
        fig.suptitle(title)
    return fig


def plot_latent_bands(
    mean: Any,
    lower: Any = None,
    upper: Any = None,
    *,
    truth: Any = None,
    samples: Any = None,
    label: str = "posterior mean",
    band_label: str = "band",
    max_dims: int = 6,
    title: str | None = None,
) -> Figure:
    """Latent paths over time, one panel per dimension (at most ``max_dims``): ``mean`` ``(T, D)`` (or ``(T,)``) with
    the band ``[lower, upper]`` shaded, a few ``samples`` ``(M, T, D)`` as thin lines and the true latents ``truth``
    ``(T, D)`` dashed."""
    m = _as_2d(mean, "mean")
    T, D = m.shape
    lo = None if lower is None else _as_2d(lower, "lower")
    hi = None if upper is None else _as_2d(upper, "upper")
    if (lo is None) != (hi is None) or (lo is not None and (lo.shape != m.shape or hi.shape != m.shape)):
        raise ValueError(f"lower and upper must both be given with the shape of mean {m.shape}.")
    tr = None
    if truth is not None:
        tr = _as_2d(truth, "truth")
        if tr.shape[0] != T:
            raise ValueError(f"truth must have {T} time steps like mean; got shape {np.shape(truth)}.")
    sm = None if samples is None else np.asarray(samples, float).reshape(np.shape(samples)[0], T, -1)
    d_shown = min(D, max_dims)
    fig, axes = _grid(d_shown, 2, (5.0, 2.6))
    t = np.arange(T)
    for d, a in enumerate(axes):
        if sm is not None:
            for s in sm[:20, :, d]:
                a.plot(t, s, color="C0", lw=0.4, alpha=0.3)
        if lo is not None:
            a.fill_between(t, lo[:, d], hi[:, d], color="C0", alpha=0.25, lw=0, label=band_label)
        a.plot(t, m[:, d], color="C0", lw=1.2, label=label)
        if tr is not None and d < tr.shape[1]:
            a.plot(t, tr[:, d], color="k", ls="--", lw=1, label="true")
        a.set_xlabel("time step")
        a.set_ylabel(f"latent dim {d}")
        a.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title + (f" (first {d_shown} of {D} dims)" if D > d_shown else ""))
    return fig


def plot_ppc(
    observed: Mapping[str, Any],
    replicates: Mapping[str, Any],
    *,
    dim_labels: Sequence[str] | None = None,
    max_dims: int = 6,
    bins: int = 20,
) -> Figure:
    """Posterior predictive check: for each statistic (``observed[name]`` ``(D,)``, ``replicates[name]`` ``(R, D)``)
    and each dimension, a histogram of the replicate values with the observed value marked (rows = statistics,
    columns = dimensions, at most ``max_dims``)."""
    import matplotlib.pyplot as plt

    names = list(observed)
    if not names or set(names) != set(replicates):
        raise ValueError("observed and replicates must name the same, non-empty set of statistics.")
    D = np.asarray(observed[names[0]]).ravel().size
    d_shown = min(D, max_dims)
    labels = list(dim_labels) if dim_labels is not None else [f"dim {d}" for d in range(D)]
    fig, axes = plt.subplots(
        len(names), d_shown, figsize=(2.8 * d_shown, 2.3 * len(names)), squeeze=False, constrained_layout=True
    )
    for i, name in enumerate(names):
        obs = np.asarray(observed[name], float).ravel()
        rep = np.asarray(replicates[name], float).reshape(-1, D)
        for d in range(d_shown):
            a = axes[i, d]
            r = rep[:, d][np.isfinite(rep[:, d])]
            a.hist(r, bins=bins, color="C0", alpha=0.7, label="replicates")
            a.axvline(obs[d], color="C3", lw=2, label="observed")
            a.set_xlabel(f"{name} ({labels[d]})")
            a.set_ylabel("replicates")
    axes[0, 0].legend(fontsize=7)
    return fig


# ------------------------------------------------------------------------------------------------ discrete states


def plot_state_probs(
    probs: Any,
    *,
    viterbi: Any = None,
    true_states: Any = None,
    title: str | None = None,
) -> Figure:
    """State raster: posterior state probabilities ``(T, S)`` as a heat map (state × time), with the Viterbi path
    ``(T,)`` drawn over it and the true states ``(T,)`` as markers if given."""
    import matplotlib.pyplot as plt

    p = np.asarray(check_array(probs, "probs", ndim=2), float)
    T, S = p.shape
    fig, a = plt.subplots(figsize=(10, 1.0 + 0.45 * max(S, 2)), constrained_layout=True)
    im = a.imshow(
        p.T, aspect="auto", interpolation="nearest", origin="lower", cmap="viridis", vmin=0.0, vmax=1.0,
        extent=(-0.5, T - 0.5, -0.5, S - 0.5),
    )  # fmt: skip
    fig.colorbar(im, ax=a, label="p(state | data)")
    t = np.arange(T)
    if viterbi is not None:
        v = np.asarray(viterbi).ravel()
        ok = v >= 0
        a.step(t[ok], v[ok], where="mid", color="w", lw=1.2, label="Viterbi path")
    if true_states is not None:
        z = np.asarray(true_states).ravel()
        a.plot(t[: z.size], z[:T], ".", color="C3", ms=2.5, label="true state")
    if viterbi is not None or true_states is not None:
        a.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
    a.set_yticks(np.arange(S))
    a.set_xlabel("time step")
    a.set_ylabel("state")
    if title:
        a.set_title(title, loc="left")
    return fig


def plot_states_true_vs_decoded(
    true_states: Any,
    decoded: Any,
    num_states: int | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """True vs decoded state paths ``(T,)``, the decoded labels mapped by the best permutation
    (:func:`pssm.metrics.match_states`); the accuracy after relabelling is in the title."""
    import matplotlib.pyplot as plt

    from pssm.metrics import match_states

    z = np.asarray(true_states).ravel()
    zh = np.asarray(decoded).ravel()
    if z.shape != zh.shape:
        raise ValueError(f"true_states and decoded must have the same length; got {z.size} and {zh.size}.")
    S = int(num_states) if num_states is not None else int(max(z.max(), zh.max())) + 1
    ok = (z >= 0) & (zh >= 0)
    perm = match_states(z[ok], zh[ok], S)
    mapped = np.where(zh >= 0, perm[np.clip(zh, 0, S - 1)], -1)
    acc = float(np.mean(mapped[ok] == z[ok])) if ok.any() else float("nan")
    fig, axes = plt.subplots(2, 1, figsize=(10, 3.2), sharex=True, constrained_layout=True)
    t = np.arange(z.size)
    for a, path, lab, c in ((axes[0], z, "true", "k"), (axes[1], mapped, "decoded (permuted)", "C1")):
        a.step(t, path, where="mid", color=c, lw=1)
        a.set_ylabel(lab)
        a.set_yticks(np.arange(max(S, int(z.max()) + 1)))
        a.set_ylim(-0.5, max(S, int(z.max()) + 1) - 0.5)
    wrong = ok & (mapped != z)
    axes[1].plot(t[wrong], mapped[wrong], "x", color="C3", ms=3, label="mismatch")
    if wrong.any():
        axes[1].legend(fontsize=7, loc="upper right")
    axes[1].set_xlabel("time step")
    axes[0].set_title(title or f"true vs decoded states (accuracy after relabelling {acc:.3f})")
    return fig


def plot_transition_matrix(matrix: Any, *, title: str = "transition matrix", ax: Axes | None = None) -> Figure:
    """Heat map of a transition matrix ``(S, S)`` (row = from state, column = to state), values annotated."""
    import matplotlib.pyplot as plt

    A = np.asarray(check_array(matrix, "matrix", ndim=2), float)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"matrix must be square; got shape {A.shape}.")
    S = A.shape[0]
    if ax is None:
        fig, ax = plt.subplots(figsize=(2.6 + 0.6 * S, 2.0 + 0.6 * S), constrained_layout=True)
    else:
        fig = ax.figure
    im = ax.imshow(A, cmap="Blues", vmin=0.0, vmax=max(1.0, float(np.nanmax(A))))
    fig.colorbar(im, ax=ax, label="probability")
    if S <= 12:
        for i in range(S):
            for j in range(S):
                ax.text(j, i, f"{A[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="w" if A[i, j] > 0.6 else "k")  # fmt: skip
    ax.set_xticks(np.arange(S))
    ax.set_yticks(np.arange(S))
    ax.set_xlabel("to state $z_{t+1}$")
    ax.set_ylabel("from state $z_t$")
    ax.set_title(title, fontsize=10)
    return fig


def plot_connectivity(
    matrices: Mapping[str, Any] | Any,
    *,
    groups: Sequence[Any] | None = None,
    titles: Sequence[str] | None = None,
    cmap: str = "RdBu_r",
    symmetric: bool = True,
    colorbar_label: str = "coupling",
    suptitle: str | None = None,
) -> Figure:
    """Connectivity heat maps, one panel per matrix: ``matrices`` ``(N, N)``, ``(S, N, N)`` (one per state) or a
    mapping title -> ``(N, N)``.  Rows are postsynaptic (target) neurons, columns presynaptic (source) neurons (the
    GLM convention ``W[post, pre]``).  ``groups`` (one label per neuron, e.g. brain regions) draws block separators
    and group tick labels; ``symmetric`` centres the colour scale at 0 (shared across panels)."""
    if isinstance(matrices, Mapping):
        names = list(matrices)
        mats = [np.asarray(v, float) for v in matrices.values()]
    else:
        arr = np.asarray(matrices, float)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"matrices must be (N, N) or (S, N, N); got shape {arr.shape}.")
        mats = list(arr)
        names = [f"state {s}" for s in range(len(mats))] if len(mats) > 1 else ["connectivity"]
    if titles is not None:
        if len(titles) != len(mats):
            raise ValueError(f"titles must have {len(mats)} entries (one per matrix); got {len(titles)}.")
        names = list(titles)
    if not mats:
        raise ValueError("matrices is empty.")
    N = mats[0].shape[0]
    for name, m in zip(names, mats, strict=True):
        if m.shape != (N, N):
            raise ValueError(f"every matrix must be ({N}, {N}); {name!r} has shape {m.shape}.")
    g = None
    if groups is not None:
        g = np.asarray(list(groups))
        if g.shape != (N,):
            raise ValueError(f"groups must have {N} entries (one per neuron); got {g.size}.")
    finite = np.concatenate([m[np.isfinite(m)] for m in mats]) if mats else np.zeros(1)
    vmax = float(np.max(np.abs(finite))) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    lims = (-vmax, vmax) if symmetric else (float(finite.min()), float(finite.max()) or 1.0)
    fig, axes = _grid(len(mats), 4, (3.4, 3.1))
    im = None
    for a, name, m in zip(axes, names, mats, strict=True):
        im = a.imshow(m, cmap=cmap, vmin=lims[0], vmax=lims[1], interpolation="nearest")
        a.set_title(name, fontsize=9)
        a.set_xlabel("presynaptic neuron")
        a.set_ylabel("postsynaptic neuron")
        if g is not None:
            cuts = np.flatnonzero(g[1:] != g[:-1]) + 0.5
            for c in cuts:
                a.axhline(c, color="k", lw=0.6)
                a.axvline(c, color="k", lw=0.6)
            starts = np.concatenate([[0], np.flatnonzero(g[1:] != g[:-1]) + 1])
            ends = np.concatenate([starts[1:], [N]])
            centers = (starts + ends - 1) / 2
            a.set_xticks(centers)
            a.set_xticklabels([str(g[s]) for s in starts], fontsize=7, rotation=90)
            a.set_yticks(centers)
            a.set_yticklabels([str(g[s]) for s in starts], fontsize=7)
    fig.colorbar(im, ax=axes, label=colorbar_label, shrink=0.8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig
