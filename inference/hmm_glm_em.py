"""Switching HMM-GLMs: data preparation, exact inference over the states, and EM.

Data: :func:`prepare_data` validates spike counts (one ``(T, N)`` sequence, a padded batch ``(B, T, N)`` with
``lengths``, or a list of ragged ``(T_b, N)`` arrays), computes the history features **once** and returns an
:class:`HMMGLMData` that every routine below (and SVI/NUTS) reuses.

Exact inference (states summed out): the per-state log-likelihoods from :meth:`HMMGLM.log_likelihoods` go to the
normalised forward-backward of :mod:`pssm.inference.forward_backward` (``vmap`` over sequences):
:func:`hmm_glm_posterior`, :func:`hmm_glm_viterbi`, :func:`hmm_glm_log_likelihood`, :func:`bits_per_spike`.

EM (:func:`fit_hmm_glm_em`).  E-step: :math:`\\gamma_t(s) = p(z_t = s \\mid y)` and expected transition counts.
M-step: closed-form MAP initial distribution and transition matrix (:func:`pssm.inference.em.m_step_transitions`,
sticky Dirichlet prior), the Gaussian prior mean in closed form (:math:`W_0 = \\bar W_s`) and, for the GLM,
``inner_steps`` optimiser steps (Adam, or L-BFGS from ``optax``) on

.. math::
    \\frac{1}{n}\\Big[\\sum_{b,t,s} \\gamma_{b,t}(s) \\log p(y_{b,t} \\mid z = s, \\theta)
    + \\log p(\\theta)\\Big],

with :math:`n` the number of observed bins.  For the one-hot prior the likelihood term uses either a
Gumbel-softmax *sample* of the adjacency at every inner step (``adjacency_sampling='gumbel'``, the paper's scheme)
or the soft adjacency itself (``'deterministic'``).  The whole iteration (E-step, transitions, the inner
optimiser in ``lax.scan``) is one jitted function; the optimiser state is carried across iterations.  The
Python loop gives a progress bar, a log-likelihood trace and a convergence test on the relative change of the
objective.  :func:`initialize_hmm_glm` gives data-driven starts (k-means on windowed firing rates -> soft state
labels -> a long M-step); :func:`fit_hmm_glm_restarts` keeps the best of several.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import arviz as az
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import gammaln
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray
from pssm.inference.em import m_step_transitions
from pssm.inference.forward_backward import HMMPosterior, hmm_filter, hmm_smoother, hmm_viterbi
from pssm.models.hmm_glm import HMMGLM, GLMInputs, GLMParams, HMMGLMParams, hard_adjacency_params
from scipy.cluster.vq import kmeans2
from tqdm.auto import tqdm

from pssm.arviz import summary_group, to_arviz

__all__ = [
    "HMMGLMData",
    "HMMGLMFit",
    "prepare_data",
    "hmm_glm_log_potentials",
    "hmm_glm_posterior",
    "hmm_glm_viterbi",
    "hmm_glm_log_likelihood",
    "homogeneous_log_likelihood",
    "bits_per_spike",
    "expected_log_likelihood",
    "initialize_hmm_glm",
    "fit_hmm_glm_em",
    "fit_hmm_glm_restarts",
]


class HMMGLMData(NamedTuple):
    """Validated, padded data with precomputed inputs.  ``spikes (B, T, N)``, ``inputs`` leaves ``(B, T, ...)``,
    ``mask (B, T)`` (False at padded/missing bins), ``lengths (B,)``."""

    spikes: Float[Array, "B T N"]
    inputs: GLMInputs
    mask: Bool[Array, "B T"]
    lengths: Int[Array, " B"]

    @property
    def num_bins(self) -> int:
        return int(np.asarray(self.mask).sum())


class HMMGLMFit(NamedTuple):
    """EM output.  ``log_likelihoods[i]`` / ``log_objective[i]`` are at the params *entering* iteration ``i``
    (objective = log-likelihood + log prior); ``posterior`` is the batched forward-backward at the final params."""

    params: HMMGLMParams
    log_likelihoods: Float[Array, " iters"]
    log_objective: Float[Array, " iters"]
    converged: bool
    num_iterations: int
    posterior: HMMPosterior
    seconds_per_iteration: float


# --------------------------------------------------------------------------------------------- data
def _pad(seqs: Sequence[ArrayLike], name: str):
    arrs = [np.asarray(s) for s in seqs]
    if not arrs:
        raise ValueError(f"{name} is an empty list; give at least one sequence.")
    lens = np.array([a.shape[0] for a in arrs])
    T = int(lens.max())
    out = np.zeros((len(arrs), T) + arrs[0].shape[1:], dtype=np.result_type(*arrs))
    for i, a in enumerate(arrs):
        if a.shape[1:] != arrs[0].shape[1:]:
            raise ValueError(
                f"{name}[{i}] has shape {a.shape}; every sequence needs trailing shape {arrs[0].shape[1:]}."
            )
        out[i, : a.shape[0]] = a
    return out, lens


def prepare_data(
    model: HMMGLM,
    spikes: Any,
    covariates: Any = None,
    lengths: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    trial_ids: ArrayLike | None = None,
    dtype: Any = None,
) -> HMMGLMData:
    """Validate spike data and compute the model's inputs once.

    ``spikes``: ``(T, N)``, padded ``(B, T, N)`` (with ``lengths``) or a list of ``(T_b, N)`` arrays (ragged
    trials; padded here).  ``covariates`` follows the same layout with ``D`` columns.  ``mask`` ``(B, T)`` marks
    missing bins (they contribute no likelihood but still feed the history).  ``trial_ids`` (single sequence only)
    stops the history at trial boundaries.  Counts must be finite, non-negative integers (Poisson) or 0/1
    (Bernoulli); ``NaN`` is allowed only where ``mask`` is False.
    """
    if isinstance(spikes, HMMGLMData):
        return spikes
    if isinstance(spikes, list | tuple):
        y, lens = _pad(spikes, "spikes")
        if lengths is not None:
            raise ValueError("lengths are inferred from a list of sequences; do not pass lengths as well.")
        lengths = lens
        if covariates is not None:
            covariates, clens = _pad(covariates, "covariates")
            if not np.array_equal(clens, lens):
                raise ValueError("covariates sequences must have the same lengths as the spike sequences.")
    else:
        y = np.asarray(spikes)
    if y.ndim == 2:
        y = y[None]
        if covariates is not None:
            covariates = np.asarray(covariates)[None]
        if mask is not None:
            mask = np.asarray(mask)[None]
    elif trial_ids is not None:
        raise ValueError("trial_ids is for one concatenated (T, N) sequence; a batch already has one trial per row.")
    if y.ndim != 3:
        raise ValueError(f"spikes must be (T, N), (B, T, N) or a list of (T_b, N) arrays; got shape {y.shape}.")
    B, T, N = y.shape
    if N != model.num_neurons:
        raise ValueError(f"spikes has {N} neurons (last axis) but the model has num_neurons={model.num_neurons}.")
    if T < 1:
        raise ValueError("spikes has no time bins.")
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths).reshape(-1)
    if lengths.shape != (B,) or np.any(lengths < 1) or np.any(lengths > T):
        raise ValueError(f"lengths must be {B} integers in [1, {T}]; got {lengths}.")
    valid = np.arange(T)[None, :] < lengths[:, None]
    m = valid if mask is None else (np.asarray(mask, bool).reshape(B, T) & valid)
    if mask is not None and np.asarray(mask).size != B * T:
        raise ValueError(f"mask must have shape ({B}, {T}); got {np.shape(mask)}.")
    yo = y[m]
    if not np.all(np.isfinite(yo)):
        raise ValueError("spikes contains NaN or inf at observed bins; mark missing bins with mask=False.")
    if np.any(yo < 0):
        raise ValueError("spikes contains negative counts; spike counts must be >= 0.")
    if np.any(yo != np.round(yo)):
        raise ValueError("spikes contains non-integer values; give spike counts (integers).")
    if model.observation == "bernoulli" and np.any(yo > 1):
        raise ValueError("Bernoulli observations must be 0 or 1; spikes has larger counts (use observation='poisson').")
    y = np.where(np.isfinite(y), y, 0.0) * valid[..., None]
    dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    cov = None
    if covariates is not None:
        cov = np.asarray(covariates, dtype=float)
        if cov.shape[:2] != (B, T) or cov.ndim != 3:
            raise ValueError(f"covariates must have shape ({B}, {T}, D) to match spikes; got {cov.shape}.")
        if not np.all(np.isfinite(cov[valid])):
            raise ValueError("covariates contains NaN or inf.")
        cov = jnp.asarray(np.where(np.isfinite(cov), cov, 0.0), dtype)
    if model.num_covariates and cov is not None and cov.shape[-1] != model.num_covariates:
        raise ValueError(
            f"covariates has {cov.shape[-1]} columns but the model has num_covariates={model.num_covariates}."
        )
    yj = jnp.asarray(y, dtype)
    lj = jnp.asarray(lengths)
    if trial_ids is not None:  # one concatenated sequence: features with resets at trial boundaries
        inputs = model.features(yj[0], None if cov is None else cov[0], None, trial_ids)
        inputs = jax.tree.map(lambda a: a[None], inputs)
    else:
        inputs = model.features(yj, cov, lj)
    return HMMGLMData(yj, inputs, jnp.asarray(m), lj)


def _as_data(model, data) -> HMMGLMData:
    return data if isinstance(data, HMMGLMData) else prepare_data(model, data)


def _data_dtype(model, data, params) -> HMMGLMParams:
    """Cast params to the data dtype (float32 data with float64 params would silently promote)."""
    return jax.tree.map(lambda a: jnp.asarray(a, data.spikes.dtype), params)


# --------------------------------------------------------------------------------------------- exact inference
def hmm_glm_log_potentials(
    model: HMMGLM, params: HMMGLMParams, data: HMMGLMData, coupling: Array | None = None
) -> tuple[Float[Array, " S"], Float[Array, "S S"], Float[Array, "B T S"]]:
    """Log initial probs, log transition matrix and masked per-state log-likelihoods ``(B, T, S)``."""
    ll = model.log_likelihoods(params, data.spikes, data.inputs, coupling)
    ll = jnp.where(data.mask[..., None], ll, 0.0)
    tiny = jnp.finfo(ll.dtype).tiny
    return jnp.log(jnp.maximum(params.initial_probs, tiny)), jnp.log(jnp.maximum(params.transition_matrix, tiny)), ll


def _posterior(model, params, data):
    li, lA, ll = hmm_glm_log_potentials(model, params, data)
    return jax.vmap(lambda l, n: hmm_smoother(li, lA, l, n))(ll, data.lengths)


def _maybe_hard(params, adjacency):
    if adjacency not in ("hard", "soft"):
        raise ValueError(f"adjacency must be 'hard' or 'soft'; got {adjacency!r}.")
    return hard_adjacency_params(params) if adjacency == "hard" else params


def _prepare_eval(model, params, data, adjacency):
    """Shared boundary work of the evaluation functions: data container, params check, hard adjacency, dtype."""
    data = _as_data(model, data)
    model.check_params(params)
    return _data_dtype(model, data, _maybe_hard(params, adjacency)), data


@eqx.filter_jit
def _posterior_jit(model, p, data):
    return _posterior(model, p, data)


@eqx.filter_jit
def _viterbi_jit(model, p, data):
    li, lA, ll = hmm_glm_log_potentials(model, p, data)
    return jax.vmap(lambda l, n: hmm_viterbi(li, lA, l, n))(ll, data.lengths)


@eqx.filter_jit
def _log_likelihood_jit(model, p, data):
    li, lA, ll = hmm_glm_log_potentials(model, p, data)
    return jax.vmap(lambda l, n: hmm_filter(li, lA, l, n).log_likelihood)(ll, data.lengths)


def hmm_glm_posterior(
    model: HMMGLM, params: HMMGLMParams, data: Any, adjacency: Literal["hard", "soft"] = "soft"
) -> HMMPosterior:
    """Batched forward-backward: ``smoothed_probs (B, T, S)``, per-sequence log-likelihoods, expected counts."""
    p, data = _prepare_eval(model, params, data, adjacency)
    return _posterior_jit(model, p, data)


def hmm_glm_viterbi(
    model: HMMGLM, params: HMMGLMParams, data: Any, adjacency: Literal["hard", "soft"] = "soft"
) -> Int[Array, "B T"]:
    """Most probable state paths ``(B, T)`` (``-1`` at padded steps)."""
    p, data = _prepare_eval(model, params, data, adjacency)
    return _viterbi_jit(model, p, data)


def hmm_glm_log_likelihood(
    model: HMMGLM, params: HMMGLMParams, data: Any, adjacency: Literal["hard", "soft"] = "soft"
) -> Float[Array, " B"]:
    """Marginal :math:`\\log p(y_b)` of each sequence (states summed out by the forward algorithm)."""
    p, data = _prepare_eval(model, params, data, adjacency)
    return _log_likelihood_jit(model, p, data)


def homogeneous_log_likelihood(
    data: HMMGLMData, rates: ArrayLike | None = None, observation: str = "poisson"
) -> Float[Array, ""]:
    """Log-likelihood of a homogeneous Poisson (or Bernoulli) model with one rate per neuron.

    ``rates`` ``(N,)`` default: the data's own mean counts (pass the training-set rates for a held-out baseline).
    """
    m = data.mask[..., None]
    y = data.spikes
    if rates is None:
        rates = (y * m).sum((0, 1)) / jnp.maximum(m.sum((0, 1)), 1)
    r = jnp.clip(jnp.asarray(rates, y.dtype), 1e-12, None)
    if observation == "bernoulli":
        r = jnp.clip(r, 1e-12, 1 - 1e-7)
        lp = y * jnp.log(r) + (1 - y) * jnp.log1p(-r)
    else:
        lp = y * jnp.log(r) - r - gammaln(y + 1.0)
    return jnp.sum(lp * m)


def bits_per_spike(
    model: HMMGLM,
    params: HMMGLMParams,
    data: Any,
    baseline_rates: ArrayLike | None = None,
    adjacency: Literal["hard", "soft"] = "soft",
) -> float:
    """(log p(y) − log p_hom(y)) / (#spikes · ln 2): information gain over a homogeneous Poisson (Bernoulli)
    model; pass ``baseline_rates`` (mean counts per bin of the training data) for held-out data."""
    data = _as_data(model, data)
    ll = float(hmm_glm_log_likelihood(model, params, data, adjacency).sum())
    ll0 = float(homogeneous_log_likelihood(data, baseline_rates, model.observation))
    n = float((data.spikes * data.mask[..., None]).sum())
    if n <= 0:
        raise ValueError("data contains no spikes; bits per spike is undefined.")
    return (ll - ll0) / (n * np.log(2.0))


# --------------------------------------------------------------------------------------------- M-step
def expected_log_likelihood(
    model: HMMGLM,
    eparams: GLMParams,
    data: HMMGLMData,
    weights: Float[Array, "B T S"],
    coupling: Array | None = None,
) -> Float[Array, ""]:
    """:math:`\\sum_{b,t,s} w_{b,t,s}\\,\\log p(y_{b,t} \\mid z=s)` without the parameter-free ``-log y!`` term."""
    eta = model.predictor(eparams, data.inputs, coupling)  # (B, T, S, N)
    y = data.spikes[..., None, :]
    lp = model.log_pmf(y, eta)
    if model.observation == "poisson":
        lp = lp + gammaln(y + 1.0)  # drop the constant (computing it per state is wasted work)
    return jnp.sum(weights * lp.sum(-1))


def _adam(learning_rate):
    return optax.adam(learning_rate)


def _make_optimizer(optimizer: str, learning_rate: float):
    if optimizer == "adam":
        return optax.adam(learning_rate)
    if optimizer == "lbfgs":
        return optax.lbfgs()
    raise ValueError(f"optimizer must be 'adam' or 'lbfgs'; got {optimizer!r}.")


def _emission_loss(model, adjacency_sampling, sample_temperature, log_floor, data, weights, n_bins):
    onehot = model.coupling_prior == "onehot"

    def loss(eparams, key):
        coupling = None
        if onehot and adjacency_sampling == "gumbel":
            g = jax.random.gumbel(key, eparams.adjacency_logits.shape, eparams.adjacency_logits.dtype)
            a = jax.nn.softmax((eparams.adjacency_logits + g) / sample_temperature, axis=-1)
            coupling = model.coupling_weights(eparams, a)
        q = expected_log_likelihood(model, eparams, data, weights, coupling)
        return -(q + model.coupling_log_prior(eparams, log_floor)) / n_bins

    return loss


def _inner_optimise(loss, opt, optimizer, eparams, opt_state, key, num_steps):
    if optimizer == "lbfgs":
        value_and_grad = optax.value_and_grad_from_state(lambda p: loss(p, key))

        def step(carry, _):
            p, s = carry
            v, g = value_and_grad(p, state=s)
            u, s = opt.update(g, s, p, value=v, grad=g, value_fn=lambda q: loss(q, key))
            return (optax.apply_updates(p, u), s), v

        (eparams, opt_state), vals = jax.lax.scan(step, (eparams, opt_state), None, length=num_steps)
        return eparams, opt_state, vals

    def step(carry, k):
        p, s = carry
        v, g = jax.value_and_grad(loss)(p, k)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), v

    (eparams, opt_state), vals = jax.lax.scan(step, (eparams, opt_state), jax.random.split(key, num_steps))
    return eparams, opt_state, vals


class _EMConfig(eqx.Module):
    model: HMMGLM
    optimizer: str = eqx.field(static=True)
    learning_rate: float = eqx.field(static=True)
    inner_steps: int = eqx.field(static=True)
    adjacency_sampling: str = eqx.field(static=True)
    sample_temperature: float = eqx.field(static=True)
    log_floor: float = eqx.field(static=True)
    update_transitions: bool = eqx.field(static=True)


def _m_step_emissions(cfg: _EMConfig, eparams, opt_state, key, data, weights):
    n_bins = jnp.maximum(data.mask.sum(), 1).astype(weights.dtype)
    loss = _emission_loss(
        cfg.model, cfg.adjacency_sampling, cfg.sample_temperature, cfg.log_floor, data, weights, n_bins
    )
    opt = _make_optimizer(cfg.optimizer, cfg.learning_rate)
    eparams, opt_state, vals = _inner_optimise(loss, opt, cfg.optimizer, eparams, opt_state, key, cfg.inner_steps)
    if eparams.weights_mean is not None:  # exact coordinate ascent on the Gaussian prior mean: W0 = mean_s W_s
        eparams = eparams._replace(weights_mean=eparams.weights.mean(0))
    return eparams, opt_state, vals


@eqx.filter_jit
def _em_iteration(cfg: _EMConfig, params, opt_state, key, data):
    model = cfg.model
    post = _posterior(model, params, data)
    ll = post.log_likelihood.sum()
    obj = ll + model.log_prior(params, cfg.log_floor)
    if cfg.update_transitions and model.num_states > 1:
        pi, A = m_step_transitions(post, model.transition_prior_concentration().astype(ll.dtype))
    else:
        pi, A = params.initial_probs, params.transition_matrix
    weights = post.smoothed_probs * data.mask[..., None]
    em, opt_state, _ = _m_step_emissions(cfg, params.emissions, opt_state, key, data, weights)
    return HMMGLMParams(pi.astype(ll.dtype), A.astype(ll.dtype), em), opt_state, ll, obj


@eqx.filter_jit
def _final_objective(model, params, data, log_floor):
    post = _posterior(model, params, data)
    return post, post.log_likelihood.sum() + model.log_prior(params, log_floor)


def fit_hmm_glm_em(
    key: PRNGKeyArray,
    model: HMMGLM,
    params: HMMGLMParams,
    data: Any,
    *,
    num_iters: int = 100,
    inner_steps: int = 10,
    learning_rate: float = 0.05,
    optimizer: Literal["adam", "lbfgs"] = "adam",
    adjacency_sampling: Literal["gumbel", "deterministic"] = "gumbel",
    sample_temperature: float | None = None,
    log_floor: float = -10.0,
    tol: float = 1e-6,
    min_iters: int = 5,
    update_transitions: bool = True,
    progress: bool = False,
) -> HMMGLMFit:
    """Fit by EM (MAP under the model's priors); ``key`` drives the Gumbel-softmax adjacency samples.

    ``inner_steps`` optimiser steps per M-step (Adam with ``learning_rate``, state carried across iterations, or
    L-BFGS with a zoom line search — use it with ``adjacency_sampling='deterministic'``).  Stops after
    ``num_iters`` iterations or when ``|obj_i - obj_{i-1}| <= tol (|obj_{i-1}| + 1)`` for an iteration past
    ``min_iters``.  ``sample_temperature`` (default ``model.temperature``) is the temperature of the sampled
    adjacencies.  Resume by passing ``result.params`` back in.
    """
    data = _as_data(model, data)
    model.check_params(params)
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs'; got {optimizer!r}.")
    if adjacency_sampling not in ("gumbel", "deterministic"):
        raise ValueError(f"adjacency_sampling must be 'gumbel' or 'deterministic'; got {adjacency_sampling!r}.")
    if int(num_iters) < 1 or int(inner_steps) < 1:
        raise ValueError(f"num_iters and inner_steps must be >= 1; got {num_iters}, {inner_steps}.")
    cfg = _EMConfig(
        model,
        optimizer,
        float(learning_rate),
        int(inner_steps),
        adjacency_sampling,
        float(sample_temperature if sample_temperature is not None else model.temperature),
        float(log_floor),
        bool(update_transitions),
    )
    params = _data_dtype(model, data, params)
    opt_state = _make_optimizer(optimizer, learning_rate).init(params.emissions)
    lls, objs, converged = [], [], False
    times = []
    it = tqdm(range(int(num_iters)), desc=f"EM {model.coupling_prior}", disable=not progress)
    for i in it:
        key, sub = jax.random.split(key)
        t0 = time.perf_counter()
        new_params, new_state, ll, obj = _em_iteration(cfg, params, opt_state, sub, data)
        ll, obj = float(ll), float(obj)
        times.append(time.perf_counter() - t0)
        if not np.isfinite(obj):
            raise FloatingPointError(
                f"EM objective became {obj} at iteration {i}; check the data and initial params, or lower "
                "learning_rate."
            )
        lls.append(ll)
        objs.append(obj)
        it.set_postfix(loglik=f"{ll:.1f}")
        if i >= min_iters and abs(objs[-1] - objs[-2]) <= tol * (abs(objs[-2]) + 1.0):
            converged = True
            break
        params, opt_state = new_params, new_state
    post, _ = _final_objective(model, params, data, log_floor)
    spi = float(np.median(times[1:])) if len(times) > 1 else float(times[0])
    return HMMGLMFit(params, jnp.asarray(lls), jnp.asarray(objs), converged, len(lls), post, spi)


# --------------------------------------------------------------------------------------------- initialisation
def _window_labels(key, data: HMMGLMData, num_states: int, window: int, num_kmeans: int = 10) -> np.ndarray:
    """k-means on standardised square-root firing rates of non-overlapping windows -> labels per bin (B, T)."""
    y = np.asarray(data.spikes)
    m = np.asarray(data.mask)
    B, T, N = y.shape
    nw = int(np.ceil(T / window))
    pad = nw * window - T
    yp = np.pad(y * m[..., None], ((0, 0), (0, pad), (0, 0))).reshape(B, nw, window, N)
    mp = np.pad(m, ((0, 0), (0, pad))).reshape(B, nw, window)
    cnt = mp.sum(-1)
    feats = np.sqrt(yp.sum(2) / np.maximum(cnt, 1)[..., None])  # (B, nw, N)
    ok = cnt > 0
    f = feats[ok]
    f = (f - f.mean(0)) / (f.std(0) + 1e-6)
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    if num_states == 1 or f.shape[0] < num_states:
        lab = np.zeros(f.shape[0], int)
    else:  # best of several k-means++ runs by distortion (a merged pair of states is hard for EM to split)
        best = np.inf
        for r in range(num_kmeans):
            cent, lab_r = kmeans2(f, num_states, minit="++", seed=seed + r)
            dist2 = float(((f - cent[lab_r]) ** 2).sum())
            if dist2 < best:
                best, lab = dist2, lab_r
    labels = np.zeros((B, nw), int)
    labels[ok] = lab
    return np.repeat(labels, window, axis=1)[:, :T]


def initialize_hmm_glm(
    key: PRNGKeyArray,
    model: HMMGLM,
    data: Any,
    *,
    method: Literal["kmeans", "random"] = "kmeans",
    window: int = 25,
    num_kmeans: int = 10,
    num_steps: int = 100,
    learning_rate: float = 0.05,
    self_transition: float = 0.95,
    smoothing: float = 0.1,
) -> HMMGLMParams:
    """Data-driven starting params.

    ``'kmeans'``: cluster non-overlapping ``window``-bin windows by their (standardised, square-root) firing rates
    into ``num_states`` groups (best of ``num_kmeans`` k-means++ runs), turn the labels into soft
    responsibilities (``smoothing`` spread evenly), and run
    ``num_steps`` Adam steps of the weighted GLM M-step from small random weights.  ``'random'``: random
    responsibilities per window.  Both start the bias at the inverse link of each neuron's mean count and the
    transition matrix at ``self_transition`` on the diagonal.
    """
    data = _as_data(model, data)
    if method not in ("kmeans", "random"):
        raise ValueError(f"method must be 'kmeans' or 'random'; got {method!r}.")
    k1, k2, k3 = jax.random.split(key, 3)
    S = model.num_states
    y, m = data.spikes, data.mask
    rate = np.asarray((y * m[..., None]).sum((0, 1)) / jnp.maximum(m.sum(), 1))
    rate = np.clip(rate, 1e-3, None)
    if model.observation == "bernoulli":
        r = np.clip(rate, 1e-3, 1 - 1e-3)
        b0 = np.log(r / (1 - r))
    elif model.link == "exp":
        b0 = np.log(rate)
    elif model.link == "softplus":
        b0 = np.log(np.expm1(rate))
    else:
        r = np.clip(rate / model.rate_scale, 1e-3, 1 - 1e-3)
        b0 = np.log(r / (1 - r))
    params = model.init_params(k1, self_transition=self_transition, weight_scale=0.01, bias=b0, dtype=data.spikes.dtype)
    if method == "kmeans":
        labels = _window_labels(k2, data, S, window, num_kmeans)
    else:
        B, T = m.shape
        nw = int(np.ceil(T / window))
        labels = np.repeat(np.asarray(jax.random.randint(k2, (B, nw), 0, S)), window, axis=1)[:, :T]
    resp = np.full(labels.shape + (S,), smoothing / S)
    np.put_along_axis(resp, labels[..., None], 1.0 - smoothing + smoothing / S, axis=-1)
    weights = jnp.asarray(resp, data.spikes.dtype) * m[..., None]
    cfg = _EMConfig(
        model, "adam", float(learning_rate), int(num_steps), "deterministic", float(model.temperature), -10.0, True
    )
    opt_state = _adam(learning_rate).init(params.emissions)
    em, _, _ = eqx.filter_jit(_m_step_emissions)(cfg, params.emissions, opt_state, k3, data, weights)
    return params._replace(emissions=em)


def fit_hmm_glm_restarts(
    key: PRNGKeyArray,
    model: HMMGLM,
    data: Any,
    *,
    num_restarts: int = 3,
    init_method: Literal["kmeans", "random"] = "kmeans",
    init_kwargs: dict | None = None,
    **em_kwargs: Any,
) -> tuple[HMMGLMFit, list[HMMGLMFit]]:
    """Run :func:`initialize_hmm_glm` + :func:`fit_hmm_glm_em` from ``num_restarts`` keys; return
    ``(best, all)``, best by final log-likelihood + log prior."""
    data = _as_data(model, data)
    if int(num_restarts) < 1:
        raise ValueError(f"num_restarts must be >= 1; got {num_restarts}.")
    fits = []
    for k in jax.random.split(key, int(num_restarts)):
        ki, ke = jax.random.split(k)
        p0 = initialize_hmm_glm(ki, model, data, method=init_method, **(init_kwargs or {}))
        fits.append(fit_hmm_glm_em(ke, model, p0, data, **em_kwargs))
    best = max(fits, key=lambda f: float(f.log_objective[-1]))
    return best, fits


# --------------------------------------------------------------------------------------------- ArviZ
def _param_dims(model: HMMGLM, eparams: GLMParams) -> tuple[dict, dict, dict]:
    post, dims, coords = {}, {}, {}
    bias_dims = ["neuron"] if eparams.bias.ndim == 1 else ["state", "neuron"]
    post["bias"], dims["bias"] = eparams.bias, bias_dims
    if model.has_coupling:
        S, N, K = model.num_states, model.num_neurons, model.num_basis
        post["coupling"] = np.asarray(model.coupling_weights(eparams)).reshape(S, N, N, K)
        dims["coupling"] = ["state", "neuron", "presyn", "basis"]
        if eparams.weights_mean is not None:
            post["weights_mean"] = np.asarray(eparams.weights_mean).reshape(N, N, K)
            dims["weights_mean"] = ["neuron", "presyn", "basis"]
        if eparams.adjacency_logits is not None:
            post["adjacency_probs"] = np.asarray(jax.nn.softmax(eparams.adjacency_logits, -1))
            dims["adjacency_probs"] = ["state", "neuron", "presyn", "adjacency_class"]
            post["adjacency_prior"] = np.asarray(jax.nn.softmax(eparams.prior_logits, -1))
            dims["adjacency_prior"] = ["neuron", "presyn", "adjacency_class"]
            coords["adjacency_class"] = ["inh", "none", "exc"]
    if eparams.input_weights is not None:
        post["input_weights"], dims["input_weights"] = eparams.input_weights, ["state", "neuron", "covariate"]
    return post, dims, coords


@to_arviz.register(HMMGLMFit)
def _hmm_glm_fit_to_arviz(result: HMMGLMFit, *, model: HMMGLM, data: HMMGLMData | None = None) -> az.InferenceData:
    """EM point estimates + smoothed state probabilities (dims ``trial, time, state``; weights ``state, neuron,
    presyn, basis``); the log-likelihood trace goes to ``sample_stats``; spikes to ``observed_data``."""
    post, dims, coords = _param_dims(model, result.params.emissions)
    post["transition_matrix"], dims["transition_matrix"] = result.params.transition_matrix, ["state", "state_next"]
    post["initial_probs"], dims["initial_probs"] = result.params.initial_probs, ["state"]
    post["smoothed_probs"], dims["smoothed_probs"] = result.posterior.smoothed_probs, ["trial", "time", "state"]
    dims["log_likelihood"] = ["trial"]
    dims["em_log_likelihood"] = ["em_iteration"]
    observed = None
    if data is not None:
        observed = {"spikes": np.asarray(data.spikes)}
        dims["spikes"] = ["trial", "time", "neuron"]
    return summary_group(
        post,
        dims,
        coords,
        observed_data=observed,
        log_likelihood={"log_likelihood": result.posterior.log_likelihood},
        sample_stats={"em_log_likelihood": result.log_likelihoods},
    )
