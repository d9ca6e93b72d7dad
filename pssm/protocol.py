"""The model protocol: a state-space model is three conditional distributions over a params pytree.

.. math::

    x_0 \\sim \\mu_\\theta(\\cdot \\mid u_0), \\qquad
    x_t \\mid x_{t-1} \\sim f_\\theta(\\cdot \\mid x_{t-1}, t, u_t), \\qquad
    y_t \\mid x_t \\sim g_\\theta(\\cdot \\mid x_t, t, u_t).

A model object holds *fixed settings* (dimensions, bases, links); everything learnable lives in a params pytree
(a ``NamedTuple``) that is passed explicitly.  Every method describes **one** latent state; algorithms ``vmap``
over particles, states and sequences.  Simulation, the joint density, exact discrete-state potentials and the
NumPyro model are all derived from these three methods.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float, Int, PRNGKeyArray

from pssm.validation import check_key, check_num_timesteps

PyTree = Any

__all__ = [
    "SSM",
    "PyTree",
    "inputs_at",
    "simulate",
    "log_joint",
    "discrete_log_potentials",
]


class SSM(eqx.Module):
    """Abstract state-space model.

    Concrete models are final ``equinox.Module`` subclasses whose fields are fixed settings.  Required:
    :meth:`initial`, :meth:`transition`, :meth:`emission` (NumPyro distributions for one state) and
    :meth:`param_constraints`.  Optional hooks return ``None`` when a model does not provide them.

    Discrete-state models set ``discrete_states = True`` and have an integer field ``num_states``; their states
    are integers ``0..num_states-1``.
    """

    discrete_states: ClassVar[bool] = False

    @abc.abstractmethod
    def initial(self, params: PyTree, inputs: PyTree = None) -> dist.Distribution:
        """Distribution of :math:`x_0` given the inputs at time 0."""

    @abc.abstractmethod
    def transition(self, params: PyTree, state: Array, t: Int[Array, ""], inputs: PyTree = None) -> dist.Distribution:
        """Distribution of :math:`x_t` given :math:`x_{t-1}` = ``state`` (``t`` >= 1)."""

    @abc.abstractmethod
    def emission(self, params: PyTree, state: Array, t: Int[Array, ""], inputs: PyTree = None) -> dist.Distribution:
        """Distribution of :math:`y_t` given :math:`x_t` = ``state``."""

    @abc.abstractmethod
    def param_constraints(self) -> PyTree:
        """A pytree like params whose leaves are ``numpyro.distributions.constraints`` (support of each leaf)."""

    def prior(self) -> PyTree | None:
        """Default prior: a pytree like params with NumPyro distributions (or ``None`` for fixed leaves)."""
        return None

    def simulate(
        self, key: PRNGKeyArray, params: PyTree, num_timesteps: int, inputs: PyTree = None
    ) -> tuple[Array, Array]:
        """``(states, emissions)`` by ancestral sampling (the module function :func:`simulate`)."""
        return simulate(key, self, params, num_timesteps, inputs)

    def log_transition_bound(self, params: PyTree, t: Int[Array, ""], inputs: PyTree = None) -> Array | None:
        """An upper bound on :math:`\\log f_\\theta(x_t \\mid x_{t-1})` over both arguments, or ``None``."""
        return None

    def proposal(
        self, params: PyTree, state: Array, t: Int[Array, ""], emission: Array, inputs: PyTree = None
    ) -> dist.Distribution | None:
        """A proposal :math:`q(x_t \\mid x_{t-1}, y_t)` for guided filters (``t`` >= 1), or ``None``."""
        return None

    def initial_proposal(self, params: PyTree, emission: Array, inputs: PyTree = None) -> dist.Distribution | None:
        """A proposal :math:`q(x_0 \\mid y_0)` for guided filters, or ``None``."""
        return None


def inputs_at(inputs: PyTree, t: Int[Array, ""] | int) -> PyTree:
    """Slice time ``t`` out of an inputs pytree whose leaves have a leading time axis (``None`` passes through)."""
    if inputs is None:
        return None
    return jax.tree.map(lambda a: a[t], inputs)


def _num_steps(inputs: PyTree) -> int | None:
    leaves = jax.tree.leaves(inputs)
    return None if not leaves else leaves[0].shape[0]


def simulate(
    key: PRNGKeyArray,
    model: SSM,
    params: PyTree,
    num_timesteps: int,
    inputs: PyTree = None,
) -> tuple[Array, Array]:
    """Draw ``(states, emissions)`` with leading axis ``num_timesteps`` from the model by ancestral sampling.

    For models whose emissions depend on past emissions (e.g. HMM-GLMs), use the model family's own simulator.
    """
    check_key(key)
    num_timesteps = check_num_timesteps(num_timesteps)
    n_in = _num_steps(inputs)
    if n_in is not None and n_in < num_timesteps:
        raise ValueError(f"inputs has {n_in} time steps but num_timesteps={num_timesteps}; give one row per step.")
    k0, k1, key = jax.random.split(key, 3)
    u0 = inputs_at(inputs, 0)
    x0 = model.initial(params, u0).sample(k0)
    y0 = model.emission(params, x0, jnp.asarray(0), u0).sample(k1)

    def step(x_prev, args):
        k, t = args
        ka, kb = jax.random.split(k)
        u = inputs_at(inputs, t)
        x = model.transition(params, x_prev, t, u).sample(ka)
        y = model.emission(params, x, t, u).sample(kb)
        return x, (x, y)

    ts = jnp.arange(1, num_timesteps)
    _, (xs, ys) = jax.lax.scan(step, x0, (jax.random.split(key, num_timesteps - 1), ts))
    states = jnp.concatenate([x0[None], xs], axis=0)
    emissions = jnp.concatenate([y0[None], ys], axis=0)
    return states, emissions


def log_joint(
    model: SSM,
    params: PyTree,
    states: Array,
    emissions: Array,
    inputs: PyTree = None,
    mask: Array | None = None,
) -> Float[Array, ""]:
    """:math:`\\log p_\\theta(x_{0:T-1}, y_{0:T-1})`; time steps with ``mask == False`` contribute no emission term."""
    T = states.shape[0]
    ts = jnp.arange(T)
    lp0 = model.initial(params, inputs_at(inputs, 0)).log_prob(states[0])

    def trans_lp(x_prev, x, t):
        return model.transition(params, x_prev, t, inputs_at(inputs, t)).log_prob(x)

    def emit_lp(x, y, t):
        return model.emission(params, x, t, inputs_at(inputs, t)).log_prob(y)

    lp_trans = jax.vmap(trans_lp)(states[:-1], states[1:], ts[1:]).sum() if T > 1 else 0.0
    lp_emit = jax.vmap(emit_lp)(states, emissions, ts)
    if mask is not None:
        lp_emit = jnp.where(mask, lp_emit, 0.0)
    return lp0 + lp_trans + lp_emit.sum()


def discrete_log_potentials(
    model: SSM,
    params: PyTree,
    emissions: Array,
    inputs: PyTree = None,
    mask: Array | None = None,
) -> tuple[Float[Array, " S"], Float[Array, "Tm1 S S"], Float[Array, "T S"]]:
    """Log potentials of a discrete-state model for the forward algorithm, derived from the protocol.

    Returns ``log_initial[j] = log p(z_0=j)``, ``log_transitions[t-1, i, j] = log p(z_t=j | z_{t-1}=i)`` for
    ``t = 1..T-1`` and ``log_likelihoods[t, j] = log p(y_t | z_t=j)`` (0 where ``mask`` is False or the row of
    ``emissions`` holds a NaN: missing observations are marginalised out).
    """
    if not model.discrete_states:
        raise TypeError(f"{type(model).__name__} has continuous states; use a Kalman filter or SMC instead.")
    S = model.num_states
    states = jnp.arange(S)
    T = emissions.shape[0]
    ts = jnp.arange(T)
    if jnp.issubdtype(emissions.dtype, jnp.floating):  # NaN marks a missing observation: mask it out
        nan_rows = jnp.isnan(emissions.reshape(T, -1)).any(axis=1)
        mask = ~nan_rows if mask is None else jnp.asarray(mask, bool) & ~nan_rows
        emissions = jnp.where(jnp.isnan(emissions), 0, emissions)
    log_init = model.initial(params, inputs_at(inputs, 0)).log_prob(states)

    def trans_row(i, t):
        return model.transition(params, i, t, inputs_at(inputs, t)).log_prob(states)

    log_trans = jax.vmap(lambda t: jax.vmap(lambda i: trans_row(i, t))(states))(ts[1:])

    def emit(y, t):
        u = inputs_at(inputs, t)
        return jax.vmap(lambda z: model.emission(params, z, t, u).log_prob(y))(states)

    log_lik = jax.vmap(emit)(emissions, ts)
    if mask is not None:
        log_lik = jnp.where(mask[:, None], log_lik, 0.0)
    return log_init, log_trans, log_lik
