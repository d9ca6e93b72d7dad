"""Hamilton's Markov-switching autoregression as an HMM on the regime history.

.. math::

    y_t - \\mu_{s_t} = \\sum_{l=1}^{p} \\phi_l^{(s_t)} \\big(y_{t-l} - \\mu_{s_{t-l}}\\big) + \\varepsilon_t,
    \\qquad \\varepsilon_t \\sim \\mathcal N(0, \\sigma^2_{s_t}),\\qquad s_t \\mid s_{t-1} \\sim
    \\mathrm{Cat}(P_{s_{t-1}, :}),

with :math:`k` regimes (Hamilton 1989; statsmodels' ``MarkovAutoregression``).  The emission depends on the
last :math:`p+1` regimes, so the hidden state is the history :math:`z_t = (s_t, s_{t-1}, \\dots, s_{t-p})`,
encoded as :math:`z = \\sum_{j=0}^{p} s_{t-j}\\, k^{p-j}` (:math:`k^{p+1}` states; :func:`regime_table` gives the
digits).  The move :math:`z_{t-1} \\to z_t` is possible only when :math:`z_t` repeats the first :math:`p` regimes
of :math:`z_{t-1}` one step later; it then has probability :math:`P_{s_{t-1}, s_t}`.

* :class:`RegimeHistoryTransitions`: params are the base :math:`k \\times k` matrix :math:`P` (rows
  :math:`\\sim \\mathrm{Dir}(\\alpha)`); ``matrix`` builds the expanded one.  The expected transition counts of the
  expanded chain aggregate into base counts :math:`N_{ab}`, so the MAP is :math:`\\hat P_{ab} \\propto N_{ab} +
  \\alpha - 1`; with a stationary initial distribution, :math:`\\sum_z \\gamma_0(z)\\log\\pi_z(P)` (the
  stationary law of the history, :math:`\\pi(s_{t-p})\\prod_j P_{s_{t-j-1}, s_{t-j}}`) is added and refined
  like :class:`~pssm.models.hmm.components.StickyTransitions` does.
* :class:`SwitchingMeanAREmissions`: the Gaussian emission on the expanded states.  M-step = ECM sweeps of exact
  conditional maximisers: :math:`\\mu` given :math:`\\phi, \\sigma^2` (weighted least squares, the residual is
  linear in :math:`\\mu` through :math:`c_z = e_{s_t} - \\sum_l \\phi_l e_{s_{t-l}}`), :math:`\\phi` given
  :math:`\\mu, \\sigma^2` (weighted least squares on the centred lags), then :math:`\\sigma^2` (inverse-gamma
  MAP, the diagonal inverse-Wishart of :class:`~pssm.models.hmm.emissions.GaussianEmissions`).  Each update
  cannot lower the objective, so EM stays monotone.

statsmodels conditions on the first :math:`p` observations and starts the regimes in their steady state: mask
the first :math:`p` steps (they still feed the lags) and use ``initial="stationary"``
(:func:`conditional_sequences`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Float
from numpyro.distributions import constraints

from pssm.data import Sequences
from pssm.display import short_repr
from pssm.distributions import Dirichlet
from pssm.models.hmm.autoregressive import solve_psd
from pssm.models.hmm.components import (
    InitialDistribution,
    InitialParams,
    TransitionComponent,
    TransitionParams,
    _refine_with_stationary,
    stationary_distribution,
    sticky_matrix,
)
from pssm.models.hmm.emissions import EmissionComponent
from pssm.models.hmm.init import initial_responsibilities
from pssm.models.hmm.model import HMM, HMMParams
from pssm.params import ParamSpec

__all__ = [
    "regime_table",
    "RegimeHistoryTransitions",
    "SwitchingMeanAREmissions",
    "SwitchingMeanARParams",
    "MarkovSwitchingARParams",
    "markov_switching_ar",
    "markov_switching_ar_params",
    "to_base_params",
    "conditional_sequences",
]


def regime_table(num_regimes: int, order: int) -> np.ndarray:
    """``(k^(p+1), p+1)`` int table: row ``z`` holds :math:`(s_t, s_{t-1}, \\dots, s_{t-p})`."""
    k, p = int(num_regimes), int(order)
    z = np.arange(k ** (p + 1))
    return np.stack([(z // k ** (p - j)) % k for j in range(p + 1)], axis=1)


def _check_kp(num_regimes, order):
    if int(num_regimes) < 1:
        raise ValueError(f"num_regimes must be >= 1; got {num_regimes}.")
    if int(order) < 0:
        raise ValueError(f"order must be >= 0; got {order}.")


# --------------------------------------------------------------------------------------------- transitions
class RegimeHistoryTransitions(TransitionComponent):
    """Transitions of the regime history :math:`z_t = (s_t, \\dots, s_{t-p})` driven by a base ``(k, k)`` matrix
    with rows :math:`\\sim \\mathrm{Dir}(\\alpha \\mathbf 1)` (``concentration`` α; α = 1 allows exact zeros)."""

    num_regimes: int
    order: int
    concentration: float = 1.0
    self_transition: float = 0.9
    refine_steps: int = 50

    def __check_init__(self):
        _check_kp(self.num_regimes, self.order)
        if not float(self.concentration) > 0:
            raise ValueError(f"concentration must be > 0; got {self.concentration}.")
        if not 0.0 < float(self.self_transition) <= 1.0:
            raise ValueError(f"self_transition must lie in (0, 1]; got {self.self_transition}.")

    @property
    def num_states(self) -> int:
        return int(self.num_regimes) ** (int(self.order) + 1)

    def _check_states(self, num_states):
        if int(num_states) != self.num_states:
            raise ValueError(
                f"RegimeHistoryTransitions(num_regimes={self.num_regimes}, order={self.order}) drives "
                f"{self.num_states} expanded states; the model has num_states={num_states}."
            )

    def param_spec(self, num_states):
        self._check_states(num_states)
        k = int(self.num_regimes)
        prior = Dirichlet(jnp.full((k, k), float(self.concentration))).to_event(1)
        return TransitionParams(ParamSpec(constraints.simplex, prior))

    def _base_index(self):
        k, p = int(self.num_regimes), int(self.order)
        z = np.arange(self.num_states)
        cur = z // k**p  # s_t of the state
        allowed = (z[None, :] % k**p) == (z[:, None] // k)  # z_{t-1} = i -> z_t = j
        return cur, allowed

    def matrix(self, params):
        P = params.matrix
        cur, allowed = self._base_index()
        return jnp.where(jnp.asarray(allowed), P[cur[:, None], cur[None, :]], 0.0).astype(P.dtype)

    def stationary_history(self, base: Float[Array, "k k"]) -> Float[Array, " S"]:
        """Stationary law of the history: :math:`\\pi(s_{t-p}) \\prod_{j<p} P_{s_{t-j-1}, s_{t-j}}`."""
        R = regime_table(self.num_regimes, self.order)
        pi = stationary_distribution(base)
        probs = pi[R[:, -1]]
        for j in range(int(self.order)):
            probs = probs * base[R[:, j + 1], R[:, j]]
        return probs

    def initialize(self, key, num_states, dtype=None):
        self._check_states(num_states)
        return TransitionParams(sticky_matrix(self.num_regimes, self.self_transition, dtype))

    def base_counts(self, expected_transitions: Float[Array, "S S"]) -> Float[Array, "k k"]:
        """:math:`N_{ab} = \\sum_{i: s(i) = a} \\sum_{j: s(j) = b} \\xi_{ij}` (impossible moves carry no mass)."""
        k, p = int(self.num_regimes), int(self.order)
        return expected_transitions.reshape(k, k**p, k, k**p).sum((1, 3))

    def m_step(self, params, expected_transitions, stationary_weights=None):
        k = int(self.num_regimes)
        N = self.base_counts(expected_transitions)
        counts = jnp.maximum(N + (self.concentration - 1.0), 0.0)
        rows = counts.sum(1, keepdims=True)
        P = jnp.where(rows > 0, counts / jnp.where(rows > 0, rows, 1.0), params.matrix).astype(params.matrix.dtype)
        if stationary_weights is None or k == 1:
            return TransitionParams(P)
        return TransitionParams(
            _refine_with_stationary(
                params.matrix, P, counts, stationary_weights, self.refine_steps, self.stationary_history
            )
        )


# --------------------------------------------------------------------------------------------- emissions
class SwitchingMeanARParams(NamedTuple):
    """``means (k,)``; ``ar_coefficients`` ``(k, p)`` (switching) or ``(p,)``; ``variances`` ``(k,)`` or ``()``."""

    means: Float[Array, " k"]
    ar_coefficients: Array
    variances: Array

    __repr__ = short_repr


class SwitchingMeanAREmissions(EmissionComponent):
    """Hamilton's switching-mean AR(``order``) emission on the expanded states (see the module notes).

    Prior: flat means and AR coefficients, :math:`\\sigma^2 \\sim` inverse-gamma with
    :math:`\\log p = -\\tfrac{\\nu+2}{2}\\log\\sigma^2 - \\tfrac{\\epsilon}{2\\sigma^2}` (``variance_reg`` ε,
    ``variance_dof`` ν, default −2: MAP :math:`(R + \\epsilon)/n`)."""

    num_regimes: int
    order: int
    switching_ar: bool = False
    switching_variance: bool = False
    variance_reg: float = 1e-8
    variance_dof: float = -2.0
    num_sweeps: int = 5

    def __check_init__(self):
        _check_kp(self.num_regimes, self.order)
        if not float(self.variance_reg) > 0:
            raise ValueError(f"variance_reg must be > 0; got {self.variance_reg}.")
        if int(self.num_sweeps) < 1:
            raise ValueError(f"num_sweeps must be >= 1; got {self.num_sweeps}.")

    @property
    def emission_shape(self):
        return ()

    @property
    def emission_lags(self) -> int:
        return int(self.order)

    def features(self, past, inputs=None):
        """The lags :math:`(y_{t-1}, \\dots, y_{t-p})`."""
        if inputs is not None:
            raise ValueError("SwitchingMeanAREmissions takes no exogenous inputs; pass inputs=None.")
        return jnp.reshape(past, (-1,))

    @property
    def num_states(self) -> int:
        return int(self.num_regimes) ** (int(self.order) + 1)

    def num_states_of(self, params):
        return params.means.shape[0] ** (int(self.order) + 1)

    def param_spec(self, num_states):
        return SwitchingMeanARParams(
            ParamSpec(constraints.real), ParamSpec(constraints.real), ParamSpec(constraints.positive)
        )

    def log_prior(self, params, num_states):
        v = params.variances
        return jnp.sum(-0.5 * (self.variance_dof + 2.0) * jnp.log(v) - 0.5 * self.variance_reg / v)

    # per expanded state
    def _table(self):
        return jnp.asarray(regime_table(self.num_regimes, self.order))

    def _phi_per_state(self, params):
        R = self._table()
        phi = params.ar_coefficients
        S = self.num_states
        if self.switching_ar:
            return phi[R[:, 0]]
        return jnp.broadcast_to(phi, (S, int(self.order)))

    def _var_per_state(self, params):
        R = self._table()
        v = params.variances
        return v[R[:, 0]] if self.switching_variance else jnp.broadcast_to(v, (self.num_states,))

    def _means(self, params, x):
        """``(T, S)``: :math:`\\mu_{s_t} + \\sum_l \\phi_l^{(s_t)} (x_{t,l} - \\mu_{s_{t-l}})`."""
        R = self._table()
        mu = params.means[R]  # (S, p + 1)
        phi = self._phi_per_state(params)  # (S, p)
        return mu[:, 0][None] + jnp.einsum("sl,tsl->ts", phi, x[:, None, :] - mu[None, :, 1:])

    def distribution(self, params, state, inputs=None):
        m = self._means(params, inputs[None])[0, state]
        return dist.Normal(m, jnp.sqrt(self._var_per_state(params)[state]))

    def log_likelihoods(self, params, emissions, inputs=None):
        y = emissions.astype(params.means.dtype)
        m = self._means(params, inputs.astype(y.dtype))
        v = self._var_per_state(params)[None]
        return -0.5 * ((y[:, None] - m) ** 2 / v + jnp.log(2 * jnp.pi * v))

    # ------------------------------------------------------------------ fitting
    def initialize(self, key, num_states, data):
        """M-step on history weights built from k-means responsibilities of the regimes (lags that fall before
        the start or on masked steps count as uniform)."""
        k, p = int(self.num_regimes), int(self.order)
        r = initial_responsibilities(key, data, k)  # (B, T, k), 0 where masked
        r = jnp.where(data.mask[..., None], r, 1.0 / k)
        R = regime_table(k, p)
        w = r[:, :, R[:, 0]]
        for j in range(1, p + 1):
            lag = (
                jnp.concatenate([jnp.full_like(r[:, :j], 1.0 / k), r[:, :-j]], axis=1)
                if j < r.shape[1]
                else (jnp.full_like(r, 1.0 / k))
            )
            w = w * lag[:, :, R[:, j]]
        w = w / w.sum(-1, keepdims=True) * data.mask[..., None]
        params, _ = self.m_step(None, data, w, None, key)
        return params

    def m_step(self, params, data: Sequences, weights, state, key):
        k, p = int(self.num_regimes), int(self.order)
        S = self.num_states
        w = (weights * data.mask[..., None]).reshape(-1, S)
        y = data.emissions.reshape(-1).astype(w.dtype)
        x = data.inputs.reshape(-1, p).astype(w.dtype)
        if params is None:
            phi0 = jnp.zeros((k, p) if self.switching_ar else (p,), w.dtype)
            params = SwitchingMeanARParams(jnp.zeros((k,), w.dtype), phi0, self._pooled_variance(y, w))
        params = jax.tree.map(lambda a: jnp.asarray(a, w.dtype), params)
        return _ecm_sweeps(self, params, y, x, w), state

    def _sweep(self, params, y, x, w):
        R = self._table()
        params = params._replace(means=self._update_means(params, y, x, w, R))
        params = params._replace(ar_coefficients=self._update_phi(params, y, x, w, R))
        return params._replace(variances=self._update_variances(params, y, x, w))

    def _pooled_variance(self, y, w):
        shape = (int(self.num_regimes),) if self.switching_variance else ()
        n = w.sum()
        m = (w.sum(1) @ y) / n
        return jnp.full(shape, (w.sum(1) @ (y - m) ** 2 + self.variance_reg) / (n + self.variance_dof + 2.0))

    def _update_means(self, params, y, x, w, R):
        k = int(self.num_regimes)
        phi = self._phi_per_state(params)  # (S, p)
        prec = 1.0 / self._var_per_state(params)  # (S,)
        onehot = jax.nn.one_hot(R, k, dtype=w.dtype)  # (S, p + 1, k)
        c = onehot[:, 0] - jnp.einsum("sl,slk->sk", phi, onehot[:, 1:])  # (S, k)
        ytil = y[:, None] - x @ phi.T  # (N, S): y_t - sum_l phi_l x_tl
        ws = w * prec[None]
        gram = jnp.einsum("s,si,sj->ij", ws.sum(0), c, c)
        rhs = jnp.einsum("ns,ns,si->i", ws, ytil, c)
        return solve_psd(gram, rhs)

    def _update_phi(self, params, y, x, w, R):
        k, p = int(self.num_regimes), int(self.order)
        mu = params.means[R]  # (S, p + 1)
        u = y[:, None] - mu[None, :, 0]  # (N, S)
        v = x[:, None, :] - mu[None, :, 1:]  # (N, S, p)
        prec = 1.0 / self._var_per_state(params)
        ws = w * prec[None]
        if self.switching_ar:
            group = jax.nn.one_hot(R[:, 0], k, dtype=w.dtype)  # (S, k)
            gram = jnp.einsum("ns,nsi,nsj,sa->aij", w, v, v, group)
            rhs = jnp.einsum("ns,nsi,ns,sa->ai", w, v, u, group)
            return jax.vmap(solve_psd)(gram, rhs)
        gram = jnp.einsum("ns,nsi,nsj->ij", ws, v, v)
        rhs = jnp.einsum("ns,nsi,ns->i", ws, v, u)
        return solve_psd(gram, rhs).reshape(p)

    def _update_variances(self, params, y, x, w):
        k = int(self.num_regimes)
        resid2 = (y[:, None] - self._means(params, x)) ** 2  # (N, S)
        scatter = (w * resid2).sum(0)
        n = w.sum(0)
        reg, dof = self.variance_reg, self.variance_dof
        if self.switching_variance:
            group = jax.nn.one_hot(self._table()[:, 0], k, dtype=w.dtype)
            return (scatter @ group + reg) / (n @ group + dof + 2.0)
        return (scatter.sum() + reg) / (n.sum() + dof + 2.0)


@eqx.filter_jit
def _ecm_sweeps(component, params, y, x, w):
    return jax.lax.fori_loop(0, int(component.num_sweeps), lambda _, q: component._sweep(q, y, x, w), params)


# --------------------------------------------------------------------------------------------- convenience
class MarkovSwitchingARParams(NamedTuple):
    """Base params of the Markov-switching AR: ``transition_matrix[a, b] = p(s_t = b | s_{t-1} = a)``."""

    means: Float[Array, " k"]
    ar_coefficients: Array
    variances: Array
    transition_matrix: Float[Array, "k k"]

    __repr__ = short_repr


def markov_switching_ar(
    num_regimes: int,
    order: int,
    switching_ar: bool = False,
    switching_variance: bool = False,
    initial: str = "stationary",
    **emission_options: Any,
) -> HMM:
    """Hamilton's Markov-switching mean AR(``order``) with ``num_regimes`` regimes as an :class:`HMM` on the
    :math:`k^{p+1}` regime histories (``initial``: ``"stationary"``, ``"learned"`` or ``"fixed"``)."""
    em = SwitchingMeanAREmissions(num_regimes, order, switching_ar, switching_variance, **emission_options)
    return HMM(
        em.num_states,
        em,
        InitialDistribution(kind=initial),
        RegimeHistoryTransitions(num_regimes, order),
    )


def _check_msar(model):
    if not (
        isinstance(model, HMM)
        and isinstance(model.emission_component, SwitchingMeanAREmissions)
        and isinstance(model.transition_component, RegimeHistoryTransitions)
    ):
        raise TypeError("model must be built by markov_switching_ar (an HMM on regime histories).")


def to_base_params(model: HMM, params: HMMParams) -> MarkovSwitchingARParams:
    """Read :math:`(\\mu, \\phi, \\sigma^2, P)` back out of the HMM params."""
    _check_msar(model)
    e = params.emissions
    return MarkovSwitchingARParams(e.means, e.ar_coefficients, e.variances, params.transitions.matrix)


def markov_switching_ar_params(
    model: HMM,
    means: Any,
    ar_coefficients: Any,
    variances: Any,
    transition_matrix: Any,
    initial_probs: Any = None,
) -> HMMParams:
    """HMM params from the base params (shapes checked against the model's switching options);
    ``initial_probs`` ``(k^(p+1),)`` is needed unless the initial distribution is stationary."""
    _check_msar(model)
    em = model.emission_component
    k, p = int(em.num_regimes), int(em.order)
    ftype = jnp.result_type(float)
    mu = jnp.asarray(means, ftype)
    phi = jnp.asarray(ar_coefficients, ftype)
    var = jnp.asarray(variances, ftype)
    P = jnp.asarray(transition_matrix, ftype)
    want = {
        "means": (mu, (k,)),
        "ar_coefficients": (phi, (k, p) if em.switching_ar else (p,)),
        "variances": (var, (k,) if em.switching_variance else ()),
        "transition_matrix": (P, (k, k)),
    }
    for name, (a, shape) in want.items():
        if tuple(a.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(a.shape)}; this model needs {shape}.")
    if model.initial_component.kind == "stationary":
        init = InitialParams(None)
    else:
        if initial_probs is None:
            raise ValueError("initial_probs is required unless the model's initial distribution is 'stationary'.")
        init = InitialParams(jnp.asarray(initial_probs, ftype))
    params = HMMParams(init, TransitionParams(P), SwitchingMeanARParams(mu, phi, var))
    model.check_params(params)
    return params


def conditional_sequences(y: Any, order: int) -> Sequences:
    """One univariate series as a :class:`~pssm.data.Sequences` whose first ``order`` steps are masked but keep
    their values (they feed the lags): the likelihood conditions on :math:`y_{0:p-1}`, as statsmodels does."""
    arr = np.asarray(y, dtype=float).reshape(-1)
    if arr.shape[0] <= order:
        raise ValueError(f"y has {arr.shape[0]} steps; it needs more than order={order}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError("y must be finite (conditional_sequences keeps every value to feed the lags).")
    T = arr.shape[0]
    mask = np.arange(T) >= order
    known = jnp.ones((1, T), bool)  # every value is known (``observed``), though the first steps are masked
    return Sequences(jnp.asarray(arr[None]), jnp.asarray(mask[None]), jnp.asarray([T]), None, "real", known)
