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
:class:`RejectionBackward` (hybrid: ``num_proposals`` multinomial proposals accepted with probability
:math:`f/\\bar f`, then exact draws for the pairs still pending; exact in distribution, bounded run time) and
:class:`MCMCBackward` (independent Metropolis–Hastings with proposal :math:`W_t`, started at the ancestor; Dau &
Chopin 2022).  Draws for different ``(j, draw)`` pairs are conditionally independent.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray
from pssm.inference.smc.resampling import _cumulative, _inverse_cdf, multinomial, normalize_log_weights

__all__ = ["BackwardKernel", "ExactBackward", "RejectionBackward", "MCMCBackward", "backward_log_weights"]

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
    ) -> Int[Array, "M D"]:
        ...


def _exact_rows(key, log_transition, particles_prev, log_weights_prev, particles_next, num_draws, chunk_size):
    m = particles_next.shape[0]

    def one(args):
        x_next, k = args
        lb = backward_log_weights(log_transition, particles_prev, log_weights_prev, x_next)
        c = _cumulative(jnp.exp(lb))
        u = jax.random.uniform(k, (num_draws,), dtype=c.dtype)
        return _inverse_cdf(c, u)

    keys = jax.random.split(key, m)
    return jax.lax.map(one, (particles_next, keys), batch_size=min(chunk_size, m))


class ExactBackward(BackwardKernel):
    """Exact draws by computing the full backward weights for ``chunk_size`` next points at a time.

    Cost :math:`O(NM)` transition evaluations, memory :math:`O(N \\cdot \\text{chunk\\_size})`.
    """

    chunk_size: int = 256

    def __check_init__(self):
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {self.chunk_size}.")

    def __call__(self, key, log_transition, particles_prev, log_weights_prev, particles_next, ancestors, log_bound,
                 num_draws):
        return _exact_rows(key, log_transition, particles_prev, log_weights_prev, particles_next, num_draws,
                           self.chunk_size)


class RejectionBackward(BackwardKernel):
    """Hybrid rejection sampler (Dau & Chopin 2022).

    For each ``(j, draw)``: up to ``num_proposals`` candidates :math:`l \\sim W_t` accepted with probability
    :math:`\\exp(\\log f(x^j_{t+1} \\mid x^l_t) - \\text{log\\_bound})`; pairs with no acceptance get an exact draw,
    computed ``fallback_chunk`` at a time inside a ``while_loop`` so the cost scales with the number of failures.
    Requires ``log_bound`` (e.g. ``model.log_transition_bound``).
    """

    num_proposals: int = 10
    fallback_chunk: int = 32

    def __check_init__(self):
        if self.num_proposals < 1 or self.fallback_chunk < 1:
            raise ValueError("num_proposals and fallback_chunk must be >= 1.")

    def __call__(self, key, log_transition, particles_prev, log_weights_prev, particles_next, ancestors, log_bound,
                 num_draws):
        if log_bound is None:
            raise ValueError(
                "RejectionBackward needs log_bound, an upper bound on log f(x_next | x_prev); the model defines no "
                "log_transition_bound. Use ExactBackward() or MCMCBackward() instead."
            )
        m = particles_next.shape[0]
        d, k_prop = num_draws, self.num_proposals
        k1, k2, k3 = jax.random.split(key, 3)
        props = multinomial(k1, log_weights_prev, m * d * k_prop).reshape(m, d * k_prop)

        def row(x_next, idx):
            return jax.vmap(lambda i: log_transition(_take(particles_prev, i), x_next))(idx)

        lf = jax.vmap(row)(particles_next, props).reshape(m, d, k_prop)
        props = props.reshape(m, d, k_prop)
        log_u = jnp.log(jax.random.uniform(k2, (m, d, k_prop), dtype=lf.dtype))
        accept = log_u < lf - log_bound
        first = jnp.argmax(accept, axis=-1)
        out = jnp.take_along_axis(props, first[..., None], axis=-1)[..., 0].reshape(-1)
        failed = ~jnp.any(accept, axis=-1).reshape(-1)
        return self._fallback(k3, log_transition, particles_prev, log_weights_prev, particles_next, out, failed,
                              d).reshape(m, d)

    def _fallback(self, key, log_transition, particles_prev, log_weights_prev, particles_next, out, failed, d):
        total = out.shape[0]
        chunk = min(self.fallback_chunk, total)
        count = jnp.sum(failed)
        order = jnp.nonzero(failed, size=total, fill_value=0)[0]
        order = jnp.concatenate([order, jnp.zeros((chunk,), order.dtype)])
        num_chunks = (count + chunk - 1) // chunk

        def body(carry):
            c, res = carry
            pos = jax.lax.dynamic_slice(order, (c * chunk,), (chunk,))
            valid = c * chunk + jnp.arange(chunk) < count
            xs = _take(particles_next, pos // d)
            draws = _exact_rows(jax.random.fold_in(key, c), log_transition, particles_prev, log_weights_prev, xs, 1,
                                chunk)[:, 0]
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

    def __call__(self, key, log_transition, particles_prev, log_weights_prev, particles_next, ancestors, log_bound,
                 num_draws):
        if ancestors is None:
            raise ValueError("MCMCBackward needs the ancestors of particles_next (genealogy parents) to start from.")
        m = particles_next.shape[0]
        lt = jax.vmap(lambda i, x: log_transition(_take(particles_prev, i), x))
        cur = jnp.broadcast_to(ancestors[:, None], (m, num_draws)).astype(jnp.int32)
        lf_cur = jnp.broadcast_to(lt(ancestors, particles_next)[:, None], (m, num_draws))
        x_rep = jnp.repeat(particles_next, num_draws, axis=0)

        def step(carry, k):
            cur, lf_cur = carry
            ka, kb = jax.random.split(k)
            prop = multinomial(ka, log_weights_prev, m * num_draws)
            lf_prop = lt(prop, x_rep).reshape(m, num_draws)
            log_u = jnp.log(jax.random.uniform(kb, (m, num_draws), dtype=lf_prop.dtype))
            acc = (log_u < lf_prop - lf_cur) | ~jnp.isfinite(lf_cur)
            return (jnp.where(acc, prop.reshape(m, num_draws), cur), jnp.where(acc, lf_prop, lf_cur)), None

        (cur, _), _ = jax.lax.scan(step, (cur, lf_cur), jax.random.split(key, self.num_steps))
        return cur
