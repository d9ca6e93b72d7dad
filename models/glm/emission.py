"""The population-GLM emission component of the switching HMM-GLM (Li et al., ICLR 2024).

.. math::

    \\eta_{t,n} = b_{z_t,n} + \\sum_{n',k} W_{z_t,n,(n',k)}\\, h_{t,n',k} + \\sum_d U_{z_t,n,d}\\, u_{t,d},\\qquad
    y_{t,n} \\sim \\mathrm{Poisson}(f(\\eta_{t,n}))\\ \\text{or}\\ \\mathrm{Bernoulli}(\\sigma(\\eta_{t,n})),

with history features :math:`h_{t,n',k} = \\sum_{l=1}^{L} \\phi_{l,k}\\, y_{t-l,n'}` computed per step from the
window of past emissions (:meth:`GLMEmissions.features`; ``emission_lags = L``) and ``f`` softplus, exp or
``rate_scale``·sigmoid.  Coupling priors (``coupling_prior``), all in :meth:`GLMEmissions.log_prior`, the one
prior EM, the NumPyro bridge and every fit use:

* ``"none"`` (HG): free :math:`W_s`; ``"l1"``: :math:`-\\lambda \\sum |W|`;
* ``"gaussian"`` (GHG): :math:`W_s \\sim \\mathcal N(W_0, \\sigma^2)` with a learned shared mean :math:`W_0`;
* ``"onehot"`` (OHG): :math:`W_{s,n,(n',k)} = (a^{exc}_{s,n,n'} - a^{inh}_{s,n,n'})\\,\\mathrm{softplus}(
  \\text{strength})` with :math:`a_s = \\mathrm{softmax}(\\text{adjacency\\_logits}_s)` on the simplex over (inh,
  none, exc) and :math:`a_{s,n,n'} \\sim \\mathrm{Concrete}(A_0, \\tau)`, :math:`A_0 = \\mathrm{softmax}(
  \\text{prior\\_logits})` learned.  The Concrete density is unbounded at the vertices, so :math:`\\log a` is
  floored at ``log_floor`` (which stops the logits from diverging).

``param_scale`` (default ``None``: flat) puts Normal(0, ``param_scale``) leaf priors on every GLM leaf; they enter
the same ``log_prior``.  M-step: ``inner_steps`` optimiser steps (Adam, state carried across EM iterations, or
L-BFGS) on :math:`-\\frac1n[\\sum_{b,t,s}\\gamma_{b,t}(s)\\log p(y_{b,t}\\mid z=s) + \\log p(\\phi)]` (``n`` observed
bins), the likelihood term at a Gumbel-softmax *sample* of the adjacency (``adjacency_sampling='gumbel'``, the
paper's scheme) or at the soft adjacency (``'deterministic'``), then :math:`W_0` in closed form.  Adam steps take
the gradient from :meth:`GLMEmissions.m_step_grad` (the closed-form score of the link, :meth:`GLMEmissions.score`,
and two flat matmuls: equal to autodiff of the loss, 2-3x faster per step at the Table-1 size).  Sampled M-steps
make EM's objective noisy, so it cannot settle below a tolerance: ``sampled_iters=k`` samples in the first ``k`` EM
iterations only and then finishes deterministically (a generalised EM from there on, whose objective converges;
EM's convergence test starts after the sampled iterations).
"""

from __future__ import annotations

import math
import sys
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from jax.scipy.special import gammaln
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray
from numpyro.distributions import constraints

from pssm.data import Sequences
from pssm.display import short_repr
from pssm.models.glm.bases import as_basis
from pssm.models.glm.concrete import concrete_log_prob
from pssm.models.hmm.emissions import EmissionComponent
from pssm.models.hmm.init import kmeans_labels, soft_responsibilities
from pssm.params import ParamSpec, spec_log_prior

__all__ = ["GLMInputs", "GLMParams", "GLMEmissions", "ADJ_CLASSES"]

ADJ_CLASSES = ("inh", "none", "exc")


class GLMInputs(NamedTuple):
    """Model inputs of one step (or with leading axes): history features ``(N*K,)`` and covariates ``(D,)``."""

    history: Array | None = None
    covariates: Array | None = None


class GLMParams(NamedTuple):
    """GLM parameters; fields a configuration does not use are ``None``.  All leaves are unconstrained.

    ``bias`` ``(N,)`` when shared across states, else ``(S, N)``; ``weights`` ``(S, N, N*K)`` (row = postsynaptic
    neuron, column ``n'*K + k``); ``weights_mean`` ``W0`` ``(N, N*K)`` (gaussian); ``strength`` ``(S, N, N*K)``,
    ``adjacency_logits`` ``(S, N, N, 3)``, ``prior_logits`` ``(N, N, 3)`` (onehot); ``input_weights`` ``(S, N, D)``.
    """

    bias: Array
    weights: Array | None = None
    weights_mean: Array | None = None
    strength: Array | None = None
    adjacency_logits: Array | None = None
    prior_logits: Array | None = None
    input_weights: Array | None = None

    __repr__ = short_repr


def _check_choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {options}; got {value!r}.")


def _softplus(x: Array) -> Array:
    """:math:`\\log(1 + e^x) = \\max(x, 0) + \\log(1 + e^{-|x|})` (stable; its gradient is the sigmoid, 1/2 at 0).
    About twice as fast on XLA:CPU as ``jax.nn.softplus`` (``logaddexp`` with its infinity checks)."""
    hi, lo = jnp.maximum(x, 0.0), jnp.minimum(x, 0.0)  # lo - hi = -|x|, written so that the gradient at 0 is 1/2
    return hi + jnp.log1p(jnp.exp(lo - hi))


def _log_softplus(x):
    """log(softplus(x)), accurate for very negative x (where softplus(x) ~ exp(x))."""
    small = x < -15.0
    return jnp.where(small, x, jnp.log(jnp.where(small, 1.0, jax.nn.softplus(x))))


def _sigmoid(x: Array) -> Array:
    """:math:`\\sigma(x) = (1 + \\tanh(x/2))/2`: within 1e-7 of ``jax.nn.sigmoid`` in absolute terms, and XLA:CPU
    vectorises it inside fusions with broadcast operands, where the logistic op runs about 4x slower."""
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


def _flat_matmul(x: Array, w: Array) -> Array:
    """``einsum('...p,snp->...sn')`` as one 2-D matmul (about twice as fast on a CPU as the batched form)."""
    S, N, P = w.shape
    return (x.reshape(-1, P) @ w.reshape(S * N, P).T).reshape(x.shape[:-1] + (S, N))


def _glm_inputs(inputs) -> GLMInputs:
    """Model inputs as :class:`GLMInputs` (a model without history gets the user's covariates unchanged)."""
    if isinstance(inputs, GLMInputs):
        return inputs
    return GLMInputs(None, inputs)


class GLMEmissions(EmissionComponent):
    """Population GLM emissions over ``num_neurons`` outputs (see the module notes).

    Settings: ``basis`` (``'exponential'`` = the paper's K=1, L=5 filter, an array ``(L,)``/``(L, K)``, or ``None``
    for no spike history), ``num_covariates``, ``observation`` / ``link`` / ``rate_scale``, ``shared_bias``,
    ``self_coupling`` (``False`` fixes the diagonal couplings at 0), ``coupling_prior`` and its hyper-parameters
    (``l1_penalty``, ``prior_scale`` σ, ``temperature`` τ, ``log_floor``), ``param_scale``.  M-step: ``optimizer``
    ``'adam'``/``'lbfgs'``, ``inner_steps``, ``learning_rate``, ``adjacency_sampling``, ``sample_temperature``
    (default τ), ``sampled_iters`` (sampled M-steps before the deterministic finisher, default 5; ``None``: sample
    throughout, the paper's scheme, which never meets a tolerance and runs to ``num_iters``).
    Initialisation: ``init_method`` ``'kmeans'`` (k-means on standardised square-root firing rates of
    ``init_window``-bin windows, best of ``init_kmeans`` runs) or ``'random'`` (random labels per window), soft
    labels (``init_smoothing``), then ``init_steps`` Adam steps of the weighted M-step.
    """

    num_neurons: int
    basis: np.ndarray | None = eqx.field(default="exponential", converter=as_basis)
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
    log_floor: float | None = -10.0
    param_scale: float | None = None
    optimizer: Literal["adam", "lbfgs"] = "adam"
    inner_steps: int = 10
    learning_rate: float = 0.05
    adjacency_sampling: Literal["gumbel", "deterministic"] = "gumbel"
    sample_temperature: float | None = None
    sampled_iters: int | None = 5
    init_method: Literal["kmeans", "random"] = "kmeans"
    init_window: int = 25
    init_kmeans: int = 10
    init_steps: int = 100
    init_smoothing: float = 0.1

    def __check_init__(self):
        if int(self.num_neurons) < 1 or int(self.num_covariates) < 0:
            raise ValueError(
                f"num_neurons must be >= 1 and num_covariates >= 0; got {self.num_neurons}, {self.num_covariates}."
            )
        _check_choice("observation", self.observation, ("poisson", "bernoulli"))
        _check_choice("coupling_prior", self.coupling_prior, ("none", "l1", "gaussian", "onehot"))
        if self.observation == "poisson":
            _check_choice("link (Poisson observations)", self.link, ("softplus", "exp", "sigmoid"))
        else:
            _check_choice("link (Bernoulli observations)", self.link, ("logistic",))
        _check_choice("optimizer", self.optimizer, ("adam", "lbfgs"))
        _check_choice("adjacency_sampling", self.adjacency_sampling, ("gumbel", "deterministic"))
        _check_choice("init_method", self.init_method, ("kmeans", "random"))
        if self.basis is None and self.coupling_prior != "none":
            raise ValueError(
                f"coupling_prior={self.coupling_prior!r} needs spike-history coupling; give a basis "
                "(e.g. 'exponential')."
            )
        for name in ("rate_scale", "prior_scale", "temperature", "learning_rate"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}.")
        if self.param_scale is not None and not float(self.param_scale) > 0:
            raise ValueError(f"param_scale must be > 0 or None (flat); got {self.param_scale}.")
        if self.l1_penalty < 0:
            raise ValueError(f"l1_penalty must be >= 0; got {self.l1_penalty}.")
        if min(int(self.inner_steps), int(self.init_steps), int(self.init_window), int(self.init_kmeans)) < 1:
            raise ValueError("inner_steps, init_steps, init_window and init_kmeans must be >= 1.")
        if self.sampled_iters is not None and int(self.sampled_iters) < 0:
            raise ValueError(f"sampled_iters must be >= 0 or None (sample throughout); got {self.sampled_iters}.")

    # ---------------------------------------------------------------- sizes and declared shapes
    @property
    def num_basis(self) -> int:
        return 0 if self.basis is None else int(self.basis.shape[1])

    @property
    def has_coupling(self) -> bool:
        return self.basis is not None

    @property
    def emission_shape(self) -> tuple[int, ...]:
        return (int(self.num_neurons),)

    @property
    def data_kind(self) -> str:
        return "binary" if self.observation == "bernoulli" else "counts"

    @property
    def emission_lags(self) -> int:
        return 0 if self.basis is None else int(self.basis.shape[0])

    @property
    def takes_inputs(self) -> bool:
        return self.num_covariates > 0

    def features(self, past: Array, inputs: Any = None) -> GLMInputs:
        """``GLMInputs(history, covariates)`` of one step from ``past`` ``(L, N)`` (``past[0] = y_{t-1}``):
        ``history[n*K + k] = sum_l basis[l, k] past[l, n]``."""
        dtype = past.dtype if jnp.issubdtype(past.dtype, jnp.floating) else jnp.result_type(float)
        hist = jnp.einsum("lk,ln->nk", jnp.asarray(self.basis, dtype), past.astype(dtype)).reshape(-1)
        return GLMInputs(hist, inputs if self.num_covariates else None)

    def param_shapes(self, num_states: int) -> GLMParams:
        """Shapes of the params (``None`` for unused fields)."""
        S, N, K, D = int(num_states), int(self.num_neurons), self.num_basis, int(self.num_covariates)
        c, p = self.has_coupling, self.coupling_prior
        return GLMParams(
            (N,) if self.shared_bias else (S, N),
            (S, N, N * K) if c and p != "onehot" else None,
            (N, N * K) if p == "gaussian" else None,
            (S, N, N * K) if p == "onehot" else None,
            (S, N, N, 3) if p == "onehot" else None,
            (N, N, 3) if p == "onehot" else None,
            (S, N, D) if D else None,
        )

    def num_states_of(self, params: GLMParams) -> int:
        """Number of states the params describe; every field is checked against :meth:`param_shapes` (a
        ``ValueError`` names the first field that is missing, unexpected or mis-shaped)."""
        S = None
        for a in (params.weights, params.strength, params.input_weights):
            if a is not None:
                S = int(jnp.shape(a)[0])
                break
        if S is None:
            S = int(jnp.shape(params.bias)[0]) if jnp.ndim(params.bias) == 2 else 1
        for name, want, got in zip(GLMParams._fields, self.param_shapes(S), params, strict=True):
            have = None if got is None else tuple(jnp.shape(got))
            if have != want:
                raise ValueError(
                    f"params.emissions.{name} has shape {have} but this GLM (num_neurons={self.num_neurons}, "
                    f"num_basis={self.num_basis}, num_covariates={self.num_covariates}, coupling_prior="
                    f"{self.coupling_prior!r}, shared_bias={self.shared_bias}) with {S} states needs {want}."
                )
        return S

    # ---------------------------------------------------------------- params and prior
    def param_spec(self, num_states: int) -> GLMParams:
        def leaf(shape):
            if shape is None:
                return None
            prior = None
            if self.param_scale is not None:
                prior = dist.Normal(jnp.zeros(shape), float(self.param_scale)).to_event(len(shape))
            return ParamSpec(constraints.real, prior)

        return GLMParams(*[leaf(s) for s in self.param_shapes(num_states)])

    def log_prior(self, params: GLMParams, num_states: int) -> Float[Array, ""]:
        """Leaf priors (``param_scale``) + :meth:`coupling_log_prior`: what the M-step and EM maximise."""
        return spec_log_prior(self.param_spec(num_states), params) + self.coupling_log_prior(params)

    def coupling_log_prior(self, params: GLMParams) -> Float[Array, ""]:
        """``l1``: :math:`-\\lambda\\sum|W|`; ``gaussian``: :math:`\\sum\\log\\mathcal N(W_s \\mid W_0, \\sigma^2)`;
        ``onehot``: :math:`\\sum_s \\log\\mathrm{Concrete}(a_s \\mid A_0, \\tau)` (``log a`` floored at
        ``log_floor``); 0 for ``none``.  Diagonal entries are excluded when ``self_coupling=False``."""
        p = self.coupling_prior
        if p == "none":
            return jnp.zeros((), params.bias.dtype)
        if p == "l1":
            return -self.l1_penalty * jnp.abs(self.coupling_weights(params)).sum()
        if p == "gaussian":
            lp = dist.Normal(params.weights_mean, self.prior_scale).log_prob(params.weights)
            return (lp * self._diag_mask(lp.dtype)).sum() if not self.self_coupling else lp.sum()
        log_a = jax.nn.log_softmax(params.adjacency_logits, axis=-1)
        if self.log_floor is not None:
            log_a = jnp.maximum(log_a, self.log_floor)
        lp = concrete_log_prob(log_a, params.prior_logits[None], self.temperature)  # (S, N, N)
        if not self.self_coupling:
            lp = lp * (1.0 - jnp.eye(self.num_neurons, dtype=lp.dtype))
        return lp.sum()

    # ---------------------------------------------------------------- coupling
    def _diag_mask(self, dtype) -> Array:
        return jnp.repeat(1.0 - jnp.eye(self.num_neurons, dtype=dtype), self.num_basis, axis=1)  # (N, N*K)

    def _need_onehot(self, what):
        if self.coupling_prior != "onehot":
            raise ValueError(f"{what} needs coupling_prior='onehot'; this model has {self.coupling_prior!r}.")

    def adjacency_probs(self, params: GLMParams) -> Float[Array, "S N N 3"]:
        """Soft adjacency ``softmax(adjacency_logits)`` over (inh, none, exc) (one-hot prior only)."""
        self._need_onehot("adjacency_probs")
        return jax.nn.softmax(params.adjacency_logits, axis=-1)

    def adjacency_prior_probs(self, params: GLMParams) -> Float[Array, "N N 3"]:
        """The learned shared prior ``A0 = softmax(prior_logits)`` (one-hot prior only)."""
        self._need_onehot("adjacency_prior_probs")
        return jax.nn.softmax(params.prior_logits, axis=-1)

    def coupling_weights(self, params: GLMParams, adjacency: Array | None = None) -> Float[Array, "S N NK"]:
        """Effective coupling ``W`` ``(S, N, N*K)``; one-hot: ``(a_exc - a_inh) * softplus(strength)`` with
        ``adjacency`` ``(S, N, N, 3)`` (default: the soft adjacency)."""
        if not self.has_coupling:
            raise ValueError("this model has no spike-history coupling (basis=None).")
        if self.coupling_prior == "onehot":
            a = jax.nn.softmax(params.adjacency_logits, axis=-1) if adjacency is None else adjacency
            w = jnp.repeat(a[..., 2] - a[..., 0], self.num_basis, axis=-1) * jax.nn.softplus(params.strength)
        else:
            w = params.weights
        return w * self._diag_mask(w.dtype) if not self.self_coupling else w

    def edge_weights(self, params: GLMParams, adjacency: Array | None = None) -> Float[Array, "S N N"]:
        """Coupling per edge ``(S, N, N)``: ``sum_k W[s, n, (n', k)] sum_l basis[l, k]``."""
        W = self.coupling_weights(params, adjacency)
        S, N, K = W.shape[0], self.num_neurons, self.num_basis
        return jnp.einsum("smnk,k->smn", W.reshape(S, N, N, K), jnp.asarray(self.basis.sum(0), W.dtype))

    # ---------------------------------------------------------------- the GLM
    def predictor(self, params: GLMParams, inputs: Any, coupling: Array | None = None) -> Float[Array, "... S N"]:
        """Linear predictor for every state: inputs with leading shape ``(...)`` -> ``(..., S, N)``."""
        u = _glm_inputs(inputs)
        S, N = self.num_states_of(params), self.num_neurons
        W = self.coupling_weights(params) if self.has_coupling and coupling is None else coupling
        return self._linear_predictor(jnp.broadcast_to(params.bias, (S, N)), W, params.input_weights, u)

    def _linear_predictor(self, bias: Array, W: Array | None, U: Array | None, u: GLMInputs) -> Array:
        """``bias (S, N) + h W^T + u U^T`` for inputs ``u`` with leading shape ``(...)`` -> ``(..., S, N)``."""
        eta = bias
        if self.has_coupling:
            eta = eta + _flat_matmul(u.history.astype(W.dtype), W)
        if self.num_covariates:
            eta = eta + _flat_matmul(u.covariates.astype(eta.dtype), U)
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

    def inverse_link(self, mean: ArrayLike) -> np.ndarray:
        """:math:`f^{-1}` of a mean (clipped inside the range of the link)."""
        m = np.clip(np.asarray(mean, float), 1e-3, None)
        if self.observation == "bernoulli" or self.link == "sigmoid":
            r = np.clip(m / (1.0 if self.observation == "bernoulli" else self.rate_scale), 1e-3, 1 - 1e-3)
            return np.log(r / (1 - r))
        return np.log(m) if self.link == "exp" else np.log(np.expm1(m))

    def log_pmf(self, y: Array, eta: Array, constant: bool = True) -> Array:
        """Elementwise :math:`\\log p(y \\mid \\eta)` (``constant=False`` drops :math:`-\\log y!`)."""
        if self.observation == "bernoulli":
            return y * eta - _softplus(eta)
        if self.link == "softplus":
            log_rate, rate = _log_softplus(eta), _softplus(eta)
        elif self.link == "exp":
            log_rate, rate = eta, jnp.exp(eta)
        else:
            log_rate = math.log(self.rate_scale) - _softplus(-eta)
            rate = self.rate_scale * _sigmoid(eta)
        lp = y * log_rate - rate
        return lp - gammaln(y + 1.0) if constant else lp

    def score(self, y: Array, eta: Array) -> Array:
        """:math:`\\partial \\log p(y \\mid \\eta) / \\partial \\eta` elementwise, in closed form: ``y - sigmoid``
        (Bernoulli), ``y - exp`` (exp), ``sigmoid (y / softplus - 1)`` (softplus), ``(1 - s)(y - c s)`` with ``s =
        sigmoid`` (``rate_scale`` c ``* sigmoid``)."""
        if self.link == "exp":
            return y - jnp.exp(eta)
        sig = _sigmoid(eta)
        if self.observation == "bernoulli":
            return y - sig
        if self.link == "softplus":
            small = eta < -15.0  # softplus(eta) ~ sigmoid(eta) ~ exp(eta) there
            ratio = jnp.where(small, 1.0, sig / jnp.where(small, 1.0, jax.nn.softplus(eta)))
            return y * ratio - sig
        return (1.0 - sig) * (y - self.rate_scale * sig)

    def distribution(self, params: GLMParams, state: Array, inputs: Any = None) -> dist.Distribution:
        eta = self.predictor(params, inputs)[..., state, :]
        if self.observation == "bernoulli":
            return dist.Bernoulli(logits=eta).to_event(1)
        return dist.Poisson(self.mean(eta)).to_event(1)

    def log_likelihoods(self, params: GLMParams, emissions: Array, inputs: Any = None) -> Float[Array, "T S"]:
        return self.observed_log_likelihoods(params, emissions, None, inputs)

    @property
    def missing_entries(self) -> bool:
        """A neuron's missing count drops its term; the others count (their coupling sees a missing count
        as 0, as for a missing step)."""
        return True

    def observed_log_likelihoods(self, params: GLMParams, emissions: Array, observed: Array | None, inputs: Any = None):
        """Per-state log-likelihoods ``(..., S)`` over the observed entries (all when ``observed`` is ``None``); the
        state-free :math:`-\\log y!` is summed once per step, not once per state."""
        eta = self.predictor(params, inputs)
        y = emissions.astype(eta.dtype)
        lp = self.log_pmf(y[..., None, :], eta, constant=False)
        if observed is not None:
            lp = jnp.where(observed[..., None, :], lp, 0.0)
        if self.observation == "bernoulli":
            return lp.sum(-1)
        log_fact = gammaln(y + 1.0) if observed is None else jnp.where(observed, gammaln(y + 1.0), 0.0)
        return lp.sum(-1) - log_fact.sum(-1, keepdims=True)

    # ---------------------------------------------------------------- initialisation
    def init_params(
        self,
        key: PRNGKeyArray,
        num_states: int,
        *,
        weight_scale: float = 0.1,
        bias: ArrayLike | None = None,
        none_logit: float = 1.0,
        dtype: Any = None,
    ) -> GLMParams:
        """Random params: small weights, bias ``bias`` (default 0), strengths near ``softplus(-1)``, one-hot
        adjacency and ``A0`` logits at ``(0, none_logit, 0)`` (sparse)."""
        dtype = dtype or jnp.result_type(float)
        sh = self.param_shapes(num_states)
        keys = jax.random.split(key, 7)

        def rnd(i, s, scale):
            return None if s is None else scale * jax.random.normal(keys[i], s, dtype)

        sparse = jnp.array([0.0, none_logit, 0.0], dtype)
        b = jnp.zeros(sh.bias, dtype) + (0.0 if bias is None else jnp.asarray(bias, dtype))
        return GLMParams(
            b,
            rnd(1, sh.weights, weight_scale),
            None if sh.weights_mean is None else jnp.zeros(sh.weights_mean, dtype),
            None if sh.strength is None else -1.0 + rnd(3, sh.strength, 0.1),
            None if sh.adjacency_logits is None else sparse + rnd(4, sh.adjacency_logits, weight_scale),
            None if sh.prior_logits is None else jnp.broadcast_to(sparse, sh.prior_logits),
            rnd(6, sh.input_weights, weight_scale),
        )

    def _window_labels(self, key, y: np.ndarray, m: np.ndarray, num_states: int) -> np.ndarray:
        """Labels per bin ``(B, T)``: k-means (or random) on windows of standardised square-root firing rates."""
        B, T, N = y.shape
        w = int(self.init_window)
        nw = -(-T // w)
        if self.init_method == "random":
            return np.repeat(np.asarray(jax.random.randint(key, (B, nw), 0, num_states)), w, axis=1)[:, :T]
        pad = nw * w - T
        yp = np.pad(y * m[..., None], ((0, 0), (0, pad), (0, 0))).reshape(B, nw, w, N)
        cnt = np.pad(m, ((0, 0), (0, pad))).reshape(B, nw, w).sum(-1)
        feats = np.sqrt(yp.sum(2) / np.maximum(cnt, 1)[..., None])
        ok = cnt > 0
        f = feats[ok]
        f = (f - f.mean(0)) / (f.std(0) + 1e-6)
        labels = np.zeros((B, nw), int)
        labels[ok] = kmeans_labels(key, f, num_states, num_runs=int(self.init_kmeans))
        return np.repeat(labels, w, axis=1)[:, :T]

    def initialize(self, key: PRNGKeyArray, num_states: int, data: Sequences) -> GLMParams:
        """Windowed k-means labels -> soft responsibilities -> ``init_steps`` Adam steps of the weighted M-step
        (deterministic adjacency) from small random weights; the bias starts at the inverse link of the mean
        rates."""
        k1, k2, k3 = jax.random.split(key, 3)
        y = np.asarray(data.emissions, float)
        m = np.asarray(data.mask)
        rate = (y * m[..., None]).sum((0, 1)) / max(int(m.sum()), 1)
        dtype = jnp.result_type(float)
        params = self.init_params(k1, num_states, weight_scale=0.01, bias=self.inverse_link(rate), dtype=dtype)
        labels = self._window_labels(k2, y, m, num_states)
        weights = jnp.asarray(soft_responsibilities(labels, num_states, self.init_smoothing) * m[..., None], dtype)
        opt_state = optax.adam(self.learning_rate).init(params)
        params, _ = _fit_jit(self, params, opt_state, k3, data, weights, "adam", int(self.init_steps), "deterministic")
        return params

    # ---------------------------------------------------------------- M-step
    def _optax(self, optimizer: str):
        return optax.lbfgs() if optimizer == "lbfgs" else optax.adam(self.learning_rate)

    @property
    def stochastic_m_steps(self) -> int:
        if self.coupling_prior != "onehot" or self.adjacency_sampling != "gumbel":
            return 0
        return sys.maxsize if self.sampled_iters is None else int(self.sampled_iters)

    def m_step_init(self, params: GLMParams):
        """Optimiser state and the number of M-steps done (which selects sampled or deterministic steps)."""
        return self._optax(self.optimizer).init(params), jnp.zeros((), jnp.int32)

    def expected_log_likelihood(
        self, params: GLMParams, data: Sequences, weights: Float[Array, "B T S"], coupling: Array | None = None
    ) -> Float[Array, ""]:
        """:math:`\\sum_{b,t,s} w_{b,t,s}\\log p(y_{b,t} \\mid z=s)` without the parameter-free ``-log y!``."""
        eta = self.predictor(params, data.inputs, coupling)  # (B, T, S, N)
        lp = self.log_pmf(data.emissions[..., None, :].astype(eta.dtype), eta, constant=False)
        if data.observed is not None:
            lp = jnp.where(data.entries[..., None, :], lp, 0.0)
        return jnp.sum(weights * lp.sum(-1))

    def m_step_loss(
        self, params: GLMParams, data: Sequences, weights: Array, key: PRNGKeyArray, sampling: str, sampled=True
    ):
        """:math:`-[Q(\\phi) + \\log p(\\phi)] / n`: for ``'gumbel'`` the adjacency in ``Q`` is a Gumbel-softmax
        sample where ``sampled`` (a bool, traced or not) holds and the soft adjacency elsewhere."""
        coupling = self._step_coupling(params, key, sampling, sampled)
        n_bins = jnp.maximum(data.mask.sum(), 1).astype(weights.dtype)
        q = self.expected_log_likelihood(params, data, weights, coupling)
        return -(q + self.log_prior(params, self.num_states_of(params))) / n_bins

    def _step_coupling(self, params: GLMParams, key, sampling: str, sampled) -> Array | None:
        """The coupling an M-step's likelihood term uses: a Gumbel-softmax sample of the adjacency (one-hot prior,
        ``'gumbel'``, where ``sampled`` holds), else ``None`` (the soft adjacency / free weights)."""
        if self.coupling_prior != "onehot" or sampling != "gumbel":
            return None
        logits = params.adjacency_logits
        tau = self.temperature if self.sample_temperature is None else self.sample_temperature
        noise = jnp.where(sampled, jax.random.gumbel(key, logits.shape, logits.dtype), 0.0)
        a = jax.nn.softmax((logits + noise) / jnp.where(sampled, tau, 1.0).astype(logits.dtype), axis=-1)
        return self.coupling_weights(params, a)

    def m_step_grad(
        self, params: GLMParams, data: Sequences, weights: Array, key: PRNGKeyArray, sampling: str, sampled=True
    ) -> GLMParams:
        """``jax.grad(m_step_loss)`` with the likelihood term differentiated by hand: the predictor is linear in
        ``(b, W, U)``, so :math:`\\partial Q / \\partial W_s = \\sum_{b,t} r_{bts}\\, h_{bt}^\\top` with :math:`r =
        w\\,\\partial_\\eta \\log p` (:meth:`score`), two flat matmuls per step, pulled back to the unconstrained
        leaves by ``jax.vjp``.  Autodiff of the log-pmf keeps several transcendental intermediates per element of
        the ``(B, T, S, N)`` predictor, and XLA fuses them into the matmuls: 2-3x slower (Table-1 size, 2 cores)."""
        S, N = self.num_states_of(params), self.num_neurons
        u = _glm_inputs(data.inputs)

        def linear_parts(p):
            W = self._step_coupling(p, key, sampling, sampled)
            W = self.coupling_weights(p) if self.has_coupling and W is None else W
            return jnp.broadcast_to(p.bias, (S, N)), W, p.input_weights if self.num_covariates else None

        (b, W, U), pullback = jax.vjp(linear_parts, params)
        barrier = jax.lax.optimization_barrier  # keeps each elementwise pass out of the matmuls around it
        eta = barrier(jnp.broadcast_to(self._linear_predictor(b, W, U, u), data.emissions.shape[:-1] + (S, N)))
        w = weights.astype(eta.dtype)[..., None]
        if data.observed is not None:
            w = w * data.entries[..., None, :].astype(eta.dtype)
        r = barrier(w * self.score(data.emissions[..., None, :].astype(eta.dtype), eta))
        r2 = r.reshape(-1, S * N)

        def back(x):  # (..., P) inputs -> d Q / d coefficients (S, N, P)
            return (r2.T @ x.reshape(-1, x.shape[-1]).astype(r2.dtype)).reshape(S, N, -1)

        db = r2.sum(0).reshape(S, N)
        dW = back(u.history) if self.has_coupling else None
        dU = back(u.covariates) if self.num_covariates else None
        (dq,) = pullback((db, dW, dU))
        dprior = jax.grad(lambda p: self.log_prior(p, S))(params)
        n_bins = jnp.maximum(data.mask.sum(), 1).astype(weights.dtype)
        return jax.tree.map(lambda a, c: -(a + c) / n_bins, dq, dprior)

    def _fit(self, params, opt_state, key, data, weights, optimizer, num_steps, sampling, sampled=True):
        opt = self._optax(optimizer)
        if optimizer == "lbfgs":

            def loss(p):
                return self.m_step_loss(p, data, weights, key, sampling, sampled)

            value_and_grad = optax.value_and_grad_from_state(loss)

            def step(carry, _):
                p, s = carry
                v, g = value_and_grad(p, state=s)
                u, s = opt.update(g, s, p, value=v, grad=g, value_fn=loss)
                return (optax.apply_updates(p, u), s), None

            (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), None, length=num_steps)
        else:

            def step(carry, k):
                p, s = carry
                g = self.m_step_grad(p, data, weights, k, sampling, sampled)
                u, s = opt.update(g, s, p)
                return (optax.apply_updates(p, u), s), None

            (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), jax.random.split(key, num_steps))
        if params.weights_mean is not None:  # exact coordinate ascent on W0 (flat or N(0, param_scale) prior)
            S = params.weights.shape[0]
            prec = 0.0 if self.param_scale is None else (self.prior_scale / self.param_scale) ** 2
            params = params._replace(weights_mean=params.weights.sum(0) / (S + prec))
        return params, opt_state

    def m_step(self, params, data, weights, state, key):
        opt_state, done = state
        sampled = True if self.sampled_iters is None else done < int(self.sampled_iters)
        params, opt_state = self._fit(
            params,
            opt_state,
            key,
            data,
            weights,
            self.optimizer,
            int(self.inner_steps),
            self.adjacency_sampling,
            sampled,
        )
        return params, (opt_state, done + 1)


@eqx.filter_jit
def _fit_jit(component, params, opt_state, key, data, weights, optimizer, num_steps, sampling):
    return component._fit(params, opt_state, key, data, weights, optimizer, num_steps, sampling)
