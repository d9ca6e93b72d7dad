"""Boundary checks: every bad input raises with the argument's name; good inputs pass through unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pssm.validation import (
    check_array,
    check_binary,
    check_categorical,
    check_counts,
    check_key,
    check_num_timesteps,
    check_sequence,
)


def test_check_array_accepts_and_returns():
    x = np.arange(6.0).reshape(2, 3)
    assert check_array(x, "x", ndim=2, shape=(2, None), dtype_kind="f") is x
    out = check_array([[1, 2], [3, 4]], "x", ndim=(1, 2))
    assert isinstance(out, np.ndarray) and out.shape == (2, 2)
    j = jnp.ones(3)
    assert check_array(j, "y", ndim=1) is j


@pytest.mark.parametrize(
    ("value", "kwargs", "exc", "match"),
    [
        (np.array([1.0, np.nan]), {}, ValueError, "emissions contains 1 NaN"),
        (np.array([1.0, np.inf]), {}, ValueError, "emissions contains 1 infinite"),
        (np.array([1.0, -np.inf]), {"allow_nan": True}, ValueError, "emissions contains 1 infinite"),
        (np.ones((2, 3)), {"ndim": 1}, ValueError, "emissions must be 1-dimensional"),
        (np.ones((2, 3)), {"ndim": (1, 3)}, ValueError, "emissions must be 1 or 3-dimensional"),
        (np.ones((2, 3)), {"shape": (2, 4)}, ValueError, r"emissions must have shape \(2, 4\)"),
        (np.ones((2, 3)), {"shape": (None,)}, ValueError, r"emissions must have shape \(\*,\)"),
        (np.ones(3, int), {"dtype_kind": "f"}, TypeError, "emissions must have a floating dtype"),
        (np.array(["a", "b"]), {}, TypeError, "emissions must be numeric"),
        ([[1, 2], [3]], {}, ValueError, "emissions could not be converted"),
        (None, {}, TypeError, "emissions is None"),
    ],
)
def test_check_array_rejects(value, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        check_array(value, "emissions", **kwargs)


def test_check_array_nan_allowed_and_finite_off():
    x = np.array([1.0, np.nan])
    assert check_array(x, "x", allow_nan=True) is x
    y = np.array([np.inf])
    assert check_array(y, "y", finite=False) is y


def test_check_array_jax_values_checked():
    with pytest.raises(ValueError, match="z contains 1 NaN"):
        check_array(jnp.array([0.0, jnp.nan]), "z")


def test_tracers_skip_value_checks_but_not_shapes():
    calls = []

    @jax.jit
    def f(x):
        check_array(x, "x", ndim=1)  # NaN is unknowable at trace time: no error
        check_counts(x, "x")
        calls.append(1)
        return x

    f(jnp.array([jnp.nan, -1.5]))
    assert calls == [1]

    @jax.jit
    def g(x):
        check_array(x, "x", ndim=2)
        return x

    with pytest.raises(ValueError, match="x must be 2-dimensional"):
        g(jnp.ones(3))


def test_check_sequence_empty_and_length_one():
    assert check_sequence(np.zeros((1, 2)), "y").shape == (1, 2)  # length 1 is valid
    with pytest.raises(ValueError, match=r"y is an empty sequence \(0 time steps"):
        check_sequence(np.zeros((0, 2)), "y")
    with pytest.raises(ValueError, match="y must have a leading time axis"):
        check_sequence(np.float64(1.0), "y")
    with pytest.raises(ValueError, match="y has 2 time step"):
        check_sequence(np.zeros(2), "y", min_length=3)


def test_check_counts():
    assert check_counts(np.array([0, 3, 7]), "counts").tolist() == [0, 3, 7]
    assert check_counts(np.array([0.0, 2.0]), "counts").tolist() == [0.0, 2.0]  # integral floats are fine
    assert check_counts(np.array([1.0, np.nan]), "counts", allow_nan=True) is not None
    with pytest.raises(ValueError, match="counts must be non-negative counts; found 1 negative"):
        check_counts(np.array([1, -2, 3]), "counts")
    with pytest.raises(ValueError, match=r"counts must be integer-valued; found 1 non-integer value\(s\), e.g. 0.5"):
        check_counts(np.array([1.0, 0.5]), "counts")
    with pytest.raises(ValueError, match="counts contains 1 NaN"):
        check_counts(np.array([1.0, np.nan]), "counts")
    with pytest.raises(ValueError, match="counts contains 1 infinite"):
        check_counts(np.array([1.0, np.inf]), "counts", allow_nan=True)
    with pytest.raises(TypeError, match="counts must be numeric"):
        check_counts(np.array(["1"]), "counts")
    with pytest.raises(ValueError, match="counts must be 2-dimensional"):
        check_counts(np.array([1]), "counts", ndim=2)


def test_check_binary_and_categorical():
    check_binary(np.array([True, False]), "choices")
    check_binary(np.array([0.0, 1.0, np.nan]), "choices", allow_nan=True)
    with pytest.raises(ValueError, match=r"choices must be binary \(0/1\); found 2 other"):
        check_binary(np.array([0, 1, 2, -1]), "choices")
    check_categorical(np.array([0, 2, 1]), "labels", 3)
    with pytest.raises(ValueError, match=r"labels must hold class labels in 0..2 \(num_classes=3\)"):
        check_categorical(np.array([0, 3]), "labels", 3)
    with pytest.raises(ValueError, match="labels must hold class labels in 0..2"):
        check_categorical(np.array([-1, 0]), "labels", 3)
    with pytest.raises(ValueError, match="labels must be integer-valued"):
        check_categorical(np.array([0.5]), "labels", 3)
    with pytest.raises(TypeError, match="labels must hold integer class labels; got dtype bool"):
        check_categorical(np.array([True]), "labels", 3)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        check_categorical(np.array([0]), "labels", 0)


def test_check_key():
    typed = jax.random.key(0)
    raw = jax.random.PRNGKey(0)
    assert check_key(typed) is typed
    assert check_key(raw, "rng_key") is raw
    with pytest.raises(TypeError, match="key is None; pass jax.random.key"):
        check_key(None)
    with pytest.raises(TypeError, match="rng_key must be a jax PRNG key, not the integer 0"):
        check_key(0, "rng_key")
    with pytest.raises(ValueError, match=r"key must be a single key; got a batch of keys with shape \(3,\)"):
        check_key(jax.random.split(typed, 3))
    with pytest.raises(TypeError, match=r"key must be a jax PRNG key \(typed, or raw uint32"):
        check_key(jnp.zeros(2, jnp.int32))
    with pytest.raises(TypeError, match="key must be a jax PRNG key"):
        check_key(jax.random.split(raw, 3))
    with pytest.raises(TypeError, match="key must be a jax PRNG key; got str"):
        check_key("seed")


def test_check_num_timesteps():
    assert check_num_timesteps(1) == 1
    assert check_num_timesteps(np.int64(5)) == 5
    assert check_num_timesteps(jnp.asarray(7)) == 7
    with pytest.raises(ValueError, match="num_timesteps must be >= 1; got 0"):
        check_num_timesteps(0)
    with pytest.raises(TypeError, match=r"T must be an integer; got 2.5"):
        check_num_timesteps(2.5, "T")
    with pytest.raises(TypeError, match="num_timesteps must be an integer; got the bool"):
        check_num_timesteps(True)
    with pytest.raises(TypeError, match="num_timesteps must be a scalar integer"):
        check_num_timesteps(np.array([3]))
