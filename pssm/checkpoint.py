"""Checkpoints of long runs: a pytree of arrays written atomically to one ``.npz`` (no pickle).

:func:`save_checkpoint` flattens the state (PRNG keys stored as their key data), writes ``path.tmp`` and renames
it over ``path``, so a run killed at any moment leaves the previous checkpoint intact.  :func:`load_checkpoint`
fills the leaves back into a ``template`` with the same structure (a freshly initialised state of the same run;
NumPy leaves come back as NumPy arrays, the rest as JAX arrays) and refuses a file whose leaf count, shapes or
dtypes differ, naming the first mismatch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pssm.validation import is_typed_key

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint_metadata", "resume_metadata", "CHECKPOINT_VERSION"]

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: Any, **metadata: Any) -> Path:
    """Write ``state`` (any pytree of arrays) and JSON-able ``metadata`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree.leaves(state)
    arrays = {f"leaf{i}": np.asarray(jax.random.key_data(a) if is_typed_key(a) else a) for i, a in enumerate(leaves)}
    meta = {"version": CHECKPOINT_VERSION, "num_leaves": len(leaves), "metadata": metadata}
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _header(path: Path, f: Any) -> dict:
    meta = json.loads(bytes(f["__meta__"]).decode())
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has version {meta.get('version')}; this pssm reads version {CHECKPOINT_VERSION}. "
            "Start the run afresh (delete the file)."
        )
    return meta


def read_checkpoint_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` saved with the checkpoint at ``path`` (to build the template before loading)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as f:
        return _header(path, f)["metadata"]


def resume_metadata(path: str | os.PathLike, config: dict, what: str = "checkpoint") -> dict | None:
    """The metadata of the run saved at ``path`` (``None`` when there is no file), after checking that it was
    written with ``config`` (the key, start, data and settings of this call): a file of another run is refused."""
    path = Path(path)
    if not path.exists():
        return None
    meta = read_checkpoint_metadata(path)
    if meta.get("config") != config:
        raise ValueError(
            f"{what} {path} was written by another run ({meta.get('config')}); this call is {config}. Resume with "
            "the same key, starting point, data and settings, or give another checkpoint path (or delete it)."
        )
    return meta


def load_checkpoint(path: str | os.PathLike, template: Any) -> tuple[Any, dict]:
    """``(state, metadata)`` from ``path``, with ``template``'s structure (and key types)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as f:
        meta = _header(path, f)
        leaves, treedef = jax.tree.flatten(template)
        if meta["num_leaves"] != len(leaves):
            raise ValueError(
                f"checkpoint {path} holds {meta['num_leaves']} arrays but this run's state has {len(leaves)}; it was "
                "written by a different configuration. Delete it or pass the settings it was made with."
            )
        out = []
        for i, ref in enumerate(leaves):
            a = f[f"leaf{i}"]
            want = jax.random.key_data(ref) if is_typed_key(ref) else ref
            if a.shape != tuple(np.shape(want)) or a.dtype != np.asarray(want).dtype:
                raise ValueError(
                    f"checkpoint {path}: array {i} has shape {a.shape} and dtype {a.dtype}; this run expects "
                    f"{tuple(np.shape(want))} {np.asarray(want).dtype}. It was written by a different configuration."
                )
            value = np.array(a) if isinstance(ref, np.ndarray) else jnp.asarray(a)
            out.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(ref)) if is_typed_key(ref) else value)
    return jax.tree.unflatten(treedef, out), meta["metadata"]
