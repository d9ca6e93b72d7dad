"""The deep Markov model and its guide as NumPyro programs (networks registered as NumPyro params).

``model_fn(emissions, valid, observed, annealing)`` and ``guide_fn(...)`` take a padded minibatch
``(B, T, D)`` with ``valid`` (real steps) and ``observed`` (non-missing) masks ``(B, T)``; time is a
``numpyro.contrib.control_flow.scan``.  Latent sites are scaled by ``annealing`` (KL annealing) and masked to
``valid``; the emission site (outside the scan: given the path the emissions are independent, so the emitter
runs once over all steps) is masked to ``valid & observed``.  The joint density of one sequence equals
:func:`pssm.log_joint` of the protocol model (a test checks it), so NumPyro's ``Trace_ELBO`` on these programs is
the ELBO of :mod:`pssm.inference.variational.bounds`.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro.contrib.control_flow import scan

from pssm.distributions import MissingEntries
from pssm.models.deep.dmm import DeepMarkovModel, DMMParams, emission_distribution
from pssm.models.deep.encoders import Encoder, EncoderParams

__all__ = ["make_vae_model", "make_vae_guide", "FlatModule", "MODEL_SITE", "GUIDE_SITE"]

MODEL_SITE = "model$params"
GUIDE_SITE = "guide$params"


class FlatModule:
    """A params pytree with equinox modules registered as **one** flat ``numpyro.param`` vector.

    ``numpyro.contrib.module.eqx_module`` registers the module's array pytree as the site value, and NumPyro
    0.22's ``contrib.control_flow.scan`` cannot replay a trace holding a pytree-valued site (``jnp.shape`` of the
    pytree fails), so the arrays are ravelled into one vector (same values, same optimiser arithmetic: every
    transformation used is element-wise)."""

    def __init__(self, template):
        arrays, self.static = eqx.partition(template, eqx.is_inexact_array)
        self.flat, self._unravel = ravel_pytree(arrays)

    def unflatten(self, flat):
        return eqx.combine(self._unravel(flat), self.static)

    def register(self, name: str):
        return self.unflatten(numpyro.param(name, self.flat))


def make_vae_model(model: DeepMarkovModel, params: DMMParams) -> Callable[..., None]:
    """NumPyro model of a minibatch; ``params`` initialises the ``MODEL_SITE`` param."""

    flat = FlatModule(params)

    def model_fn(emissions, valid, observed, annealing=1.0):
        p = flat.register(MODEL_SITE)
        B, T = emissions.shape[:2]
        y = jnp.swapaxes(emissions, 0, 1)  # (T, B, D); NaN at the missing entries of a partly observed step
        v = jnp.swapaxes(valid, 0, 1)
        o = jnp.swapaxes(valid & observed, 0, 1)
        z_init = jnp.broadcast_to(p.initial_latent, (B, model.latent_dim))

        def step(z_prev, v_t):
            loc, scale = jax.vmap(p.transition)(z_prev)
            with numpyro.plate("sequences", B), numpyro.handlers.scale(scale=annealing):
                with numpyro.handlers.mask(mask=v_t):
                    z = numpyro.sample("z", dist.Normal(loc, scale).to_event(1))
            return z, z

        _, zs = scan(step, z_init, v)
        # emissions are conditionally independent given the path: one batched emitter call over (T, B)
        raw = jax.vmap(jax.vmap(p.emitter))(zs)
        with numpyro.plate("time", T, dim=-2), numpyro.plate("sequences", B), numpyro.handlers.mask(mask=o):
            numpyro.sample("y", MissingEntries(emission_distribution(model.emission_kind, raw)), obs=y)

    return model_fn


def make_vae_guide(encoder: Encoder, params: EncoderParams) -> Callable[..., None]:
    """NumPyro guide :math:`q_\\phi(z \\mid y)` of a minibatch; ``params`` initialises ``GUIDE_SITE``."""

    flat = FlatModule(params)

    def guide_fn(emissions, valid, observed, annealing=1.0):
        g = flat.register(GUIDE_SITE)
        B = emissions.shape[0]
        h = jax.vmap(lambda e, va, ob: encoder.features(g, e, va, ob))(emissions, valid, observed)
        h = jnp.swapaxes(h, 0, 1)
        v = jnp.swapaxes(valid, 0, 1)
        z_init = jnp.broadcast_to(g.initial_latent, (B, encoder.latent_dim))

        def step(z_prev, xs):
            h_t, v_t = xs
            with numpyro.plate("sequences", B), numpyro.handlers.scale(scale=annealing):
                with numpyro.handlers.mask(mask=v_t):
                    z = numpyro.sample("z", encoder.step_distribution(g, z_prev, h_t))
            return z, None

        scan(step, z_init, (h, v))

    return guide_fn
