"""The data boundary: user data -> one validated :class:`~pssm.data.Sequences` checked against the model.

Arrays, lists of arrays (ragged sequences) and :class:`Sequences` are accepted; a NumPy/JAX array with
``len(model.emission_shape) + 1`` dims is one sequence, with one more a padded batch.  The per-step shape must
equal ``model.emission_shape`` (a 1-D array is a sequence of scalars for a scalar-emission model, and of
one-dimensional observations for a model with ``emission_shape == (1,)``).  Values are checked for the model's
``data_kind``; **NaN marks a missing observation** (the row is masked), ``±inf`` is an error.

:func:`as_model_data` then replaces ``inputs`` by the model inputs of every step (lagged features computed once
per sequence by :func:`pssm.protocol.model_inputs`, so nothing leaks between sequences).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pssm.data import Sequences
from pssm.protocol import SSM, PyTree, lags_observed, model_inputs
from pssm.validation import split_missing

__all__ = [
    "ModelData",
    "as_sequences",
    "as_model_data",
    "check_inputs_taken",
    "is_single_sequence",
    "unbatch",
    "with_model_inputs",
    "traced_sequences",
]


class ModelData(Sequences):
    """A :class:`~pssm.data.Sequences` whose ``inputs`` already are the model inputs (made by
    :func:`as_model_data`; passing it again prepares nothing twice)."""


def _kind(model: SSM) -> tuple[str, int | None]:
    return getattr(model, "data_kind", "real"), getattr(model, "num_classes", None)


def check_inputs_taken(model: Any, inputs: PyTree, name: str = "inputs") -> None:
    """Refuse ``inputs`` for a model that declares it reads none (:attr:`pssm.SSM.takes_inputs` ``False``): they
    would be ignored, a silently different model from the one the user meant."""
    ssm = getattr(model, "model", model)  # a FeynmanKac wraps its model
    if inputs is None or not jax.tree.leaves(inputs) or getattr(ssm, "takes_inputs", True):
        return
    shapes = [tuple(np.shape(a)) for a in jax.tree.leaves(inputs)]
    what = type(ssm).__name__
    if hasattr(ssm, "emission_component"):
        what += f" with {type(ssm.emission_component).__name__}"
    raise ValueError(
        f"{name} were given (leaf shapes {shapes}) but {what} reads no inputs, so they would be "
        "ignored. Pass inputs=None, or use a model that takes them (e.g. HMMGLM(..., num_covariates=D), "
        "LinearGaussianSSM(..., input_dim=D))."
    )


def _shape_error(name, got, want, model):
    return ValueError(
        f"{name} has per-step shape {got} but {type(model).__name__} declares emission_shape {want}; "
        f"give one array (T, *{want}) per sequence, a padded batch (B, T, *{want}), or change the model's dimension."
    )


def as_sequences(
    model: SSM,
    data: Any,
    inputs: PyTree = None,
    *,
    lengths: Any = None,
    name: str = "data",
) -> Sequences:
    """Coerce ``data`` once at the boundary and check it against ``model.emission_shape`` and its data kind."""
    want = tuple(model.emission_shape)
    kind, num_classes = _kind(model)
    check_inputs_taken(model, inputs)
    if isinstance(data, Sequences):
        if not isinstance(data, ModelData):  # a ModelData's inputs are model inputs (e.g. a GLM's spike history)
            check_inputs_taken(model, data.inputs, f"{name}.inputs")
        if inputs is not None or lengths is not None:
            raise ValueError(f"{name} is a Sequences (it carries its inputs and lengths); do not pass them again.")
        if tuple(data.emission_shape) != want:
            raise _shape_error(name, tuple(data.emission_shape), want, model)
        return data
    if isinstance(data, list | tuple):
        if lengths is not None:
            raise ValueError(
                f"lengths= was given with {name} as a list of sequences, whose lengths are their own; pass "
                "lengths= only with a padded batch (B, T, ...), or slice each sequence."
            )
        seqs = [np.asarray(y) for y in data]
        if want == () or want == (1,):
            seqs = [y.reshape((-1,) + want) if y.ndim == 1 else y for y in seqs]
        for b, y in enumerate(seqs):
            if y.dtype.kind not in "biuf":
                raise TypeError(f"{name}[{b}] has dtype {y.dtype}; give numeric arrays (float or int).")
            if tuple(y.shape[1:]) != want:
                raise _shape_error(f"{name}[{b}]", tuple(y.shape[1:]), want, model)
        return Sequences.from_arrays(seqs, inputs, kind=kind, num_classes=num_classes)
    if type(data).__module__.startswith("pandas"):
        data = data.to_numpy()
    try:
        arr = np.asarray(data)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be an array, a list of arrays or a Sequences; got {type(data).__name__}."
        ) from err
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} has dtype {arr.dtype}; give a numeric array (float or int).")
    k = len(want)
    if want == (1,) and arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim == k + 1:
        if tuple(arr.shape[1:]) != want:
            raise _shape_error(name, tuple(arr.shape[1:]), want, model)
        if lengths is not None:
            raise ValueError(
                f"lengths= was given with {name} as one sequence of {arr.shape[0]} steps; lengths= applies to a "
                f"padded batch (B, T, *{want}). For a shorter sequence pass {name}[:n]."
            )
        single_inputs = None if inputs is None else [inputs]
        return Sequences.from_arrays([arr], single_inputs, kind=kind, num_classes=num_classes)
    if arr.ndim == k + 2:
        if tuple(arr.shape[2:]) != want:
            raise _shape_error(name, tuple(arr.shape[2:]), want, model)
        return Sequences.from_arrays(arr, inputs, kind=kind, num_classes=num_classes, lengths=lengths)
    raise ValueError(
        f"{name} has shape {arr.shape}; {type(model).__name__} (emission_shape {want}) takes one sequence "
        f"(T, *{want}) or a padded batch (B, T, *{want})."
    )


def is_single_sequence(model: SSM, data: Any) -> bool:
    """True when ``data`` is one array ``(T, *emission_shape)`` (not a batch, list or :class:`Sequences`): results
    for it drop the leading sequence axis."""
    if isinstance(data, Sequences | list | tuple) or data is None:
        return False
    want = tuple(model.emission_shape)
    ndim = len(np.shape(data))
    return ndim == len(want) + 1 or (want == (1,) and ndim == 1)


def unbatch(tree: PyTree) -> PyTree:
    """Drop the leading sequence axis (of length 1) of every array leaf."""
    return jax.tree.map(lambda a: a[0], tree)


def as_model_data(model: SSM, data: Any, inputs: PyTree = None, *, lengths: Any = None) -> Sequences:
    """:func:`as_sequences`, then ``inputs`` replaced by the model inputs of every step, and floats cast to one
    dtype (JAX's default float).  Call it once, at the public boundary."""
    if isinstance(data, ModelData):
        if inputs is not None or lengths is not None:
            raise ValueError("data is already prepared (ModelData carries its inputs and lengths); pass no inputs.")
        if tuple(data.emission_shape) != tuple(model.emission_shape):
            raise _shape_error("data", tuple(data.emission_shape), tuple(model.emission_shape), model)
        return data
    return with_model_inputs(model, as_sequences(model, data, inputs, lengths=lengths))


def with_model_inputs(model: SSM, seqs: Sequences) -> Sequences:
    """``seqs`` with floats cast to JAX's default float and ``inputs`` replaced by the model inputs (traceable)."""
    ftype = jnp.result_type(float)
    known = None
    if model.emission_lags:  # known (NaN-free) values feed the lags, also those masked out of the likelihood
        B, T = seqs.mask.shape
        known = seqs.mask if seqs.observed is None else seqs.observed.reshape(B, T, -1).all(-1)
    if not model.missing_entries:
        seqs = seqs.whole_steps()
    y = seqs.emissions.astype(ftype) if jnp.issubdtype(seqs.emissions.dtype, jnp.floating) else seqs.emissions
    u = jax.tree.map(lambda a: a.astype(ftype) if jnp.issubdtype(a.dtype, jnp.floating) else a, seqs.inputs)
    if not model.emission_lags:
        return ModelData(y, seqs.mask, seqs.lengths, u, seqs.kind, seqs.observed)
    feats = jax.vmap(lambda e, v: model_inputs(model, e, v))(y, u)
    ok = jax.vmap(lambda c: lags_observed(model, c))(known)  # a step whose lags are missing is not evaluated
    observed = None if seqs.observed is None else seqs.observed & ok.reshape(ok.shape + (1,) * (y.ndim - 2))
    return ModelData(y, seqs.mask & ok, seqs.lengths, feats, seqs.kind, observed)


def traced_sequences(model: SSM, emissions: Any, inputs: PyTree = None, lengths: Any = None) -> Sequences:
    """A :class:`Sequences` from arrays that may be jax tracers (inside ``jit``: shapes checked, values not;
    NaN rows are masked as missing)."""
    want = tuple(model.emission_shape)
    y = jnp.asarray(emissions)
    if want == (1,) and y.ndim == 1:
        y = y[:, None]
    if y.ndim == len(want) + 1:
        y = y[None]
        inputs = None if inputs is None else jax.tree.map(lambda a: jnp.asarray(a)[None], inputs)
    if y.ndim != len(want) + 2 or tuple(y.shape[2:]) != want:
        raise _shape_error("emissions", tuple(y.shape[1:]), want, model)
    B, T = y.shape[:2]
    n = jnp.full((B,), T) if lengths is None else jnp.asarray(lengths).reshape(B)
    valid = jnp.arange(T)[None] < n[:, None]
    kind = getattr(model, "data_kind", "real")
    if model.missing_entries and jnp.issubdtype(y.dtype, jnp.floating) and y.ndim > 2:
        seen = ~jnp.isnan(y)  # values unknown under jit: entries kept (a full row is the same as no entry missing)
        y, mask = split_missing(y, 2, valid, entries=True)
        return Sequences(jnp.where(seen, y, 0), mask, n, inputs, kind, seen & mask[..., *(None,) * (y.ndim - 2)])
    y, mask = split_missing(y, 2, valid)
    return Sequences(y, mask, n, inputs, kind)
