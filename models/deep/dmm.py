"""Deep Markov model / deep Kalman filter (Krishnan et al. 2015, 2017): neural transition and emission.

.. math::

    z_0 \\sim N(\\mu(\\zeta), \\mathrm{diag}\\,\\sigma^2(\\zeta)), \\qquad
    z_t \\mid z_{t-1} \\sim N(\\mu(z_{t-1}), \\mathrm{diag}\\,\\sigma^2(z_{t-1})), \\qquad
    y_t \\mid z_t \\sim \\prod_d p(y_{td} \\mid \\mathrm{emitter}(z_t)_d),

with :math:`(\\mu, \\sigma)` the :class:`~pssm.models.deep.networks.GatedTransition`, :math:`\\zeta` a learned
initial latent (the first state is one transition step from it, as in Pyro's DMM) and the emitter an MLP giving
Bernoulli logits, Poisson log-rates or Gaussian ``(loc, softplus scale)``.  The networks are equinox modules in
the params pytree, so the model obeys the protocol and every algorithm (``simulate``, ``log_joint``, particle
filters, PaRIS, CSMC) runs on it unchanged.  Inference networks are in :mod:`pssm.models.deep.encoders`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray
from numpyro.distributions import constraints

from pssm.display import short_repr
from pssm.models.deep.networks import Emitter, GatedTransition
from pssm.protocol import SSM
from pssm.validation import check_key

__all__ = ["DMMParams", "DeepMarkovModel", "EMISSIONS"]

EMISSIONS = ("bernoulli", "poisson", "gaussian")


class DMMParams(NamedTuple):
    """Learned initial latent :math:`\\zeta`, transition and emitter networks."""

    initial_latent: Float[Array, " Z"]
    transition: GatedTransition
    emitter: Emitter

    __repr__ = short_repr


class DeepMarkovModel(SSM):
    """Deep Markov model (final).  Settings: ``latent_dim``, ``emission_dim``, ``emission`` kind
    (``'bernoulli'``, ``'poisson'`` or ``'gaussian'``), hidden widths of the emitter and the transition."""

    latent_dim: int
    emission_dim: int
    emission_kind: Literal["bernoulli", "poisson", "gaussian"] = "bernoulli"
    emitter_hidden: int = 100
    transition_hidden: int = 200

    def __check_init__(self):
        for name in ("latent_dim", "emission_dim", "emitter_hidden", "transition_hidden"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}.")
        if self.emission_kind not in EMISSIONS:
            raise ValueError(f"emission_kind must be one of {EMISSIONS}; got {self.emission_kind!r}.")

    # ---- params
    def init_params(self, key: PRNGKeyArray) -> DMMParams:
        """Networks at PyTorch-default initialisation, identity linear path, :math:`\\zeta = 0`."""
        check_key(key)
        k1, k2 = jax.random.split(key)
        out = 2 * self.emission_dim if self.emission_kind == "gaussian" else self.emission_dim
        return DMMParams(
            jnp.zeros(self.latent_dim),
            GatedTransition(self.latent_dim, self.transition_hidden, key=k1),
            Emitter(self.latent_dim, self.emitter_hidden, out, key=k2),
        )

    random_params = init_params

    def param_constraints(self) -> DMMParams:
        shapes = jax.eval_shape(self.init_params, jax.random.key(0))
        return jax.tree.map(lambda _: constraints.real, shapes)

    @property
    def emission_shape(self) -> tuple[int, ...]:
        return (self.emission_dim,)

    @property
    def takes_inputs(self) -> bool:
        return False

    @property
    def data_kind(self) -> str:
        """What the boundary checks the data for: binary, counts or real."""
        return {"bernoulli": "binary", "poisson": "counts", "gaussian": "real"}[self.emission_kind]

    # ---- the three conditionals
    def initial(self, params: DMMParams, inputs=None) -> dist.Distribution:
        loc, scale = params.transition(params.initial_latent)
        return dist.Normal(loc, scale).to_event(1)

    def transition(self, params: DMMParams, state: Array, t, inputs=None) -> dist.Distribution:
        loc, scale = params.transition(state)
        return dist.Normal(loc, scale).to_event(1)

    def emission(self, params: DMMParams, state: Array, t, inputs=None) -> dist.Distribution:
        return emission_distribution(self.emission_kind, params.emitter(state))


def emission_distribution(kind: str, raw: Float[Array, "... O"]) -> dist.Distribution:
    """The factorised emission distribution from the emitter's raw output (last axis)."""
    if kind == "bernoulli":
        return dist.Bernoulli(logits=raw).to_event(1)
    if kind == "poisson":
        return dist.Poisson(jnp.exp(jnp.clip(raw, max=20.0))).to_event(1)
    loc, s = jnp.split(raw, 2, axis=-1)
    return dist.Normal(loc, jax.nn.softplus(s) + 1e-4).to_event(1)


def network_leaves(params) -> int:
    """Number of learned scalars in a pytree of arrays and equinox modules."""
    return sum(int(a.size) for a in jax.tree.leaves(eqx.filter(params, eqx.is_inexact_array)))
