"""Data-driven initialisation shared by every HMM family: k-means labels -> soft responsibilities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray
from scipy.cluster.vq import kmeans2

from pssm.data import Sequences

__all__ = ["kmeans_labels", "soft_responsibilities", "initial_responsibilities"]


def kmeans_labels(key: PRNGKeyArray, rows: np.ndarray, num_clusters: int, num_runs: int = 1) -> np.ndarray:
    """Labels ``(N,)`` of the best of ``num_runs`` k-means++ runs (by distortion) on ``rows`` ``(N, D)``."""
    rows = np.asarray(rows, dtype=float).reshape(len(rows), -1)
    if num_clusters == 1 or rows.shape[0] < num_clusters:
        return np.zeros(rows.shape[0], int)
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    best, labels = np.inf, None
    for r in range(num_runs):
        centres, lab = kmeans2(rows, num_clusters, minit="++", seed=seed + r)
        d = float(((rows - centres[lab]) ** 2).sum())
        if d < best:
            best, labels = d, lab
    return labels


def soft_responsibilities(labels: np.ndarray, num_states: int, smoothing: float = 0.1) -> np.ndarray:
    """One-hot labels with ``smoothing`` spread evenly over the states (rows sum to one)."""
    r = np.full(labels.shape + (num_states,), smoothing / num_states)
    np.put_along_axis(r, labels[..., None], 1.0 - smoothing + smoothing / num_states, axis=-1)
    return r


def initial_responsibilities(
    key: PRNGKeyArray, data: Sequences, num_states: int, smoothing: float = 0.1
) -> Float[Array, "B T S"]:
    """k-means on the observed rows of ``data`` -> soft responsibilities ``(B, T, S)`` (0 at masked steps)."""
    y = np.asarray(data.emissions, dtype=float)
    m = np.asarray(data.mask)
    B, T = m.shape
    full = m if data.observed is None else m & np.asarray(data.observed).reshape(B, T, -1).all(-1)
    if full.sum() >= num_states:  # k-means on the fully observed steps (partly missing ones hold 0s)
        m = full
    labels = np.zeros((B, T), int)
    labels[m] = kmeans_labels(key, y[m].reshape(int(m.sum()), -1), num_states)
    r = soft_responsibilities(labels, num_states, smoothing) * m[..., None]
    dtype = data.emissions.dtype if jnp.issubdtype(data.emissions.dtype, jnp.floating) else jnp.result_type(float)
    return jnp.asarray(r, dtype)
