"""One parameter specification: per leaf a constraint, a prior (or none) and a trainable flag.

A model's :meth:`~pssm.SSM.param_spec` returns a pytree shaped like its params whose leaves are
:class:`ParamSpec`.  Every algorithm reads the same specification:

* EM, SVI, NUTS/HMCGibbs, PMMH and score ascent leave a leaf with ``trainable=False`` exactly where it is
  (:func:`freeze` marks leaves by dotted path, e.g. ``"initial.probs"`` or ``"emissions"``);
* the NumPyro bridge samples a trainable leaf from its ``prior`` when it has one (``ImproperUniform`` on its
  ``constraint`` otherwise) and adds ``model.log_prior(params)`` minus those leaf priors as a factor, so the bridge's
  log density is exactly ``log p(y | params) + model.log_prior(params)`` — the objective EM increases;
* :func:`leaf_names` is the one naming of leaves (sites, ArviZ variables, error messages).

The default ``log_prior`` of a model or component is :func:`spec_log_prior`, the sum of its leaf priors;
hierarchical priors (e.g. a learned shared mean) override ``log_prior`` and add their coupling terms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float
from numpyro.distributions import constraints

PyTree = Any

__all__ = [
    "ParamSpec",
    "is_spec",
    "spec",
    "freeze",
    "trainable_mask",
    "leaf_names",
    "path_name",
    "spec_log_prior",
    "select_trainable",
    "check_params_against_spec",
]


@dataclasses.dataclass(frozen=True, eq=False)
class ParamSpec:
    """Specification of one params leaf (a pytree *leaf*: not registered with JAX).

    ``constraint``: the support (a ``numpyro.distributions.constraints`` object); ``prior``: a NumPyro
    distribution over the whole leaf (batch and event dims folded into its event shape), or ``None`` (no prior
    of its own: flat, or handled by the owner's ``log_prior``); ``trainable``: whether fits may move it;
    ``shape``: the leaf's shape when the model knows it (checked at the boundary; ``None``: unchecked).
    """

    constraint: Any = dataclasses.field(default_factory=lambda: constraints.real)
    prior: dist.Distribution | None = None
    trainable: bool = True
    shape: tuple[int, ...] | None = None


def spec(
    constraint: Any = constraints.real,
    prior: dist.Distribution | None = None,
    trainable: bool = True,
    shape: tuple[int, ...] | None = None,
):
    """Shorthand for :class:`ParamSpec`."""
    return ParamSpec(constraint, prior, trainable, shape)


def is_spec(x: Any) -> bool:
    return isinstance(x, ParamSpec)


def path_name(path) -> str:
    """Dotted name of a pytree path: ``emissions.means``, ``layers.0.weight``."""
    parts = []
    for k in path:
        for attr in ("name", "key", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


def leaf_names(tree: PyTree, is_leaf=None) -> list[str]:
    """Dotted names of the leaves of ``tree`` in pytree order (``None`` subtrees have no leaves)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return [path_name(p) for p, _ in flat]


def _matches(name: str, prefixes: Iterable[str]) -> bool:
    return any(p == "*" or name == p or name.startswith(p + ".") for p in prefixes)


def freeze(param_spec: PyTree, *paths: str) -> PyTree:
    """A copy of ``param_spec`` with every leaf at or below one of the dotted ``paths`` made non-trainable
    (``"*"`` freezes every leaf).

    Raises ``KeyError`` naming the available leaves when a path matches nothing.
    """
    names = leaf_names(param_spec, is_leaf=is_spec)
    for p in paths:
        if not any(_matches(n, [p]) for n in names):
            raise KeyError(f"freeze: no parameter is called {p!r} or lies below it; the leaves are {names}.")
    flat, treedef = jax.tree_util.tree_flatten_with_path(param_spec, is_leaf=is_spec)
    out = [dataclasses.replace(s, trainable=False) if _matches(path_name(k), paths) else s for k, s in flat]
    return jax.tree_util.tree_unflatten(treedef, out)


def trainable_mask(param_spec: PyTree) -> PyTree:
    """Pytree of Python bools shaped like the params: ``True`` where a leaf is trainable."""
    return jax.tree.map(lambda s: bool(s.trainable), param_spec, is_leaf=is_spec)


def select_trainable(param_spec: PyTree, new: PyTree, old: PyTree) -> PyTree:
    """``new`` where a leaf is trainable, ``old`` (unchanged, bit for bit) where it is frozen."""
    mask = trainable_mask(param_spec)
    return jax.tree.map(lambda m, a, b: a if m else b, mask, new, old)


def spec_log_prior(param_spec: PyTree, params: PyTree) -> Float[Array, ""]:
    """:math:`\\sum_\\text{leaves} \\log p(\\theta_\\text{leaf})` over the leaves whose spec has a prior."""
    specs = jax.tree.leaves(param_spec, is_leaf=is_spec)
    values = jax.tree_util.tree_structure(param_spec, is_leaf=is_spec).flatten_up_to(params)
    total = jnp.zeros(())
    for s, v in zip(specs, values, strict=True):
        if s.prior is not None:
            total = total + jnp.sum(s.prior.log_prob(v))
    return total


def check_params_against_spec(param_spec: PyTree, params: PyTree, name: str = "params") -> None:
    """Structure check: ``params`` must have the same pytree structure as the specification.

    Raises ``ValueError`` naming the leaves the model expects and those given.
    """
    want = jax.tree_util.tree_structure(param_spec, is_leaf=is_spec)
    try:
        want.flatten_up_to(params)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{name} does not match the model's parameters: expected leaves {leaf_names(param_spec, is_spec)}, "
            f"got {leaf_names(params)} ({type(params).__name__}). Build params with model.initialize(...) or the "
            f"model's params class."
        ) from err


def _in_support(constraint, a):
    """Host-side support check (NumPy; no JAX compilation) for the common constraints, else NumPyro's own."""
    import numpy as np

    name = type(constraint).__name__.lstrip("_")
    if name == "Real":
        return np.isfinite(a)
    if name in ("Positive", "GreaterThan") and getattr(constraint, "lower_bound", 0.0) == 0.0:
        return np.isfinite(a) & (a > 0)
    if name == "Simplex":
        ok = np.all((a >= 0) & np.isfinite(a), axis=-1) & (
            np.abs(a.sum(-1) - 1.0) < 1e-5
            if a.dtype == np.float32 or a.dtype == np.float16
            else np.abs(a.sum(-1) - 1.0) < 1e-9
        )
        return ok
    if name == "PositiveDefinite":
        sym = np.allclose(a, np.swapaxes(a, -1, -2), rtol=1e-5, atol=1e-8)
        if not sym or not np.all(np.isfinite(a)):
            return np.zeros(a.shape[:-2], bool)
        try:
            np.linalg.cholesky(a)
            return np.ones(a.shape[:-2], bool)
        except np.linalg.LinAlgError:
            return np.linalg.eigvalsh(a).min(-1) > 0
    return np.asarray(constraint(jnp.asarray(a)))


def check_params_in_support(param_spec: PyTree, params: PyTree, name: str = "params") -> None:
    """Every concrete leaf lies in its constraint's support (NaN is never in it); ``ValueError`` names the leaf,
    the constraint and the worst value.  Tracers are skipped (their values are unknown at trace time)."""
    import numpy as np

    specs = jax.tree_util.tree_flatten_with_path(param_spec, is_leaf=is_spec)[0]
    values = jax.tree_util.tree_structure(param_spec, is_leaf=is_spec).flatten_up_to(params)
    for (path, s), v in zip(specs, values, strict=True):
        want = s.shape if s.shape is not None else (None if s.prior is None else tuple(s.prior.shape()))
        if want is not None and tuple(jnp.shape(v)) != tuple(want):
            raise ValueError(
                f"{name}.{path_name(path)} has shape {tuple(jnp.shape(v))}; this model expects {tuple(want)}. "
                "Build params for this model (model.initialize(...)) or change the model's dimensions."
            )
        if isinstance(v, jax.core.Tracer):
            continue
        arr = np.asarray(v)
        ok = _in_support(s.constraint, arr)
        if not bool(np.all(ok)):
            lo, hi = (float(f(arr)) if (~np.isnan(arr)).any() else float("nan") for f in (np.nanmin, np.nanmax))
            raise ValueError(
                f"{name}.{path_name(path)} is outside its support ({type(s.constraint).__name__.lstrip('_')}): "
                f"{int(np.size(ok) - np.sum(ok))} of {np.size(ok)} entries fail (min {lo:.4g}, max {hi:.4g}, NaN "
                f"{int(np.isnan(arr).sum())}). Give values inside the support (finite "
                "values, rows of probabilities summing to one, positive rates/variances, positive-definite "
                "covariances)."
            )
