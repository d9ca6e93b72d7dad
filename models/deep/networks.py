"""Neural building blocks of the deep Markov model (equinox modules; they live inside params pytrees).

Shapes are for one latent state; callers ``vmap`` over particles, sequences and time.  Initialisation follows
PyTorch's defaults (uniform :math:`\\pm 1/\\sqrt{\\text{fan-in}}`), so a side-by-side run starts alike.

* :class:`Emitter` — :math:`z \\mapsto` ReLU MLP (two hidden layers) :math:`\\mapsto` raw emission parameters.
* :class:`GatedTransition` — Krishnan et al. (2017):
  :math:`g = \\sigma(W_2\\,\\mathrm{relu}(W_1 z))`, :math:`\\tilde\\mu = W_4\\,\\mathrm{relu}(W_3 z)`,
  :math:`\\mu = (1-g)\\odot(W_0 z + b_0) + g\\odot\\tilde\\mu` (:math:`W_0` initialised to the identity),
  :math:`\\sigma = \\mathrm{softplus}(W_s\\,\\mathrm{relu}(\\tilde\\mu))`.
* :class:`Combiner` — :math:`h = \\tfrac12(\\tanh(W_h z_{t-1}) + h^{\\mathrm{rnn}}_t)`, :math:`\\mu = W_\\mu h`,
  :math:`\\sigma = \\mathrm{softplus}(W_\\sigma h)`.
* :class:`MADE` — a masked autoregressive MLP (Germain et al. 2015) giving ``(mean, log_scale)`` for an inverse
  autoregressive flow step (Kingma et al. 2016) on top of the guide.
* :class:`ElmanCell` / ``GRU`` — the recurrent cell of the inference network (``relu`` Elman RNN as in Pyro's DMM,
  or ``eqx.nn.GRUCell``).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["Emitter", "GatedTransition", "Combiner", "ElmanCell", "MADE", "make_cell"]


class Emitter(eqx.Module):
    """``z -> relu(L1) -> relu(L2) -> L3``: ``out_dim`` raw outputs (logits, log-rates or loc/scale pairs)."""

    l1: eqx.nn.Linear
    l2: eqx.nn.Linear
    l3: eqx.nn.Linear

    def __init__(self, latent_dim: int, hidden: int, out_dim: int, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        self.l1 = eqx.nn.Linear(latent_dim, hidden, key=k1)
        self.l2 = eqx.nn.Linear(hidden, hidden, key=k2)
        self.l3 = eqx.nn.Linear(hidden, out_dim, key=k3)

    def __call__(self, z: Float[Array, " Z"]) -> Float[Array, " O"]:
        return self.l3(jax.nn.relu(self.l2(jax.nn.relu(self.l1(z)))))


class GatedTransition(eqx.Module):
    """Gated transition: ``z_{t-1} -> (loc, scale)`` of :math:`N(z_t; \\mu, \\mathrm{diag}\\,\\sigma^2)`."""

    gate_hidden: eqx.nn.Linear
    gate_out: eqx.nn.Linear
    mean_hidden: eqx.nn.Linear
    mean_out: eqx.nn.Linear
    linear: eqx.nn.Linear
    scale: eqx.nn.Linear

    def __init__(self, latent_dim: int, hidden: int, *, key: PRNGKeyArray):
        k = jax.random.split(key, 6)
        self.gate_hidden = eqx.nn.Linear(latent_dim, hidden, key=k[0])
        self.gate_out = eqx.nn.Linear(hidden, latent_dim, key=k[1])
        self.mean_hidden = eqx.nn.Linear(latent_dim, hidden, key=k[2])
        self.mean_out = eqx.nn.Linear(hidden, latent_dim, key=k[3])
        lin = eqx.nn.Linear(latent_dim, latent_dim, key=k[4])
        self.linear = eqx.tree_at(lambda m: (m.weight, m.bias), lin, (jnp.eye(latent_dim), jnp.zeros(latent_dim)))
        self.scale = eqx.nn.Linear(latent_dim, latent_dim, key=k[5])

    def __call__(self, z: Float[Array, " Z"]) -> tuple[Float[Array, " Z"], Float[Array, " Z"]]:
        gate = jax.nn.sigmoid(self.gate_out(jax.nn.relu(self.gate_hidden(z))))
        proposed = self.mean_out(jax.nn.relu(self.mean_hidden(z)))
        loc = (1.0 - gate) * self.linear(z) + gate * proposed
        return loc, jax.nn.softplus(self.scale(jax.nn.relu(proposed)))


class Combiner(eqx.Module):
    """``(z_{t-1}, h_t) -> (loc, scale)`` of the guide's :math:`q(z_t \\mid z_{t-1}, y_{t:T})`."""

    latent_to_hidden: eqx.nn.Linear
    loc: eqx.nn.Linear
    scale: eqx.nn.Linear

    def __init__(self, latent_dim: int, hidden: int, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        self.latent_to_hidden = eqx.nn.Linear(latent_dim, hidden, key=k1)
        self.loc = eqx.nn.Linear(hidden, latent_dim, key=k2)
        self.scale = eqx.nn.Linear(hidden, latent_dim, key=k3)

    def __call__(self, z_prev: Float[Array, " Z"], h: Float[Array, " H"]) -> tuple[Array, Array]:
        hc = 0.5 * (jnp.tanh(self.latent_to_hidden(z_prev)) + h)
        return self.loc(hc), jax.nn.softplus(self.scale(hc))


class ElmanCell(eqx.Module):
    """:math:`h' = \\mathrm{relu}(W_{ih} x + b_{ih} + W_{hh} h + b_{hh})` (PyTorch ``nn.RNN(nonlinearity='relu')``)."""

    weight_ih: Float[Array, "H I"]
    weight_hh: Float[Array, "H H"]
    bias: Float[Array, " H"]

    def __init__(self, input_size: int, hidden_size: int, *, key: PRNGKeyArray):
        lim = 1.0 / math.sqrt(hidden_size)
        k1, k2, k3, k4 = jax.random.split(key, 4)
        u = jax.random.uniform
        self.weight_ih = u(k1, (hidden_size, input_size), minval=-lim, maxval=lim)
        self.weight_hh = u(k2, (hidden_size, hidden_size), minval=-lim, maxval=lim)
        self.bias = u(k3, (hidden_size,), minval=-lim, maxval=lim) + u(k4, (hidden_size,), minval=-lim, maxval=lim)

    def __call__(self, x: Float[Array, " I"], h: Float[Array, " H"]) -> Float[Array, " H"]:
        return self.recur(self.project(x), h)

    def project(self, x: Float[Array, "... I"]) -> Float[Array, "... H"]:
        """The input half :math:`W_{ih} x + b` (batched over leading axes: one matrix product for a sequence)."""
        return x @ self.weight_ih.T + self.bias

    def recur(self, projected: Float[Array, " H"], h: Float[Array, " H"]) -> Float[Array, " H"]:
        """The recurrent half: :math:`\\mathrm{relu}(\\text{projected} + W_{hh} h)`."""
        return jax.nn.relu(projected + self.weight_hh @ h)


class MADE(eqx.Module):
    """One-hidden-layer masked autoregressive network: output ``d`` depends on inputs ``< d`` only.

    Degrees: input :math:`i` has :math:`i+1`, hidden unit :math:`k` has :math:`1 + (k \bmod (D-1))`; a weight
    is kept when the receiving degree is >= (hidden) or > (output) the sending one.  Works on leading batch axes."""

    w1: Float[Array, "H D"]
    b1: Float[Array, " H"]
    w2: Float[Array, "O H"]
    b2: Float[Array, " O"]
    mask1: Array
    mask2: Array

    def __init__(self, dim: int, hidden: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        l1, l2 = eqx.nn.Linear(dim, hidden, key=k1), eqx.nn.Linear(hidden, 2 * dim, key=k2)
        d_in = jnp.arange(1, dim + 1)
        d_hid = 1 + jnp.arange(hidden) % max(dim - 1, 1)
        d_out = jnp.concatenate([d_in, d_in])
        self.w1, self.b1, self.w2, self.b2 = l1.weight, l1.bias, l2.weight, l2.bias
        self.mask1 = d_hid[:, None] >= d_in[None, :]
        self.mask2 = d_out[:, None] > d_hid[None, :]

    def __call__(self, x: Float[Array, "... D"]) -> tuple[Array, Array]:
        h = jax.nn.relu(x @ jnp.where(self.mask1, self.w1, 0.0).T + self.b1)
        out = h @ jnp.where(self.mask2, self.w2, 0.0).T + self.b2
        return jnp.split(out, 2, axis=-1)


def make_cell(kind: str, input_size: int, hidden_size: int, *, key: PRNGKeyArray) -> eqx.Module:
    """``'rnn'`` (:class:`ElmanCell`) or ``'gru'`` (``eqx.nn.GRUCell``); both are called ``cell(x, h) -> h'``."""
    if kind == "rnn":
        return ElmanCell(input_size, hidden_size, key=key)
    if kind == "gru":
        return eqx.nn.GRUCell(input_size, hidden_size, key=key)
    raise ValueError(f"cell must be 'rnn' or 'gru'; got {kind!r}.")
