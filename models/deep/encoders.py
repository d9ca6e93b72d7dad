"""Inference networks of the deep Markov model: the guide :math:`q_\\phi(z_{0:T-1} \\mid y)` and its SMC proposal.

.. math::

    q_\\phi(z_{0:T-1} \\mid y) = \\prod_t N\\big(z_t;\\ \\mathrm{combiner}(z_{t-1}, h_t)\\big),
    \\qquad z_{-1} = \\zeta_q,

with :math:`h_t` from a recurrent network over the observations: ``'backward'`` (over :math:`y_{t:T-1}`, the
structured smoothing guide of Krishnan et al. 2017 and Pyro's DMM; ``num_flows`` inverse autoregressive flow steps
may be stacked on each step's Gaussian, as in Pyro's DMM with IAF), ``'forward'`` (a filtering guide over
:math:`y_{0:t}`) or ``'bidirectional'`` (both, concatenated).  Ragged sequences: steps outside ``valid`` reset
the recurrence to the learned :math:`h_0`, so :math:`h_t` only sees the sequence's own steps; a missing
observation (``observed[t] == False``) enters the network as zeros.

:meth:`Encoder.feynman_kac` turns the guide into a guided particle filter (``FeynmanKac``) whose proposal is
:math:`q_\\phi(z_t \\mid z_{t-1}, h_t)`; the features :math:`h` are passed as the filter's ``inputs``.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from pssm.display import short_repr
from pssm.models.deep.networks import MADE, Combiner, ElmanCell, make_cell
from pssm.validation import check_key

__all__ = ["Encoder", "EncoderParams", "DIRECTIONS"]

DIRECTIONS = ("backward", "forward", "bidirectional")


class EncoderParams(NamedTuple):
    """Recurrent cells (one per direction), their initial hidden states, :math:`\\zeta_q` and the combiner."""

    cells: tuple
    initial_hidden: Float[Array, "R H"]
    initial_latent: Float[Array, " Z"]
    combiner: Combiner
    flows: tuple = ()

    __repr__ = short_repr


class Encoder(eqx.Module):
    """Amortised guide (final).  Settings: ``latent_dim``, ``emission_dim``, ``hidden`` (recurrent units per
    direction), ``direction``, ``cell`` (``'rnn'``: ReLU Elman as in Pyro's DMM, or ``'gru'``)."""

    latent_dim: int
    emission_dim: int
    hidden: int = 600
    direction: Literal["backward", "forward", "bidirectional"] = "backward"
    cell: Literal["rnn", "gru"] = "rnn"
    num_flows: int = 0
    flow_hidden: int = 100

    def __check_init__(self):
        for name in ("latent_dim", "emission_dim", "hidden"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}.")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}; got {self.direction!r}.")
        if self.cell not in ("rnn", "gru"):
            raise ValueError(f"cell must be 'rnn' or 'gru'; got {self.cell!r}.")
        if not isinstance(self.num_flows, int) or self.num_flows < 0:
            raise ValueError(
                f"num_flows must be an int >= 0 (inverse autoregressive flow steps); got {self.num_flows!r}."
            )

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    @property
    def feature_dim(self) -> int:
        return self.hidden * self.num_directions

    def init_params(self, key: PRNGKeyArray) -> EncoderParams:
        check_key(key)
        keys = jax.random.split(key, self.num_directions + 1 + self.num_flows)
        r = self.num_directions
        cells = tuple(make_cell(self.cell, self.emission_dim, self.hidden, key=k) for k in keys[:r])
        flows = tuple(MADE(self.latent_dim, self.flow_hidden, key=k) for k in keys[r + 1 :])
        return EncoderParams(
            cells,
            jnp.zeros((self.num_directions, self.hidden)),
            jnp.zeros(self.latent_dim),
            Combiner(self.latent_dim, self.feature_dim, key=keys[r]),
            flows,
        )

    # ---- features h_t
    def features(
        self, params: EncoderParams, emissions: Float[Array, "T D"], valid: Bool[Array, " T"], observed=None
    ) -> Float[Array, "T F"]:
        """:math:`h_{0:T-1}` for one (padded) sequence; ``valid`` marks its real steps."""
        y = jnp.asarray(emissions)
        obs = valid if observed is None else valid & observed
        x = jnp.where(obs[:, None], jnp.nan_to_num(y), 0.0).astype(params.initial_hidden.dtype)

        def run(cell, h0, reverse):
            # an Elman cell's input half runs for all steps at once, outside the recurrence
            inputs, recur = (cell.project(x), cell.recur) if isinstance(cell, ElmanCell) else (x, cell)

            def body(h, args):
                xt, vt = args
                h_new = jnp.where(vt, recur(xt, h), h0)
                return h_new, h_new

            _, hs = jax.lax.scan(body, h0, (inputs, valid), reverse=reverse)
            return hs

        if self.direction == "backward":
            return run(params.cells[0], params.initial_hidden[0], True)
        if self.direction == "forward":
            return run(params.cells[0], params.initial_hidden[0], False)
        fwd = run(params.cells[0], params.initial_hidden[0], False)
        bwd = run(params.cells[1], params.initial_hidden[1], True)
        return jnp.concatenate([fwd, bwd], axis=-1)

    # ---- q(z_t | z_{t-1}, h_t)
    def step_distribution(self, params: EncoderParams, z_prev: Array, h: Array) -> dist.Distribution:
        """:math:`q(z_t \\mid z_{t-1}, h_t)`: the combiner's diagonal Gaussian, pushed through the IAF steps (works
        on a leading batch axis of ``z_prev`` and ``h``)."""
        loc, scale = params.combiner(z_prev, h) if z_prev.ndim == 1 else jax.vmap(params.combiner)(z_prev, h)
        return flow_distribution(dist.Normal(loc, scale).to_event(1), params.flows)

    def initial_distribution(self, params: EncoderParams, h0: Array) -> dist.Distribution:
        return self.step_distribution(params, params.initial_latent, h0)

    def proposals(self, params: EncoderParams) -> tuple[Any, Any]:
        """``(proposal, initial_proposal)`` for a guided particle filter proposing from this guide (the encoder's
        :meth:`features` go in as the filter's ``inputs``); the filter is
        :func:`pssm.inference.variational.encoder_feynman_kac`."""
        return _StepProposal(self, params), _InitialProposal(self, params)


def flow_distribution(base: dist.Distribution, flows: tuple) -> dist.Distribution:
    """``base`` pushed through inverse autoregressive flow steps (their order reversed between steps), or ``base``."""
    if not flows:
        return base
    from numpyro.distributions.flows import InverseAutoregressiveTransform
    from numpyro.distributions.transforms import PermuteTransform

    d = base.event_shape[-1]
    transforms = []
    for i, made in enumerate(flows):
        if i:
            transforms.append(PermuteTransform(jnp.arange(d)[::-1]))
        transforms.append(InverseAutoregressiveTransform(made))
    return dist.TransformedDistribution(base, transforms)


class _StepProposal(eqx.Module):
    encoder: Encoder
    params: EncoderParams

    def __call__(self, model_params, x_prev, t, y, u):
        return self.encoder.step_distribution(self.params, x_prev, u)


class _InitialProposal(eqx.Module):
    encoder: Encoder
    params: EncoderParams

    def __call__(self, model_params, y0, u0):
        return self.encoder.initial_distribution(self.params, u0)
