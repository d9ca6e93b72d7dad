"""Data containers: padded batches of ragged sequences with missing-data masks, splits, and spike binning.

A :class:`Sequences` holds ``B`` sequences of lengths :math:`T_b` padded to :math:`T_{\\max}`:

* ``emissions`` ``(B, T_max, ...)``: observed values; padding **and missing rows are 0** (never NaN, so
  weighted sums such as M-step statistics stay finite);
* ``mask`` ``(B, T_max)`` bool: ``True`` where an observation enters the likelihood — ``False`` for padding
  (``t >= lengths[b]``) and for missing observations (a row of the input that is all NaN);
* ``lengths`` ``(B,)`` int: :math:`T_b \\ge 1`;
* ``inputs``: optional pytree with leaves ``(B, T_max, ...)`` (padding 0; inputs may not be missing);
* ``observed`` ``(B, T_max, ...)`` bool or ``None``: for data with partly missing steps (some NaN entries in a
  row), ``True`` at the observed entries (the missing ones are stored as 0); ``None`` when every entry of every
  masked-in step is observed.  It marks the *known values*: a step outside ``mask`` whose entries are
  ``observed`` adds no likelihood but still feeds lagged features (:func:`pssm.models.conditional_sequences`);
  a step whose lags hold an unknown value is not evaluated (:func:`pssm.protocol.lags_observed`).

Missing observations are *masked out of the likelihood*: inference sets
:math:`\\log p(y_t \\mid x_t) = 0` where ``mask`` is False, which is exact marginalisation of an unobserved
:math:`y_t`; at a partly missing step the term is :math:`\\log p(y_{t,o} \\mid x_t)` over the observed entries
``o`` (models whose emissions do not allow it drop the whole step: :attr:`pssm.SSM.missing_entries`, applied by
:func:`pssm.boundary.as_model_data`).  The latent dynamics still run through those steps.

Spike binning follows ``np.histogram``: bins are half-open :math:`[e_k, e_{k+1})` except the last, which also
holds its right edge.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Int

from pssm.protocol import PyTree
from pssm.validation import (
    check_array,
    check_binary,
    check_categorical,
    check_counts,
    check_positive_int,
    check_sequence,
    is_dataframe,
    is_tracer,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Sequences",
    "Unpadded",
    "BlockSplit",
    "BinnedSpikes",
    "block_bounds",
    "train_test_split_blocks",
    "split_by_group",
    "group_folds",
    "bin_spikes",
    "intervals_to_mask",
    "intervals_to_labels",
]

Kind = Literal["real", "counts", "binary", "categorical"]
_KINDS = ("real", "counts", "binary", "categorical")


class Unpadded(NamedTuple):
    """One sequence without its padding: ``emissions`` ``(T_b, ...)``, ``mask`` ``(T_b,)``, ``inputs`` leaves
    ``(T_b, ...)``."""

    emissions: Array
    mask: Bool[Array, " T"]
    inputs: PyTree = None


def _check_kind(kind: str, num_classes: int | None) -> None:
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}; got {kind!r}.")
    if kind == "categorical" and num_classes is None:
        raise ValueError("kind='categorical' needs num_classes (the number of labels, labels 0..num_classes-1).")


def _validate_values(y: np.ndarray, name: str, kind: str, num_classes: int | None) -> None:
    """Value checks by data kind; NaN is allowed (it marks a missing observation)."""
    if kind == "real":
        check_array(y, name, allow_nan=True)
    elif kind == "counts":
        check_counts(y, name, allow_nan=True)
    elif kind == "binary":
        check_binary(y, name, allow_nan=True)
    else:
        check_categorical(y, name, num_classes, allow_nan=True)


def _target_dtype(kind: str, dtype):
    if dtype is not None:
        return dtype
    return jnp.result_type(float) if kind == "real" else jnp.result_type(int)


class Sequences(eqx.Module):
    """A padded batch of (possibly ragged) sequences with a mask; a pytree (passes through ``jit``/``vmap``).

    Build it with :meth:`from_arrays` (validates the data) or :meth:`from_dataframe`.  Iterating yields
    :class:`Unpadded` sequences; ``len(seqs)`` is the number of sequences.
    """

    emissions: Array
    mask: Bool[Array, "B T"]
    lengths: Int[Array, " B"]
    inputs: PyTree = None
    kind: str = eqx.field(static=True, default="real")
    observed: Bool[Array, "B T ..."] | None = None
    """Entries whose values are known (``None``: those of the steps in ``mask``).  The likelihood counts
    ``observed & mask`` (:attr:`entries`); a known value outside ``mask`` still feeds lagged features
    (:func:`~pssm.models.conditional_sequences`: the first ``p`` steps condition the AR likelihood)."""

    def __check_init__(self):
        e, m, n = self.emissions, self.mask, self.lengths
        if not (hasattr(e, "shape") and hasattr(m, "shape") and hasattr(n, "shape")):
            return
        if self.observed is not None and tuple(self.observed.shape) != tuple(e.shape):
            raise ValueError(f"observed must have the shape of emissions {tuple(e.shape)}; got {self.observed.shape}.")
        if e.ndim < 2:
            raise ValueError(f"emissions must be (B, T_max, ...); got shape {tuple(e.shape)}.")
        if tuple(m.shape) != tuple(e.shape[:2]):
            raise ValueError(f"mask must have shape {tuple(e.shape[:2])} (B, T_max); got {tuple(m.shape)}.")
        if tuple(n.shape) != (e.shape[0],):
            raise ValueError(f"lengths must have shape ({e.shape[0]},); got {tuple(n.shape)}.")
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}; got {self.kind!r}.")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        emissions: Sequence[ArrayLike] | ArrayLike,
        inputs: PyTree = None,
        *,
        kind: Kind = "real",
        num_classes: int | None = None,
        lengths: ArrayLike | None = None,
        dtype: Any = None,
    ) -> Sequences:
        """Validate and pad sequences.

        ``emissions`` is either a list/tuple of arrays ``(T_b, ...)`` (one per sequence, lengths may differ,
        trailing shapes must agree) or one array ``(B, T, ...)`` of equal-length sequences (optionally with
        ``lengths`` marking padding already present).  Wrap a single sequence ``y`` as ``[y]``.

        ``inputs``: for a list, a list of pytrees (one per sequence, leaves ``(T_b, ...)``); for an array, a
        pytree with leaves ``(B, T, ...)``.  Inputs must be finite.

        ``kind`` selects the value checks: ``"real"`` (finite), ``"counts"`` (non-negative integers),
        ``"binary"`` (0/1), ``"categorical"`` (labels ``0..num_classes-1``).  **NaN marks a missing
        observation** in every kind: a row of NaN gets ``mask=False`` and is stored as 0; a row with some NaN
        entries keeps its other entries (``observed`` marks them; the missing ones are stored as 0).
        Infinite values are always an error.  Emissions are stored as float (``"real"``) or int (other
        kinds) unless ``dtype`` is given.
        """
        _check_kind(kind, num_classes)
        if any(is_tracer(leaf) for leaf in jax.tree.leaves((emissions, inputs, lengths))):
            raise TypeError(
                "Sequences.from_arrays validates values and runs outside jit; build the Sequences first and pass "
                "it into the jitted function (it is a pytree)."
            )
        if isinstance(emissions, list | tuple):
            if len(emissions) == 0:
                raise ValueError("emissions is an empty list; give at least one sequence.")
            if lengths is not None:
                raise ValueError("lengths is only used with a padded array; a list's sequences carry their lengths.")
            seqs = [check_sequence(y, f"emissions[{b}]", finite=False) for b, y in enumerate(emissions)]
            seqs = [np.asarray(y) for y in seqs]
            if inputs is not None:
                if not isinstance(inputs, list | tuple) or len(inputs) != len(seqs):
                    raise ValueError(
                        f"inputs must be a list with one pytree per sequence ({len(seqs)}) when emissions is a list."
                    )
                in_list = [jax.tree.map(np.asarray, u) for u in inputs]
            else:
                in_list = None
        else:
            arr = check_array(emissions, "emissions", finite=False)
            arr = np.asarray(arr)
            if arr.ndim < 2:
                raise ValueError(
                    f"emissions must be a batch (B, T, ...) or a list of sequences; got shape {arr.shape}. "
                    "Wrap a single sequence y as [y]."
                )
            if arr.shape[0] == 0:
                raise ValueError("emissions has no sequences (B = 0); give at least one sequence.")
            if arr.shape[1] == 0:
                raise ValueError(
                    f"emissions holds empty sequences (shape {arr.shape}, 0 time steps); every sequence "
                    "needs at least 1 time step."
                )
            if lengths is None:
                lens = np.full(arr.shape[0], arr.shape[1])
            else:
                lens = np.asarray(check_array(lengths, "lengths", shape=(arr.shape[0],), dtype_kind="iu"))
                if (lens < 1).any() or (lens > arr.shape[1]).any():
                    raise ValueError(
                        f"lengths must lie in 1..{arr.shape[1]} (the padded length); got min {lens.min()}, "
                        f"max {lens.max()}. Drop empty sequences first."
                    )
            seqs = [arr[b, : lens[b]] for b in range(arr.shape[0])]
            if inputs is not None:
                u_np = jax.tree.map(np.asarray, inputs)
                for path, leaf in jax.tree_util.tree_leaves_with_path(u_np):
                    if leaf.shape[:2] != arr.shape[:2]:
                        raise ValueError(
                            f"inputs{jax.tree_util.keystr(path)} must have leading shape {arr.shape[:2]} "
                            "(B, T); "
                            f"got {leaf.shape}."
                        )
                in_list = [jax.tree.map(lambda a, b=b: a[b, : lens[b]], u_np) for b in range(arr.shape[0])]
            else:
                in_list = None
        return cls._pad(seqs, in_list, kind=kind, num_classes=num_classes, dtype=dtype)

    @classmethod
    def _pad(cls, seqs, in_list, *, kind, num_classes, dtype) -> Sequences:
        trailing = seqs[0].shape[1:]
        for b, y in enumerate(seqs):
            if y.shape[1:] != trailing:
                raise ValueError(
                    f"emissions[{b}] has per-step shape {y.shape[1:]} but emissions[0] has {trailing}; all "
                    "sequences need the same shape after the time axis."
                )
        for b, y in enumerate(seqs):
            _validate_values(y, f"emissions[{b}]", kind, num_classes)
        lens = np.array([y.shape[0] for y in seqs])
        B, T = len(seqs), int(lens.max())
        out = np.zeros((B, T) + trailing, dtype=np.float64 if kind == "real" else np.int64)
        mask = np.zeros((B, T), bool)
        seen = np.zeros((B, T) + trailing, bool)
        for b, y in enumerate(seqs):
            nan = np.isnan(y) if y.dtype.kind in "fc" else np.zeros(y.shape, bool)
            out[b, : y.shape[0]] = np.where(nan, 0, y) if nan.any() else y
            seen[b, : y.shape[0]] = ~nan
            mask[b, : y.shape[0]] = ~nan.reshape(y.shape[0], -1).all(-1) if y.ndim > 1 else ~nan
        partial = bool((mask[(...,) + (None,) * len(trailing)] & ~seen).any())
        padded_inputs = None
        if in_list is not None:
            treedef = jax.tree.structure(in_list[0])
            for b, u in enumerate(in_list):
                if jax.tree.structure(u) != treedef:
                    raise ValueError(f"inputs[{b}] has a different pytree structure from inputs[0].")
                for path, leaf in jax.tree_util.tree_leaves_with_path(u):
                    nm = f"inputs[{b}]{jax.tree_util.keystr(path)}"
                    check_array(leaf, nm)
                    if leaf.ndim < 1 or leaf.shape[0] != lens[b]:
                        raise ValueError(
                            f"{nm} must have {lens[b]} time steps (the length of emissions[{b}]); got shape "
                            f"{leaf.shape}."
                        )

            def pad_leaf(*leaves):
                shp = leaves[0].shape[1:]
                buf = np.zeros((B, T) + shp, dtype=np.result_type(*leaves))
                for b, a in enumerate(leaves):
                    if a.shape[1:] != shp:
                        raise ValueError(f"inputs[{b}] leaf has per-step shape {a.shape[1:]}, inputs[0] has {shp}.")
                    buf[b, : a.shape[0]] = a
                return jnp.asarray(buf)

            padded_inputs = jax.tree.map(pad_leaf, *in_list)
        return cls(
            jnp.asarray(out.astype(np.dtype(_target_dtype(kind, dtype)))),  # converted on the host: no compile
            jnp.asarray(mask),
            jnp.asarray(lens, dtype=jnp.result_type(int)),
            padded_inputs,
            kind,
            jnp.asarray(seen) if partial else None,
        )

    @classmethod
    def from_dataframe(
        cls,
        df: pd.DataFrame,
        columns: str | Sequence[str],
        *,
        group: str | None = None,
        input_columns: Sequence[str] | None = None,
        kind: Kind = "real",
        num_classes: int | None = None,
        dtype: Any = None,
    ) -> tuple[Sequences, np.ndarray]:
        """One sequence per value of ``df[group]`` (sorted labels; rows keep their order within a group).

        ``columns`` name the emissions (a single name gives per-step scalars ``(T,)``, a list gives
        ``(T, D)``); ``input_columns`` become ``inputs`` ``(B, T_max, len(input_columns))``.  Returns the
        sequences and the group label of each sequence (for :func:`split_by_group`).
        """
        if not is_dataframe(df):
            raise TypeError(f"df must be a pandas DataFrame; got {type(df).__name__}.")
        cols = [columns] if isinstance(columns, str) else list(columns)
        wanted = cols + list(input_columns or []) + ([group] if group is not None else [])
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise ValueError(f"df has no column(s) {missing}; available: {list(df.columns)}.")
        if len(df) == 0:
            raise ValueError("df is empty; give at least one row.")
        if group is None:
            labels, parts = np.array([0]), [df]
        else:
            labels = np.unique(df[group].to_numpy())
            grouped = dict(tuple(df.groupby(group, sort=True)))
            parts = [grouped[g] for g in labels]
        pick = (lambda p: p[cols[0]].to_numpy()) if isinstance(columns, str) else (lambda p: p[cols].to_numpy())
        seqs = [pick(p) for p in parts]
        ins = None if not input_columns else [p[list(input_columns)].to_numpy(dtype=float) for p in parts]
        return cls.from_arrays(seqs, ins, kind=kind, num_classes=num_classes, dtype=dtype), labels

    # ------------------------------------------------------------------ properties / helpers
    @property
    def num_sequences(self) -> int:
        return int(self.emissions.shape[0])

    @property
    def max_length(self) -> int:
        return int(self.emissions.shape[1])

    @property
    def emission_shape(self) -> tuple[int, ...]:
        """Per-step shape of one observation (``()`` for scalar emissions)."""
        return tuple(self.emissions.shape[2:])

    @property
    def num_observed(self) -> int:
        """Number of observed (unmasked) time steps over all sequences."""
        return int(np.asarray(self.mask).sum())

    def __len__(self) -> int:
        return self.num_sequences

    def __iter__(self) -> Iterator[Unpadded]:
        for b in range(self.num_sequences):
            yield self.unpad(b)

    def unpad(self, i: int) -> Unpadded:
        """Sequence ``i`` without padding (missing rows stay 0 with ``mask`` False)."""
        B = self.num_sequences
        if not isinstance(i, int | np.integer) or not -B <= i < B:
            raise IndexError(f"i must be an integer in [-{B}, {B}); got {i!r}.")
        L = int(self.lengths[i])
        inputs = None if self.inputs is None else jax.tree.map(lambda a: a[i, :L], self.inputs)
        return Unpadded(self.emissions[i, :L], self.mask[i, :L], inputs)

    def to_list(self) -> list[np.ndarray]:
        """Unpadded emissions as numpy float arrays, missing rows NaN (the inverse of :meth:`from_arrays`)."""
        out = []
        for b, (y, m, _) in enumerate(self):
            a = np.array(y, dtype=np.float64)
            a[~np.asarray(m)] = np.nan
            if self.observed is not None:
                a[~np.asarray(self.observed[b, : a.shape[0]])] = np.nan
            out.append(a)
        return out

    @property
    def entries(self) -> Bool[Array, "B T ..."]:
        """``(B, T_max, *emission_shape)`` bool: the entries that enter the likelihood (``observed``, or ``mask``
        broadcast when every entry of a masked-in step is observed)."""
        if self.observed is not None:
            return self.observed & self.mask.reshape(self.mask.shape + (1,) * (self.emissions.ndim - 2))
        m = self.mask.reshape(self.mask.shape + (1,) * (self.emissions.ndim - 2))
        return jnp.broadcast_to(m, self.emissions.shape)

    def whole_steps(self) -> Sequences:
        """These sequences with every partly missing step dropped whole (``mask`` False, ``observed`` None): for
        models that cannot use single entries (:attr:`pssm.SSM.missing_entries` ``False``)."""
        if self.observed is None:
            return self
        full = self.observed.reshape(self.mask.shape + (-1,)).all(-1)
        y = jnp.where(self.observed, self.emissions, jnp.zeros((), self.emissions.dtype))
        y = jnp.where(full.reshape(full.shape + (1,) * (y.ndim - 2)), y, jnp.zeros((), y.dtype))
        return type(self)(y, self.mask & full, self.lengths, self.inputs, self.kind)

    def subset(self, indices: ArrayLike) -> Sequences:
        """The sequences at ``indices`` (int array or boolean mask), re-padded to their own maximum length."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (self.num_sequences,):
                raise ValueError(f"a boolean indices must have shape ({self.num_sequences},); got {idx.shape}.")
            idx = np.flatnonzero(idx)
        idx = np.atleast_1d(idx)
        if idx.size == 0:
            raise ValueError("indices selects no sequences; a Sequences needs at least one.")
        if idx.dtype.kind not in "iu" or (idx < -self.num_sequences).any() or (idx >= self.num_sequences).any():
            raise IndexError(f"indices must be integers in [0, {self.num_sequences}); got {indices!r}.")
        T = int(np.asarray(self.lengths)[idx].max())
        sel = lambda a: a[idx, :T]  # noqa: E731
        inputs = None if self.inputs is None else jax.tree.map(sel, self.inputs)
        observed = None if self.observed is None else sel(self.observed)
        return Sequences(sel(self.emissions), sel(self.mask), self.lengths[idx], inputs, self.kind, observed)


# ---------------------------------------------------------------------- held-out splits
def block_bounds(num_timesteps: int, *, num_blocks: int | None = None, block_length: int | None = None) -> np.ndarray:
    """``(K, 2)`` ``[start, stop)`` indices of contiguous blocks covering ``0..num_timesteps-1``.

    Give exactly one of ``num_blocks`` (near-equal blocks) or ``block_length`` (the last block may be
    shorter).
    """
    T = check_positive_int(num_timesteps, "num_timesteps")
    if (num_blocks is None) == (block_length is None):
        raise ValueError("give exactly one of num_blocks or block_length.")
    if num_blocks is not None:
        K = check_positive_int(num_blocks, "num_blocks")
        if K > T:
            raise ValueError(f"num_blocks={K} exceeds the number of time steps {T}; use fewer blocks.")
        edges = np.linspace(0, T, K + 1).round().astype(int)
    else:
        L = check_positive_int(block_length, "block_length")
        edges = np.append(np.arange(0, T, L), T)
    return np.stack([edges[:-1], edges[1:]], axis=1)


class BlockSplit(NamedTuple):
    """Result of :func:`train_test_split_blocks`; ``*_slices`` give each output sequence's time range."""

    train: Sequences
    test: Sequences
    block_bounds: np.ndarray
    test_blocks: np.ndarray
    train_slices: list[slice]
    test_slices: list[slice]


def _runs(flags: np.ndarray, bounds: np.ndarray, value: bool, merge: bool) -> list[slice]:
    out: list[slice] = []
    for k in np.flatnonzero(flags == value):
        s, e = bounds[k]
        if merge and out and out[-1].stop == s:
            out[-1] = slice(out[-1].start, int(e))
        else:
            out.append(slice(int(s), int(e)))
    return out


def train_test_split_blocks(
    emissions: ArrayLike,
    test_blocks: int | Sequence[int],
    *,
    num_blocks: int | None = None,
    block_length: int | None = None,
    inputs: PyTree = None,
    kind: Kind = "real",
    num_classes: int | None = None,
    merge_adjacent: bool = True,
) -> BlockSplit:
    """Cut one long recording ``(T, ...)`` into contiguous blocks; blocks in ``test_blocks`` are held out.

    Each maximal run of adjacent train (test) blocks becomes one sequence when ``merge_adjacent`` (else one
    sequence per block), so held-out likelihoods are evaluated on whole contiguous stretches.  ``inputs`` is a
    pytree with leaves ``(T, ...)``.  For K-fold cross-validation over blocks call it with ``test_blocks=k``
    for ``k in range(num_blocks)``.
    """
    y = np.asarray(check_sequence(emissions, "emissions", finite=False))
    bounds = block_bounds(y.shape[0], num_blocks=num_blocks, block_length=block_length)
    K = bounds.shape[0]
    tb = np.atleast_1d(np.asarray(test_blocks))
    if tb.dtype.kind not in "iu":
        raise TypeError(f"test_blocks must be block indices (integers); got {test_blocks!r}.")
    if (tb < -K).any() or (tb >= K).any():
        raise ValueError(f"test_blocks must lie in [-{K}, {K}) for {K} blocks; got {tb.tolist()}.")
    tb = np.unique(np.where(tb < 0, tb + K, tb))
    if tb.size == 0 or tb.size == K:
        raise ValueError(f"test_blocks must hold at least one and fewer than all {K} blocks; got {tb.tolist()}.")
    is_test = np.zeros(K, bool)
    is_test[tb] = True
    tr, te = _runs(is_test, bounds, False, merge_adjacent), _runs(is_test, bounds, True, merge_adjacent)
    if inputs is not None:
        inputs = jax.tree.map(np.asarray, inputs)
        for path, leaf in jax.tree_util.tree_leaves_with_path(inputs):
            if leaf.ndim < 1 or leaf.shape[0] != y.shape[0]:
                raise ValueError(
                    f"inputs{jax.tree_util.keystr(path)} must have {y.shape[0]} time steps; got {leaf.shape}."
                )

    def build(slices):
        ins = None if inputs is None else [jax.tree.map(lambda a, s=s: a[s], inputs) for s in slices]
        return Sequences.from_arrays([y[s] for s in slices], ins, kind=kind, num_classes=num_classes)

    return BlockSplit(build(tr), build(te), bounds, tb, tr, te)


def split_by_group(
    sequences: Sequences, groups: ArrayLike, test_groups: Hashable | Iterable[Hashable]
) -> tuple[Sequences, Sequences]:
    """Split by a per-sequence label (e.g. session or animal); sequences in ``test_groups`` are held out."""
    if not isinstance(sequences, Sequences):
        raise TypeError(f"sequences must be a pssm.data.Sequences; got {type(sequences).__name__}.")
    g = np.asarray(groups)
    if g.shape != (sequences.num_sequences,):
        raise ValueError(f"groups must hold one label per sequence, shape ({sequences.num_sequences},); got {g.shape}.")
    if isinstance(test_groups, str) or not isinstance(test_groups, Iterable):
        test_groups = [test_groups]
    tg = list(test_groups)
    unknown = [t for t in tg if not (g == t).any()]
    if unknown:
        raise ValueError(f"test_groups {unknown} do not occur in groups (labels: {np.unique(g).tolist()}).")
    is_test = np.isin(g, np.asarray(tg, dtype=g.dtype))
    if is_test.all():
        raise ValueError("test_groups hold every sequence; leave at least one group for training.")
    return sequences.subset(~is_test), sequences.subset(is_test)


def group_folds(groups: ArrayLike, num_folds: int) -> list[np.ndarray]:
    """Partition the sorted unique labels of ``groups`` into ``num_folds`` contiguous folds of test labels."""
    labels = np.unique(np.asarray(groups))
    k = check_positive_int(num_folds, "num_folds", minimum=2)
    if k > labels.size:
        raise ValueError(f"num_folds={k} exceeds the number of distinct groups ({labels.size}).")
    return [np.asarray(f) for f in np.array_split(labels, k)]


# ---------------------------------------------------------------------- spikes
class BinnedSpikes(NamedTuple):
    """``counts`` ``(T, N)`` int64, ``bin_edges`` ``(T+1,)`` seconds, ``units`` ``(N,)`` column labels."""

    counts: np.ndarray
    bin_edges: np.ndarray
    units: np.ndarray

    @property
    def bin_centers(self) -> np.ndarray:
        return 0.5 * (self.bin_edges[:-1] + self.bin_edges[1:])


def _spikes_to_codes(spikes, units) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalise spike input to (unit labels, unit code per spike, spike times)."""
    if is_dataframe(spikes):
        for c in ("unit", "time"):
            if c not in spikes.columns:
                raise ValueError(f"spikes DataFrame needs columns 'unit' and 'time'; missing {c!r}.")
        times = check_array(spikes["time"].to_numpy(), "spikes['time']", ndim=1, dtype_kind="iuf")
        lab = spikes["unit"].to_numpy()
        labels = np.unique(lab) if units is None else np.asarray(list(units))
        code_of = {u: k for k, u in enumerate(labels.tolist())}
        if len(code_of) != len(labels):
            raise ValueError("units has duplicate labels.")
        codes = np.array([code_of.get(u, -1) for u in lab.tolist()], dtype=np.int64)
        keep = codes >= 0
        return labels, codes[keep], np.asarray(times, float)[keep]
    if isinstance(spikes, Mapping):
        keys = list(spikes.keys()) if units is None else list(units)
        absent = [u for u in keys if u not in spikes]
        if absent:
            raise ValueError(f"units {absent} are not keys of spikes (keys: {list(spikes.keys())}).")
        arrays = [(u, spikes[u], f"spikes[{u!r}]") for u in keys]
    elif isinstance(spikes, list | tuple):
        idx = list(range(len(spikes))) if units is None else list(units)
        bad = [u for u in idx if not isinstance(u, int | np.integer) or not 0 <= u < len(spikes)]
        if bad:
            raise ValueError(f"units must index the spikes list (0..{len(spikes) - 1}); got {bad}.")
        arrays = [(u, spikes[u], f"spikes[{u}]") for u in idx]
        keys = idx
    else:
        raise TypeError(
            "spikes must be a dict {unit: times}, a list of arrays of times, or a pandas DataFrame with "
            f"'unit' and 'time' columns; got {type(spikes).__name__}."
        )
    if len(keys) == 0:
        raise ValueError("spikes holds no units; give at least one.")
    if len(set(map(repr, keys))) != len(keys):
        raise ValueError("units has duplicate labels.")
    codes, times = [], []
    for k, (_, t, nm) in enumerate(arrays):
        t = np.asarray(check_array(t, nm, ndim=1, dtype_kind="iuf"), float)
        codes.append(np.full(t.shape, k, np.int64))
        times.append(t)
    return _label_array(keys), np.concatenate(codes), np.concatenate(times)


def _label_array(keys: list) -> np.ndarray:
    """Unit labels as an int or str array when they are all ints or all strings, else an object array."""
    if all(isinstance(k, int | np.integer) and not isinstance(k, bool) for k in keys):
        return np.asarray(keys, dtype=np.int64)
    if all(isinstance(k, str) for k in keys):
        return np.asarray(keys, dtype=str)
    out = np.empty(len(keys), dtype=object)
    out[:] = keys
    return out


def bin_spikes(
    spikes: Mapping[Hashable, ArrayLike] | Sequence[ArrayLike] | pd.DataFrame,
    bin_size: float,
    t_start: float | None = None,
    t_stop: float | None = None,
    units: Sequence[Hashable] | None = None,
) -> BinnedSpikes:
    """Spike counts per bin and unit.

    ``spikes``: a dict ``{unit: times}`` (column order = dict order), a list of time arrays (units
    ``0..N-1``) or a DataFrame with ``unit`` and ``time`` columns (column order = sorted unit labels).
    ``units`` selects and orders the units (a DataFrame unit without spikes gives a zero column).

    Edges are ``t_start + bin_size * k``; only whole bins inside ``[t_start, t_stop]`` are kept (a partial
    last bin is dropped).  Defaults align to the ``bin_size`` grid and cover every spike:
    ``t_start = floor(min / bin_size) * bin_size``, ``t_stop = (floor(max / bin_size) + 1) * bin_size``.
    Spikes outside ``[edges[0], edges[-1]]`` are ignored.  Counts match ``np.histogram(times, bin_edges)``.
    """
    labels, codes, times = _spikes_to_codes(spikes, units)
    bs = float(check_array(bin_size, "bin_size", ndim=0, dtype_kind="iuf"))
    if bs <= 0:
        raise ValueError(f"bin_size must be > 0 (seconds per bin); got {bs}.")
    if t_start is None or t_stop is None:
        if times.size == 0:
            raise ValueError("spikes holds no spike times; give t_start and t_stop explicitly.")
    t0 = float(np.floor(times.min() / bs) * bs) if t_start is None else float(check_array(t_start, "t_start", ndim=0))
    t1 = (
        float((np.floor(times.max() / bs) + 1) * bs) if t_stop is None else float(check_array(t_stop, "t_stop", ndim=0))
    )
    if not t1 > t0:
        raise ValueError(f"t_stop must be greater than t_start; got t_start={t0}, t_stop={t1}.")
    n_bins = int(np.floor((t1 - t0) / bs + 1e-9))
    if n_bins < 1:
        raise ValueError(f"t_stop - t_start = {t1 - t0} is shorter than one bin (bin_size={bs}).")
    edges = t0 + bs * np.arange(n_bins + 1)
    b = np.searchsorted(edges, times, side="right") - 1
    b[times == edges[-1]] = n_bins - 1
    ok = (b >= 0) & (b < n_bins)
    N = len(labels)
    flat = np.bincount(codes[ok] * n_bins + b[ok], minlength=N * n_bins)
    counts = flat.reshape(N, n_bins).T.astype(np.int64)
    return BinnedSpikes(np.ascontiguousarray(counts), edges, labels)


def _check_intervals(bin_edges, starts, stops):
    e = np.asarray(check_array(bin_edges, "bin_edges", ndim=1, dtype_kind="iuf"), float)
    if e.size < 2 or (np.diff(e) <= 0).any():
        raise ValueError("bin_edges must be a strictly increasing 1-D array with at least 2 edges.")
    s = np.asarray(check_array(starts, "starts", ndim=1, dtype_kind="iuf"), float)
    t = np.asarray(check_array(stops, "stops", ndim=1, dtype_kind="iuf"), float)
    if s.shape != t.shape:
        raise ValueError(f"starts and stops must have the same length; got {s.shape[0]} and {t.shape[0]}.")
    if (t < s).any():
        raise ValueError(f"stops must be >= starts; interval {int(np.argmax(t < s))} ends before it starts.")
    return 0.5 * (e[:-1] + e[1:]), s, t


def intervals_to_mask(bin_edges: ArrayLike, starts: ArrayLike, stops: ArrayLike) -> np.ndarray:
    """``(T,)`` bool: True for bins whose centre lies in any interval ``[start, stop)``."""
    c, s, t = _check_intervals(bin_edges, starts, stops)
    delta = np.zeros(c.size + 1, np.int64)
    np.add.at(delta, np.searchsorted(c, s, side="left"), 1)
    np.add.at(delta, np.searchsorted(c, t, side="left"), -1)
    return np.cumsum(delta[:-1]) > 0


def intervals_to_labels(bin_edges: ArrayLike, starts: ArrayLike, stops: ArrayLike, fill: int = -1) -> np.ndarray:
    """``(T,)`` int: index of the interval ``[start, stop)`` holding each bin's centre (the last one if
    several overlap), ``fill`` where none does.  E.g. epoch labels for a binned recording."""
    c, s, t = _check_intervals(bin_edges, starts, stops)
    out = np.full(c.size, fill, np.int64)
    for k in range(s.size):
        out[(c >= s[k]) & (c < t[k])] = k
    return out
