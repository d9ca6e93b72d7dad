"""Gaussian vector-autoregressive HMM emissions (the AR-HMM).

.. math::

    y_t \\mid z_t = s,\\, y_{t-1:t-p} \\sim
    \\mathcal N\\Big(b_s + \\sum_{l=1}^{p} A_{s,l}\\, y_{t-l},\\; \\Sigma_s\\Big), \\qquad y_t \\in \\mathbb R^D.

The model input of step ``t`` is the lag window flattened, :math:`x_t = (y_{t-1}, \\dots, y_{t-p}) \\in
\\mathbb R^{pD}` (zeros before a sequence starts; see :func:`pssm.model_inputs`), so the mean is
:math:`b_s + A_s x_t` with :math:`A_s = [A_{s,1}, \\dots, A_{s,p}]` ``(D, pD)``.  Intercepts :math:`b_s` always
switch; ``switching_coefficients=False`` shares :math:`A` between the states and ``switching_covariance=False``
ties :math:`\\Sigma`; ``covariance`` is ``"full"`` or ``"diagonal"``.

Prior (the one the M-step maximises): flat :math:`b, A`; inverse-Wishart covariances exactly as
:class:`~pssm.models.hmm.emissions.GaussianEmissions` (``covariance_reg`` ε, ``covariance_dof`` ν, default the
flat-in-:math:`\\log|\\Sigma|` limit).

M-step (weights :math:`w_{ts}`), with regressors :math:`\\tilde x_t = (1, x_t)`:

* switching coefficients: per state the weighted least-squares solution
  :math:`[b_s, A_s]^\\top = (\\tilde X^\\top W_s \\tilde X)^{-1} \\tilde X^\\top W_s Y` — the exact joint maximiser
  whatever the covariances (all output dimensions share the regressors), then the covariances from the weighted
  residual scatter :math:`(R + \\epsilon I) / (n + \\nu + D + 1)` (summed over states when tied);
* shared coefficients: generalised least squares for :math:`M = [B^\\top, A]` with regressors
  :math:`(e_s, x_t)`, i.e. :math:`\\sum_s (\\Sigma_s^{-1} \\otimes G_s)\\,\\mathrm{vec}(M) =
  \\mathrm{vec}(\\sum_s \\Sigma_s^{-1} C_s)`; with a tied covariance it does not depend on :math:`\\Sigma` (exact),
  with switching covariances it alternates exact conditional updates of :math:`M` given :math:`\\Sigma` and of
  :math:`\\Sigma` given :math:`M` from the current params (ECM: ``num_sweeps`` sweeps, never lowers the objective).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float
from numpyro.distributions import constraints

from pssm.display import short_repr
from pssm.models.hmm.emissions import (
    EmissionComponent,
    _iw_log_prior,
    _kmeans_start,
    completed_moments,
    entrywise_start,
    flat_entries,
)
from pssm.params import ParamSpec

__all__ = ["AutoregressiveEmissions", "AutoregressiveParams", "solve_psd"]


def solve_psd(gram: Float[Array, "n n"], rhs: Array) -> Array:
    """Solve the normal equations ``gram @ x = rhs`` (``gram`` symmetric PSD) by Cholesky with a jitter of
    machine epsilon times the mean diagonal, so a rank-deficient ``gram`` (a state with no weight) stays finite."""
    n = gram.shape[-1]
    scale = jnp.trace(gram) / n + jnp.finfo(gram.dtype).tiny
    g = gram + jnp.finfo(gram.dtype).eps * scale * jnp.eye(n, dtype=gram.dtype)
    return jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(g), True), rhs)


class AutoregressiveParams(NamedTuple):
    """``biases (S, D)``; ``coefficients`` ``(S, D, pD)`` (switching) or ``(D, pD)`` (shared), columns ordered
    ``[A_1 | A_2 | ... | A_p]``; ``covs`` ``(S, D, D)`` / ``(D, D)`` (full, switching / tied) or ``(S, D)`` /
    ``(D,)`` variances (diagonal)."""

    biases: Float[Array, "S D"]
    coefficients: Array
    covs: Array

    __repr__ = short_repr


class AutoregressiveEmissions(EmissionComponent):
    """Gaussian AR(``num_lags``) emissions of dimension ``emission_dim`` (see the module notes)."""

    emission_dim: int
    num_lags: int = 1
    switching_coefficients: bool = True
    switching_covariance: bool = True
    covariance: Literal["full", "diagonal"] = "full"
    covariance_reg: float = 1e-4
    covariance_dof: float | None = None
    num_sweeps: int = 3

    def __check_init__(self):
        if int(self.emission_dim) < 1:
            raise ValueError(f"emission_dim must be >= 1; got {self.emission_dim}.")
        if int(self.num_lags) < 1:
            raise ValueError(f"num_lags must be >= 1 (use GaussianEmissions for no lags); got {self.num_lags}.")
        if self.covariance not in ("full", "diagonal"):
            raise ValueError(f"covariance must be 'full' or 'diagonal'; got {self.covariance!r}.")
        if not float(self.covariance_reg) > 0:
            raise ValueError(f"covariance_reg must be > 0; got {self.covariance_reg}.")
        if int(self.num_sweeps) < 1:
            raise ValueError(f"num_sweeps must be >= 1; got {self.num_sweeps}.")

    # ------------------------------------------------------------------ shapes and features
    @property
    def emission_shape(self):
        return (self.emission_dim,)

    @property
    def emission_lags(self) -> int:
        return int(self.num_lags)

    @property
    def missing_entries(self) -> bool:
        """True: a partly missing step's observed entries are used (marginal likelihood; EM over the missing
        ones).  A step whose lags hold a missing entry is not evaluated (see :func:`pssm.protocol.lags_observed`)."""
        return True

    @property
    def num_features(self) -> int:
        return int(self.num_lags) * int(self.emission_dim)

    def features(self, past: Array, inputs=None) -> Float[Array, " pD"]:
        """:math:`x_t = (y_{t-1}, \\dots, y_{t-p})` flattened (``past[l] = y_{t-1-l}``)."""
        if inputs is not None:
            raise ValueError(
                "AutoregressiveEmissions takes no exogenous inputs (its model inputs are the lagged emissions); "
                "pass inputs=None."
            )
        return jnp.reshape(past, (-1,))

    @property
    def _full(self) -> bool:
        return self.covariance == "full"

    @property
    def _dof(self) -> float:
        D = self.emission_dim if self._full else 1
        return -(D + 1.0) if self.covariance_dof is None else float(self.covariance_dof)

    def num_states_of(self, params):
        return params.biases.shape[0]

    # ------------------------------------------------------------------ params and prior
    def param_spec(self, num_states):
        cons = constraints.positive_definite if self._full else constraints.positive
        return AutoregressiveParams(ParamSpec(constraints.real), ParamSpec(constraints.real), ParamSpec(cons))

    def log_prior(self, params, num_states):
        return _iw_log_prior(params.covs, self.covariance_reg, self._dof, self._full)

    def _coef(self, params, state):
        return params.coefficients[state] if self.switching_coefficients else params.coefficients

    def _state_covs(self, params, S):
        """Covariances broadcast to one per state: ``(S, D, D)`` (full) or ``(S, D)`` (diagonal)."""
        c = params.covs
        if not self.switching_covariance:
            c = jnp.broadcast_to(c[None], (S,) + c.shape)
        return c

    def mean(self, params, state, inputs):
        """:math:`b_s + A_s x_t`."""
        return params.biases[state] + self._coef(params, state) @ inputs

    def distribution(self, params, state, inputs=None):
        m = self.mean(params, state, inputs)
        c = self._state_covs(params, params.biases.shape[0])[state]
        if self._full:
            return dist.MultivariateNormal(m, c)
        return dist.Normal(m, jnp.sqrt(c)).to_event(1)

    def log_likelihoods(self, params, emissions, inputs=None):
        y = emissions.astype(params.biases.dtype)
        x = inputs.astype(y.dtype)
        S, D = params.biases.shape
        if self.switching_coefficients:
            mu = params.biases[None] + jnp.einsum("sdk,tk->tsd", params.coefficients, x)
        else:
            mu = params.biases[None] + (x @ params.coefficients.T)[:, None]
        c = y[:, None, :] - mu  # (T, S, D)
        covs = self._state_covs(params, S)
        if not self._full:
            return -0.5 * jnp.sum(c**2 / covs[None] + jnp.log(2 * jnp.pi * covs[None]), -1)
        L = jnp.linalg.cholesky(covs)
        z = jax.vmap(lambda l, cs: jax.scipy.linalg.solve_triangular(l, cs.T, lower=True).T, (0, 1), 1)(L, c)
        half_logdet = jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)).sum(-1)
        return -0.5 * jnp.sum(z**2, -1) - half_logdet[None] - 0.5 * D * jnp.log(2 * jnp.pi)

    # ------------------------------------------------------------------ fitting
    def initialize(self, key, num_states, data):
        """Closed-form M-step on k-means responsibilities of the observed emissions."""
        return _kmeans_start(self, key, num_states, data)

    def _flat(self, data, weights):
        D = self.emission_dim
        w = (weights * data.mask[..., None]).reshape(-1, weights.shape[-1])
        y = data.emissions.reshape(-1, D).astype(w.dtype)
        x = data.inputs.reshape(-1, self.num_features).astype(w.dtype)
        return y, x, w

    def _covariances(self, resid, w, extra=None):
        """MAP covariances from residuals ``resid`` ``(S, N, D)`` and weights ``(N, S)`` (``extra``: the summed
        conditional covariances of missing entries, added to the scatter)."""
        D, reg, dof = self.emission_dim, self.covariance_reg, self._dof
        n = w.sum(0)
        if not self._full:
            scatter = jnp.einsum("ns,snd->sd", w, resid**2)
            if extra is not None:
                scatter = scatter + extra
            if not self.switching_covariance:
                scatter, n = scatter.sum(0), n.sum()
                return (scatter + reg) / (n + dof + 2.0)
            return (scatter + reg) / (n[:, None] + dof + 2.0)
        scatter = jnp.einsum("ns,snd,sne->sde", w, resid, resid)
        if extra is not None:
            scatter = scatter + extra
        if not self.switching_covariance:
            scatter, n = scatter.sum(0), n.sum()
        return (scatter + reg * jnp.eye(D, dtype=w.dtype)) / (n + dof + D + 1.0)[..., None, None]

    def m_step(self, params, data, weights, state, key):
        y, x, w = self._flat(data, weights)
        o = flat_entries(data, w.dtype)
        if o is None:
            return _m_step_jit(self, params, y, x, w), state
        return _completed_m_step_jit(self, params, y, o, x, w), state

    def _completed(self, params, y, o, x, w):
        """Missing entries of ``y`` completed under ``params`` (EM over them): per-state conditional means
        ``(N, S, D)`` and summed conditional covariances ``sum_n w_ns C_ns``; without params (the k-means start)
        under a start with zero coefficients and the per-entry moments."""
        S, D = w.shape[1], self.emission_dim
        if params is None:
            m0, var = entrywise_start(y, o, w, self.covariance_reg)
            var = var if self.switching_covariance else var.mean(0)
            shape = (S, D, self.num_features) if self.switching_coefficients else (D, self.num_features)
            covs = (jax.vmap(jnp.diag)(var) if var.ndim == 2 else jnp.diag(var)) if self._full else var
            params = AutoregressiveParams(m0, jnp.zeros(shape, w.dtype), covs)
        if self.switching_coefficients:
            means = params.biases[None] + jnp.einsum("sdk,nk->nsd", params.coefficients, x)
        else:
            means = params.biases[None] + (x @ params.coefficients.T)[:, None]
        covs = self._state_covs(params, S)
        if self._full:
            return completed_moments(y, o > 0, w, means, covs)
        yhat = jnp.where(o[:, None] > 0, y[:, None], means)
        return yhat, jnp.einsum("ns,nd->sd", w, 1.0 - o) * covs

    def _m_step(self, params, y, x, w, extra=None):
        """Weighted MAP update; ``y`` ``(N, D)``, or ``(N, S, D)`` per-state completed emissions with ``extra``
        their summed conditional covariances."""
        S = w.shape[1]
        ys = y[None] if y.ndim == 2 else jnp.swapaxes(y, 0, 1)  # (1 or S, N, D)
        if self.switching_coefficients:
            xt = jnp.concatenate([jnp.ones_like(x[:, :1]), x], axis=1)  # (N, 1 + pD)
            gram = jnp.einsum("ns,ni,nj->sij", w, xt, xt)
            if y.ndim == 2:
                rhs = jnp.einsum("ns,ni,nd->sid", w, xt, y)
            else:
                rhs = jnp.einsum("ns,ni,snd->sid", w, xt, ys)
            coef = jax.vmap(solve_psd)(gram, rhs)  # (S, 1 + pD, D)
            biases, coefficients = coef[:, 0, :], jnp.swapaxes(coef[:, 1:, :], 1, 2)
            resid = ys - biases[:, None] - jnp.einsum("sdk,nk->snd", coefficients, x)
            return AutoregressiveParams(biases, coefficients, self._covariances(resid, w, extra))
        # shared coefficients: generalised least squares in M = [B^T | A], alternating with the covariances
        if params is None or not self.switching_covariance:
            prec = jnp.broadcast_to(jnp.eye(self.emission_dim, dtype=w.dtype), (S,) + (self.emission_dim,) * 2)
            sweeps = 1
        else:
            prec = self._precisions(params, S)
            sweeps = int(self.num_sweeps)
        stats = _shared_stats(y, x, w)
        for _ in range(sweeps):
            biases, coefficients = _gls_shared(stats, prec)
            resid = ys - biases[:, None] - (x @ coefficients.T)[None]
            covs = self._covariances(resid, w, extra)
            prec = self._precisions(AutoregressiveParams(biases, coefficients, covs), S)
        return AutoregressiveParams(biases, coefficients, covs)

    def _precisions(self, params, S):
        c = self._state_covs(params, S)
        if self._full:
            return jnp.linalg.inv(c)
        return jax.vmap(jnp.diag)(1.0 / c)


@eqx.filter_jit
def _m_step_jit(component, params, y, x, w):
    return component._m_step(params, y, x, w)


@eqx.filter_jit
def _completed_m_step_jit(component, params, y, o, x, w):
    yhat, extra = component._completed(params, y, o, x, w)
    return component._m_step(params, yhat, x, w, extra)


def _shared_stats(y, x, w):
    """Per-state Gram ``G_s = sum_n w_ns z z^T`` and cross moments ``C_s = sum_n w_ns y z^T`` for
    ``z = (e_s, x_n)``."""
    S = w.shape[1]
    n = w.sum(0)
    mx = w.T @ x  # (S, K)
    xx = jnp.einsum("ns,ni,nj->sij", w, x, x)
    if y.ndim == 2:
        my = w.T @ y  # (S, D)
        yx = jnp.einsum("ns,nd,nk->sdk", w, y, x)
    else:  # per-state completed emissions (N, S, D)
        my = jnp.einsum("ns,nsd->sd", w, y)
        yx = jnp.einsum("ns,nsd,nk->sdk", w, y, x)
    eye = jnp.eye(S, dtype=w.dtype)
    top = jnp.concatenate([eye[:, :, None] * eye[:, None, :] * n[:, None, None], eye[:, :, None] * mx[:, None]], 2)
    bottom = jnp.concatenate([jnp.swapaxes(eye[:, :, None] * mx[:, None], 1, 2), xx], 2)
    gram = jnp.concatenate([top, bottom], 1)  # (S, S + K, S + K)
    cross = jnp.concatenate([eye[:, None, :] * my[:, :, None], yx], 2)  # (S, D, S + K)
    return gram, cross


def _gls_shared(stats, prec):
    """Minimise ``sum_s tr(P_s (Y - M Z_s)^T W_s (Y - M Z_s))``: ``sum_s (P_s kron G_s) vec(M) = vec(sum_s P_s C_s)``
    (row-major ``vec``)."""
    gram, cross = stats
    S, D, J = cross.shape
    lhs = jnp.einsum("sde,sij->diej", prec, gram).reshape(D * J, D * J)
    rhs = jnp.einsum("sde,sej->dj", prec, cross).reshape(D * J)
    M = solve_psd(lhs, rhs).reshape(D, J)
    return M[:, :S].T, M[:, S:]
