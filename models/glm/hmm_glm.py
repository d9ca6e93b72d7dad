"""The switching HMM-GLM (Li et al., ICLR 2024) as an :class:`~pssm.models.HMM` with :class:`GLMEmissions`.

:func:`HMMGLM` builds ``HMM(num_states, GLMEmissions(...), transition_component=StickyTransitions(...))``; params
are ``HMMParams(InitialParams, TransitionParams, GLMParams)``.  Fit with :func:`pssm.inference.fit_em` /
``fit_em_restarts``, evaluate with ``smoother`` / ``most_likely_states`` / ``marginal_log_likelihood`` (for the
one-hot prior at :func:`hard_adjacency_params`), simulate with :func:`pssm.simulate` (autoregressive through
``emission_lags``) or :func:`simulate_hmm_glm` for batches.  A one-state GLM is ``num_states=1``.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from pssm.display import short_repr
from pssm.models.glm.emission import GLMEmissions, GLMParams
from pssm.models.hmm.components import (
    InitialDistribution,
    InitialParams,
    StickyTransitions,
    TransitionParams,
    sticky_matrix,
)
from pssm.models.hmm.model import HMM, HMMParams
from pssm.protocol import simulate

__all__ = [
    "HMMGLM",
    "SyntheticHMMGLM",
    "hard_adjacency",
    "hard_adjacency_params",
    "simulate_hmm_glm",
    "synthetic_hmm_glm",
]


def HMMGLM(  # noqa: N802 (the model's name, kept for users)
    num_states: int,
    num_neurons: int,
    *,
    transition_concentration: float = 1.0,
    stickiness: float = 0.0,
    self_transition: float = 0.95,
    initial: Literal["learned", "fixed", "stationary"] = "learned",
    **settings: Any,
) -> HMM:
    """A switching population GLM: ``HMM`` with :class:`GLMEmissions` ``(num_neurons, **settings)`` and a sticky
    Dirichlet transition prior :math:`A_{i,:} \\sim \\mathrm{Dir}(\\alpha\\mathbf 1 + \\kappa e_i)`
    (``transition_concentration`` α, ``stickiness`` κ; ``self_transition`` is the starting diagonal)."""
    return HMM(
        int(num_states),
        GLMEmissions(int(num_neurons), **settings),
        InitialDistribution(initial),
        StickyTransitions(float(transition_concentration), float(stickiness), float(self_transition)),
    )


def hard_adjacency(eparams: GLMParams) -> Int[Array, "S N N"]:
    """Argmax adjacency in {-1 (inh), 0 (none), +1 (exc)} from ``adjacency_logits``."""
    if eparams.adjacency_logits is None:
        raise ValueError("hard_adjacency needs one-hot params (adjacency_logits is None).")
    return jnp.argmax(eparams.adjacency_logits, axis=-1) - 1


def hard_adjacency_params(params: HMMParams) -> HMMParams:
    """Params whose soft adjacency is exactly the argmax one-hot adjacency (for evaluation); others unchanged."""
    em = params.emissions
    if em.adjacency_logits is None:
        return params
    onehot = jax.nn.one_hot(jnp.argmax(em.adjacency_logits, -1), 3, dtype=em.adjacency_logits.dtype)
    return params._replace(emissions=em._replace(adjacency_logits=(onehot - 1.0) * 1e4))


def simulate_hmm_glm(
    key: PRNGKeyArray,
    model: HMM,
    params: HMMParams,
    num_timesteps: int,
    covariates: ArrayLike | None = None,
    num_sequences: int | None = None,
) -> tuple[Int[Array, "... T"], Float[Array, "... T N"]]:
    """:func:`pssm.simulate` (autoregressive history), ``vmap``-ed over ``num_sequences`` keys: ``(states,
    spikes)`` ``(T,)``, ``(T, N)`` or batches ``(B, T)``, ``(B, T, N)`` (``covariates`` then ``(B, T, D)``)."""
    model.check_params(params)
    D = model.emission_component.num_covariates
    cov = None if covariates is None else jnp.asarray(covariates)
    if D and cov is None:
        raise ValueError(f"the model has num_covariates={D}; pass covariates (T, D) (or (B, T, D)).")
    if not D and cov is not None:
        raise ValueError(
            "covariates were given but the model has num_covariates=0 (they would be ignored); build the model with "
            "HMMGLM(..., num_covariates=D) or pass covariates=None."
        )
    if D and cov.shape[-1] != D:
        raise ValueError(f"covariates must have {D} columns (num_covariates); got shape {tuple(cov.shape)}.")

    def one(k, c):
        z, y = simulate(k, model, params, num_timesteps, c)
        return z.astype(jnp.int32), y.astype(jnp.result_type(float))

    if num_sequences is None:
        return one(key, cov)
    keys = jax.random.split(key, int(num_sequences))
    if cov is None:
        return jax.vmap(lambda k: one(k, None))(keys)
    return jax.vmap(one)(keys, cov)


class SyntheticHMMGLM(NamedTuple):
    """A ground-truth switching GLM: model, params, adjacency ``(S, N, N)`` in {-1, 0, 1}, its prior ``A0``
    ``(N, N, 3)``, the edge weights ``(S, N, N)`` and which generator made it."""

    model: HMM
    params: HMMParams
    adjacency: Array
    adjacency_prior: Array
    weights: Array
    generator: str

    __repr__ = short_repr


def synthetic_hmm_glm(
    key: PRNGKeyArray,
    num_states: int = 5,
    num_neurons: int = 20,
    generator: Literal["demo", "paper"] = "demo",
    self_transition: float = 0.98,
    self_coupling: bool = False,
) -> SyntheticHMMGLM:
    """The paper's synthetic ground truth (Li et al. 2024, Sec. 5.1), with one of two weight scales.

    * ``'demo'`` (the released demo generator, used for Table 1): ``A0 ~ Dir(0.2, 1.6, 0.2)`` per edge,
      ``a_s ~ Cat(A0)`` per state, strengths ``3 U(0, 1)``, bias ``0.1 (U - 0.5)``, Poisson with sigmoid link;
    * ``'paper'`` (the scale stated in the text): ``A0 ~ Dir(0.1, 0.8, 0.1)``, ``log w~ ~ N(-5, 1.5)``, softplus
      link, bias ``0.1 (U - 0.5)``.

    Both: exponential K=1 basis, uniform initial distribution, self-transition ``self_transition`` with the rest
    spread evenly; ``self_coupling=False`` sets the diagonal of every ``a_s`` to "none".
    """
    if generator not in ("demo", "paper"):
        raise ValueError(f"generator must be 'demo' or 'paper'; got {generator!r}.")
    S, N = int(num_states), int(num_neurons)
    k0, k1, k2, k3 = jax.random.split(key, 4)
    if generator == "demo":
        conc, link = jnp.array([0.2, 1.6, 0.2]), "sigmoid"
        strength = 3.0 * jax.random.uniform(k2, (S, N, N))
    else:
        conc, link = jnp.array([0.1, 0.8, 0.1]), "softplus"
        strength = jnp.exp(-5.0 + 1.5 * jax.random.normal(k2, (S, N, N)))
    A0 = jnp.clip(jax.random.dirichlet(k0, conc, (N, N)), 1e-12, 1.0)
    A0 = A0 / A0.sum(-1, keepdims=True)
    cls = jax.random.categorical(k1, jnp.log(A0), shape=(S, N, N))  # 0 inh, 1 none, 2 exc
    if not self_coupling:
        cls = jnp.where(jnp.eye(N, dtype=bool)[None], 1, cls)
    adjacency = cls - 1
    weights = adjacency * strength
    bias = 0.1 * (jax.random.uniform(k3, (N,)) - 0.5)
    model = HMMGLM(S, N, basis="exponential", link=link, self_coupling=self_coupling, self_transition=self_transition)
    ftype = jnp.result_type(float)
    params = HMMParams(
        InitialParams(jnp.full((S,), 1.0 / S, ftype)),
        TransitionParams(sticky_matrix(S, self_transition, ftype)),
        GLMParams(bias.astype(ftype), weights=weights.astype(ftype)),
    )
    return SyntheticHMMGLM(model, params, adjacency, A0, weights, generator)
