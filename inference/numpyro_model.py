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

from pssm.distributions import MissingEntries
from pssm.params import freeze, is_spec, path_name
from pssm.protocol import SSM, PyTree, inputs_at
from pssm.validation import has_partial_steps, split_missing

__all__ = ["make_numpyro_model", "sample_params", "site_names", "spec_sample_params"]


def _is_leaf(x):
    return x is None or isinstance(x, dist.Distribution)


def _name(path) -> str:
    return path_name(path)


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


def spec_sample_params(model: SSM, spec: PyTree, params: PyTree | None) -> PyTree:
    """Inside a NumPyro model: one site per trainable leaf of ``spec`` (its prior, or ``ImproperUniform`` on its
    constraint), frozen leaves from ``params``, and a factor ``"log_prior"`` carrying whatever part of
    ``model.log_prior`` the leaf priors do not (hierarchical terms), so the joint density is exactly
    ``model.log_prior(params)`` plus the likelihood."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(spec, is_leaf=is_spec)
    given = None if params is None else treedef.flatten_up_to(params)
    out, sampled_prior = [], []
    for i, (path, s) in enumerate(flat):
        name = path_name(path)
        if not s.trainable or (s.prior is None and given is None):
            if given is None:
                raise ValueError(
                    f"parameter '{name}' is frozen or has no prior of its own, so its value or shape must come from "
                    "params=; pass params (e.g. model.initialize(...))."
                )
            if not s.trainable:
                out.append(given[i])
                continue
        if s.prior is not None:
            v = numpyro.sample(name, s.prior)
            sampled_prior.append(jnp.sum(s.prior.log_prob(v)))
        else:
            v = numpyro.sample(name, dist.ImproperUniform(s.constraint, (), jnp.shape(given[i])))
        out.append(v)
    p = jax.tree_util.tree_unflatten(treedef, out)
    # the sampled leaves' priors are already in the density; the factor carries the rest of model.log_prior
    # (hierarchical terms, and the priors of frozen leaves, which are constants)
    numpyro.factor("log_prior", model.log_prior(p) - sum(sampled_prior, jnp.zeros(())))
    return p


def make_numpyro_model(
    model: SSM,
    prior: PyTree | None = None,
    params: PyTree | None = None,
    *,
    frozen: tuple[str, ...] = (),
) -> Callable[..., None]:
    """Return a NumPyro model ``fn(emissions, inputs=None, mask=None, lengths=None)`` for ``model``.

    By default the parameters follow ``model.param_spec()`` (with ``frozen`` paths held at ``params``), and the
    joint density is ``model.log_prior(params) + log p(y | params)`` — exactly EM's objective.  An explicit
    ``prior`` pytree (distributions, ``None`` = fixed at ``params``) replaces that.  Continuous-state models take
    one sequence ``(T, ...)``; discrete-state models take anything :func:`pssm.boundary.as_sequences` accepts.
    """
    if prior is None:
        spec = model.param_spec()
        spec = freeze(spec, *frozen) if frozen else spec

        def draw():
            return spec_sample_params(model, spec, params)

    else:

        def draw():
            return sample_params(prior, params)

    def numpyro_fn(emissions, inputs=None, mask=None, lengths=None):
        p = draw()
        if model.discrete_states:
            _discrete_factor(model, p, emissions, inputs, mask, lengths)
        else:
            _continuous_scan(model, p, emissions, inputs, mask)

    return numpyro_fn


def _discrete_factor(model, p, emissions, inputs, mask, lengths):
    from pssm.boundary import as_sequences, traced_sequences, with_model_inputs
    from pssm.data import Sequences
    from pssm.inference.exact.discrete import log_potentials_batch
    from pssm.inference.exact.forward_backward import hmm_log_likelihood

    if isinstance(emissions, Sequences):
        seqs = as_sequences(model, emissions)
    elif any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves((emissions, inputs, lengths))):
        seqs = traced_sequences(model, emissions, inputs, lengths)
    else:
        seqs = as_sequences(model, emissions, inputs, lengths=lengths)
    data = with_model_inputs(model, seqs)
    if mask is not None:
        m = data.mask & jnp.asarray(mask, bool).reshape(data.mask.shape)
        data = Sequences(data.emissions, m, data.lengths, data.inputs, data.kind, data.observed)
    li, lt, ll = log_potentials_batch(model, p, data)
    lls = jax.vmap(hmm_log_likelihood)(li, lt, ll, data.lengths)
    numpyro.factor("log_likelihood", lls.sum())


def _continuous_scan(model, p, emissions, inputs, mask):
    emissions = jnp.asarray(emissions)
    want = tuple(model.emission_shape)
    if emissions.ndim < 1 or tuple(emissions.shape[1:]) != want:
        raise ValueError(
            f"emissions has shape {tuple(emissions.shape)}; {type(model).__name__} (emission_shape {want}) takes one "
            f"sequence (T, *{want})."
        )
    # NaN marks a missing observation: its emission term is masked out (the latent path still runs through it)
    # (a step with some NaN entries: the observed ones count, see SSM.missing_entries)
    entries = model.missing_entries and has_partial_steps(emissions)
    emissions, mask = split_missing(emissions, 1, mask, entries=entries)
    emit = (lambda d: MissingEntries(d)) if entries else (lambda d: d)
    T = emissions.shape[0]
    u0 = inputs_at(inputs, 0)
    x0 = numpyro.sample("x_0", model.initial(p, u0))
    with numpyro.handlers.mask(mask=mask[0]):
        numpyro.sample("y_0", emit(model.emission(p, x0, jnp.asarray(0), u0)), obs=emissions[0])
    if T == 1:
        return

    def step(x_prev, args):
        t, y, m, u = args
        x = numpyro.sample("x", model.transition(p, x_prev, t, u))
        with numpyro.handlers.mask(mask=m):
            numpyro.sample("y", emit(model.emission(p, x, t, u)), obs=y)
        return x, None

    rest = None if inputs is None else jax.tree.map(lambda a: a[1:], inputs)
    npy_scan(step, x0, (jnp.arange(1, T), emissions[1:], mask[1:], rest))
