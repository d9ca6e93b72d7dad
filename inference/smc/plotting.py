"""Plots of smoothed (or filtered) latent states with credible bands."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["plot_smoothed_states"]


def _bands(result: Any, interval: float):
    from scipy.stats import norm

    from pssm.inference.smc.ffbsi import FFBSiResult, MarginalSmootherResult

    if isinstance(result, FFBSiResult):
        traj = np.asarray(result.trajectories, dtype=float)  # (M, T, ...)
        traj = traj.reshape(traj.shape[0], traj.shape[1], -1)
        lo, hi = np.quantile(traj, [0.5 - interval / 2, 0.5 + interval / 2], axis=0)
        return traj.mean(0), lo, hi
    if isinstance(result, MarginalSmootherResult):
        mean = np.asarray(result.means, dtype=float)
        mean = mean.reshape(mean.shape[0], -1)
        sd = np.sqrt(np.asarray(result.variances, dtype=float)).reshape(mean.shape)
        z = norm.ppf(0.5 + interval / 2)
        return mean, mean - z * sd, mean + z * sd
    if isinstance(result, tuple) and len(result) == 3:
        return tuple(np.asarray(a, dtype=float).reshape(np.shape(a)[0], -1) for a in result)
    raise TypeError("result must be an FFBSiResult, a MarginalSmootherResult or a (mean, lower, upper) tuple.")


def plot_smoothed_states(
    result: Any,
    *,
    truth: Any | None = None,
    observations: Any | None = None,
    time: Any | None = None,
    components: list[int] | None = None,
    interval: float = 0.9,
    axes: Any | None = None,
    label: str = "smoothed",
):
    """Smoothed mean and ``interval`` band per latent component, with the true states and/or data overlaid.

    ``result`` is an :class:`~pssm.inference.smc.FFBSiResult` (empirical quantiles of the trajectories), a
    :class:`~pssm.inference.smc.MarginalSmootherResult` (Gaussian band from the smoothed variance) or a
    ``(mean, lower, upper)`` tuple with leading time axis.  ``observations`` are drawn on the panel of the same
    index when their width matches the state.  Returns the matplotlib axes.
    """
    import matplotlib.pyplot as plt

    if not 0.0 < interval < 1.0:
        raise ValueError(f"interval must lie in (0, 1); got {interval}.")
    mean, lo, hi = _bands(result, interval)
    T, D = mean.shape
    comps = list(range(min(D, 4))) if components is None else list(components)
    if any(c < 0 or c >= D for c in comps):
        raise ValueError(f"components must index the {D} latent dimensions; got {comps}.")
    ts = np.arange(T) if time is None else np.asarray(time)
    if axes is None:
        _, axes = plt.subplots(len(comps), 1, figsize=(8, 2.2 * len(comps)), sharex=True, squeeze=False)
        axes = axes[:, 0]
    axes = np.atleast_1d(axes)
    tru = None if truth is None else np.asarray(truth, dtype=float).reshape(T, -1)
    obs = None if observations is None else np.asarray(observations, dtype=float).reshape(T, -1)
    for ax, c in zip(axes, comps, strict=False):
        ax.fill_between(ts, lo[:, c], hi[:, c], alpha=0.3, color="C0", label=f"{int(interval * 100)}% band")
        ax.plot(ts, mean[:, c], color="C0", lw=1.2, label=label)
        if tru is not None:
            ax.plot(ts, tru[:, c], color="k", lw=0.8, ls="--", label="truth")
        if obs is not None and obs.shape[1] == D:
            ax.plot(ts, obs[:, c], ".", color="C3", ms=2, label="data")
        ax.set_ylabel(f"x[{c}]")
    axes[0].legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("time")
    return axes
