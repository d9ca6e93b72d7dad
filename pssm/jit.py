"""Trace once: public array functions compiled at module level, so repeated calls with the same shapes, dtypes and
static settings reuse the compiled program (milliseconds) instead of tracing again.

:func:`trace_once` wraps ``fun`` in one module-level ``jax.jit`` (``static_argnames`` for settings) after turning
the named array arguments given as NumPy arrays, lists or scalars into ``jax`` arrays, so plain NumPy input works
and a list is an array, never a pytree of scalars.  Inside a user's ``jit``/``vmap``/``grad`` the inner ``jit`` is
inlined as usual.  ``wrapper.jitted`` is the compiled callable (for ``_cache_size()`` checks).

:class:`SameFunction` keys a user's callable by what it computes (code, globals, defaults, closure contents), so
a lambda written inline in a loop is one static argument for ``jit``, not a new one on every call.

The boundary checks run in the wrapper, outside the ``jit``, on the values as given (so they never cause a
retrace): every named array argument must be numeric (:func:`pssm.validation.check_array`; ``None`` is refused
for a parameter without a default), every ``key_argnames`` argument must be one PRNG key
(:func:`pssm.validation.check_key`), and ``check(arguments)`` (a dict name -> value) may add value checks.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from pssm.validation import check_array, check_key

__all__ = ["RUNTIME_CHECK", "SameFunction", "runtime_check_message", "runtime_checks", "trace_once"]


class SameFunction:
    """A function keyed by what it computes: equal when the code object, globals, defaults and closure contents
    (by identity) are the same, so a lambda written inline in a loop compiles once (``jit`` caches on it).  The
    ``jit`` cache holds the key's objects alive, so an ``id`` in it is never reused by another object."""

    __slots__ = ("fn", "_key")

    def __init__(self, fn: Callable[..., Any]):
        fn = fn.fn if isinstance(fn, SameFunction) else fn
        self.fn = fn
        code = getattr(fn, "__code__", None)
        if code is None:  # a builtin, functools.partial or callable object: identity
            self._key = (id(fn),)
        else:
            cells = tuple(id(c.cell_contents) for c in (fn.__closure__ or ()))
            defaults = tuple(id(d) for d in (fn.__defaults__ or ()))
            self._key = (code, id(fn.__globals__), defaults, cells)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SameFunction) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)


RUNTIME_CHECK = "[pssm check] "
"""Prefix of the message of every ``equinox.error_if`` check in the package (found again in the runtime error)."""


def runtime_check_message(error: BaseException) -> str | None:
    """The message of a package check (``equinox.error_if`` with :data:`RUNTIME_CHECK`) that failed inside a
    compiled program, or ``None`` for another error: ``jax.jit`` and ``equinox.filter_jit`` wrap it in long
    tracebacks."""
    text = str(error)
    i = text.find(RUNTIME_CHECK)
    return None if i < 0 else text[i + len(RUNTIME_CHECK) :].split("\n", 1)[0].strip()


def _not_a_package_check(record: logging.LogRecord) -> bool:
    """Logging filter: drop JAX's "pure_callback failed" record of a package check (it is re-raised clearly)."""
    exc = record.exc_info[1] if record.exc_info else None
    return exc is None or RUNTIME_CHECK not in str(exc)


@contextlib.contextmanager
def runtime_checks(name: str) -> Iterator[None]:
    """Re-raise a failed package check from inside a compiled program as ``ValueError(f"{name}: ...")`` (and keep
    JAX from logging its callback traceback first)."""
    logger = logging.getLogger("jax._src.callback")
    logger.addFilter(_not_a_package_check)
    try:
        yield
    except RuntimeError as e:  # JaxRuntimeError (jax.jit) and EquinoxRuntimeError (equinox.filter_jit)
        msg = runtime_check_message(e)
        if msg is None:
            raise
        raise ValueError(f"{name}: {msg}") from None
    finally:
        logger.removeFilter(_not_a_package_check)


def _as_array(x: Any) -> Any:
    if x is None or isinstance(x, jax.Array):
        return x
    return jnp.asarray(x)


def _check_array_arg(x: Any, name: str, required: bool) -> None:
    """Numeric dtype (object/str refused, naming the argument); ``None`` only for an optional argument."""
    if x is None:
        if required:
            raise TypeError(f"{name} is None; pass a numeric array (NumPy or jax).")
        return
    check_array(x, name, finite=False)  # the value passed on is unchanged (dtype and weak typing as given)


def trace_once(
    static_argnames: Sequence[str] = (),
    array_argnames: Sequence[str] = (),
    *,
    key_argnames: Sequence[str] = (),
    check: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``jax.jit(fun, static_argnames=...)`` created once, with ``array_argnames`` checked and coerced
    and ``key_argnames`` checked first (outside the ``jit``); then ``check(arguments)`` if given."""

    def decorate(fun: Callable[..., Any]) -> Callable[..., Any]:
        jitted = jax.jit(fun, static_argnames=tuple(static_argnames))
        sig = inspect.signature(fun)
        arrays = tuple(a for a in sig.parameters if a in frozenset(array_argnames))
        keys = tuple(k for k in sig.parameters if k in frozenset(key_argnames))
        required = frozenset(a for a in arrays if sig.parameters[a].default is inspect.Parameter.empty)

        @functools.wraps(fun)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if arrays or keys or check is not None:
                bound = sig.bind(*args, **kwargs)
                for name in keys:
                    if name in bound.arguments:
                        check_key(bound.arguments[name], name)
                for name in arrays:
                    if name in bound.arguments:
                        _check_array_arg(bound.arguments[name], name, name in required)
                if check is not None:
                    check(bound.arguments)
                for name in arrays:
                    if name in bound.arguments:
                        bound.arguments[name] = _as_array(bound.arguments[name])
                args, kwargs = bound.args, bound.kwargs
            with runtime_checks(fun.__name__):
                return jitted(*args, **kwargs)

        wrapper.jitted = jitted  # type: ignore[attr-defined]
        return wrapper

    return decorate
