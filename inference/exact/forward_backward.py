"""Exact inference for discrete-state models: forward filtering, forward-backward smoothing, Viterbi, FFBS.

All functions take log potentials (see :func:`pssm.protocol.discrete_log_potentials`):

* ``log_initial`` ``(S,)``: :math:`\\log p(z_0 = j)`,
* ``log_transitions`` ``(S, S)`` or ``(T-1, S, S)``: :math:`\\log p(z_{t+1} = j \\mid z_t = i)`,
* ``log_likelihoods`` ``(T, S)``: :math:`\\log p(y_t \\mid z_t = j)` (0 for a missing observation).

The forward pass keeps normalised filtered probabilities :math:`\\alpha_t(j) = p(z_t = j \\mid y_{0:t})` and
accumulates :math:`\\log p(y_{0:T-1}) = \\sum_t \\log \\sum_j p(z_t=j \\mid y_{0:t-1}) p(y_t \\mid z_t=j)`.
Smoothing uses the backward recursion
:math:`\\gamma_t(i) = \\alpha_t(i) \\sum_j A_{ij} \\gamma_{t+1}(j) / \\bar\\alpha_{t+1}(j)` with
:math:`\\bar\\alpha_{t+1}` the one-step predictive.  ``length`` (static shape, traced value) marks a padded
sequence: steps ``t >= length`` are ignored, so batches of ragged sequences ``vmap`` cleanly.
All functions are pure, ``jit``-able and ``vmap``-able.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from pssm.arviz import summary_group, to_arviz
from pssm.display import short_repr
from pssm.jit import RUNTIME_CHECK, trace_once
from pssm.validation import check_array, is_tracer

if TYPE_CHECKING:
    import arviz as az

__all__ = [
    "HMMFilterResult",
    "HMMPosterior",
    "hmm_filter",
    "hmm_smoother",
    "hmm_viterbi",
    "hmm_posterior_sample",
    "hmm_log_likelihood",
]


class HMMFilterResult(NamedTuple):
    """Forward-pass output."""

    log_likelihood: Float[Array, ""]
    filtered_probs: Float[Array, "T S"]
    predicted_probs: Float[Array, "T S"]
    impossible_step: Int[Array, ""] | None = None
    """First step whose observation has probability zero under the params (``-1``: none).  From there on the
    probabilities are undefined (NaN) and ``log_likelihood`` is ``-inf``."""

    __repr__ = short_repr


class HMMPosterior(NamedTuple):
    """Forward-backward output.  ``expected_transitions[i, j] = sum_t p(z_t=i, z_{t+1}=j | y)``."""

    log_likelihood: Float[Array, ""]
    filtered_probs: Float[Array, "T S"]
    predicted_probs: Float[Array, "T S"]
    smoothed_probs: Float[Array, "T S"]
    expected_transitions: Float[Array, "S S"]
    pairwise_probs: Float[Array, "Tm1 S S"] | None = None
    impossible_step: Int[Array, ""] | None = None
    """First step whose observation has probability zero under the params (``-1``: none); then every probability
    is undefined (NaN) and ``log_likelihood`` is ``-inf``."""

    __repr__ = short_repr


_HMM_ARRAYS = ("log_initial", "log_transitions", "log_likelihoods", "length")
_ROW_SUM_TOL = 1e-3  # |log sum_j A_ij| above this: not a stochastic matrix (float32 rounding is ~1e-7)


def _check_hmm(args: dict[str, Any]) -> None:
    """Boundary checks of the forward-backward primitives (run outside ``jit``; values only when concrete).

    Ranks; no NaN or +inf anywhere (``-inf`` = impossible is allowed; a missing observation is a row of zeros,
    which carries no information); every row of ``exp(log_transitions)`` sums to one; ``length`` an integer in
    ``[1, T]``."""
    ll = check_array(args["log_likelihoods"], "log_likelihoods", ndim=2, finite=False)
    check_array(args["log_initial"], "log_initial", ndim=1, finite=False)
    lt = check_array(args["log_transitions"], "log_transitions", ndim=(2, 3), finite=False)
    _check_shapes(args["log_initial"], lt, ll)
    hints = {
        "log_likelihoods": "values must be finite or -inf; a missing observation contributes log-likelihood 0 in every "
        "state, so set its row to 0",
        "log_initial": "give log-probabilities (-inf for an impossible state)",
        "log_transitions": "give log-probabilities (-inf for an impossible transition)",
    }
    for name, hint in hints.items():
        a = args[name]
        if is_tracer(a):
            continue
        v = np.asarray(a)
        for what, bad in (("NaN", np.isnan(v)), ("+inf", np.isposinf(v))):
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                why = hint if what == "NaN" else "+inf is not a log-probability (a collapsed density: check the model)"
                raise ValueError(f"{name} contains {int(bad.sum())} {what} value(s) (first at index {where}); {why}.")
    if not is_tracer(lt):
        with np.errstate(divide="ignore"):
            sums = np.log(np.exp(np.asarray(lt, np.float64)).sum(axis=-1))  # log-probabilities: no overflow
        bad = ~(np.abs(sums) <= _ROW_SUM_TOL)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"log_transitions: every row of exp(log_transitions) must sum to 1 (a stochastic matrix); row "
                f"{where} sums to {float(np.exp(sums[where])):.6g}. Normalise it: "
                "log_transitions - logsumexp(log_transitions, axis=-1, keepdims=True)."
            )
    length = args.get("length")
    if length is not None and not is_tracer(length):
        T = ll.shape[0]
        v = np.asarray(length)
        if v.shape != () or v.dtype.kind not in "iu" or not 1 <= int(v) <= T:
            raise ValueError(
                f"length must be an integer in [1, T={T}] (the number of real steps; steps from length on are "
                f"padding); got {length!r}."
            )


def _check_shapes(log_initial, log_transitions, log_likelihoods) -> tuple[int, int]:
    T, S = jnp.shape(log_likelihoods)
    if jnp.shape(log_initial) != (S,):
        raise ValueError(f"log_initial must have shape ({S},) to match log_likelihoods {(T, S)}.")
    if jnp.shape(log_transitions) not in ((S, S), (T - 1, S, S)):
        raise ValueError(
            f"log_transitions must have shape ({S}, {S}) or ({T - 1}, {S}, {S}); got {jnp.shape(log_transitions)}."
        )
    return T, S


def _prep(log_initial, log_transitions, log_likelihoods, length):
    T, S = _check_shapes(log_initial, log_transitions, log_likelihoods)
    return T, S, jnp.asarray(T if length is None else length)


def impossible_step(log_likelihood, filtered_probs, length) -> tuple[Array, Array]:
    """``(log_likelihood, first impossible step)``: the first real step (``t < length``) whose filtered
    probabilities are undefined because the observation has probability zero given ``y_{0:t-1}`` (``-1``: none);
    the log-likelihood is then ``-inf`` (never NaN)."""
    T = filtered_probs.shape[0]
    bad = ~jnp.all(jnp.isfinite(filtered_probs), axis=-1) & (jnp.arange(T) < length)
    step = jnp.where(bad.any(), jnp.argmax(bad), -1).astype(jnp.int32)
    return jnp.where(step >= 0, -jnp.inf, log_likelihood), step


def _no_path_error(out, log_score):
    """Raise (also under ``jit``/``vmap``, through ``equinox.error_if``) when no state path has positive
    probability: Viterbi and posterior draws would otherwise return an arbitrary path."""
    import equinox as eqx

    return eqx.error_if(
        out,
        jnp.isneginf(log_score) | jnp.isnan(log_score),
        RUNTIME_CHECK
        + "no state path has positive probability under these potentials: some observation is impossible in every "
        "state it can reach (log-likelihood -inf). hmm_filter(...).impossible_step names the first such step; "
        "check the data (counts, class labels) or give params under which every observation is possible.",
    )


def _trans_at(log_transitions, t):
    """Log transition matrix from step t to t+1 (time-homogeneous or time-varying)."""
    if log_transitions.ndim == 2:
        return log_transitions
    if log_transitions.shape[0] == 0:  # T == 1: no transition is ever used
        return jnp.zeros(log_transitions.shape[1:], log_transitions.dtype)
    return log_transitions[jnp.minimum(t, log_transitions.shape[0] - 1)]


@trace_once(array_argnames=_HMM_ARRAYS, check=_check_hmm)
def hmm_filter(
    log_initial: Float[Array, " S"],
    log_transitions: Float[Array, "... S S"],
    log_likelihoods: Float[Array, "T S"],
    length: Int[Array, ""] | int | None = None,
) -> HMMFilterResult:
    """Forward algorithm in normalised form; returns the log marginal likelihood and filtered probabilities."""
    T, S, length = _prep(log_initial, log_transitions, log_likelihoods, length)
    log_pred0 = log_initial - logsumexp(log_initial)

    def step(carry, t):
        ll, log_pred = carry
        s = log_pred + log_likelihoods[t]
        c = logsumexp(s)
        log_filt = s - c
        valid = t < length
        ll = ll + jnp.where(valid, c, 0.0)
        filt = jnp.exp(log_filt)
        pred_next = filt @ jnp.exp(_trans_at(log_transitions, t))
        log_pred_next = jnp.log(pred_next)
        log_pred_next = jnp.where(valid, log_pred_next, log_pred)
        return (ll, log_pred_next), (filt, jnp.exp(log_pred))

    (ll, _), (filt, pred) = jax.lax.scan(step, (jnp.zeros((), log_likelihoods.dtype), log_pred0), jnp.arange(T))
    ll, bad = impossible_step(ll, filt, length)
    return HMMFilterResult(ll, filt, pred, bad)


@trace_once(static_argnames=("parallel",), array_argnames=_HMM_ARRAYS, check=_check_hmm)
def hmm_log_likelihood(
    log_initial: Float[Array, " S"],
    log_transitions: Float[Array, "... S S"],
    log_likelihoods: Float[Array, "T S"],
    length: Int[Array, ""] | int | None = None,
    parallel: bool = False,
) -> Float[Array, ""]:
    """:math:`\\log p(y_{0:T-1})` by the forward algorithm (differentiable); ``parallel=True``: associative scan."""
    if parallel:
        from pssm.inference.exact.parallel import hmm_filter_parallel

        return hmm_filter_parallel(log_initial, log_transitions, log_likelihoods, length)[0]
    return hmm_filter(log_initial, log_transitions, log_likelihoods, length).log_likelihood


@trace_once(static_argnames=("return_pairwise", "parallel"), array_argnames=_HMM_ARRAYS, check=_check_hmm)
def hmm_smoother(
    log_initial: Float[Array, " S"],
    log_transitions: Float[Array, "... S S"],
    log_likelihoods: Float[Array, "T S"],
    length: Int[Array, ""] | int | None = None,
    return_pairwise: bool = False,
    parallel: bool = False,
) -> HMMPosterior:
    """Forward-backward: smoothed marginals, expected transition counts (and per-step pairwise marginals).

    ``parallel=True`` runs the associative-scan version (:mod:`pssm.inference.exact.parallel`: O(log T) depth on
    an accelerator; same result to rounding; no pairwise marginals)."""
    if parallel:
        if return_pairwise:
            raise ValueError("return_pairwise is only available from the sequential smoother (parallel=False).")
        from pssm.inference.exact.parallel import hmm_smoother_parallel

        return hmm_smoother_parallel(log_initial, log_transitions, log_likelihoods, length)
    T, S, length = _prep(log_initial, log_transitions, log_likelihoods, length)
    fr = hmm_filter(log_initial, log_transitions, log_likelihoods, length)
    filt, pred = fr.filtered_probs, fr.predicted_probs

    def step(carry, t):
        sm_next, counts = carry
        A = jnp.exp(_trans_at(log_transitions, t))
        pred_next = pred[t + 1]
        ratio = jnp.where(pred_next > 0, sm_next / jnp.where(pred_next > 0, pred_next, 1.0), 0.0)
        pair = filt[t][:, None] * A * ratio[None, :]
        valid = t + 1 < length
        sm = jnp.where(valid, pair.sum(axis=1), filt[t])
        pair = jnp.where(valid, pair, 0.0)
        return (sm, counts + pair), (sm, pair if return_pairwise else None)

    init = (filt[T - 1], jnp.zeros((S, S), filt.dtype))
    (_, counts), (sm, pairs) = jax.lax.scan(step, init, jnp.arange(T - 1), reverse=True)
    smoothed = jnp.concatenate([sm, filt[T - 1][None]], axis=0)
    return HMMPosterior(fr.log_likelihood, filt, pred, smoothed, counts, pairs, fr.impossible_step)


@trace_once(array_argnames=_HMM_ARRAYS, check=_check_hmm)
def hmm_viterbi(
    log_initial: Float[Array, " S"],
    log_transitions: Float[Array, "... S S"],
    log_likelihoods: Float[Array, "T S"],
    length: Int[Array, ""] | int | None = None,
) -> Int[Array, " T"]:
    """Most probable state path :math:`\\arg\\max_z p(z \\mid y)`; padded steps (``t >= length``) get ``-1``.

    Raises (also under ``jit``) when every path has probability zero (an impossible observation)."""
    T, S, length = _prep(log_initial, log_transitions, log_likelihoods, length)
    delta0 = log_initial + log_likelihoods[0]

    def fwd(delta, t):
        scores = delta[:, None] + _trans_at(log_transitions, t - 1)
        ptr = jnp.argmax(scores, axis=0)
        new = jnp.max(scores, axis=0) + log_likelihoods[t]
        valid = t < length
        return jnp.where(valid, new, delta), jnp.where(valid, ptr, jnp.arange(S))

    delta, ptrs = jax.lax.scan(fwd, delta0, jnp.arange(1, T))
    last = jnp.argmax(delta)

    def bwd(z, ptr):
        prev = ptr[z]
        return prev, prev

    _, path = jax.lax.scan(bwd, last, ptrs, reverse=True)
    path = jnp.concatenate([path, last[None]])
    return _no_path_error(jnp.where(jnp.arange(T) < length, path, -1), jnp.max(delta))


@trace_once(array_argnames=_HMM_ARRAYS, key_argnames=("key",), check=_check_hmm)
def hmm_posterior_sample(
    key: PRNGKeyArray,
    log_initial: Float[Array, " S"],
    log_transitions: Float[Array, "... S S"],
    log_likelihoods: Float[Array, "T S"],
    length: Int[Array, ""] | int | None = None,
) -> Int[Array, " T"]:
    """One exact draw of :math:`z_{0:T-1} \\sim p(z \\mid y)` (forward filtering, backward sampling).

    Padded steps get ``-1``.  ``vmap`` over keys for many draws.  Raises (also under ``jit``) when the data have
    probability zero (an impossible observation: ``hmm_filter(...).impossible_step``).
    """
    T, S, length = _prep(log_initial, log_transitions, log_likelihoods, length)
    fr = hmm_filter(log_initial, log_transitions, log_likelihoods, length)
    log_filt = jnp.log(fr.filtered_probs)
    keys = jax.random.split(key, T)
    z_last = jax.random.categorical(keys[T - 1], log_filt[T - 1])

    def bwd(z_next, t):
        logits = log_filt[t] + _trans_at(log_transitions, t)[:, z_next]
        z = jax.random.categorical(keys[t], logits)
        z = jnp.where(t + 1 < length, z, jax.random.categorical(keys[t], log_filt[t]))
        return z, z

    _, zs = jax.lax.scan(bwd, z_last, jnp.arange(T - 1), reverse=True)
    path = jnp.concatenate([zs, z_last[None]])
    return _no_path_error(jnp.where(jnp.arange(T) < length, path, -1), fr.log_likelihood)


@to_arviz.register(HMMPosterior)
def _hmm_posterior_to_arviz(result: HMMPosterior, *, emissions=None, lengths=None) -> az.InferenceData:
    """Smoothed/filtered state probabilities (dims ``[trial,] time, state``), log-likelihood, observed data."""
    batched = result.smoothed_probs.ndim == 3
    lead = ["trial"] if batched else []
    dims = {
        "smoothed_probs": [*lead, "time", "state"],
        "filtered_probs": [*lead, "time", "state"],
        "expected_transitions": [*lead, "state", "state_next"],
        "log_likelihood": lead,
    }
    post = {
        "smoothed_probs": result.smoothed_probs,
        "filtered_probs": result.filtered_probs,
        "expected_transitions": result.expected_transitions,
    }
    observed = None
    if emissions is not None:
        y = np.asarray(emissions)
        obs_dims = [*lead, "time"] + [f"obs_dim_{i}" for i in range(y.ndim - len(lead) - 1)]
        dims["y"] = obs_dims
        observed = {"y": y}
    return summary_group(post, dims, observed_data=observed, log_likelihood={"log_likelihood": result.log_likelihood})


@to_arviz.register(HMMFilterResult)
def _hmm_filter_to_arviz(result: HMMFilterResult, *, emissions=None) -> az.InferenceData:
    """Filtered and one-step predicted state probabilities (dims ``[trial,] time, state``), log-likelihood."""
    lead = ["trial"] if result.filtered_probs.ndim == 3 else []
    post = {"filtered_probs": result.filtered_probs, "predicted_probs": result.predicted_probs}
    dims = {k: [*lead, "time", "state"] for k in post}
    dims["log_likelihood"] = lead
    observed = None
    if emissions is not None:
        y = np.asarray(emissions)
        dims["y"] = [*lead, "time"] + [f"obs_dim_{i}" for i in range(y.ndim - len(lead) - 1)]
        observed = {"y": y}
    return summary_group(post, dims, observed_data=observed, log_likelihood={"log_likelihood": result.log_likelihood})
