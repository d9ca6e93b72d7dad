"""Nonlinear / non-Gaussian state-space models for particle methods.

* :class:`StochasticVolatility` — :math:`x_t = \\mu + \\phi(x_{t-1}-\\mu) + \\sigma\\varepsilon_t`,
  :math:`y_t \\sim N(0, e^{x_t})`.
* :class:`KitagawaGrowth` — the univariate nonstationary growth model (Kitagawa 1996):
  :math:`x_t = x_{t-1}/2 + 25 x_{t-1}/(1+x_{t-1}^2) + 8\\cos(1.2 t) + \\sigma_x\\varepsilon_t`,
  :math:`y_t = x_t^2/20 + \\sigma_y \\eta_t`.
* :class:`Lorenz96` — :math:`\\dot x_i = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F`, integrated with RK4 between
  observations, Gaussian process noise, noisy observations of every ``obs_every``-th coordinate.
* :class:`ChaoticRNN` — rate network :math:`x_t = (1-\\alpha) x_{t-1} + \\alpha g W \\tanh(x_{t-1}) +
  \\sigma_x\\varepsilon_t` (Sompolinsky et al. 1988; chaotic for :math:`g > 1`), :math:`y_t = C \\tanh(x_t) + \\sigma_y
  \\eta_t`.
* :class:`PoissonLDS` — Poisson latent linear dynamical system for spike counts:
  :math:`x_t \\sim N(A x_{t-1} + b, Q)`, :math:`y_{t,n} \\sim \\mathrm{Poisson}(\\exp(C_n x_t + d_n))`.

All transitions are Gaussian, so each model bounds its transition density by the Gaussian mode,
:math:`\\log f \\le -\\tfrac12 \\log|2\\pi Q|` (used by the rejection backward kernel).  Simulate with
:func:`pssm.protocol.simulate` or each model's :meth:`simulate`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray
from numpyro.distributions import constraints

from pssm.display import short_repr
from pssm.distributions import GaussianTril
from pssm.protocol import SSM
from pssm.validation import as_float, check_key, check_real

__all__ = [
    "GaussianTril",
    "SVParams",
    "StochasticVolatility",
    "KitagawaParams",
    "KitagawaGrowth",
    "Lorenz96Params",
    "Lorenz96",
    "ChaoticRNNParams",
    "ChaoticRNN",
    "PoissonLDSParams",
    "PoissonLDS",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _normal_log_bound(scale):
    return -jnp.log(scale) - 0.5 * _LOG_2PI


# --------------------------------------------------------------------------------------------------- SV
class SVParams(NamedTuple):
    mu: Float[Array, ""]
    phi: Float[Array, ""]
    sigma: Float[Array, ""]

    __repr__ = short_repr


class StochasticVolatility(SSM):
    """Scalar stochastic volatility; :math:`x_0` from the stationary law :math:`N(\\mu, \\sigma^2/(1-\\phi^2))`."""

    def make_params(self, mu=-1.0, phi=0.95, sigma=0.3) -> SVParams:
        check_real(mu, "mu")
        check_real(phi, "phi", low=-1.0, high=1.0, fix="|phi| < 1 keeps the log-volatility stationary.")
        check_real(sigma, "sigma", low=0.0, fix="sigma is the log-volatility noise scale (a standard deviation).")
        f = as_float
        return SVParams(f(mu), f(phi), f(sigma))

    def initial(self, params: SVParams, inputs=None):
        return dist.Normal(params.mu, params.sigma / jnp.sqrt(1.0 - params.phi**2))

    def transition(self, params: SVParams, state, t, inputs=None):
        return dist.Normal(params.mu + params.phi * (state - params.mu), params.sigma)

    @property
    def emission_shape(self) -> tuple[int, ...]:
        return ()

    @property
    def takes_inputs(self) -> bool:
        return False

    def emission(self, params: SVParams, state, t, inputs=None):
        return dist.Normal(0.0, jnp.exp(0.5 * state))

    def log_transition_bound(self, params: SVParams, t, inputs=None):
        return _normal_log_bound(params.sigma)

    def param_constraints(self) -> SVParams:
        return SVParams(constraints.real, constraints.interval(-1.0, 1.0), constraints.positive)

    def prior(self) -> SVParams:
        return SVParams(dist.Normal(0.0, 2.0), dist.Uniform(-1.0, 1.0), dist.HalfNormal(1.0))


# --------------------------------------------------------------------------------------------------- Kitagawa
class KitagawaParams(NamedTuple):
    sigma_x: Float[Array, ""]
    sigma_y: Float[Array, ""]
    initial_sd: Float[Array, ""]

    __repr__ = short_repr


class KitagawaGrowth(SSM):
    """Univariate nonstationary growth model (bimodal filtering distributions from :math:`y \\propto x^2`)."""

    def make_params(self, sigma_x=10.0**0.5, sigma_y=1.0, initial_sd=5.0**0.5) -> KitagawaParams:
        for name, value in (("sigma_x", sigma_x), ("sigma_y", sigma_y), ("initial_sd", initial_sd)):
            check_real(value, name, low=0.0, fix="It is a standard deviation.")
        f = as_float
        return KitagawaParams(f(sigma_x), f(sigma_y), f(initial_sd))

    def initial(self, params: KitagawaParams, inputs=None):
        return dist.Normal(jnp.zeros((), params.initial_sd.dtype), params.initial_sd)

    def transition(self, params: KitagawaParams, state, t, inputs=None):
        mean = 0.5 * state + 25.0 * state / (1.0 + state**2) + 8.0 * jnp.cos(1.2 * t)
        return dist.Normal(mean, params.sigma_x)

    @property
    def emission_shape(self) -> tuple[int, ...]:
        return ()

    @property
    def takes_inputs(self) -> bool:
        return False

    def emission(self, params: KitagawaParams, state, t, inputs=None):
        return dist.Normal(state**2 / 20.0, params.sigma_y)

    def log_transition_bound(self, params: KitagawaParams, t, inputs=None):
        return _normal_log_bound(params.sigma_x)

    def param_constraints(self) -> KitagawaParams:
        return KitagawaParams(constraints.positive, constraints.positive, constraints.positive)


# --------------------------------------------------------------------------------------------------- Lorenz-96
class Lorenz96Params(NamedTuple):
    forcing: Float[Array, ""]
    sigma_x: Float[Array, ""]
    sigma_y: Float[Array, ""]
    initial_mean: Float[Array, " D"]
    initial_sd: Float[Array, ""]

    __repr__ = short_repr


class Lorenz96(SSM):
    """Lorenz-96 with ``state_dim`` sites, RK4 step ``dt`` repeated ``num_substeps`` times per observation,
    observing every ``obs_every``-th site with Gaussian noise (chaotic for forcing ``F = 8``)."""

    state_dim: int = 40
    dt: float = 0.01
    num_substeps: int = 5
    obs_every: int = 1

    def __check_init__(self):
        if self.state_dim < 4:
            raise ValueError(f"Lorenz-96 needs state_dim >= 4; got {self.state_dim}.")
        if self.obs_every < 1 or self.num_substeps < 1 or self.dt <= 0:
            raise ValueError("obs_every and num_substeps must be >= 1 and dt > 0.")

    @property
    def emission_dim(self) -> int:
        return len(range(0, self.state_dim, self.obs_every))

    def make_params(self, forcing=8.0, sigma_x=0.1, sigma_y=1.0, initial_mean=None, initial_sd=1.0) -> Lorenz96Params:
        f = as_float
        m0 = jnp.full((self.state_dim,), 8.0) if initial_mean is None else initial_mean
        return Lorenz96Params(f(forcing), f(sigma_x), f(sigma_y), f(m0), f(initial_sd))

    def drift(self, x, forcing):
        return (jnp.roll(x, -1) - jnp.roll(x, 2)) * jnp.roll(x, 1) - x + forcing

    def flow(self, params: Lorenz96Params, x):
        """Deterministic RK4 map over one observation interval."""
        h = self.dt

        def rk4(x, _):
            k1 = self.drift(x, params.forcing)
            k2 = self.drift(x + 0.5 * h * k1, params.forcing)
            k3 = self.drift(x + 0.5 * h * k2, params.forcing)
            k4 = self.drift(x + h * k3, params.forcing)
            return x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4), None

        x, _ = jax.lax.scan(rk4, x, None, length=self.num_substeps)
        return x

    def initial(self, params: Lorenz96Params, inputs=None):
        return dist.Normal(params.initial_mean, params.initial_sd).to_event(1)

    def transition(self, params: Lorenz96Params, state, t, inputs=None):
        return dist.Normal(self.flow(params, state), params.sigma_x).to_event(1)

    @property
    def emission_shape(self) -> tuple[int, ...]:
        return (self.emission_dim,)

    @property
    def takes_inputs(self) -> bool:
        return False

    def emission(self, params: Lorenz96Params, state, t, inputs=None):
        return dist.Normal(state[:: self.obs_every], params.sigma_y).to_event(1)

    def log_transition_bound(self, params: Lorenz96Params, t, inputs=None):
        return self.state_dim * _normal_log_bound(params.sigma_x)

    def param_constraints(self) -> Lorenz96Params:
        return Lorenz96Params(
            constraints.real, constraints.positive, constraints.positive, constraints.real_vector, constraints.positive
        )


# --------------------------------------------------------------------------------------------------- chaotic RNN
class ChaoticRNNParams(NamedTuple):
    weights: Float[Array, "D D"]
    gain: Float[Array, ""]
    emission_weights: Float[Array, "Dy D"]
    sigma_x: Float[Array, ""]
    sigma_y: Float[Array, ""]

    __repr__ = short_repr


class ChaoticRNN(SSM):
    """Discrete-time random rate network with ``state_dim`` units and ``emission_dim`` noisy readouts."""

    state_dim: int = 20
    emission_dim: int = 5
    alpha: float = 0.2

    def make_params(self, key: PRNGKeyArray, gain=1.5, sigma_x=0.05, sigma_y=0.1) -> ChaoticRNNParams:
        """Random couplings :math:`W_{ij} \\sim N(0, 1/D)` and readout :math:`C \\sim N(0, 1/D)`."""
        k1, k2 = jax.random.split(key)
        D = self.state_dim
        f = as_float
        W = jax.random.normal(k1, (D, D)) / jnp.sqrt(D)
        C = jax.random.normal(k2, (self.emission_dim, D)) / jnp.sqrt(D)
        return ChaoticRNNParams(f(W), f(gain), f(C), f(sigma_x), f(sigma_y))

    def initial(self, params: ChaoticRNNParams, inputs=None):
        return dist.Normal(jnp.zeros(self.state_dim, params.gain.dtype), 1.0).to_event(1)

    def transition(self, params: ChaoticRNNParams, state, t, inputs=None):
        mean = (1.0 - self.alpha) * state + self.alpha * params.gain * (params.weights @ jnp.tanh(state))
        return dist.Normal(mean, params.sigma_x).to_event(1)

    @property
    def emission_shape(self) -> tuple[int, ...]:
        return (self.emission_dim,)

    @property
    def takes_inputs(self) -> bool:
        return False

    def emission(self, params: ChaoticRNNParams, state, t, inputs=None):
        return dist.Normal(params.emission_weights @ jnp.tanh(state), params.sigma_y).to_event(1)

    def log_transition_bound(self, params: ChaoticRNNParams, t, inputs=None):
        return self.state_dim * _normal_log_bound(params.sigma_x)

    def param_constraints(self) -> ChaoticRNNParams:
        r, p = constraints.real, constraints.positive
        return ChaoticRNNParams(r, p, r, p, p)


# --------------------------------------------------------------------------------------------------- Poisson LDS
class PoissonLDSParams(NamedTuple):
    initial_mean: Float[Array, " D"]
    initial_cov: Float[Array, "D D"]
    dynamics_weights: Float[Array, "D D"]
    dynamics_bias: Float[Array, " D"]
    dynamics_cov: Float[Array, "D D"]
    emission_weights: Float[Array, "Nn D"]
    emission_bias: Float[Array, " Nn"]

    __repr__ = short_repr


class PoissonLDS(SSM):
    """Poisson LDS (log link) with ``state_dim`` latents and ``num_neurons`` count outputs per time bin."""

    state_dim: int
    num_neurons: int

    def make_params(
        self,
        *,
        dynamics_weights,
        dynamics_cov,
        emission_weights,
        emission_bias,
        initial_mean=None,
        initial_cov=None,
        dynamics_bias=None,
    ) -> PoissonLDSParams:
        D, Nn = self.state_dim, self.num_neurons
        f = as_float
        p = PoissonLDSParams(
            f(jnp.zeros(D) if initial_mean is None else initial_mean),
            f(jnp.eye(D) if initial_cov is None else initial_cov),
            f(dynamics_weights),
            f(jnp.zeros(D) if dynamics_bias is None else dynamics_bias),
            f(dynamics_cov),
            f(emission_weights),
            f(emission_bias),
        )
        expected = PoissonLDSParams((D,), (D, D), (D, D), (D,), (D, D), (Nn, D), (Nn,))
        for name, arr, shape in zip(p._fields, p, expected, strict=True):
            if arr.shape != shape:
                raise ValueError(f"{name} must have shape {shape}; got {arr.shape}.")
        return p

    def random_params(
        self, key: PRNGKeyArray, *, rotation_speed=0.1, decay=0.95, base_rate=0.5, loading_scale=0.5
    ) -> PoissonLDSParams:
        """Slowly rotating, damped latents; log-rates :math:`\\log(\\text{base\\_rate}) + C x`."""
        check_key(key)
        D = self.state_dim
        k1, k2 = jax.random.split(key)
        Qr, _ = jnp.linalg.qr(jax.random.normal(k1, (D, D)))
        S = jnp.zeros((D, D))
        for i in range(0, D - 1, 2):
            c, s = jnp.cos(rotation_speed), jnp.sin(rotation_speed)
            S = S.at[i : i + 2, i : i + 2].set(jnp.array([[c, -s], [s, c]]))
        if D % 2:
            S = S.at[D - 1, D - 1].set(1.0)
        A = decay * Qr @ S @ Qr.T
        return self.make_params(
            dynamics_weights=A,
            dynamics_cov=(1.0 - decay**2) * jnp.eye(D),
            emission_weights=loading_scale * jax.random.normal(k2, (self.num_neurons, D)),
            emission_bias=jnp.full((self.num_neurons,), jnp.log(base_rate)),
        )

    def initial(self, params: PoissonLDSParams, inputs=None):
        return GaussianTril.from_cov(params.initial_mean, params.initial_cov)

    def transition(self, params: PoissonLDSParams, state, t, inputs=None):
        mean = params.dynamics_weights @ state + params.dynamics_bias
        return GaussianTril.from_cov(mean, params.dynamics_cov)

    @property
    def emission_shape(self) -> tuple[int, ...]:
        return (self.num_neurons,)

    @property
    def takes_inputs(self) -> bool:
        return False

    def emission(self, params: PoissonLDSParams, state, t, inputs=None):
        return dist.Poisson(jnp.exp(params.emission_weights @ state + params.emission_bias)).to_event(1)

    def log_transition_bound(self, params: PoissonLDSParams, t, inputs=None):
        _, logdet = jnp.linalg.slogdet(params.dynamics_cov)
        return -0.5 * (logdet + self.state_dim * _LOG_2PI)

    def param_constraints(self) -> PoissonLDSParams:
        r, p = constraints.real, constraints.positive_definite
        return PoissonLDSParams(r, p, r, r, p, r, r)
