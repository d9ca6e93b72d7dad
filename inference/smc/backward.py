"""Backward kernels: draws from :math:`B(l \\mid j) \\propto W^l_{t}\\, f(x^j_{t+1} \\mid x^l_t)`.

Every kernel is a final ``equinox.Module`` called with one shared signature::

    kernel(key, log_transition, particles_prev, log_weights_prev, particles_next, ancestors, log_bound, num_draws)
        -> indices  # (M, num_draws) into particles_prev

* ``log_transition(x_prev, x_next) -> scalar`` is :math:`\\log f(x_{next} \\mid x_{prev})` for one pair (time,
  params and inputs closed over);
* ``particles_prev`` ``(N, ...)`` with log-weights ``log_weights_prev`` ``(N,)`` (unnormalised is fine);
* ``particles_next`` ``(M, ...)`` any points at the next time (filter particles for PaRIS, trajectory states for
  FFBSi);
* ``ancestors`` ``(M,)`` the genealogy parent of each next point (used by :class:`MCMCBackward`; may be ``None``
  for the others);
* ``log_bound`` an upper bound of :math:`\\log f` (used by :class:`RejectionBackward`; ``None`` for the others).

Kernels: :class:`ExactBackward` (:math:`O(NM)`, computed in chunks of ``chunk_size`` next points),
:class:`RejectionBackward` (hybrid: multinomial proposals accepted with probability :math:`f/\\bar f`, in two
rounds, then exact draws for the pairs still pending; exact in distribution, bounded run time) and
:class:`MCMCBackward` (independent Metropolis–Hastings with proposal :math:`W_t`, started at the ancestor; Dau &
Chopin 2022).  Draws for different ``(j, draw)`` pairs are conditionally independent.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from pssm.inference.smc.keys import fast_key
from pssm.inference.smc.resampling import multinomial_with_uniforms, normalize_log_weights

__all__ = [
    "BackwardKernel",
    "ExactBackward",
    "RejectionBackward",
    "MCMCBackward",
    "backward_log_weights",
    "check_backward_kernel",
]

LogTransition = Callable[[Array, Array], Array]


def _take(particles, idx):
    return jnp.take(particles, idx, axis=0)


def backward_log_weights(
    log_transition: LogTransition, particles_prev: Array, log_weights_prev: Float[Array, " N"], x_next: Array
) -> Float[Array, " N"]:
    """Normalised :math:`\\log B(\\cdot \\mid x_{next})`; falls back to the filter weights if every term vanishes."""
    lw, _ = normalize_log_weights(log_weights_prev)
    lf = jax.vmap(lambda xp: log_transition(xp, x_next))(particles_prev).astype(lw.dtype)
    lb, lz = normalize_log_weights(lw + lf)
    return jnp.where(jnp.isfinite(lz), lb, lw)


class BackwardKernel(eqx.Module):
    """Abstract backward kernel (see the module docstring for the shared call signature)."""

    @abc.abstractmethod
    def __call__(
        self,
        key: PRNGKeyArray,
        log_transition: LogTransition,
        particles_prev: Array,
        log_weights_prev: Float[Array, " N"],
        particles_next: Array,
        ancestors: Int[Array, " M"] | None,
        log_bound: Float[Array, ""] | None,
        num_draws: int,
    ) -> Int[Array, "M D"]: ...


def _block_size(n: int) -> int:
    """Block length for the two-level inverse CDF: :math:`\\lceil\\sqrt n\\rceil` rounded up to a multiple of 8."""
    root = math.isqrt(n - 1) + 1 if n > 1 else 1
    return 8 * -(-root // 8)


def _blocked(particles_prev, log_weights_prev):
    """Normalised log-weights and particles padded to ``nb * b`` and reshaped to ``(nb, b, ...)`` (padding has
    log-weight ``-inf``)."""
    n = log_weights_prev.shape[0]
    b = _block_size(n)
    nb = -(-n // b)
    pad = nb * b - n
    lw, _ = normalize_log_weights(log_weights_prev)
    lw = jnp.concatenate([lw, jnp.full((pad,), -jnp.inf, lw.dtype)]).reshape(nb, b)
    xp = jnp.concatenate([particles_prev, jnp.repeat(particles_prev[:1], pad, axis=0)], axis=0)
    return xp.reshape((nb, b) + particles_prev.shape[1:]), lw


def _cumsum_last(x):
    return jax.lax.associative_scan(jnp.add, x, axis=x.ndim - 1)


def _last_positive(w):
    """Index of the last positive entry along the last axis (0 if none)."""
    k = w.shape[-1]
    return k - 1 - jnp.argmax((w > 0)[..., ::-1], axis=-1)


def check_backward_kernel(backward, allow_none: bool = True) -> None:
    """Raise a ``TypeError`` naming the kernels unless ``backward`` is a :class:`BackwardKernel` (or ``None``)."""
    if (backward is None and allow_none) or isinstance(backward, BackwardKernel):
        return
    raise TypeError(
        f"backward must be a BackwardKernel (ExactBackward(), RejectionBackward(), MCMCBackward())"
        f"{' or None for the default' if allow_none else ''}; got {type(backward).__name__}."
    )


def _exact_batch(key, log_transition, xpb, lwb, xs, num_draws, log_bound=None):
    """Exact draws ``(R, num_draws)`` from :math:`B(\\cdot \\mid x_r) \\propto W_l f(x_r \\mid x_l)` for rows ``xs``.

    Two-level inverse CDF without storing the ``R x N`` log-weights :math:`L_{rl} = \\log W_l + \\log f(x_r \\mid
    x_l)`: one fused pass for the block sums :math:`S_{rk} = \\sum_{l \\in \\text{block } k} e^{L_{rl} - m_r}`, a
    search over the ``nb`` block sums, then the chosen block's ``b`` weights are recomputed and searched.  The shift
    :math:`m_r` is :math:`\\max_l \\log W_l + \\text{log\\_bound}` when a bound is given (one pass; if a row
    underflows, the batch is redone with row maxima), else the row maximum (two passes).  Rows where every term
    vanishes use the filter weights.  Zero-weight indices are never returned.
    """
    nb, b = lwb.shape

    def log_w(x, xblk, lwblk, use_f):
        lf = jax.vmap(lambda a: log_transition(a, x))(xblk).astype(lwblk.dtype)
        lw = lwblk + jnp.where(use_f, lf, 0.0)
        return jnp.where(jnp.isnan(lw), -jnp.inf, lw)

    def row_max(x):
        return jnp.max(jax.vmap(lambda xb, lb: log_w(x, xb, lb, True))(xpb, lwb))

    def block_sums(x, mr, uf):
        return jax.vmap(lambda xb, lb: jnp.sum(jnp.exp(log_w(x, xb, lb, uf) - mr)))(xpb, lwb)

    def exact_shift(_):
        m = jax.vmap(row_max)(xs)
        use_f = jnp.isfinite(m)
        m = jnp.where(use_f, m, jnp.max(lwb))
        return jax.vmap(block_sums)(xs, m, use_f), m, use_f

    if log_bound is None:
        s, m, use_f = exact_shift(None)
    else:
        # one pass: shift by the bound max_l log W_l + log_bound >= L_rl; redo with row maxima if a row underflows
        use_f = jnp.ones(xs.shape[:1], bool)
        m = jnp.full(xs.shape[:1], jnp.max(lwb) + log_bound, lwb.dtype)
        s = jax.vmap(block_sums)(xs, m, use_f)
        tiny = jnp.finfo(s.dtype).tiny ** 0.5
        s, m, use_f = jax.lax.cond(jnp.all(jnp.max(s, axis=-1) > tiny), lambda _: (s, m, use_f), exact_shift, None)
    cs = _cumsum_last(s)
    u = jax.random.uniform(fast_key(key), (xs.shape[0], num_draws), dtype=s.dtype)
    target = u * cs[:, -1:]
    kb = jnp.sum(cs[:, None, :] <= target[..., None], axis=-1)
    kb = jnp.minimum(kb, _last_positive(s)[:, None])
    rest = target - (jnp.take_along_axis(cs, kb, -1) - jnp.take_along_axis(s, kb, -1))

    def in_block(x, mr, uf, k):
        return jnp.exp(log_w(x, _take(xpb, k), lwb[k], uf) - mr)

    w = jax.vmap(lambda x, mr, uf, ks: jax.vmap(lambda k: in_block(x, mr, uf, k))(ks))(xs, m, use_f, kb)
    ki = jnp.minimum(jnp.sum(_cumsum_last(w) <= rest[..., None], axis=-1), _last_positive(w))
    return (kb * b + ki).astype(jnp.int32)


def _exact_rows(key, log_transition, particles_prev, log_weights_prev, particles_next, num_draws, chunk_size):
    """Exact draws for every next point, ``chunk_size`` rows at a time (memory ``O(N * chunk_size)``)."""
    xpb, lwb = _blocked(particles_prev, log_weights_prev)
    m = particles_next.shape[0]
    chunk = min(chunk_size, m)
    nc = -(-m // chunk)
    xs = jnp.concatenate([particles_next, jnp.repeat(particles_next[:1], nc * chunk - m, axis=0)], axis=0)
    xs = xs.reshape((nc, chunk) + particles_next.shape[1:])
    keys = jax.random.split(key, nc)
    out = jax.lax.map(lambda a: _exact_batch(a[1], log_transition, xpb, lwb, a[0], num_draws), (xs, keys))
    return out.reshape(nc * chunk, num_draws)[:m]


class ExactBackward(BackwardKernel):
    """Exact draws by computing the full backward weights for ``chunk_size`` next points at a time.

    Cost :math:`O(NM)` transition evaluations (two fused passes, no ``M x N`` array), memory
    :math:`O(N \\cdot \\text{chunk\\_size})`.
    """

    chunk_size: int = 256

    def __check_init__(self):
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {self.chunk_size}.")

    def __call__(
        self, key, log_transition, particles_prev, log_weights_prev, particles_next, ancestors, log_bound, num_draws
    ):
        return _exact_rows(
            key, log_transition, particles_prev, log_weights_prev, particles_next, num_draws, self.chunk_size
        )


class RejectionBackward(BackwardKernel):
    """Hybrid rejection sampler (Dau & Chopin 2022): rounds of proposals, then exact draws.

    Each ``(j, draw)`` pair proposes :math:`l \\sim W_t`, accepted with probability :math:`\\exp(\\log f(x^j_{t+1}
    \\mid x^l_t) - \\text{log\\_bound})`: first ``num_proposals`` candidates for every pair; then, for each
    ``(fraction, k)`` in ``retries``, ``k`` more for up to ``ceil(fraction * pairs)`` of the pairs still pending.
    Pairs with no acceptance get an exact draw (two-level inverse CDF), ``fallback_chunk`` rows at a time in a
    ``while_loop``, so the cost follows the number of failures.  Stopping after failures does not bias the draw:
    every output is an exact draw from :math:`B(\\cdot \\mid j)`, whatever the settings, which only trade
    proposals (about 15 ns each on a CPU core) for exact rows (:math:`O(N)` each).  All proposals are drawn at
    once, each with its acceptance uniform from the same random word (:func:`multinomial_with_uniforms`).
    Requires ``log_bound`` (e.g. ``model.log_transition_bound``).
    """

    num_proposals: int = 2
    retries: tuple[tuple[float, int], ...] = ((0.25, 8),)
    fallback_chunk: int = 64

    def __check_init__(self):
        if self.num_proposals < 1 or self.fallback_chunk < 1:
            raise ValueError("num_proposals and fallback_chunk must be >= 1.")
        for frac, k in self.retries:
            if not (0.0 <= frac <= 1.0 and int(k) == k and k >= 0):
                raise ValueError(f"retries must be (fraction in [0, 1], proposals >= 0) pairs; got {self.retries!r}.")

    def __call__(
        self, key, log_transition, particles_prev, log_weights_prev, particles_next, ancestors, log_bound, num_draws
    ):
        if log_bound is None:
            raise ValueError(
                "RejectionBackward needs log_bound, an upper bound on log f(x_next | x_prev); the model defines no "
                "log_transition_bound. Use ExactBackward() or MCMCBackward() instead."
            )
        m, d = particles_next.shape[0], num_draws
        pairs = m * d
        rounds = [(pairs, self.num_proposals)] + [
            (min(pairs, math.ceil(frac * pairs)), k) for frac, k in self.retries if k > 0 and frac > 0
        ]
        sizes = [cap * k for cap, k in rounds]
        k_u, k_fb = jax.random.split(key)
        props, u = multinomial_with_uniforms(k_u, log_weights_prev, sum(sizes))
        log_u = jnp.log(u)

        def first_accepted(rows, idx, lu):
            """Rows ``(R,)`` of pair ids, proposals ``(R, K)``: (first accepted proposal, any accepted)."""
            xs = _take(particles_next, rows // d)
            lf = jax.vmap(lambda x, ii: jax.vmap(lambda i: log_transition(_take(particles_prev, i), x))(ii))(xs, idx)
            acc = lu < lf.astype(lu.dtype) - log_bound
            pick = jnp.take_along_axis(idx, jnp.argmax(acc, axis=-1)[:, None], axis=-1)[:, 0]
            return pick, jnp.any(acc, axis=-1)

        start = 0
        out = jnp.zeros((pairs,), jnp.int32)
        ok = jnp.zeros((pairs,), bool)
        for r, (cap, k) in enumerate(rounds):
            sl = slice(start, start + cap * k)
            start += cap * k
            if r == 0:
                out, ok = first_accepted(
                    jnp.arange(pairs, dtype=jnp.int32), props[sl].reshape(cap, k), log_u[sl].reshape(cap, k)
                )
                continue
            retry = jnp.nonzero(~ok, size=cap, fill_value=pairs)[0].astype(jnp.int32)
            pick, got = first_accepted(
                jnp.minimum(retry, pairs - 1), props[sl].reshape(cap, k), log_u[sl].reshape(cap, k)
            )
            dest = jnp.where(got & (retry < pairs), retry, pairs)
            out = out.at[dest].set(pick, mode="drop")
            ok = ok.at[dest].set(True, mode="drop")
        return self._fallback(
            k_fb, log_transition, particles_prev, log_weights_prev, particles_next, out, ~ok, d, log_bound
        ).reshape(m, d)

    def _fallback(
        self, key, log_transition, particles_prev, log_weights_prev, particles_next, out, failed, d, log_bound
    ):
        total = out.shape[0]
        chunk = min(self.fallback_chunk, total)
        count = jnp.sum(failed)
        order = jnp.nonzero(failed, size=total, fill_value=0)[0]
        order = jnp.concatenate([order, jnp.zeros((chunk,), order.dtype)])
        num_chunks = (count + chunk - 1) // chunk
        xpb, lwb = _blocked(particles_prev, log_weights_prev)

        def body(carry):
            c, res = carry
            pos = jax.lax.dynamic_slice(order, (c * chunk,), (chunk,))
            valid = c * chunk + jnp.arange(chunk) < count
            draws = _exact_batch(
                jax.random.fold_in(key, c), log_transition, xpb, lwb, _take(particles_next, pos // d), 1, log_bound
            )[:, 0]
            res = res.at[jnp.where(valid, pos, total)].set(draws, mode="drop")
            return c + 1, res

        _, out = jax.lax.while_loop(lambda carry: carry[0] < num_chunks, body, (jnp.zeros((), count.dtype), out))
        return out


class MCMCBackward(BackwardKernel):
    """Independent Metropolis–Hastings targeting :math:`B(\\cdot \\mid j)` with proposal :math:`W_t`, each chain
    started at the genealogy ancestor of ``j`` (``num_steps`` steps; accept with :math:`\\min(1, f(x^j \\mid
    x^{l'}) / f(x^j \\mid x^{l}))`).  Requires ``ancestors``.  Exact only in the limit of many steps; with a
    bootstrap filter the ancestor is itself a draw from the backward kernel, so one step keeps PaRIS consistent.
    """

    num_steps: int = 1

    def __check_init__(self):
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1; got {self.num_steps}.")

    def __call__(
        self, key, log_transition, particles_prev, log_weights_prev, particles_next, ancestors, log_bound, num_draws
    ):
        if ancestors is None:
            raise ValueError("MCMCBackward needs the ancestors of particles_next (genealogy parents) to start from.")
        m = particles_next.shape[0]
        lt = jax.vmap(lambda i, x: log_transition(_take(particles_prev, i), x))
        cur = jnp.broadcast_to(ancestors[:, None], (m, num_draws)).astype(jnp.int32)
        lf_cur = jnp.broadcast_to(lt(ancestors, particles_next)[:, None], (m, num_draws))
        x_rep = jnp.repeat(particles_next, num_draws, axis=0)

        def step(carry, k):
            cur, lf_cur = carry
            prop, u = multinomial_with_uniforms(k, log_weights_prev, m * num_draws)
            lf_prop = lt(prop, x_rep).reshape(m, num_draws)
            log_u = jnp.log(u).reshape(m, num_draws).astype(lf_prop.dtype)
            acc = (log_u < lf_prop - lf_cur) | ~jnp.isfinite(lf_cur)
            return (jnp.where(acc, prop.reshape(m, num_draws), cur), jnp.where(acc, lf_prop, lf_cur)), None

        (cur, _), _ = jax.lax.scan(step, (cur, lf_cur), jax.random.split(key, self.num_steps))
        return cur
