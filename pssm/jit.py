"""Trace once: public array functions compiled at module level, so repeated calls with the same shapes, dtypes and
static settings reuse the compiled program (milliseconds) instead of tracing again.

:func:`trace_once` wraps ``fun`` in one module-level ``jax.jit`` (``static_argnames`` for settings) after turning
the named array arguments given as NumPy arrays, lists or scalars into ``jax`` arrays, so plain NumPy input works
and a list is an array, never a pytree of scalars.  Inside a user's ``jit``/``vmap``/``grad`` the inner ``jit`` is
inlined as usual.  ``wrapper.jitted`` is the compiled callable (for ``_cache_size()`` checks).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["trace_once"]


def _as_array(x: Any) -> Any:
    if x is None or isinstance(x, jax.Array):
        return x
    return jnp.asarray(x)


def trace_once(
    static_argnames: Sequence[str] = (), array_argnames: Sequence[str] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``jax.jit(fun, static_argnames=...)`` created once, with ``array_argnames`` coerced first."""

    def decorate(fun: Callable[..., Any]) -> Callable[..., Any]:
        jitted = jax.jit(fun, static_argnames=tuple(static_argnames))
        sig = inspect.signature(fun)
        arrays = frozenset(array_argnames)

        @functools.wraps(fun)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if arrays:
                bound = sig.bind(*args, **kwargs)
                for name in arrays & bound.arguments.keys():
                    bound.arguments[name] = _as_array(bound.arguments[name])
                args, kwargs = bound.args, bound.kwargs
            return jitted(*args, **kwargs)

        wrapper.jitted = jitted  # type: ignore[attr-defined]
        return wrapper

    return decorate
