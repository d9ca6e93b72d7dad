"""Evaluation metrics: state matching by the Hungarian algorithm, accuracies, information rates."""

from __future__ import annotations

import numpy as np
from jaxtyping import ArrayLike
from scipy.optimize import linear_sum_assignment

__all__ = ["match_states", "permuted_state_accuracy", "confusion_matrix", "bits_per"]


def confusion_matrix(z_true: ArrayLike, z_est: ArrayLike, num_true: int, num_est: int | None = None) -> np.ndarray:
    """``C[i, j]`` = number of steps with true state ``i`` and estimated state ``j`` (negative labels ignored)."""
    z_true, z_est = np.asarray(z_true).ravel(), np.asarray(z_est).ravel()
    if z_true.shape != z_est.shape:
        raise ValueError(f"z_true and z_est must have the same shape; got {z_true.shape} and {z_est.shape}.")
    num_est = num_true if num_est is None else num_est
    ok = (z_true >= 0) & (z_est >= 0)
    C = np.zeros((num_true, num_est), dtype=np.int64)
    np.add.at(C, (z_true[ok], z_est[ok]), 1)
    return C


def match_states(z_true: ArrayLike, z_est: ArrayLike, num_states: int) -> np.ndarray:
    """Permutation ``perm`` maximising agreement: estimated state ``j`` corresponds to true state ``perm[j]``.

    Solves the assignment problem on the confusion matrix (Hungarian algorithm, ``scipy``).  Works for
    different numbers of true and estimated states (unmatched estimated states map to ``-1``).
    """
    z_true, z_est = np.asarray(z_true), np.asarray(z_est)
    num_true = max(int(z_true.max()) + 1, num_states)
    C = confusion_matrix(z_true, z_est, num_true, num_states)
    rows, cols = linear_sum_assignment(-C)
    perm = np.full(num_states, -1)
    perm[cols] = rows
    return perm


def permuted_state_accuracy(z_true: ArrayLike, z_est: ArrayLike, num_states: int) -> float:
    """Fraction of steps whose estimated state matches the true one after the best relabelling."""
    z_true, z_est = np.asarray(z_true).ravel(), np.asarray(z_est).ravel()
    perm = match_states(z_true, z_est, num_states)
    ok = (z_true >= 0) & (z_est >= 0)
    return float(np.mean(perm[z_est[ok]] == z_true[ok]))


def bits_per(log_lik: float, baseline_log_lik: float, count: float) -> float:
    """Information gain over a baseline in bits per unit (spike, trial): (LL − LL0) / (count · ln 2)."""
    if count <= 0:
        raise ValueError(f"count must be positive; got {count}.")
    return float((log_lik - baseline_log_lik) / (count * np.log(2.0)))
