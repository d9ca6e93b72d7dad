"""The loop of every long sampler and optimiser: jitted chunks of ``lax.scan``, a progress bar, checkpoints.

:func:`run_chunked` iterates ``carry, out = step(key_i, carry, *args)`` for ``i < num_iters`` with the keys
``split(key, ·)`` fixed up front, so a run's result depends only on ``(key, carry, args, num_iters)``, never on how
it was cut.  With ``checkpoint=path`` the carry and the sizes of the output blocks are written atomically
(:mod:`pssm.checkpoint`) every ``checkpoint_every`` chunks and at the end, each block of outputs once to
``path.out{k}``; a later call with the same arguments resumes from the files, so a run killed at any moment (even
SIGKILL) and started again ends with exactly the result of an uninterrupted run.  The file records a fingerprint
of the key, the settings and every array of ``carry`` and ``args``; a file from another run is refused, not
silently continued.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from pssm.checkpoint import load_checkpoint, resume_metadata, save_checkpoint
from pssm.jit import SameFunction
from pssm.validation import is_typed_key

__all__ = ["run_chunked", "run_fingerprint"]


def _chunk(step, args, carry, keys, active):
    def body(c, xs):
        k, on = xs
        c_new, out = step(k, c, *args)
        c_new = jax.tree.map(lambda a, b: jnp.where(on, a, b), c_new, c)
        return c_new, out

    return jax.lax.scan(body, carry, (keys, active))


_run_chunk = eqx.filter_jit(_chunk)


def run_fingerprint(*trees: Any) -> str:
    """A hex digest of the arrays (shape, dtype, bytes; PRNG keys by their key data) and the plain scalars and
    strings in ``trees``; other leaves (functions, models' objects) count only by their type name.

    The leaves' digests are combined in sorted order: some pytrees (NumPyro distributions) flatten their fields
    in an order that depends on the process's string hashing, and a resumed run is another process."""
    digests = []
    for leaf in jax.tree.leaves(trees):
        h = hashlib.sha256()
        if is_typed_key(leaf):
            leaf = jax.random.key_data(leaf)
        if isinstance(leaf, jax.Array | np.ndarray | np.generic):
            a = np.asarray(leaf)
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        elif isinstance(leaf, bool | int | float | str | complex | type(None)):
            h.update(repr(leaf).encode())
        else:
            h.update(type(leaf).__qualname__.encode())
        digests.append(h.hexdigest())
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def run_chunked(
    step: Callable[..., tuple[Any, Any]],
    carry: Any,
    key: PRNGKeyArray,
    num_iters: int,
    *,
    args: tuple = (),
    chunk_size: int = 100,
    exact_chunk: bool = False,
    progress: bool = False,
    desc: str = "",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> tuple[Any, Any]:
    """Iterate ``carry, out = step(key, carry, *args)`` ``num_iters`` times in jitted chunks of ``lax.scan``.

    With ``progress`` a tqdm bar advances per chunk.  Outputs are stacked along a leading axis (on the host, numpy).
    The last chunk is padded with iterations that leave the carry unchanged, so one compilation serves all.  A
    chunk has ``min(chunk_size, num_iters)`` iterations, or exactly ``chunk_size`` with ``exact_chunk`` (so runs of
    different lengths, e.g. warm-up and sampling, share one compilation); the keys are the same either way
    (``split(key, n)`` is a prefix of ``split(key, m > n)``).

    ``checkpoint``: a file path; the run is saved there every ``checkpoint_every`` chunks and at the end, and
    resumed from it when it exists (same key, carry, args and settings, else ``ValueError``).

    Trace once: the chunk is one module-level ``equinox.filter_jit`` of ``(step, args, carry)``.  ``args`` is a
    pytree whose arrays are traced and whose other leaves (models' settings, ints, strings, functions) are static;
    ``step`` is compared by code and closure (:class:`pssm.jit.SameFunction`).  Repeated calls with the same
    shapes and settings therefore reuse one compiled program; pass data through ``args``, not a closure.
    """
    from pssm.validation import check_positive_int

    num_iters = int(num_iters)
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    if num_iters == 0:
        return carry, None
    chunk = max(1, int(chunk_size)) if exact_chunk else max(1, min(int(chunk_size), num_iters))
    step = SameFunction(step)
    keys = jax.random.split(key, -(-num_iters // chunk) * chunk)
    outs, done, sizes, pending = [], 0, [], []
    if checkpoint is not None:
        config = {"desc": desc, "num_iters": num_iters, "chunk": chunk, "run": run_fingerprint(key, carry, args)}
        carry, outs, sizes = _resume(Path(checkpoint), config, step, args, carry, keys[:chunk], chunk)
        done = sum(sizes)
    from tqdm.auto import tqdm

    bar = tqdm(total=num_iters, initial=done, desc=desc, disable=not progress, leave=False)
    chunks = 0
    while done < num_iters:
        n = min(chunk, num_iters - done)
        active = jnp.arange(chunk) < n
        carry, out = _run_chunk(step, args, carry, keys[done : done + chunk], active)
        outs.append(jax.tree.map(lambda a, n=n: np.asarray(a[:n]), out))
        pending.append(n)
        done += n
        chunks += 1
        bar.update(n)
        if checkpoint is not None and (chunks % checkpoint_every == 0 or done == num_iters):
            # the outputs since the last save go to a segment file of their own (each output is written once),
            # then the state file that counts the segments: a kill between the two leaves the old state intact
            save_checkpoint(_segment(checkpoint, len(sizes)), _stack(outs[len(outs) - len(pending) :]))
            sizes.append(sum(pending))
            pending = []
            save_checkpoint(checkpoint, carry, sizes=sizes, config=config)
    bar.close()
    return carry, _stack(outs)


def _segment(path: str | os.PathLike, k: int) -> Path:
    """The file of the ``k``-th block of outputs of the run checkpointed at ``path``."""
    return Path(f"{os.fspath(path)}.out{k}")


def _stack(outs: list) -> Any:
    return outs[0] if len(outs) == 1 else jax.tree.map(lambda *a: np.concatenate(a, axis=0), *outs)


def _resume(path: Path, config: dict, step, args, carry, keys, chunk: int) -> tuple[Any, list, list[int]]:
    """``(carry, [output blocks so far], their sizes)`` from ``path``, or the fresh start when it does not exist."""
    meta = resume_metadata(path, config)
    if meta is None:
        return carry, [], []
    sizes = [int(n) for n in meta["sizes"]]
    shapes = eqx.filter_eval_shape(_chunk, step, args, carry, keys, jnp.ones(chunk, bool))[1]
    carry, _ = load_checkpoint(path, carry)
    outs = []
    for k, n in enumerate(sizes):
        template = jax.tree.map(lambda s, n=n: np.zeros((n, *s.shape[1:]), s.dtype), shapes)
        block, _ = load_checkpoint(_segment(path, k), template)
        outs.append(jax.tree.map(np.asarray, block))
    return carry, outs, sizes
