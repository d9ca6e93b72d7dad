"""The hidden Markov model: three components over a nested params pytree.

.. math::

    z_0 \\sim \\mathrm{Cat}(\\pi),\\quad z_t \\mid z_{t-1} \\sim \\mathrm{Cat}(A_{z_{t-1}, :}),\\quad
    y_t \\mid z_t, u_t \\sim g_{\\phi}(\\cdot \\mid z_t, u_t),

with :math:`u_t` the model inputs of step ``t`` (user inputs, and past emissions for AR and GLM emissions).
Params are ``HMMParams(initial, transitions, emissions)``, each the params of its component; the prior is the
sum of the components' priors (the one :meth:`HMM.log_prior` EM, the NumPyro bridge and every fit use).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray

from pssm.boundary import as_model_data
from pssm.display import short_repr
from pssm.models.hmm.components import (
    InitialDistribution,
    InitialParams,
    StickyTransitions,
    TransitionComponent,
    TransitionParams,
)
from pssm.models.hmm.emissions import (
    CategoricalEmissions,
    CategoricalParams,
    EmissionComponent,
    GaussianEmissions,
    GaussianParams,
    PoissonEmissions,
    PoissonParams,
)
from pssm.params import check_params_against_spec, check_params_in_support, is_spec
from pssm.protocol import DiscreteSSM
from pssm.validation import check_key, check_positive_int

PyTree = Any

__all__ = [
    "HMM",
    "HMMParams",
    "InitialParams",
    "TransitionParams",
    "InitialDistribution",
    "StickyTransitions",
    "EmissionComponent",
    "PoissonEmissions",
    "PoissonParams",
    "GaussianEmissions",
    "GaussianParams",
    "CategoricalEmissions",
    "CategoricalParams",
]


class HMMParams(NamedTuple):
    initial: InitialParams
    transitions: PyTree
    emissions: PyTree

    __repr__ = short_repr


class HMM(DiscreteSSM):
    """Discrete-state HMM: ``num_states`` states, an emission component, an initial distribution (learned,
    fixed or stationary) and a transition component (sticky Dirichlet by default)."""

    num_states: int
    emission_component: EmissionComponent
    initial_component: InitialDistribution = InitialDistribution()
    transition_component: TransitionComponent = StickyTransitions()

    def __check_init__(self):
        check_positive_int(self.num_states, "num_states")
        if not isinstance(self.emission_component, EmissionComponent):
            raise TypeError(
                f"emission_component must be an EmissionComponent (e.g. PoissonEmissions(emission_dim)); got "
                f"{type(self.emission_component).__name__}. Use HMM(num_states, PoissonEmissions(D))."
            )

    # ------------------------------------------------------------------ declared shapes
    @property
    def emission_shape(self) -> tuple[int, ...]:
        return tuple(self.emission_component.emission_shape)

    @property
    def data_kind(self) -> str:
        return self.emission_component.data_kind

    @property
    def num_classes(self) -> int | None:
        return getattr(self.emission_component, "num_classes", None)

    @property
    def emission_lags(self) -> int:
        return self.emission_component.emission_lags

    @property
    def takes_inputs(self) -> bool:
        return self.emission_component.takes_inputs

    @property
    def missing_entries(self) -> bool:
        return self.emission_component.missing_entries

    def emission_features(self, past: Array, inputs: PyTree = None) -> PyTree:
        return self.emission_component.features(past, inputs)

    # ------------------------------------------------------------------ params
    def param_spec(self) -> HMMParams:
        S = self.num_states
        return HMMParams(
            self.initial_component.param_spec(S),
            self.transition_component.param_spec(S),
            self.emission_component.param_spec(S),
        )

    def param_constraints(self) -> HMMParams:
        return jax.tree.map(lambda s: s.constraint, self.param_spec(), is_leaf=is_spec)

    def log_prior(self, params: HMMParams) -> Float[Array, ""]:
        S = self.num_states
        return (
            self.initial_component.log_prior(params.initial, S)
            + self.transition_component.log_prior(params.transitions, S)
            + self.emission_component.log_prior(params.emissions, S)
        )

    def check_params(self, params: HMMParams) -> None:
        """Structure, number-of-states, shape and support checks, with messages naming the leaf."""
        spec = self.param_spec()
        check_params_against_spec(spec, params)
        S = self.num_states
        A = self.transition_component.matrix(params.transitions)
        if tuple(jnp.shape(A)) != (S, S):
            raise ValueError(f"params.transitions gives a {jnp.shape(A)} matrix; this model has {S} states.")
        if params.initial.probs is not None and tuple(jnp.shape(params.initial.probs)) != (S,):
            raise ValueError(f"params.initial.probs has shape {jnp.shape(params.initial.probs)}; expected ({S},).")
        got = self.emission_component.num_states_of(params.emissions)
        if got != S:
            raise ValueError(f"params.emissions describe {got} states; this model has num_states={S}.")
        check_params_in_support(spec, params)

    def initialize(self, key: PRNGKeyArray, data: Any, *, inputs: Any = None) -> HMMParams:
        """Starting params: the components' own initialisations (k-means on the observed rows for the closed-form
        emissions).  ``data``: anything :func:`pssm.boundary.as_model_data` accepts (prepared once)."""
        check_key(key)
        data = as_model_data(self, data, inputs)
        k0, k1, k2 = jax.random.split(key, 3)
        dtype = _float_dtype(data)
        S = self.num_states
        return HMMParams(
            self.initial_component.initialize(k0, S, dtype),
            self.transition_component.initialize(k1, S, dtype),
            self.emission_component.initialize(k2, S, data),
        )

    # ------------------------------------------------------------------ protocol
    def _log_pi(self, params):
        return self.initial_component.log_probs(params.initial, self.transition_component.matrix(params.transitions))

    def initial(self, params: HMMParams, inputs=None):
        return dist.Categorical(logits=self._log_pi(params))

    def transition(self, params: HMMParams, state, t, inputs=None):
        return dist.Categorical(probs=self.transition_component.matrix(params.transitions)[state])

    def emission(self, params: HMMParams, state, t, inputs=None):
        return self.emission_component.distribution(params.emissions, state, inputs)

    def log_initial(self, params: HMMParams, inputs=None) -> Float[Array, " S"]:
        return self._log_pi(params)

    def log_transition_matrices(self, params: HMMParams, num_timesteps: int, inputs=None):
        """The time-homogeneous ``(S, S)`` log matrix (the forward-backward routines broadcast it)."""
        A = self.transition_component.matrix(params.transitions)
        return jnp.log(jnp.maximum(A, jnp.finfo(A.dtype).tiny))

    def log_likelihoods(self, params: HMMParams, emissions: Array, inputs=None) -> Float[Array, "T S"]:
        return self.emission_component.log_likelihoods(params.emissions, emissions, inputs)

    def observed_log_likelihoods(self, params: HMMParams, emissions: Array, observed: Array, inputs=None):
        return self.emission_component.observed_log_likelihoods(params.emissions, emissions, observed, inputs)


def _float_dtype(data):
    e = data.emissions
    return e.dtype if jnp.issubdtype(e.dtype, jnp.floating) else jnp.result_type(float)
