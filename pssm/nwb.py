"""Read spike trains, epochs, intervals and time series from an NWB 2 file with ``h5py`` alone (no ``pynwb``).

NWB stores tables (``units``, ``intervals/*``) as HDF5 groups of equal-length column datasets; a ragged column
``c`` (e.g. ``spike_times``, ``tags``) is one flat dataset plus ``c_index`` holding the cumulative *end* offset
of each row, so row ``i`` is ``c[index[i-1]:index[i]]`` (``index[-1] = 0``).  Time series (``acquisition/*``,
``processing/*/*``) hold ``data`` and either ``timestamps`` or ``starting_time`` (with a ``rate`` attribute).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import h5py
    import pandas as pd

__all__ = ["NWBRecording", "TimeSeries", "read_nwb"]


class TimeSeries(NamedTuple):
    """One NWB time series: ``data`` ``(T, ...)`` scaled by the file's ``conversion``, ``timestamps`` ``(T,)`` s."""

    name: str
    data: np.ndarray
    timestamps: np.ndarray
    unit: str
    description: str


def _text(x: Any) -> Any:
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    if isinstance(x, np.ndarray) and x.shape == () and x.dtype.kind in "OS":
        return _text(x[()])
    return x


def _column_values(f: h5py.File, ds: h5py.Dataset) -> np.ndarray:
    """A column's values: text decoded, object references resolved to the referenced object's name."""
    import h5py

    vals = ds[()]
    if ds.dtype.kind == "O" or ds.dtype.kind == "S":
        out = np.empty(len(vals), dtype=object)
        for i, v in enumerate(vals):
            if isinstance(v, h5py.Reference):
                out[i] = f[v].name.rsplit("/", 1)[-1] if v else None
            else:
                out[i] = _text(v)
        return out
    return np.asarray(vals)


def _ragged(values: np.ndarray, index: np.ndarray, name: str) -> list[np.ndarray]:
    ends = np.asarray(index, dtype=np.int64)
    if ends.size and ((np.diff(ends) < 0).any() or ends[0] < 0 or ends[-1] != len(values)):
        raise ValueError(
            f"NWB column {name!r}: its index is not a non-decreasing list of end offsets ending at {len(values)}; "
            "the file is malformed."
        )
    starts = np.concatenate([[0], ends[:-1]])
    return [values[s:e] for s, e in zip(starts, ends, strict=True)]


def _read_table(f: h5py.File, path: str, skip: tuple[str, ...] = ()) -> pd.DataFrame:
    """An NWB DynamicTable as a DataFrame (``id`` column first); ragged columns become per-row arrays."""
    import h5py
    import pandas as pd

    g = f[path]
    if not isinstance(g, h5py.Group):
        raise ValueError(f"{path!r} in the NWB file is not a table (group).")
    cols: dict[str, Any] = {}
    if "id" in g:
        cols["id"] = np.asarray(g["id"][()])
    colnames = [_text(c) for c in g.attrs.get("colnames", [])]
    for c in colnames:
        if c in skip or c not in g:
            continue
        vals = _column_values(f, g[c])
        if f"{c}_index" in g:
            rows = _ragged(vals, g[f"{c}_index"][()], f"{path}/{c}")
            col = np.empty(len(rows), dtype=object)
            col[:] = rows
            vals = col
        elif vals.ndim > 1:
            col = np.empty(len(vals), dtype=object)
            col[:] = list(vals)
            vals = col
        cols[c] = vals
    n = {len(v) for v in cols.values()}
    if len(n) > 1:
        raise ValueError(f"NWB table {path!r} has columns of different lengths {sorted(n)}; the file is malformed.")
    return pd.DataFrame(cols)


def _interval_table(f: h5py.File, path: str) -> pd.DataFrame:
    """A TimeIntervals table with columns ``id, start, stop, tags`` (tags joined by ``", "``) and any extras."""
    df = _read_table(f, path)
    missing = [c for c in ("start_time", "stop_time") if c not in df.columns]
    if missing:
        raise ValueError(f"NWB interval table {path!r} lacks column(s) {missing}.")
    df = df.rename(columns={"start_time": "start", "stop_time": "stop"})
    if "tags" in df.columns:
        df["tags"] = [", ".join(str(t) for t in row) if isinstance(row, np.ndarray) else row for row in df["tags"]]
    return df


def _find_timeseries(f: h5py.File) -> list[str]:
    """Paths (relative to the file root) of every group holding a ``data`` dataset under acquisition/processing."""
    import h5py

    found: list[str] = []
    for top in ("acquisition", "processing", "stimulus"):
        if top not in f:
            continue

        def visit(name, obj, top=top):
            if isinstance(obj, h5py.Group) and "data" in obj and isinstance(obj["data"], h5py.Dataset):
                found.append(f"{top}/{name}")

        f[top].visititems(visit)
    return sorted(found)


@dataclass(frozen=True)
class NWBRecording:
    """Contents of an NWB file read by :func:`read_nwb` (time series are read lazily by :meth:`timeseries`).

    ``spike_times``: unit id -> sorted spike times (s); ``units``: one row per unit (``id``, ``n_spikes`` and the
    file's scalar unit columns such as ``location``, ``group``, ``electrode_group``); ``epochs``: ``id, start,
    stop, tags``; ``intervals``: every table under ``intervals/`` by name (including ``epochs``).
    """

    path: str
    identifier: str
    session_description: str
    session_start_time: str
    spike_times: dict[int, np.ndarray]
    units: pd.DataFrame
    epochs: pd.DataFrame
    intervals: dict[str, pd.DataFrame]
    timeseries_names: tuple[str, ...] = field(default=())

    @property
    def num_units(self) -> int:
        return len(self.spike_times)

    def interval(self, name: str) -> pd.DataFrame:
        """The interval table ``name`` (e.g. ``'sleep_ripples'``), with a clear error listing what exists."""
        if name not in self.intervals:
            raise KeyError(f"no interval table {name!r} in {self.path}; available: {sorted(self.intervals)}.")
        return self.intervals[name]

    def spike_table(self) -> pd.DataFrame:
        """All spikes as a DataFrame with columns ``unit`` and ``time``, sorted by time (ties by unit)."""
        import pandas as pd

        units = [np.full(len(t), u) for u, t in self.spike_times.items()]
        times = list(self.spike_times.values())
        if not times:
            return pd.DataFrame({"unit": np.zeros(0, np.int64), "time": np.zeros(0)})
        df = pd.DataFrame({"unit": np.concatenate(units), "time": np.concatenate(times)})
        return df.sort_values(["time", "unit"], kind="stable", ignore_index=True)

    def timeseries(self, name: str) -> TimeSeries:
        """Read a time series by path, e.g. ``'CompassDirection/ry'`` or ``'acquisition/CompassDirection/ry'``.

        Data are multiplied by the NWB ``conversion`` attribute (and ``offset`` if present).  Timestamps come
        from ``timestamps`` or, failing that, ``starting_time + arange(T) / rate``.
        """
        import h5py

        candidates = (
            [name]
            if name in self.timeseries_names
            else [p for p in self.timeseries_names if p.endswith("/" + name.strip("/"))]
        )
        if len(candidates) != 1:
            what = "no" if not candidates else "an ambiguous"
            raise KeyError(f"{what} time series {name!r} in {self.path}; available: {list(self.timeseries_names)}.")
        path = candidates[0]
        with h5py.File(self.path, "r") as f:
            g = f[path]
            d = g["data"]
            data = np.asarray(d[()], dtype=float)
            conv = float(d.attrs.get("conversion", 1.0))
            offset = float(d.attrs.get("offset", 0.0))
            data = data * conv + offset
            unit = str(_text(d.attrs.get("unit", "")))
            desc = str(_text(g.attrs.get("description", "")))
            if "timestamps" in g:
                ts = np.asarray(g["timestamps"][()], dtype=float)
            elif "starting_time" in g:
                st = g["starting_time"]
                rate = float(st.attrs["rate"])
                ts = float(st[()]) + np.arange(data.shape[0]) / rate
            else:
                raise ValueError(f"time series {path!r} has neither timestamps nor starting_time.")
        if ts.shape[0] != data.shape[0]:
            raise ValueError(f"time series {path!r}: {data.shape[0]} samples but {ts.shape[0]} timestamps.")
        return TimeSeries(path, data, ts, unit, desc)


def read_nwb(path: str | os.PathLike, *, require_units: bool = True) -> NWBRecording:
    """Read units (spike times), epochs, interval tables and the list of time series from an NWB 2 file.

    Needs only ``h5py``.  Raises ``FileNotFoundError`` for a missing file, ``ValueError`` for a file that is not
    HDF5 or lacks a ``units`` table (unless ``require_units=False``).
    """
    import h5py
    import pandas as pd

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: no such NWB file {path!r}.")
    if not h5py.is_hdf5(path):
        raise ValueError(f"path: {path!r} is not an HDF5 file; NWB 2 files are HDF5 (.nwb).")
    with h5py.File(path, "r") as f:
        meta = {
            k: str(_text(f[k][()])) if k in f else ""
            for k in ("identifier", "session_description", "session_start_time")
        }
        spike_times: dict[int, np.ndarray] = {}
        if "units" in f:
            g = f["units"]
            if "spike_times" not in g or "spike_times_index" not in g:
                raise ValueError(f"{path}: the units table has no spike_times/spike_times_index columns.")
            units = _read_table(f, "units", skip=("spike_times",))
            rows = _ragged(np.asarray(g["spike_times"][()], float), g["spike_times_index"][()], "units/spike_times")
            ids = units["id"].to_numpy() if "id" in units else np.arange(len(rows))
            if len(ids) != len(rows):
                raise ValueError(f"{path}: units has {len(ids)} ids but {len(rows)} spike trains.")
            for u, t in zip(ids.tolist(), rows, strict=True):
                spike_times[u] = np.sort(t)
            units["n_spikes"] = [len(t) for t in rows]
            for c in units.columns:  # decoded text columns as plain strings
                if units[c].dtype == object and all(isinstance(v, str) for v in units[c]):
                    units[c] = units[c].astype(str)
        elif require_units:
            raise ValueError(
                f"{path} has no 'units' group (no sorted spikes); pass require_units=False to read its epochs, "
                "intervals and time series only."
            )
        else:
            units = pd.DataFrame({"id": np.zeros(0, np.int64), "n_spikes": np.zeros(0, np.int64)})
        intervals = {}
        if "intervals" in f:
            for name, obj in f["intervals"].items():
                if isinstance(obj, h5py.Group) and "start_time" in obj:
                    intervals[name] = _interval_table(f, f"intervals/{name}")
        epochs = intervals.get("epochs")
        if epochs is None:
            epochs = pd.DataFrame(
                {
                    "id": np.zeros(0, np.int64),
                    "start": np.zeros(0),
                    "stop": np.zeros(0),
                    "tags": np.zeros(0, dtype=object),
                }
            )
        ts_names = tuple(_find_timeseries(f))
    return NWBRecording(
        path=path,
        identifier=meta["identifier"],
        session_description=meta["session_description"],
        session_start_time=meta["session_start_time"],
        spike_times=spike_times,
        units=units,
        epochs=epochs,
        intervals=intervals,
        timeseries_names=ts_names,
    )
