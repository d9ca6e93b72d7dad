"""HMM components: the contract, the initial distribution and the sticky transition matrix.

Each component owns a params sub-tree, its :class:`~pssm.params.ParamSpec` (constraint, prior, trainable), its
``log_prior``, an initialisation from data and a weighted M-step.  :class:`pssm.models.HMM` composes three of
them; the one EM driver (:func:`pssm.inference.fit_em`) calls their M-steps, so a new family is a new component.

* :class:`InitialDistribution` — :math:`z_0 \\sim \\mathrm{Cat}(\\pi)` with ``kind`` ``"learned"`` (Dirichlet
  prior, closed-form MAP), ``"fixed"`` (held at its value) or ``"stationary"`` (:math:`\\pi A = \\pi`, no params
  of its own);
* :class:`StickyTransitions` — rows :math:`A_{i,:} \\sim \\mathrm{Dir}(\\alpha \\mathbf 1 + \\kappa e_i)`; MAP
  :math:`\\hat A_{ij} \\propto \\xi_{ij} + \\alpha_{ij} - 1` (zeros are valid when :math:`\\alpha_{ij} = 1`).
"""

from __future__ import annotations

import abc
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import xlogy
from jaxtyping import Array, Float, PRNGKeyArray
from numpyro.distributions import constraints

from pssm.display import short_repr
from pssm.distributions import Dirichlet
from pssm.params import ParamSpec, spec_log_prior
from pssm.validation import check_positive_int, check_real

PyTree = Any

__all__ = [
    "Component",
    "InitialParams",
    "InitialDistribution",
    "TransitionParams",
    "TransitionComponent",
    "StickyTransitions",
    "stationary_distribution",
    "sticky_matrix",
]


class Component(eqx.Module):
    """Abstract HMM component: params spec, log prior (default: the sum of its leaf priors)."""

    @abc.abstractmethod
    def param_spec(self, num_states: int) -> PyTree:
        """Pytree of :class:`~pssm.params.ParamSpec` shaped like this component's params."""

    def log_prior(self, params: PyTree, num_states: int) -> Float[Array, ""]:
        """:math:`\\log p(\\theta_\\text{component})`: the one prior EM, the bridge and every fit use."""
        return spec_log_prior(self.param_spec(num_states), params)


def _tiny_log(p):
    return jnp.log(jnp.maximum(p, jnp.finfo(jnp.result_type(p)).tiny))


def sticky_matrix(num_states: int, self_transition: float = 0.9, dtype: Any = None) -> Float[Array, "S S"]:
    """``self_transition`` on the diagonal, the rest spread evenly (the identity ``(1, 1)`` for one state)."""
    S = check_positive_int(num_states, "num_states")
    check_real(
        self_transition,
        "self_transition",
        low=0.0,
        high=1.0,
        low_inclusive=True,
        high_inclusive=True,
        fix="It is a probability (the diagonal of the transition matrix), e.g. 0.9.",
    )
    dtype = np.dtype(dtype or jnp.result_type(float))
    if S == 1:
        return jnp.ones((1, 1), dtype)
    off = (1.0 - self_transition) / (S - 1)
    # built with NumPy (the settings are Python numbers): eager jnp ops would each compile a program
    return jnp.asarray((np.full((S, S), off) + (self_transition - off) * np.eye(S)).astype(dtype))


def stationary_distribution(matrix: Float[Array, "S S"]) -> Float[Array, " S"]:
    """:math:`\\pi` with :math:`\\pi A = \\pi`, :math:`\\sum_s \\pi_s = 1` (one linear solve; differentiable)."""
    S = matrix.shape[-1]
    a = jnp.swapaxes(matrix, -1, -2) - jnp.eye(S, dtype=matrix.dtype)
    a = a.at[-1, :].set(1.0)
    b = jnp.zeros((S,), matrix.dtype).at[-1].set(1.0)
    pi = jnp.linalg.solve(a, b)
    pi = jnp.clip(pi, 0.0, None)
    return pi / pi.sum()


# --------------------------------------------------------------------------------------------- initial
class InitialParams(NamedTuple):
    probs: Float[Array, " S"] | None = None

    __repr__ = short_repr


class InitialDistribution(Component):
    """Initial state distribution: ``kind`` ``"learned"`` (MAP under ``Dir(concentration)``), ``"fixed"`` (not
    trained; its value comes from initialisation or the user) or ``"stationary"`` (the stationary distribution of
    the transition matrix; no params of its own)."""

    kind: Literal["learned", "fixed", "stationary"] = "learned"
    concentration: float = 1.0

    def __check_init__(self):
        if self.kind not in ("learned", "fixed", "stationary"):
            raise ValueError(f"kind must be 'learned', 'fixed' or 'stationary'; got {self.kind!r}.")
        if not float(self.concentration) > 0:
            raise ValueError(f"concentration must be > 0; got {self.concentration}.")

    def param_spec(self, num_states: int) -> InitialParams:
        if self.kind == "stationary":
            return InitialParams(None)
        prior = Dirichlet(jnp.full((num_states,), float(self.concentration)))
        return InitialParams(ParamSpec(constraints.simplex, prior, self.kind == "learned"))

    def initialize(self, key: PRNGKeyArray, num_states: int, dtype: Any = None) -> InitialParams:
        if self.kind == "stationary":
            return InitialParams(None)
        return InitialParams(
            jnp.asarray(np.full(num_states, 1.0 / num_states, np.dtype(dtype or jnp.result_type(float))))
        )

    def log_probs(self, params: InitialParams, transition_matrix: Array) -> Float[Array, " S"]:
        """:math:`\\log \\pi` (the stationary distribution of ``transition_matrix`` for ``kind="stationary"``)."""
        if self.kind == "stationary":
            return _tiny_log(stationary_distribution(transition_matrix))
        return _tiny_log(params.probs)

    def m_step(self, params: InitialParams, expected_initial: Float[Array, " S"]) -> InitialParams:
        """MAP :math:`\\hat\\pi \\propto \\gamma_0 + \\alpha - 1` (``learned``); unchanged otherwise."""
        if self.kind != "learned":
            return params
        c = jnp.maximum(expected_initial + (self.concentration - 1.0), 0.0)
        return InitialParams((c / jnp.maximum(c.sum(), jnp.finfo(c.dtype).tiny)).astype(params.probs.dtype))


# --------------------------------------------------------------------------------------------- transitions
class TransitionParams(NamedTuple):
    matrix: Float[Array, "S S"]

    __repr__ = short_repr


class TransitionComponent(Component):
    """Abstract transition component (time-homogeneous: one ``(S, S)`` matrix)."""

    @abc.abstractmethod
    def matrix(self, params: PyTree) -> Float[Array, "S S"]:
        """The transition matrix :math:`A_{ij} = p(z_t = j \\mid z_{t-1} = i)`."""

    @abc.abstractmethod
    def initialize(self, key: PRNGKeyArray, num_states: int, dtype: Any = None) -> PyTree:
        """Starting params."""

    @abc.abstractmethod
    def m_step(
        self, params: PyTree, expected_transitions: Float[Array, "S S"], stationary_weights: Array | None = None
    ) -> PyTree:
        """MAP update from expected transition counts :math:`\\xi`; ``stationary_weights`` (the expected initial
        counts :math:`\\gamma_0`) is given when the initial distribution is the stationary one, whose
        :math:`\\sum_s \\gamma_0(s) \\log \\pi_s(A)` then enters the objective."""


class StickyTransitions(TransitionComponent):
    """Full transition matrix with a sticky Dirichlet prior :math:`A_{i,:} \\sim \\mathrm{Dir}(\\alpha\\mathbf 1 +
    \\kappa e_i)` (``concentration`` α, ``stickiness`` κ); ``self_transition`` sets the starting diagonal."""

    concentration: float = 1.0
    stickiness: float = 0.0
    self_transition: float = 0.9
    refine_steps: int = 50

    def __check_init__(self):
        if not float(self.concentration) > 0 or float(self.stickiness) < 0:
            raise ValueError(
                f"transition prior needs concentration > 0 and stickiness >= 0; got {self.concentration}, "
                f"{self.stickiness}."
            )
        if not 0.0 < float(self.self_transition) <= 1.0:
            raise ValueError(f"self_transition must lie in (0, 1]; got {self.self_transition}.")

    def prior_concentration(self, num_states: int) -> Float[Array, "S S"]:
        S = num_states
        return jnp.asarray(self.concentration * np.ones((S, S)) + self.stickiness * np.eye(S), jnp.result_type(float))

    def param_spec(self, num_states: int) -> TransitionParams:
        prior = Dirichlet(self.prior_concentration(num_states)).to_event(1)
        return TransitionParams(ParamSpec(constraints.simplex, prior))

    def matrix(self, params: TransitionParams) -> Float[Array, "S S"]:
        return params.matrix

    def initialize(self, key: PRNGKeyArray, num_states: int, dtype: Any = None) -> TransitionParams:
        return TransitionParams(sticky_matrix(num_states, self.self_transition, dtype))

    def m_step(self, params, expected_transitions, stationary_weights=None):
        S = expected_transitions.shape[-1]
        conc = self.prior_concentration(S).astype(expected_transitions.dtype)
        counts = jnp.maximum(expected_transitions + conc - 1.0, 0.0)
        rows = counts.sum(1, keepdims=True)
        A = jnp.where(rows > 0, counts / jnp.where(rows > 0, rows, 1.0), params.matrix)
        A = A.astype(params.matrix.dtype)
        if stationary_weights is None or S == 1:
            return TransitionParams(A)
        return TransitionParams(
            _refine_with_stationary(params.matrix, A, counts, stationary_weights, self.refine_steps)
        )


def _refine_with_stationary(old, start, counts, gamma0, num_steps, initial_probs=stationary_distribution):
    """Maximise :math:`\\sum_{ij} c_{ij}\\log A_{ij} + \\sum_s \\gamma_0(s)\\log\\pi_s(A)` over row-softmax
    logits by L-BFGS from the closed-form ``start``; keep the best of (refined, start, old): a generalised M-step
    that never lowers the objective.

    ``initial_probs(A)`` gives the initial distribution :math:`\\pi(A)` over the states that ``gamma0`` counts
    (default: the stationary distribution of ``A`` itself; a transition component whose chain is built from a
    smaller matrix ``A`` passes the stationary distribution of the chain it builds)."""
    support = counts > 0

    def objective(A):
        return jnp.sum(xlogy(counts, A)) + jnp.sum(xlogy(gamma0, initial_probs(A)))

    def to_matrix(logits):
        return jax.nn.softmax(jnp.where(support, logits, -jnp.inf), axis=-1)

    def loss(logits):
        return -objective(to_matrix(logits))

    opt = optax.lbfgs()
    logits0 = jnp.where(support, jnp.log(jnp.where(support, start, 1.0)), 0.0)

    def step(carry, _):
        x, s = carry
        v, g = optax.value_and_grad_from_state(loss)(x, state=s)
        u, s = opt.update(g, s, x, value=v, grad=g, value_fn=loss)
        return (optax.apply_updates(x, u), s), None

    (logits, _), _ = jax.lax.scan(step, (logits0, opt.init(logits0)), None, length=num_steps)
    refined = to_matrix(logits)
    refined = jnp.where(jnp.all(jnp.isfinite(refined)), refined, start)
    cands = jnp.stack([refined, start, old])
    vals = jax.vmap(objective)(cands)
    vals = jnp.where(jnp.isfinite(vals), vals, -jnp.inf)
    return cands[jnp.argmax(vals)].astype(old.dtype)
