"""History bases of population GLMs and the spike-history convolution.

A basis is an array ``(L, K)``: row ``l`` holds the weights of lag ``l + 1`` in each of ``K`` filters.  The history
feature of neuron ``n'`` and filter ``k`` at step ``t`` is

.. math::  h_{t, n' K + k} = \\sum_{l=1}^{L} \\phi_{l,k}\\, y_{t-l, n'},

computed per step from the window of past emissions by :meth:`GLMEmissions.features` (so nothing leaks between
sequences); :func:`history_features` is the same convolution over a whole sequence.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

__all__ = ["EXPONENTIAL_BASIS", "exponential_basis", "raised_cosine_basis", "as_basis", "history_features"]

EXPONENTIAL_BASIS = (0.636, 0.234, 0.086, 0.032, 0.012)
"""The paper's fixed history filter: weights of lags 1..5 (an exponential decay, sums to 1)."""


def exponential_basis() -> np.ndarray:
    """The paper's exponential history filter as a ``(5, 1)`` basis (lags 1..5 along the rows)."""
    return np.asarray(EXPONENTIAL_BASIS, dtype=np.float32)[:, None]


def raised_cosine_basis(num_basis: int, max_lag: int, offset: float = 1.0) -> np.ndarray:
    """Log-stretched raised-cosine basis (Pillow et al. 2008), shape ``(max_lag, num_basis)``, rows = lags 1..L.

    :math:`\\phi_j(l) = \\tfrac12\\,(1 + \\cos(\\mathrm{clip}(\\alpha\\log(l + c) - \\mu_j, -\\pi, \\pi)))` with centres
    :math:`\\mu_j` evenly spaced on the stretched axis between lag 1 and ``max_lag``; columns are scaled to unit sum.
    """
    if num_basis < 1 or max_lag < 1:
        raise ValueError(f"num_basis and max_lag must be >= 1; got {num_basis}, {max_lag}.")
    if offset <= 0:
        raise ValueError(f"offset must be > 0; got {offset}.")
    stretched = np.log(np.arange(1, max_lag + 1, dtype=float) + offset)
    lo, hi = stretched[0], stretched[-1]
    if num_basis == 1:
        centres, width = np.array([lo]), max(hi - lo, 1e-6) * 2
    else:
        centres = np.linspace(lo, hi, num_basis)
        width = (hi - lo) / (num_basis - 1) * 2  # neighbouring bumps overlap by half
    arg = np.clip((stretched[:, None] - centres[None, :]) * np.pi / width, -np.pi, np.pi)
    B = 0.5 * (1.0 + np.cos(arg))
    return (B / np.maximum(B.sum(0, keepdims=True), 1e-12)).astype(np.float32)


def as_basis(basis: Any) -> np.ndarray | None:
    """``'exponential'`` -> :func:`exponential_basis`; ``None``/``'none'`` -> ``None``; an array ``(L,)``/``(L, K)``."""
    if basis is None or (isinstance(basis, str) and basis == "none"):
        return None
    if isinstance(basis, str):
        if basis == "exponential":
            return exponential_basis()
        raise ValueError(f"basis must be 'exponential', 'none', None or an array (L,) / (L, K); got '{basis}'.")
    b = np.asarray(basis, dtype=np.float32)
    if b.ndim == 1:
        b = b[:, None]
    if b.ndim != 2 or b.shape[0] < 1 or b.shape[1] < 1:
        raise ValueError(f"basis must have shape (L,) or (L, K) with L, K >= 1; got {np.shape(basis)}.")
    if not np.all(np.isfinite(b)):
        raise ValueError("basis contains NaN or inf.")
    return b


def history_features(spikes: ArrayLike, basis: ArrayLike) -> Float[Array, "T NK"]:
    """The causal convolution ``h[t, n*K + k] = sum_{l=1..L} basis[l-1, k] * y[t-l, n]`` of one ``(T, N)``
    sequence (zeros before ``t = 0``; ``h[t]`` never sees ``y[t]``)."""
    b = as_basis(basis)
    if b is None:
        raise ValueError("history_features needs a basis array.")
    y = jnp.asarray(spikes)
    if y.ndim != 2:
        raise ValueError(f"spikes must be one (T, N) sequence; got shape {y.shape}.")
    y = y.astype(jnp.result_type(float))
    T, N = y.shape
    phi = jnp.asarray(b, y.dtype)
    h = jnp.zeros((T, N, phi.shape[1]), y.dtype)
    for lag in range(1, min(phi.shape[0], T - 1) + 1):
        shifted = jnp.concatenate([jnp.zeros((lag, N), y.dtype), y[: T - lag]], axis=0)  # y[t - lag]
        h = h + shifted[:, :, None] * phi[lag - 1][None, None, :]
    return h.reshape(T, -1)
