"""Hidden Markov models with categorical, Gaussian or Poisson emissions.

.. math::

    z_0 \\sim \\mathrm{Cat}(\\pi),\\quad z_t \\mid z_{t-1} \\sim \\mathrm{Cat}(A_{z_{t-1}, :}),\\quad
    y_t \\mid z_t \\sim g_{\\phi_{z_t}}.

The emission family is a component object (composition): :class:`PoissonEmissions`,
:class:`GaussianEmissions`, :class:`CategoricalEmissions`.  Each gives the per-state distribution, a closed-form
weighted M-step (MAP under its conjugate prior) used by :func:`pssm.inference.fit_em`, a data-driven
initialisation and its constraints/prior.  The transition prior is a sticky Dirichlet,
:math:`A_{i,:} \\sim \\mathrm{Dir}(\\alpha \\mathbf 1 + \\kappa e_i)`.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray
from numpyro.distributions import constraints
from scipy.cluster.vq import kmeans2

from pssm.protocol import SSM, PyTree

__all__ = [
    "HMM",
    "HMMParams",
    "EmissionModel",
    "PoissonEmissions",
    "PoissonParams",
    "GaussianEmissions",
    "GaussianParams",
    "CategoricalEmissions",
    "CategoricalParams",
]


class HMMParams(NamedTuple):
    initial_probs: Float[Array, " S"]
    transition_matrix: Float[Array, "S S"]
    emissions: PyTree


class PoissonParams(NamedTuple):
    rates: Float[Array, "S D"]


class GaussianParams(NamedTuple):
    means: Float[Array, "S D"]
    covs: Float[Array, "S D D"]


class CategoricalParams(NamedTuple):
    probs: Float[Array, "S D C"]


class EmissionModel(eqx.Module):
    """Abstract per-state emission family for :class:`HMM`."""

    emission_dim: eqx.AbstractVar[int]

    @abc.abstractmethod
    def distribution(self, params: PyTree, state: Array) -> dist.Distribution:
        """Distribution of :math:`y_t` (event shape ``(D,)``) in discrete state ``state``."""

    @abc.abstractmethod
    def m_step(self, params: PyTree, emissions: Array, weights: Float[Array, "N S"]) -> PyTree:
        """Closed-form MAP update from flattened observations ``(N, D)`` and posterior weights ``(N, S)``."""

    @abc.abstractmethod
    def initialize(self, key: PRNGKeyArray, num_states: int, emissions: np.ndarray) -> PyTree:
        """Data-driven initial parameters from observed rows ``(N, D)``."""

    @abc.abstractmethod
    def constraints(self) -> PyTree:
        """Constraints pytree matching the emission params."""

    @abc.abstractmethod
    def prior(self, num_states: int) -> PyTree:
        """NumPyro prior pytree matching the emission params."""

    def data_kind(self) -> str:
        """What :func:`pssm.validation` should check: ``'real'``, ``'counts'`` or ``'categorical'``."""
        return "real"


def _kmeans_labels(key, num_states, y):
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    y = np.asarray(y, dtype=float)
    _, labels = kmeans2(y, num_states, minit="++", seed=seed)
    return labels


def _resp_from_labels(labels, num_states, smoothing=0.1):
    r = np.full((labels.shape[0], num_states), smoothing / num_states)
    r[np.arange(labels.shape[0]), labels] += 1.0 - smoothing
    return jnp.asarray(r)


class PoissonEmissions(EmissionModel):
    """Independent Poisson counts per dimension, rates :math:`\\lambda_{s,d} \\sim \\mathrm{Gamma}(a, b)`."""

    emission_dim: int
    rate_prior_shape: float = 1.0
    rate_prior_rate: float = 1e-3

    def distribution(self, params: PoissonParams, state):
        return dist.Poisson(params.rates[state]).to_event(1)

    def m_step(self, params, emissions, weights):
        a, b = self.rate_prior_shape, self.rate_prior_rate
        num = weights.T @ emissions + (a - 1.0)
        den = weights.sum(0)[:, None] + b
        return PoissonParams(jnp.maximum(num / den, 1e-8))

    def initialize(self, key, num_states, emissions):
        labels = _kmeans_labels(key, num_states, emissions)
        w = _resp_from_labels(labels, num_states)
        return self.m_step(None, jnp.asarray(emissions, w.dtype), w)

    def constraints(self):
        return PoissonParams(constraints.positive)

    def prior(self, num_states):
        shape = (num_states, self.emission_dim)
        return PoissonParams(dist.Gamma(jnp.full(shape, max(self.rate_prior_shape, 1.0)), 0.1).to_event(2))

    def data_kind(self):
        return "counts"


class GaussianEmissions(EmissionModel):
    """Full-covariance Gaussian emissions; ``covariance_reg`` is added to the diagonal in the M-step."""

    emission_dim: int
    covariance_reg: float = 1e-4

    def distribution(self, params: GaussianParams, state):
        return dist.MultivariateNormal(params.means[state], params.covs[state])

    def m_step(self, params, emissions, weights):
        n = weights.sum(0)
        nsafe = jnp.maximum(n, 1e-12)
        means = (weights.T @ emissions) / nsafe[:, None]
        centered = emissions[None] - means[:, None]  # (S, N, D)
        covs = jnp.einsum("ns,snd,sne->sde", weights, centered, centered) / nsafe[:, None, None]
        covs = covs + self.covariance_reg * jnp.eye(self.emission_dim)
        return GaussianParams(means, covs)

    def initialize(self, key, num_states, emissions):
        labels = _kmeans_labels(key, num_states, emissions)
        w = _resp_from_labels(labels, num_states)
        return self.m_step(None, jnp.asarray(emissions, w.dtype), w)

    def constraints(self):
        return GaussianParams(constraints.real, constraints.positive_definite)

    def prior(self, num_states):
        D = self.emission_dim
        return GaussianParams(
            dist.Normal(jnp.zeros((num_states, D)), 10.0).to_event(2),
            dist.Wishart(D + 2.0, scale_tril=jnp.broadcast_to(jnp.eye(D), (num_states, D, D))).to_event(1),
        )


class CategoricalEmissions(EmissionModel):
    """``emission_dim`` independent categorical outputs with ``num_classes`` classes; Dirichlet(``alpha``) prior."""

    emission_dim: int
    num_classes: int
    concentration: float = 1.1

    def distribution(self, params: CategoricalParams, state):
        return dist.Categorical(probs=params.probs[state]).to_event(1)

    def m_step(self, params, emissions, weights):
        onehot = jax.nn.one_hot(emissions, self.num_classes, dtype=weights.dtype)  # (N, D, C)
        counts = jnp.einsum("ns,ndc->sdc", weights, onehot) + (self.concentration - 1.0)
        counts = jnp.maximum(counts, 1e-12)
        return CategoricalParams(counts / counts.sum(-1, keepdims=True))

    def initialize(self, key, num_states, emissions):
        w = jax.random.dirichlet(key, jnp.ones(num_states), (emissions.shape[0],))
        return self.m_step(None, jnp.asarray(emissions, jnp.int32), w)

    def constraints(self):
        return CategoricalParams(constraints.simplex)

    def prior(self, num_states):
        shape = (num_states, self.emission_dim, self.num_classes)
        return CategoricalParams(dist.Dirichlet(jnp.full(shape, self.concentration)).to_event(2))

    def data_kind(self):
        return "categorical"


class HMM(SSM):
    """Discrete-state HMM: ``num_states`` states, an emission component, a sticky Dirichlet transition prior."""

    discrete_states = True
    num_states: int
    emission_model: EmissionModel
    transition_concentration: float = 1.0
    stickiness: float = 0.0

    def initial(self, params: HMMParams, inputs=None):
        return dist.Categorical(probs=params.initial_probs)

    def transition(self, params: HMMParams, state, t, inputs=None):
        return dist.Categorical(probs=params.transition_matrix[state])

    def emission(self, params: HMMParams, state, t, inputs=None):
        return self.emission_model.distribution(params.emissions, state)

    def param_constraints(self) -> HMMParams:
        return HMMParams(constraints.simplex, constraints.simplex, self.emission_model.constraints())

    def transition_prior_concentration(self) -> Float[Array, "S S"]:
        S = self.num_states
        return self.transition_concentration * jnp.ones((S, S)) + self.stickiness * jnp.eye(S)

    def prior(self) -> HMMParams:
        S = self.num_states
        return HMMParams(
            dist.Dirichlet(jnp.ones(S)),
            dist.Dirichlet(self.transition_prior_concentration()).to_event(1),
            self.emission_model.prior(S),
        )

    def log_prior(self, params: HMMParams) -> Float[Array, ""]:
        """Log density of the transition prior (the part EM's M-step maximises in closed form)."""
        return dist.Dirichlet(self.transition_prior_concentration()).log_prob(params.transition_matrix).sum()

    def initialize(self, key: PRNGKeyArray, emissions: np.ndarray, self_transition: float = 0.9) -> HMMParams:
        """Initial params: uniform :math:`\\pi`, sticky :math:`A`, emissions from k-means on observed rows.

        ``emissions`` is ``(N, D)`` of observed rows (flatten sequences and drop masked rows first), or a
        :class:`pssm.data.Sequences`.
        """
        if hasattr(emissions, "mask"):
            emissions = np.asarray(emissions.emissions)[np.asarray(emissions.mask)]
        emissions = np.asarray(emissions)
        if emissions.ndim == 1:
            emissions = emissions[:, None]
        S = self.num_states
        off = (1.0 - self_transition) / max(S - 1, 1)
        A = jnp.full((S, S), off) + (self_transition - off) * jnp.eye(S) if S > 1 else jnp.ones((1, 1))
        em = self.emission_model.initialize(key, S, emissions)
        return HMMParams(jnp.full((S,), 1.0 / S), A, em)
