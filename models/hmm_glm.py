"""Switching HMM-GLMs: hidden states select the coupling of a population GLM (Li et al., ICLR 2024).

.. math::

    z_0 \\sim \\mathrm{Cat}(\\pi),\\qquad z_t \\mid z_{t-1} \\sim \\mathrm{Cat}(A_{z_{t-1},:}),\\qquad
    \\eta_{t,n} = b_{z_t,n} + \\sum_{n',k} W_{z_t,n,(n',k)}\\, h_{t,n',k} + \\sum_d U_{z_t,n,d}\\, u_{t,d},

with history features :math:`h_{t,n',k} = \\sum_{l=1}^{L} \\phi_{l,k}\\, y_{t-l,n'}` (spikes convolved with a fixed
basis, computed once by :func:`history_features`) and observations
:math:`y_{t,n} \\sim \\mathrm{Poisson}(f(\\eta_{t,n}))` (``f`` = softplus, exp or ``rate_scale``·sigmoid) or
:math:`\\mathrm{Bernoulli}(\\sigma(\\eta_{t,n}))`.

Priors on the coupling (``coupling_prior``):

* ``"none"`` (HG): free :math:`W_s`;
* ``"l1"``: :math:`\\log p(W) = -\\lambda \\sum |W|` (up to a constant);
* ``"gaussian"`` (GHG): :math:`W_s \\sim \\mathcal N(W_0, \\sigma^2)` with a learned shared mean :math:`W_0`;
* ``"onehot"`` (OHG): :math:`W_{s,n,(n',k)} = (a_{s,n,n'}^{exc} - a_{s,n,n'}^{inh})\\,\\tilde w_{s,n,(n',k)}` with
  :math:`\\tilde w = \\mathrm{softplus}(\\text{strength}) > 0` and an adjacency :math:`a_{s,n,n'}` on the simplex over
  (inh, none, exc), :math:`a_s = \\mathrm{softmax}(\\text{adjacency\\_logits}_s)`, with the Concrete
  (Gumbel-softmax) prior :math:`a_{s,n,n'} \\sim \\mathrm{Concrete}(A_0{}_{n,n'}, \\tau)` around a learned shared
  :math:`A_0 = \\mathrm{softmax}(\\text{prior\\_logits})`; :func:`hard_adjacency` gives the argmax adjacency used for
  evaluation.

A one-state GLM is ``num_states=1``.  The model follows the :class:`pssm.SSM` protocol: the emission receives the
precomputed features of one step as ``inputs = GLMInputs(history, covariates)``, so
:func:`pssm.protocol.discrete_log_potentials` and the forward-backward routines work unchanged; the vectorised
:meth:`HMMGLM.log_likelihoods` is the fast path used by the fitting routines (and checked against the protocol in
the tests).  Emissions depend on past emissions, so simulate with :func:`simulate_hmm_glm` (autoregressive).
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import gammaln, logsumexp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray
from numpyro.distributions import constraints

from pssm.protocol import SSM

__all__ = [
    "HMMGLM",
    "HMMGLMParams",
    "GLMParams",
    "GLMInputs",
    "SyntheticHMMGLM",
    "EXPONENTIAL_BASIS",
    "exponential_basis",
    "raised_cosine_basis",
    "history_features",
    "concrete_log_prob",
    "Concrete",
    "hard_adjacency",
    "hard_adjacency_params",
    "simulate_hmm_glm",
    "synthetic_hmm_glm",
]

EXPONENTIAL_BASIS = (0.636, 0.234, 0.086, 0.032, 0.012)
"""The paper's fixed history filter: weights of lags 1..5 (an exponential decay, sums to 1)."""

ADJ_CLASSES = ("inh", "none", "exc")


# --------------------------------------------------------------------------------------------- bases and features
def exponential_basis() -> np.ndarray:
    """The paper's exponential history filter as a ``(5, 1)`` basis (lags 1..5 along the rows)."""
    return np.asarray(EXPONENTIAL_BASIS, dtype=np.float32)[:, None]


def raised_cosine_basis(num_basis: int, max_lag: int, offset: float = 1.0) -> np.ndarray:
    """Log-stretched raised-cosine basis (Pillow et al. 2008), shape ``(max_lag, num_basis)``, rows = lags 1..L.

    :math:`\\phi_j(l) = \\tfrac12\\,(1 + \\cos(\\mathrm{clip}(\\alpha\\log(l + c) - \\mu_j, -\\pi, \\pi)))` with centres
    :math:`\\mu_j` evenly spaced on the stretched axis between lag 1 and ``max_lag``; columns are scaled to unit sum.
    """
    if num_basis < 1 or max_lag < 1:
        raise ValueError(f"num_basis and max_lag must be >= 1; got {num_basis}, {max_lag}.")
    if offset <= 0:
        raise ValueError(f"offset must be > 0; got {offset}.")
    lags = np.arange(1, max_lag + 1, dtype=float)
    stretched = np.log(lags + offset)
    lo, hi = stretched[0], stretched[-1]
    if num_basis == 1:
        centres, width = np.array([lo]), max(hi - lo, 1e-6) * 2
    else:
        centres = np.linspace(lo, hi, num_basis)
        width = (hi - lo) / (num_basis - 1) * 2  # neighbouring bumps overlap by half
    arg = np.clip((stretched[:, None] - centres[None, :]) * np.pi / width, -np.pi, np.pi)
    B = 0.5 * (1.0 + np.cos(arg))
    B = B / np.maximum(B.sum(0, keepdims=True), 1e-12)
    return B.astype(np.float32)


def _as_basis(basis: Any) -> np.ndarray | None:
    if basis is None or (isinstance(basis, str) and basis == "none"):
        return None
    if isinstance(basis, str):
        if basis == "exponential":
            return exponential_basis()
        raise ValueError(f"basis must be 'exponential', 'none', None or an array (L,) / (L, K); got '{basis}'.")
    b = np.asarray(basis, dtype=np.float32)
    if b.ndim == 1:
        b = b[:, None]
    if b.ndim != 2 or b.shape[0] < 1 or b.shape[1] < 1:
        raise ValueError(f"basis must have shape (L,) or (L, K) with L, K >= 1; got {np.shape(basis)}.")
    if not np.all(np.isfinite(b)):
        raise ValueError("basis contains NaN or inf.")
    return b


def history_features(
    spikes: ArrayLike,
    basis: ArrayLike,
    lengths: ArrayLike | None = None,
    trial_ids: ArrayLike | None = None,
) -> Float[Array, "... T NK"]:
    """Spike history convolved with a causal basis: ``h[t, n*K + k] = sum_{l=1..L} basis[l-1, k] * y[t-l, n]``.

    ``spikes`` is ``(T, N)`` or a padded batch ``(B, T, N)`` (each row its own trial: nothing leaks between rows;
    steps ``t >= lengths[b]`` get zero features).  ``trial_ids`` ``(T,)`` (single sequence only) marks trials
    concatenated in time: lags that cross a change of id contribute nothing.  ``basis`` is ``(L,)`` or ``(L, K)``.
    Only past bins enter (``h[t]`` never sees ``y[t]``).
    """
    b = _as_basis(basis)
    if b is None:
        raise ValueError("history_features needs a basis array; this model has no spike-history coupling.")
    y = jnp.asarray(spikes)
    if y.ndim not in (2, 3):
        raise ValueError(f"spikes must be (T, N) or (B, T, N); got shape {y.shape}.")
    if y.ndim == 3:
        if trial_ids is not None:
            raise ValueError(
                "trial_ids is for one concatenated (T, N) sequence; a (B, T, N) batch has one trial per row."
            )
        out = jax.vmap(lambda s: history_features(s, b))(y)
        if lengths is not None:
            lengths = jnp.asarray(lengths)
            valid = jnp.arange(y.shape[1])[None, :] < lengths[:, None]
            out = out * valid[..., None]
        return out
    T, N = y.shape
    L, K = b.shape
    dtype = jnp.result_type(y.dtype, jnp.float32) if not jnp.issubdtype(y.dtype, jnp.floating) else y.dtype
    y = y.astype(dtype)
    phi = jnp.asarray(b, dtype)
    ids = None if trial_ids is None else jnp.asarray(trial_ids)
    if ids is not None and ids.shape != (T,):
        raise ValueError(f"trial_ids must have shape ({T},) to match spikes; got {ids.shape}.")
    h = jnp.zeros((T, N, K), dtype)
    for lag in range(1, min(L, T - 1) + 1):
        shifted = jnp.concatenate([jnp.zeros((lag, N), dtype), y[: T - lag]], axis=0)  # y[t - lag]
        if ids is not None:
            same = jnp.concatenate([jnp.zeros((lag,), bool), ids[lag:] == ids[: T - lag]])
            shifted = shifted * same[:, None]
        h = h + shifted[:, :, None] * phi[lag - 1][None, None, :]
    out = h.reshape(T, N * K)
    if lengths is not None:
        out = out * (jnp.arange(T) < jnp.asarray(lengths))[:, None]
    return out


# --------------------------------------------------------------------------------------------- Concrete density
def concrete_log_prob(
    log_a: Float[Array, "... K"], log_probs: Float[Array, "... K"], temperature: float | Array
) -> Float[Array, "..."]:
    """Log density of the Concrete / Gumbel-softmax distribution at ``a = exp(log_a)`` on the simplex.

    .. math::
        \\log p(a \\mid \\pi, \\tau) = \\log\\Gamma(K) + (K-1)\\log\\tau - K \\log\\sum_k \\pi_k a_k^{-\\tau}
        + \\sum_k (\\log\\pi_k - (\\tau + 1)\\log a_k),

    a density with respect to Lebesgue measure on the first ``K-1`` coordinates.  Taking ``log_a`` (e.g. a
    ``log_softmax``) keeps it finite near the vertices; ``log_probs`` need not be normalised.
    """
    K = log_a.shape[-1]
    log_pi = log_probs - logsumexp(log_probs, axis=-1, keepdims=True)
    tau = jnp.asarray(temperature, log_a.dtype)
    return (
        gammaln(jnp.asarray(K, log_a.dtype))
        + (K - 1) * jnp.log(tau)
        - K * logsumexp(log_pi - tau * log_a, axis=-1)
        + jnp.sum(log_pi - (tau + 1.0) * log_a, axis=-1)
    )


class Concrete(dist.Distribution):
    """Concrete / relaxed one-hot categorical distribution (Maddison et al. 2017; Jang et al. 2017).

    Reparameterised draws ``softmax((logits + Gumbel) / temperature)``; ``log_prob`` is :func:`concrete_log_prob`.
    (NumPyro has no ``RelaxedOneHotCategorical``; for ``K = 2`` this equals ``RelaxedBernoulliLogits`` on the
    last coordinate.)
    """

    arg_constraints = {"logits": constraints.real_vector, "temperature": constraints.positive}
    support = constraints.simplex
    reparametrized_params = ["logits", "temperature"]

    def __init__(self, temperature, logits, *, validate_args=None):
        self.logits = jnp.asarray(logits)
        self.temperature = jnp.asarray(temperature, self.logits.dtype)
        batch_shape = jnp.shape(self.logits)[:-1]
        event_shape = jnp.shape(self.logits)[-1:]
        super().__init__(batch_shape=batch_shape, event_shape=event_shape, validate_args=validate_args)

    def rsample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape + self.event_shape
        g = jax.random.gumbel(key, shape, self.logits.dtype)
        return jax.nn.softmax((self.logits + g) / self.temperature, axis=-1)

    def sample(self, key, sample_shape=()):
        return self.rsample(key, sample_shape)

    def log_prob(self, value):
        tiny = jnp.finfo(jnp.result_type(value)).tiny
        return concrete_log_prob(jnp.log(jnp.maximum(value, tiny)), self.logits, self.temperature)


# --------------------------------------------------------------------------------------------- params and inputs
class GLMInputs(NamedTuple):
    """Per-step inputs of the emission: history features ``(..., N*K)`` and external covariates ``(..., D)``."""

    history: Array | None = None
    covariates: Array | None = None


class GLMParams(NamedTuple):
    """Emission (GLM) parameters; fields a model does not use are ``None``.  All leaves are unconstrained.

    * ``bias``: ``(N,)`` when shared across states, else ``(S, N)``;
    * ``weights``: coupling ``(S, N, N*K)`` (priors ``none``/``l1``/``gaussian``); row ``n`` = postsynaptic neuron,
      column ``n'*K + k`` = presynaptic neuron ``n'``, basis function ``k``;
    * ``weights_mean``: ``W0`` ``(N, N*K)`` (``gaussian``);
    * ``strength``: ``(S, N, N*K)``, positive strengths ``softplus(strength)`` (``onehot``);
    * ``adjacency_logits``: ``(S, N, N, 3)`` over (inh, none, exc) (``onehot``);
    * ``prior_logits``: ``A0`` logits ``(N, N, 3)`` (``onehot``);
    * ``input_weights``: ``(S, N, D)`` per-state covariate weights (``num_covariates > 0``).
    """

    bias: Array
    weights: Array | None = None
    weights_mean: Array | None = None
    strength: Array | None = None
    adjacency_logits: Array | None = None
    prior_logits: Array | None = None
    input_weights: Array | None = None


class HMMGLMParams(NamedTuple):
    initial_probs: Float[Array, " S"]
    transition_matrix: Float[Array, "S S"]
    emissions: GLMParams


_POISSON_LINKS = ("softplus", "exp", "sigmoid")


def _check_choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {options}; got {value!r}.")


def _log_softplus(x):
    """log(softplus(x)), accurate for very negative x (where softplus(x) ~ exp(x))."""
    sp = jax.nn.softplus(x)
    return jnp.where(x < -15.0, x, jnp.log(jnp.where(x < -15.0, 1.0, sp)))


# --------------------------------------------------------------------------------------------- the model
class HMMGLM(SSM):
    """Switching population GLM with ``num_states`` hidden states (``num_states=1``: a plain GLM).

    Fixed settings: ``num_neurons`` outputs ``N``; ``basis`` (``'exponential'`` = the paper's K=5 filter, an array
    ``(L,)``/``(L, K)`` such as :func:`raised_cosine_basis`, or ``None`` for no spike-history coupling, e.g. a
    Bernoulli GLM-HMM on external covariates only); ``num_covariates`` ``D`` external inputs with per-state
    weights; ``observation`` ``'poisson'`` (``link`` softplus / exp / sigmoid, the last scaled by ``rate_scale``)
    or ``'bernoulli'`` (logistic link); ``shared_bias``; ``self_coupling=False`` fixes ``W[s, n, (n, k)] = 0``;
    ``coupling_prior`` and its hyper-parameters (``l1_penalty``, ``prior_scale`` = Gaussian σ, ``temperature`` =
    Concrete τ); a sticky Dirichlet transition prior :math:`A_{i,:} \\sim \\mathrm{Dir}(\\alpha\\mathbf 1 +
    \\kappa e_i)` (``transition_concentration`` α, ``stickiness`` κ); ``param_scale`` is the σ of the broad
    Normal priors that NUTS/SVI put on unconstrained leaves (bias, weights, strengths, logits).
    """

    discrete_states = True
    num_states: int
    num_neurons: int
    basis: np.ndarray | None = eqx.field(default="exponential", converter=_as_basis)
    num_covariates: int = 0
    observation: Literal["poisson", "bernoulli"] = "poisson"
    link: Literal["softplus", "exp", "sigmoid", "logistic"] = "softplus"
    rate_scale: float = 1.0
    shared_bias: bool = True
    self_coupling: bool = True
    coupling_prior: Literal["none", "l1", "gaussian", "onehot"] = "none"
    l1_penalty: float = 0.0
    prior_scale: float = 0.5
    temperature: float = 0.2
    transition_concentration: float = 1.0
    stickiness: float = 0.0
    param_scale: float = 5.0

    def __check_init__(self):
        if int(self.num_states) < 1 or int(self.num_neurons) < 1:
            raise ValueError(f"num_states and num_neurons must be >= 1; got {self.num_states}, {self.num_neurons}.")
        if int(self.num_covariates) < 0:
            raise ValueError(f"num_covariates must be >= 0; got {self.num_covariates}.")
        _check_choice("observation", self.observation, ("poisson", "bernoulli"))
        _check_choice("coupling_prior", self.coupling_prior, ("none", "l1", "gaussian", "onehot"))
        if self.observation == "poisson":
            _check_choice("link (Poisson observations)", self.link, _POISSON_LINKS)
        else:
            _check_choice("link (Bernoulli observations)", self.link, ("logistic",))
        if self.basis is None and self.coupling_prior != "none":
            raise ValueError(
                f"coupling_prior={self.coupling_prior!r} needs spike-history coupling; "
                "give a basis (e.g. 'exponential')."
            )
        for name in ("rate_scale", "prior_scale", "temperature", "transition_concentration", "param_scale"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}.")
        if self.l1_penalty < 0 or self.stickiness < 0:
            raise ValueError("l1_penalty and stickiness must be >= 0.")

    # ---------------------------------------------------------------- sizes
    @property
    def num_basis(self) -> int:
        """Number of basis functions ``K`` (0 without spike-history coupling)."""
        return 0 if self.basis is None else int(self.basis.shape[1])

    @property
    def num_lags(self) -> int:
        return 0 if self.basis is None else int(self.basis.shape[0])

    @property
    def has_coupling(self) -> bool:
        return self.basis is not None

    # ---------------------------------------------------------------- features
    def features(
        self,
        spikes: ArrayLike,
        covariates: ArrayLike | None = None,
        lengths: ArrayLike | None = None,
        trial_ids: ArrayLike | None = None,
    ) -> GLMInputs:
        """Compute the inputs once: history features (if coupled) and covariates, matching ``spikes``' layout."""
        hist = history_features(spikes, self.basis, lengths, trial_ids) if self.has_coupling else None
        cov = None
        if self.num_covariates:
            if covariates is None:
                raise ValueError(f"this model has num_covariates={self.num_covariates}; pass covariates (..., T, D).")
            cov = jnp.asarray(covariates)
        elif covariates is not None:
            raise ValueError("covariates were given but the model has num_covariates=0; set num_covariates=D.")
        return GLMInputs(hist, cov)

    # ---------------------------------------------------------------- coupling
    def _diag_mask(self, dtype) -> Array:
        N, K = self.num_neurons, self.num_basis
        eye = jnp.eye(N, dtype=dtype)
        return jnp.repeat(1.0 - eye, K, axis=1)  # (N, N*K), zero on (n, n*K + k)

    def adjacency_probs(self, eparams: GLMParams) -> Float[Array, "S N N 3"]:
        """Soft adjacency ``softmax(adjacency_logits)`` over (inh, none, exc) (one-hot prior only)."""
        self._need_onehot("adjacency_probs")
        return jax.nn.softmax(eparams.adjacency_logits, axis=-1)

    def adjacency_prior_probs(self, eparams: GLMParams) -> Float[Array, "N N 3"]:
        """The learned shared prior ``A0 = softmax(prior_logits)`` (one-hot prior only)."""
        self._need_onehot("adjacency_prior_probs")
        return jax.nn.softmax(eparams.prior_logits, axis=-1)

    def _need_onehot(self, what):
        if self.coupling_prior != "onehot":
            raise ValueError(f"{what} needs coupling_prior='onehot'; this model has {self.coupling_prior!r}.")

    def coupling_weights(self, eparams: GLMParams, adjacency: Array | None = None) -> Float[Array, "S N NK"]:
        """Effective coupling ``W`` ``(S, N, N*K)``; for the one-hot prior ``(a_exc - a_inh) * softplus(strength)``
        with ``adjacency`` ``(S, N, N, 3)`` (default: the soft adjacency ``softmax(adjacency_logits)``)."""
        if not self.has_coupling:
            raise ValueError("this model has no spike-history coupling (basis=None).")
        S, N, K = self.num_states, self.num_neurons, self.num_basis
        if self.coupling_prior == "onehot":
            a = jax.nn.softmax(eparams.adjacency_logits, axis=-1) if adjacency is None else adjacency
            sign = a[..., 2] - a[..., 0]  # (S, N, N)
            w = jnp.repeat(sign, K, axis=-1) * jax.nn.softplus(eparams.strength)
        else:
            w = eparams.weights
        if not self.self_coupling:
            w = w * self._diag_mask(w.dtype)
        return w.reshape(S, N, N * K)

    def edge_weights(self, eparams: GLMParams, adjacency: Array | None = None) -> Float[Array, "S N N"]:
        """Coupling per edge ``(S, N, N)``: ``sum_k W[s, n, (n', k)] * sum_l basis[l, k]`` (= ``W`` when K=1 and
        the basis sums to one, as the paper's)."""
        S, N, K = self.num_states, self.num_neurons, self.num_basis
        W = self.coupling_weights(eparams, adjacency).reshape(S, N, N, K)
        return jnp.einsum("smnk,k->smn", W, jnp.asarray(self.basis.sum(0), W.dtype))

    # ---------------------------------------------------------------- the GLM
    def predictor(
        self, eparams: GLMParams, inputs: GLMInputs, coupling: Array | None = None
    ) -> Float[Array, "... S N"]:
        """Linear predictor :math:`\\eta` for every state: inputs with leading shape ``(...)`` -> ``(..., S, N)``."""
        S, N = self.num_states, self.num_neurons
        bias = eparams.bias if eparams.bias.ndim == 2 else jnp.broadcast_to(eparams.bias, (S, N))
        eta = bias
        if self.has_coupling:
            W = self.coupling_weights(eparams) if coupling is None else coupling
            eta = eta + jnp.einsum("...p,snp->...sn", inputs.history, W)
        if self.num_covariates:
            eta = eta + jnp.einsum("...d,snd->...sn", inputs.covariates, eparams.input_weights)
        return eta

    def mean(self, eta: Array) -> Array:
        """Inverse link: rate (Poisson) or spike probability (Bernoulli)."""
        if self.observation == "bernoulli":
            return jax.nn.sigmoid(eta)
        if self.link == "softplus":
            return jax.nn.softplus(eta)
        if self.link == "exp":
            return jnp.exp(eta)
        return self.rate_scale * jax.nn.sigmoid(eta)

    def log_pmf(self, y: Array, eta: Array) -> Array:
        """Elementwise :math:`\\log p(y \\mid \\eta)` (stable in :math:`\\eta`)."""
        if self.observation == "bernoulli":
            return y * eta - jax.nn.softplus(eta)
        if self.link == "softplus":
            log_rate, rate = _log_softplus(eta), jax.nn.softplus(eta)
        elif self.link == "exp":
            log_rate, rate = eta, jnp.exp(eta)
        else:
            log_rate = math.log(self.rate_scale) + jax.nn.log_sigmoid(eta)
            rate = self.rate_scale * jax.nn.sigmoid(eta)
        return y * log_rate - rate - gammaln(y + 1.0)

    def log_likelihoods(
        self, params: HMMGLMParams | GLMParams, spikes: Array, inputs: GLMInputs, coupling: Array | None = None
    ) -> Float[Array, "... S"]:
        """:math:`\\log p(y_t \\mid z_t = s)` for all steps and states, ``spikes (..., N)`` -> ``(..., S)``."""
        eparams = params.emissions if isinstance(params, HMMGLMParams) else params
        eta = self.predictor(eparams, inputs, coupling)
        return self.log_pmf(spikes[..., None, :].astype(eta.dtype), eta).sum(-1)

    # ---------------------------------------------------------------- protocol
    def initial(self, params: HMMGLMParams, inputs=None):
        return dist.Categorical(probs=params.initial_probs)

    def transition(self, params: HMMGLMParams, state, t, inputs=None):
        return dist.Categorical(probs=params.transition_matrix[state])

    def emission(self, params: HMMGLMParams, state, t, inputs: GLMInputs | None = None):
        if inputs is None:
            inputs = GLMInputs()
        eta = self.predictor(params.emissions, inputs)[state]
        if self.observation == "bernoulli":
            return dist.Bernoulli(logits=eta).to_event(1)
        return dist.Poisson(self.mean(eta)).to_event(1)

    def param_constraints(self) -> HMMGLMParams:
        em = GLMParams(*[None if v is None else constraints.real for v in self._template()])
        return HMMGLMParams(constraints.simplex, constraints.simplex, em)

    def _template(self) -> GLMParams:
        """Which emission fields exist (``True``) for this configuration."""
        c = self.has_coupling
        oh = self.coupling_prior == "onehot"
        return GLMParams(
            True,
            True if c and not oh else None,
            True if self.coupling_prior == "gaussian" else None,
            True if oh else None,
            True if oh else None,
            True if oh else None,
            True if self.num_covariates else None,
        )

    def param_shapes(self) -> GLMParams:
        """Shapes of the emission params (``None`` for unused fields)."""
        S, N, K, D = self.num_states, self.num_neurons, self.num_basis, self.num_covariates
        full = GLMParams(
            (N,) if self.shared_bias else (S, N), (S, N, N * K), (N, N * K), (S, N, N * K), (S, N, N, 3),
            (N, N, 3), (S, N, D),
        )
        return GLMParams(*[None if t is None else s for t, s in zip(self._template(), full, strict=True)])

    def transition_prior_concentration(self) -> Float[Array, "S S"]:
        S = self.num_states
        return self.transition_concentration * jnp.ones((S, S)) + self.stickiness * jnp.eye(S)

    def prior(self) -> HMMGLMParams:
        """Broad NumPyro priors for the generic NumPyro model: Normal(0, ``param_scale``) on unconstrained leaves.

        The structured coupling priors (Gaussian around ``W0``, Concrete around ``A0``) are added as a factor by
        :meth:`coupling_log_prior`; :mod:`pssm.inference.hmm_glm_svi` builds the full NumPyro model.
        """
        S = self.num_states
        em = GLMParams(
            *[None if s is None else dist.Normal(jnp.zeros(s), self.param_scale).to_event(len(s))
              for s in self.param_shapes()]
        )
        trans = dist.Dirichlet(self.transition_prior_concentration()).to_event(1) if S > 1 else None
        init = dist.Dirichlet(jnp.ones(S)) if S > 1 else None
        return HMMGLMParams(init, trans, em)

    def coupling_log_prior(self, eparams: GLMParams, log_floor: float | None = None) -> Float[Array, ""]:
        """Log density of the coupling prior (0 for ``none``).

        ``l1``: :math:`-\\lambda\\sum|W|`; ``gaussian``: :math:`\\sum \\log\\mathcal N(W_s \\mid W_0, \\sigma^2)`;
        ``onehot``: :math:`\\sum_s \\log \\mathrm{Concrete}(a_s \\mid A_0, \\tau)` with ``a_s`` = softmax of the logits.
        The Concrete density is unbounded at the vertices of the simplex, so MAP fitting passes ``log_floor``
        (e.g. -10): :math:`\\log a` is floored there, which stops the logits from diverging.  Entries on the
        diagonal are excluded when ``self_coupling=False``.
        """
        p = self.coupling_prior
        if p == "none":
            return jnp.zeros((), eparams.bias.dtype)
        if p == "l1":
            return -self.l1_penalty * jnp.abs(self.coupling_weights(eparams)).sum()
        if p == "gaussian":
            W = eparams.weights
            lp = dist.Normal(eparams.weights_mean, self.prior_scale).log_prob(W)
            if not self.self_coupling:
                lp = lp * self._diag_mask(W.dtype)
            return lp.sum()
        log_a = jax.nn.log_softmax(eparams.adjacency_logits, axis=-1)
        if log_floor is not None:
            log_a = jnp.maximum(log_a, log_floor)
        lp = concrete_log_prob(log_a, eparams.prior_logits[None], self.temperature)  # (S, N, N)
        if not self.self_coupling:
            lp = lp * (1.0 - jnp.eye(self.num_neurons, dtype=lp.dtype))
        return lp.sum()

    def log_prior(self, params: HMMGLMParams, log_floor: float | None = -10.0) -> Float[Array, ""]:
        """Transition Dirichlet prior + coupling prior (what EM's MAP objective adds to the log-likelihood)."""
        lp = self.coupling_log_prior(params.emissions, log_floor)
        if self.num_states > 1:
            A = jnp.maximum(params.transition_matrix, 1e-30)
            lp = lp + dist.Dirichlet(self.transition_prior_concentration()).log_prob(A).sum()
        return lp

    # ---------------------------------------------------------------- initial params
    def init_params(
        self,
        key: PRNGKeyArray,
        self_transition: float = 0.95,
        weight_scale: float = 0.1,
        bias: ArrayLike | None = None,
        dtype: Any = jnp.float32,
        none_logit: float = 1.0,
    ) -> HMMGLMParams:
        """Random starting params: uniform :math:`\\pi`, sticky :math:`A`, small random weights, bias ``bias``
        (default 0); one-hot adjacency and ``A0`` logits start at ``(0, none_logit, 0)`` (sparse).  Data-driven
        starts are in :func:`pssm.inference.hmm_glm_em.initialize_hmm_glm`."""
        S = self.num_states
        shapes = self.param_shapes()
        keys = jax.random.split(key, 7)

        def rnd(i, s, scale):
            return None if s is None else scale * jax.random.normal(keys[i], s, dtype)

        sparse = jnp.array([0.0, none_logit, 0.0], dtype)  # adjacency starts sparse: P(none) = e^c / (e^c + 2)
        b = jnp.zeros(shapes.bias, dtype)
        if bias is not None:
            b = b + jnp.asarray(bias, dtype)
        em = GLMParams(
            b,
            rnd(1, shapes.weights, weight_scale),
            None if shapes.weights_mean is None else jnp.zeros(shapes.weights_mean, dtype),
            None if shapes.strength is None else jnp.full(shapes.strength, -1.0, dtype) + rnd(3, shapes.strength, 0.1),
            None if shapes.adjacency_logits is None else sparse + rnd(4, shapes.adjacency_logits, weight_scale),
            None if shapes.prior_logits is None else jnp.broadcast_to(sparse, shapes.prior_logits),
            rnd(6, shapes.input_weights, weight_scale),
        )
        off = (1.0 - self_transition) / max(S - 1, 1)
        A = (jnp.full((S, S), off) + (self_transition - off) * jnp.eye(S)) if S > 1 else jnp.ones((1, 1))
        return HMMGLMParams(jnp.full((S,), 1.0 / S, dtype), A.astype(dtype), em)

    def check_params(self, params: HMMGLMParams) -> None:
        """Raise a ``ValueError`` naming the field whose shape does not match this model."""
        S = self.num_states
        if jnp.shape(params.initial_probs) != (S,):
            raise ValueError(f"params.initial_probs must have shape ({S},); got {jnp.shape(params.initial_probs)}.")
        if jnp.shape(params.transition_matrix) != (S, S):
            raise ValueError(
                f"params.transition_matrix must have shape ({S}, {S}); got {jnp.shape(params.transition_matrix)}."
            )
        for name, want, got in zip(GLMParams._fields, self.param_shapes(), params.emissions, strict=True):
            if name == "bias" and got is not None and jnp.shape(got) in ((self.num_neurons,), (S, self.num_neurons)):
                continue
            if (want is None) != (got is None) or (want is not None and tuple(jnp.shape(got)) != tuple(want)):
                raise ValueError(
                    f"params.emissions.{name} must be {'None' if want is None else 'of shape ' + str(want)} for this "
                    f"model; got {None if got is None else jnp.shape(got)}."
                )


# --------------------------------------------------------------------------------------------- evaluation helpers
def hard_adjacency(eparams: GLMParams) -> Int[Array, "S N N"]:
    """Argmax adjacency in {-1 (inh), 0 (none), +1 (exc)} from ``adjacency_logits``."""
    if eparams.adjacency_logits is None:
        raise ValueError("hard_adjacency needs one-hot params (adjacency_logits is None).")
    return jnp.argmax(eparams.adjacency_logits, axis=-1) - 1


def hard_adjacency_params(params: HMMGLMParams) -> HMMGLMParams:
    """Params whose soft adjacency is exactly the argmax one-hot adjacency (for evaluation)."""
    em = params.emissions
    if em.adjacency_logits is None:
        return params
    onehot = jax.nn.one_hot(jnp.argmax(em.adjacency_logits, -1), 3, dtype=em.adjacency_logits.dtype)
    return params._replace(emissions=em._replace(adjacency_logits=(onehot - 1.0) * 1e4))


# --------------------------------------------------------------------------------------------- simulation
def simulate_hmm_glm(
    key: PRNGKeyArray,
    model: HMMGLM,
    params: HMMGLMParams,
    num_timesteps: int,
    covariates: ArrayLike | None = None,
    num_sequences: int | None = None,
) -> tuple[Int[Array, "... T"], Float[Array, "... T N"]]:
    """Autoregressive simulation: the history features at ``t`` are built from the *simulated* spikes.

    Returns ``(states (T,), spikes (T, N))``, or with ``num_sequences=B`` a batch ``(B, T)``, ``(B, T, N)``
    (``covariates`` then ``(B, T, D)``).  Spikes start from an empty history.
    """
    num_timesteps = int(num_timesteps)
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1; got {num_timesteps}.")
    model.check_params(params)
    if num_sequences is not None:
        keys = jax.random.split(key, int(num_sequences))
        cov = None if covariates is None else jnp.asarray(covariates)
        if cov is None:
            return jax.vmap(lambda k: simulate_hmm_glm(k, model, params, num_timesteps))(keys)
        return jax.vmap(lambda k, c: simulate_hmm_glm(k, model, params, num_timesteps, c))(keys, cov)
    if model.num_covariates:
        if covariates is None:
            raise ValueError(f"the model has num_covariates={model.num_covariates}; pass covariates (T, D).")
        cov = jnp.asarray(covariates)
        if cov.shape != (num_timesteps, model.num_covariates):
            raise ValueError(f"covariates must have shape ({num_timesteps}, {model.num_covariates}); got {cov.shape}.")
    else:
        cov = jnp.zeros((num_timesteps, 0))
    dtype = params.transition_matrix.dtype
    N, L = model.num_neurons, max(model.num_lags, 1)
    basis = jnp.zeros((1, 1), dtype) if model.basis is None else jnp.asarray(model.basis, dtype)
    W = model.coupling_weights(params.emissions) if model.has_coupling else None
    kz, ky = jax.random.split(key)
    logA = jnp.log(params.transition_matrix)
    z0 = jax.random.categorical(kz, jnp.log(params.initial_probs))

    def zstep(z, k):
        zn = jax.random.categorical(k, logA[z])
        return zn, zn

    _, zs = jax.lax.scan(zstep, z0, jax.random.split(kz, num_timesteps - 1)) if num_timesteps > 1 else (
        None, jnp.zeros((0,), jnp.int32))
    states = jnp.concatenate([z0[None], zs]).astype(jnp.int32)

    def ystep(buf, args):
        k, z, c = args
        hist = jnp.einsum("lk,ln->nk", basis, buf).reshape(-1) if model.has_coupling else None
        inp = GLMInputs(hist, c if model.num_covariates else None)
        eta = model.predictor(params.emissions, inp, W)[z]
        if model.observation == "bernoulli":
            y = jax.random.bernoulli(k, jax.nn.sigmoid(eta)).astype(dtype)
        else:
            y = jax.random.poisson(k, model.mean(eta)).astype(dtype)
        buf = jnp.concatenate([y[None], buf[:-1]], axis=0)
        return buf, y

    _, ys = jax.lax.scan(ystep, jnp.zeros((L, N), dtype), (jax.random.split(ky, num_timesteps), states, cov))
    return states, ys


class SyntheticHMMGLM(NamedTuple):
    """A ground-truth switching GLM: model, params, adjacency ``(S, N, N)`` in {-1, 0, 1}, its prior ``A0``
    ``(N, N, 3)``, the edge weights ``(S, N, N)`` and which generator made it."""

    model: HMMGLM
    params: HMMGLMParams
    adjacency: Array
    adjacency_prior: Array
    weights: Array
    generator: str


def synthetic_hmm_glm(
    key: PRNGKeyArray,
    num_states: int = 5,
    num_neurons: int = 20,
    generator: Literal["demo", "paper"] = "demo",
    self_transition: float = 0.98,
    self_coupling: bool = False,
) -> SyntheticHMMGLM:
    """The paper's synthetic ground truth (Li et al. 2024, Sec. 5.1), with one of two weight scales.

    * ``'demo'`` (the released demo generator, which we use for Table 1): ``A0 ~ Dir(0.2, 1.6, 0.2)`` per edge,
      ``a_s ~ Cat(A0)`` per state, strengths ``3 U(0, 1)``, bias ``0.1 (U - 0.5)``, Poisson with sigmoid link;
    * ``'paper'`` (the scale stated in the text): ``A0 ~ Dir(0.1, 0.8, 0.1)``, ``log w~ ~ N(-5, 1.5)``, softplus
      link, bias ``0.1 (U - 0.5)`` (the text gives no bias; its weights are so weak that states are barely
      identifiable).

    Both: exponential K=5 basis, uniform initial distribution, self-transition ``self_transition`` with the rest
    spread evenly; ``self_coupling=False`` sets the diagonal of every ``a_s`` to "none".
    """
    _check_choice("generator", generator, ("demo", "paper"))
    S, N = int(num_states), int(num_neurons)
    k0, k1, k2, k3 = jax.random.split(key, 4)
    if generator == "demo":
        conc, link = jnp.array([0.2, 1.6, 0.2]), "sigmoid"
        strength = 3.0 * jax.random.uniform(k2, (S, N, N))
    else:
        conc, link = jnp.array([0.1, 0.8, 0.1]), "softplus"
        strength = jnp.exp(-5.0 + 1.5 * jax.random.normal(k2, (S, N, N)))
    A0 = jax.random.dirichlet(k0, conc, (N, N))
    A0 = jnp.clip(A0, 1e-12, 1.0)
    A0 = A0 / A0.sum(-1, keepdims=True)
    cls = jax.random.categorical(k1, jnp.log(A0), shape=(S, N, N))  # 0 inh, 1 none, 2 exc
    if not self_coupling:
        cls = jnp.where(jnp.eye(N, dtype=bool)[None], 1, cls)
    adjacency = cls - 1
    weights = adjacency * strength
    bias = 0.1 * (jax.random.uniform(k3, (N,)) - 0.5)
    model = HMMGLM(S, N, basis="exponential", link=link, self_coupling=self_coupling)
    off = (1.0 - self_transition) / max(S - 1, 1)
    A = (jnp.full((S, S), off) + (self_transition - off) * jnp.eye(S)) if S > 1 else jnp.ones((1, 1))
    params = HMMGLMParams(jnp.full((S,), 1.0 / S), A, GLMParams(bias, weights=weights.astype(jnp.float32)))
    return SyntheticHMMGLM(model, params, adjacency, A0, weights, generator)
