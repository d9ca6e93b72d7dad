"""Ready-made sequence data sets: Bach chorales as 88-key piano rolls (for deep Markov models).

The chorales come from the corpus bundled with ``music21`` (offline; BSD-licensed software, public-domain
scores).  :func:`build_bach_chorales` turns them into a cached ``.npz`` (``data/bach_chorales.npz`` in the
repository, rebuilt with ``python data/build_bach_chorales.py``); :func:`load_bach_chorales` reads one split back
as a :class:`pssm.data.Sequences`.  ``music21`` is needed only to build, not to load.

Piano roll (:func:`piano_roll`): one row per quarter-note step, column ``k`` = MIDI pitch ``21 + k``
(A0..C8), value 1 when that pitch sounds during the step.  All parts (voices and any instrumental parts) are
merged; chords contribute every pitch.  A note sounding over ``[a, b)`` (in quarter notes) counts in **every step
it overlaps**, ``[k, k+1)`` with ``k`` from ``floor(a)`` to ``ceil(b) - 1``, so notes shorter than a quarter or
starting off the beat still mark the step(s) they touch; grace notes (no duration) are skipped.  The step grid
is aligned to the barlines (a pickup that is not a whole number of quarters shifts it), repeats are not
expanded, and the roll runs from the first to the last step in which any note sounds (silent steps inside,
e.g. rests between phrases, stay as all-zero rows).

This is not the JSB (Boulanger-Lewandowski 2012) pickle: the chorales, the encoding and the split differ.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from pssm.data import Sequences

__all__ = [
    "NUM_KEYS",
    "MIN_PITCH",
    "SPLITS",
    "SPLIT_SEED",
    "DEFAULT_BACH_PATH",
    "chorale_ids",
    "parse_chorale",
    "piano_roll",
    "chorale_roll",
    "split_ids",
    "build_bach_chorales",
    "load_bach_chorales",
    "bach_chorales_ids",
]

NUM_KEYS = 88
"""Piano keys: column ``k`` is MIDI pitch ``MIN_PITCH + k``."""
MIN_PITCH = 21
"""MIDI pitch of column 0 (A0)."""
SPLITS = ("train", "valid", "test")
SPLIT_SEED = 0
"""Seed of ``numpy.random.default_rng`` that permutes the sorted identifiers before splitting."""
FORMAT_VERSION = 1
DEFAULT_BACH_PATH = Path(__file__).resolve().parents[1] / "data" / "bach_chorales.npz"
"""``data/bach_chorales.npz`` in the repository checkout."""

Split = Literal["train", "valid", "test"]


def _music21() -> Any:
    try:
        import music21
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Building the Bach chorales needs music21 (its bundled corpus): pip install music21 "
            "(or the dev extra, pip install -e '.[dev]'). Loading the cached .npz does not."
        ) from e
    return music21


def chorale_ids() -> list[str]:
    """Corpus paths (``"bach/bwv269"``, ...) of the chorales of ``music21.corpus.chorales.Iterator()``.

    Riemenschneider order, duplicates removed: the iterator's 371 numbers map to 350 distinct corpus files
    (21 numbers map to a file already listed), and each file is kept once so that splits stay disjoint.  Cheap (no
    parsing).
    """
    music21 = _music21()
    files = music21.corpus.chorales.Iterator(returnType="filename")
    return list(dict.fromkeys(str(f) for f in files))


def parse_chorale(chorale_id: str, *, force_source: bool = False) -> Any:
    """Parse one chorale (a corpus path from :func:`chorale_ids`) into a ``music21.stream.Score``.

    ``force_source=True`` reads the corpus file itself (MusicXML, or Humdrum for three chorales), bypassing
    music21's pickle cache.
    """
    music21 = _music21()
    return music21.corpus.parse(chorale_id, forceSource=force_source)


def _grid_origin(score: Any) -> Fraction:
    """Offset (quarter notes, <= 0) of step 0, so that steps start on the beats of the first full bar."""
    from music21 import stream

    parts = list(score.getElementsByClass(stream.Part)) or [score]
    measures = list(parts[0].getElementsByClass(stream.Measure))
    if len(measures) < 2:
        return Fraction(0)
    frac = Fraction(measures[1].offset) % 1
    return frac - math.ceil(frac)


def piano_roll(score: Any) -> np.ndarray:
    """88-key piano roll ``(T, 88)`` uint8 of a ``music21`` score at quarter-note resolution (rules: module doc).

    Raises ValueError for a pitch outside A0..C8 or a score without sounding notes.
    """
    from music21 import chord, harmony, note

    origin = _grid_origin(score)
    spans: list[tuple[int, int, list[int]]] = []
    for n in score.flatten().notes:
        if isinstance(n, harmony.Harmony) or not isinstance(n, note.Note | chord.Chord):
            continue  # chord symbols, unpitched percussion
        length = Fraction(n.duration.quarterLength)
        if n.duration.isGrace or length <= 0:
            continue
        start = Fraction(n.offset) - origin
        first, stop = math.floor(start), math.ceil(start + length)
        keys = [p.midi - MIN_PITCH for p in n.pitches]
        if any(not 0 <= k < NUM_KEYS for k in keys):
            raise ValueError(f"pitch outside the 88 keys (MIDI {MIN_PITCH}..{MIN_PITCH + NUM_KEYS - 1}): {n!r}.")
        spans.append((first, stop, keys))
    if not spans:
        raise ValueError("score has no sounding notes.")
    begin = min(first for first, _, _ in spans)  # drop leading silent steps (e.g. a pickup written as a rest)
    roll = np.zeros((max(stop for _, stop, _ in spans) - begin, NUM_KEYS), dtype=np.uint8)
    for first, stop, keys in spans:
        roll[first - begin : stop - begin, keys] = 1
    return roll


def chorale_roll(chorale_id: str, *, force_source: bool = False) -> np.ndarray:
    """:func:`piano_roll` of :func:`parse_chorale` ``(chorale_id)``."""
    return piano_roll(parse_chorale(chorale_id, force_source=force_source))


def _split_counts(n: int) -> tuple[int, int, int]:
    if n == 382:  # the JSB counts
        return 229, 76, 77
    n_train, n_valid = round(0.6 * n), round(0.2 * n)
    return n_train, n_valid, n - n_train - n_valid


def split_ids(ids: Sequence[str], seed: int = SPLIT_SEED) -> dict[str, list[str]]:
    """The fixed split: sort ``ids`` (as strings), permute with ``numpy.random.default_rng(seed)``, cut
    60/20/20 (``round(0.6 n)``, ``round(0.2 n)``, the rest; 229/76/77 when ``n == 382``).  Each split is
    returned sorted."""
    ordered = sorted(set(ids))
    if len(ordered) != len(ids):
        raise ValueError("ids must be distinct.")
    perm = np.random.default_rng(seed).permutation(len(ordered))
    shuffled = [ordered[i] for i in perm]
    n_train, n_valid, _ = _split_counts(len(ordered))
    cuts = {"train": (0, n_train), "valid": (n_train, n_train + n_valid), "test": (n_train + n_valid, len(ordered))}
    return {name: sorted(shuffled[a:b]) for name, (a, b) in cuts.items()}


def build_bach_chorales(
    path: str | os.PathLike[str] = DEFAULT_BACH_PATH,
    *,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Parse the chorales with music21 and save their piano rolls and split to ``path`` (``.npz``).

    ``ids``: corpus paths to use instead of all of :func:`chorale_ids`; ``limit``: keep only the first ``limit``
    (both for quick partial builds; the split is then made over that subset).  Keys written, for each split:
    ``{split}_rolls`` uint8 ``(sum of lengths, 88)`` (the split's chorales concatenated in ``{split}_ids``
    order), ``{split}_lengths`` int32, ``{split}_ids`` str; and ``resolution`` ("quarter"), ``min_pitch`` (21),
    ``seed``, ``music21_version``, ``format_version`` (1).  Returns a summary (counts, lengths, seconds).
    """
    music21 = _music21()
    t0 = time.perf_counter()
    ids = list(chorale_ids() if ids is None else ids)
    if limit is not None:
        ids = ids[:limit]
    if not ids:
        raise ValueError("no chorales to build (ids is empty or limit is 0).")
    rolls = {cid: chorale_roll(cid) for cid in ids}
    splits = split_ids(ids)
    arrays: dict[str, np.ndarray] = {}
    for name, members in splits.items():
        parts = [rolls[cid] for cid in members]
        arrays[f"{name}_rolls"] = np.concatenate(parts) if parts else np.zeros((0, NUM_KEYS), np.uint8)
        arrays[f"{name}_lengths"] = np.array([len(r) for r in parts], dtype=np.int32)
        arrays[f"{name}_ids"] = np.array(members, dtype=np.str_)
    arrays.update(
        resolution=np.array("quarter"),
        min_pitch=np.array(MIN_PITCH, dtype=np.int32),
        seed=np.array(SPLIT_SEED, dtype=np.int32),
        music21_version=np.array(str(music21.__version__)),
        format_version=np.array(FORMAT_VERSION, dtype=np.int32),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npz" to the name
        np.savez_compressed(f, **arrays)
    lengths = np.array([len(r) for r in rolls.values()])
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "chorales": len(ids),
        "splits": {name: len(members) for name, members in splits.items()},
        "lengths": {"min": int(lengths.min()), "max": int(lengths.max()), "mean": round(float(lengths.mean()), 2)},
        "steps": int(lengths.sum()),
        "music21_version": str(music21.__version__),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _read(split: str, path: str | os.PathLike[str] | None) -> dict[str, np.ndarray]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}.")
    path = Path(DEFAULT_BACH_PATH if path is None else path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Bach chorales cache not found at {path}; build it with `python data/build_bach_chorales.py` "
            "(needs music21) or pssm.datasets.build_bach_chorales(path)."
        )
    with np.load(path, allow_pickle=False) as z:
        version = int(z["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"{path} has format_version {version}; expected {FORMAT_VERSION}. Rebuild it.")
        return {key: z[f"{split}_{key}"] for key in ("rolls", "lengths", "ids")}


def load_bach_chorales(split: Split, *, path: str | os.PathLike[str] | None = None, dtype: Any = None) -> Sequences:
    """One split of the cached chorales as binary :class:`~pssm.data.Sequences` ``(B, T_max, 88)``.

    ``path`` defaults to ``data/bach_chorales.npz`` in the repository; ``dtype`` of the emissions defaults to
    float32.  The order is that of :func:`bach_chorales_ids` ``(split)``.
    """
    import jax.numpy as jnp

    from pssm.data import Sequences

    z = _read(split, path)
    if len(z["lengths"]) == 0:
        raise ValueError(f"split {split!r} of this cache is empty.")
    rolls = np.split(z["rolls"], np.cumsum(z["lengths"])[:-1])
    return Sequences.from_arrays(rolls, kind="binary", dtype=jnp.float32 if dtype is None else dtype)


def bach_chorales_ids(split: Split, *, path: str | os.PathLike[str] | None = None) -> list[str]:
    """Corpus paths (``"bach/bwv269"``, ...) of one split's chorales, in the order :func:`load_bach_chorales`
    returns them."""
    return [str(s) for s in _read(split, path)["ids"]]
