"""The Concrete (Gumbel-softmax) distribution on the simplex, the adjacency prior of the one-hot HMM-GLM."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import gammaln, logsumexp
from jaxtyping import Array, Float
from numpyro.distributions import constraints

__all__ = ["concrete_log_prob", "Concrete"]


def concrete_log_prob(
    log_a: Float[Array, "... K"], log_probs: Float[Array, "... K"], temperature: float | Array
) -> Float[Array, "..."]:
    """Log density of the Concrete / Gumbel-softmax distribution at ``a = exp(log_a)`` on the simplex.

    .. math::
        \\log p(a \\mid \\pi, \\tau) = \\log\\Gamma(K) + (K-1)\\log\\tau - K \\log\\sum_k \\pi_k a_k^{-\\tau}
        + \\sum_k (\\log\\pi_k - (\\tau + 1)\\log a_k),

    a density with respect to Lebesgue measure on the first ``K-1`` coordinates.  Taking ``log_a`` (e.g. a
    ``log_softmax``) keeps it finite near the vertices; ``log_probs`` need not be normalised.
    """
    K = log_a.shape[-1]
    log_pi = log_probs - logsumexp(log_probs, axis=-1, keepdims=True)
    tau = jnp.asarray(temperature, log_a.dtype)
    return (
        gammaln(jnp.asarray(K, log_a.dtype))
        + (K - 1) * jnp.log(tau)
        - K * logsumexp(log_pi - tau * log_a, axis=-1)
        + jnp.sum(log_pi - (tau + 1.0) * log_a, axis=-1)
    )


class Concrete(dist.Distribution):
    """Concrete / relaxed one-hot categorical distribution (Maddison et al. 2017; Jang et al. 2017).

    Reparameterised draws ``softmax((logits + Gumbel) / temperature)``; ``log_prob`` is :func:`concrete_log_prob`
    (for ``K = 2`` it equals NumPyro's ``RelaxedBernoulliLogits`` on the last coordinate).
    """

    arg_constraints = {"logits": constraints.real_vector, "temperature": constraints.positive}
    support = constraints.simplex
    reparametrized_params = ["logits", "temperature"]

    def __init__(self, temperature, logits, *, validate_args=None):
        self.logits = jnp.asarray(logits)
        self.temperature = jnp.asarray(temperature, self.logits.dtype)
        super().__init__(
            batch_shape=jnp.shape(self.logits)[:-1],
            event_shape=jnp.shape(self.logits)[-1:],
            validate_args=validate_args,
        )

    def rsample(self, key, sample_shape=()):
        g = jax.random.gumbel(key, sample_shape + self.batch_shape + self.event_shape, self.logits.dtype)
        return jax.nn.softmax((self.logits + g) / self.temperature, axis=-1)

    def sample(self, key, sample_shape=()):
        return self.rsample(key, sample_shape)

    def log_prob(self, value):
        tiny = jnp.finfo(jnp.result_type(value)).tiny
        return concrete_log_prob(jnp.log(jnp.maximum(value, tiny)), self.logits, self.temperature)
