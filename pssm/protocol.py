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
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray
from numpyro.distributions import constraints

from pssm.distributions import observed_log_prob
from pssm.params import ParamSpec, check_params_against_spec, check_params_in_support, spec_log_prior
from pssm.validation import check_key, check_num_timesteps, has_partial_steps, split_missing

PyTree = Any

__all__ = [
    "SSM",
    "DiscreteSSM",
    "model_inputs",
    "lags_observed",
    "PyTree",
    "inputs_at",
    "simulate",
    "log_joint",
    "discrete_log_potentials",
]


class SSM(eqx.Module):
    """Abstract state-space model.

    Concrete models are final ``equinox.Module`` subclasses whose fields are fixed settings.  Required:
    :meth:`initial`, :meth:`transition`, :meth:`emission` (NumPyro distributions for one state),
    :attr:`emission_shape` and :meth:`param_constraints`.  Optional hooks return ``None`` when a model does not
    provide them.

    **Inputs and lagged emissions.**  ``inputs`` is a pytree with a leading time axis.  A model whose emissions
    depend on the last :attr:`emission_lags` emissions (an AR(p) emission, a GLM's spike history) declares
    :meth:`emission_features`: the per-step inputs the three distributions see are
    ``emission_features(past, inputs_t)`` with ``past[l] = y_{t-1-l}`` (zeros before the start of a sequence, so
    nothing leaks across sequences).  :func:`model_inputs` computes them once for a whole sequence; every
    algorithm calls it at its boundary.
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

    @property
    @abc.abstractmethod
    def emission_shape(self) -> tuple[int, ...]:
        """Shape of one observation :math:`y_t` (``()`` for a scalar)."""

    @abc.abstractmethod
    def param_constraints(self) -> PyTree:
        """A pytree like params whose leaves are ``numpyro.distributions.constraints`` (support of each leaf)."""

    def prior(self) -> PyTree | None:
        """Default prior: a pytree like params with NumPyro distributions (or ``None`` for leaves without one)."""
        return None

    def check_params(self, params: PyTree) -> None:
        """Boundary check of ``params`` for this model (outside ``jit``): the pytree structure of
        :meth:`param_spec`, the leaf shapes the spec declares, and every concrete leaf inside its support
        (finite, positive, positive-definite, ...); errors name the leaf.  Models add dimension checks."""
        if params is None:
            raise TypeError(
                f"params is None; pass {type(self).__name__}'s params (model.make_params(...), "
                "model.initialize(key, data) or a fit's result.params)."
            )
        spec = self.param_spec()
        check_params_against_spec(spec, params)
        check_params_in_support(spec, params)

    def param_spec(self) -> PyTree:
        """Per-leaf :class:`pssm.params.ParamSpec` (constraint, prior, trainable); by default built from
        :meth:`param_constraints` and :meth:`prior`."""
        cons = self.param_constraints()
        prior = self.prior()
        if prior is None:
            return jax.tree.map(lambda c: ParamSpec(c), cons, is_leaf=_is_constraint)
        flat_c, treedef = jax.tree_util.tree_flatten(cons, is_leaf=_is_constraint)
        flat_p = treedef.flatten_up_to(prior)
        return jax.tree_util.tree_unflatten(treedef, [ParamSpec(c, p) for c, p in zip(flat_c, flat_p, strict=True)])

    def log_prior(self, params: PyTree) -> Float[Array, ""]:
        """:math:`\\log p(\\theta)`, the one prior every fit uses (default: the sum of the leaf priors)."""
        return spec_log_prior(self.param_spec(), params)

    @property
    def emission_lags(self) -> int:
        """How many past emissions the emission distribution sees (0: none)."""
        return 0

    @property
    def takes_inputs(self) -> bool:
        """Whether the distributions read user ``inputs``.  ``False`` (the package's models without inputs or
        covariates) makes the boundary refuse inputs instead of ignoring them; a user's model may leave ``True``."""
        return True

    @property
    def missing_entries(self) -> bool:
        """How a step with some NaN entries counts: ``True`` (default) keeps its observed entries — the term
        :math:`\\log p(y_{t,o} \\mid x_t)` of :func:`pssm.distributions.observed_log_prob`, exact for emissions that
        factorise over entries and for Gaussian ones; ``False`` drops the step whole (models whose fitting cannot
        use a partly observed step, e.g. a full-covariance Gaussian HMM's EM)."""
        return True

    def emission_features(self, past: Array, inputs: PyTree = None) -> PyTree:
        """Per-step inputs from the last :attr:`emission_lags` emissions ``past`` ``(L, *emission_shape)``
        (``past[0] = y_{t-1}``) and the user's inputs at ``t``; the default passes ``inputs`` through."""
        return inputs

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


class DiscreteSSM(SSM):
    """Abstract discrete-state model: states are integers ``0..num_states-1``.

    Adds vectorised hooks used by exact inference, EM and the NumPyro bridge (defaults derive them from the
    protocol; models override them with faster closed forms):

    * :meth:`log_initial` ``(S,)``, :meth:`log_transition_matrices` ``(T-1, S, S)`` or ``(S, S)``;
    * :meth:`log_likelihoods` ``(T, S)``: :math:`\\log p(y_t \\mid z_t = s)` for one sequence.
    """

    discrete_states: ClassVar[bool] = True
    num_states: eqx.AbstractVar[int]

    def log_initial(self, params: PyTree, inputs: PyTree = None) -> Float[Array, " S"]:
        """:math:`\\log p(z_0 = s)` given the per-step inputs of a sequence (leading time axis)."""
        return self.initial(params, inputs_at(inputs, 0)).log_prob(jnp.arange(self.num_states))

    def log_transition_matrices(self, params: PyTree, num_timesteps: int, inputs: PyTree = None):
        """``(T-1, S, S)``: :math:`\\log p(z_t = j \\mid z_{t-1} = i)` for ``t = 1..T-1``."""
        states = jnp.arange(self.num_states)

        def at(t):
            u = inputs_at(inputs, t)
            return jax.vmap(lambda i: self.transition(params, i, t, u).log_prob(states))(states)

        return jax.vmap(at)(jnp.arange(1, num_timesteps))

    def log_likelihoods(self, params: PyTree, emissions: Array, inputs: PyTree = None) -> Float[Array, "T S"]:
        """:math:`\\log p(y_t \\mid z_t = s)` for every step and state (emissions without NaN)."""
        states = jnp.arange(self.num_states)

        def emit(y, t):
            u = inputs_at(inputs, t)
            return jax.vmap(lambda z: self.emission(params, z, t, u).log_prob(y))(states)

        return jax.vmap(emit)(emissions, jnp.arange(emissions.shape[0]))

    def observed_log_likelihoods(
        self, params: PyTree, emissions: Array, observed: Array, inputs: PyTree = None
    ) -> Float[Array, "T S"]:
        """:math:`\\log p(y_{t,o} \\mid z_t = s)` over the observed entries (``observed`` ``(T, *emission_shape)``
        bool; the values at unobserved entries are ignored).  Default: :func:`observed_log_prob` per state."""
        y = jnp.where(observed, emissions.astype(jnp.result_type(float)), jnp.nan)
        states = jnp.arange(self.num_states)

        def emit(y_t, t):
            u = inputs_at(inputs, t)
            return jax.vmap(lambda z: observed_log_prob(self.emission(params, z, t, u), y_t))(states)

        return jax.vmap(emit)(y, jnp.arange(y.shape[0]))


def _is_constraint(x) -> bool:
    return isinstance(x, constraints.Constraint)


def model_inputs(model: SSM, emissions: Array, inputs: PyTree = None) -> PyTree:
    """The per-step inputs of one sequence ``emissions`` ``(T, *emission_shape)`` as the model sees them.

    For a model with :attr:`SSM.emission_lags` ``L > 0`` step ``t`` gets
    ``model.emission_features(past_t, inputs_t)`` with ``past_t = (y_{t-1}, ..., y_{t-L})`` (zeros before ``t = 0``;
    NaN entries count as 0 here, and every algorithm skips the steps whose lags are missing: see
    :func:`lags_observed`); otherwise ``inputs`` is returned unchanged.
    """
    L = model.emission_lags
    if L == 0:
        return inputs
    y = jnp.asarray(emissions)
    y = jnp.where(jnp.isnan(y), 0, y) if jnp.issubdtype(y.dtype, jnp.floating) else y
    T = y.shape[0]
    padded = jnp.concatenate([jnp.zeros((L,) + y.shape[1:], y.dtype), y], axis=0)
    # past_t[l] = y[t-1-l] = padded[t + L - 1 - l]
    idx = jnp.arange(T)[:, None] + (L - 1 - jnp.arange(L))[None, :]
    windows = padded[idx]  # (T, L, ...)
    if inputs is None:
        return jax.vmap(lambda w: model.emission_features(w, None))(windows)
    return jax.vmap(model.emission_features)(windows, inputs)


def lags_observed(model: SSM, complete: Bool[Array, " T"]) -> Bool[Array, " T"]:
    """Whether step ``t``'s lagged emissions :math:`y_{t-1}, \\dots, y_{t-L}` were all observed
    (``complete[t - l]`` for ``l = 1..L``; steps before ``t = 0`` count as observed; all True when ``L = 0``).

    A model with emission lags conditions :math:`y_t` on its past emissions: a step whose lags hold a missing
    entry is not evaluated (its term of the conditional likelihood is dropped, as if :math:`y_t` were missing)
    rather than conditioned on a made-up value.  ``complete`` ``(T,)``: step fully observed.
    """
    L = model.emission_lags
    complete = jnp.asarray(complete, bool)
    if L == 0:
        return jnp.ones(complete.shape, bool)
    T = complete.shape[0]
    gaps = jnp.concatenate([jnp.zeros((L,), bool), ~complete])
    idx = jnp.arange(T)[:, None] + (L - 1 - jnp.arange(L))[None, :]  # gaps[t + L - 1 - l] = missing at t-1-l
    return ~gaps[idx].any(-1)


def complete_steps(emissions: Array) -> Bool[Array, " T"]:
    """``(T,)``: step without a NaN entry (a value masked out of the likelihood is still known: it feeds lags)."""
    y = jnp.asarray(emissions)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        return jnp.ones(y.shape[:1], bool)
    return ~jnp.isnan(y.reshape(y.shape[0], -1)).any(-1)


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
) -> tuple[PyTree, Array]:
    """Draw ``(states, emissions)`` with leading axis ``num_timesteps`` from the model by ancestral sampling.

    States may be pytrees (each leaf gets the time axis).  For a model with lagged emissions the features of
    step ``t`` are built from the *simulated* past emissions (autoregressive simulation).
    """
    check_key(key)
    if not isinstance(model, SSM):
        raise TypeError(f"model must be a pssm.SSM (e.g. pssm.models.HMM(...)); got {type(model).__name__}.")
    model.check_params(params)
    num_timesteps = check_num_timesteps(num_timesteps)
    n_in = _num_steps(inputs)
    if n_in is not None and n_in < num_timesteps:
        raise ValueError(f"inputs has {n_in} time steps but num_timesteps={num_timesteps}; give one row per step.")
    return _simulate(key, model, params, num_timesteps, inputs)


@eqx.filter_jit
def _simulate(key, model, params, num_timesteps, inputs):
    """:func:`simulate` compiled once per model, shapes and ``num_timesteps`` (a static int)."""
    L = model.emission_lags
    y_dtype = _emission_dtype(model, params)
    past0 = jnp.zeros((max(L, 1),) + tuple(model.emission_shape), y_dtype)

    def features(past, t):
        u = inputs_at(inputs, t)
        return model.emission_features(past, u) if L else u

    def push(past, y):
        return jnp.concatenate([y[None].astype(past.dtype), past[:-1]], axis=0) if L else past

    k0, k1, key = jax.random.split(key, 3)
    u0 = features(past0, 0)
    x0 = model.initial(params, u0).sample(k0)
    y0 = model.emission(params, x0, jnp.asarray(0), u0).sample(k1)

    def step(carry, args):
        x_prev, past = carry
        k, t = args
        ka, kb = jax.random.split(k)
        u = features(past, t)
        x = model.transition(params, x_prev, t, u).sample(ka)
        y = model.emission(params, x, t, u).sample(kb)
        return (x, push(past, y)), (x, y)

    ts = jnp.arange(1, num_timesteps)
    _, (xs, ys) = jax.lax.scan(step, (x0, push(past0, y0)), (jax.random.split(key, num_timesteps - 1), ts))
    states = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], axis=0), x0, xs)
    emissions = jnp.concatenate([y0[None].astype(ys.dtype), ys], axis=0)
    return states, emissions


def _emission_dtype(model, params):
    leaves = [a for a in jax.tree.leaves(params) if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)]
    return leaves[0].dtype if leaves else jnp.result_type(float)


def log_joint(
    model: SSM,
    params: PyTree,
    states: PyTree,
    emissions: Array,
    inputs: PyTree = None,
    mask: Array | None = None,
) -> Float[Array, ""]:
    """:math:`\\log p_\\theta(x_{0:T-1}, y_{0:T-1})`; steps with ``mask == False`` or a NaN in their emission
    (missing) contribute no emission term.  Compiled once per model, shapes and dtypes."""
    T = jnp.shape(emissions)[0]
    for leaf in jax.tree.leaves(states):
        if jnp.shape(leaf)[:1] != (T,):
            raise ValueError(f"states must have one entry per emission (leading axis {T}); got {jnp.shape(leaf)}.")
    if model.discrete_states and not isinstance(states, jax.core.Tracer):
        z = np.asarray(states)  # host-side: no eager reductions to compile
        if z.size and not (z.min() >= 0 and z.max() < model.num_states):
            raise ValueError(
                f"states must be integers in [0, {model.num_states}) for a {model.num_states}-state model; got values "
                f"from {int(z.min())} to {int(z.max())}."
            )
    return _log_joint(model, params, states, emissions, inputs, mask)


@eqx.filter_jit
def _log_joint(model, params, states, emissions, inputs, mask):
    emissions = jnp.asarray(emissions)
    complete = complete_steps(emissions) if model.emission_lags else None
    emissions, observed = split_missing(emissions, 1, mask, entries=model.missing_entries)
    mask = None if mask is None and emissions.dtype.kind not in "fc" else observed
    if complete is not None:
        mask = lags_observed(model, complete) & (True if mask is None else mask)
    T = emissions.shape[0]
    ts = jnp.arange(T)
    inputs = model_inputs(model, emissions, inputs)
    x_first = jax.tree.map(lambda a: a[0], states)
    lp0 = model.initial(params, inputs_at(inputs, 0)).log_prob(x_first)

    def trans_lp(x_prev, x, t):
        return model.transition(params, x_prev, t, inputs_at(inputs, t)).log_prob(x)

    def emit_lp(x, y, t):
        return observed_log_prob(model.emission(params, x, t, inputs_at(inputs, t)), y)

    prev = jax.tree.map(lambda a: a[:-1], states)
    nxt = jax.tree.map(lambda a: a[1:], states)
    lp_trans = jax.vmap(trans_lp)(prev, nxt, ts[1:]).sum() if T > 1 else 0.0
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
    """Log potentials of a discrete-state model for the forward algorithm (one sequence).

    Returns ``log_initial[j] = log p(z_0=j)``, ``log_transitions[t-1, i, j] = log p(z_t=j | z_{t-1}=i)`` for
    ``t = 1..T-1`` and ``log_likelihoods[t, j] = log p(y_t | z_t=j)`` (0 where ``mask`` is False or the row of
    ``emissions`` holds a NaN: missing observations are marginalised out).  ``inputs`` are the user's inputs;
    lagged features are computed here by :func:`model_inputs`.
    """
    if not model.discrete_states:
        raise TypeError(f"{type(model).__name__} has continuous states; use a Kalman filter or SMC instead.")
    entries = has_partial_steps(emissions) if model.missing_entries else False
    return _discrete_log_potentials(model, params, emissions, inputs, mask, entries)


@eqx.filter_jit
def _discrete_log_potentials(model, params, emissions, inputs, mask, entries):
    T = emissions.shape[0]
    feats = model_inputs(model, emissions, inputs)
    emissions = jnp.asarray(emissions)
    complete = complete_steps(emissions) if model.emission_lags else None
    emissions, mask = split_missing(emissions, 1, mask, entries=entries)  # NaN marks a missing observation
    if complete is not None:
        mask = mask & lags_observed(model, complete)
    log_init = model.log_initial(params, feats)
    log_trans = model.log_transition_matrices(params, T, feats)
    if entries:
        seen = ~jnp.isnan(emissions)
        log_lik = model.observed_log_likelihoods(params, jnp.where(seen, emissions, 0), seen, feats)
    else:
        log_lik = model.log_likelihoods(params, emissions, feats)
    if mask is not None:
        log_lik = jnp.where(mask[:, None], log_lik, 0.0)
    return log_init, log_trans, log_lik
