"""NWB reading (h5py only) on the bundled recording and on small synthetic files with known contents."""

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from pssm.data import bin_spikes, intervals_to_mask
from pssm.nwb import read_nwb

NWB = Path(__file__).resolve().parents[1] / "data" / "A2929-200711.nwb"


@pytest.fixture(scope="module")
def rec():
    return read_nwb(NWB)


def test_units_and_spikes(rec):
    assert rec.num_units == 15 and list(rec.spike_times) == list(range(15))
    assert rec.identifier == "A2929-200711"
    assert sum(len(t) for t in rec.spike_times.values()) == 98_794
    u = rec.units
    assert u["id"].tolist() == list(range(15))
    assert u["location"].tolist() == ["adn"] * 7 + ["ca1"] * 8
    assert u["electrode_group"].tolist() == ["group0_"] * 7 + ["group1_"] * 8  # object references resolved
    assert u["n_spikes"].tolist() == [len(rec.spike_times[i]) for i in range(15)]
    assert u["n_spikes"].iloc[0] == 8764 and u["n_spikes"].iloc[-1] == 98_794 - 97_206
    for t in rec.spike_times.values():
        assert np.all(np.diff(t) >= 0) and t.min() >= 0.0 and t.max() <= 1200.0


def test_spike_table_and_binning(rec):
    tab = rec.spike_table()
    assert list(tab.columns) == ["unit", "time"] and len(tab) == 98_794
    assert np.all(np.diff(tab["time"].to_numpy()) >= 0)
    np.testing.assert_array_equal(np.sort(tab.loc[tab.unit == 9, "time"].to_numpy()), rec.spike_times[9])
    a = bin_spikes(rec.spike_times, 0.1, 0.0, 1200.0)
    b = bin_spikes(tab, 0.1, 0.0, 1200.0)
    assert a.counts.shape == (12_000, 15) and a.counts.sum() == 98_794
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.counts.sum(0), rec.units["n_spikes"].to_numpy())


def test_epochs_and_intervals(rec):
    ep = rec.epochs
    assert ep["start"].tolist() == [0.0, 600.0] and ep["stop"].tolist() == [600.0, 1200.0]
    assert ep["tags"].tolist() == ["sleep", "wake"]
    rip = rec.interval("sleep_ripples")
    assert len(rip) == 594 and (rip["stop"] > rip["start"]).all()
    assert rip["start"].min() >= 0.0 and rip["stop"].max() <= 600.0  # all ripples during sleep
    assert set(rec.intervals) >= {"epochs", "sleep_ripples", "position_time_support"}
    with pytest.raises(KeyError, match=r"no interval table 'theta'.*available: \['epochs'"):
        rec.interval("theta")
    edges = np.linspace(0.0, 1200.0, 12_001)
    sleep = intervals_to_mask(edges, ep["start"].iloc[:1], ep["stop"].iloc[:1])
    assert sleep.sum() == 6000 and sleep[:6000].all()


def test_head_angle_timeseries(rec):
    ry = rec.timeseries("CompassDirection/ry")
    assert ry.name == "acquisition/CompassDirection/ry" and ry.unit == "radian"
    assert ry.data.shape == ry.timestamps.shape == (63_527,)
    assert np.isfinite(ry.data).all()
    # the file stores yaw wrapped to [0, 2*pi), not [-pi, pi)
    assert ry.data.min() >= 0.0 and ry.data.max() < 2 * np.pi and ry.data.max() > 6.2
    assert ry.timestamps[0] == pytest.approx(670.6407) and ry.timestamps[-1] == pytest.approx(1199.99495)
    assert 1.0 / np.median(np.diff(ry.timestamps)) == pytest.approx(120.0, rel=0.01)
    same = rec.timeseries("acquisition/CompassDirection/ry")
    np.testing.assert_array_equal(same.data, ry.data)
    with pytest.raises(KeyError, match="no time series 'nope'"):
        rec.timeseries("nope")
    fake = replace(rec, timeseries_names=rec.timeseries_names + ("processing/behavior/Position/x",))
    with pytest.raises(KeyError, match="an ambiguous time series 'Position/x'"):
        fake.timeseries("Position/x")


def _write_minimal_nwb(path, *, with_units=True, index=(2, 2, 5), starting_time=False):
    with h5py.File(path, "w") as f:
        f["identifier"] = "synthetic"
        if with_units:
            g = f.create_group("units")
            g.attrs["colnames"] = np.array(["location", "spike_times"], dtype=object)
            g["id"] = np.array([10, 11, 12])
            g["location"] = np.array([b"a", b"b", b"c"], dtype=object)
            g["spike_times"] = np.array([0.5, 0.1, 3.0, 1.0, 2.0])
            g["spike_times_index"] = np.array(index, dtype=np.uint32)
        iv = f.create_group("intervals/epochs")
        iv.attrs["colnames"] = np.array(["start_time", "stop_time", "tags"], dtype=object)
        iv["id"] = np.array([0])
        iv["start_time"] = np.array([0.0])
        iv["stop_time"] = np.array([4.0])
        iv["tags"] = np.array([b"run", b"dark"], dtype=object)
        iv["tags_index"] = np.array([2], dtype=np.uint8)
        ts = f.create_group("acquisition/lfp")
        ts["data"] = np.arange(4.0)
        ts["data"].attrs["conversion"] = 2.0
        ts["data"].attrs["unit"] = "volts"
        if starting_time:
            ts["starting_time"] = 10.0
            ts["starting_time"].attrs["rate"] = 4.0
        else:
            ts["timestamps"] = np.arange(4.0) * 0.5


def test_synthetic_file_ragged_decoding(tmp_path):
    p = tmp_path / "mini.nwb"
    _write_minimal_nwb(p)
    r = read_nwb(p)
    assert list(r.spike_times) == [10, 11, 12]
    np.testing.assert_array_equal(r.spike_times[10], [0.1, 0.5])  # sorted
    assert r.spike_times[11].size == 0  # an empty row in the ragged index
    np.testing.assert_array_equal(r.spike_times[12], [1.0, 2.0, 3.0])
    assert r.units["n_spikes"].tolist() == [2, 0, 3] and r.units["location"].tolist() == ["a", "b", "c"]
    assert r.epochs["tags"].tolist() == ["run, dark"]
    lfp = r.timeseries("lfp")
    np.testing.assert_array_equal(lfp.data, [0.0, 2.0, 4.0, 6.0])  # conversion applied
    np.testing.assert_array_equal(lfp.timestamps, [0.0, 0.5, 1.0, 1.5])
    assert lfp.unit == "volts"
    _write_minimal_nwb(tmp_path / "rate.nwb", starting_time=True)
    np.testing.assert_allclose(read_nwb(tmp_path / "rate.nwb").timeseries("lfp").timestamps, [10, 10.25, 10.5, 10.75])


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such NWB file"):
        read_nwb(tmp_path / "missing.nwb")
    bad = tmp_path / "text.nwb"
    bad.write_text("not hdf5")
    with pytest.raises(ValueError, match="is not an HDF5 file"):
        read_nwb(bad)
    _write_minimal_nwb(tmp_path / "nounits.nwb", with_units=False)
    with pytest.raises(ValueError, match="has no 'units' group"):
        read_nwb(tmp_path / "nounits.nwb")
    r = read_nwb(tmp_path / "nounits.nwb", require_units=False)
    assert r.num_units == 0 and len(r.epochs) == 1 and len(r.spike_table()) == 0
    _write_minimal_nwb(tmp_path / "badindex.nwb", index=(2, 1, 5))
    with pytest.raises(ValueError, match="malformed"):
        read_nwb(tmp_path / "badindex.nwb")
    _write_minimal_nwb(tmp_path / "short.nwb", index=(2, 2, 4))
    with pytest.raises(ValueError, match="malformed"):
        read_nwb(tmp_path / "short.nwb")
