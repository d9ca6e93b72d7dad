"""HMM emission components: the contract and the closed-form families (Poisson, Gaussian, categorical).

An emission component gives, for state ``s`` and the model inputs of one step, a NumPyro distribution over
:math:`y_t` (:meth:`EmissionComponent.distribution`), the vectorised per-state log-likelihoods of a sequence
(:meth:`~EmissionComponent.log_likelihoods`, ``(T, S)``), its params spec and prior, a data-driven
initialisation, and a weighted M-step

.. math::  \\hat\\phi = \\arg\\max_\\phi \\sum_{b,t,s} w_{b,t,s} \\log p(y_{b,t} \\mid z = s, \\phi) + \\log p(\\phi),

closed form here; iterative components (the GLM) carry optimiser state through ``m_step_init``/``m_step`` and
may use the key.  Components that see past emissions declare ``emission_lags`` and ``features``.

Priors (each the one the M-step maximises): Poisson rates :math:`\\lambda \\sim \\mathrm{Gamma}(a, b)`;
Gaussian covariances :math:`\\Sigma \\sim \\mathcal W^{-1}(\\Psi = \\epsilon I, \\nu)` (``covariance_reg`` ε,
``covariance_dof`` ν; the default :math:`\\nu = -(D+1)` is the flat-in-:math:`\\log|\\Sigma|` limit whose MAP is
:math:`(S + \\epsilon I)/n`), flat means; categorical probabilities :math:`\\mathrm{Dir}(\\alpha)`.
"""

from __future__ import annotations

import abc
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import gammaln
from jaxtyping import Array, Float, PRNGKeyArray
from numpyro.distributions import constraints

from pssm.data import Sequences
from pssm.display import short_repr
from pssm.distributions import Dirichlet, gaussian_conditional, observed_log_prob
from pssm.models.hmm.components import Component
from pssm.models.hmm.init import initial_responsibilities
from pssm.params import ParamSpec
from pssm.validation import check_positive_int, check_real

PyTree = Any

__all__ = [
    "EmissionComponent",
    "PoissonEmissions",
    "PoissonParams",
    "GaussianEmissions",
    "GaussianParams",
    "CategoricalEmissions",
    "CategoricalParams",
    "flat_observed",
    "flat_entries",
    "completed_moments",
]


def flat_observed(data: Sequences, weights: Array) -> tuple[Array, Array]:
    """``(N, *emission_shape)`` emissions and ``(N, S)`` weights over all padded steps (weights 0 where masked)."""
    y = data.emissions.reshape((-1,) + data.emissions.shape[2:])
    w = (weights * data.mask[..., None]).reshape(-1, weights.shape[-1])
    return y, w


def flat_entries(data: Sequences, dtype) -> Array | None:
    """``(N, *emission_shape)`` 0/1 weights of the observed entries (``None``: every entry of a step observed)."""
    if data.observed is None:
        return None
    return data.entries.reshape((-1,) + data.emissions.shape[2:]).astype(dtype)


def completed_moments(
    y: Float[Array, "N D"],
    observed: Array,
    weights: Float[Array, "N S"],
    means: Float[Array, "N S D"],
    covs: Float[Array, "S D D"],
    chunk: int = 1024,
) -> tuple[Float[Array, "N S D"], Float[Array, "S D D"]]:
    """The E-step of EM with missing entries under Gaussian emissions :math:`y_n \\mid s \\sim N(m_{ns}, \\Sigma_s)`.

    Returns :math:`\\hat y_{ns} = E[y_n \\mid y_{n,o}, s]` and :math:`\\sum_n w_{ns} C_{ns}`,
    :math:`C_{ns} = \\mathrm{Cov}[y_n \\mid y_{n,o}, s]` (:func:`pssm.distributions.gaussian_conditional`), so
    that :math:`E[y y^\\top] = \\hat y \\hat y^\\top + C`.  ``observed`` ``(N, D)`` bool.  Rows go in chunks of
    ``chunk``: memory :math:`O(\\mathrm{chunk} \\cdot S D^2)`, not :math:`O(N S D^2)`.
    """
    N, D = y.shape
    S = weights.shape[1]
    size = max(1, min(N, chunk))
    pad = (-N) % size
    k = (N + pad) // size
    y = jnp.pad(y, ((0, pad), (0, 0))).reshape(k, size, D)
    observed = jnp.pad(observed, ((0, pad), (0, 0)), constant_values=True).reshape(k, size, D)
    weights = jnp.pad(weights, ((0, pad), (0, 0))).reshape(k, size, S)
    means = jnp.pad(means, ((0, pad), (0, 0), (0, 0))).reshape(k, size, S, D)
    cond = jax.vmap(jax.vmap(gaussian_conditional, (0, 0, None, None)), (0, None, 0, 0))  # rows, then states

    def block(args):
        yc, oc, wc, mc = args
        cm, cc = cond(mc, covs, yc, oc)  # (n, S, D), (n, S, D, D)
        return cm, jnp.einsum("ns,nsde->sde", wc, cc)

    yhat, csum = jax.lax.map(block, (y, observed, weights, means))
    return yhat.reshape(k * size, S, D)[:N], csum.sum(0)


class EmissionComponent(Component):
    """Abstract emission component of an HMM."""

    @property
    @abc.abstractmethod
    def emission_shape(self) -> tuple[int, ...]:
        """Shape of one observation."""

    @property
    def data_kind(self) -> str:
        """Value checks at the boundary: ``'real'``, ``'counts'``, ``'binary'`` or ``'categorical'``."""
        return "real"

    @property
    def emission_lags(self) -> int:
        return 0

    @property
    def takes_inputs(self) -> bool:
        """Whether :meth:`distribution` reads exogenous inputs (the HMM's :attr:`pssm.SSM.takes_inputs`)."""
        return False

    @property
    def missing_entries(self) -> bool:
        """Whether :meth:`observed_log_likelihoods` and :meth:`m_step` use the observed entries of a partly
        missing step (``data.observed``); ``False`` (default) drops such a step whole."""
        return False

    def features(self, past: Array, inputs: PyTree = None) -> PyTree:
        """Per-step model inputs from the past ``emission_lags`` emissions (see :func:`pssm.model_inputs`)."""
        return inputs

    @abc.abstractmethod
    def distribution(self, params: PyTree, state: Array, inputs: PyTree = None) -> dist.Distribution:
        """Distribution of :math:`y_t` in state ``state`` given the model inputs of step ``t``."""

    def log_likelihoods(self, params: PyTree, emissions: Array, inputs: PyTree = None) -> Float[Array, "T S"]:
        """``(T, S)`` per-state log-likelihoods of one sequence (default: ``vmap`` of :meth:`distribution`)."""
        S = self.num_states_of(params)
        states = jnp.arange(S)

        def one(y, u):
            return jax.vmap(lambda s: self.distribution(params, s, u).log_prob(y))(states)

        if inputs is None:
            return jax.vmap(lambda y: one(y, None))(emissions)
        return jax.vmap(one)(emissions, inputs)

    def observed_log_likelihoods(
        self, params: PyTree, emissions: Array, observed: Array, inputs: PyTree = None
    ) -> Float[Array, "T S"]:
        """``(T, S)`` log-likelihoods of the observed entries (``observed`` ``(T, *emission_shape)`` bool; the
        values at the other entries are ignored).  Default: :func:`pssm.distributions.observed_log_prob`."""
        S = self.num_states_of(params)
        y = jnp.where(observed, emissions.astype(jnp.result_type(float)), jnp.nan)

        def one(y_t, u):
            return jax.vmap(lambda s: observed_log_prob(self.distribution(params, s, u), y_t))(jnp.arange(S))

        if inputs is None:
            return jax.vmap(lambda y_t: one(y_t, None))(y)
        return jax.vmap(one)(y, inputs)

    @abc.abstractmethod
    def num_states_of(self, params: PyTree) -> int:
        """Number of states the params describe (for shape checks)."""

    @abc.abstractmethod
    def initialize(self, key: PRNGKeyArray, num_states: int, data: Sequences) -> PyTree:
        """Data-driven starting params (``data.inputs`` holds the model inputs)."""

    def m_step_init(self, params: PyTree) -> PyTree:
        """State carried across M-steps (optimiser state); ``None`` for closed-form components."""
        return None

    @property
    def stochastic_m_steps(self) -> int:
        """Number of leading EM iterations whose M-step is stochastic (a sampled objective): EM's convergence test
        starts after them.  0 for deterministic M-steps."""
        return 0

    @abc.abstractmethod
    def m_step(
        self, params: PyTree, data: Sequences, weights: Float[Array, "B T S"], state: PyTree, key: PRNGKeyArray
    ) -> tuple[PyTree, PyTree]:
        """Weighted MAP update; ``weights`` are the posterior state probabilities (0 at masked steps)."""


def _kmeans_start(component, key, num_states, data):
    """Closed-form M-step on k-means responsibilities of the observed rows (shared by the closed-form families)."""
    w = initial_responsibilities(key, data, num_states)
    params, _ = eqx.filter_jit(component.m_step)(None, data, w, None, key)
    return params


# --------------------------------------------------------------------------------------------- Poisson
class PoissonParams(NamedTuple):
    rates: Float[Array, "S D"]

    __repr__ = short_repr


class PoissonEmissions(EmissionComponent):
    """Independent Poisson counts, rates :math:`\\lambda_{s,d} \\sim \\mathrm{Gamma}(a, b)` (shape, rate)."""

    emission_dim: int
    rate_prior_shape: float = 1.0
    rate_prior_rate: float = 1e-3

    def __check_init__(self):
        check_positive_int(self.emission_dim, "emission_dim")
        check_real(self.rate_prior_shape, "rate_prior_shape", low=0.0, fix="The Gamma prior's shape a must be > 0.")
        check_real(self.rate_prior_rate, "rate_prior_rate", low=0.0, fix="The Gamma prior's rate b must be > 0.")

    @property
    def emission_shape(self):
        return (self.emission_dim,)

    @property
    def data_kind(self):
        return "counts"

    def num_states_of(self, params):
        return params.rates.shape[0]

    def param_spec(self, num_states):
        shape = (num_states, self.emission_dim)
        prior = dist.Gamma(jnp.full(shape, float(self.rate_prior_shape)), float(self.rate_prior_rate)).to_event(2)
        return PoissonParams(ParamSpec(constraints.positive, prior))

    def distribution(self, params, state, inputs=None):
        return dist.Poisson(params.rates[state]).to_event(1)

    @property
    def missing_entries(self):
        return True

    def log_likelihoods(self, params, emissions, inputs=None):
        y = emissions.astype(params.rates.dtype)
        lr = jnp.log(params.rates)
        return y @ lr.T - params.rates.sum(-1)[None] - gammaln(y + 1.0).sum(-1, keepdims=True)

    def observed_log_likelihoods(self, params, emissions, observed, inputs=None):
        o = observed.astype(params.rates.dtype)
        y = emissions.astype(params.rates.dtype) * o
        lr = jnp.log(params.rates)
        return y @ lr.T - o @ params.rates.T - (gammaln(y + 1.0) * o).sum(-1, keepdims=True)

    def initialize(self, key, num_states, data):
        return _kmeans_start(self, key, num_states, data)

    def m_step(self, params, data, weights, state, key):
        y, w = flat_observed(data, weights)
        o = flat_entries(data, w.dtype)
        y = y.astype(w.dtype)
        if o is None:
            num, den = w.T @ y, w.sum(0)[:, None]
        else:  # per entry: sum_t w_ts o_td y_td / sum_t w_ts o_td
            num, den = w.T @ (o * y), w.T @ o
        num = num + (self.rate_prior_shape - 1.0)
        den = den + self.rate_prior_rate
        return PoissonParams(jnp.maximum(num / den, jnp.finfo(w.dtype).tiny)), state


# --------------------------------------------------------------------------------------------- Gaussian
class GaussianParams(NamedTuple):
    """``means (S, D)``; ``covs`` ``(S, D, D)`` (full), ``(S, D)`` variances (diagonal) or ``(D, D)`` (tied)."""

    means: Float[Array, "S D"]
    covs: Array

    __repr__ = short_repr


def _iw_log_prior(covs, reg, dof, full):
    """Inverse-Wishart :math:`\\log p(\\Sigma) = -\\tfrac{\\nu + D + 1}{2}\\log|\\Sigma| - \\tfrac12
    \\mathrm{tr}(\\Psi\\Sigma^{-1})` (up to a constant) with :math:`\\Psi = \\epsilon I`; diagonal: per entry."""
    if full:
        D = covs.shape[-1]
        _, logdet = jnp.linalg.slogdet(covs)
        tr = jnp.trace(jnp.linalg.inv(covs), axis1=-2, axis2=-1)
        return jnp.sum(-0.5 * (dof + D + 1.0) * logdet - 0.5 * reg * tr)
    return jnp.sum(-0.5 * (dof + 2.0) * jnp.log(covs) - 0.5 * reg / covs)


class GaussianEmissions(EmissionComponent):
    """Gaussian emissions with ``covariance`` ``"full"`` (one per state), ``"diagonal"`` or ``"tied"`` (one full
    covariance shared by all states).  Prior: flat means, inverse-Wishart covariances (see the module notes)."""

    emission_dim: int
    covariance: Literal["full", "diagonal", "tied"] = "full"
    covariance_reg: float = 1e-4
    covariance_dof: float | None = None

    def __check_init__(self):
        check_positive_int(self.emission_dim, "emission_dim")
        if self.covariance not in ("full", "diagonal", "tied"):
            raise ValueError(f"covariance must be 'full', 'diagonal' or 'tied'; got {self.covariance!r}.")
        if not float(self.covariance_reg) > 0:
            raise ValueError(f"covariance_reg must be > 0; got {self.covariance_reg}.")

    @property
    def emission_shape(self):
        return (self.emission_dim,)

    @property
    def _dof(self) -> float:
        D = self.emission_dim if self.covariance != "diagonal" else 1
        return -(D + 1.0) if self.covariance_dof is None else float(self.covariance_dof)

    def num_states_of(self, params):
        return params.means.shape[0]

    def param_spec(self, num_states):
        cons = constraints.positive if self.covariance == "diagonal" else constraints.positive_definite
        S, D = num_states, self.emission_dim
        cov_shape = {"full": (S, D, D), "diagonal": (S, D), "tied": (D, D)}[self.covariance]
        return GaussianParams(ParamSpec(constraints.real, shape=(S, D)), ParamSpec(cons, shape=cov_shape))

    def log_prior(self, params, num_states):
        return _iw_log_prior(params.covs, self.covariance_reg, self._dof, self.covariance != "diagonal")

    def _cov(self, params, state):
        if self.covariance == "tied":
            return params.covs
        if self.covariance == "diagonal":
            return jnp.diag(params.covs[state])
        return params.covs[state]

    @property
    def missing_entries(self):
        """True: the observed entries' marginal likelihood; the full and tied M-steps use the missing entries'
        conditional moments (EM over them), the diagonal one the observed entries alone."""
        return True

    def observed_log_likelihoods(self, params, emissions, observed, inputs=None):
        if self.covariance != "diagonal":
            return super().observed_log_likelihoods(params, emissions, observed, inputs)
        o = observed.astype(params.means.dtype)[:, None, :]
        c = emissions.astype(params.means.dtype)[:, None, :] - params.means[None]
        v = params.covs[None]
        return -0.5 * jnp.sum(o * (c**2 / v + jnp.log(2 * jnp.pi * v)), -1)

    def distribution(self, params, state, inputs=None):
        if self.covariance == "diagonal":
            return dist.Normal(params.means[state], jnp.sqrt(params.covs[state])).to_event(1)
        return dist.MultivariateNormal(params.means[state], self._cov(params, state))

    def log_likelihoods(self, params, emissions, inputs=None):
        y = emissions.astype(params.means.dtype)
        D = self.emission_dim
        c = y[:, None, :] - params.means[None]  # (T, S, D)
        if self.covariance == "diagonal":
            v = params.covs[None]
            return -0.5 * jnp.sum(c**2 / v + jnp.log(2 * jnp.pi * v), -1)
        covs = params.covs if self.covariance == "full" else params.covs[None]
        L = jnp.linalg.cholesky(covs)  # (S or 1, D, D)
        L = jnp.broadcast_to(L, (params.means.shape[0], D, D))
        z = jax.vmap(lambda l, cs: jax.scipy.linalg.solve_triangular(l, cs.T, lower=True).T, (0, 1), 1)(L, c)
        half_logdet = jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)).sum(-1)
        return -0.5 * jnp.sum(z**2, -1) - half_logdet[None] - 0.5 * D * jnp.log(2 * jnp.pi)

    def initialize(self, key, num_states, data):
        return _kmeans_start(self, key, num_states, data)

    def m_step(self, params, data, weights, state, key):
        y, w = flat_observed(data, weights)
        y = y.astype(w.dtype)
        D, reg, dof = self.emission_dim, self.covariance_reg, self._dof
        o = flat_entries(data, w.dtype)
        if o is not None and self.covariance == "diagonal":  # per entry: weights w_ts o_td
            means, n, scatter = _entrywise_moments(y, o, w)
            return GaussianParams(means, (scatter + reg) / (n + dof + 2.0)), state
        if o is not None:  # full / tied: EM over the missing entries too (their moments given the observed ones)
            return self._completed_m_step(params, y, o, w), state
        n = w.sum(0)
        nsafe = jnp.maximum(n, jnp.finfo(w.dtype).tiny)
        means = (w.T @ y) / nsafe[:, None]
        c = y[None] - means[:, None]  # (S, N, D)
        if self.covariance == "diagonal":
            scatter = jnp.einsum("ns,snd->sd", w, c**2)
            covs = (scatter + reg) / (n[:, None] + dof + 2.0)
        else:
            scatter = jnp.einsum("ns,snd,sne->sde", w, c, c)
            if self.covariance == "tied":
                scatter, n = scatter.sum(0), n.sum()
            covs = (scatter + reg * jnp.eye(D, dtype=w.dtype)) / (n + dof + D + 1.0)[..., None, None]
        return GaussianParams(means, covs), state

    def _completed_m_step(self, params, y, o, w):
        """:math:`\\mu_s = \\sum_n w_{ns} \\hat y_{ns} / n_s`, :math:`\\Sigma_s \\propto \\sum_n w_{ns}
        [(\\hat y_{ns} - \\mu_s)(\\hat y_{ns} - \\mu_s)^\\top + C_{ns}] + \\epsilon I` with the conditional moments
        under the current params (:func:`completed_moments`); without params (the k-means start) under the
        per-entry moments, a diagonal start."""
        S, D, reg, dof = w.shape[1], self.emission_dim, self.covariance_reg, self._dof
        if params is None:
            m0, var = entrywise_start(y, o, w, reg)
            params = GaussianParams(m0, jax.vmap(jnp.diag)(var) if self.covariance == "full" else jnp.diag(var.mean(0)))
        covs = params.covs if self.covariance == "full" else jnp.broadcast_to(params.covs, (S, D, D))
        means_n = jnp.broadcast_to(params.means, (y.shape[0], S, D))
        yhat, csum = completed_moments(y, o > 0, w, means_n, covs)
        n = w.sum(0)
        means = jnp.einsum("ns,nsd->sd", w, yhat) / jnp.maximum(n, jnp.finfo(w.dtype).tiny)[:, None]
        c = yhat - means[None]
        scatter = jnp.einsum("ns,nsd,nse->sde", w, c, c) + csum
        if self.covariance == "tied":
            scatter, n = scatter.sum(0), n.sum()
        covs = (scatter + reg * jnp.eye(D, dtype=w.dtype)) / (n + dof + D + 1.0)[..., None, None]
        return GaussianParams(means, covs)


def entrywise_start(y, o, w, reg):
    """Per-state means and variances ``(S, D)`` over the observed entries (variance ``reg`` where none is seen): the
    diagonal start of EM over missing entries when no params exist yet (the k-means initialisation)."""
    m0, n0, sc0 = _entrywise_moments(y, o, w)
    return m0, (sc0 + reg) / jnp.maximum(n0, 1.0)


def _entrywise_moments(y, o, w):
    """Per-entry weighted means ``(S, D)``, counts ``n_sd = sum_n w_ns o_nd`` and scatters over the observed entries."""
    n = w.T @ o  # (S, D)
    means = (w.T @ (o * y)) / jnp.maximum(n, jnp.finfo(w.dtype).tiny)
    scatter = jnp.einsum("ns,nd,snd->sd", w, o, (y[None] - means[:, None]) ** 2)
    return means, n, scatter


# --------------------------------------------------------------------------------------------- categorical
class CategoricalParams(NamedTuple):
    probs: Float[Array, "S D C"]

    __repr__ = short_repr


class CategoricalEmissions(EmissionComponent):
    """``emission_dim`` independent categorical outputs with ``num_classes`` classes; ``Dir(concentration)``."""

    emission_dim: int
    num_classes: int
    concentration: float = 1.1

    def __check_init__(self):
        check_positive_int(self.emission_dim, "emission_dim")
        check_positive_int(self.num_classes, "num_classes", minimum=2)
        check_real(self.concentration, "concentration", low=0.0, fix="A Dirichlet concentration must be > 0.")

    @property
    def emission_shape(self):
        return (self.emission_dim,)

    @property
    def data_kind(self):
        return "categorical"

    def num_states_of(self, params):
        return params.probs.shape[0]

    def param_spec(self, num_states):
        shape = (num_states, self.emission_dim, self.num_classes)
        prior = Dirichlet(jnp.full(shape, float(self.concentration))).to_event(2)
        return CategoricalParams(ParamSpec(constraints.simplex, prior))

    def distribution(self, params, state, inputs=None):
        return dist.Categorical(probs=params.probs[state]).to_event(1)

    @property
    def missing_entries(self):
        return True

    def log_likelihoods(self, params, emissions, inputs=None):
        y = jnp.asarray(emissions, jnp.int32)  # (T, D); a class of probability 0 gives -inf (impossible)
        logp = jnp.log(params.probs)[:, jnp.arange(self.emission_dim)[None, :], y]  # (S, T, D)
        return logp.sum(-1).T

    def observed_log_likelihoods(self, params, emissions, observed, inputs=None):
        y = jnp.asarray(emissions, jnp.int32)
        logp = jnp.log(params.probs)[:, jnp.arange(self.emission_dim)[None, :], y]  # (S, T, D)
        return jnp.where(observed[None], logp, 0.0).sum(-1).T

    def initialize(self, key, num_states, data):
        w = jax.random.dirichlet(key, jnp.ones(num_states), data.mask.shape)
        params, _ = eqx.filter_jit(self.m_step)(None, data, w, None, key)
        return params

    def m_step(self, params, data, weights, state, key):
        y, w = flat_observed(data, weights)
        onehot = jax.nn.one_hot(y, self.num_classes, dtype=w.dtype)  # (N, D, C)
        o = flat_entries(data, w.dtype)
        onehot = onehot if o is None else onehot * o[..., None]
        counts = jnp.maximum(jnp.einsum("ns,ndc->sdc", w, onehot) + (self.concentration - 1.0), 0.0)
        total = counts.sum(-1, keepdims=True)
        return CategoricalParams(counts / jnp.maximum(total, jnp.finfo(w.dtype).tiny)), state
