"""Monte Carlo bounds on :math:`\\log p_\\theta(y)` for a model with an amortised guide: ELBO, IWAE and FIVO.

For one sequence and a guide path :math:`z^{(k)} \\sim q_\\phi(\\cdot \\mid y)`, the log-weight is
:math:`\\log w^{(k)} = \\log p_\\theta(y, z^{(k)}) - \\log q_\\phi(z^{(k)} \\mid y)`; then

.. math::

    \\mathcal L_{\\mathrm{ELBO}} = \\tfrac1K\\sum_k \\log w^{(k)}, \\qquad
    \\mathcal L_{\\mathrm{IWAE}}^K = \\log \\tfrac1K \\sum_k w^{(k)}, \\qquad
    \\mathcal L_{\\mathrm{FIVO}}^K = \\log \\hat p_K(y),

where :math:`\\hat p_K` is the likelihood estimate of a particle filter with :math:`K` particles proposing from
the guide (the package's own SMC kernels, resampling when ESS < K/2; Maddison et al. 2017).  All three are lower
bounds in expectation; IWAE and FIVO tighten as :math:`K` grows.  Gradients flow through the reparameterised
draws and the weights; the resampling indices carry none (FIVO's score-function term is dropped, as in the
paper).  With ``annealing`` :math:`\\beta`, :math:`\\log p(z) - \\log q(z)` is multiplied by :math:`\\beta`
(KL annealing; :math:`\\beta = 1` for evaluation).  Padded steps (beyond a sequence's length) contribute nothing;
unobserved steps contribute their latent terms only.  Reported figures are **negative** bounds per time step
(nats; lower is better).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from pssm.distributions import observed_log_prob
from pssm.inference.smc.filter import FeynmanKac, filter_init, filter_step
from pssm.protocol import PyTree

__all__ = ["path_log_weight", "sample_log_weights", "fivo_log_likelihood", "sequence_bound"]


def encoder_feynman_kac(model, encoder, encoder_params: PyTree) -> FeynmanKac:
    """A guided particle filter on ``model`` proposing from the encoder :math:`q_\\phi(z_t \\mid z_{t-1}, h_t)`
    (pass ``encoder.features(encoder_params, y, valid)`` as the filter's ``inputs``)."""
    return FeynmanKac.guided(model, *encoder.proposals(encoder_params))


def path_log_weight(
    key: PRNGKeyArray,
    model,
    params: PyTree,
    encoder,
    encoder_params: PyTree,
    emissions: Float[Array, "T D"],
    valid: Bool[Array, " T"],
    observed: Bool[Array, " T"],
    annealing: float | Array = 1.0,
) -> tuple[Float[Array, ""], Float[Array, "T Z"]]:
    """One guide path :math:`z \\sim q_\\phi(\\cdot\\mid y)` and its (annealed) log-weight."""
    h = encoder.features(encoder_params, emissions, valid, observed)
    T = emissions.shape[0]
    y = jnp.asarray(emissions)  # NaN at the missing entries of a partly observed step
    obs = observed & valid
    keys = jax.random.split(key, T)
    t0 = jnp.zeros((), jnp.int32)

    def weight(lq, prior, z, t, y_t, o_t):
        lg = observed_log_prob(model.emission(params, z, t), y_t)
        return annealing * (prior.log_prob(z) - lq) + jnp.where(o_t, lg, 0.0)

    z0, lq0 = _draw(encoder.initial_distribution(encoder_params, h[0]), keys[0])
    lw0 = jnp.where(valid[0], weight(lq0, model.initial(params), z0, t0, y[0], obs[0]), 0.0)  # empty: 0

    def step(z_prev, xs):
        k, t, y_t, h_t, v_t, o_t = xs
        z, lq = _draw(encoder.step_distribution(encoder_params, z_prev, h_t), k)
        lw = weight(lq, model.transition(params, z_prev, t), z, t, y_t, o_t)
        return z, (jnp.where(v_t, lw, 0.0), z)

    if T == 1:
        return lw0, z0[None]
    _, (lws, zs) = jax.lax.scan(step, z0, (keys[1:], jnp.arange(1, T), y[1:], h[1:], valid[1:], obs[1:]))
    return lw0 + lws.sum(), jnp.concatenate([z0[None], zs])


def _draw(q, key):
    """A reparameterised draw and its log density (a flow's intermediates spare its inversion)."""
    if isinstance(q, dist.TransformedDistribution):
        z, inter = q.sample_with_intermediates(key)
        return z, q.log_prob(z, inter)
    z = q.sample(key)
    return z, q.log_prob(z)


def sample_log_weights(
    key: PRNGKeyArray,
    model,
    params: PyTree,
    encoder,
    encoder_params: PyTree,
    emissions: Float[Array, "T D"],
    valid: Bool[Array, " T"],
    observed: Bool[Array, " T"],
    num_samples: int,
    annealing: float | Array = 1.0,
) -> Float[Array, " K"]:
    """``num_samples`` independent guide paths' log-weights for one sequence."""
    keys = jax.random.split(key, num_samples)
    return jax.vmap(
        lambda k: path_log_weight(k, model, params, encoder, encoder_params, emissions, valid, observed, annealing)[0]
    )(keys)


def fivo_log_likelihood(
    key: PRNGKeyArray,
    model,
    params: PyTree,
    encoder,
    encoder_params: PyTree,
    emissions: Float[Array, "T D"],
    valid: Bool[Array, " T"],
    observed: Bool[Array, " T"],
    num_particles: int,
    *,
    ess_threshold: float = 0.5,
    resampling: str = "systematic",
) -> Float[Array, ""]:
    """:math:`\\log \\hat p_K(y)` of the guided particle filter (``filter_init`` / ``filter_step``); padded steps
    leave the filter state unchanged."""
    h = encoder.features(encoder_params, emissions, valid, observed)
    fk = encoder_feynman_kac(model, encoder, encoder_params)
    y = jnp.asarray(emissions)  # NaN at the missing entries of a partly observed step
    obs = observed & valid
    k0, key = jax.random.split(key)
    state, _ = filter_init(k0, fk, params, y[0], num_particles, h[0], obs[0])

    def body(state, xs):
        k, y_t, h_t, o_t, v_t = xs
        new, _ = filter_step(k, state, fk, params, y_t, h_t, o_t, resampling=resampling, ess_threshold=ess_threshold)
        return jax.tree.map(lambda a, b: jnp.where(v_t, a, b), new, state), None

    T = emissions.shape[0]
    if T > 1:
        state, _ = jax.lax.scan(body, state, (jax.random.split(key, T - 1), y[1:], h[1:], obs[1:], valid[1:]))
    return jnp.where(valid[0], state.log_likelihood, 0.0)  # an empty (filler) sequence has bound 0


def sequence_bound(
    key: PRNGKeyArray,
    model,
    params: PyTree,
    encoder,
    encoder_params: PyTree,
    emissions: Float[Array, "T D"],
    valid: Bool[Array, " T"],
    observed: Bool[Array, " T"],
    *,
    bound: str,
    num_samples: int,
    annealing: float | Array = 1.0,
) -> Float[Array, ""]:
    """The ``bound`` (``'elbo'``, ``'iwae'`` or ``'fivo'``) of one sequence with ``num_samples`` draws/particles."""
    if bound == "fivo":
        if not isinstance(annealing, int | float) or annealing != 1.0:
            raise ValueError("FIVO has no KL annealing (the filter's weights are the bound); use annealing=1.0.")
        return fivo_log_likelihood(key, model, params, encoder, encoder_params, emissions, valid, observed, num_samples)
    lw = sample_log_weights(
        key, model, params, encoder, encoder_params, emissions, valid, observed, num_samples, annealing
    )
    if bound == "elbo":
        return lw.mean()
    if bound == "iwae":
        return jax.nn.logsumexp(lw) - jnp.log(jnp.asarray(num_samples, lw.dtype))
    raise ValueError(f"bound must be 'elbo', 'iwae' or 'fivo'; got {bound!r}.")
