"""Metrics for switching GLMs (model-agnostic: they take arrays).

* :func:`state_accuracy`: fraction of bins whose state matches after the best relabelling (Hungarian algorithm,
  :func:`pssm.metrics.match_states`).
* :func:`align_states`: reorder per-state estimates into the true states' order with that relabelling.
* :func:`weight_error`: relative Frobenius error :math:`\\lVert \\hat W - W\\rVert_F / \\lVert W\\rVert_F` over all
  states and entries (after alignment).
* :func:`weights_to_adjacency_probs`: the paper's soft map from weights to (inh, none, exc) for models without an
  adjacency: :math:`w \\ge 0 \\mapsto (0, 1 - w/\\max w, w/\\max w)`, :math:`w < 0 \\mapsto (w/\\min w, 1 - w/\\min w,
  0)`, with max/min over all given entries.
* :func:`balanced_accuracy`, :func:`adjacency_balanced_accuracy` (3-class, mean of per-class recalls, classes
  absent from the truth skipped) and :func:`adjacency_prior_accuracy` (argmax of a learned ``A0`` against the
  argmax of the true one).

* :func:`homogeneous_log_likelihood`: the baseline of :func:`pssm.inference.bits_per_spike` (the information
  gain of a model over a homogeneous Poisson (Bernoulli) model with one rate per neuron, in bits per spike).

Adjacency codes: ``-1`` inhibitory, ``0`` none, ``+1`` excitatory; probability arrays have a last axis of 3 in the
order (inh, none, exc).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from jaxtyping import Array, ArrayLike, Float

from pssm.data import Sequences
from pssm.metrics import match_states, permuted_state_accuracy

__all__ = [
    "state_accuracy",
    "align_states",
    "weight_error",
    "weights_to_adjacency_probs",
    "adjacency_from_weights",
    "balanced_accuracy",
    "adjacency_balanced_accuracy",
    "adjacency_prior_accuracy",
    "homogeneous_log_likelihood",
]


def state_accuracy(z_true: ArrayLike, z_est: ArrayLike, num_states: int) -> float:
    """Permutation-matched state accuracy (bins with a negative label, e.g. padding, are ignored)."""
    return permuted_state_accuracy(z_true, z_est, num_states)


def align_states(values: ArrayLike, z_true: ArrayLike, z_est: ArrayLike, num_states: int | None = None) -> np.ndarray:
    """Reorder ``values`` (leading axis = estimated state) so that row ``i`` belongs to true state ``i``.

    Uses the Hungarian matching of the state sequences; needs as many estimated as true states.
    """
    v = np.asarray(values)
    S = v.shape[0] if num_states is None else int(num_states)
    if v.shape[0] != S:
        raise ValueError(f"values has {v.shape[0]} states on its leading axis but num_states={S}.")
    perm = match_states(z_true, z_est, S)  # estimated j -> true perm[j]
    if np.any(perm < 0) or len(set(perm.tolist())) != S:
        raise ValueError("could not match every estimated state to a distinct true state; check num_states.")
    out = np.empty_like(v)
    out[perm] = v
    return out


def weight_error(w_true: ArrayLike, w_est: ArrayLike) -> float:
    """Relative Frobenius error :math:`\\lVert \\hat W - W\\rVert_F / \\lVert W\\rVert_F` (align states first)."""
    a, b = np.asarray(w_true, float), np.asarray(w_est, float)
    if a.shape != b.shape:
        raise ValueError(f"w_true and w_est must have the same shape; got {a.shape} and {b.shape}.")
    den = np.linalg.norm(a.ravel())
    if den == 0:
        raise ValueError("w_true is all zeros; the relative error is undefined.")
    return float(np.linalg.norm((b - a).ravel()) / den)


def weights_to_adjacency_probs(weights: ArrayLike) -> np.ndarray:
    """The paper's soft 3-class map of weights (any shape) to probabilities ``(..., 3)`` over (inh, none, exc)."""
    w = np.asarray(weights, float)
    if not np.all(np.isfinite(w)):
        raise ValueError("weights contains NaN or inf.")
    wmax = w.max() if np.any(w > 0) else 1.0
    wmin = w.min() if np.any(w < 0) else -1.0
    pos = np.clip(w / wmax, 0.0, 1.0) * (w >= 0)
    neg = np.clip(w / wmin, 0.0, 1.0) * (w < 0)
    return np.stack([neg, 1.0 - pos - neg, pos], axis=-1)


def adjacency_from_weights(weights: ArrayLike) -> np.ndarray:
    """Hard adjacency in {-1, 0, 1} from :func:`weights_to_adjacency_probs` (argmax; ties go to 'none')."""
    p = weights_to_adjacency_probs(weights)
    order = np.array([1, 0, 2])  # prefer 'none' on ties
    return order[np.argmax(p[..., order], axis=-1)] - 1


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean over the classes present in ``y_true`` of the recall of that class."""
    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same size; got {t.shape} and {p.shape}.")
    if t.size == 0:
        raise ValueError("y_true is empty.")
    return float(np.mean([np.mean(p[t == c] == c) for c in np.unique(t)]))


def _as_codes(adj: np.ndarray) -> np.ndarray:
    adj = np.asarray(adj)
    if adj.ndim >= 1 and adj.shape[-1] == 3 and np.issubdtype(adj.dtype, np.floating):
        return np.argmax(adj, axis=-1) - 1
    if not np.all(np.isin(adj, (-1, 0, 1))):
        raise ValueError("an adjacency must hold codes in {-1, 0, 1} or probabilities with a last axis of 3.")
    return adj.astype(int)


def _offdiag(a: np.ndarray, exclude_diagonal: bool) -> np.ndarray:
    if not exclude_diagonal:
        return a.reshape(-1)
    N = a.shape[-1]
    keep = ~np.eye(N, dtype=bool)
    return a[..., keep].reshape(-1)


def adjacency_balanced_accuracy(adj_true: ArrayLike, adj_est: ArrayLike, exclude_diagonal: bool = False) -> float:
    """Balanced 3-class accuracy of an estimated adjacency (codes or probabilities ``(..., 3)``) against the truth.

    Shapes ``(S, N, N)`` (align states first) or ``(N, N)``; a single estimate ``(N, N)`` against ``(S, N, N)``
    truths is broadcast (a one-state GLM).  ``exclude_diagonal`` drops self-connections.
    """
    t = _as_codes(np.asarray(adj_true))
    e = _as_codes(np.asarray(adj_est))
    e = np.broadcast_to(e, t.shape) if e.shape != t.shape else e
    if e.shape != t.shape:
        raise ValueError(f"adjacency shapes differ: true {t.shape}, estimated {e.shape}.")
    return balanced_accuracy(_offdiag(t, exclude_diagonal), _offdiag(e, exclude_diagonal))


def adjacency_prior_accuracy(prior_true: ArrayLike, prior_est: ArrayLike, exclude_diagonal: bool = False) -> float:
    """Balanced accuracy of ``argmax A0_est`` against ``argmax A0_true`` (both ``(N, N, 3)``)."""
    return adjacency_balanced_accuracy(np.asarray(prior_true, float), np.asarray(prior_est, float), exclude_diagonal)


def homogeneous_log_likelihood(
    data: Sequences, rates: ArrayLike | None = None, observation: str = "poisson"
) -> Float[Array, ""]:
    """Log-likelihood of ``data`` (a :class:`~pssm.data.Sequences`) under one rate per neuron (``rates`` ``(N,)``,
    default the data's own mean counts; pass the training rates for a held-out baseline)."""
    m = data.entries
    y = data.emissions.astype(jnp.result_type(float))
    if rates is None:
        rates = (y * m).sum((0, 1)) / jnp.maximum(m.sum((0, 1)), 1)
    r = jnp.clip(jnp.asarray(rates, y.dtype), 1e-12, None)
    if observation == "bernoulli":
        r = jnp.clip(r, 1e-12, 1 - 1e-7)
        lp = y * jnp.log(r) + (1 - y) * jnp.log1p(-r)
    else:
        lp = y * jnp.log(r) - r - gammaln(y + 1.0)
    return jnp.sum(lp * m)
