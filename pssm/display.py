"""Short printed forms of results and params: shapes and key figures, never whole arrays."""

from __future__ import annotations

from typing import Any

__all__ = ["short_repr", "describe"]


def describe(value: Any, depth: int = 0) -> str:
    """One short token for ``value``: ``f32[200,3]`` for an array, the number for a scalar, nested NamedTuples
    two levels deep, the type name for anything else (models, modules)."""
    if value is None or isinstance(value, bool | int | str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        if shape == ():
            try:
                return f"{float(value):.6g}"
            except Exception:  # a tracer: no value to show
                return f"{dtype}[]"
        return f"{_dtype_short(dtype)}[{','.join(str(n) for n in shape)}]"
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        if depth >= 2:
            return f"{type(value).__name__}(...)"
        inner = ", ".join(f"{k}={describe(v, depth + 1)}" for k, v in zip(value._fields, value, strict=True))
        return f"{type(value).__name__}({inner})"
    if isinstance(value, list | tuple):
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!s}: {describe(v, depth + 1)}" for k, v in list(value.items())[:8]) + "}"
    return type(value).__name__


def _dtype_short(dtype: Any) -> str:
    name = str(dtype)
    for long, short in (("float", "f"), ("uint", "u"), ("int", "i"), ("bool", "bool"), ("complex", "c")):
        if name.startswith(long):
            return short + name[len(long) :]
    return name


def short_repr(self: Any) -> str:
    """``__repr__`` for result and params NamedTuples: each field as :func:`describe` shows it."""
    return describe(self)
