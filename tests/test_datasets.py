"""The cached Bach chorales (``data/bach_chorales.npz``): structure, loading, and agreement with a fresh build."""

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from pssm.datasets import (
    DEFAULT_BACH_PATH,
    SPLITS,
    bach_chorales_ids,
    build_bach_chorales,
    chorale_roll,
    load_bach_chorales,
    piano_roll,
    split_ids,
)

CACHE = Path(__file__).resolve().parents[1] / "data" / "bach_chorales.npz"
# 3/4 with a one-quarter pickup; 12/8 with a 1.5-quarter pickup (shifted grid) and instrumental parts; 4/4 SATB
# opening on a rest (trimmed) with rests between phrases (kept as silent rows).
REBUILD = ["bach/bwv269", "bach/bwv248.23-2", "bach/bwv339"]


@pytest.fixture(scope="module")
def cache():
    assert DEFAULT_BACH_PATH == CACHE
    with np.load(CACHE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _rolls_by_id(z):
    out = {}
    for s in SPLITS:
        ends = np.cumsum(z[f"{s}_lengths"])
        rolls = [z[f"{s}_rolls"][end - n : end] for n, end in zip(z[f"{s}_lengths"], ends, strict=True)]
        out.update(zip(z[f"{s}_ids"].tolist(), rolls, strict=True))
    return out


def test_cache_structure(cache):
    z = cache
    assert str(z["resolution"]) == "quarter" and int(z["min_pitch"]) == 21 and int(z["format_version"]) == 1
    assert int(z["seed"]) == 0 and str(z["music21_version"])
    ids = {s: z[f"{s}_ids"].tolist() for s in SPLITS}
    assert [len(ids[s]) for s in SPLITS] == [210, 70, 70]  # 350 distinct corpus files (of 371 numbers)
    every = [i for s in SPLITS for i in ids[s]]
    assert len(set(every)) == len(every) == 350 and all(i.startswith("bach/bwv") for i in every)
    assert split_ids(every) == {s: sorted(ids[s]) for s in SPLITS}  # the documented seed-0 split
    for s in SPLITS:
        rolls, lengths = z[f"{s}_rolls"], z[f"{s}_lengths"]
        assert rolls.dtype == np.uint8 and rolls.ndim == 2 and rolls.shape[1] == 88
        assert lengths.dtype == np.int32 and lengths.shape == (len(ids[s]),)
        assert (lengths > 0).all() and lengths.sum() == rolls.shape[0]
        assert set(np.unique(rolls).tolist()) == {0, 1}
    for roll in _rolls_by_id(z).values():
        assert roll[0].any() and roll[-1].any()  # no silent steps at either end
    assert CACHE.stat().st_size < 1_000_000


def test_split_counts():
    assert [len(v) for v in split_ids([f"c{i}" for i in range(382)]).values()] == [229, 76, 77]
    assert [len(v) for v in split_ids([f"c{i}" for i in range(10)]).values()] == [6, 2, 2]
    with pytest.raises(ValueError, match="distinct"):
        split_ids(["a", "a", "b"])


def test_load_sequences(cache):
    for s in SPLITS:
        seqs = load_bach_chorales(s)
        lengths = cache[f"{s}_lengths"]
        assert seqs.kind == "binary" and seqs.emissions.dtype == np.float32
        assert seqs.emissions.shape == (len(lengths), lengths.max(), 88)
        np.testing.assert_array_equal(np.asarray(seqs.lengths), lengths)
        mask = np.arange(lengths.max())[None, :] < lengths[:, None]
        np.testing.assert_array_equal(np.asarray(seqs.mask), mask)
        e = np.asarray(seqs.emissions)
        np.testing.assert_array_equal(e[mask], cache[f"{s}_rolls"].astype(np.float32))
        assert not e[~mask].any()
        assert bach_chorales_ids(s) == cache[f"{s}_ids"].tolist()


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_bach_chorales("validation")
    with pytest.raises(ValueError, match="split"):
        bach_chorales_ids("all")
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=r"nope\.npz.*build_bach_chorales\.py"):
        load_bach_chorales("train", path=missing)


def test_piano_roll_rules():
    music21 = pytest.importorskip("music21")
    s = music21.stream.Stream()
    s.insert(0.5, music21.note.Note("A0", quarterLength=0.5))  # off-beat eighth: step 0 only
    s.insert(1.5, music21.note.Note("C4", quarterLength=1.0))  # off-beat quarter: steps 1 and 2
    s.insert(3.0, music21.chord.Chord(["C8", "E4"], quarterLength=0.25))  # short chord: step 3
    s.insert(3.0, music21.note.Note("G4").getGrace())  # grace note, no duration: ignored
    roll = piano_roll(s)
    expected = np.zeros((4, 88), np.uint8)
    expected[0, 0] = expected[1:3, 60 - 21] = expected[3, [108 - 21, 64 - 21]] = 1
    np.testing.assert_array_equal(roll, expected)
    late = music21.stream.Stream()
    late.insert(2.0, music21.note.Note("C4"))  # leading silence is dropped
    late.insert(4.0, music21.note.Note("D4"))  # an inner silent step is kept
    np.testing.assert_array_equal(piano_roll(late).nonzero(), ([0, 2], [60 - 21, 62 - 21]))
    with pytest.raises(ValueError, match="88 keys"):
        piano_roll(music21.stream.Stream([music21.note.Note("B8")]))


def test_cache_matches_fresh_parse(cache):
    pytest.importorskip("music21")
    cached = _rolls_by_id(cache)
    for cid in REBUILD:
        fresh = chorale_roll(cid, force_source=True)  # from the MusicXML file, not music21's pickle cache
        assert fresh.dtype == np.uint8
        np.testing.assert_array_equal(fresh, cached[cid], err_msg=cid)


def test_partial_build(cache, tmp_path):
    pytest.importorskip("music21")
    out = tmp_path / "few.npz"
    summary = build_bach_chorales(out, ids=["bach/bwv269", "bach/bwv299"])
    assert json.loads(json.dumps(summary))["chorales"] == 2 and summary["splits"] == {"train": 1, "valid": 0, "test": 1}
    with np.load(out) as z:
        fresh = _rolls_by_id({k: z[k] for k in z.files})
    assert set(fresh) == {"bach/bwv269", "bach/bwv299"}
    cached = _rolls_by_id(cache)
    for cid, roll in fresh.items():
        np.testing.assert_array_equal(roll, cached[cid])
    assert load_bach_chorales("train", path=out).emissions.shape[-1] == 88
    with pytest.raises(ValueError, match="empty"):
        load_bach_chorales("valid", path=out)


def test_build_script_import_does_not_build():
    """The build script defines its output next to itself and only builds when run as ``__main__``."""
    ns = runpy.run_path(str(CACHE.parent / "build_bach_chorales.py"), run_name="not_main")
    assert ns["OUT"] == CACHE
