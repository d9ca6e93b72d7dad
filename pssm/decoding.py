"""Circular decoding metrics and a supervised Bayesian population decoder of an angle (e.g. head direction).

Angles are in radians; outputs are wrapped to :math:`[0, 2\\pi)`.  The circular mean of angles :math:`a_t` is
:math:`\\bar a = \\operatorname{atan2}(\\sum_t \\sin a_t, \\sum_t \\cos a_t)`.

* :func:`circular_correlation` — Jammalamadaka & SenGupta (2001, eq. 8.2.2):

  .. math::  r_c(a, b) = \\frac{\\sum_t \\sin(a_t - \\bar a)\\,\\sin(b_t - \\bar b)}
             {\\sqrt{\\sum_t \\sin^2(a_t - \\bar a)\\,\\sum_t \\sin^2(b_t - \\bar b)}} \\in [-1, 1].

  It is 1 for :math:`b = a`, -1 for the reflection :math:`b = -a`, and unchanged when *either* variable is rotated
  by a constant (so a decoder's constant offset does not change it; a reflection flips its sign).  Under
  independence :math:`\\sqrt{n}\\, r_c \\to N(0, \\lambda)` with
  :math:`\\lambda = E[\\sin^2(a-\\mu_a)\\sin^2(b-\\mu_b)] / (E[\\sin^2(a-\\mu_a)]\\,E[\\sin^2(b-\\mu_b)]) = 1`,
  so its standard error near 0 is :math:`1/\\sqrt{n}`.
  Caveat: :math:`r_c` needs well-defined mean directions.  For near-uniform angles (mean resultant length
  :math:`\\bar R \\to 0`) the means are set by noise and :math:`r_c` is roughly the cosine of the mismatch of the two
  means, even for a good decoder.  ``method="fisher_lee"`` gives the Fisher & Lee (1983) coefficient, which needs
  no means (pairs :math:`i<j`):

  .. math::  \\rho_{FL} = \\frac{\\sum_{i<j}\\sin(a_i-a_j)\\sin(b_i-b_j)}
             {\\sqrt{\\sum_{i<j}\\sin^2(a_i-a_j)\\sum_{i<j}\\sin^2(b_i-b_j)}}
             = \\frac{S_{sS} S_{cC} - S_{sC} S_{cS}}{\\sqrt{(S_{ss}S_{cc} - S_{sc}^2)(S_{SS}S_{CC} - S_{SC}^2)}},

  with :math:`s, c = \\sin a, \\cos a`, :math:`S, C = \\sin b, \\cos b` and :math:`S_{xy} = \\sum_t x_t y_t`
  (:math:`O(n)`); it has the same invariances.
* :func:`fit_circular_alignment` / :func:`apply_alignment` — an unsupervised latent angle is identified only up to
  a reflection and a rotation; on training data pick :math:`s \\in \\{+1, -1\\}` and :math:`c` maximising
  :math:`\\frac1n \\sum_t \\cos(a_t - s\\,\\hat a_t - c)`.  For each :math:`s` the best :math:`c` is the circular mean
  of :math:`a_t - s\\hat a_t` and the maximum is that difference's mean resultant length, so the fit is exact.
* :func:`fit_whitening` / :func:`latent_angle` — the angle of a 2-D latent, :math:`\\operatorname{atan2}(z_2, z_1)`,
  after an optional affine whitening fitted on training latents (see :func:`latent_angle`).
* :class:`TuningCurveDecoder` (fitted by :func:`fit_tuning_curves`) — the Bayesian population decoder of Zhang,
  Ginzburg, McNaughton & Sejnowski (1998) with independent Poisson neurons.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from jaxtyping import ArrayLike

from pssm.validation import check_array, check_counts, check_positive_int

__all__ = [
    "CircularAlignment",
    "TuningCurveDecoder",
    "Whitening",
    "apply_alignment",
    "circular_correlation",
    "circular_mean",
    "fit_circular_alignment",
    "fit_tuning_curves",
    "fit_whitening",
    "latent_angle",
    "wrap_angle",
]

TWO_PI = 2.0 * np.pi


# ---------------------------------------------------------------------------------------------------- helpers
def wrap_angle(angle: ArrayLike) -> np.ndarray:
    """Angles wrapped to :math:`[0, 2\\pi)`."""
    out = np.mod(np.asarray(angle, float), TWO_PI)
    return np.where(out >= TWO_PI, 0.0, out)  # mod can round up to 2 pi for tiny negative inputs


def _angles(x: ArrayLike, name: str, *, min_length: int = 1) -> np.ndarray:
    a = np.asarray(check_array(x, name, ndim=1, dtype_kind="iuf"), float)
    if a.shape[0] < min_length:
        raise ValueError(
            f"{name} must hold at least {min_length} angles (shape ({min_length},) or longer); got {a.shape}."
        )
    return a


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_b} must have the same length as {name_a}: expected shape ({a.shape[0]},...); got {b.shape}."
        )


def circular_mean(angle: ArrayLike, weights: ArrayLike | None = None, axis: int = -1) -> np.ndarray:
    """:math:`\\operatorname{atan2}(\\sum w \\sin a, \\sum w \\cos a)` along ``axis``, wrapped to :math:`[0, 2\\pi)`."""
    a = np.asarray(angle, float)
    w = np.ones_like(a) if weights is None else np.broadcast_to(np.asarray(weights, float), a.shape)
    return wrap_angle(np.arctan2(np.sum(w * np.sin(a), axis=axis), np.sum(w * np.cos(a), axis=axis)))


# ---------------------------------------------------------------------------------------------------- metrics
def circular_correlation(a: ArrayLike, b: ArrayLike, *, method: Literal["js", "fisher_lee"] = "js") -> float:
    """Circular correlation coefficient of two paired angle samples (radians), in :math:`[-1, 1]`.

    ``method="js"`` (default): Jammalamadaka–SenGupta, :math:`r_c = \\sum_t \\sin(a_t-\\bar a)\\sin(b_t-\\bar b) /
    \\sqrt{\\sum_t \\sin^2(a_t-\\bar a) \\sum_t \\sin^2(b_t-\\bar b)}` with circular means :math:`\\bar a, \\bar b`.
    ``method="fisher_lee"``: the Fisher–Lee coefficient (no means; robust for near-uniform angles, see the module
    docstring).  Raises ``ValueError`` for fewer than 2 pairs, non-finite values, unequal lengths, or a sample
    with no spread (where the coefficient is undefined).
    """
    x = _angles(a, "a", min_length=2)
    y = _angles(b, "b", min_length=2)
    _same_length(x, y, "a", "b")
    if method not in ("js", "fisher_lee"):
        raise ValueError(f"method must be 'js' or 'fisher_lee'; got {method!r}.")
    if method == "js":
        sx = np.sin(x - np.arctan2(np.sin(x).sum(), np.cos(x).sum()))
        sy = np.sin(y - np.arctan2(np.sin(y).sum(), np.cos(y).sum()))
        num, vx, vy = float(np.sum(sx * sy)), float(np.sum(sx**2)), float(np.sum(sy**2))
        scale = x.size
    else:
        s, c, S, C = np.sin(x), np.cos(x), np.sin(y), np.cos(y)
        num = float((s @ S) * (c @ C) - (s @ C) * (c @ S))
        vx = float((s @ s) * (c @ c) - (s @ c) ** 2)
        vy = float((S @ S) * (C @ C) - (S @ C) ** 2)
        scale = x.size**2
    for name, v in (("a", vx), ("b", vy)):
        if not v > 1e-12 * scale:
            raise ValueError(
                f"{name} has no circular spread (constant, or only antipodal values); the circular correlation is "
                "undefined."
            )
    return float(np.clip(num / np.sqrt(vx * vy), -1.0, 1.0))


class CircularAlignment(NamedTuple):
    """``angle ≈ s * angle_est + offset`` with ``s = -1 if reflect else +1``; ``mean_cos``: the training fit
    :math:`\\frac1n\\sum_t\\cos(a_t - s\\hat a_t - c)` (1 = perfect)."""

    reflect: bool
    offset: float
    mean_cos: float = float("nan")


def fit_circular_alignment(angle_true: ArrayLike, angle_est: ArrayLike) -> CircularAlignment:
    """Reflection and rotation mapping ``angle_est`` onto ``angle_true`` (maximum mean cosine; closed form).

    For :math:`s \\in \\{+1,-1\\}` let :math:`d_t = a_t - s\\hat a_t`; :math:`\\max_c \\frac1n\\sum\\cos(d_t - c)`
    is attained at the circular mean :math:`c = \\bar d` and equals the mean resultant length
    :math:`R_s = |\\frac1n\\sum e^{i d_t}|`.  The reflection with the larger :math:`R_s` wins (ties: no reflection).
    """
    a = _angles(angle_true, "angle_true")
    e = _angles(angle_est, "angle_est")
    _same_length(a, e, "angle_true", "angle_est")
    best: CircularAlignment | None = None
    for reflect in (False, True):
        d = a - (-e if reflect else e)
        c, s = float(np.mean(np.cos(d))), float(np.mean(np.sin(d)))
        r = float(np.hypot(c, s))
        if best is None or r > best.mean_cos + 1e-12:
            best = CircularAlignment(reflect, float(wrap_angle(np.arctan2(s, c))), r)
    assert best is not None
    return best


def apply_alignment(alignment: CircularAlignment, angle_est: ArrayLike) -> np.ndarray:
    """:math:`s\\,\\hat a + c` wrapped to :math:`[0, 2\\pi)` (``s = -1`` when ``alignment.reflect``)."""
    if not isinstance(alignment, CircularAlignment):
        raise TypeError(
            f"alignment must be a CircularAlignment (from fit_circular_alignment); got {type(alignment).__name__}."
        )
    e = np.asarray(check_array(angle_est, "angle_est", dtype_kind="iuf"), float)
    return wrap_angle((-e if alignment.reflect else e) + alignment.offset)


# ---------------------------------------------------------------------------------------------------- latents
class Whitening(NamedTuple):
    """Affine map :math:`z \\mapsto W (z - m)` fitted by :func:`fit_whitening`."""

    mean: np.ndarray
    transform: np.ndarray


def _latents(x: ArrayLike, name: str) -> np.ndarray:
    z = np.asarray(check_array(x, name, ndim=2, dtype_kind="iuf"), float)
    if z.shape[1] != 2:
        raise ValueError(f"{name} must be 2-D latents of shape (T, 2); got {z.shape}.")
    return z


def _moment_whitening(z: np.ndarray, eps: float) -> Whitening:
    m = z.mean(0)
    vals, vecs = np.linalg.eigh(np.cov(z - m, rowvar=False))
    if not vals.min() > eps * max(vals.max(), eps):
        raise ValueError(f"latents lie on a line (covariance eigenvalues {vals.tolist()}); they have no angle.")
    return Whitening(m, (vecs / np.sqrt(vals)) @ vecs.T)


def _ellipse_whitening(z: np.ndarray, eps: float) -> Whitening | None:
    """Algebraic least-squares conic :math:`u^\\top M u + g^\\top u = 1` (on moment-whitened ``u`` for conditioning);
    ``None`` unless it is an ellipse (M positive definite, positive right-hand side)."""
    pre = _moment_whitening(z, eps)
    u = (z - pre.mean) @ pre.transform.T
    x, y = u[:, 0], u[:, 1]
    coef, *_ = np.linalg.lstsq(np.stack([x * x, x * y, y * y, x, y], 1), np.ones(len(x)), rcond=None)
    a, b, c, d, e = coef
    M = np.array([[a, b / 2], [b / 2, c]])
    g = np.array([d, e])
    vals = np.linalg.eigvalsh(M)
    if not vals.min() > eps * max(abs(vals).max(), eps):
        return None
    centre = -0.5 * np.linalg.solve(M, g)
    k = 1.0 + centre @ M @ centre
    if not k > 0:
        return None
    vals, vecs = np.linalg.eigh(M / k)
    root = (vecs * np.sqrt(vals)) @ vecs.T  # (M/k)^{1/2}: maps the ellipse to the unit circle
    # compose with the pre-whitening: W (z - m) with W = root @ P, m = pre.mean + P^{-1} centre
    W = root @ pre.transform
    return Whitening(pre.mean + np.linalg.solve(pre.transform, centre), W)


def fit_whitening(
    latents: ArrayLike, *, method: Literal["moments", "ellipse"] = "moments", eps: float = 1e-9
) -> Whitening:
    """Centre and whiten 2-D latents ``(T, 2)``: :math:`u = W (z - m)`.

    * ``"moments"``: :math:`m = \\bar z`, :math:`W = \\Sigma^{-1/2}` (ZCA, symmetric), from the sample covariance.
    * ``"ellipse"``: the least-squares conic through the points (Fitzgibbon-style algebraic fit
      :math:`z^\\top M z + g^\\top z = 1`, computed on moment-whitened points); :math:`m` its centre and
      :math:`W = (M/k)^{1/2} \\Sigma^{-1/2}` with :math:`k = 1 + m^\\top M m`, which maps that ellipse onto the unit
      circle.  Unlike the moments, the conic does not depend on *where* along the ring the points lie, so a
      non-uniform angle distribution (a ring visited mostly on one side) does not bias the centre and shape.  Falls
      back to ``"moments"`` when the best conic is not an ellipse (a filled blob, a line).

    Both :math:`W` have positive determinant, so whitening never reflects the plane: the reflection is left to
    :func:`fit_circular_alignment`.
    """
    z = _latents(latents, "latents")
    if method not in ("moments", "ellipse"):
        raise ValueError(f"method must be 'moments' or 'ellipse'; got {method!r}.")
    if z.shape[0] < 6:
        raise ValueError(f"latents must hold at least 6 points to fit a whitening, shape (>=6, 2); got {z.shape}.")
    if method == "ellipse":
        w = _ellipse_whitening(z, eps)
        if w is not None:
            return w
    return _moment_whitening(z, eps)


def latent_angle(latents: ArrayLike, whitening: Whitening | None = None) -> np.ndarray:
    """Angle of 2-D latents ``(T, 2)``: :math:`\\operatorname{atan2}(u_2, u_1)` in :math:`[0, 2\\pi)` with
    :math:`u = W(z - m)` for a :class:`Whitening` (else :math:`u = z`).

    Choice: fit the whitening on *training* latents (:func:`fit_whitening`, preferably ``method="ellipse"``) and
    apply it to every split.  A latent state-space model identifies its latents only up to an affine map, so a ring
    of heading appears as an ellipse around some centre; the raw atan2 of such an ellipse is strongly non-uniform in
    the true angle (or meaningless if the centre lies outside the ring).  Mapping the ring onto a circle about the
    origin first leaves only a reflection and a rotation, fitted by :func:`fit_circular_alignment`.  The moment
    whitening is biased when the ring is visited unevenly (the mean moves towards the visited side); the ellipse fit
    is not.
    """
    z = _latents(latents, "latents")
    if whitening is not None:
        if not isinstance(whitening, Whitening):
            raise TypeError(
                f"whitening must be a Whitening (from fit_whitening) or None; got {type(whitening).__name__}."
            )
        z = (z - whitening.mean) @ whitening.transform.T
    return wrap_angle(np.arctan2(z[:, 1], z[:, 0]))


# ---------------------------------------------------------------------------------------------------- decoder
class TuningCurveDecoder(NamedTuple):
    """Bayesian population decoder of an angle from spike counts (Zhang et al. 1998), fitted by
    :func:`fit_tuning_curves`.

    With angle bins :math:`\\theta_k` (``bin_centers``), tuning curves :math:`\\lambda_{nk}` (``rates``, expected count
    of unit :math:`n` per time bin at angle :math:`\\theta_k`) and prior :math:`\\pi_k`, the posterior for one time
    bin with counts :math:`y_n` (independent Poisson neurons) is

    .. math::  p(\\theta_k \\mid y) \\propto \\pi_k \\prod_n \\lambda_{nk}^{y_n} e^{-\\lambda_{nk}}
               \\;\\Rightarrow\\; \\log p(\\theta_k \\mid y) = \\log\\pi_k + \\sum_n y_n\\log\\lambda_{nk}
               - \\sum_n \\lambda_{nk} - \\log Z(y).

    :meth:`decode` returns the posterior circular mean :math:`\\operatorname{atan2}(\\sum_k p_k\\sin\\theta_k,
    \\sum_k p_k\\cos\\theta_k)` (default; it uses the whole posterior and is not quantised to the bin grid) or the
    MAP bin centre.
    """

    bin_centers: np.ndarray
    """``(K,)`` angle-bin centres :math:`(k + 1/2)\\,2\\pi/K`."""
    rates: np.ndarray
    """``(N, K)`` tuning curves: expected counts per time bin (smoothed, floored)."""
    log_prior: np.ndarray
    """``(K,)`` normalised log prior over angle bins."""
    occupancy: np.ndarray
    """``(K,)`` training time bins per angle bin (unsmoothed)."""

    @property
    def num_units(self) -> int:
        return int(self.rates.shape[0])

    @property
    def num_bins(self) -> int:
        return int(self.rates.shape[1])

    def _counts(self, counts: ArrayLike) -> np.ndarray:
        y = np.asarray(check_counts(counts, "counts", ndim=2), float)
        if y.shape[1] != self.num_units:
            raise ValueError(
                f"counts must have shape (T, {self.num_units}) (one column per unit of the fitted tuning curves); "
                f"got {y.shape}."
            )
        return y

    def log_posterior(self, counts: ArrayLike) -> np.ndarray:
        """``(T, K)`` normalised log posterior over angle bins for each row of ``counts`` ``(T, N)``."""
        y = self._counts(counts)
        lp = y @ np.log(self.rates) - self.rates.sum(0) + self.log_prior
        lp -= lp.max(1, keepdims=True)
        return lp - np.log(np.exp(lp).sum(1, keepdims=True))

    def posterior(self, counts: ArrayLike) -> np.ndarray:
        """``(T, K)`` posterior probabilities over angle bins."""
        return np.exp(self.log_posterior(counts))

    def decode(self, counts: ArrayLike, method: Literal["mean", "map"] = "mean") -> np.ndarray:
        """``(T,)`` decoded angles in :math:`[0, 2\\pi)`: posterior circular mean (``"mean"``) or MAP bin centre."""
        if method not in ("mean", "map"):
            raise ValueError(f"method must be 'mean' or 'map'; got {method!r}.")
        lp = self.log_posterior(counts)
        if method == "map":
            return self.bin_centers[np.argmax(lp, axis=1)]
        p = np.exp(lp)
        return wrap_angle(np.arctan2(p @ np.sin(self.bin_centers), p @ np.cos(self.bin_centers)))


def fit_tuning_curves(
    counts: ArrayLike,
    angles: ArrayLike,
    *,
    num_bins: int = 36,
    bandwidth: float = 0.2,
    floor: float = 0.01,
    prior: Literal["uniform", "occupancy"] = "uniform",
) -> TuningCurveDecoder:
    """Poisson tuning curves over ``num_bins`` angle bins from training ``counts`` ``(T, N)`` and ``angles`` ``(T,)``.

    With :math:`k_t` the angle bin of :math:`a_t`, spike sums :math:`S_{nk} = \\sum_t y_{tn} [k_t = k]` and
    occupancy :math:`O_k = \\sum_t [k_t = k]`, the tuning curve is the circular kernel (Nadaraya–Watson) estimate

    .. math::  \\lambda_{nk} = \\max\\Big(\\frac{\\sum_j w_{kj} S_{nj}}{\\sum_j w_{kj} O_j},\\;
               \\text{floor}\\cdot\\bar y_n\\Big), \\qquad w_{kj} = \\exp\\big(\\cos(\\theta_k - \\theta_j)/h^2\\big)

    (a von Mises kernel of width ``bandwidth`` :math:`= h` radians; ``bandwidth=0`` means no smoothing), floored at
    the fraction ``floor`` of the unit's mean count :math:`\\bar y_n` so that an unvisited or silent bin never has
    rate 0 (which would forbid any spike there).  ``prior``: ``"uniform"`` (:math:`\\pi_k = 1/K`) or
    ``"occupancy"`` (:math:`\\pi_k \\propto O_k + 1`, the training angle distribution with add-one smoothing).
    """
    y = np.asarray(check_counts(counts, "counts", ndim=2), float)
    a = _angles(angles, "angles")
    if a.shape[0] != y.shape[0]:
        raise ValueError(
            f"angles must have one angle per row of counts: expected shape ({y.shape[0]},); got {a.shape}."
        )
    if y.shape[0] < 2 or y.shape[1] < 1:
        raise ValueError(f"counts must have shape (T >= 2, N >= 1); got {y.shape}.")
    K = check_positive_int(num_bins, "num_bins", minimum=2)
    h = float(check_array(bandwidth, "bandwidth", ndim=0, dtype_kind="iuf"))
    fl = float(check_array(floor, "floor", ndim=0, dtype_kind="iuf"))
    if h < 0:
        raise ValueError(f"bandwidth must be >= 0 radians (0: no smoothing); got {h}.")
    if not fl > 0:
        raise ValueError(f"floor must be > 0 (a fraction of each unit's mean count); got {fl}.")
    if prior not in ("uniform", "occupancy"):
        raise ValueError(f"prior must be 'uniform' or 'occupancy'; got {prior!r}.")
    centers = (np.arange(K) + 0.5) * TWO_PI / K
    k = np.minimum((wrap_angle(a) / TWO_PI * K).astype(int), K - 1)
    onehot = np.zeros((a.shape[0], K))
    onehot[np.arange(a.shape[0]), k] = 1.0
    occ = onehot.sum(0)
    spikes = y.T @ onehot  # (N, K)
    if h > 0:
        d = np.cos(centers[:, None] - centers[None, :])
        w = np.exp((d - 1.0) / h**2)  # exp(cos/h^2) up to a constant
        num, den = spikes @ w.T, w @ occ
    else:
        num, den = spikes, occ
    mean_count = y.mean(0)
    lo = fl * np.maximum(mean_count, 1e-12)[:, None]
    rates = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    rates = np.maximum(rates, lo)
    logp = np.log(occ + 1.0) if prior == "occupancy" else np.zeros(K)
    logp = logp - np.log(np.exp(logp - logp.max()).sum()) - logp.max()
    return TuningCurveDecoder(centers, rates, logp, occ)
