"""Distributions used by pssm models beyond NumPyro's own."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import gammaln, xlogy
from numpyro.distributions import constraints

__all__ = ["GaussianTril", "Dirichlet", "observed_log_prob", "factorises", "MissingEntries", "gaussian_conditional"]

_LOG_2PI = math.log(2.0 * math.pi)


class GaussianTril(dist.Distribution):
    """Multivariate normal :math:`N(\\mu, LL^\\top)` evaluated with matrix products only.

    ``numpyro``'s ``MultivariateNormal`` issues a triangular solve per call, which dominates particle methods that
    ``vmap`` it over :math:`10^5`–:math:`10^6` particles (hundreds of times slower than a matmul for small
    dimensions).  Here :math:`L^{-1}` is formed once (outside the particle ``vmap`` when ``scale_tril`` is shared)
    and ``log_prob`` is :math:`-\\tfrac12\\|L^{-1}(x-\\mu)\\|^2 - \\sum\\log L_{ii} - \\tfrac d2 \\log 2\\pi`.
    """

    arg_constraints = {"loc": constraints.real_vector, "scale_tril": constraints.lower_cholesky}
    support = constraints.real_vector
    reparametrized_params = ["loc", "scale_tril"]

    def __init__(self, loc, scale_tril, validate_args=None):
        self.loc = loc
        self.scale_tril = scale_tril
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(loc)[:-1], jnp.shape(scale_tril)[:-2])
        super().__init__(batch_shape=batch_shape, event_shape=jnp.shape(loc)[-1:], validate_args=validate_args)

    @classmethod
    def from_cov(cls, loc, cov):
        return cls(loc, jnp.linalg.cholesky(cov))

    def sample(self, key, sample_shape=()):
        eps = jax.random.normal(key, sample_shape + self.batch_shape + self.event_shape, jnp.result_type(self.loc))
        return self.loc + jnp.einsum("...ij,...j->...i", self.scale_tril, eps)

    def log_prob(self, value):
        d = self.event_shape[0]
        eye = jnp.eye(d, dtype=self.scale_tril.dtype)
        inv = solve_triangular(self.scale_tril, jnp.broadcast_to(eye, self.scale_tril.shape), lower=True)
        z = jnp.einsum("...ij,...j->...i", inv, value - self.loc)
        half_logdet = jnp.sum(jnp.log(jnp.diagonal(self.scale_tril, axis1=-2, axis2=-1)), axis=-1)
        return -0.5 * jnp.sum(z**2, axis=-1) - half_logdet - 0.5 * d * _LOG_2PI

    @property
    def mean(self):
        return jnp.broadcast_to(self.loc, self.batch_shape + self.event_shape)

    @property
    def covariance_matrix(self):
        return self.scale_tril @ jnp.swapaxes(self.scale_tril, -1, -2)


class Dirichlet(dist.Dirichlet):
    """``numpyro.distributions.Dirichlet`` whose density is finite at faces of the simplex where it should be.

    :math:`\\log p(x) = \\sum_k (\\alpha_k - 1)\\log x_k - \\log B(\\alpha)` with :math:`0 \\log 0 = 0`
    (``xlogy``): a transition row with an exact zero has a finite density under :math:`\\alpha_k = 1` (and
    :math:`-\\infty` under :math:`\\alpha_k > 1`, where that face has density zero), instead of NaN.
    """

    def log_prob(self, value):
        a = self.concentration
        norm = jnp.sum(gammaln(a), axis=-1) - gammaln(jnp.sum(a, axis=-1))
        return jnp.sum(xlogy(a - 1.0, value), axis=-1) - norm


# --------------------------------------------------------------------------------------------- missing entries
def _factor(d: dist.Distribution):
    """The scalar base of ``d`` when ``d`` factorises over its event entries (``Independent`` of a scalar
    distribution, possibly nested), else ``None``."""
    while isinstance(d, dist.Independent):
        d = d.base_dist
    return d if d.event_shape == () else None


def _is_gaussian(d: dist.Distribution) -> bool:
    return isinstance(d, GaussianTril | dist.MultivariateNormal | dist.LowRankMultivariateNormal)


def factorises(d: dist.Distribution) -> bool:
    """Whether :func:`observed_log_prob` is exact for single missing entries of ``d``'s event (scalar events,
    ``Independent`` of scalars, multivariate normals); otherwise a step with a missing entry is dropped whole."""
    return d.event_shape == () or _factor(d) is not None or _is_gaussian(d)


def _gaussian_observed(d, y, miss):
    """:math:`\\log N(y_o; \\mu_o, \\Sigma_{oo})` for the observed entries ``o``: the missing coordinates are
    replaced by independent unit normals at their means, whose density :math:`-\\tfrac12\\log 2\\pi` each is
    removed again (exact)."""
    r = jnp.where(miss, 0.0, y - d.loc)
    miss = jnp.broadcast_to(miss, r.shape)
    o = (~miss).astype(r.dtype)
    eye = jnp.eye(r.shape[-1], dtype=r.dtype)
    cov = d.covariance_matrix * o[..., :, None] * o[..., None, :] + eye * (1 - o)[..., None, :]
    lp = dist.MultivariateNormal(jnp.zeros_like(r), covariance_matrix=cov).log_prob(r)
    return lp + 0.5 * _LOG_2PI * jnp.sum(miss, axis=-1)


def observed_log_prob(d: dist.Distribution, y: jax.Array) -> jax.Array:
    """:math:`\\log p(y_o)`: the log density of the observed (non-NaN) entries of ``y`` under ``d``.

    A NaN entry is missing and marginalised out: exactly for a distribution that factorises over its entries
    (the missing entries' terms are dropped) and for multivariate normals (the marginal
    :math:`N(\\mu_o, \\Sigma_{oo})`); for any other distribution a step with a missing entry contributes 0, as
    if all of it were missing.  A step with every entry missing contributes 0.  Without NaN this is
    ``d.log_prob(y)`` (bit for bit for factorising distributions).
    """
    if not jnp.issubdtype(jnp.result_type(y), jnp.floating):
        return d.log_prob(y)
    ev = len(d.event_shape)
    miss = jnp.isnan(y)
    yc = jnp.where(miss, jnp.zeros((), y.dtype), y)
    if ev == 0:
        return jnp.where(miss, 0.0, d.log_prob(yc))
    base = _factor(d)
    if base is not None:
        lp = base.log_prob(yc)
        return jnp.where(miss, 0.0, lp).sum(axis=tuple(range(-ev, 0)))
    axes = tuple(range(-ev, 0))
    any_miss = miss.any(axis=axes)
    if _is_gaussian(d) and ev == 1:
        if any_miss.ndim == 0:  # one step (the usual case inside a particle vmap): pay only when needed
            return jax.lax.cond(any_miss, lambda: _gaussian_observed(d, y, miss), lambda: d.log_prob(yc))
        return jnp.where(any_miss, _gaussian_observed(d, y, miss), d.log_prob(yc))
    if any_miss.ndim == 0:
        return jax.lax.cond(any_miss, lambda: jnp.zeros((), d.log_prob(yc).dtype), lambda: d.log_prob(yc))
    return jnp.where(any_miss, 0.0, d.log_prob(yc))


class MissingEntries(dist.Distribution):
    """``base`` whose ``log_prob`` skips NaN entries of the value (:func:`observed_log_prob`); sampling is the
    base's.  Used to observe a partly missing step at a NumPyro site."""

    arg_constraints = {}
    pytree_data_fields = ("base",)

    def __init__(self, base: dist.Distribution, validate_args=None):
        self.base = base
        super().__init__(base.batch_shape, base.event_shape, validate_args=validate_args)

    @property
    def support(self):
        return self.base.support

    def sample(self, key, sample_shape=()):
        return self.base.sample(key, sample_shape)

    def log_prob(self, value):
        return observed_log_prob(self.base, value)


def gaussian_conditional(
    mean: jax.Array, cov: jax.Array, y: jax.Array, observed: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Moments of :math:`y \\sim N(\\mu, \\Sigma)` given its observed entries :math:`y_o` (one step).

    .. math::  E[y \\mid y_o] = \\mu + \\Sigma P (y - \\mu), \\qquad
               \\mathrm{Cov}[y \\mid y_o] = \\Sigma - \\Sigma P \\Sigma, \\qquad
               P = O (O\\Sigma O + I - O)^{-1} O,

    with :math:`O = \\mathrm{diag}(o)`: :math:`P` embeds :math:`\\Sigma_{oo}^{-1}`, so the values at missing
    entries are never read.  Observed entries come back as given, with zero (co)variance.  ``mean (D,)``,
    ``cov (D, D)``, ``y (D,)``, ``observed (D,)`` bool; broadcast over leading axes with ``vmap``.
    """
    o = observed.astype(cov.dtype)
    miss = 1.0 - o
    a = cov * o[:, None] * o[None, :] + jnp.diag(miss)
    chol = jnp.linalg.cholesky(a)
    p_cov = o[:, None] * jax.scipy.linalg.cho_solve((chol, True), o[:, None] * cov)  # P Sigma
    r = jnp.where(observed, y - mean, 0.0)
    cond_mean = jnp.where(observed, y, mean + p_cov.T @ r)
    cond_cov = (cov - p_cov.T @ cov) * miss[:, None] * miss[None, :]
    return cond_mean, cond_cov
