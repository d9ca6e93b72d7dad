"""Data containers: padding/masking round trips, validation by kind, splits, spike binning, interval masks."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from pssm.data import (
    Sequences,
    bin_spikes,
    block_bounds,
    group_folds,
    intervals_to_labels,
    intervals_to_mask,
    split_by_group,
    train_test_split_blocks,
)

DATA = Path(__file__).resolve().parents[1] / "data"


def _ragged(rng, lengths=(5, 1, 3), dim=2):
    return [rng.normal(size=(n, dim)) for n in lengths]


# ------------------------------------------------------------------ Sequences
def test_ragged_padding_round_trip():
    rng = np.random.default_rng(0)
    ys = _ragged(rng)
    us = [rng.normal(size=(len(y), 4)) for y in ys]
    s = Sequences.from_arrays(ys, inputs=us)
    assert (s.num_sequences, s.max_length, s.emission_shape, len(s)) == (3, 5, (2,), 3)
    np.testing.assert_array_equal(np.asarray(s.lengths), [5, 1, 3])
    expected_mask = np.array([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], bool)
    np.testing.assert_array_equal(np.asarray(s.mask), expected_mask)
    assert np.all(np.asarray(s.emissions)[~expected_mask] == 0.0)
    assert np.all(np.asarray(s.inputs)[~expected_mask] == 0.0)
    assert s.inputs.shape == (3, 5, 4)
    for i, (y, u) in enumerate(zip(ys, us, strict=True)):
        e, m, inp = s.unpad(i)
        np.testing.assert_allclose(np.asarray(e), y, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(inp), u, rtol=1e-6)
        assert np.asarray(m).all() and m.shape == (len(y),)
    for a, b in zip(s.to_list(), ys, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert [u.emissions.shape[0] for u in s] == [5, 1, 3]  # iteration unpads
    assert s.unpad(-1).emissions.shape == (3, 2)
    with pytest.raises(IndexError, match="i must be an integer"):
        s.unpad(3)


def test_nan_rows_are_masked_and_zeroed_and_nan_entries_are_marked():
    y = np.arange(12.0).reshape(6, 2)
    y[2, 1] = np.nan  # one NaN entry: the step stays, its other entry observed
    y[4] = np.nan  # a row of NaN: the step is missing
    s = Sequences.from_arrays([y, np.ones((2, 2))])
    np.testing.assert_array_equal(np.asarray(s.mask[0]), [True, True, True, True, False, True])
    np.testing.assert_array_equal(np.asarray(s.observed[0, 2]), [True, False])
    assert np.asarray(s.observed[0, [0, 1, 3, 5]]).all() and not np.asarray(s.observed[0, 4]).any()
    assert not np.asarray(s.observed[1, 2:]).any()  # padding
    e = np.asarray(s.emissions)
    assert np.isfinite(e).all()
    np.testing.assert_array_equal(e[0, 2], [4.0, 0.0])
    np.testing.assert_array_equal(e[0, 4], [0.0, 0.0])
    assert s.num_observed == 5 + 2
    back = s.to_list()[0]
    np.testing.assert_array_equal(np.isnan(back), np.isnan(y))
    np.testing.assert_array_equal(back[~np.isnan(y)], y[~np.isnan(y)])
    sub = s.subset([0])
    np.testing.assert_array_equal(np.asarray(sub.observed[0]), np.asarray(s.observed[0]))
    whole = s.whole_steps()  # for models that cannot use single entries
    assert whole.observed is None
    np.testing.assert_array_equal(np.asarray(whole.mask[0]), [True, True, False, True, False, True])
    np.testing.assert_array_equal(np.asarray(whole.emissions[0, 2]), [0.0, 0.0])
    full = Sequences.from_arrays([np.where(np.isnan(y).all(1, keepdims=True), np.nan, 1.0)])
    assert full.observed is None  # rows are all or nothing: no entry mask


def test_counts_kind_validation_and_missing():
    s = Sequences.from_arrays([np.array([[0.0, 3.0], [np.nan, 1.0], [2.0, 5.0]])], kind="counts")
    assert jnp.issubdtype(s.emissions.dtype, jnp.integer)
    np.testing.assert_array_equal(np.asarray(s.emissions[0]), [[0, 3], [0, 1], [2, 5]])
    np.testing.assert_array_equal(np.asarray(s.mask[0]), [True, True, True])
    np.testing.assert_array_equal(np.asarray(s.observed[0]), [[True, True], [False, True], [True, True]])
    good = np.ones((3, 2), int)
    with pytest.raises(ValueError, match=r"emissions\[1\] must be non-negative counts"):
        Sequences.from_arrays([good, -good], kind="counts")
    with pytest.raises(ValueError, match=r"emissions\[0\] must be integer-valued"):
        Sequences.from_arrays([good + 0.5], kind="counts")
    with pytest.raises(ValueError, match=r"emissions\[0\] contains 1 infinite"):
        Sequences.from_arrays([np.array([[1.0], [np.inf]])], kind="counts")
    with pytest.raises(ValueError, match=r"emissions\[0\] contains 1 infinite"):
        Sequences.from_arrays([np.array([[1.0], [-np.inf]])])


def test_binary_and_categorical_kinds():
    s = Sequences.from_arrays(np.array([[0, 1, 1], [1, 0, 0]]), kind="binary")
    assert s.emissions.shape == (2, 3) and s.emission_shape == ()
    with pytest.raises(ValueError, match=r"emissions\[1\] must be binary"):
        Sequences.from_arrays(np.array([[0, 1, 1], [1, 2, 0]]), kind="binary")
    c = Sequences.from_arrays([np.array([0, 2, 1]), np.array([1.0, np.nan])], kind="categorical", num_classes=3)
    np.testing.assert_array_equal(np.asarray(c.mask), [[1, 1, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match="kind='categorical' needs num_classes"):
        Sequences.from_arrays([np.array([0, 1])], kind="categorical")
    with pytest.raises(ValueError, match=r"emissions\[0\] must hold class labels in 0..2"):
        Sequences.from_arrays([np.array([0, 3])], kind="categorical", num_classes=3)
    with pytest.raises(ValueError, match="kind must be one of"):
        Sequences.from_arrays([np.array([0, 1])], kind="poisson")


@pytest.mark.parametrize(
    ("emissions", "kwargs", "exc", "match"),
    [
        ([], {}, ValueError, "emissions is an empty list"),
        ([np.zeros((3, 2)), np.zeros((0, 2))], {}, ValueError, r"emissions\[1\] is an empty sequence"),
        (np.zeros((2, 0, 3)), {}, ValueError, "emissions holds empty sequences"),
        (np.zeros((0, 4, 3)), {}, ValueError, r"emissions has no sequences \(B = 0\)"),
        (np.zeros(5), {}, ValueError, r"Wrap a single sequence y as \[y\]"),
        ([np.zeros((3, 2)), np.zeros((3, 3))], {}, ValueError, r"emissions\[1\] has per-step shape \(3,\)"),
        ([np.array(["a", "b"])], {}, TypeError, r"emissions\[0\] must be numeric"),
        ([np.float64(1.0)], {}, ValueError, r"emissions\[0\] must have a leading time axis"),
        (np.zeros((2, 4)), {"lengths": np.array([0, 4])}, ValueError, "lengths must lie in 1..4"),
        (np.zeros((2, 4)), {"lengths": np.array([2.0, 4.0])}, TypeError, "lengths must have a"),
        (np.zeros((2, 4)), {"lengths": np.array([2, 4, 1])}, ValueError, r"lengths must have shape \(2,\)"),
        ([np.zeros(3)], {"lengths": [3]}, ValueError, "lengths is only used with a padded array"),
        ([np.zeros(3)], {"inputs": np.zeros((3, 1))}, ValueError, "inputs must be a list with one pytree"),
        ([np.zeros(3)], {"inputs": [np.zeros((4, 1))]}, ValueError, r"inputs\[0\] must have 3 time steps"),
        ([np.zeros(3)], {"inputs": [np.full((3, 1), np.nan)]}, ValueError, r"inputs\[0\] contains 3 NaN"),
        (np.zeros((2, 3)), {"inputs": np.zeros((2, 4, 1))}, ValueError, "inputs must have leading shape"),
    ],
)
def test_from_arrays_rejects(emissions, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Sequences.from_arrays(emissions, **kwargs)


def test_length_one_sequences_are_valid():
    s = Sequences.from_arrays([np.array([[2.0]]), np.array([[1.0], [3.0]])])
    np.testing.assert_array_equal(np.asarray(s.lengths), [1, 2])
    np.testing.assert_array_equal(np.asarray(s.mask), [[True, False], [True, True]])


def test_padded_array_with_lengths_and_pytree_inputs():
    y = np.arange(24.0).reshape(2, 4, 3)
    y[1, 3] = 99.0  # beyond length 3: padding, must be replaced by 0
    inputs = {"a": np.ones((2, 4)), "b": np.arange(16.0).reshape(2, 4, 2)}
    s = Sequences.from_arrays(y, inputs, lengths=np.array([4, 3]))
    assert s.emissions[1, 3].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_array_equal(np.asarray(s.mask), [[1, 1, 1, 1], [1, 1, 1, 0]])
    assert s.inputs["b"].shape == (2, 4, 2) and float(s.inputs["b"][1, 3].sum()) == 0.0
    u = s.unpad(1).inputs
    assert u["a"].shape == (3,) and u["b"].shape == (3, 2)


def test_dtypes_float32_and_float64(x64):
    s64 = Sequences.from_arrays([np.ones((2, 1))])
    assert s64.emissions.dtype == jnp.float64
    s32 = Sequences.from_arrays([np.ones((2, 1))], dtype=jnp.float32)
    assert s32.emissions.dtype == jnp.float32


def test_default_dtypes_follow_jax_mode():
    s = Sequences.from_arrays([np.ones((2, 1), np.float64)])
    c = Sequences.from_arrays([np.ones((2, 1), np.int64)], kind="counts")
    if jax.config.jax_enable_x64:
        assert (s.emissions.dtype, c.emissions.dtype) == (jnp.float64, jnp.int64)
    else:
        assert (s.emissions.dtype, c.emissions.dtype) == (jnp.float32, jnp.int32)


def test_sequences_is_a_pytree_through_jit_and_vmap():
    rng = np.random.default_rng(1)
    ys = _ragged(rng, (4, 2, 3), 2)
    s = Sequences.from_arrays(ys)

    @jax.jit
    def masked_sum(seqs):
        return (seqs.emissions * seqs.mask[..., None]).sum()

    np.testing.assert_allclose(float(masked_sum(s)), sum(y.sum() for y in ys), rtol=1e-5)
    per_seq = jax.vmap(lambda e, m: (e * m[:, None]).sum())(s.emissions, s.mask)
    np.testing.assert_allclose(np.asarray(per_seq), [y.sum() for y in ys], rtol=1e-5)
    with pytest.raises(TypeError, match="Sequences.from_arrays validates values and runs outside jit"):
        jax.jit(lambda y: Sequences.from_arrays(y).emissions)(jnp.ones((2, 3)))
    leaves = jax.tree.leaves(s)
    assert len(leaves) == 3  # emissions, mask, lengths (inputs None, kind static)


def test_boundary_coerces_once_and_checks_against_the_model():
    from pssm.boundary import as_sequences
    from pssm.models import HMM, GaussianEmissions, PoissonEmissions

    s = Sequences.from_arrays([np.ones((3, 2)), np.ones((1, 2))])
    model = HMM(2, GaussianEmissions(2))
    assert as_sequences(model, s) is s
    single = as_sequences(model, np.ones((5, 2)))
    assert single.emissions.shape == (1, 5, 2) and np.asarray(single.lengths).tolist() == [5]
    ragged = as_sequences(model, [np.ones((3, 2)), np.full((1, 2), np.nan)])
    np.testing.assert_array_equal(np.asarray(ragged.mask), [[True, True, True], [False, False, False]])
    scalar = as_sequences(HMM(2, PoissonEmissions(1)), np.array([1, 2, 3]))  # 1-D data, one-dimensional model
    assert scalar.emissions.shape == (1, 3, 1)
    with pytest.raises(ValueError, match=r"per-step shape \(1,\).*emission_shape \(2,\)"):
        as_sequences(model, np.ones((10, 1)))
    with pytest.raises(ValueError, match=r"per-step shape \(3,\)"):
        as_sequences(model, [np.ones((4, 3))])
    with pytest.raises(ValueError, match="emission_shape"):
        as_sequences(model, Sequences.from_arrays([np.ones((3, 4))]))
    with pytest.raises(TypeError, match="numeric"):
        as_sequences(model, np.array([["a", "b"]] * 3))
    with pytest.raises(ValueError, match="non-negative"):
        as_sequences(HMM(2, PoissonEmissions(1)), np.array([1.0, -2.0]))


def test_from_dataframe_rat_sessions():
    df = pd.read_csv(DATA / "psytrack_rat_W053.csv")
    df["choice"] = df["y"] - 1
    s, labels = Sequences.from_dataframe(
        df, "choice", group="session", input_columns=["s1_0", "s2_0", "h_0"], kind="binary"
    )
    sizes = df.groupby("session").size()
    assert s.num_sequences == 80 and labels.tolist() == list(range(80))
    np.testing.assert_array_equal(np.asarray(s.lengths), sizes.to_numpy())
    assert s.max_length == 400 and s.inputs.shape == (80, 400, 3)
    assert int(np.asarray(s.mask).sum()) == 20000
    first = df[df.session == 7]
    np.testing.assert_array_equal(np.asarray(s.unpad(7).emissions), first["choice"].to_numpy())
    np.testing.assert_allclose(np.asarray(s.unpad(7).inputs), first[["s1_0", "s2_0", "h_0"]].to_numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"emissions\[0\] must be binary"):
        Sequences.from_dataframe(df, "y", group="session", kind="binary")
    with pytest.raises(ValueError, match=r"df has no column\(s\) \['nope'\]"):
        Sequences.from_dataframe(df, ["nope"], group="session")

    train, test = split_by_group(s, labels, [0, 5, 79])
    assert (train.num_sequences, test.num_sequences) == (77, 3)
    np.testing.assert_array_equal(np.asarray(test.lengths), sizes.loc[[0, 5, 79]].to_numpy())
    assert int(np.asarray(train.lengths).sum()) + int(np.asarray(test.lengths).sum()) == 20000
    assert test.max_length == int(sizes.loc[[0, 5, 79]].max())  # re-padded to its own maximum
    folds = group_folds(labels, 5)
    assert [len(f) for f in folds] == [16] * 5
    assert np.array_equal(np.sort(np.concatenate(folds)), labels)


def test_split_by_group_errors():
    s = Sequences.from_arrays([np.ones((2, 1))] * 3)
    with pytest.raises(ValueError, match=r"groups must hold one label per sequence, shape \(3,\)"):
        split_by_group(s, ["a", "b"], "a")
    with pytest.raises(ValueError, match=r"test_groups \['z'\] do not occur"):
        split_by_group(s, ["a", "b", "a"], "z")
    with pytest.raises(ValueError, match="test_groups hold every sequence"):
        split_by_group(s, ["a", "a", "a"], "a")
    tr, te = split_by_group(s, ["a", "b", "a"], "b")
    assert (tr.num_sequences, te.num_sequences) == (2, 1)
    with pytest.raises(ValueError, match="num_folds=4 exceeds"):
        group_folds(["a", "b", "a"], 4)


# ------------------------------------------------------------------ block splits
def test_block_bounds():
    np.testing.assert_array_equal(block_bounds(100, num_blocks=4), [[0, 25], [25, 50], [50, 75], [75, 100]])
    np.testing.assert_array_equal(block_bounds(100, block_length=30), [[0, 30], [30, 60], [60, 90], [90, 100]])
    b = block_bounds(10, num_blocks=3)
    assert b[0, 0] == 0 and b[-1, 1] == 10 and np.all(b[1:, 0] == b[:-1, 1])
    with pytest.raises(ValueError, match="exactly one of num_blocks or block_length"):
        block_bounds(10)
    with pytest.raises(ValueError, match="num_blocks=11 exceeds"):
        block_bounds(10, num_blocks=11)


def test_train_test_split_blocks():
    T = 100
    y = np.arange(T, dtype=float)[:, None]
    u = np.arange(T, dtype=float)[:, None] * 10
    sp = train_test_split_blocks(y, [1, 3], num_blocks=5, inputs=u)
    assert sp.train_slices == [slice(0, 20), slice(40, 60), slice(80, 100)]
    assert sp.test_slices == [slice(20, 40), slice(60, 80)]
    for seqs, slices in ((sp.train, sp.train_slices), (sp.test, sp.test_slices)):
        for k, sl in enumerate(slices):
            np.testing.assert_array_equal(np.asarray(seqs.unpad(k).emissions)[:, 0], np.arange(T)[sl])
            np.testing.assert_array_equal(np.asarray(seqs.unpad(k).inputs)[:, 0], 10 * np.arange(T)[sl])
    merged = train_test_split_blocks(y, [1, 2], num_blocks=5)
    assert merged.test_slices == [slice(20, 60)] and merged.test.num_sequences == 1
    sep = train_test_split_blocks(y, [1, 2], num_blocks=5, merge_adjacent=False)
    assert sep.test.num_sequences == 2
    last = train_test_split_blocks(y, -1, block_length=30)
    assert last.test_slices == [slice(90, 100)] and last.train_slices == [slice(0, 90)]
    counts = train_test_split_blocks(np.ones((10, 2), int), 0, num_blocks=2, kind="counts")
    assert counts.train.kind == "counts"
    with pytest.raises(ValueError, match=r"test_blocks must lie in \[-5, 5\)"):
        train_test_split_blocks(y, [5], num_blocks=5)
    with pytest.raises(ValueError, match="test_blocks must hold at least one and fewer than all"):
        train_test_split_blocks(y, [0, 1], num_blocks=2)
    with pytest.raises(TypeError, match="test_blocks must be block indices"):
        train_test_split_blocks(y, [0.5], num_blocks=2)
    with pytest.raises(ValueError, match="inputs must have 100 time steps"):
        train_test_split_blocks(y, 0, num_blocks=2, inputs=u[:50])
    with pytest.raises(ValueError, match="emissions is an empty sequence"):
        train_test_split_blocks(np.zeros((0, 1)), 0, num_blocks=2)


# ------------------------------------------------------------------ spikes
def _random_spikes(rng, n_units=5, t_max=10.0):
    return {u: np.sort(rng.uniform(0, t_max, size=rng.integers(0, 200))) for u in range(n_units)}


def test_bin_spikes_equals_histogram_per_unit():
    rng = np.random.default_rng(2)
    spikes = _random_spikes(rng)
    spikes[1] = np.concatenate([spikes[1], [0.5, 1.0, 9.9, 10.0]])  # exactly on edges, incl. the last edge
    counts, edges, units = bin_spikes(spikes, 0.1, t_start=0.0, t_stop=10.0)
    assert counts.shape == (100, 5) and counts.dtype == np.int64 and edges.shape == (101,)
    assert units.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(edges, np.linspace(0, 10, 101), atol=1e-12)
    for j, u in enumerate(units):
        np.testing.assert_array_equal(counts[:, j], np.histogram(spikes[u], edges)[0])
    assert counts[:, 1].sum() == len(spikes[1])  # every spike in [0, 10] is counted


def test_bin_spikes_dict_dataframe_list_agree():
    rng = np.random.default_rng(3)
    spikes = {f"u{k}": t for k, t in _random_spikes(rng, 4).items()}
    df = pd.DataFrame(
        {
            "unit": np.concatenate([[u] * len(t) for u, t in spikes.items()]),
            "time": np.concatenate(list(spikes.values())),
        }
    ).sample(frac=1.0, random_state=0)  # order of rows must not matter
    a = bin_spikes(spikes, 0.25, 0.0, 10.0)
    b = bin_spikes(df, 0.25, 0.0, 10.0)
    c = bin_spikes(list(spikes.values()), 0.25, 0.0, 10.0)
    assert a.units.tolist() == b.units.tolist() == ["u0", "u1", "u2", "u3"]
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.counts, c.counts)
    np.testing.assert_array_equal(a.bin_edges, b.bin_edges)
    sel = bin_spikes(df, 0.25, 0.0, 10.0, units=["u2", "silent", "u0"])
    np.testing.assert_array_equal(sel.counts[:, 0], a.counts[:, 2])
    np.testing.assert_array_equal(sel.counts[:, 1], 0)
    np.testing.assert_array_equal(sel.counts[:, 2], a.counts[:, 0])
    np.testing.assert_allclose(a.bin_centers, np.arange(40) * 0.25 + 0.125)


def test_bin_spikes_defaults_and_partial_bins():
    spikes = {0: np.array([0.37, 1.02, 2.95])}
    counts, edges, _ = bin_spikes(spikes, 0.5)
    np.testing.assert_allclose(edges[[0, -1]], [0.0, 3.0])  # aligned to the bin grid, covers every spike
    assert counts.sum() == 3
    counts2, edges2, _ = bin_spikes(spikes, 1.0, t_start=0.0, t_stop=2.5)  # partial last bin dropped
    np.testing.assert_allclose(edges2, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(counts2[:, 0], [1, 1])


@pytest.mark.parametrize(
    ("spikes", "kwargs", "exc", "match"),
    [
        ({0: [1.0]}, {"bin_size": 0.0}, ValueError, "bin_size must be > 0"),
        ({0: [1.0]}, {"bin_size": -1.0}, ValueError, "bin_size must be > 0"),
        ({0: [1.0, np.nan]}, {"bin_size": 0.1}, ValueError, r"spikes\[0\] contains 1 NaN"),
        ({0: [[1.0]]}, {"bin_size": 0.1}, ValueError, r"spikes\[0\] must be 1-dimensional"),
        ({0: [1.0]}, {"bin_size": 0.1, "t_start": 2.0, "t_stop": 1.0}, ValueError, "t_stop must be greater"),
        ({0: [1.0]}, {"bin_size": 1.0, "t_start": 0.0, "t_stop": 0.5}, ValueError, "shorter than one bin"),
        ({0: [1.0]}, {"bin_size": 0.1, "units": [0, 3]}, ValueError, r"units \[3\] are not keys of spikes"),
        ({0: np.zeros(0)}, {"bin_size": 0.1}, ValueError, "give t_start and t_stop"),
        ({}, {"bin_size": 0.1}, ValueError, "spikes holds no units"),
        (np.ones(3), {"bin_size": 0.1}, TypeError, "spikes must be a dict"),
        (pd.DataFrame({"unit": [0], "t": [1.0]}), {"bin_size": 0.1}, ValueError, "missing 'time'"),
        (pd.DataFrame({"unit": [0], "time": [np.inf]}), {"bin_size": 0.1}, ValueError, r"spikes\['time'\] contains"),
        ([np.array([1.0])], {"bin_size": 0.1, "units": [1]}, ValueError, "units must index the spikes list"),
    ],
)
def test_bin_spikes_rejects(spikes, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        bin_spikes(spikes, **kwargs)


def test_intervals_to_mask_and_labels_match_brute_force():
    rng = np.random.default_rng(4)
    edges = np.linspace(0.0, 50.0, 501)
    centers = 0.5 * (edges[1:] + edges[:-1])
    starts = np.sort(rng.uniform(-5, 55, 20))
    stops = starts + rng.uniform(0, 4, 20)
    want = np.zeros(500, bool)
    for s, e in zip(starts, stops, strict=True):
        want |= (centers >= s) & (centers < e)
    np.testing.assert_array_equal(intervals_to_mask(edges, starts, stops), want)
    assert 0 < want.sum() < 500
    lab = intervals_to_labels(edges, [0.0, 20.0], [20.0, 30.0])
    assert (lab[:200] == 0).all() and (lab[200:300] == 1).all() and (lab[300:] == -1).all()
    with pytest.raises(ValueError, match="stops must be >= starts"):
        intervals_to_mask(edges, [2.0], [1.0])
    with pytest.raises(ValueError, match="starts and stops must have the same length"):
        intervals_to_mask(edges, [1.0, 2.0], [3.0])
    with pytest.raises(ValueError, match="bin_edges must be a strictly increasing"):
        intervals_to_mask(np.array([0.0, 1.0, 1.0]), [0.0], [1.0])
    with pytest.raises(ValueError, match="starts contains 1 NaN"):
        intervals_to_mask(edges, [np.nan], [1.0])
