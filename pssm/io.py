"""Save and load a model with its params (and optional extra arrays) without pickle.

One ``.npz`` file: every array (params leaves, arrays inside the model, ``extras``) is an entry, and one entry
``__pssm__`` holds a JSON description — the format version, the pssm version, the model's class and settings, and
the params structure (NamedTuples by class, ``None`` leaves, dicts, lists) pointing at the array entries.  Loading
reads it with ``allow_pickle=False`` and rebuilds only classes from the ``pssm`` package, so a file can hold no
code.  The round trip is exact: same classes, same settings, arrays bit for bit with their dtypes.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["FORMAT_VERSION", "Saved", "save", "load"]

FORMAT_VERSION = 1
_META = "__pssm__"


class Saved(NamedTuple):
    """What :func:`load` returns."""

    model: Any
    params: Any
    extras: dict[str, np.ndarray]
    metadata: dict[str, Any]


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(name: str) -> type:
    module, _, qual = name.partition(":")
    # pssm's own classes, and equinox's layers (plain data modules: the networks inside deep models' params)
    if not (module == "pssm" or module.startswith(("pssm.", "equinox.nn."))):
        raise ValueError(
            f"file names class {name!r}; pssm.load rebuilds only classes of the pssm package and equinox.nn layers."
        )
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


class _Writer:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, value: Any, where: str) -> dict:
        key = f"a{len(self.arrays)}"
        arr = np.asarray(value)
        if arr.dtype.kind not in "biufc":
            raise TypeError(f"{where}: cannot save an array of dtype {arr.dtype} (numeric and bool only).")
        self.arrays[key] = arr
        return {"array": key}

    def encode(self, value: Any, where: str) -> Any:
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"scalar": value, "type": type(value).__name__}
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            if getattr(value.dtype, "name", "").startswith("key<"):
                raise TypeError(f"{where}: a PRNG key cannot be saved; save jax.random.key_data(key) instead.")
            return self.array(value, where)
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            fields = {f: self.encode(v, f"{where}.{f}") for f, v in zip(value._fields, value, strict=True)}
            return {"namedtuple": _qualname(value), "fields": fields}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {
                f.name: self.encode(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)
            }
            return {"dataclass": _qualname(value), "fields": fields}
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise TypeError(f"{where}: only dicts with string keys can be saved.")
            return {"dict": {k: self.encode(v, f"{where}[{k!r}]") for k, v in value.items()}}
        if isinstance(value, list | tuple):
            kind = "list" if isinstance(value, list) else "tuple"
            return {kind: [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        raise TypeError(
            f"{where}: cannot save a {type(value).__name__} (functions and other objects hold code); pssm.save "
            "stores numbers, strings, arrays, NamedTuples, dataclasses/equinox modules, lists and dicts."
        )


def _decode(node: Any, arrays: Any) -> Any:
    if node is None or isinstance(node, bool | str):
        return node
    if "scalar" in node:
        return {"int": int, "float": float}[node["type"]](node["scalar"])
    if "array" in node:
        return np.asarray(arrays[node["array"]])
    if "namedtuple" in node:
        cls = _resolve(node["namedtuple"])
        return cls(**{k: _decode(v, arrays) for k, v in node["fields"].items()})
    if "dataclass" in node:
        cls = _resolve(node["dataclass"])
        obj = object.__new__(cls)  # the saved fields are the state; __init__ may take other arguments
        for k, v in node["fields"].items():
            value = _decode(v, arrays)
            object.__setattr__(obj, k, _as_jax(value) if isinstance(value, np.ndarray) else value)
        return obj
    if "dict" in node:
        return {k: _decode(v, arrays) for k, v in node["dict"].items()}
    if "list" in node:
        return [_decode(v, arrays) for v in node["list"]]
    if "tuple" in node:
        return tuple(_decode(v, arrays) for v in node["tuple"])
    raise ValueError(f"unrecognised entry in the file's description: {sorted(node)}")


def _as_jax(value: np.ndarray) -> Any:
    import jax.numpy as jnp

    return jnp.asarray(value)


def save(
    path: str | os.PathLike,
    model: Any,
    params: Any,
    *,
    extras: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (its class and settings), ``params`` and optional ``extras`` (name -> array) to ``path``
    (``.npz`` is appended when missing).  ``metadata``: JSON-serialisable notes kept with the file."""
    from pssm import __version__

    w = _Writer()
    desc = {
        "format_version": FORMAT_VERSION,
        "pssm_version": __version__,
        "model": w.encode(model, "model"),
        "params": w.encode(params, "params"),
        "extras": {k: w.array(v, f"extras[{k!r}]") for k, v in (extras or {}).items()},
        "metadata": metadata or {},
    }
    try:
        text = json.dumps(desc)
    except TypeError as err:
        raise TypeError(f"metadata must be JSON-serialisable: {err}") from err
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{_META: np.array(text)}, **w.arrays)
    return path


def load(path: str | os.PathLike) -> Saved:
    """Read a file written by :func:`save`: ``Saved(model, params, extras, metadata)`` (params leaves as jax arrays)."""
    import jax
    import jax.numpy as jnp

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no pssm file at {path}")
    not_pssm = f"{path} is not a pssm.save file (not an .npz archive written by pssm.save)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{not_pssm}; NumPy could not open it as an .npz archive ({type(err).__name__}). Pass a file written "
            "by pssm.save."
        ) from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{not_pssm}: it holds a single .npy array. Pass a file written by pssm.save.")
    with archive as f:
        if _META not in f.files:
            raise ValueError(f"{path} is not a pssm.save file (no {_META!r} entry).")
        desc = json.loads(str(f[_META]))
        version = desc.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path} has pssm file format {version!r} (written by pssm {desc.get('pssm_version')}); this pssm "
                f"reads format {FORMAT_VERSION}. Load it with the pssm version that wrote it and save it again."
            )
        arrays = {k: f[k] for k in f.files if k != _META}
        model = _decode(desc["model"], arrays)
        params = jax.tree.map(jnp.asarray, _decode(desc["params"], arrays))
        extras = {k: np.asarray(arrays[v["array"]]) for k, v in desc["extras"].items()}
    return Saved(model, params, extras, dict(desc["metadata"], pssm_version=desc.get("pssm_version")))
