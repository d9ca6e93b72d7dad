"""Stochastic variational inference for any model through the NumPyro bridge.

The NumPyro model is :func:`pssm.inference.make_numpyro_model` (one site per trainable params leaf, the rest of
``model.log_prior`` as a factor, states summed out exactly for discrete-state models), so the joint density is EM's
objective :math:`\\log p(y \\mid \\theta) + \\log p(\\theta)`.  ``guide='delta'`` (``AutoDelta``) gives a MAP estimate;
``'normal'`` (``AutoNormal``, mean field on the unconstrained space) an approximate posterior.  Both start at
``params``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray
from numpyro.infer import SVI, Trace_ELBO, init_to_value
from numpyro.infer.autoguide import AutoDelta, AutoNormal

from pssm.arviz import summary_group, to_arviz
from pssm.boundary import as_sequences
from pssm.display import short_repr
from pssm.inference.chunked import run_chunked
from pssm.inference.numpyro_model import make_numpyro_model
from pssm.inference.smc.filter import validate_sequence
from pssm.params import freeze, is_spec, leaf_names, path_name
from pssm.protocol import PyTree
from pssm.validation import check_key, check_positive_int, check_real

__all__ = ["SVIResult", "fit_svi"]


class SVIResult(NamedTuple):
    """Point params (guide medians; frozen leaves as given), the loss trace (negative ELBO), the guide and its
    fitted parameters."""

    params: PyTree
    losses: Float[Array, " steps"]
    guide: Any
    guide_params: dict

    def sample_posterior(self, key: PRNGKeyArray, num_samples: int) -> dict[str, Array]:
        """Draws of every parameter site from the fitted guide."""
        return self.guide.sample_posterior(key, self.guide_params, sample_shape=(int(num_samples),))

    __repr__ = short_repr


def _sites(spec, params):
    flat, treedef = jax.tree_util.tree_flatten_with_path(spec, is_leaf=is_spec)
    values = treedef.flatten_up_to(params)
    return {path_name(p): v for (p, s), v in zip(flat, values, strict=True) if s.trainable}, flat, treedef, values


def fit_svi(
    key: PRNGKeyArray,
    model,
    params: PyTree,
    data: Any,
    *,
    inputs: PyTree = None,
    num_iters: int = 1000,
    learning_rate: float = 0.01,
    guide: Literal["delta", "normal"] = "delta",
    init_scale: float = 0.05,
    frozen: Sequence[str] = (),
    progress: bool = False,
    chunk_size: int = 500,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> SVIResult:
    """Fit ``model`` by SVI (Adam, ``num_iters`` steps) on ``data`` (anything the model's boundary accepts),
    starting the guide at ``params`` (also the values of the ``frozen`` leaves).

    The steps run in jitted chunks of ``chunk_size``; ``checkpoint``: a file the SVI state and losses are saved to
    every ``checkpoint_every`` chunks and resumed from when it exists, ending exactly as an uninterrupted run
    (:func:`pssm.inference.chunked.run_chunked`)."""
    check_key(key)
    num_iters = check_positive_int(num_iters, "num_iters")
    if guide not in ("delta", "normal"):
        raise ValueError(f"guide must be 'delta' or 'normal'; got {guide!r}.")
    check_real(learning_rate, "learning_rate", low=0.0, fix="Give Adam's step size, e.g. 0.01.")
    if hasattr(model, "check_params"):
        model.check_params(params)
    frozen = (frozen,) if isinstance(frozen, str) else tuple(frozen)
    # empty leaves (e.g. the input weights of a model without inputs) have nothing to fit: held as given
    empty = [n for n, v in zip(leaf_names(params), jax.tree.leaves(params), strict=True) if np.size(v) == 0]
    frozen += tuple(n for n in empty if n not in frozen)
    spec = model.param_spec()
    spec = freeze(spec, *frozen) if frozen else spec
    init, flat, treedef, given = _sites(spec, params)
    fn = make_numpyro_model(model, params=params, frozen=frozen)
    if model.discrete_states:
        args, kwargs = (as_sequences(model, data, inputs),), {}
    else:  # one sequence: ±inf refused, NaN rows (missing) masked out of the emission terms by the bridge
        validate_sequence(data, inputs, None, "data", model=model)  # the checks; the bridge masks NaN itself
        args, kwargs = (jnp.asarray(data),), ({} if inputs is None else {"inputs": inputs})
    loc = init_to_value(values=init)
    g = AutoDelta(fn, init_loc_fn=loc) if guide == "delta" else AutoNormal(fn, init_loc_fn=loc, init_scale=init_scale)
    svi = SVI(fn, g, optax.adam(learning_rate), Trace_ELBO())
    state = svi.init(key, *args, **kwargs)
    # The update is compiled with the SVI object as a static argument: a fresh one per call would compile again.
    # The update depends on the model, the guide's kind, the optimiser and the held leaves' values (the start
    # only enters ``state``), so one SVI object serves every call that agrees on those.
    frozen_values = [v for (_, s), v in zip(flat, given, strict=True) if not s.trainable]
    held = _by_value(frozen_values), tuple((np.shape(v), str(jnp.result_type(v))) for v in given)
    svi = _same_update(
        (_settings_key(model), treedef, guide, float(learning_rate), float(init_scale), frozen, held, inputs is None),
        svi,
    )
    state, losses = run_chunked(
        _svi_step,
        state,
        key,
        num_iters,
        args=(svi, args, kwargs),
        chunk_size=chunk_size,
        progress=progress,
        desc="SVI",
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
    )
    fitted = svi.get_params(state)
    med = g.median(fitted)
    leaves = [med[path_name(p)] if s.trainable else v for (p, s), v in zip(flat, given, strict=True)]
    return SVIResult(jax.tree_util.tree_unflatten(treedef, leaves), jnp.asarray(losses), g, fitted)


_UPDATES: OrderedDict = OrderedDict()  # settings (models compare by their settings) -> SVI


def _settings_key(model) -> Any:
    """``model`` itself when hashable, else its tree structure and leaves in order, arrays by value (a GLM's basis
    is a NumPy array)."""
    try:
        hash(model)
        return model
    except TypeError:
        leaves, treedef = jax.tree.flatten(model)
        return treedef, _by_value(leaves)


def _by_value(leaves: list) -> tuple:
    """A hashable key of ``leaves`` in order: arrays by shape, dtype and bytes, other leaves as they are."""
    arr = (np.ndarray, np.generic, jax.Array)
    return tuple(
        (np.shape(v), str(np.asarray(v).dtype), np.asarray(v).tobytes()) if isinstance(v, arr) else v for v in leaves
    )


def _same_update(settings: tuple, svi: SVI) -> SVI:
    """The SVI object first built for ``settings`` (its compiled update is reused), else ``svi``; the 32 most
    recent settings are kept."""
    if settings in _UPDATES:
        _UPDATES.move_to_end(settings)
        return _UPDATES[settings]
    _UPDATES[settings] = svi
    if len(_UPDATES) > 32:
        _UPDATES.popitem(last=False)
    return svi


def _svi_step(key, state, svi, args, kwargs):
    """One SVI update (its randomness comes from the SVI state's own key)."""
    return svi.update(state, *args, **kwargs)


@to_arviz.register(SVIResult)
def _svi_to_arviz(result: SVIResult, *, key: PRNGKeyArray | None = None, num_samples: int = 200, model=None):
    """Guide draws as the posterior (one chain, drawn with ``key``), or without ``key`` the point params as one
    draw; the loss trace in ``sample_stats``."""
    import arviz as az

    if key is None:
        from pssm.params import leaf_names

        post = dict(zip(leaf_names(result.params), map(np.asarray, jax.tree.leaves(result.params)), strict=True))
        return summary_group(post, {}, sample_stats={"loss": result.losses})
    draws = result.sample_posterior(key, num_samples)
    return az.from_dict(
        posterior={k: np.asarray(v)[None] for k, v in draws.items()},
        sample_stats={"loss": np.asarray(result.losses)[None, None]},
    )
