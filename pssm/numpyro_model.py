"""NumPyro models derived from the protocol, so ``numpyro.infer.SVI``, ``NUTS`` and ``HMCGibbs`` run on any model.

* Parameters: every leaf of the ``prior`` pytree that is a NumPyro distribution becomes a ``numpyro.sample``
  site named by its path (``"dynamics_weights"``, ``"emissions.rates"``); ``None`` leaves are held fixed at the
  matching leaf of ``params``.
* Continuous states: sampled with :func:`numpyro.contrib.control_flow.scan` (sites ``"x_0"`` and ``"x"`` with
  leading time axis ``T-1``); emissions observed at ``"y_0"``/``"y"``, masked steps contribute nothing.
* Discrete states: summed out exactly by the forward algorithm; the marginal log-likelihood enters through
  ``numpyro.factor("log_likelihood", ...)`` (batches of ragged sequences supported).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.control_flow import scan as npy_scan

from pssm.protocol import SSM, PyTree, inputs_at

__all__ = ["make_numpyro_model", "sample_params", "site_names"]


def _is_leaf(x):
    return x is None or isinstance(x, dist.Distribution)


def _name(path) -> str:
    return ".".join(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)


def site_names(prior: PyTree) -> list[str]:
    """Names of the sampled parameter sites of ``prior`` (in pytree order)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(prior, is_leaf=_is_leaf)
    return [_name(p) for p, leaf in flat if leaf is not None]


def sample_params(prior: PyTree, params: PyTree | None = None) -> PyTree:
    """Inside a NumPyro model: sample the distribution leaves of ``prior``, take the rest from ``params``."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(prior, is_leaf=_is_leaf)
    fixed = None if params is None else treedef.flatten_up_to(params)
    out = []
    for i, (path, leaf) in enumerate(flat):
        if leaf is None:
            if fixed is None:
                raise ValueError(
                    f"prior leaf '{_name(path)}' is None (fixed) but no params were given; pass params= with values "
                    "for the fixed leaves, or give that leaf a prior distribution."
                )
            out.append(fixed[i])
        else:
            out.append(numpyro.sample(_name(path), leaf))
    return jax.tree_util.tree_unflatten(treedef, out)


def make_numpyro_model(
    model: SSM,
    prior: PyTree | None = None,
    params: PyTree | None = None,
) -> Callable[..., None]:
    """Return a NumPyro model ``fn(emissions, inputs=None, mask=None, lengths=None)`` for ``model``.

    ``prior`` defaults to ``model.prior()``; with ``prior=None`` and no model prior, all params are fixed at
    ``params`` (the model then only has latent states, e.g. to smooth with SVI).  Continuous-state models take
    one sequence ``(T, ...)``; discrete-state models also take padded batches ``(B, T, ...)`` with ``lengths``.
    """
    if prior is None:
        prior = model.prior()
    if prior is None:
        if params is None:
            raise ValueError("model has no default prior: pass prior= (distributions / None leaves) or params=.")
        prior = jax.tree.map(lambda _: None, params)

    def numpyro_fn(emissions, inputs=None, mask=None, lengths=None):
        p = sample_params(prior, params)
        if model.discrete_states:
            _discrete_factor(model, p, emissions, inputs, mask, lengths)
        else:
            _continuous_scan(model, p, emissions, inputs, mask)

    return numpyro_fn


def _discrete_factor(model, p, emissions, inputs, mask, lengths):
    from pssm.inference.em import as_batch  # algorithms sit above the core; import on use
    from pssm.inference.forward_backward import hmm_log_likelihood
    from pssm.protocol import discrete_log_potentials

    batch = as_batch(emissions, mask, lengths, inputs)

    def one(y, m, n, u):
        li, lt, ll = discrete_log_potentials(model, p, y, u, m)
        return hmm_log_likelihood(li, lt, ll, n)

    lls = jax.vmap(one)(batch.emissions, batch.mask, batch.lengths, batch.inputs)
    numpyro.factor("log_likelihood", lls.sum())


def _continuous_scan(model, p, emissions, inputs, mask):
    T = emissions.shape[0]
    mask = jnp.ones(T, bool) if mask is None else jnp.asarray(mask, bool)
    u0 = inputs_at(inputs, 0)
    x0 = numpyro.sample("x_0", model.initial(p, u0))
    with numpyro.handlers.mask(mask=mask[0]):
        numpyro.sample("y_0", model.emission(p, x0, jnp.asarray(0), u0), obs=emissions[0])
    if T == 1:
        return

    def step(x_prev, args):
        t, y, m, u = args
        x = numpyro.sample("x", model.transition(p, x_prev, t, u))
        with numpyro.handlers.mask(mask=m):
            numpyro.sample("y", model.emission(p, x, t, u), obs=y)
        return x, None

    rest = None if inputs is None else jax.tree.map(lambda a: a[1:], inputs)
    npy_scan(step, x0, (jnp.arange(1, T), emissions[1:], mask[1:], rest))
