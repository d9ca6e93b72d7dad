"""Switching HMM-GLMs in NumPyro: the states summed out by the forward algorithm, fitted by SVI.

:func:`hmm_glm_numpyro_model` samples the parameters and adds the exact marginal log-likelihood
:math:`\\sum_b \\log p(y_b \\mid \\theta)` (forward algorithm on :meth:`HMMGLM.log_likelihoods`) with
``numpyro.factor``.  Sites (shapes as in :class:`~pssm.models.hmm_glm.GLMParams`):

* ``initial_probs ~ Dir(1)``, ``transition_matrix ~ Dir(alpha 1 + kappa e_i)`` per row (only when ``S > 1``);
* ``bias``, ``input_weights`` ``~ N(0, param_scale)``;
* ``none``: ``weights ~ N(0, param_scale)``; ``l1``: ``weights ~ Laplace(0, 1/lambda)``; ``gaussian``:
  ``weights_mean ~ N(0, param_scale)``, ``weights ~ N(weights_mean, prior_scale)``; ``onehot``:
  ``prior_logits ~ N(0, param_scale)``, ``adjacency ~ Concrete(prior_logits, tau)`` (on the simplex,
  ``(S, N, N, 3)``), ``strength ~ N(0, param_scale)`` (strengths ``softplus(strength)``).

With ``self_coupling=False`` the diagonal entries are still sampled but masked out of the rates.
:func:`fit_hmm_glm_svi` fits an ``AutoNormal`` (mean field; for the one-hot prior the adjacency gets a
relaxed-categorical guide ``Concrete(logits_q, tau_q)`` with learned logits and temperature) or an ``AutoDelta``
(MAP) guide.  :mod:`pssm.inference.hmm_glm_nuts` runs NUTS on the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from jaxtyping import Array, Float, PRNGKeyArray
from numpyro.distributions import constraints
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDelta, AutoGuideList, AutoNormal
from pssm.inference.forward_backward import hmm_filter
from pssm.inference.hmm_glm_em import HMMGLMData, _as_data
from pssm.models.hmm_glm import HMMGLM, Concrete, GLMParams, HMMGLMParams

from pssm.arviz import summary_group, to_arviz

__all__ = ["hmm_glm_numpyro_model", "params_from_sites", "HMMGLMSVIResult", "fit_hmm_glm_svi"]


def params_from_sites(model: HMMGLM, sites: dict[str, Array]) -> tuple[HMMGLMParams, Array | None]:
    """Assemble :class:`HMMGLMParams` from NumPyro site values; returns ``(params, adjacency or None)``.

    For the one-hot prior the sampled adjacency (simplex, ``(S, N, N, 3)``) is returned separately and its log is
    stored in ``adjacency_logits`` (so ``softmax`` recovers it)."""
    S = model.num_states
    dtype = sites["bias"].dtype
    pi = sites.get("initial_probs", jnp.ones((1,), dtype)) if S > 1 else jnp.ones((1,), dtype)
    A = sites.get("transition_matrix", jnp.ones((1, 1), dtype)) if S > 1 else jnp.ones((1, 1), dtype)
    adj = sites.get("adjacency")
    em = GLMParams(
        sites["bias"],
        sites.get("weights"),
        sites.get("weights_mean"),
        sites.get("strength"),
        None if adj is None else jnp.log(jnp.maximum(adj, jnp.finfo(dtype).tiny)),
        sites.get("prior_logits"),
        sites.get("input_weights"),
    )
    return HMMGLMParams(pi, A, em), adj


def hmm_glm_numpyro_model(model: HMMGLM, data: Any) -> Callable[[], None]:
    """A NumPyro model (no arguments) for ``model`` on ``data`` with the states summed out exactly."""
    data = _as_data(model, data)
    shapes = model.param_shapes()
    S = model.num_states
    scale = model.param_scale
    dtype = data.spikes.dtype

    def normal(name, shape, loc=0.0, sd=scale):
        d = dist.Normal(jnp.broadcast_to(jnp.asarray(loc, dtype), shape), sd)
        return numpyro.sample(name, d.to_event(len(shape)))

    def numpyro_fn():
        sites = {}
        if S > 1:
            sites["initial_probs"] = numpyro.sample("initial_probs", dist.Dirichlet(jnp.ones(S, dtype)))
            conc = model.transition_prior_concentration().astype(dtype)
            sites["transition_matrix"] = numpyro.sample("transition_matrix", dist.Dirichlet(conc).to_event(1))
        sites["bias"] = normal("bias", shapes.bias)
        p = model.coupling_prior
        if p == "none":
            sites["weights"] = normal("weights", shapes.weights)
        elif p == "l1":
            if model.l1_penalty > 0:
                lap = dist.Laplace(jnp.zeros(shapes.weights, dtype), 1.0 / model.l1_penalty)
                sites["weights"] = numpyro.sample("weights", lap.to_event(3))
            else:
                sites["weights"] = normal("weights", shapes.weights)
        elif p == "gaussian":
            sites["weights_mean"] = normal("weights_mean", shapes.weights_mean)
            sites["weights"] = normal("weights", shapes.weights, sites["weights_mean"], model.prior_scale)
        elif p == "onehot":
            sites["prior_logits"] = normal("prior_logits", shapes.prior_logits)
            logits = jnp.broadcast_to(sites["prior_logits"], shapes.adjacency_logits)
            sites["adjacency"] = numpyro.sample("adjacency", Concrete(model.temperature, logits).to_event(3))
            sites["strength"] = normal("strength", shapes.strength)
        if shapes.input_weights is not None:
            sites["input_weights"] = normal("input_weights", shapes.input_weights)
        params, adj = params_from_sites(model, sites)
        coupling = model.coupling_weights(params.emissions, adj) if model.has_coupling else None
        ll = model.log_likelihoods(params, data.spikes, data.inputs, coupling)
        ll = jnp.where(data.mask[..., None], ll, 0.0)
        li = jnp.log(params.initial_probs)
        lA = jnp.log(params.transition_matrix)
        lls = jax.vmap(lambda l, n: hmm_filter(li, lA, l, n).log_likelihood)(ll, data.lengths)
        numpyro.factor("log_likelihood", lls.sum())

    return numpyro_fn


def _adjacency_guide(model: HMMGLM, init_logits: Array | None, dtype):
    shape = model.param_shapes().adjacency_logits

    def guide():
        logits = numpyro.param(
            "adjacency_q_logits", jnp.zeros(shape, dtype) if init_logits is None else jnp.asarray(init_logits, dtype)
        )
        tau = numpyro.param("adjacency_q_temperature", jnp.asarray(0.5, dtype), constraint=constraints.positive)
        return {"adjacency": numpyro.sample("adjacency", Concrete(tau, logits).to_event(3))}

    return guide


class HMMGLMSVIResult(NamedTuple):
    """SVI output: point params (guide medians / MAP; for the one-hot prior ``adjacency_logits`` are the guide's
    logits), the loss trace (negative ELBO), the guide and its fitted parameters."""

    params: HMMGLMParams
    losses: Float[Array, " steps"]
    guide: Any
    guide_params: dict

    def sample_posterior(self, key: PRNGKeyArray, num_samples: int) -> dict[str, Array]:
        """Draws of every site from the fitted guide."""
        return self.guide.sample_posterior(key, self.guide_params, sample_shape=(int(num_samples),))


def fit_hmm_glm_svi(
    key: PRNGKeyArray,
    model: HMMGLM,
    data: Any,
    *,
    guide: Literal["normal", "delta"] = "normal",
    num_steps: int = 2000,
    learning_rate: float = 0.01,
    init_params: HMMGLMParams | None = None,
    num_particles: int = 1,
    progress: bool = False,
) -> HMMGLMSVIResult:
    """Fit by SVI on the exact state-marginal likelihood.

    ``guide='normal'``: ``AutoNormal`` over the continuous sites (+ the relaxed-categorical adjacency guide for
    the one-hot prior); ``'delta'``: ``AutoDelta`` (MAP).  ``init_params`` (e.g. an EM fit) sets the guide's
    starting locations.  Adam with ``learning_rate``; ``num_particles`` ELBO particles.
    """
    data: HMMGLMData = _as_data(model, data)
    if guide not in ("normal", "delta"):
        raise ValueError(f"guide must be 'normal' or 'delta'; got {guide!r}.")
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}.")
    fn = hmm_glm_numpyro_model(model, data)
    init_values = None
    if init_params is not None:
        model.check_params(init_params)
        init_values = _sites_from_params(model, init_params)
    init_loc = (numpyro.infer.init_to_value(values=init_values) if init_values is not None
                else numpyro.infer.init_to_median(num_samples=15))
    onehot = model.coupling_prior == "onehot"
    if guide == "delta":
        g = AutoDelta(fn, init_loc_fn=init_loc)
    elif onehot:
        g = AutoGuideList(fn)
        init_logits = None if init_params is None else init_params.emissions.adjacency_logits
        g.append(_adjacency_guide(model, init_logits, data.spikes.dtype))
        g.append(AutoNormal(numpyro.handlers.block(fn, hide=["adjacency"]), init_loc_fn=init_loc, init_scale=0.05))
    else:
        g = AutoNormal(fn, init_loc_fn=init_loc, init_scale=0.05)
    svi = SVI(fn, g, optax.adam(learning_rate), Trace_ELBO(num_particles=int(num_particles)))
    res = svi.run(key, int(num_steps), progress_bar=progress)
    gp = res.params
    if guide == "delta" or not onehot:
        sites = g.median(gp)
    else:
        sites = g[1].median(gp)
    if onehot and guide == "normal":
        sites = dict(sites)
        sites["adjacency"] = jax.nn.softmax(gp["adjacency_q_logits"], -1)
    params, _ = params_from_sites(model, sites)
    if onehot and guide == "normal":
        params = params._replace(emissions=params.emissions._replace(adjacency_logits=gp["adjacency_q_logits"]))
    return HMMGLMSVIResult(params, res.losses, g, gp)


def _sites_from_params(model: HMMGLM, params: HMMGLMParams) -> dict[str, Array]:
    em = params.emissions
    out = {k: v for k, v in em._asdict().items() if v is not None and k != "adjacency_logits"}
    if model.num_states > 1:
        out["initial_probs"] = params.initial_probs
        out["transition_matrix"] = params.transition_matrix
    if em.adjacency_logits is not None:
        a = jax.nn.softmax(em.adjacency_logits, -1)
        a = jnp.clip(a, 1e-4, 1.0)
        out["adjacency"] = a / a.sum(-1, keepdims=True)
    return out


def sites_to_arviz_dims(model: HMMGLM) -> dict[str, list[str]]:
    """ArviZ dims of the NumPyro sites (``state``, ``neuron``, ``presyn`` ...)."""
    bias = ["neuron"] if model.shared_bias else ["state", "neuron"]
    return {
        "initial_probs": ["state"],
        "transition_matrix": ["state", "state_next"],
        "bias": bias,
        "weights": ["state", "neuron", "presyn_basis"],
        "weights_mean": ["neuron", "presyn_basis"],
        "strength": ["state", "neuron", "presyn_basis"],
        "adjacency": ["state", "neuron", "presyn", "adjacency_class"],
        "prior_logits": ["neuron", "presyn", "adjacency_class"],
        "input_weights": ["state", "neuron", "covariate"],
    }


@to_arviz.register(HMMGLMSVIResult)
def _svi_to_arviz(result: HMMGLMSVIResult, *, model: HMMGLM, key: PRNGKeyArray | None = None,
                  num_samples: int = 200) -> az.InferenceData:
    """Guide draws as the posterior (one chain; draws from ``key``) with dims ``state, neuron, presyn``; the
    loss trace in ``sample_stats``.  Without ``key`` the point estimates form a single draw."""
    dims = sites_to_arviz_dims(model)
    if key is None:
        sites = _sites_from_params(model, result.params)
        return summary_group(sites, {k: dims[k] for k in sites}, sample_stats={"loss": result.losses},
                             coords={"adjacency_class": ["inh", "none", "exc"]})
    draws = result.sample_posterior(key, num_samples)
    post = {k: np.asarray(v)[None] for k, v in draws.items() if k in dims}
    return az.from_dict(posterior=post, dims={k: dims[k] for k in post},
                        coords={"adjacency_class": ["inh", "none", "exc"]},
                        sample_stats={"loss": np.asarray(result.losses)[None, None]})
