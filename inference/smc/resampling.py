"""Resampling schemes and ESS, all with the signature ``(key, log_weights, num_samples) -> indices``.

Given unnormalised log-weights :math:`\\ell_i` with normalised weights :math:`W_i = e^{\\ell_i} / \\sum_j e^{\\ell_j}`,
each scheme returns ``num_samples`` ancestor indices :math:`a_k` whose counts :math:`n_i = \\#\\{k: a_k = i\\}`
satisfy :math:`E[n_i] = M W_i` (``M = num_samples``), and never selects a particle with :math:`W_i = 0`
(``-inf`` log-weight), in float32 as in float64.

* ``multinomial``: i.i.d. draws, :math:`a_k = F^{-1}(U_k)` (binary search, :math:`O(M \\log N)`); output unsorted.
* ``stratified``: :math:`U_k = (k + V_k)/M`, :math:`V_k` i.i.d. uniform.
* ``systematic``: :math:`U_k = (k + V)/M` with one uniform :math:`V` (lowest variance in practice).
* ``residual``: :math:`\\lfloor M W_i \\rfloor` deterministic copies, the rest multinomial on the residuals.

Stratified, systematic and residual run in :math:`O(N + M)` without sorting or binary search: particle ``i`` owns the
output slots ``[s_{i}, s_{i+1})`` with :math:`s_i = \\#\\{k: U_k < C_{i-1}\\}` (``C`` the normalised cumulative
weights), computed in closed form per particle; slots are then filled by a scatter-max of the block starts and a
cumulative maximum (a blocked prefix scan).  Zero-weight particles are never written, whatever the rounding.
Outputs are sorted by particle index (ancestors of a block are contiguous).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from pssm.inference.smc.keys import fast_key

__all__ = [
    "Resampler",
    "multinomial",
    "multinomial_with_uniforms",
    "stratified",
    "systematic",
    "residual",
    "RESAMPLERS",
    "get_resampler",
    "normalize_log_weights",
    "ess",
    "ess_of_normalized",
    "log_ess",
]

Resampler = Callable[[PRNGKeyArray, Float[Array, " N"], int], Int[Array, " M"]]


def _shifted_exp(log_weights):
    """``(l, m, e^{l - m}, finite)``: log-weights with NaN as ``-inf``, their max ``m`` (0 if none is finite), the
    shifted exponentials (largest 1) and whether any weight is positive; one pass for the max."""
    lw = jnp.where(jnp.isnan(log_weights), -jnp.inf, log_weights)
    m = jnp.max(lw)
    finite = jnp.isfinite(m)
    m_safe = jnp.where(finite, m, 0.0)
    return lw, m_safe, jnp.exp(lw - m_safe), finite


def normalize_log_weights(log_weights: Float[Array, " N"]) -> tuple[Float[Array, " N"], Float[Array, ""]]:
    """Return ``(log W, log sum exp(log_weights))``; NaN log-weights count as ``-inf``.

    If every weight is zero the normaliser is ``-inf`` and the returned log-weights are uniform (never NaN), so a
    caller can carry on and report the collapse through the normaliser.
    """
    lw, m_safe, e, finite = _shifted_exp(log_weights)
    log_z = jnp.where(finite, m_safe + jnp.log(jnp.sum(e)), -jnp.inf)
    n = lw.shape[0]
    uniform = jnp.full_like(lw, -jnp.log(jnp.asarray(n, lw.dtype)))
    return jnp.where(finite, lw - log_z, uniform), log_z


def log_ess(log_weights: Float[Array, " N"]) -> Float[Array, ""]:
    """:math:`\\log \\mathrm{ESS} = 2\\,\\mathrm{lse}(\\ell) - \\mathrm{lse}(2\\ell) = \\log (S_1^2 / S_2)`
    with :math:`S_k = \\sum_i e^{k(\\ell_i - \\max \\ell)}` (``-inf`` if no weight); NaN counts as ``-inf``.

    Two passes over the weights (the max, then both sums from one exponential), not four."""
    _, _, e, finite = _shifted_exp(log_weights)
    val = 2.0 * jnp.log(jnp.sum(e)) - jnp.log(jnp.sum(e * e))
    return jnp.where(finite, val, -jnp.inf)


def ess(log_weights: Float[Array, " N"]) -> Float[Array, ""]:
    """Effective sample size :math:`1 / \\sum_i W_i^2` of unnormalised log-weights (0 if all weights vanish)."""
    return jnp.exp(log_ess(log_weights))


def ess_of_normalized(log_w: Float[Array, " N"]) -> Float[Array, ""]:
    """:math:`1 / \\sum_i W_i^2` for already normalised log-weights :math:`\\log W` (one pass, no max needed)."""
    return 1.0 / jnp.sum(jnp.exp(2.0 * log_w))


def _prefix(op, x: Array, identity, block: int = 16) -> Array:
    """Inclusive prefix ``op`` (``jnp.add``, ``jnp.maximum``) along the first axis, blocked for XLA:CPU.

    ``x`` is cut into rows of ``block`` consecutive entries, laid out column-major so each of the ``block`` running
    steps is one contiguous vector operation; the row totals are scanned (parallel scan) and added back.  About 2x
    faster than one ``associative_scan`` over :math:`10^5` entries (a scan's 34 strided passes fuse poorly on
    CPU), and as accurate: sequential within a block, pairwise across blocks.
    """
    n = x.shape[0]
    if n <= 4 * block:
        return jax.lax.associative_scan(op, x)
    rows = -(-n // block)
    padded = jnp.concatenate([x, jnp.full((rows * block - n,), identity, x.dtype)])
    cols = padded.reshape(rows, block).T  # (block, rows): column j holds entry j of every row
    run = [cols[0]]
    for j in range(1, block):
        run.append(op(run[-1], cols[j]))
    totals = jax.lax.associative_scan(op, run[-1])
    before = jnp.concatenate([jnp.full((1,), identity, x.dtype), totals[:-1]])
    return op(jnp.stack(run), before[None, :]).T.reshape(-1)[:n]


def _cumsum(x):
    return _prefix(jnp.add, x, 0)


def _weights(log_weights):
    """Weights proportional to :math:`e^{\\ell}` (largest 1; uniform if none is positive): one pass for the max,
    no normaliser (every caller divides by the total)."""
    _, _, e, finite = _shifted_exp(log_weights)
    return jnp.where(finite, e, 1.0)


def _cumulative(w):
    """Normalised cumulative weights with ``C[-1] == 1`` exactly."""
    c = _cumsum(w)
    return c / c[-1]


def _fill_from_starts(starts: Int[Array, " N"], active: Bool[Array, " N"], num_samples: int) -> Int[Array, " M"]:
    """Indices from block starts: slot ``k`` gets ``max{i active: starts_i <= k}``.

    Particle ``i`` owns slots ``[starts_i, starts_{next active})``.  Inactive (zero-weight) particles are never
    written, so they cannot be selected even if rounding made the starts non-monotone.
    """
    n = starts.shape[0]
    idx = jnp.arange(n, dtype=jnp.int32)
    pos = jnp.where(active, starts, num_samples)
    marks = jnp.full((num_samples,), -1, jnp.int32).at[pos].max(idx, mode="drop")
    # the first active particle starts at slot 0 (its cumulative weight before it is a sum of exact zeros), so
    # every slot is marked; the clamp only covers no active particle at all (callers then ignore the output)
    return jnp.maximum(_prefix(jnp.maximum, marks, -1), 0)


def _starts_from_strata(c_prev: Float[Array, " N"], offsets: Float[Array, " M"], num_samples: int):
    """``s_i = #{k: (k + offsets_k)/M < c_prev_i}`` in closed form (each stratum holds one uniform)."""
    x = num_samples * c_prev
    m = jnp.floor(x)
    mi = jnp.clip(m.astype(jnp.int32), 0, num_samples - 1)
    off = offsets if offsets.ndim == 0 else offsets[mi]
    extra = (off < (x - m)).astype(jnp.int32)
    return jnp.where(m >= num_samples, num_samples, mi + extra)


def _stratified_like(log_weights, offsets, num_samples):
    w = _weights(log_weights)
    c = _cumulative(w)
    c_prev = jnp.concatenate([jnp.zeros((1,), c.dtype), c[:-1]])
    starts = _starts_from_strata(c_prev, offsets, num_samples)
    return _fill_from_starts(starts, w > 0, num_samples)


def systematic(key: PRNGKeyArray, log_weights: Float[Array, " N"], num_samples: int) -> Int[Array, " M"]:
    """Systematic resampling: one uniform shared by all strata; :math:`O(N + M)`."""
    # drawn from ``key`` as given (a rolled loop on CPU, so computed once): fast_key's unrolled hash of one scalar
    # would be fused into, and repeated by, the per-particle loop that reads it
    u = jax.random.uniform(key, (), dtype=log_weights.dtype)
    return _stratified_like(log_weights, u, num_samples)


def stratified(key: PRNGKeyArray, log_weights: Float[Array, " N"], num_samples: int) -> Int[Array, " M"]:
    """Stratified resampling: one uniform per stratum :math:`[k/M, (k+1)/M)`; :math:`O(N + M)`."""
    u = jax.random.uniform(fast_key(key), (num_samples,), dtype=log_weights.dtype)
    return _stratified_like(log_weights, u, num_samples)


def _inverse_cdf(c, u):
    n = c.shape[0]
    return jnp.minimum(jnp.searchsorted(c, u, side="right"), n - 1).astype(jnp.int32)


def multinomial_with_uniforms(
    key: PRNGKeyArray, log_weights: Float[Array, " N"], num_samples: int
) -> tuple[Int[Array, " M"], Float[Array, " M"]]:
    """Multinomial draws :math:`l_k \\sim W` and, for each, a uniform :math:`v_k` independent of :math:`l_k`, from
    one random word per draw (a rejection sampler's proposal and its acceptance variable for the price of one).

    With :math:`b` uniform on :math:`\\{0, \\dots, 2^s - 1\\}` and integer cumulative weights :math:`K_i = \\lfloor
    2^s C_i \\rfloor`, :math:`l` is the first index with :math:`K_l > b`; given :math:`l`, :math:`b - K_{l-1}` is
    uniform on the :math:`K_l - K_{l-1}` integers of the interval, so :math:`v = (b - K_{l-1} + 1/2) / (K_l -
    K_{l-1})` is uniform on that grid, whatever :math:`l`.  :math:`s = 31` in float32 and 63 in float64, so
    :math:`P(l, v < a)` is exact to :math:`2^{-s}` per index, finer than a float32 inverse CDF (:math:`2^{-24}`).
    Zero-weight indices are never drawn.
    """
    c = jnp.minimum(_cumulative(_weights(log_weights)), 1.0)
    wide = c.dtype == jnp.float64
    bits_dtype, s = (jnp.uint64, 63) if wide else (jnp.uint32, 31)
    b = jax.random.bits(fast_key(key), (num_samples,), bits_dtype) >> 1
    k = jnp.floor(c * 2.0**s).astype(bits_dtype)
    n = c.shape[0]
    idx = jnp.minimum(jnp.searchsorted(k, b, side="right"), n - 1).astype(jnp.int32)
    lo = jnp.where(idx > 0, k[jnp.maximum(idx - 1, 0)], jnp.zeros((), bits_dtype))
    width = k[idx] - lo
    v = ((b - lo).astype(c.dtype) + 0.5) / width.astype(c.dtype)
    return idx, v


def multinomial(key: PRNGKeyArray, log_weights: Float[Array, " N"], num_samples: int) -> Int[Array, " M"]:
    """Multinomial resampling: i.i.d. draws from the weights (inverse CDF by binary search)."""
    c = _cumulative(_weights(log_weights))
    u = jax.random.uniform(fast_key(key), (num_samples,), dtype=c.dtype)
    return _inverse_cdf(c, u)


def residual(key: PRNGKeyArray, log_weights: Float[Array, " N"], num_samples: int) -> Int[Array, " M"]:
    """Residual resampling: :math:`\\lfloor M W_i \\rfloor` copies, then multinomial on the residuals
    :math:`M W_i - \\lfloor M W_i\\rfloor`."""
    lw, _ = normalize_log_weights(log_weights)
    mw = num_samples * jnp.exp(lw)
    copies = jnp.floor(mw)
    resid = jnp.maximum(mw - copies, 0.0)
    copies = copies.astype(jnp.int32)
    ends = _cumsum(copies)
    starts = jnp.minimum(ends - copies, num_samples)
    n_det = jnp.minimum(ends[-1], num_samples)
    det = _fill_from_starts(starts, copies > 0, num_samples)
    total = jnp.sum(resid)
    safe = jnp.where(total > 0, resid, jnp.ones_like(resid))
    c = _cumulative(safe)
    u = jax.random.uniform(fast_key(key), (num_samples,), dtype=c.dtype)
    rnd = _inverse_cdf(c, u)
    return jnp.where(jnp.arange(num_samples) < n_det, det, rnd)


RESAMPLERS: dict[str, Resampler] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}


def get_resampler(resampling: str | Resampler) -> Resampler:
    """A resampler by name (``'systematic'``, ``'stratified'``, ``'multinomial'``, ``'residual'``) or a callable."""
    if callable(resampling):
        return resampling
    try:
        return RESAMPLERS[resampling]
    except KeyError:
        raise ValueError(
            f"resampling={resampling!r} is unknown; use one of {sorted(RESAMPLERS)} or a callable "
            "(key, log_weights, num_samples) -> indices."
        ) from None
