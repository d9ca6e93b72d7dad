"""``report(result, path)``: one self-contained HTML diagnostics page for any pssm result, MCMC run or ArviZ data.

The input is converted to :class:`arviz.InferenceData` (:func:`pssm.to_arviz` for pssm results,
``arviz.from_numpyro`` for a ``numpyro.infer.MCMC``, as is for ``InferenceData``, e.g. read back from netCDF) and
every section is driven by what that data holds (variable names and dimensions follow the conventions of
:mod:`pssm.arviz`), so a report of a saved netCDF file matches the report of the live result.  The live result,
``model``, ``params`` and ``data`` add what the converted data lacks (particle counts, Viterbi paths, connectivity
computed through the model's basis, the posterior predictive check).

Sections, each present when the input has what it needs: summary; parameter table (ArviZ summary with flagged
diagnostics, or point values for single-draw results); MCMC traces and rank plots; SMC ESS and log-likelihood
increments; objective traces; posterior predictive check; latent states with bands; HMM state raster, transition
matrix and HMM-GLM connectivity.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pssm.reporting.page import Page
from pssm.state_decoders import state_decoder

if TYPE_CHECKING:
    import arviz as az
    import xarray as xr

__all__ = ["report", "RHAT_MAX", "ESS_PER_CHAIN_MIN", "MCSE_SD_MAX"]

RHAT_MAX = 1.01
"""R-hat above this is flagged (Vehtari et al. 2021)."""
ESS_PER_CHAIN_MIN = 100
"""Bulk and tail ESS below ``100 × chains`` (400 for the usual 4 chains; Vehtari et al. 2021) are flagged."""
MCSE_SD_MAX = 0.1
"""Monte Carlo standard error above this fraction of the posterior sd is flagged."""

_MAX_PER_VAR = 16  # scalar components of one variable shown in tables and traces
_MAX_ROWS = 40  # rows of the parameter table
_MAX_TRACE = 6  # scalar variables in trace and rank plots
_LATENT_LABELS = {
    "q": "Gaussian-Markov VI guide q",
    "x": "FFBSi trajectories",
    "path": "sampled paths",
    "filtered": "filtered means",
    "smoothed": "smoothed means",
}
_BAND_SUFFIXES = ("_sd", "_lower", "_upper", "_cov")
_STATE_PROBS = ("smoothed_probs", "filtered_probs", "predicted_probs")


def report(
    result: Any,
    path: str | Path,
    *,
    title: str | None = None,
    model: Any = None,
    params: Any = None,
    data: Any = None,
    states: Any = None,
    num_ppc: int = 100,
    key: Any = None,
) -> Path:
    """Write one self-contained HTML diagnostics page for ``result`` to ``path``; returns the path.

    ``result``: any pssm result that :func:`pssm.to_arviz` converts, a ``numpyro.infer.MCMC`` or an
    :class:`arviz.InferenceData`.  ``model`` / ``params`` / ``data``: when all three are given, a posterior
    predictive check with ``num_ppc`` replicates from :func:`pssm.simulate` (``key`` is then required); ``model``
    and ``data`` with ``params`` (or the result's own point params, EM and SVI) also give the Viterbi path of an
    HMM and connectivity through the model's basis.  ``states``: true latent states, overlaid on the latent bands
    (continuous) or compared with the decoded path (discrete, ``(T,)`` integers).
    """
    ppc_requested = model is not None and params is not None and data is not None
    if ppc_requested and key is None:
        raise ValueError(
            "report: the posterior predictive check (model, params and data given) needs an explicit PRNG key; "
            "pass key=jax.random.PRNGKey(0) (or leave out one of model, params, data to skip the check)."
        )
    if int(num_ppc) < 2 and ppc_requested:
        raise ValueError(f"num_ppc must be at least 2 replicates; got {num_ppc}.")
    idata, kind = _as_idata(result)
    ctx = _Context(result, idata, kind, model, params if params is not None else _point_params(result), data, states)
    page = Page(title or f"pssm report: {kind}")
    _section_summary(page, ctx)
    _section_parameters(page, ctx)
    _section_mcmc(page, ctx)
    _section_smc(page, ctx)
    _section_objectives(page, ctx)
    if ppc_requested:
        _section_ppc(page, ctx, key, int(num_ppc))
    _section_latents(page, ctx)
    _section_hmm(page, ctx)
    return page.write(path)


# ------------------------------------------------------------------------------------------------ input handling


def _as_idata(result: Any) -> tuple[az.InferenceData, str]:
    import arviz as az

    if isinstance(result, az.InferenceData):
        return result, "InferenceData"
    try:
        from numpyro.infer import MCMC
    except ImportError:  # pragma: no cover - numpyro is a dependency
        MCMC = ()  # noqa: N806
    if isinstance(result, MCMC):
        return az.from_numpyro(result), f"numpyro MCMC ({type(result.sampler).__name__})"
    from pssm.arviz import to_arviz

    try:
        return to_arviz(result), type(result).__name__
    except TypeError as e:
        raise TypeError(
            f"report cannot read a {type(result).__name__}: pass a pssm result NamedTuple (one that pssm.to_arviz "
            f"converts), a numpyro.infer.MCMC or an arviz.InferenceData. ({e})"
        ) from e


def _point_params(result: Any) -> Any:
    """Point params carried by EM and SVI results (used for Viterbi paths and connectivity, never for the PPC)."""
    return getattr(result, "params", None) if type(result).__name__ in ("EMResult", "SVIResult") else None


class _Context:
    """Everything a section may use: the raw result, its InferenceData and the optional model/params/data."""

    def __init__(self, result, idata, kind, model, params, data, states):
        self.result, self.idata, self.kind = result, idata, kind
        self.model, self.params, self.data, self.states = model, params, data, states
        self.post = _group(idata, "posterior")
        self.stats = _group(idata, "sample_stats")
        self.loglik = _group(idata, "log_likelihood")
        self.chains = int(self.post.sizes.get("chain", 1)) if self.post is not None else 0
        self.draws = int(self.post.sizes.get("draw", 1)) if self.post is not None else 0
        self.viterbi: np.ndarray | None = None


def _group(idata: Any, name: str) -> xr.Dataset | None:
    return getattr(idata, name) if name in idata.groups() else None


def _single(da: xr.DataArray) -> np.ndarray:
    """Values at chain 0, draw 0 (for exact single-draw quantities)."""
    v = da
    for d in ("chain", "draw"):
        if d in v.dims:
            v = v.isel({d: 0})
    return np.asarray(v.values)


def _mean_over_draws(da: xr.DataArray) -> np.ndarray:
    dims = [d for d in ("chain", "draw") if d in da.dims]
    return np.asarray(da.mean(dims).values) if dims else np.asarray(da.values)


def _has_time(da: xr.DataArray) -> bool:
    return "time" in da.dims


def _param_vars(post: xr.Dataset) -> list[str]:
    """Posterior variables without a time or state-probability axis (parameters and scalar estimates)."""
    return [str(v) for v in post.data_vars if not _has_time(post[v]) and str(v) not in ("expected_transitions",)]


def _scalar_series(post: xr.Dataset, names: list[str], max_total: int) -> dict[str, np.ndarray]:
    """Up to ``_MAX_PER_VAR`` scalar components per variable as ``(chain, draw)`` arrays, named ``var[i,j]``."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        v = np.asarray(post[name].transpose("chain", "draw", ...).values, float)
        C, D = v.shape[:2]
        flat = v.reshape(C, D, -1)
        event = v.shape[2:]
        for j in range(min(flat.shape[-1], _MAX_PER_VAR)):
            idx = np.unravel_index(j, event) if event else ()
            label = f"{name}[{','.join(map(str, idx))}]" if event else name
            out[label] = flat[..., j]
            if len(out) >= max_total:
                return out
    return out


def _finite_float(x: Any) -> float:
    a = np.asarray(x, float)
    return float(a.ravel()[0]) if a.size else float("nan")


# ------------------------------------------------------------------------------------------------ 0. summary


def _num_particles(result: Any) -> int | None:
    for getter in (
        lambda r: r.final_state.log_weights,
        lambda r: r.final_state.filter.log_weights,
        lambda r: r.history.log_weights,
    ):
        try:
            return int(np.shape(getter(result))[-1])
        except (AttributeError, IndexError, TypeError):
            continue
    return None


def _log_likelihood_figures(ctx: _Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    st, ll = ctx.stats, ctx.loglik
    if st is not None and "em_log_likelihood" in st:
        tr = _single(st["em_log_likelihood"]).ravel()
        if tr.size:
            out["log-likelihood (last EM iteration)"] = float(tr[-1])
        ob = _single(st["em_log_objective"]).ravel() if "em_log_objective" in st else np.zeros(0)
        if ob.size:
            out["log-likelihood + log-prior (last EM iteration)"] = float(ob[-1])
    if ll is not None and ll.sizes.get("draw", 1) == 1:
        total = sum(float(np.nansum(_single(ll[v]))) for v in ll.data_vars)
        out["log-likelihood"] = total
    if st is not None and "log_likelihood_estimate" in st:
        v = np.asarray(st["log_likelihood_estimate"].values, float)
        if v.size == 1:
            out["log-likelihood estimate"] = float(v.ravel()[0])
        elif "iteration" not in st["log_likelihood_estimate"].dims:
            out["log-likelihood estimate (mean ± sd over draws)"] = f"{np.nanmean(v):.6g} ± {np.nanstd(v):.3g}"
    return out


def _section_summary(page: Page, ctx: _Context) -> None:
    page.section("Summary")
    info: dict[str, Any] = {"input": ctx.kind, "groups": ", ".join(ctx.idata.groups())}
    if ctx.post is not None:
        info["chains × draws"] = f"{ctx.chains} × {ctx.draws}"
        shapes = [f"{v} {tuple(ctx.post[v].shape[2:])}" for v in list(ctx.post.data_vars)[:12]]
        more = len(ctx.post.data_vars) - len(shapes)
        info["posterior variables (shape per draw)"] = "; ".join(shapes) + (f"; … {more} more" if more > 0 else "")
    sizes = {}
    for g in ctx.idata.groups():
        sizes.update(getattr(ctx.idata, g).sizes)
    for d, label in (("time", "time steps"), ("state", "states"), ("sequence", "sequences"), ("trial", "trials")):
        if d in sizes:
            info[label] = int(sizes[d])
    n = _num_particles(ctx.result)
    if n is not None:
        info["particles"] = n
    if type(ctx.result).__name__ == "EMResult":
        info["EM iterations"] = int(ctx.result.num_iters)
        info["EM converged"] = bool(ctx.result.converged)
    info.update(_log_likelihood_figures(ctx))
    if ctx.data is not None:
        info["data shape"] = str(tuple(np.shape(_data_arrays(ctx.data)[0])))
    page.table({k: (float(v) if isinstance(v, float | np.floating) else str(v)) for k, v in info.items()})


# ------------------------------------------------------------------------------------------------ 1. parameters


def _section_parameters(page: Page, ctx: _Context) -> None:
    if ctx.post is None:
        return
    names = _param_vars(ctx.post)
    page.section("Parameters and estimates")
    if ctx.draws > 1 and names:
        _summary_table(page, ctx, names)
    elif names:
        rows: dict[str, dict[str, Any]] = {}
        for name in names:
            v = _single(ctx.post[name]).astype(float)
            if v.size <= _MAX_PER_VAR:
                for idx in np.ndindex(v.shape):
                    label = f"{name}[{','.join(map(str, idx))}]" if v.shape else name
                    rows[label] = {"value": float(v[idx])}
            else:
                rows[name] = {"value": f"shape {v.shape}: mean {v.mean():.4g}, min {v.min():.4g}, max {v.max():.4g}"}
            if len(rows) >= _MAX_ROWS:
                break
        page.text("Single-draw (exact or point) result: point values, no sampling diagnostics.", note=True)
        page.table(rows, caption="Point values")
    _overview_table(page, ctx)


def _summary_table(page: Page, ctx: _Context, names: list[str]) -> None:
    import arviz as az

    series = _scalar_series(ctx.post, names, _MAX_ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = az.summary(az.convert_to_inference_data(series), kind="all", round_to="none")
    ess_min = ESS_PER_CHAIN_MIN * ctx.chains
    sd = df["sd"].replace(0.0, np.nan)
    checks = {
        "r_hat": lambda: df["r_hat"] > RHAT_MAX,
        "ess_bulk": lambda: df["ess_bulk"] < ess_min,
        "ess_tail": lambda: df["ess_tail"] < ess_min,
        "mcse_mean": lambda: df["mcse_mean"] / sd > MCSE_SD_MAX,
        "mcse_sd": lambda: df["mcse_sd"] / sd > MCSE_SD_MAX,
    }
    flags = df.copy().astype(bool)
    flags[:] = False
    for col, check in checks.items():
        if col in df:
            flags[col] = check().to_numpy(bool)
    page.text(
        f"Highlighted: R-hat > {RHAT_MAX}; bulk or tail ESS < {ESS_PER_CHAIN_MIN} × chains = {ess_min} "
        f"(Vehtari et al. 2021: 100 per chain, 400 for 4 chains); MCSE / sd > {MCSE_SD_MAX}. "
        + ("R-hat needs at least 2 chains (NaN here). " if ctx.chains < 2 else "")
        + f"{int(flags.values.sum())} flagged cells.",
        note=True,
    )
    page.table(df.astype(float), flags=flags, caption=f"ArviZ summary ({len(df)} scalar components)")


def _overview_table(page: Page, ctx: _Context) -> None:
    rows = {}
    for v in list(ctx.post.data_vars)[:30]:
        a = np.asarray(ctx.post[v].values, float)
        fin = a[np.isfinite(a)]
        rows[str(v)] = {
            "dims": ", ".join(map(str, ctx.post[v].dims[2:])) or "-",
            "shape": str(tuple(a.shape[2:])),
            "mean": float(fin.mean()) if fin.size else float("nan"),
            "min": float(fin.min()) if fin.size else float("nan"),
            "max": float(fin.max()) if fin.size else float("nan"),
        }
    page.table(rows, caption="Posterior variables (over all chains and draws)")


# ------------------------------------------------------------------------------------------------ 2. MCMC


def _section_mcmc(page: Page, ctx: _Context) -> None:
    if ctx.post is None or ctx.draws < 2:
        return
    import arviz as az

    iterates = ctx.kind == "ScoreAscentResult"
    series = _scalar_series(ctx.post, _param_vars(ctx.post), 4 * _MAX_TRACE)
    series = {k: v for k, v in series.items() if np.isfinite(v).all() and np.ptp(v) > 0}
    series = dict(list(series.items())[:_MAX_TRACE])
    if not series and (
        ctx.stats is None or not any(ctx.stats[v].sizes.get("draw", 1) > 1 for v in ctx.stats.data_vars)
    ):
        return  # independent draws of latent paths only (FFBSi): shown with the latent states
    page.section("Iterate traces" if iterates else "MCMC diagnostics")
    if series:
        data = az.convert_to_inference_data(series)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = np.atleast_2d(az.plot_trace(data, compact=False, figsize=(10, 2.3 * len(series))))
            for a in axes[:, 0]:
                a.set_xlabel("value", fontsize=8)
                a.set_ylabel("density", fontsize=8)
            for a in axes[:, 1]:
                a.set_xlabel("draw", fontsize=8)
                a.set_ylabel("value", fontsize=8)
            axes[0, 0].figure.tight_layout()
            page.figure(axes[0, 0].figure, f"Trace plots of {len(series)} scalar components (left: density per chain).")
            if not iterates:
                axes = az.plot_rank(data, figsize=(10, 2.6 * -(-len(series) // 3)))
                page.figure(np.ravel(axes)[0].figure, "Rank plots: roughly uniform histograms mean well-mixed chains.")
    else:
        page.text("No varying scalar parameter to trace (latent paths only).", note=True)
    _acceptance_table(page, ctx)
    st = ctx.stats
    if st is not None:
        per_draw = {
            _STAT_LABELS.get(str(v), str(v)): np.asarray(st[v].transpose("chain", "draw").values, float)
            for v in st.data_vars
            if set(st[v].dims) == {"chain", "draw"}
            and str(v) not in ("accepted", "diverging")
            and st[v].sizes.get("draw", 1) > 1
        }
        if per_draw and not iterates:
            page.figure(
                _objective_figure(per_draw, xlabel="draw"),
                "Sampler statistics per draw (particle log-likelihood estimate, mean particle ESS, ...).",
            )


def _objective_figure(traces: Mapping[str, np.ndarray], xlabel: str) -> Any:
    from pssm.plotting import plot_objective_trace

    return plot_objective_trace(traces, xlabel=xlabel)


def _acceptance_table(page: Page, ctx: _Context) -> None:
    st = ctx.stats
    if st is None:
        return
    cols = {}
    for name, label in (
        ("accepted", "acceptance rate"),
        ("acceptance_rate", "mean acceptance probability"),
        ("accept_prob", "mean acceptance probability"),
        ("diverging", "divergences"),
        ("path_update_rate", "mean path update rate"),
    ):
        if name in st and {"chain", "draw"} <= set(st[name].dims):
            v = np.asarray(st[name].transpose("chain", "draw", ...).values, float)
            v = v.reshape(v.shape[0], -1)
            cols[label] = v.sum(1) if name == "diverging" else v.mean(1)
    if cols:
        rows = {f"chain {c}": {k: float(v[c]) for k, v in cols.items()} for c in range(ctx.chains)}
        page.table(rows, caption="Per-chain acceptance and update statistics")


# ------------------------------------------------------------------------------------------------ 3. SMC


def _section_smc(page: Page, ctx: _Context) -> None:
    st = ctx.stats
    if st is None or "ess" not in st or "time" not in st["ess"].dims:
        return
    from pssm.plotting import plot_ess

    ess = _single(st["ess"]).astype(float).ravel()
    res = _single(st["resampled"]).astype(bool).ravel() if "resampled" in st else None
    inc = None
    if ctx.loglik is not None:
        for v in ctx.loglik.data_vars:
            if _has_time(ctx.loglik[v]):
                inc = _single(ctx.loglik[v]).astype(float).ravel()
                break
    n = _num_particles(ctx.result)
    page.section("Sequential Monte Carlo")
    facts = {"time steps": int(ess.size), "min ESS": float(np.nanmin(ess)), "mean ESS": float(np.nanmean(ess))}
    if n:
        facts["particles"] = n
        facts["mean ESS / particles"] = float(np.nanmean(ess) / n)
    if res is not None:
        facts["resampling steps"] = int(res.sum())
    if "collapsed" in st:
        facts["weights collapsed"] = str(bool(np.asarray(st["collapsed"].values).any()))
    page.table(facts)
    page.figure(
        plot_ess(ess, resampled=res, num_particles=n, log_likelihood_increments=inc),
        "Particle ESS over time (red ticks: resampling steps)"
        + ("; below: log-likelihood increments log p(y_t | y_0:t-1)." if inc is not None else "."),
    )


# ------------------------------------------------------------------------------------------------ 4. objectives

_STAT_LABELS = {
    "log_likelihood_estimate": "log-likelihood estimate",
    "ess": "mean particle ESS",
    "path_update_rate": "path update rate",
    "lp": "log density",
}
_OBJECTIVES = {
    "em_log_objective": "log-lik + log-prior",
    "em_log_likelihood": "log-likelihood",
    "loss": "loss (negative ELBO)",
    "log_q": "mean log q(x) of the chain draws",
}


def _section_objectives(page: Page, ctx: _Context) -> None:
    st = ctx.stats
    if st is None:
        return
    traces: dict[str, np.ndarray] = {}
    for name, label in _OBJECTIVES.items():
        if name in st:
            traces[label] = _single(st[name]).astype(float).ravel()
    lle = st["log_likelihood_estimate"] if "log_likelihood_estimate" in st else None
    if lle is not None and "iteration" in lle.dims:  # score climbing
        traces["conditional log normaliser"] = _single(lle).astype(float).ravel()
    if lle is not None and ctx.kind == "ScoreAscentResult":
        traces["log-likelihood estimate"] = np.asarray(lle.values, float).reshape(-1)
    traces = {k: v for k, v in traces.items() if v.size > 0}
    if not traces:
        return
    page.section("Objective traces")
    if "EMResult" in ctx.kind or "em_log_objective" in st:
        page.text("EM increases log p(y | θ) + log p(θ) every iteration (up to round-off and sampled M-steps).")
    page.figure(_objective_figure(traces, xlabel="iteration"), "Objective per iteration.")


# ------------------------------------------------------------------------------------------------ 5. PPC


def _data_arrays(data: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """``(emissions, mask)`` from an array or a :class:`pssm.Sequences`-like object."""
    if hasattr(data, "emissions") and hasattr(data, "mask"):
        return np.asarray(data.emissions), np.asarray(data.mask, bool)
    return np.asarray(data), None


def _ppc_stats(y: np.ndarray, counts: bool) -> dict[str, np.ndarray]:
    """Per-dimension statistics of ``(..., n, D)`` observations over the ``n`` axis."""
    out = {"mean": np.nanmean(y, axis=-2), "variance": np.nanvar(y, axis=-2)}
    if counts:
        out["zero fraction"] = np.nanmean(np.where(np.isnan(y), np.nan, y == 0), axis=-2)
    return out


def _section_ppc(page: Page, ctx: _Context, key: Any, num_ppc: int) -> None:
    import jax

    from pssm.plotting import plot_ppc
    from pssm.protocol import simulate

    page.section("Posterior predictive check")
    y, mask = _data_arrays(ctx.data)
    ev = len(getattr(ctx.model, "emission_shape", y.shape[1:]))
    batched = y.ndim == ev + 2
    yb = y if batched else y[None]
    B, T = yb.shape[:2]
    obs = yb.reshape(B, T, -1).astype(float)
    if mask is not None:
        m = mask.reshape(B, T) if batched else mask.reshape(1, T)
        obs = np.where(m[..., None], obs, np.nan)
    obs = obs.reshape(B * T, -1)
    fin = obs[np.isfinite(obs)]
    counts = bool(fin.size) and bool(np.all(fin >= 0) and np.all(fin == np.round(fin)))
    params = ctx.params
    try:
        keys = jax.random.split(key, num_ppc * B)
        sim = jax.jit(jax.vmap(lambda k: simulate(k, ctx.model, params, T)[1]))(keys)
    except Exception as e:  # noqa: BLE001 - a failed simulation is reported, not fatal for the page
        warnings.warn(f"report: posterior predictive simulation failed: {e}", stacklevel=3)
        page.text(f"Posterior predictive simulation failed: {type(e).__name__}: {e}")
        return
    rep = np.asarray(sim, float).reshape(num_ppc, B * T, -1)
    o, r = _ppc_stats(obs, counts), _ppc_stats(rep, counts)
    D = o["mean"].size
    rows: dict[str, dict[str, Any]] = {}
    flags: dict[str, dict[str, bool]] = {}
    for name in o:
        for d in range(min(D, 12)):
            vals = r[name][:, d]
            p = float(np.mean(vals >= o[name][d]))
            label = f"{name}, dim {d}"
            rows[label] = {
                "observed": float(o[name][d]),
                "replicate mean": float(np.mean(vals)),
                "replicate sd": float(np.std(vals)),
                "P(replicate ≥ observed)": p,
            }
            flags[label] = {k: (k == "P(replicate ≥ observed)" and min(p, 1 - p) < 0.025) for k in rows[label]}
    import pandas as pd

    page.text(
        f"{num_ppc} replicate data sets of {B} × {T} steps simulated at the given params with pssm.simulate; "
        "each statistic per dimension of the data against its replicate distribution (flagged: the observed "
        "value lies in either 2.5% tail)." + (" Count data: also the fraction of zeros." if counts else ""),
        note=True,
    )
    page.table(pd.DataFrame(rows).T, flags=pd.DataFrame(flags).T, caption="Posterior predictive statistics")
    page.figure(plot_ppc(o, r), "Replicate distributions of each statistic (red line: the observed value).")


# ------------------------------------------------------------------------------------------------ 6. latents


def _flat_time(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1)


def _latent_series(ctx: _Context) -> list[dict[str, Any]]:
    """Per-time latent summaries found in the posterior: mean/sd pairs, sampled paths, filtering means."""
    post = ctx.post
    if post is None:
        return []
    out = []
    names = [str(v) for v in post.data_vars if _has_time(post[v]) and "state" not in post[v].dims]
    for name in names:
        da = post[name].transpose("chain", "draw", "time", ...)
        if name.endswith(_BAND_SUFFIXES):
            continue
        if name.endswith("_mean") and name[:-5] + "_sd" in post:
            m, s = _flat_time(_single(da)), _flat_time(_single(post[name[:-5] + "_sd"].transpose(*da.dims)))
            out.append(dict(name=name[:-5], mean=m, lower=m - 2 * s, upper=m + 2 * s, band="mean ± 2 sd"))
        elif ctx.chains * ctx.draws > 1:
            v = np.asarray(da.values, float)
            v = v.reshape(-1, v.shape[2], int(np.prod(v.shape[3:], dtype=int)))
            lo, hi = np.nanquantile(v, [0.05, 0.95], axis=0)
            out.append(dict(name=name, mean=v.mean(0), lower=lo, upper=hi, band="5–95% of sampled paths", samples=v))
        else:
            out.append(dict(name=name, mean=_flat_time(_single(da).astype(float)), lower=None, upper=None, band=""))
    return out


def _continuous_truth(ctx: _Context, T: int) -> np.ndarray | None:
    s = ctx.states
    if s is None:
        return None
    a = np.asarray(s)
    if np.issubdtype(a.dtype, np.integer) and ctx.post is not None and any(p in ctx.post for p in _STATE_PROBS):
        return None
    return a.reshape(T, -1).astype(float) if a.shape[:1] == (T,) else None


def _section_latents(page: Page, ctx: _Context) -> None:
    series = _latent_series(ctx)
    if not series:
        return
    from pssm.plotting import plot_latent_bands

    page.section("Latent states")
    for s in series[:6]:
        s["name"] = _LATENT_LABELS.get(s["name"], s["name"])
        m = s["mean"]
        truth = _continuous_truth(ctx, m.shape[0])
        label = "posterior mean" if s["lower"] is not None else "estimate"
        fig = plot_latent_bands(
            m, s["lower"], s["upper"], truth=truth, samples=s.get("samples"), label=label, band_label=s["band"],
            title=s["name"],
        )  # fmt: skip
        cap = f"{s['name']} over time" + (f" with {s['band']}" if s["band"] else "")
        page.figure(fig, cap + ("; dashed: true latent states." if truth is not None else "."))


# ------------------------------------------------------------------------------------------------ 7. HMM


def _named_params(ctx: _Context) -> dict[str, np.ndarray]:
    """Dotted-name parameter arrays: from ``params`` (pytree) or else the posterior (mean over draws)."""
    if ctx.params is not None:
        import jax

        from pssm.params import leaf_names

        return dict(zip(leaf_names(ctx.params), map(np.asarray, jax.tree.leaves(ctx.params)), strict=True))
    if ctx.post is None:
        return {}
    return {str(v): _mean_over_draws(ctx.post[v]) for v in _param_vars(ctx.post)}


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - optional extras: fall back to what the data alone gives
        return None


def _section_hmm(page: Page, ctx: _Context) -> None:
    post = ctx.post
    probs_name = next((p for p in _STATE_PROBS if post is not None and p in post), None)
    named = _named_params(ctx)
    matrix = _transition_matrix(ctx, named)
    glm = _glm_matrices(ctx, named)
    expected = _single(post["expected_transitions"]) if post is not None and "expected_transitions" in post else None
    if probs_name is None and matrix is None and not glm and expected is None:
        return
    from pssm.plotting import plot_state_probs, plot_states_true_vs_decoded, plot_transition_matrix

    page.section("Hidden Markov model")
    decoded = None
    probs = None
    if probs_name is not None:
        probs = _single(post[probs_name].transpose("chain", "draw", ..., "time", "state")).astype(float)
    elif _has_model_params_data(ctx) and hasattr(ctx.model, "num_states"):  # e.g. SVI: smooth at the point params
        smoother = state_decoder("smoother")
        smoothed = None
        if smoother is not None:
            smoothed = _try(lambda: np.asarray(smoother(ctx.model, ctx.params, ctx.data).smoothed_probs, float))
        probs, probs_name = (smoothed, "smoothed_probs") if smoothed is not None else (None, None)
    if probs is not None:
        nseq = int(np.prod(probs.shape[:-2], dtype=int))
        probs = probs.reshape(-1, *probs.shape[-2:])[0]
        viterbi = None
        most_likely_states = state_decoder("most_likely_states")
        if _has_model_params_data(ctx) and most_likely_states is not None:
            vit = _try(lambda: np.asarray(most_likely_states(ctx.model, ctx.params, ctx.data)))
            if vit is not None:
                viterbi = vit.reshape(-1, vit.shape[-1])[0][: probs.shape[0]]
        truth = None
        if ctx.states is not None and np.issubdtype(np.asarray(ctx.states).dtype, np.integer):
            z = np.asarray(ctx.states)
            truth = z.reshape(-1, z.shape[-1])[0] if z.ndim > 1 else z
            truth = truth if truth.size == probs.shape[0] else None
        seq_note = f" (sequence 0 of {nseq})" if nseq > 1 else ""
        page.figure(
            plot_state_probs(probs, viterbi=viterbi, true_states=truth, title=f"{probs_name}{seq_note}"),
            f"State raster: {probs_name.replace('_', ' ')} over time{seq_note}"
            + ("; white line: Viterbi path (pssm.inference.most_likely_states)" if viterbi is not None else "")
            + ("; red dots: true states." if truth is not None else "."),
        )
        decoded = viterbi if viterbi is not None else probs.argmax(-1)
        if truth is not None:
            page.figure(
                plot_states_true_vs_decoded(truth, decoded, probs.shape[-1]),
                "True vs decoded states ("
                + ("Viterbi" if viterbi is not None else "argmax of the posterior")
                + "), decoded labels matched to the true ones by the best permutation.",
            )
    if matrix is not None:
        page.figure(plot_transition_matrix(matrix), "Transition matrix A[i, j] = p(z_t+1 = j | z_t = i).")
    elif expected is not None:
        e = np.asarray(expected, float).reshape(-1, *expected.shape[-2:]).sum(0)
        e = e / np.maximum(e.sum(-1, keepdims=True), 1e-300)
        page.figure(
            plot_transition_matrix(e, title="expected transitions (row-normalised)"),
            "Posterior expected transition counts, row-normalised (an estimate of the transition matrix).",
        )
    _glm_figures(page, glm)


def _has_model_params_data(ctx: _Context) -> bool:
    return ctx.model is not None and ctx.params is not None and ctx.data is not None


def _transition_matrix(ctx: _Context, named: Mapping[str, np.ndarray]) -> np.ndarray | None:
    if ctx.model is not None and ctx.params is not None and hasattr(ctx.model, "transition_component"):
        m = _try(lambda: np.asarray(ctx.model.transition_component.matrix(ctx.params.transitions)))
        if m is not None and m.ndim == 2:
            return m
    m = named.get("transitions.matrix")
    return None if m is None or np.ndim(m) != 2 else np.asarray(m, float)


def _glm_matrices(ctx: _Context, named: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, str]]:
    """HMM-GLM connectivity maps (name -> (matrices ``(S, N, N)`` or ``(N, N)``, colour-bar label))."""
    g = {k.split(".", 1)[1]: np.asarray(v, float) for k, v in named.items() if k.startswith("emissions.")}
    if "bias" not in g or not ({"weights", "adjacency_logits", "strength"} & set(g)):
        return {}
    out: dict[str, tuple[np.ndarray, str]] = {}
    N = g["bias"].shape[-1]
    em = getattr(ctx.model, "emission_component", None) if ctx.model is not None else None
    ep = getattr(ctx.params, "emissions", None) if ctx.params is not None else None
    if "adjacency_logits" in g:
        out["per-state adjacency (argmax)"] = (np.argmax(g["adjacency_logits"], -1) - 1.0, "−1 inh · 0 none · +1 exc")
    if "prior_logits" in g:
        a0 = np.exp(g["prior_logits"] - g["prior_logits"].max(-1, keepdims=True))
        a0 /= a0.sum(-1, keepdims=True)
        out["A0: shared prior P(exc) − P(inh)"] = (a0[..., 2] - a0[..., 0], "P(exc) − P(inh)")
    edge = _try(lambda: np.asarray(em.edge_weights(ep))) if em is not None and ep is not None else None
    basis = getattr(em, "basis", None) if em is not None else None
    bsum = None if basis is None else np.asarray(basis, float).sum(0)

    def edges(w: np.ndarray) -> np.ndarray:
        K = w.shape[-1] // N
        w = w.reshape(*w.shape[:-1], N, K)
        return w @ bsum if bsum is not None and bsum.size == K else w.sum(-1)

    if edge is None and "weights" in g and g["weights"].shape[-1] % N == 0:
        edge = edges(g["weights"])
    if edge is None and "strength" in g and "adjacency_logits" in g:
        a = np.exp(g["adjacency_logits"] - g["adjacency_logits"].max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        K = g["strength"].shape[-1] // N
        sp = np.logaddexp(0.0, g["strength"]).reshape(*g["strength"].shape[:-1], N, K)
        w = ((a[..., 2] - a[..., 0])[..., None] * sp).reshape(g["strength"].shape)
        edge = edges(w)
    if edge is not None:
        scaled = "" if bsum is not None else " (summed over basis functions, unscaled)"
        out["per-state coupling weights" + scaled] = (edge, "edge weight")
    if "weights_mean" in g and g["weights_mean"].shape[-1] % N == 0:
        out["W0: shared mean weights"] = (edges(g["weights_mean"]), "edge weight")
    return out


def _glm_figures(page: Page, glm: Mapping[str, tuple[np.ndarray, str]]) -> None:
    if not glm:
        return
    from pssm.plotting import plot_connectivity

    page.text("HMM-GLM connectivity: rows are postsynaptic (target) neurons, columns presynaptic (source) neurons.")
    for name, (mats, label) in glm.items():
        mats = np.asarray(mats, float)
        titles = [f"state {s}" for s in range(mats.shape[0])] if mats.ndim == 3 else [name.split(":")[0]]
        page.figure(
            plot_connectivity(mats, titles=titles, colorbar_label=label, suptitle=name if mats.ndim == 3 else None),
            f"{name}.",
        )
