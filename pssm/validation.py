"""Boundary checks for user inputs: failures raise ``ValueError``/``TypeError`` naming the argument and a fix.

These run *outside* ``jit``.  Concrete values (numpy arrays, jax arrays, lists, scalars) are checked in full;
a jax tracer gets only its shape and dtype checked (its values are unknown at trace time — use
``equinox.error_if`` for value checks under ``jit``).

Every ``check_*`` returns the checked value: numpy for list/tuple/numpy input, the original object for jax
arrays and tracers (no host transfer of device arrays beyond what the value checks need).

Dtype kinds follow numpy: ``"b"`` bool, ``"i"`` signed int, ``"u"`` unsigned int, ``"f"`` float,
``"c"`` complex.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

__all__ = [
    "split_missing",
    "fill_missing",
    "has_partial_steps",
    "as_float",
    "is_tracer",
    "check_array",
    "check_sequence",
    "check_counts",
    "check_binary",
    "check_categorical",
    "check_key",
    "is_typed_key",
    "check_num_timesteps",
    "check_positive_int",
    "check_real",
]

_NUMERIC_KINDS = "biufc"
_KIND_NAMES = {"b": "bool", "i": "signed integer", "u": "unsigned integer", "f": "floating", "c": "complex"}


def as_float(a: Any) -> jax.Array:
    """``a`` as an array of JAX's default float type (float32, or float64 under x64)."""
    return jax.numpy.asarray(a, jax.numpy.result_type(float))


def split_missing(emissions: Any, num_leading: int = 1, mask: Any = None, *, entries: bool = False):
    """NaN marks a missing observation: ``(clean, observed)`` where a step (the first ``num_leading`` axes index
    steps) with any NaN gets ``observed=False`` (AND-ed with ``mask``) and its values set to 0.  Works on NumPy
    and JAX arrays (and under ``jit``).  Integer data has no NaN.

    ``entries=True`` keeps partly observed steps: only a step whose entries are all NaN is unobserved (and set
    to 0); the NaN entries of the other steps stay, for :func:`pssm.distributions.observed_log_prob`."""
    xp = np if isinstance(emissions, np.ndarray) else jax.numpy
    lead = emissions.shape[:num_leading]
    if emissions.dtype.kind not in "fc":
        observed = xp.ones(lead, bool)
        clean = emissions
    else:
        nan = xp.isnan(emissions).reshape(lead + (-1,)) if emissions.ndim > num_leading else xp.isnan(emissions)
        if emissions.ndim <= num_leading:
            observed = ~nan
        else:
            observed = ~(nan.all(axis=-1) if entries else nan.any(axis=-1))
        if mask is not None:
            observed = observed & xp.asarray(mask, bool)
        gone = ~observed.reshape(lead + (1,) * (emissions.ndim - num_leading)) if entries else xp.isnan(emissions)
        return xp.where(gone, 0, emissions), observed
    if mask is not None:
        observed = observed & xp.asarray(mask, bool)
    return clean, observed


def has_partial_steps(emissions: Any, num_leading: int = 1) -> bool:
    """Whether some step of ``emissions`` has NaN in some but not all entries (``True`` for a tracer, whose
    values are unknown; ``False`` for integer data and scalar steps)."""
    if emissions.dtype.kind not in "fc" or emissions.ndim <= num_leading:
        return False
    if is_tracer(emissions):
        return True
    nan = np.isnan(np.asarray(emissions)).reshape(emissions.shape[:num_leading] + (-1,))
    return bool((nan.any(-1) & ~nan.all(-1)).any())


def fill_missing(y: Any) -> Any:
    """``y`` with NaN entries set to 0 (what proposals and functionals see at a missing entry)."""
    if not jax.numpy.issubdtype(jax.numpy.result_type(y), jax.numpy.floating):
        return y
    return jax.numpy.where(jax.numpy.isnan(y), jax.numpy.zeros((), jax.numpy.result_type(y)), y)


def is_tracer(x: Any) -> bool:
    """True for a jax tracer (inside ``jit``/``vmap``/``grad``), whose values cannot be inspected."""
    return isinstance(x, jax.core.Tracer)


def is_dataframe(x: Any) -> bool:
    """True for a pandas ``DataFrame`` (without importing pandas: if it is not loaded, ``x`` cannot be one)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(x, pd.DataFrame)


def _as_array(x: Any, name: str):
    """numpy/jax array view of ``x``; a clear error for ragged or non-array input."""
    if x is None:
        raise TypeError(f"{name} is None; pass an array.")
    if isinstance(x, jax.Array):  # includes tracers
        return x
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as err:  # ragged nested lists, odd objects
        raise ValueError(
            f"{name} could not be converted to an array ({err}); give a rectangular array, or a list of "
            "arrays to a function that accepts ragged sequences."
        ) from None


def _values(a) -> np.ndarray:
    """Concrete numpy values of a non-tracer array."""
    return np.asarray(a)


def _format_kinds(kinds: str) -> str:
    return " or ".join(_KIND_NAMES.get(k, k) for k in kinds)


def _check_dtype(a, name: str, dtype_kind: str | None) -> None:
    kind = "key" if is_typed_key(a) else np.dtype(a.dtype).kind
    if kind not in _NUMERIC_KINDS:
        raise TypeError(f"{name} must be numeric; got dtype {a.dtype}. Convert it with np.asarray(..., float).")
    if dtype_kind is not None and kind not in dtype_kind:
        raise TypeError(f"{name} must have a {_format_kinds(dtype_kind)} dtype; got {a.dtype}.")


def _check_shape(a, name: str, ndim, shape) -> None:
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name} must be {want}-dimensional; got shape {tuple(a.shape)} ({a.ndim}-D).")
    if shape is not None:
        shape = tuple(shape)
        if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape, strict=False)):
            parts = ["*" if s is None else str(s) for s in shape]
            want = "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
            raise ValueError(f"{name} must have shape {want}; got {tuple(a.shape)}.")


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | None] | None = None,
    dtype_kind: str | None = None,
    finite: bool = True,
    allow_nan: bool = False,
):
    """Check a numeric array's rank, shape (``None`` = any size on that axis), dtype kind and finiteness.

    With ``finite=True`` infinities always fail, and NaN fails unless ``allow_nan=True`` (missing values).
    """
    a = _as_array(x, name)
    _check_dtype(a, name, dtype_kind)
    _check_shape(a, name, ndim, shape)
    if finite and not is_tracer(a) and np.dtype(a.dtype).kind in "fc":
        v = _values(a)
        n_inf = int(np.isinf(v).sum())
        if n_inf:
            raise ValueError(f"{name} contains {n_inf} infinite value(s); remove or clip them.")
        if not allow_nan:
            n_nan = int(np.isnan(v).sum())
            if n_nan:
                raise ValueError(
                    f"{name} contains {n_nan} NaN value(s); remove them, or pass the data through "
                    "pssm.data.Sequences.from_arrays, which masks rows with NaN as missing observations."
                )
    return a


def check_sequence(x: Any, name: str, *, min_length: int = 1, **kwargs):
    """:func:`check_array` plus a leading time axis of length ``>= min_length`` (length 1 is valid)."""
    a = _as_array(x, name)
    if a.ndim == 0:
        raise ValueError(f"{name} must have a leading time axis; got a scalar. Wrap it: [{name}].")
    if a.shape[0] < min_length:
        if a.shape[0] == 0:
            raise ValueError(
                f"{name} is an empty sequence (0 time steps, shape {tuple(a.shape)}); every sequence needs "
                f"at least {min_length} time step(s). Drop empty sequences before passing them."
            )
        raise ValueError(f"{name} has {a.shape[0]} time step(s); at least {min_length} are needed.")
    return check_array(a, name, **kwargs)


def _integral_check(a, name: str, allow_nan: bool) -> np.ndarray | None:
    """Shared part of the discrete-data checks; returns the observed (non-NaN) values, or None for tracers."""
    a = check_array(a, name, finite=True, allow_nan=allow_nan)
    kind = np.dtype(a.dtype).kind
    if kind == "c":
        raise TypeError(f"{name} must be real-valued; got dtype {a.dtype}.")
    if is_tracer(a):
        return None
    v = _values(a)
    if kind == "f":
        v = v[~np.isnan(v)]
        bad = v != np.round(v)
        if bad.any():
            raise ValueError(
                f"{name} must be integer-valued; found {int(bad.sum())} non-integer value(s), e.g. "
                f"{v[bad][0].item()!r}. Round or bin the data first."
            )
    return v


def check_counts(x: Any, name: str, *, ndim: int | Sequence[int] | None = None, allow_nan: bool = False):
    """Count data: finite, non-negative, integer-valued (floats allowed when integral, e.g. ``3.0``)."""
    a = _as_array(x, name)
    _check_shape(a, name, ndim, None)
    v = _integral_check(a, name, allow_nan)
    if v is not None and v.size and (v < 0).any():
        raise ValueError(
            f"{name} must be non-negative counts; found {int((v < 0).sum())} negative value(s), min {v.min().item()!r}."
        )
    return a


def check_binary(x: Any, name: str, *, ndim: int | Sequence[int] | None = None, allow_nan: bool = False):
    """Binary data: every (non-NaN) value is 0 or 1 (bool, int or float)."""
    a = _as_array(x, name)
    _check_shape(a, name, ndim, None)
    v = _integral_check(a, name, allow_nan)
    if v is not None:
        bad = (v != 0) & (v != 1)
        if bad.any():
            raise ValueError(
                f"{name} must be binary (0/1); found {int(bad.sum())} other value(s), e.g. {v[bad][0].item()!r}. "
                "Recode the two outcomes as 0 and 1."
            )
    return a


def check_categorical(
    x: Any, name: str, num_classes: int, *, ndim: int | Sequence[int] | None = None, allow_nan: bool = False
):
    """Categorical data: integer labels in ``0 .. num_classes - 1``."""
    num_classes = check_positive_int(num_classes, "num_classes")
    a = _as_array(x, name)
    if np.dtype(a.dtype).kind == "b":
        raise TypeError(f"{name} must hold integer class labels; got dtype bool. Use check_binary for 0/1 data.")
    _check_shape(a, name, ndim, None)
    v = _integral_check(a, name, allow_nan)
    if v is not None:
        bad = (v < 0) | (v >= num_classes)
        if bad.any():
            raise ValueError(
                f"{name} must hold class labels in 0..{num_classes - 1} (num_classes={num_classes}); found "
                f"{int(bad.sum())} out-of-range value(s), e.g. {v[bad][0].item()!r}. Recode labels to start at 0."
            )
    return a


def is_typed_key(x: Any) -> bool:
    """Whether ``x`` is a typed PRNG key array (``jax.random.key``), not a legacy ``uint32`` key or other data."""
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def check_key(key: Any, name: str = "key"):
    """One jax PRNG key: typed (``jax.random.key``) or a raw ``uint32[2]`` (``jax.random.PRNGKey``)."""
    fix = "pass jax.random.key(seed) (split it with jax.random.split for several draws)"
    if key is None:
        raise TypeError(f"{name} is None; {fix}. pssm never uses a default key.")
    if isinstance(key, int | np.integer):
        raise TypeError(f"{name} must be a jax PRNG key, not the integer {key!r}; {fix}.")
    if not hasattr(key, "dtype") or not hasattr(key, "shape"):
        raise TypeError(f"{name} must be a jax PRNG key; got {type(key).__name__}. {fix}.")
    if is_typed_key(key):
        if key.shape != ():
            raise ValueError(
                f"{name} must be a single key; got a batch of keys with shape {tuple(key.shape)}. Index one "
                f"key ({name}[0]) or vmap over them."
            )
        return key
    if np.dtype(key.dtype) != np.uint32 or tuple(key.shape) != (2,):
        raise TypeError(
            f"{name} must be a jax PRNG key (typed, or raw uint32 of shape (2,)); got dtype {key.dtype} "
            f"and shape {tuple(key.shape)}. {fix}."
        )
    return key


def _as_int(n: Any, name: str) -> int:
    if isinstance(n, bool | np.bool_):
        raise TypeError(f"{name} must be an integer; got the bool {n!r}.")
    if is_tracer(n):
        raise TypeError(f"{name} must be a concrete Python integer (it sets an array shape); got a traced value.")
    if hasattr(n, "shape") and getattr(n, "shape", None) != ():
        raise TypeError(f"{name} must be a scalar integer; got an array of shape {tuple(n.shape)}.")
    try:
        return operator.index(n.item() if hasattr(n, "item") else n)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {n!r} ({type(n).__name__}). Use int(...).") from None


def check_positive_int(n: Any, name: str, *, minimum: int = 1) -> int:
    """A concrete integer ``>= minimum``; returns it as a Python ``int``."""
    v = _as_int(n, name)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {v}.")
    return v


def check_num_timesteps(n: Any, name: str = "num_timesteps") -> int:
    """A sequence length: a concrete integer ``>= 1`` (length-1 sequences are valid)."""
    return check_positive_int(n, name, minimum=1)


def check_real(
    x: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = False,
    high_inclusive: bool = False,
    fix: str = "",
):
    """Finite real scalar (or array, checked elementwise) in the interval given by ``low``/``high`` (open by
    default).  Tracers pass unchecked (their values are unknown).  Returns ``x`` unchanged."""
    if is_tracer(x):
        return x
    if x is None or isinstance(x, bool | np.bool_ | str | bytes):
        raise TypeError(f"{name} must be a real number; got {x!r} ({type(x).__name__}).{' ' + fix if fix else ''}")
    try:
        v = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a real number; got {x!r} ({type(x).__name__}).{' ' + fix if fix else ''}"
        ) from None
    if low is not None and high is not None:
        want = f"in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
    elif low is not None:
        want = f"{'>=' if low_inclusive else '>'} {low}"
    elif high is not None:
        want = f"{'<=' if high_inclusive else '<'} {high}"
    else:
        want = "(not NaN or ±inf)"
    bad = ~np.isfinite(v)
    if low is not None:
        bad |= (v < low) if low_inclusive else (v <= low)
    if high is not None:
        bad |= (v > high) if high_inclusive else (v >= high)
    if bad.any():
        shown = v.item() if v.size == 1 else f"{int(bad.sum())} value(s) outside, e.g. {v[bad].flat[0]}"
        raise ValueError(f"{name} must be a finite number {want}; got {shown}.{' ' + fix if fix else ''}")
    return x
