"""Decoding head direction from anterodorsal thalamus (ADn) spikes: two references on a fixed held-out split.

The bundled session (A2929-200711) holds 7 ADn head-direction cells, with the head angle tracked during wake
(670.6-1200 s; the first 70 s of the wake epoch are untracked).  This script prepares the data, metrics and the two
reference decoders that a latent-variable model (e.g. a Poisson deep-VAE state-space model with a 2-D latent,
decoded through the angle of its latent) is compared with, on the same split:

* **Data** (:func:`load_head_direction`).  The ADn units (``units.location == 'adn'``, the flagship
  ``brain_states.py``'s region labels), binned at ``--bin-ms`` (50-100, default 100 ms) on the flagship's grid
  (:func:`pssm.data.bin_spikes` from t = 0); bins whose centre lies in the wake epoch
  (:func:`pssm.data.intervals_to_mask`) and that hold tracked samples; the head angle per bin is the circular mean of
  the tracked angle in the bin (the flagship's ``angle_per_bin``).  Untracked bins are dropped; here the tracked
  wake is one contiguous stretch, so no gap is introduced (``num_time_gaps`` reports it).
* **Split.**  :func:`pssm.data.train_test_split_blocks` cuts the bins into 10 near-equal contiguous blocks (about
  53 s at 100 ms) and holds out blocks 2, 5 and 8 (30 %, spread over the session); adjacent training blocks are
  merged into one stretch (4 training stretches, 3 held-out).  Nothing fitted ever sees a held-out angle.
* **Metrics** (:func:`evaluate_latents`, :mod:`pssm.decoding`).  The headline is the Jammalamadaka-SenGupta
  circular correlation between decoded and true angle on the held-out bins (``hd_*_circular_corr``); alongside it
  the Fisher-Lee coefficient (no mean directions, robust when the angles are near uniform) and the median absolute
  angular error.  An unsupervised latent angle is first mapped to the head angle by the reflection and rotation
  fitted on the *training* bins, after mapping the latents' ring onto a circle about the origin (the least-squares
  ellipse through the training latents: unlike centring + whitening by moments, it is not biased by a ring that is
  visited unevenly; ``hd_plds_circular_corr_by_whitening`` shows all three choices).
* **Reference 1 -- supervised ceiling.**  The Bayesian population decoder of Zhang et al. (1998): Poisson tuning
  curves over ``--angle-bins`` angle bins estimated on the training bins (von Mises kernel smoothing, a floor),
  uniform prior, posterior circular mean per held-out bin.
* **Reference 2 -- Poisson LDS.**  :class:`pssm.models.PoissonLDS` with a 2-D latent,
  :math:`x_t \\sim N(A x_{t-1}, qI)`, :math:`y_{tn} \\sim \\mathrm{Poisson}(\\exp(C_n x_t + d_n))`, fitted by maximum
  likelihood with the package's stochastic score ascent (:func:`pssm.inference.optim.score_ascent.score_ascent`,
  Fisher-identity score; ``estimator="ppg"``: the PaRIS particle-Gibbs estimator whose frozen path is carried across
  updates, which removes most of PaRIS's O(T/N) score bias at the small particle numbers a 5,000-step sequence
  affords; exact backward kernel, cheaper than the rejection hybrid at N=32).  Why score ascent: the PLDS has no
  closed-form E-step (EM is for the discrete-state models), Markov score climbing fits a variational posterior at
  *fixed* parameters, and SVI through the NumPyro bridge samples a continuous latent path as sites, so its
  auto-guides would fit the 5,000 x 2 path jointly (a joint MAP, or a mean-field posterior over a strongly
  autocorrelated path) instead of maximising the particle estimate of the marginal likelihood.

  The fit runs on the whole sequence with the held-out bins masked out of the likelihood (exact marginalisation, so
  the parameters see training bins only and the gaps between training stretches are bridged by the dynamics).
  :math:`qI` is fixed (the latent scale trades off against :math:`C`; any :math:`Q` is reached by a change of basis
  of :math:`x`).  Start: PCA of smoothed log rates on the training stretches, least-squares :math:`A`.  Latents are
  smoothed means from a bootstrap particle filter and the FFBSm marginal smoother
  (:func:`pssm.inference.smc.marginal_smoother`, exact given the particles): once with only the training bins
  observed (to fit the whitening and alignment) and once with only the held-out bins observed (held-out latents
  from held-out spikes alone).

Figures (PNG under ``--out``): ``figure_decoded_vs_true.png`` (both references over the first held-out block),
``figure_plds_latent_plane.png`` (smoothed PLDS latents coloured by head angle, raw and whitened),
``figure_tuning_curves.png``.  ``summary.json`` is written there and printed as the last stdout line.
``--quick`` (tests): fewer score-ascent iterations and particles (most of its time is XLA compilation).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pssm.data import BlockSplit, bin_spikes, intervals_to_mask, train_test_split_blocks
from pssm.decoding import (
    apply_alignment,
    circular_correlation,
    fit_circular_alignment,
    fit_tuning_curves,
    fit_whitening,
    latent_angle,
)
from pssm.inference.optim.score_ascent import score_ascent
from pssm.inference.smc import ExactBackward, marginal_smoother, particle_filter
from pssm.models import PoissonLDS, PoissonLDSParams
from pssm.nwb import read_nwb

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # the flagship's helpers, when this file is imported from elsewhere
    sys.path.insert(0, str(_HERE))
from brain_states import angle_per_bin  # noqa: E402

ROOT = _HERE.parent
DEFAULT_DATA = ROOT / "data" / "A2929-200711.nwb"
NUM_BLOCKS = 10
TEST_BLOCKS = (2, 5, 8)  # 30 % held out, spread over the session
REGION = "adn"

__all__ = [
    "HeadDirectionData",
    "PLDSFit",
    "evaluate_latents",
    "fit_plds",
    "load_head_direction",
    "main",
    "plds_params",
    "plds_start",
    "smooth_plds",
]


# --------------------------------------------------------------------------------------------- data
class HeadDirectionData(NamedTuple):
    """Tracked-wake ADn counts and head angles, with the fixed block split.

    Index ``t`` runs over the ``T`` kept bins (wake, tracked) in time order; ``*_slices`` index into it.
    ``train_counts``/``test_counts`` (and ``*_angles``): one array per contiguous stretch (adjacent blocks of the
    same split merged, as :func:`pssm.data.train_test_split_blocks` does).
    """

    counts: np.ndarray
    """``(T, N)`` int64 spike counts."""
    angles: np.ndarray
    """``(T,)`` head angle per bin (radians, [0, 2 pi))."""
    times: np.ndarray
    """``(T,)`` bin centres (s)."""
    bin_ms: float
    unit_ids: np.ndarray
    """``(N,)`` NWB unit ids of the ADn units."""
    block_bounds: np.ndarray
    """``(10, 2)`` ``[start, stop)`` of the blocks (indices into the kept bins)."""
    train_blocks: np.ndarray
    test_blocks: np.ndarray
    train_slices: list[slice]
    test_slices: list[slice]
    train_counts: list[np.ndarray]
    test_counts: list[np.ndarray]
    train_angles: list[np.ndarray]
    test_angles: list[np.ndarray]
    split: BlockSplit
    """The :class:`pssm.data.BlockSplit` (``split.train`` / ``split.test`` as padded ``Sequences`` of counts)."""
    num_time_gaps: int
    """Places where consecutive kept bins are not adjacent in time (0 for this recording)."""

    @property
    def num_units(self) -> int:
        return int(self.counts.shape[1])

    @property
    def is_train(self) -> np.ndarray:
        """``(T,)`` bool: True on training bins."""
        m = np.zeros(self.counts.shape[0], bool)
        for s in self.train_slices:
            m[s] = True
        return m

    @property
    def train_index(self) -> np.ndarray:
        return np.flatnonzero(self.is_train)

    @property
    def test_index(self) -> np.ndarray:
        return np.flatnonzero(~self.is_train)


def load_head_direction(bin_ms: float = 100.0, *, data: str | Path = DEFAULT_DATA) -> HeadDirectionData:
    """Bin the ADn units at ``bin_ms`` (50-100 ms) in tracked wake, head angle per bin, and the fixed block split."""
    bin_ms = float(bin_ms)
    if not 50.0 <= bin_ms <= 100.0:
        raise ValueError(f"bin_ms must lie in [50, 100] milliseconds; got {bin_ms}.")
    rec = read_nwb(data)
    loc = rec.units["location"].astype(str).to_numpy()
    unit_ids = rec.units["id"].to_numpy()[loc == REGION]
    if unit_ids.size == 0:
        raise ValueError(f"{data}: no units with location {REGION!r} (locations: {sorted(set(loc))}).")
    t_stop = float(rec.epochs["stop"].max())
    binned = bin_spikes(rec.spike_times, bin_ms / 1000.0, t_start=0.0, t_stop=t_stop, units=unit_ids.tolist())
    edges = np.asarray(binned.bin_edges, float)
    tags = rec.epochs["tags"].astype(str)
    wake = rec.epochs[tags == "wake"]
    if len(wake) == 0:
        raise ValueError(f"{data}: no epoch tagged 'wake' (tags: {sorted(set(tags))}).")
    in_wake = intervals_to_mask(edges, wake["start"], wake["stop"])
    head = rec.timeseries("CompassDirection/ry")
    angle = angle_per_bin(np.asarray(head.timestamps), np.asarray(head.data, float).ravel(), edges)
    keep = np.flatnonzero(in_wake & np.isfinite(angle))
    counts = np.asarray(binned.counts)[keep].astype(np.int64)
    angles = angle[keep]
    split = train_test_split_blocks(counts, list(TEST_BLOCKS), num_blocks=NUM_BLOCKS, kind="counts")
    train_blocks = np.setdiff1d(np.arange(NUM_BLOCKS), split.test_blocks)
    return HeadDirectionData(
        counts=counts,
        angles=angles,
        times=binned.bin_centers[keep],
        bin_ms=bin_ms,
        unit_ids=unit_ids,
        block_bounds=split.block_bounds,
        train_blocks=train_blocks,
        test_blocks=split.test_blocks,
        train_slices=split.train_slices,
        test_slices=split.test_slices,
        train_counts=[counts[s] for s in split.train_slices],
        test_counts=[counts[s] for s in split.test_slices],
        train_angles=[angles[s] for s in split.train_slices],
        test_angles=[angles[s] for s in split.test_slices],
        split=split,
        num_time_gaps=int(np.sum(np.diff(keep) != 1)),
    )


# --------------------------------------------------------------------------------------------- evaluation
def _errors(angle_true: np.ndarray, angle_est: np.ndarray) -> dict[str, float]:
    err = np.abs(np.angle(np.exp(1j * (angle_true - angle_est))))
    return {
        "circular_corr": circular_correlation(angle_est, angle_true),
        "circular_corr_fisher_lee": circular_correlation(angle_est, angle_true, method="fisher_lee"),
        "median_abs_error_deg": float(np.degrees(np.median(err))),
        "mean_cos_error": float(np.mean(np.cos(angle_true - angle_est))),
    }


def evaluate_latents(
    latents_train: Any,
    angle_train: Any,
    latents_test: Any,
    angle_test: Any,
    *,
    whiten: Literal["ellipse", "moments"] | None = "ellipse",
) -> dict[str, Any]:
    """Score 2-D latents ``(T, 2)`` as a head-angle code: everything fitted on the training bins.

    The whitening (:func:`pssm.decoding.fit_whitening` with ``method=whiten``: the least-squares ellipse through the
    training latents mapped onto the unit circle, which does not depend on how evenly the ring is visited;
    ``"moments"``: centre + ZCA; ``None``: raw latents) and the reflection + rotation
    (:func:`pssm.decoding.fit_circular_alignment`) are fitted on ``latents_train`` vs ``angle_train``; the aligned
    latent angle of ``latents_test`` is compared with ``angle_test``.  Returns ``circular_corr``
    (Jammalamadaka-SenGupta, held out), ``circular_corr_fisher_lee``, ``median_abs_error_deg``, ``mean_cos_error``
    (held out), the same on the training bins under ``train_*``, the fitted ``reflect``, ``offset`` and
    ``train_mean_cos`` (the alignment's objective), and ``test_angle_estimate`` (the aligned held-out angles, an
    array; drop it before JSON).
    """
    zt = np.asarray(latents_train, float)
    ze = np.asarray(latents_test, float)
    at = np.asarray(angle_train, float)
    ae = np.asarray(angle_test, float)
    for name, z, a in (("latents_train", zt, at), ("latents_test", ze, ae)):
        if z.ndim != 2 or z.shape[1] != 2:
            raise ValueError(f"{name} must have shape (T, 2); got {z.shape}.")
        if a.shape != (z.shape[0],):
            raise ValueError(f"the angles paired with {name} must have shape ({z.shape[0]},); got {a.shape}.")
    if whiten not in ("ellipse", "moments", None):
        raise ValueError(f"whiten must be 'ellipse', 'moments' or None; got {whiten!r}.")
    w = None if whiten is None else fit_whitening(zt, method=whiten)
    al = fit_circular_alignment(at, latent_angle(zt, w))
    est_train = apply_alignment(al, latent_angle(zt, w))
    est_test = apply_alignment(al, latent_angle(ze, w))
    out: dict[str, Any] = _errors(ae, est_test)
    out.update({f"train_{k}": v for k, v in _errors(at, est_train).items()})
    out.update(reflect=bool(al.reflect), offset=float(al.offset), train_mean_cos=float(al.mean_cos))
    out["test_angle_estimate"] = est_test
    return out


# --------------------------------------------------------------------------------------------- PLDS
def _smooth_rows(y: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(y.astype(float), sigma, axis=0, mode="nearest")


def plds_start(
    train_counts: list[np.ndarray], *, smooth_bins: float = 2.0, min_noise: float = 0.01
) -> tuple[dict[str, np.ndarray], float]:
    """Starting ``theta = {A, C, d}`` and the fixed noise variance ``q`` from the training stretches.

    Log rates :math:`\\ell_t = \\log(\\tilde y_t + 0.1)` (counts smoothed within each stretch by a Gaussian of
    ``smooth_bins``); PCA of the centred :math:`\\ell` gives unit-variance scores :math:`x_t` and loadings
    :math:`C`; :math:`d_n = \\log \\bar y_n - \\|C_n\\|^2 / 2` (the log-normal mean correction); :math:`A` by least
    squares of :math:`x_t` on :math:`x_{t-1}` within stretches, :math:`q` the mean residual variance (at least
    ``min_noise``)."""
    logs = [np.log(_smooth_rows(y, smooth_bins) + 0.1) for y in train_counts]
    L = np.concatenate(logs)
    mu = L.mean(0)
    _, _, vt = np.linalg.svd(L - mu, full_matrices=False)
    xs = [(lg - mu) @ vt[:2].T for lg in logs]
    sd = np.concatenate(xs).std(0)
    xs = [x / sd for x in xs]
    C = vt[:2].T * sd
    d = np.log(np.concatenate(train_counts).mean(0) + 1e-6) - 0.5 * (C**2).sum(1)
    X0 = np.concatenate([x[:-1] for x in xs])
    X1 = np.concatenate([x[1:] for x in xs])
    A = np.linalg.lstsq(X0, X1, rcond=None)[0].T
    q = max(float(np.mean(np.var(X1 - X0 @ A.T, axis=0))), min_noise)
    theta = {"A": A.astype(np.float32), "C": C.astype(np.float32), "d": d.astype(np.float32)}
    return theta, q


def plds_params(model: PoissonLDS, theta: dict, q: float) -> PoissonLDSParams:
    """Model params from ``theta = {A, C, d}``: :math:`Q = qI`, :math:`x_0 \\sim N(0, I)`."""
    return model.make_params(
        dynamics_weights=theta["A"],
        dynamics_cov=q * jnp.eye(model.state_dim),
        emission_weights=theta["C"],
        emission_bias=theta["d"],
    )


class PLDSFit(NamedTuple):
    model: PoissonLDS
    theta: dict
    theta_start: dict
    noise_var: float
    log_likelihood_trace: np.ndarray
    seconds: float


def fit_plds(
    key,
    data: HeadDirectionData,
    *,
    num_iters: int,
    num_particles: int,
    learning_rate: float = 0.03,
    estimator: str = "ppg",
) -> PLDSFit:
    """Score ascent (Adam, step ``learning_rate`` decayed by 0.3 every ``num_iters/2``) on the whole tracked sequence
    with the held-out bins masked out; returns the Polyak average of the second half of the iterates."""
    model = PoissonLDS(state_dim=2, num_neurons=data.num_units)
    theta0, q = plds_start(data.train_counts)
    t0 = time.perf_counter()
    schedule = optax.exponential_decay(learning_rate, max(num_iters // 2, 1), 0.3)
    r = score_ascent(
        key,
        model,
        jax.tree.map(jnp.asarray, theta0),
        jnp.asarray(data.counts, jnp.float32),
        params_fn=lambda th: plds_params(model, th, q),
        optimizer=optax.adam(schedule),
        num_iters=num_iters,
        estimator=estimator,
        num_particles=num_particles,
        backward=ExactBackward(),
        mask=jnp.asarray(data.is_train),
        chunk_size=min(50, num_iters),
    )
    theta = jax.tree.map(np.asarray, r.theta_average)
    return PLDSFit(model, theta, theta0, q, np.asarray(r.log_likelihood_trace), time.perf_counter() - t0)


def smooth_plds(
    key, model: PoissonLDS, params: PoissonLDSParams, counts: np.ndarray, mask: np.ndarray, num_particles: int
) -> tuple[np.ndarray, float]:
    """``(T, 2)`` FFBSm smoothed means :math:`E[x_t \\mid y_{\\mathrm{mask}}]` (bins outside ``mask`` unobserved)
    from a bootstrap filter with ``num_particles``, and the filter's log-likelihood estimate of the observed bins."""
    fr = particle_filter(
        key, model, params, jnp.asarray(counts, jnp.float32), num_particles, mask=jnp.asarray(mask), history=True
    )
    ms = marginal_smoother(model, params, fr.history)
    return np.asarray(ms.means, float), float(fr.log_likelihood)


# --------------------------------------------------------------------------------------------- figures
def fit_vae_latents(
    key,
    data: HeadDirectionData,
    *,
    epochs: int,
    latent_dim: int = 2,
    hidden: int = 64,
    window: int = 64,
    learning_rate: float = 3e-3,
    num_draws: int = 32,
) -> dict:
    """A Poisson deep Markov model (``latent_dim``-D latent, bidirectional GRU encoder) trained by SVI on windows of
    ``window`` bins cut from the training stretches; latents = amortised posterior means (``num_draws`` guide
    paths) of every training and held-out stretch, each from its own spikes."""
    from pssm.inference.variational import clipped_adam, fit_vae, path_log_weight
    from pssm.models.deep import DeepMarkovModel, Encoder

    model = DeepMarkovModel(latent_dim, data.num_units, "poisson", emitter_hidden=hidden, transition_hidden=hidden)
    guide = Encoder(latent_dim, data.num_units, hidden=hidden, direction="bidirectional", cell="gru")
    k0, k1, k2, k3 = jax.random.split(key, 4)
    windows = [c[i : i + window].astype(np.float32) for c in data.train_counts for i in range(0, len(c), window)]
    t0 = time.perf_counter()
    res = fit_vae(
        k2,
        model,
        model.init_params(k0),
        windows,
        guide=guide,
        guide_params=guide.init_params(k1),
        num_epochs=epochs,
        batch_size=16,
        optimizer=clipped_adam(learning_rate, lr_decay=1.0),
        annealing_epochs=max(1, epochs // 10),
    )
    seconds = time.perf_counter() - t0

    @jax.jit
    def posterior_mean(k, y):
        ones = jnp.ones(y.shape[0], bool)
        draw = lambda kk: path_log_weight(kk, model, res.params, guide, res.guide_params, y, ones, ones)[1]  # noqa: E731
        return jax.vmap(draw)(jax.random.split(k, num_draws)).mean(0)

    def latents(stretches):
        return np.concatenate(
            [
                np.asarray(posterior_mean(jax.random.fold_in(k3, i), jnp.asarray(c, jnp.float32)))
                for i, c in enumerate(stretches)
            ]
        )

    import arviz as az

    from pssm import to_arviz

    first = jnp.asarray(data.test_counts[0][:200], jnp.float32)  # ArviZ summary: guide paths on held-out bins
    idata = to_arviz(res, key=jax.random.fold_in(k3, 99), model=model, guide=guide, emissions=first, num_samples=64)
    return {
        "z_train": latents(data.train_counts),
        "z_test": latents(data.test_counts),
        "result": res,
        "seconds": seconds,
        "num_windows": len(windows),
        "arviz_summary": az.summary(idata, kind="stats"),
    }


def _deg(a):
    return np.degrees(np.asarray(a))


def figure_decoded(
    path: Path, data: HeadDirectionData, sup_test: np.ndarray, plds_test: np.ndarray, res: dict, vae_test=None
):
    s = data.test_slices[0]
    n = s.stop - s.start
    t = data.times[s] - data.times[s][0]
    rows = [
        (sup_test[:n], "supervised tuning-curve decoder", "supervised"),
        (plds_test[:n], "Poisson LDS latent angle (aligned on training blocks)", "plds"),
    ]
    if vae_test is not None:
        rows.append((vae_test[:n], "Poisson deep Markov model latent angle (aligned on training blocks)", "vae"))
    fig = Figure(figsize=(10, 2.6 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 1, sharex=True)
    for ax, (est, name, key) in zip(axes, rows, strict=True):
        ax.plot(t, _deg(data.angles[s]), ".", ms=2.5, color="k", label="true head angle")
        ax.plot(t, _deg(est), ".", ms=2.5, color={"plds": "C3", "vae": "C2"}.get(key, "C0"), label="decoded")
        ax.set_ylim(0, 360)
        ax.set_yticks([0, 90, 180, 270, 360])
        ax.set_ylabel("angle (deg)")
        ax.set_title(
            f"{name}: held-out circ. corr {res[key]['circular_corr']:.3f}, median |error| "
            f"{res[key]['median_abs_error_deg']:.1f} deg",
            fontsize=9,
        )
        ax.legend(loc="upper right", fontsize=7, markerscale=3)
    axes[-1].set_xlabel(f"time in held-out block {int(data.test_blocks[0])} (s)")
    fig.savefig(path, dpi=110)


def figure_latents(
    path: Path, z_train: np.ndarray, a_train: np.ndarray, z_test: np.ndarray, a_test: np.ndarray, name: str = "PLDS"
):
    w = fit_whitening(z_train, method="ellipse")
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    sc = None
    for ax, tf, title in (
        (axes[0], lambda z: z, "smoothed means"),
        (axes[1], None, "ellipse-whitened (fit on training)"),
    ):
        for z, a, mk in ((z_train, a_train, "o"), (z_test, a_test, "^")):
            u = z if tf is not None else (z - w.mean) @ w.transform.T
            sc = ax.scatter(u[:, 0], u[:, 1], c=_deg(a), cmap="twilight", vmin=0, vmax=360, s=3, marker=mk)
        ax.set_xlabel("latent 1")
        ax.set_ylabel("latent 2")
        ax.set_title(f"{name} latent plane, {title}", fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        proxies = [Line2D([], [], ls="", marker=m, color="0.4", ms=4) for m in ("o", "^")]
        ax.legend(proxies, ["training bins", "held-out bins"], fontsize=7, loc="upper right")
    fig.colorbar(sc, ax=axes, label="head angle (deg)")
    fig.savefig(path, dpi=110)


def figure_tuning(path: Path, dec, unit_ids: np.ndarray, bin_s: float):
    n = dec.num_units
    fig = Figure(figsize=(2.2 * n, 2.6), layout="constrained")
    axes = fig.subplots(1, n, subplot_kw={"projection": "polar"})
    for i, ax in enumerate(np.atleast_1d(axes)):
        th = np.append(dec.bin_centers, dec.bin_centers[0])
        hz = np.append(dec.rates[i], dec.rates[i, 0]) / bin_s
        ax.plot(th, hz, color="C0")
        ax.set_yticklabels([])
        ax.set_title(f"unit {int(unit_ids[i])} (peak {hz.max():.0f} Hz)", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle("ADn tuning curves on the training blocks (radius: rate)", fontsize=9)
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="NWB file (default: the bundled recording)")
    ap.add_argument("--bin-ms", type=float, default=100.0, help="bin width in ms, in [50, 100]")
    ap.add_argument("--angle-bins", type=int, default=36, help="angle bins of the tuning curves")
    ap.add_argument("--bandwidth", type=float, default=0.2, help="tuning-curve smoothing (radians)")
    ap.add_argument("--plds-iters", type=int, default=150, help="score-ascent iterations")
    ap.add_argument("--plds-particles", type=int, default=32, help="particles of the score estimator")
    ap.add_argument("--plds-lr", type=float, default=0.03, help="Adam step (decayed x0.3 every iters/2)")
    ap.add_argument("--smooth-particles", type=int, default=128, help="particles of the filter + FFBSm smoother")
    ap.add_argument("--vae-epochs", type=int, default=150, help="training epochs of the Poisson DMM")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "case_studies" / "output" / "head_direction"))
    ap.add_argument("--quick", action="store_true", help="25 score-ascent iterations, 16 + 64 particles")
    args = ap.parse_args(argv)
    if args.quick:
        args.plds_iters, args.plds_particles, args.smooth_particles, args.vae_epochs = 25, 16, 64, 4
    if not 50.0 <= args.bin_ms <= 100.0:
        ap.error(f"--bin-ms must lie in [50, 100]; got {args.bin_ms}.")
    # (unlike brain_states.py, --quick keeps XLA's optimisations: here they cost little compile time and save 3x
    # run time of the score-ascent scans)
    return _run(args)


def _run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def tick(stage: str) -> None:
        timings[stage] = round(time.perf_counter() - t_start - sum(timings.values()), 2)

    data = load_head_direction(args.bin_ms, data=args.data)
    tr, te = data.train_index, data.test_index
    y, a = data.counts, data.angles
    tick("data")

    # ---------------------------------------------------------------- reference 1: supervised decoder
    dec = fit_tuning_curves(y[tr], a[tr], num_bins=args.angle_bins, bandwidth=args.bandwidth)
    sup_test = dec.decode(y[te])
    res: dict[str, dict] = {"supervised": _errors(a[te], sup_test)}
    res["supervised"]["train_circular_corr"] = circular_correlation(dec.decode(y[tr]), a[tr])
    print(
        f"supervised: held-out circular corr {res['supervised']['circular_corr']:.3f} (Fisher-Lee "
        f"{res['supervised']['circular_corr_fisher_lee']:.3f}), median |error| "
        f"{res['supervised']['median_abs_error_deg']:.1f} deg",
        flush=True,
    )
    tick("supervised")

    # ---------------------------------------------------------------- reference 2: Poisson LDS
    key = jax.random.PRNGKey(args.seed)
    k_fit, k_s0, k_s1, k_s2, k_s3 = jax.random.split(key, 5)
    fit = fit_plds(
        k_fit, data, num_iters=args.plds_iters, num_particles=args.plds_particles, learning_rate=args.plds_lr
    )
    tick("plds fit")
    is_tr = data.is_train
    lat: dict[str, dict] = {}
    for name, theta, (ka, kb) in (("plds_init", fit.theta_start, (k_s0, k_s1)), ("plds", fit.theta, (k_s2, k_s3))):
        p = plds_params(fit.model, jax.tree.map(jnp.asarray, theta), fit.noise_var)
        z_tr, ll_tr = smooth_plds(ka, fit.model, p, y, is_tr, args.smooth_particles)
        z_te, ll_te = smooth_plds(kb, fit.model, p, y, ~is_tr, args.smooth_particles)
        ev = evaluate_latents(z_tr[tr], a[tr], z_te[te], a[te])
        ev.update(train_log_likelihood=ll_tr, test_log_likelihood=ll_te)
        ev["circular_corr_by_whitening"] = {
            str(wm): evaluate_latents(z_tr[tr], a[tr], z_te[te], a[te], whiten=wm)["circular_corr"]
            for wm in ("ellipse", "moments", None)
        }
        lat[name] = {"z_train": z_tr[tr], "z_test": z_te[te], "est": ev.pop("test_angle_estimate")}
        res[name] = ev
        print(
            f"{name}: held-out circular corr {ev['circular_corr']:.3f} (Fisher-Lee "
            f"{ev['circular_corr_fisher_lee']:.3f}), median |error| {ev['median_abs_error_deg']:.1f} deg, "
            f"filter log-lik train {ll_tr:.1f} test {ll_te:.1f}",
            flush=True,
        )
    tick("plds smoothing")

    # ---------------------------------------------------------------- the Poisson deep Markov model
    vae = fit_vae_latents(jax.random.fold_in(key, 7), data, epochs=args.vae_epochs)
    ev = evaluate_latents(vae["z_train"], a[tr], vae["z_test"], a[te])
    lat["vae"] = {"z_train": vae["z_train"], "z_test": vae["z_test"], "est": ev.pop("test_angle_estimate")}
    res["vae"] = ev
    print(
        f"deep Markov model: held-out circular corr {ev['circular_corr']:.3f} (Fisher-Lee "
        f"{ev['circular_corr_fisher_lee']:.3f}), median |error| {ev['median_abs_error_deg']:.1f} deg",
        flush=True,
    )
    vae["arviz_summary"].to_csv(out / "vae_arviz_summary.csv")
    tick("vae")

    # ---------------------------------------------------------------- figures
    figs = {
        "decoded_vs_true": out / "figure_decoded_vs_true.png",
        "plds_latent_plane": out / "figure_plds_latent_plane.png",
        "tuning_curves": out / "figure_tuning_curves.png",
        "vae_latent_plane": out / "figure_vae_latent_plane.png",
        "vae_training": out / "figure_vae_training.png",
    }
    figure_decoded(figs["decoded_vs_true"], data, sup_test, lat["plds"]["est"], res, lat["vae"]["est"])
    figure_latents(figs["plds_latent_plane"], lat["plds"]["z_train"], a[tr], lat["plds"]["z_test"], a[te])
    figure_latents(
        figs["vae_latent_plane"], lat["vae"]["z_train"], a[tr], lat["vae"]["z_test"], a[te], "deep Markov model"
    )
    fig = Figure(figsize=(5, 3), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.arange(1, args.vae_epochs + 1), np.asarray(vae["result"].losses))
    ax.set(xlabel="epoch", ylabel="training loss (nats / bin, annealed)", title="Poisson DMM training")
    fig.savefig(figs["vae_training"], dpi=110)
    figure_tuning(figs["tuning_curves"], dec, data.unit_ids, args.bin_ms / 1000.0)
    tick("figures")

    r = lambda v: round(float(v), 4)  # noqa: E731
    summary = {
        "hd_supervised_circular_corr": r(res["supervised"]["circular_corr"]),
        "hd_plds_circular_corr": r(res["plds"]["circular_corr"]),
        "hd_plds_init_circular_corr": r(res["plds_init"]["circular_corr"]),
        "hd_latent_circular_corr": r(res["vae"]["circular_corr"]),
        "hd_latent_circular_corr_fisher_lee": r(res["vae"]["circular_corr_fisher_lee"]),
        "hd_latent_median_abs_error_deg": r(res["vae"]["median_abs_error_deg"]),
        "hd_latent_train_circular_corr": r(res["vae"]["train_circular_corr"]),
        "vae_fit": (
            f"Poisson DMM, 2-D latent, bidirectional GRU encoder, {args.vae_epochs} epochs of SVI (ELBO) on "
            f"{vae['num_windows']} training windows of 64 bins; latents = amortised posterior means"
        ),
        "vae_fit_seconds": round(vae["seconds"], 2),
        "hd_supervised_circular_corr_fisher_lee": r(res["supervised"]["circular_corr_fisher_lee"]),
        "hd_plds_circular_corr_fisher_lee": r(res["plds"]["circular_corr_fisher_lee"]),
        "hd_supervised_median_abs_error_deg": r(res["supervised"]["median_abs_error_deg"]),
        "hd_plds_median_abs_error_deg": r(res["plds"]["median_abs_error_deg"]),
        "hd_plds_train_circular_corr": r(res["plds"]["train_circular_corr"]),
        "hd_supervised_train_circular_corr": r(res["supervised"]["train_circular_corr"]),
        "hd_plds_train_circular_corr_fisher_lee": r(res["plds"]["train_circular_corr_fisher_lee"]),
        "hd_plds_circular_corr_by_whitening": {k: r(v) for k, v in res["plds"]["circular_corr_by_whitening"].items()},
        "plds_alignment": {"reflect": res["plds"]["reflect"], "offset": r(res["plds"]["offset"])},
        "plds_alignment_train_mean_cos": r(res["plds"]["train_mean_cos"]),
        "plds_filter_log_likelihood": {
            k: {"train": r(res[k]["train_log_likelihood"]), "test": r(res[k]["test_log_likelihood"])}
            for k in ("plds_init", "plds")
        },
        "plds_fit": (
            f"score ascent (estimator ppg, exact backward kernel), {args.plds_iters} iterations x "
            f"{args.plds_particles} particles, Adam {args.plds_lr:g}, held-out bins masked; FFBSm smoothing with "
            f"{args.smooth_particles} particles"
        ),
        "plds_fit_seconds": round(fit.seconds, 2),
        "plds_noise_var": r(fit.noise_var),
        "plds_score_ascent_log_likelihood_first_last": [
            r(fit.log_likelihood_trace[0]),
            r(fit.log_likelihood_trace[-1]),
        ],
        "num_units": data.num_units,
        "unit_ids": [int(u) for u in data.unit_ids],
        "bin_ms": data.bin_ms,
        "num_bins": int(y.shape[0]),
        "num_train_bins": int(tr.size),
        "num_test_bins": int(te.size),
        "num_blocks": NUM_BLOCKS,
        "test_blocks": [int(b) for b in data.test_blocks],
        "num_time_gaps": data.num_time_gaps,
        "tracked_wake_s": [r(data.times[0] - data.bin_ms / 2000), r(data.times[-1] + data.bin_ms / 2000)],
        "angle_bins": args.angle_bins,
        "bandwidth_rad": args.bandwidth,
        "quick": bool(args.quick),
        "figures": [str(p) for p in figs.values()],
        "timings": timings,
        "seconds": round(time.perf_counter() - t_start, 2),
        "output_dir": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
