"""NUTS over the continuous parameters of a switching HMM-GLM, with the states summed out exactly.

Runs :class:`numpyro.infer.NUTS` on :func:`pssm.inference.hmm_glm_svi.hmm_glm_numpyro_model` (forward
algorithm through ``numpyro.factor``): a check on EM's point estimates and a source of posterior uncertainty for
small problems (each gradient is a forward pass over all bins, and a trajectory has up to
``2**max_tree_depth`` of them).  Start the chain at an EM fit (``init_params``) to stay in one labelling mode:
the posterior is invariant to permutations of the states, and NUTS does not switch between the modes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import arviz as az
import numpy as np
from jaxtyping import PRNGKeyArray
from numpyro.infer import MCMC, NUTS, init_to_median, init_to_value
from pssm.inference.hmm_glm_em import _as_data
from pssm.inference.hmm_glm_svi import _sites_from_params, hmm_glm_numpyro_model, params_from_sites, sites_to_arviz_dims
from pssm.models.hmm_glm import HMMGLM, HMMGLMParams

from pssm.arviz import to_arviz

__all__ = ["HMMGLMNUTSResult", "fit_hmm_glm_nuts"]


class HMMGLMNUTSResult(NamedTuple):
    """Posterior draws per site (leading axes ``chain, draw``), the posterior-mean params, and the MCMC object."""

    samples: dict
    mean_params: HMMGLMParams
    mcmc: MCMC


def fit_hmm_glm_nuts(
    key: PRNGKeyArray,
    model: HMMGLM,
    data: Any,
    *,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 1,
    init_params: HMMGLMParams | None = None,
    max_tree_depth: int = 8,
    target_accept_prob: float = 0.8,
    progress: bool = False,
) -> HMMGLMNUTSResult:
    """Sample :math:`p(\\theta \\mid y)` with NUTS (chains run sequentially on CPU)."""
    data = _as_data(model, data)
    if int(num_warmup) < 1 or int(num_samples) < 1 or int(num_chains) < 1:
        raise ValueError("num_warmup, num_samples and num_chains must be >= 1.")
    fn = hmm_glm_numpyro_model(model, data)
    if init_params is not None:
        model.check_params(init_params)
        init = init_to_value(values=_sites_from_params(model, init_params))
    else:
        init = init_to_median(num_samples=15)
    kernel = NUTS(fn, init_strategy=init, max_tree_depth=int(max_tree_depth),
                  target_accept_prob=float(target_accept_prob))
    mcmc = MCMC(kernel, num_warmup=int(num_warmup), num_samples=int(num_samples), num_chains=int(num_chains),
                chain_method="sequential", progress_bar=progress)
    mcmc.run(key)
    samples = mcmc.get_samples(group_by_chain=True)
    mean_sites = {k: v.mean((0, 1)) for k, v in samples.items()}
    mean_params, _ = params_from_sites(model, mean_sites)
    return HMMGLMNUTSResult(samples, mean_params, mcmc)


@to_arviz.register(HMMGLMNUTSResult)
def _nuts_to_arviz(result: HMMGLMNUTSResult, *, model: HMMGLM) -> az.InferenceData:
    """NUTS draws with dims ``state, neuron, presyn`` (plus divergences and tree depth in ``sample_stats``)."""
    dims = sites_to_arviz_dims(model)
    post = {k: np.asarray(v) for k, v in result.samples.items()}
    extra = result.mcmc.get_extra_fields(group_by_chain=True)
    stats = {k: np.asarray(v) for k, v in extra.items() if k in ("diverging", "num_steps", "accept_prob")}
    return az.from_dict(posterior=post, dims={k: dims[k] for k in post if k in dims}, sample_stats=stats,
                        coords={"adjacency_class": ["inh", "none", "exc"]})

