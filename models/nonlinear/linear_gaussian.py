"""Multivariate linear Gaussian state-space model (with optional inputs).

Densities are :class:`pssm.distributions.GaussianTril` (a multivariate normal evaluated with matrix products, fast
when particle methods ``vmap`` it over many particles).

.. math::

    x_0 \\sim N(m_0, P_0),\\quad x_t \\mid x_{t-1} \\sim N(F x_{t-1} + B u_t + b, Q),\\quad
    y_t \\mid x_t \\sim N(H x_t + D u_t + d, R).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float, PRNGKeyArray
from numpyro.distributions import constraints

from pssm.display import short_repr
from pssm.distributions import GaussianTril
from pssm.protocol import SSM
from pssm.validation import as_float, check_array, check_positive_int

__all__ = ["LGSSMParams", "LinearGaussianSSM"]


class LGSSMParams(NamedTuple):
    initial_mean: Float[Array, " Dx"]
    initial_cov: Float[Array, "Dx Dx"]
    dynamics_weights: Float[Array, "Dx Dx"]
    dynamics_input_weights: Float[Array, "Dx Du"]
    dynamics_bias: Float[Array, " Dx"]
    dynamics_cov: Float[Array, "Dx Dx"]
    emission_weights: Float[Array, "Dy Dx"]
    emission_input_weights: Float[Array, "Dy Du"]
    emission_bias: Float[Array, " Dy"]
    emission_cov: Float[Array, "Dy Dy"]

    __repr__ = short_repr


def _u(inputs, du, dtype):
    return jnp.zeros((du,), dtype) if inputs is None else inputs


class LinearGaussianSSM(SSM):
    """Linear Gaussian SSM with ``state_dim`` latents, ``emission_dim`` outputs and ``input_dim`` inputs."""

    state_dim: int
    emission_dim: int
    input_dim: int = 0

    def __check_init__(self):
        check_positive_int(self.state_dim, "state_dim")
        check_positive_int(self.emission_dim, "emission_dim")
        check_positive_int(self.input_dim, "input_dim", minimum=0)

    def make_params(
        self,
        *,
        dynamics_weights,
        dynamics_cov,
        emission_weights,
        emission_cov,
        initial_mean=None,
        initial_cov=None,
        dynamics_input_weights=None,
        dynamics_bias=None,
        emission_input_weights=None,
        emission_bias=None,
    ) -> LGSSMParams:
        """Build params, filling defaults (zero means/biases/input weights, identity initial covariance)."""
        Dx, Dy, Du = self.state_dim, self.emission_dim, self.input_dim
        given = dict(locals())
        for name in LGSSMParams._fields:  # numeric input, named (a string or object array is refused here)
            if given.get(name) is not None:
                check_array(given[name], name, finite=False)
        f = as_float
        p = LGSSMParams(
            initial_mean=f(jnp.zeros(Dx) if initial_mean is None else initial_mean),
            initial_cov=f(jnp.eye(Dx) if initial_cov is None else initial_cov),
            dynamics_weights=f(dynamics_weights),
            dynamics_input_weights=f(jnp.zeros((Dx, Du)) if dynamics_input_weights is None else dynamics_input_weights),
            dynamics_bias=f(jnp.zeros(Dx) if dynamics_bias is None else dynamics_bias),
            dynamics_cov=f(dynamics_cov),
            emission_weights=f(emission_weights),
            emission_input_weights=f(jnp.zeros((Dy, Du)) if emission_input_weights is None else emission_input_weights),
            emission_bias=f(jnp.zeros(Dy) if emission_bias is None else emission_bias),
            emission_cov=f(emission_cov),
        )
        expected = LGSSMParams(
            (Dx,), (Dx, Dx), (Dx, Dx), (Dx, Du), (Dx,), (Dx, Dx), (Dy, Dx), (Dy, Du), (Dy,), (Dy, Dy)
        )
        for name, arr, shape in zip(p._fields, p, expected, strict=True):
            if arr.shape != shape:
                raise ValueError(f"{name} must have shape {shape} for this model; got {arr.shape}.")
        self.check_params(p)  # supports: finite values, symmetric positive-definite covariances
        return p

    @property
    def emission_shape(self) -> tuple[int, ...]:
        return (self.emission_dim,)

    @property
    def takes_inputs(self) -> bool:
        return self.input_dim > 0

    def random_params(self, key: PRNGKeyArray, spectral_radius: float = 0.9) -> LGSSMParams:
        """Random stable parameters (for tests and examples)."""
        Dx, Dy, Du = self.state_dim, self.emission_dim, self.input_dim
        k = jax.random.split(key, 8)
        A = jax.random.normal(k[0], (Dx, Dx))
        A = spectral_radius * A / jnp.max(jnp.abs(jnp.linalg.eigvals(A)))

        def spd(kk, d):  # noqa: E306
            M = jax.random.normal(kk, (d, d)) / jnp.sqrt(d)
            return M @ M.T + 0.5 * jnp.eye(d)

        return self.make_params(
            dynamics_weights=A.real,
            dynamics_cov=spd(k[1], Dx),
            emission_weights=jax.random.normal(k[2], (Dy, Dx)),
            emission_cov=spd(k[3], Dy),
            initial_mean=jax.random.normal(k[4], (Dx,)),
            initial_cov=spd(k[5], Dx),
            dynamics_input_weights=0.5 * jax.random.normal(k[6], (Dx, Du)),
            emission_input_weights=0.5 * jax.random.normal(k[7], (Dy, Du)),
        )

    def initial(self, params: LGSSMParams, inputs=None) -> dist.Distribution:
        return GaussianTril.from_cov(params.initial_mean, params.initial_cov)

    def transition(self, params: LGSSMParams, state, t, inputs=None) -> dist.Distribution:
        u = _u(inputs, self.input_dim, state.dtype)
        mean = state @ params.dynamics_weights.T + params.dynamics_input_weights @ u + params.dynamics_bias
        return GaussianTril.from_cov(mean, params.dynamics_cov)

    def emission(self, params: LGSSMParams, state, t, inputs=None) -> dist.Distribution:
        u = _u(inputs, self.input_dim, state.dtype)
        mean = state @ params.emission_weights.T + params.emission_input_weights @ u + params.emission_bias
        return GaussianTril.from_cov(mean, params.emission_cov)

    def log_transition_bound(self, params: LGSSMParams, t, inputs=None):
        """:math:`\\max_x N(x; \\mu, Q) = -\\tfrac12 \\log|2\\pi Q|`."""
        Dx = self.state_dim
        _, logdet = jnp.linalg.slogdet(params.dynamics_cov)
        return -0.5 * (logdet + Dx * jnp.log(2.0 * jnp.pi))

    def proposal(self, params: LGSSMParams, state, t, emission, inputs=None) -> dist.Distribution:
        """Locally optimal proposal :math:`p(x_t \\mid x_{t-1}, y_t)` (exact for this model)."""
        u = _u(inputs, self.input_dim, state.dtype)
        m = state @ params.dynamics_weights.T + params.dynamics_input_weights @ u + params.dynamics_bias
        return _condition(m, params.dynamics_cov, params, emission, u)

    def initial_proposal(self, params: LGSSMParams, emission, inputs=None) -> dist.Distribution:
        u = _u(inputs, self.input_dim, params.initial_mean.dtype)
        return _condition(params.initial_mean, params.initial_cov, params, emission, u)

    def check_params(self, params: LGSSMParams) -> None:
        """Type, dimensions (``state_dim``, ``emission_dim``, ``input_dim``) and supports of ``params``."""
        require_lgssm_params(params)
        dx, dy, du = self.state_dim, self.emission_dim, self.input_dim
        want = LGSSMParams((dx,), (dx, dx), (dx, dx), (dx, du), (dx,), (dx, dx), (dy, dx), (dy, du), (dy,), (dy, dy))
        for field, shape, leaf in zip(LGSSMParams._fields, want, params, strict=True):
            if tuple(jnp.shape(leaf)) != shape:
                raise ValueError(
                    f"params.{field} has shape {tuple(jnp.shape(leaf))}; LinearGaussianSSM(state_dim={dx}, "
                    f"emission_dim={dy}, input_dim={du}) needs {shape}. Build params with this model's "
                    "make_params(...) or random_params(key)."
                )
        super().check_params(params)

    def param_constraints(self) -> LGSSMParams:
        r, p = constraints.real, constraints.positive_definite
        return LGSSMParams(r, p, r, r, r, p, r, r, r, p)


def require_lgssm_params(params: Any) -> None:
    """``TypeError`` unless ``params`` is an :class:`LGSSMParams` (or a NamedTuple with its fields)."""
    if not (isinstance(params, tuple) and getattr(type(params), "_fields", None) == LGSSMParams._fields):
        raise TypeError(
            f"params must be LGSSMParams (LinearGaussianSSM(...).make_params(...) or .random_params(key)); got "
            f"{type(params).__name__}."
        )


def lgssm_params_dims(params: LGSSMParams) -> tuple[int, int, int]:
    """``(state_dim, emission_dim, input_dim)`` read off ``initial_mean``, ``emission_weights`` and
    ``dynamics_input_weights`` (what a params-only function such as the Kalman filter checks against)."""
    require_lgssm_params(params)
    m, h, b = (jnp.shape(a) for a in (params.initial_mean, params.emission_weights, params.dynamics_input_weights))
    return (m[-1] if m else 0, h[0] if h else 0, b[-1] if len(b) == 2 else 0)


def _condition(m, P, params: LGSSMParams, y, u) -> GaussianTril:
    """Gaussian conditioning of N(m, P) on y = H x + D u + d + N(0, R)."""
    H = params.emission_weights
    S = H @ P @ H.T + params.emission_cov
    K = jnp.linalg.solve(S, H @ P).T
    mean = m + K @ (y - H @ m - params.emission_input_weights @ u - params.emission_bias)
    cov = P - K @ S @ K.T
    return GaussianTril.from_cov(mean, 0.5 * (cov + cov.T))
