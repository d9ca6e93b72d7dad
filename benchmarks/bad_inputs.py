"""Bad-input catalogue: unusual or wrong inputs to every public entry point, each run and classified automatically.

Every case is a record ``(entry point, description, callable, expectation)``.  The callable is run once and its
outcome is classified into exactly one of three classes:

* ``clear_error`` -- the call raised a documented exception class (``ValueError``, ``TypeError``,
  ``FloatingPointError``; ``KeyError`` / ``IndexError`` / ``FileNotFoundError`` only where the case says the API
  documents them), the exception class is not one of JAX's / NumPyro's / equinox's own, the ``raise`` statement is
  in pssm's source (``pssm/``, ``models/``, ``inference/``; traceback filtering is switched off so a JAX-internal
  frame cannot hide behind a pssm line) -- or it is Python's own argument-binding ``TypeError`` -- and the message
  names the offending argument or the thing seen (one of the case's ``names``) and says what was expected (a cue
  such as "must", "expected", "give", "pass", "use", "one of", "needs", ...).
* ``documented_handling`` -- the call returned and the case's check (a real comparison in code) passed: e.g.
  NumPy / list / pandas input equal to the ``jnp`` result, a NaN observation equal to the exact answer with that
  observation masked (dense Gaussian conditioning for Kalman, brute-force enumeration for forward-backward, or the
  same key with ``mask=`` / a hand-built masked ``Sequences`` holding garbage at the masked steps for stochastic
  algorithms), float32 input promoted, the same key giving the same result, a save/load round trip bit for bit.
* ``silent_or_cryptic`` -- everything else: a result returned where an error was expected (finite or NaN), a
  returned result whose check failed, a JAX-internal / cryptic error, or a clear-looking error of the wrong class.

Also measured: ``nan_missing_max_err_vs_exact`` (per algorithm family, max abs error between the NaN-input result
and the exact / masked answer), ``resume_algorithms`` / ``resume_identical`` (the algorithms taking
``checkpoint=``, interrupted by an exception from the callback or by SIGKILL of a child process after the first
checkpoint, then resumed, compared bit for bit with an uninterrupted run), ``save_load_models`` (models of the
conformance registry ``tests/conformance_checks.py`` whose ``pssm.save``/``pssm.load`` round trip is exact).

Usage: ``python benchmarks/bad_inputs.py [--quick] [--list]``; prints ONE JSON object as its last line.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and "PYTHONHASHSEED" not in os.environ:
    # NumPyro iterates sets of site and field names, so float sums (and SVI runs) differ at 1e-14 between processes
    # with different string hashing: the kill-and-resume checks compare runs made in two processes, so fix it
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_traceback_filtering", "off")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import pssm  # noqa: E402
import pssm.inference as inf  # noqa: E402
import pssm.inference.smc as smc  # noqa: E402
import pssm.models as pm  # noqa: E402
from pssm.data import Sequences  # noqa: E402

warnings.filterwarnings("ignore")
PROJECT_DIRS = tuple(str(ROOT / d) + os.sep for d in ("pssm", "models", "inference"))
ALLOWED = (ValueError, TypeError, FloatingPointError)
FOREIGN = ("jax", "jaxlib", "numpyro", "equinox", "optax", "numpy", "scipy", "pandas", "h5py", "xarray", "arviz")
CUE = re.compile(
    r"must|expect|give|pass |should|need|only |require|use |one of|allowed|at least|lie in|accept|declares|"
    r"wrap|convert|remove|instead|>=|<=|supported|no such|is not|has no|refuse|reads|available|takes| but |keys:|"
    r"labels:|shorter|duplicate|do not occur|the leaves are|build |to match|contains no|undefined|cannot|no \w+ file",
    re.I,
)
BINDING = re.compile(r"required (positional|keyword-only) argument|unexpected keyword argument|positional argument")
K = jax.random.PRNGKey
NAN_ERR: dict[str, float] = {}
TMP = Path(tempfile.mkdtemp(prefix="pssm_bad_inputs_"))


# --------------------------------------------------------------------------------------------- the registry
@dataclasses.dataclass(frozen=True)
class Expect:
    """``names``: words a clear error message must contain; ``check(result) -> (ok, detail)``: the documented
    handling when the call returns (``None``: an error was expected); ``also``: documented extra exception types."""

    names: tuple[str, ...]
    check: Callable[[Any], tuple[bool, str]] | None = None
    also: tuple[type, ...] = ()


@dataclasses.dataclass(frozen=True)
class Case:
    entry: str
    desc: str
    fn: Callable[[], Any]
    expect: Expect
    quick: bool


CASES: list[Case] = []


def raises(*names: str, also: tuple[type, ...] = ()) -> Expect:
    return Expect(tuple(names), None, also)


def handles(check: Callable[[Any], Any], *names: str, also: tuple[type, ...] = ()) -> Expect:
    return Expect(tuple(names), check, also)


def case(entry: str, desc: str, fn: Callable[[], Any], expect: Expect, quick: bool = False) -> None:
    CASES.append(Case(entry, desc, fn, expect, quick))


# --------------------------------------------------------------------------------------------- classification
def _raise_site(tb) -> str:
    frames = traceback.extract_tb(tb)
    return frames[-1].filename if frames else ""


def _summary(out: Any) -> str:
    try:
        leaves = [np.asarray(a) for a in jax.tree.leaves(out) if hasattr(a, "shape") or isinstance(a, float | int)]
    except Exception:  # noqa: BLE001
        return f"returned {type(out).__name__}"
    num = [a for a in leaves if a.dtype.kind in "fc"]
    if any(np.isnan(a).any() for a in num):
        what = "NaN in the result"
    elif any(np.isinf(a).any() for a in num):
        what = "inf in the result"
    else:
        what = "a finite result"
    shape = f" (first leaf shape {leaves[0].shape})" if leaves else ""
    return f"returned {type(out).__name__} with {what}{shape}"


def judge_error(c: Case, e: BaseException) -> tuple[str, str]:
    site = _raise_site(e.__traceback__)
    text = str(e)
    first = f"{type(e).__name__}: {text}".splitlines()[0][:200]
    mod = type(e).__module__.split(".")[0]
    binding = isinstance(e, TypeError) and BINDING.search(text) and "site-packages" not in site
    if not isinstance(e, ALLOWED + c.expect.also) or mod in FOREIGN:
        return "silent_or_cryptic", f"cryptic {first}"
    if not (site.startswith(PROJECT_DIRS) or binding):
        where = site.split("site-packages/")[-1] if "site-packages" in site else os.path.basename(site)
        return "silent_or_cryptic", f"cryptic (raised in {where}) {first}"
    names = c.expect.names + (("emissions",) if "data" in c.expect.names else ())
    if not any(n.lower() in text.lower() for n in names):
        return "silent_or_cryptic", f"error does not name {list(c.expect.names)}: {first}"
    if not (CUE.search(text) or binding):
        return "silent_or_cryptic", f"error does not say what is expected: {first}"
    return "clear_error", first


def classify(c: Case) -> tuple[str, str]:
    try:
        out = c.fn()
    except Exception as e:  # noqa: BLE001
        return judge_error(c, e)
    if c.expect.check is None:
        return "silent_or_cryptic", _summary(out)
    try:
        res = c.expect.check(out)
    except Exception as e:  # noqa: BLE001
        return "silent_or_cryptic", f"returned, but the check failed with {type(e).__name__}: {str(e)[:150]}"
    ok, detail = res if isinstance(res, tuple) else (bool(res), "")
    if ok:
        return "documented_handling", detail or "check passed"
    return "silent_or_cryptic", f"returned, check failed: {detail}"


# --------------------------------------------------------------------------------------------- comparison helpers
def _leaves(x) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(x)]


def max_diff(a, b) -> float:
    la, lb = _leaves(a), _leaves(b)
    if len(la) != len(lb):
        return float("inf")
    out = 0.0
    for x, y in zip(la, lb, strict=True):
        if x.shape != y.shape:
            return float("inf")
        if x.size == 0:
            continue
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            xf, yf = x.astype(float), y.astype(float)
            both_nan = np.isnan(xf) & np.isnan(yf)
            d = np.where(both_nan | (xf == yf), 0.0, np.abs(xf - yf))
            out = max(out, float(np.where(np.isnan(d), np.inf, d).max()))
        else:
            out = max(out, 0.0 if np.array_equal(x, y) else float("inf"))
    return out


def equal_to(ref_fn: Callable[[], Any], view: Callable[[Any], Any] = lambda r: r, tol: float = 0.0):
    """Check: ``view(result)`` equals ``view(ref_fn())`` within ``tol`` (0 = bit for bit)."""

    def check(out):
        d = max_diff(view(out), view(ref_fn()))
        return d <= tol, f"max abs diff {d:.3g} (tol {tol:g})"

    return check


def same_pair(view: Callable[[Any], Any] = lambda r: r):
    def check(pair):
        d = max_diff(view(pair[0]), view(pair[1]))
        return d == 0.0, f"max abs diff between the two runs {d:.3g}"

    return check


def record_nan(family: str, err: float) -> None:
    NAN_ERR[family] = max(NAN_ERR.get(family, 0.0), float(err))


def nan_check(family: str, ref_fn: Callable[[], Any], view: Callable[[Any], Any] = lambda r: r, tol: float = 0.0):
    """Check for NaN-as-missing: the result equals the masked/exact answer; the error is recorded per family."""

    def check(out):
        d = max_diff(view(out), view(ref_fn()))
        record_nan(family, d)
        return d <= tol, f"max abs err vs masked/exact {d:.3g} (tol {tol:g})"

    return check


def finite_check(view: Callable[[Any], Any] = lambda r: r):
    def check(out):
        ok = all(np.isfinite(a).all() for a in _leaves(view(out)) if a.dtype.kind in "fc")
        return ok, "finite" if ok else "non-finite values"

    return check


# --------------------------------------------------------------------------------------------- fixtures
def _chain(rng, T, S, stay=0.85):
    """A sticky Markov chain of states (NumPy: fixtures compile nothing)."""
    z = np.zeros(T, int)
    z[0] = rng.integers(S)
    for t in range(1, T):
        z[t] = z[t - 1] if rng.random() < stay else rng.integers(S)
    return z


def _lg_data(p, T, seed):
    """One path of an LG-SSM drawn with NumPy from its params."""
    rng = np.random.default_rng(seed)
    P = {k: np.asarray(v, np.float64) for k, v in p._asdict().items()}
    x = rng.multivariate_normal(P["initial_mean"], P["initial_cov"])
    ys = []
    for t in range(T):
        if t:
            x = P["dynamics_weights"] @ x + P["dynamics_bias"] + rng.multivariate_normal(0 * x, P["dynamics_cov"])
        mean = P["emission_weights"] @ x + P["emission_bias"]
        ys.append(rng.multivariate_normal(mean, P["emission_cov"]))
    return np.stack(ys)


@functools.cache
def lg():
    """LinearGaussianSSM(2, 2), T = 12."""
    m = pm.LinearGaussianSSM(2, 2)
    p = m.random_params(K(0))
    return m, p, _lg_data(p, 12, 1)


@functools.cache
def slg():
    """The scalar LG model for particle methods (emission_shape (1,)), T = 10."""
    from pssm.models.testing import ScalarLinearGaussian

    p = pm.LinearGaussianSSM(1, 1).make_params(
        dynamics_weights=[[0.8]], dynamics_cov=[[0.5]], emission_weights=[[1.0]], emission_cov=[[0.4]]
    )
    return ScalarLinearGaussian(), p, _lg_data(p, 10, 2)


@functools.cache
def sv():
    m = pm.StochasticVolatility()
    p = m.make_params(mu=-1.0, phi=0.9, sigma=0.4)
    rng = np.random.default_rng(3)
    x = np.zeros(10)
    x[0] = -1.0 + 0.4 / np.sqrt(1 - 0.81) * rng.normal()
    for t in range(1, 10):
        x[t] = -1.0 + 0.9 * (x[t - 1] + 1.0) + 0.4 * rng.normal()
    return m, p, np.exp(x / 2) * rng.normal(size=10)


def _hmm_params(S, emissions):
    return pm.HMMParams(pm.InitialParams(jnp.ones(S) / S), pm.TransitionParams(pm.sticky_matrix(S, 0.85)), emissions)


@functools.cache
def hmm_pois():
    """2-state Poisson HMM on 3 counts, T = 10 (1024 paths: brute-force enumeration is the exact reference)."""
    from helpers.problems import POISSON_RATES, poisson_hmm

    m, p = poisson_hmm()
    rates = np.array(POISSON_RATES)
    rng = np.random.default_rng(4)
    return m, p, rng.poisson(rates[_chain(rng, 10, 2)]).astype(np.float64)


@functools.cache
def hmm_gauss():
    m = pm.HMM(2, pm.GaussianEmissions(2))
    means = np.array([[0.0, 0.0], [2.0, -1.0]])
    p = _hmm_params(2, pm.GaussianParams(jnp.asarray(means), jnp.stack([jnp.eye(2)] * 2)))
    rng = np.random.default_rng(5)
    return m, p, means[_chain(rng, 10, 2)] + rng.normal(size=(10, 2))


@functools.cache
def hmm_cat():
    m = pm.HMM(2, pm.CategoricalEmissions(2, 3))
    probs = np.array([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], [[0.2, 0.2, 0.6], [0.5, 0.4, 0.1]]])
    p = _hmm_params(2, pm.CategoricalParams(jnp.asarray(probs)))
    rng = np.random.default_rng(6)
    z = _chain(rng, 10, 2)
    return m, p, np.array([[rng.choice(3, p=probs[s, d]) for d in range(2)] for s in z])


@functools.cache
def glm():
    truth = pm.synthetic_hmm_glm(K(7), num_states=2, num_neurons=3)
    _, spikes = pm.simulate_hmm_glm(K(8), truth.model, truth.params, 20)
    return truth.model, truth.params, np.asarray(spikes, np.float64)


@functools.cache
def dmm():
    m = pm.DeepMarkovModel(2, 3, "bernoulli", emitter_hidden=4, transition_hidden=4)
    enc = pm.Encoder(2, 3, hidden=5)
    rng = np.random.default_rng(0)
    seqs = [(rng.random((n, 3)) < 0.4).astype(np.float64) for n in (5, 7, 6, 8, 5, 6)]
    return m, m.init_params(K(9)), enc, enc.init_params(K(10)), seqs


def masked_sequences(y: np.ndarray, rows, kind: str, fill: float) -> Sequences:
    """A hand-built one-sequence :class:`Sequences` with ``mask=False`` at ``rows`` and ``fill`` stored there."""
    y = np.array(y, dtype=np.float64 if kind == "real" else np.int64)
    mask = np.ones(y.shape[0], bool)
    mask[list(rows)] = False
    y[list(rows)] = fill
    dtype = jnp.result_type(float) if kind == "real" else jnp.result_type(int)
    return Sequences(jnp.asarray(y, dtype)[None], jnp.asarray(mask)[None], jnp.asarray([y.shape[0]]), None, kind)


def with_nan(y, rows=(3,)) -> np.ndarray:
    y = np.array(y, np.float64)
    y[list(rows)] = np.nan
    return y


def bad_variants(y: np.ndarray) -> dict[str, Any]:
    """Standard malformed versions of one sequence ``(T, D)``."""
    y = np.asarray(y)
    inf_y = np.array(y, np.float64)
    inf_y[2, 0] = np.inf
    ninf_y = np.array(y, np.float64)
    ninf_y[1, -1] = -np.inf
    return {
        "extra column (wrong emission dim)": np.concatenate([y, y[:, :1]], axis=1),
        "emission dim dropped (T, D-1)": y[:, :-1] if y.shape[1] > 1 else y[:, :0],
        "3-D (T, D, 1)": y[..., None],
        "empty sequence T=0": y[:0],
        "scalar emissions": np.float64(1.0),
        "None emissions": None,
        "object dtype": y.astype(object),
        "string dtype": y.astype(str),
        "+inf value": inf_y,
        "-inf value": ninf_y,
    }


# --------------------------------------------------------------------------------------------- pssm.data
def data_cases() -> None:
    e = "Sequences.from_arrays"
    y = np.arange(12.0).reshape(6, 2)
    fa = Sequences.from_arrays
    case(e, "empty list", lambda: fa([]), raises("emissions", "empty"), True)
    case(e, "1-D array", lambda: fa(np.arange(5.0)), raises("emissions"), True)
    case(e, "B = 0", lambda: fa(np.zeros((0, 3, 2))), raises("emissions", "sequences"), True)
    case(e, "T = 0 in a batch", lambda: fa(np.zeros((2, 0, 2))), raises("emissions", "empty"), True)
    case(e, "empty sequence in a list", lambda: fa([y, y[:0]]), raises("emissions[1]"), True)
    case(e, "ragged trailing shapes", lambda: fa([y, np.zeros((3, 3))]), raises("emissions[1]"), True)
    case(e, "lengths = 0", lambda: fa(np.stack([y, y]), lengths=[0, 6]), raises("lengths"), True)
    case(e, "lengths > T", lambda: fa(np.stack([y, y]), lengths=[7, 6]), raises("lengths"), True)
    case(e, "lengths negative", lambda: fa(np.stack([y, y]), lengths=[-1, 6]), raises("lengths"), True)
    case(e, "lengths wrong shape", lambda: fa(np.stack([y, y]), lengths=[3]), raises("lengths"), True)
    case(e, "lengths float", lambda: fa(np.stack([y, y]), lengths=[3.5, 6.0]), raises("lengths"), True)
    case(e, "lengths with a list", lambda: fa([y, y], lengths=[3, 6]), raises("lengths"), True)
    case(e, "+inf", lambda: fa([np.where(y == 3, np.inf, y)]), raises("emissions", "infinite"), True)
    case(e, "object dtype", lambda: fa([y.astype(object)]), raises("emissions"), True)
    case(e, "string dtype", lambda: fa([y.astype(str)]), raises("emissions"), True)
    case(e, "unknown kind", lambda: fa([y], kind="bogus"), raises("kind"), True)
    case(e, "counts negative", lambda: fa([-y], kind="counts"), raises("emissions", "negative"), True)
    case(e, "counts non-integer", lambda: fa([y + 0.5], kind="counts"), raises("emissions", "integer"), True)
    case(e, "binary value 2", lambda: fa([np.full((3, 2), 2.0)], kind="binary"), raises("emissions", "binary"), True)
    case(e, "categorical without num_classes", lambda: fa([y], kind="categorical"), raises("num_classes"), True)
    case(
        e,
        "categorical label >= num_classes",
        lambda: fa([y], kind="categorical", num_classes=3),
        raises("emissions", "class"),
        True,
    )
    case(e, "inputs list of wrong length", lambda: fa([y, y], [np.zeros((6, 1))]), raises("inputs"), True)
    case(e, "inputs wrong T", lambda: fa([y], [np.zeros((5, 1))]), raises("inputs"), True)
    case(e, "inputs with NaN", lambda: fa([y], [np.full((6, 1), np.nan)]), raises("inputs", "NaN"), True)
    case(e, "batch inputs wrong (B, T)", lambda: fa(np.stack([y, y]), np.zeros((2, 5, 1))), raises("inputs"), True)
    case(e, "jax tracer inside jit", lambda: jax.jit(lambda a: fa(a).emissions)(y[None]), raises("jit"), True)

    def nan_masked(s):
        ok = (not bool(s.mask[0, 2])) and bool(s.mask[0, 1]) and float(s.emissions[0, 2].sum()) == 0.0
        return ok, "NaN row -> mask False, stored 0"

    case(e, "NaN row = missing", lambda: fa([with_nan(y, (2,))]), handles(nan_masked), True)
    case(
        e,
        "NaN count row = missing (kind=counts)",
        lambda: fa([with_nan(y, (2,))], kind="counts"),
        handles(nan_masked),
        True,
    )

    def same_as_array(s):
        r = fa(np.stack([y, y]))
        return max_diff((s.emissions, s.mask, s.lengths), (r.emissions, r.mask, r.lengths)) == 0, "list == batch"

    case(e, "list of arrays == padded batch", lambda: fa([y, y]), handles(same_as_array), True)
    case(
        e,
        "nested Python lists",
        lambda: fa([y.tolist(), y.tolist()]),
        handles(same_as_array),
        True,
    )
    case(
        e,
        "int array (kind=real) -> float",
        lambda: fa([y.astype(int), y.astype(int)]),
        handles(lambda s: (same_as_array(s)[0] and s.emissions.dtype.kind == "f", str(s.emissions.dtype))),
        True,
    )
    case(
        e,
        "bool array (kind=binary)",
        lambda: fa([y > 5], kind="binary"),
        handles(lambda s: (bool(np.array_equal(np.asarray(s.emissions[0]), (y > 5).astype(int))), "bool -> 0/1")),
        True,
    )

    def ragged_ok(s):
        want = [6, 3]
        ok = list(np.asarray(s.lengths)) == want and not bool(s.mask[1, 3:].any()) and bool(s.mask[1, :3].all())
        return ok, f"lengths {list(np.asarray(s.lengths))}"

    case(e, "ragged list lengths and padding mask", lambda: fa([y, y[:3]]), handles(ragged_ok), True)
    case(
        e,
        "dtype=float32 kept",
        lambda: fa([y], dtype=jnp.float32),
        handles(lambda s: (s.emissions.dtype == jnp.float32, str(s.emissions.dtype))),
        True,
    )

    e = "Sequences.from_dataframe"
    import pandas as pd

    df = pd.DataFrame({"a": np.arange(6.0), "b": np.arange(6.0) * 2, "g": [0, 0, 0, 1, 1, 1]})
    case(e, "not a DataFrame", lambda: Sequences.from_dataframe({"a": [1]}, "a"), raises("df", "DataFrame"), True)
    case(e, "missing column", lambda: Sequences.from_dataframe(df, ["a", "zz"]), raises("zz", "column"), True)
    case(e, "empty DataFrame", lambda: Sequences.from_dataframe(df.iloc[:0], "a"), raises("df", "empty"), True)

    def df_ok(out):
        s, labels = out
        r = fa([df[["a", "b"]].to_numpy()[:3], df[["a", "b"]].to_numpy()[3:]])
        return max_diff(s.emissions, r.emissions) == 0 and list(labels) == [0, 1], "grouped == from_arrays"

    case(e, "group column", lambda: Sequences.from_dataframe(df, ["a", "b"], group="g"), handles(df_ok), True)

    e = "Sequences.unpad/subset"
    s2 = functools.cache(lambda: fa([y, y[:3]]))
    case(e, "unpad(5) out of range", lambda: s2().unpad(5), raises("i", also=(IndexError,)), True)
    case(e, "unpad('0')", lambda: s2().unpad("0"), raises("i", also=(IndexError,)), True)
    case(e, "subset([])", lambda: s2().subset([]), raises("indices"), True)
    case(e, "subset([7])", lambda: s2().subset([7]), raises("indices", also=(IndexError,)), True)
    case(e, "subset(bool of wrong shape)", lambda: s2().subset([True]), raises("indices", "boolean"), True)
    case(
        e,
        "subset([1]) re-pads to its own length",
        lambda: s2().subset([1]),
        handles(lambda s: (s.max_length == 3 and s.num_sequences == 1, f"T_max {s.max_length}")),
        True,
    )

    e = "pssm.bin_spikes"
    bs = pssm.bin_spikes
    spikes = {"a": np.array([0.05, 0.12, 0.31, 0.95]), "b": np.array([0.5, 0.51, 1.0])}
    case(e, "bin_size = 0", lambda: bs(spikes, 0.0), raises("bin_size"), True)
    case(e, "bin_size < 0", lambda: bs(spikes, -0.1), raises("bin_size"), True)
    case(e, "bin_size NaN", lambda: bs(spikes, np.nan), raises("bin_size"), True)
    case(e, "bin_size inf", lambda: bs(spikes, np.inf), raises("bin_size"), True)
    case(e, "bin_size string", lambda: bs(spikes, "0.1"), raises("bin_size"), True)
    case(e, "t_stop < t_start", lambda: bs(spikes, 0.1, 1.0, 0.5), raises("t_stop"), True)
    case(e, "window shorter than one bin", lambda: bs(spikes, 0.1, 0.0, 0.05), raises("bin"), True)
    case(e, "times as strings", lambda: bs({"a": np.array(["0.1", "0.2"])}, 0.1), raises("spikes"), True)
    case(e, "2-D times", lambda: bs({"a": np.zeros((2, 2))}, 0.1), raises("spikes"), True)
    case(e, "NaN spike time", lambda: bs({"a": np.array([0.1, np.nan])}, 0.1), raises("spikes", "NaN"), True)
    case(e, "inf spike time", lambda: bs({"a": np.array([0.1, np.inf])}, 0.1), raises("spikes", "infinite"), True)
    case(e, "units not keys", lambda: bs(spikes, 0.1, units=["z"]), raises("units"), True)
    case(e, "list with bad units index", lambda: bs([spikes["a"]], 0.1, units=[3]), raises("units"), True)
    case(e, "duplicate units", lambda: bs(spikes, 0.1, units=["a", "a"]), raises("units", "duplicate"), True)
    case(e, "spikes as an int", lambda: bs(5, 0.1), raises("spikes"), True)
    case(e, "no units", lambda: bs({}, 0.1), raises("spikes", "units"), True)
    case(e, "no spikes and no window", lambda: bs({"a": np.zeros(0)}, 0.1), raises("t_start"), True)
    case(
        e,
        "DataFrame without 'time'",
        lambda: bs(pd.DataFrame({"unit": [1]}), 0.1),
        raises("time", "columns"),
        True,
    )

    def hist_ok(b):
        want = np.stack([np.histogram(spikes[u], b.bin_edges)[0] for u in ("a", "b")], axis=1)
        return np.array_equal(b.counts, want), f"counts {b.counts.sum()} vs histogram {want.sum()}"

    case(e, "dict, default window == np.histogram", lambda: bs(spikes, 0.1), handles(hist_ok), True)
    case(
        e,
        "unsorted times == np.histogram",
        lambda: bs({k: v[::-1] for k, v in spikes.items()}, 0.1),
        handles(hist_ok),
        True,
    )
    case(
        e,
        "integer times",
        lambda: bs({"a": np.array([0, 1, 1, 3])}, 1.0),
        handles(lambda b: (list(b.counts[:, 0]) == [1, 2, 0, 1], str(b.counts[:, 0].tolist()))),
        True,
    )
    case(
        e,
        "list == dict == DataFrame",
        lambda: (
            bs(list(spikes.values()), 0.1),
            bs(
                pd.DataFrame({"unit": ["a"] * 4 + ["b"] * 3, "time": np.concatenate([spikes["a"], spikes["b"]])}),
                0.1,
            ),
        ),
        handles(
            lambda r: (
                np.array_equal(r[0].counts, bs(spikes, 0.1).counts)
                and np.array_equal(r[1].counts, bs(spikes, 0.1).counts),
                "",
            )
        ),
        True,
    )

    edges = np.linspace(0.0, 1.0, 11)
    for name, fn in (
        ("pssm.intervals_to_mask", pssm.intervals_to_mask),
        ("pssm.intervals_to_labels", pssm.intervals_to_labels),
    ):
        case(name, "decreasing bin_edges", lambda fn=fn: fn(edges[::-1], [0.1], [0.5]), raises("bin_edges"), True)
        case(name, "single edge", lambda fn=fn: fn(edges[:1], [0.1], [0.5]), raises("bin_edges"), True)
        case(name, "stops < starts", lambda fn=fn: fn(edges, [0.5], [0.1]), raises("stops"), True)
        case(name, "length mismatch", lambda fn=fn: fn(edges, [0.1, 0.2], [0.5]), raises("starts", "stops"), True)
        case(name, "2-D starts", lambda fn=fn: fn(edges, [[0.1]], [0.5]), raises("starts"), True)
        case(name, "NaN start", lambda fn=fn: fn(edges, [np.nan], [0.5]), raises("starts", "NaN"), True)
        case(name, "string starts", lambda fn=fn: fn(edges, ["a"], [0.5]), raises("starts"), True)

        def brute(out, fn=fn, edges=edges):
            c = 0.5 * (edges[:-1] + edges[1:])
            inside = [(c >= 0.1) & (c < 0.45), (c >= 0.6) & (c < 0.8)]
            if fn is pssm.intervals_to_mask:
                want = inside[0] | inside[1]
            else:
                want = np.where(inside[1], 1, np.where(inside[0], 0, -1))
            return np.array_equal(out, want), f"{np.asarray(out).tolist()}"

        case(
            name, "two intervals == brute force", lambda fn=fn: fn(edges, [0.1, 0.6], [0.45, 0.8]), handles(brute), True
        )

    e = "pssm.train_test_split_blocks"
    ts = pssm.train_test_split_blocks
    yy = np.arange(20.0).reshape(10, 2)
    case(e, "test block out of range", lambda: ts(yy, [5], num_blocks=5), raises("test_blocks"), True)
    case(e, "neither num_blocks nor block_length", lambda: ts(yy, [0]), raises("num_blocks", "block_length"), True)
    case(e, "num_blocks > T", lambda: ts(yy, [0], num_blocks=11), raises("num_blocks"), True)
    case(e, "all blocks held out", lambda: ts(yy, [0, 1], num_blocks=2), raises("test_blocks", "train"), True)

    def split_ok(sp):
        tr = np.concatenate(
            [np.asarray(a)[np.asarray(m)] for a, m in zip(sp.train.emissions, sp.train.mask, strict=True)]
        )
        te = np.concatenate(
            [np.asarray(a)[np.asarray(m)] for a, m in zip(sp.test.emissions, sp.test.mask, strict=True)]
        )
        return np.array_equal(np.sort(np.concatenate([tr, te]).ravel()), yy.ravel()), "train + test = data"

    case(e, "block 1 of 5 held out", lambda: ts(yy, [1], num_blocks=5), handles(split_ok), True)
    e = "pssm.split_by_group"
    case(e, "unknown test group", lambda: pssm.split_by_group(s2(), [0, 1], [7]), raises("test_groups"), True)
    case(e, "groups of wrong length", lambda: pssm.split_by_group(s2(), [0], [0]), raises("groups"), True)


# --------------------------------------------------------------------------------------------- NWB
def _write_nwb(path, *, units=True, index=(2, 2, 5), ts_mismatch=False):
    import h5py

    with h5py.File(path, "w") as f:
        f["identifier"] = "bad-inputs"
        if units:
            g = f.create_group("units")
            g.attrs["colnames"] = np.array(["spike_times"], dtype=object)
            g["id"] = np.array([1, 2, 3])
            g["spike_times"] = np.array([0.7, 0.2, 2.5, 1.5, 0.5])
            g["spike_times_index"] = np.array(index, dtype=np.uint32)
        iv = f.create_group("intervals/epochs")
        iv.attrs["colnames"] = np.array(["start_time", "stop_time"], dtype=object)
        iv["id"] = np.array([0, 1])
        iv["start_time"] = np.array([0.0, 1.0])
        iv["stop_time"] = np.array([1.0, 3.0])
        ts = f.create_group("acquisition/sensor")
        ts["data"] = np.arange(5.0)
        ts["timestamps"] = np.arange(4.0 if ts_mismatch else 5.0) * 0.25


def nwb_cases() -> None:
    e = "pssm.read_nwb"
    good, nounits, bad1, bad2, tsbad = (TMP / f"{n}.nwb" for n in ("good", "nounits", "bad1", "bad2", "tsbad"))
    _write_nwb(good)
    _write_nwb(nounits, units=False)
    _write_nwb(bad1, index=(2, 1, 5))
    _write_nwb(bad2, index=(2, 2, 4))
    _write_nwb(tsbad, ts_mismatch=True)
    text = TMP / "text.nwb"
    text.write_text("not an hdf5 file")
    rd = pssm.read_nwb
    case(e, "missing file", lambda: rd(TMP / "absent.nwb"), raises("path", also=(FileNotFoundError,)), True)
    case(e, "text file", lambda: rd(text), raises("HDF5"), True)
    case(e, "no units group", lambda: rd(nounits), raises("units"), True)
    case(
        e,
        "no units, require_units=False",
        lambda: rd(nounits, require_units=False),
        handles(lambda r: (r.num_units == 0 and len(r.epochs) == 2, f"{r.num_units} units")),
        True,
    )
    case(e, "decreasing ragged index", lambda: rd(bad1), raises("spike_times", "index"), True)
    case(e, "index shorter than data", lambda: rd(bad2), raises("spike_times", "index"), True)
    case(e, "path is a directory", lambda: rd(TMP), raises("path", "HDF5", also=(FileNotFoundError,)), True)
    case(e, "path is None", lambda: rd(None), raises("path"), True)

    def good_ok(r):
        want = {1: [0.2, 0.7], 2: [], 3: [0.5, 1.5, 2.5]}
        ok = all(np.array_equal(r.spike_times[u], want[u]) for u in want) and r.units["n_spikes"].tolist() == [2, 0, 3]
        return ok, f"{ {u: r.spike_times[u].tolist() for u in r.spike_times} }"

    case(e, "small synthetic file: sorted ragged spike trains", lambda: rd(good), handles(good_ok), True)
    case(e, "interval('nope')", lambda: rd(good).interval("nope"), raises("nope", also=(KeyError,)), True)
    case(e, "timeseries('nope')", lambda: rd(good).timeseries("nope"), raises("nope", also=(KeyError,)), True)
    case(
        e, "timeseries with 5 samples, 4 timestamps", lambda: rd(tsbad).timeseries("sensor"), raises("timestamps"), True
    )
    case(
        e,
        "spike_table -> bin_spikes == np.histogram",
        lambda: pssm.bin_spikes(rd(good).spike_table(), 0.5, 0.0, 3.0, units=[1, 2, 3]),
        handles(
            lambda b: (
                b.counts.T.tolist() == [[1, 1, 0, 0, 0, 0], [0] * 6, [0, 1, 0, 1, 0, 1]],
                str(b.counts.T.tolist()),
            )
        ),
        True,
    )


# --------------------------------------------------------------------------------------------- Kalman
def _dense_lg(p, y, observed):
    """Exact log p(y_obs) and E[x | y_obs], Var[x_t | y_obs] by dense Gaussian conditioning on the observed rows
    (``observed`` (T,)) or entries (``observed`` (T, Dy))."""
    P = {k: np.asarray(v, np.float64) for k, v in p._asdict().items()}
    T, Dy = y.shape
    Dx = P["initial_mean"].shape[0]
    F, Q, H, R = P["dynamics_weights"], P["dynamics_cov"], P["emission_weights"], P["emission_cov"]
    mx = np.zeros((T, Dx))
    Pm = [P["initial_cov"]]
    mx[0] = P["initial_mean"]
    for t in range(1, T):
        mx[t] = F @ mx[t - 1] + P["dynamics_bias"]
        Pm.append(F @ Pm[-1] @ F.T + Q)
    C = np.zeros((T * Dx, T * Dx))
    for t in range(T):
        for s in range(t + 1):
            blk = np.linalg.matrix_power(F, t - s) @ Pm[s]
            C[t * Dx : (t + 1) * Dx, s * Dx : (s + 1) * Dx] = blk
            C[s * Dx : (s + 1) * Dx, t * Dx : (t + 1) * Dx] = blk.T
    Hb = np.kron(np.eye(T), H)
    my = Hb @ mx.ravel() + np.tile(P["emission_bias"], T)
    Sy = Hb @ C @ Hb.T + np.kron(np.eye(T), R)
    observed = np.asarray(observed, bool)
    entries = observed if observed.ndim == 2 else np.broadcast_to(observed[:, None], (T, Dy))
    rows = np.flatnonzero(entries.ravel())  # the observed entries (a row, or single coordinates)
    yv = np.nan_to_num(y).ravel()[rows]
    Srr = Sy[np.ix_(rows, rows)]
    Cxr = (C @ Hb.T)[:, rows]
    if rows.size:
        r = yv - my[rows]
        _, logdet = np.linalg.slogdet(Srr)
        ll = -0.5 * (r @ np.linalg.solve(Srr, r) + logdet + rows.size * np.log(2 * np.pi))
        G = np.linalg.solve(Srr, Cxr.T).T
        mean = mx.ravel() + G @ r
        cov = C - G @ Cxr.T
    else:
        ll, mean, cov = 0.0, mx.ravel(), C
    var = np.stack([np.diag(cov[t * Dx : (t + 1) * Dx, t * Dx : (t + 1) * Dx]) for t in range(T)])
    return ll, mean.reshape(T, Dx), var


def _kal_view(r):
    if isinstance(r, inf.KalmanSmootherResult):
        return (r.log_likelihood, r.smoothed_means, jnp.diagonal(r.smoothed_covs, axis1=-2, axis2=-1))
    return r.log_likelihood if hasattr(r, "log_likelihood") else r


ONE_ENTRY = (np.arange(12)[:, None] == 3) & (np.arange(2) == 0)  # step 3, coordinate 0


def kalman_cases() -> None:
    m, p, y = lg()
    entries = {
        "kalman_filter": lambda yy, **kw: inf.kalman_filter(p, yy, **kw),
        "kalman_smoother": lambda yy, **kw: inf.kalman_smoother(p, yy, **kw),
        "kalman_log_likelihood": lambda yy, **kw: inf.kalman_log_likelihood(p, yy, **kw),
        "kalman_smoother(parallel)": lambda yy, **kw: inf.kalman_smoother(p, yy, parallel=True, **kw),
        "kalman_log_likelihood(parallel)": lambda yy, **kw: inf.kalman_log_likelihood(p, yy, parallel=True, **kw),
    }
    rows = (3, 7)
    obs = np.ones(12, bool)
    obs[list(rows)] = False
    dense = functools.cache(lambda: _dense_lg(p, y, obs))
    dense_all_nan = functools.cache(lambda: _dense_lg(p, y, np.zeros(12, bool)))
    import pandas as pd

    for e, call in entries.items():
        quick = "parallel" not in e
        for desc, bad in bad_variants(y).items():
            case(e, desc, lambda call=call, bad=bad: call(bad), raises("emissions"), quick)
        case(e, "mask of wrong length", lambda call=call: call(y, mask=np.ones(5, bool)), raises("mask"), quick)
        case(
            e,
            "inputs given to a model without inputs",
            lambda call=call: call(y, inputs=np.ones((12, 1))),
            raises("inputs"),
            quick,
        )
        ref = functools.cache(lambda call=call: call(jnp.asarray(y)))
        case(e, "NumPy input == jnp", lambda call=call: call(y), handles(equal_to(ref, _kal_view)), quick)
        case(
            e, "nested list input == jnp", lambda call=call: call(y.tolist()), handles(equal_to(ref, _kal_view)), quick
        )
        case(
            e,
            "pandas DataFrame == jnp",
            lambda call=call: call(pd.DataFrame(y)),
            handles(equal_to(ref, _kal_view), "emissions"),
            quick,
        )
        case(
            e,
            "float32 emissions promoted",
            lambda call=call: call(y.astype(np.float32)),
            handles(equal_to(ref, _kal_view, tol=1e-5)),
            False,
        )
        case(
            e,
            "int emissions converted",
            lambda call=call: call(np.round(y).astype(int)),
            handles(equal_to(lambda call=call: call(np.round(y)), _kal_view)),
            False,
        )
        case(
            e,
            "mask as 0/1 ints == bool mask",
            lambda call=call: call(y, mask=obs.astype(int)),
            handles(equal_to(lambda call=call: call(y, mask=obs), _kal_view)),
            False,
        )

        def vs_dense(r, family="kalman", full=dense):
            ll, mean, var = full()
            if isinstance(r, inf.KalmanSmootherResult):
                d = max(
                    abs(float(r.log_likelihood) - ll),
                    float(np.max(np.abs(np.asarray(r.smoothed_means) - mean))),
                    float(np.max(np.abs(np.diagonal(np.asarray(r.smoothed_covs), axis1=-2, axis2=-1) - var))),
                )
            else:
                d = abs(float(_kal_view(r)) - ll)
            record_nan(family, d)
            return d < 1e-8, f"max abs err vs dense conditioning {d:.3g}"

        case(
            e,
            "NaN rows = missing (vs dense conditioning)",
            lambda call=call: call(with_nan(y, rows)),
            handles(vs_dense),
            quick,
        )
        case(
            e,
            "NaN in one coordinate only -> the other coordinate observed",
            lambda call=call: call(np.where(ONE_ENTRY, np.nan, y)),
            handles(lambda r, call=call: vs_dense(r, full=lambda: _dense_lg(p, y, ~ONE_ENTRY))),
            False,
        )
        case(
            e,
            "all NaN (prior)",
            lambda call=call: call(np.full_like(y, np.nan)),
            handles(lambda r: vs_dense(r, full=dense_all_nan)),
            False,
        )
    # parameters the filter takes on trust
    bad_params = {
        "non-PD dynamics_cov": p._replace(dynamics_cov=-jnp.eye(2)),
        "negative emission_cov": p._replace(emission_cov=-0.5 * jnp.eye(2)),
        "asymmetric non-PD initial_cov": p._replace(initial_cov=jnp.array([[1.0, 3.0], [0.0, 1.0]])),
        "NaN in dynamics_weights": p._replace(dynamics_weights=p.dynamics_weights.at[0, 0].set(jnp.nan)),
        "inf in emission_bias": p._replace(emission_bias=p.emission_bias.at[0].set(jnp.inf)),
        "dynamics_weights 3x3 for a 2-D state": p._replace(dynamics_weights=jnp.eye(3)),
        "emission_weights (3, 2) for 2-D emissions": p._replace(emission_weights=jnp.ones((3, 2))),
        "initial_mean of length 3": p._replace(initial_mean=jnp.zeros(3)),
    }
    for desc, bp in bad_params.items():
        case(
            "kalman_filter",
            f"params: {desc}",
            lambda bp=bp: inf.kalman_filter(bp, y),
            raises("params", "cov", "weights", "mean", "bias"),
            True,
        )
        case(
            "kalman_smoother",
            f"params: {desc}",
            lambda bp=bp: inf.kalman_smoother(bp, y),
            raises("params", "cov", "weights", "mean", "bias"),
            False,
        )
    case("kalman_filter", "params is a dict", lambda: inf.kalman_filter(p._asdict(), y), raises("params"), True)
    case("kalman_filter", "params is None", lambda: inf.kalman_filter(None, y), raises("params"), True)
    case(
        "LinearGaussianSSM.make_params",
        "dynamics_weights (3, 3) for state_dim 2",
        lambda: m.make_params(
            dynamics_weights=jnp.eye(3),
            dynamics_cov=jnp.eye(2),
            emission_weights=jnp.ones((2, 2)),
            emission_cov=jnp.eye(2),
        ),
        raises("dynamics_weights"),
        True,
    )
    case(
        "LinearGaussianSSM.make_params",
        "non-PD dynamics_cov accepted?",
        lambda: m.make_params(
            dynamics_weights=jnp.eye(2),
            dynamics_cov=-jnp.eye(2),
            emission_weights=jnp.ones((2, 2)),
            emission_cov=jnp.eye(2),
        ),
        raises("dynamics_cov"),
        True,
    )
    case(
        "LinearGaussianSSM.make_params",
        "string dynamics_weights",
        lambda: m.make_params(
            dynamics_weights="eye", dynamics_cov=jnp.eye(2), emission_weights=jnp.ones((2, 2)), emission_cov=jnp.eye(2)
        ),
        raises("dynamics_weights"),
        True,
    )
    # posterior sampling: keys
    key_cases("kalman_posterior_sample", lambda k: inf.kalman_posterior_sample(k, p, y), quick=True)
    case(
        "kalman_posterior_sample",
        "NaN rows: same draw as mask=False with garbage",
        lambda: inf.kalman_posterior_sample(K(1), p, with_nan(y, rows)),
        handles(
            nan_check(
                "kalman_sample", lambda: inf.kalman_posterior_sample(K(1), p, np.where(obs[:, None], y, 1e3), mask=obs)
            )
        ),
        True,
    )


# --------------------------------------------------------------------------------------------- keys
def key_cases(
    entry: str, call: Callable[[Any], Any], *, quick: bool = False, typed: bool = True, view=lambda r: r
) -> None:
    """PRNG-key misuse: missing (None), an int, a batch, a float array, a wrong raw shape; determinism."""
    case(entry, "key=None", lambda: call(None), raises("key"), quick)
    case(entry, "key=0 (int)", lambda: call(0), raises("key"), quick)
    case(entry, "batch of 2 keys", lambda: call(jax.random.split(K(0), 2)), raises("key"), quick)
    case(entry, "float array as key", lambda: call(jnp.zeros(2)), raises("key"), quick)
    case(entry, "uint32 (3,) as key", lambda: call(jnp.zeros(3, jnp.uint32)), raises("key"), quick)
    case(entry, "same key twice -> same result", lambda: (call(K(11)), call(K(11))), handles(same_pair(view)), quick)
    if typed:
        case(
            entry,
            "typed key == raw key",
            lambda: (call(jax.random.key(11)), call(K(11))),
            handles(same_pair(view)),
            False,
        )


# --------------------------------------------------------------------------------------------- forward-backward
def fb_cases() -> None:
    from pssm.models.testing import enumerate_hmm

    m, p, y = hmm_pois()
    T, S = y.shape[0], 2
    li = np.asarray(m.log_initial(p))
    lt = np.asarray(m.log_transition_matrices(p, T))
    ll = np.asarray(m.log_likelihoods(p, jnp.asarray(y)))
    fns = {
        "hmm_filter": lambda a, b, c, n=None: inf.hmm_filter(a, b, c, n),
        "hmm_smoother": lambda a, b, c, n=None: inf.hmm_smoother(a, b, c, n),
        "hmm_smoother(parallel)": lambda a, b, c, n=None: inf.hmm_smoother(a, b, c, n, parallel=True),
        "hmm_viterbi": lambda a, b, c, n=None: inf.hmm_viterbi(a, b, c, n),
        "hmm_log_likelihood": lambda a, b, c, n=None: inf.hmm_log_likelihood(a, b, c, n),
        "hmm_log_likelihood(parallel)": lambda a, b, c, n=None: inf.hmm_log_likelihood(a, b, c, n, parallel=True),
    }
    enum = functools.cache(lambda: enumerate_hmm(li, lt, ll))

    def fb_view(r):
        if isinstance(r, inf.HMMPosterior):
            return (r.log_likelihood, r.smoothed_probs)
        if isinstance(r, inf.HMMFilterResult):
            return (r.log_likelihood, r.filtered_probs)
        return r

    for e, f in fns.items():
        q = "parallel" not in e
        case(e, "log_initial of wrong length", lambda f=f: f(li[:1], lt, ll), raises("log_initial"), q)
        case(e, "log_transitions (S+1, S+1)", lambda f=f: f(li, np.zeros((3, 3)), ll), raises("log_transitions"), q)
        case(
            e,
            "log_transitions (T, S, S) instead of T-1",
            lambda f=f: f(li, np.zeros((T, S, S)), ll),
            raises("log_transitions"),
            q,
        )
        case(e, "log_likelihoods 1-D", lambda f=f: f(li, lt, ll[:, 0]), raises("log_likelihoods"), q)
        case(e, "log_likelihoods 3-D", lambda f=f: f(li, lt, ll[None]), raises("log_likelihoods"), q)
        case(e, "length = 0", lambda f=f: f(li, lt, ll, 0), raises("length"), q)
        case(e, "length = T + 1", lambda f=f: f(li, lt, ll, T + 1), raises("length"), q)
        case(e, "length = -3", lambda f=f: f(li, lt, ll, -3), raises("length"), q)
        case(e, "length = 2.5", lambda f=f: f(li, lt, ll, 2.5), raises("length"), q)
        case(
            e,
            "transition rows not summing to 1",
            lambda f=f: f(li, lt + 1.0, ll),
            raises("log_transitions", "stochastic", "normalis"),
            q,
        )
        case(
            e,
            "+inf log-likelihood",
            lambda f=f: f(li, lt, np.where(np.arange(T)[:, None] == 2, np.inf, ll)),
            raises("log_likelihoods", "inf"),
            q,
        )
        case(
            e,
            "NaN log-likelihood",
            lambda f=f: f(li, lt, np.where(np.arange(T)[:, None] == 2, np.nan, ll)),
            raises("log_likelihoods", "NaN"),
            q,
        )
        case(e, "object-dtype log_likelihoods", lambda f=f: f(li, lt, ll.astype(object)), raises("log_likelihoods"), q)
        case(
            e,
            "NumPy == jnp",
            lambda f=f: f(li, lt, ll),
            handles(equal_to(lambda f=f: f(jnp.asarray(li), jnp.asarray(lt), jnp.asarray(ll)), fb_view)),
            q,
        )
        case(
            e,
            "lists == jnp",
            lambda f=f: f(li.tolist(), lt.tolist(), ll.tolist()),
            handles(equal_to(lambda f=f: f(li, lt, ll), fb_view)),
            q,
        )
        case(
            e,
            "length=6 == truncated arrays (ragged)",
            lambda f=f: f(li, lt, ll, 6),
            handles(
                lambda r, f=f: (
                    max_diff(_trunc(fb_view(r), 6), fb_view(f(li, lt, ll[:6]))) < 1e-10,
                    f"max diff {max_diff(_trunc(fb_view(r), 6), fb_view(f(li, lt, ll[:6]))):.3g}",
                )
            ),
            q,
        )

        def vs_enum(r, e=e):
            logZ, marg, _, best, _, _ = enum()
            if isinstance(r, inf.HMMPosterior):
                d = max(abs(float(r.log_likelihood) - logZ), float(np.max(np.abs(np.asarray(r.smoothed_probs) - marg))))
            elif isinstance(r, inf.HMMFilterResult):
                d = abs(float(r.log_likelihood) - logZ)
            elif np.asarray(r).dtype.kind in "iu":
                d = float(np.sum(np.asarray(r) != best))
            else:
                d = abs(float(r) - logZ)
            return d < 1e-9, f"max abs err vs enumeration {d:.3g}"

        case(e, "vs brute-force enumeration", lambda f=f: f(li, lt, ll), handles(vs_enum), q)
        impossible = np.where(np.arange(T)[:, None] == 2, -np.inf, ll)  # every state ruled out at step 2

        def flagged(r):
            if isinstance(r, inf.HMMPosterior | inf.HMMFilterResult):
                ok = int(r.impossible_step) == 2 and float(r.log_likelihood) == -np.inf
                return ok, f"impossible_step {int(r.impossible_step)}, log-likelihood {float(r.log_likelihood)}"
            return float(r) == -np.inf, f"log-likelihood {float(r)}"

        expect = raises("state path", "observation") if e == "hmm_viterbi" else handles(flagged)
        desc = "impossible observation (every state -inf at t=2)"
        case(e, desc, lambda f=f, bad=impossible: f(li, lt, bad), expect, q)
    key_cases("hmm_posterior_sample", lambda k: inf.hmm_posterior_sample(k, li, lt, ll), quick=True)
    case(
        "hmm_posterior_sample",
        "length = 0",
        lambda: inf.hmm_posterior_sample(K(0), li, lt, ll, 0),
        raises("length"),
        True,
    )
    case(
        "hmm_posterior_sample",
        "length = T + 4",
        lambda: inf.hmm_posterior_sample(K(0), li, lt, ll, T + 4),
        raises("length"),
        True,
    )
    case(
        "hmm_smoother",
        "return_pairwise with parallel=True",
        lambda: inf.hmm_smoother(li, lt, ll, return_pairwise=True, parallel=True),
        raises("return_pairwise", "parallel"),
        True,
    )

    def pairwise_ok(r):
        _, _, pair, _, _, _ = enum()
        d = float(np.max(np.abs(np.asarray(r.pairwise_probs) - pair)))
        return d < 1e-9, f"pairwise vs enumeration {d:.3g}"

    case(
        "hmm_smoother",
        "return_pairwise vs enumeration",
        lambda: inf.hmm_smoother(li, lt, ll, return_pairwise=True),
        handles(pairwise_ok),
        True,
    )


def _trunc(view, n):
    if isinstance(view, tuple):
        return (view[0], view[1][:n])
    arr = np.asarray(view)
    return arr[:n] if arr.ndim else arr


# --------------------------------------------------------------------------------------------- model-level discrete
def discrete_cases() -> None:
    from pssm.models.testing import enumerate_hmm

    m, p, y = hmm_pois()
    T = y.shape[0]
    rows = (2, 6)

    def masked_exact():
        ll = np.array(m.log_likelihoods(p, jnp.asarray(y)))
        ll[list(rows)] = 0.0
        logZ, marg, *_ = enumerate_hmm(np.asarray(m.log_initial(p)), np.asarray(m.log_transition_matrices(p, T)), ll)
        return logZ, marg

    masked_exact = functools.cache(masked_exact)
    import pandas as pd

    fns = {
        "smoother": lambda d, **kw: inf.smoother(m, p, d, **kw),
        "most_likely_states": lambda d, **kw: inf.most_likely_states(m, p, d, **kw),
        "marginal_log_likelihood": lambda d, **kw: inf.marginal_log_likelihood(m, p, d, **kw),
    }

    def view(r):
        return (r.log_likelihood, r.smoothed_probs) if isinstance(r, inf.HMMPosterior) else r

    for e, f in fns.items():
        for desc, bad in bad_variants(y).items():
            case(e, desc, lambda f=f, bad=bad: f(bad), raises("data"), True)
        case(e, "negative counts", lambda f=f: f(-y), raises("data", "negative"), True)
        case(e, "non-integer counts", lambda f=f: f(y + 0.5), raises("data", "integer"), True)
        case(
            e, "bool counts", lambda f=f: f(y > 2), handles(equal_to(lambda f=f: f((y > 2).astype(float)), view)), True
        )
        case(
            e,
            "int counts == float counts",
            lambda f=f: f(y.astype(int)),
            handles(equal_to(lambda f=f: f(y), view)),
            True,
        )
        case(
            e,
            "[y] (list of one) == batch of one",
            lambda f=f: f([y]),
            handles(equal_to(lambda f=f: f(y[None]), view)),
            True,
        )
        case(
            e,
            "batch of one, unbatched == single sequence",
            lambda f=f: _unb(f(y[None])),
            handles(equal_to(lambda f=f: f(y), view)),
            True,
        )
        case(
            e,
            "pandas DataFrame == array",
            lambda f=f: f(pd.DataFrame(y)),
            handles(equal_to(lambda f=f: f(y), view)),
            True,
        )
        case(
            e,
            "list of ragged sequences == each alone",
            lambda f=f: f([y, y[:6]]),
            handles(lambda r, f=f: _ragged_ok(r, f(y), f(y[:6]), view)),
            True,
        )
        case(e, "batch with lengths = 0", lambda f=f: f(np.stack([y, y]), lengths=[0, T]), raises("lengths"), True)
        case(e, "batch with lengths > T", lambda f=f: f(np.stack([y, y]), lengths=[T + 1, T]), raises("lengths"), True)
        case(e, "lengths given with one sequence", lambda f=f: f(y, lengths=[5]), raises("lengths"), True)
        case(
            e,
            "inputs given to a model without inputs",
            lambda f=f: f(y, inputs=np.zeros((T, 1))),
            raises("inputs"),
            True,
        )

        def nan_exact(r, e=e):
            logZ, marg = masked_exact()
            if e == "smoother":
                d = max(abs(float(r.log_likelihood) - logZ), float(np.max(np.abs(np.asarray(r.smoothed_probs) - marg))))
            elif e == "marginal_log_likelihood":
                d = abs(float(r) - logZ)
            else:
                return np.asarray(r).shape == (T,), "Viterbi path returned for all steps"
            record_nan("forward_backward", d)
            return d < 1e-9, f"max abs err vs enumeration with the rows masked {d:.3g}"

        case(e, "NaN rows = missing (vs enumeration)", lambda f=f: f(with_nan(y, rows)), handles(nan_exact), True)
        case(
            e,
            "NaN rows == hand-built mask with garbage counts",
            lambda f=f: f(with_nan(y, rows)),
            handles(
                nan_check(
                    "forward_backward", lambda f=f: f(masked_sequences(y, rows, "counts", 999)), lambda r: view(_unb(r))
                )
            ),
            True,
        )
    # params checks at the boundary
    S = 2
    bad = {
        "transition rows sum to 1.2": p._replace(transitions=pm.TransitionParams(pm.sticky_matrix(S, 0.85) * 1.2)),
        "negative transition entry": p._replace(transitions=pm.TransitionParams(jnp.array([[1.2, -0.2], [0.5, 0.5]]))),
        "negative Poisson rate": p._replace(emissions=pm.PoissonParams(-p.emissions.rates)),
        "NaN Poisson rate": p._replace(emissions=pm.PoissonParams(p.emissions.rates.at[0, 0].set(jnp.nan))),
        "3-state params for a 2-state model": _hmm_params(3, pm.PoissonParams(jnp.ones((3, 3)))),
        "rates for 4 emission dims": p._replace(emissions=pm.PoissonParams(jnp.ones((2, 4)))),
        "initial probs of length 3": p._replace(initial=pm.InitialParams(jnp.ones(3) / 3)),
        "initial probs sum to 2": p._replace(initial=pm.InitialParams(jnp.ones(2))),
        "params as a tuple": tuple(p),
        "Gaussian params for a Poisson model": p._replace(
            emissions=pm.GaussianParams(jnp.zeros((2, 3)), jnp.ones((2, 3)))
        ),
    }
    for desc, bp in bad.items():
        case("smoother", f"params: {desc}", lambda bp=bp: inf.smoother(m, bp, y), raises("params"), True)
    mg, pg, yg = hmm_gauss()
    gbad = {
        "non-PD covariance": pg._replace(emissions=pg.emissions._replace(covs=jnp.stack([jnp.eye(2), -jnp.eye(2)]))),
        "asymmetric covariance": pg._replace(
            emissions=pg.emissions._replace(covs=jnp.stack([jnp.eye(2), jnp.array([[1.0, 0.9], [0.0, 1.0]])]))
        ),
        "covs (S, D) for full covariance": pg._replace(emissions=pg.emissions._replace(covs=jnp.ones((2, 2, 1)))),
        "NaN mean": pg._replace(emissions=pg.emissions._replace(means=pg.emissions.means.at[0, 0].set(jnp.nan))),
    }
    for desc, bp in gbad.items():
        case("smoother[gaussian]", f"params: {desc}", lambda bp=bp: inf.smoother(mg, bp, yg), raises("params"), True)
    case(
        "smoother[gaussian]",
        "NaN rows == hand-built mask with garbage",
        lambda: inf.smoother(mg, pg, with_nan(yg, (1, 4))),
        handles(
            nan_check(
                "forward_backward",
                lambda: inf.smoother(mg, pg, masked_sequences(yg, (1, 4), "real", 1e6)),
                lambda r: (_unb(r).log_likelihood, _unb(r).smoothed_probs),
            )
        ),
        True,
    )
    mc, pc, yc = hmm_cat()
    case(
        "smoother[categorical]",
        "label 3 for 3 classes",
        lambda: inf.smoother(mc, pc, np.where(yc == 0, 3, yc)),
        raises("data", "class"),
        True,
    )
    case(
        "smoother[categorical]", "negative label", lambda: inf.smoother(mc, pc, -np.ones_like(yc)), raises("data"), True
    )
    case(
        "smoother[categorical]",
        "float labels 0.5",
        lambda: inf.smoother(mc, pc, yc + 0.5),
        raises("data", "integer"),
        True,
    )
    case(
        "smoother[categorical]",
        "probs rows not summing to 1",
        lambda: inf.smoother(mc, pc._replace(emissions=pm.CategoricalParams(pc.emissions.probs * 2)), yc),
        raises("params"),
        True,
    )
    case(
        "smoother[categorical]",
        "NaN rows == hand-built mask with garbage labels",
        lambda: inf.smoother(mc, pc, with_nan(yc, (0, 5))),
        handles(
            nan_check(
                "forward_backward",
                lambda: inf.smoother(mc, pc, masked_sequences(yc, (0, 5), "categorical", 2)),
                lambda r: (_unb(r).log_likelihood, _unb(r).smoothed_probs),
            )
        ),
        True,
    )
    ml, pl, yl = lg()
    case("smoother", "continuous-state model", lambda: inf.smoother(ml, pl, yl), raises("continuous", "model"), True)
    case(
        "pssm.discrete_log_potentials",
        "continuous-state model",
        lambda: pssm.discrete_log_potentials(ml, pl, yl),
        raises("discrete", "continuous", "model"),
        True,
    )
    case(
        "bits_per_spike",
        "all-zero counts",
        lambda: inf.bits_per_spike(m, p, np.zeros_like(y)),
        raises("spikes", "data"),
        True,
    )
    case("bits_per_spike", "negative counts", lambda: inf.bits_per_spike(m, p, -y), raises("data", "negative"), True)


def _unb(r):
    """One-sequence view of a batch-of-one result."""
    if isinstance(r, inf.HMMPosterior):
        return jax.tree.map(lambda a: a[0], r) if np.ndim(r.log_likelihood) == 1 else r
    a = np.asarray(r)
    return a[0] if a.ndim >= 1 and a.shape[0] == 1 else r


def _ragged_ok(r, a, b, view):
    if isinstance(r, inf.HMMPosterior):
        d = max(
            abs(float(r.log_likelihood[0]) - float(a.log_likelihood)),
            abs(float(r.log_likelihood[1]) - float(b.log_likelihood)),
            float(np.max(np.abs(np.asarray(r.smoothed_probs[1, :6]) - np.asarray(b.smoothed_probs)))),
        )
    else:
        r = np.asarray(r)
        if r.ndim == 1:  # log-likelihoods
            d = max(abs(r[0] - float(a)), abs(r[1] - float(b)))
        else:  # Viterbi paths, -1 at padding
            d = float(np.sum(r[0] != np.asarray(a)) + np.sum(r[1, :6] != np.asarray(b)) + np.sum(r[1, 6:] != -1))
    return d < 1e-9, f"max diff vs separate runs {d:.3g}"


# --------------------------------------------------------------------------------------------- EM
def em_cases() -> None:
    m, p, y = hmm_pois()
    rows = (2, 6)
    fe = functools.partial(inf.fit_em, num_iters=4)
    e = "fit_em"
    for desc, bad in bad_variants(y).items():
        case(e, desc, lambda bad=bad: fe(K(0), m, p, bad), raises("data"), True)
    case(e, "negative counts", lambda: fe(K(0), m, p, -y), raises("data", "negative"), True)
    case(e, "non-integer counts", lambda: fe(K(0), m, p, y + 0.25), raises("data", "integer"), True)
    case(e, "num_iters = 0", lambda: inf.fit_em(K(0), m, p, y, num_iters=0), raises("num_iters"), True)
    case(e, "num_iters = 2.5", lambda: inf.fit_em(K(0), m, p, y, num_iters=2.5), raises("num_iters"), True)
    case(e, "num_iters = True", lambda: inf.fit_em(K(0), m, p, y, num_iters=True), raises("num_iters"), True)
    case(
        e,
        "frozen unknown path",
        lambda: fe(K(0), m, p, y, frozen=["emissions.bogus"]),
        raises("bogus", "frozen", also=(KeyError,)),
        True,
    )
    case(e, "tol negative", lambda: fe(K(0), m, p, y, tol=-1.0), raises("tol"), True)
    case(e, "tol NaN", lambda: fe(K(0), m, p, y, tol=float("nan")), raises("tol"), True)
    case(e, "min_iters negative", lambda: fe(K(0), m, p, y, min_iters=-2), raises("min_iters"), True)
    case(
        e,
        "params with 3 states",
        lambda: fe(K(0), m, _hmm_params(3, pm.PoissonParams(jnp.ones((3, 3)))), y),
        raises("params"),
        True,
    )
    case(
        e,
        "zero rate with positive counts",
        lambda: fe(K(0), m, p._replace(emissions=pm.PoissonParams(p.emissions.rates.at[0].set(0.0))), y),
        raises("rate", "params", "impossible"),
        True,
    )
    case(e, "lengths out of [1, T]", lambda: fe(K(0), m, p, np.stack([y, y]), lengths=[0, 10]), raises("lengths"), True)
    case(e, "model is a continuous SSM", lambda: fe(K(0), lg()[0], lg()[1], lg()[2]), raises("model"), True)
    key_cases(e, lambda k: fe(k, m, p, y).params, quick=True)
    ref = functools.cache(lambda: fe(K(0), m, p, y))
    case(e, "[y] (list of one) == array", lambda: fe(K(0), m, p, [y]), handles(equal_to(ref, lambda r: r.params)), True)
    case(
        e,
        "int counts == float counts",
        lambda: fe(K(0), m, p, y.astype(np.int32)),
        handles(equal_to(ref, lambda r: r.params)),
        True,
    )
    case(
        e,
        "float32 params promoted",
        lambda: fe(K(0), m, jax.tree.map(lambda a: a.astype(jnp.float32), p), y),
        handles(equal_to(ref, lambda r: r.params, tol=1e-5)),
        True,
    )
    case(
        e,
        "NaN rows == hand-built mask with garbage counts",
        lambda: fe(K(0), m, p, with_nan(y, rows)),
        handles(
            nan_check(
                "em",
                lambda: fe(K(0), m, p, masked_sequences(y, rows, "counts", 999)),
                lambda r: (r.params, r.log_objective),
                tol=1e-10,
            )
        ),
        True,
    )
    e = "fit_em_restarts[HMM]"
    fr = functools.partial(inf.fit_em_restarts, num_restarts=2, num_iters=3)
    case(e, "num_restarts = 0", lambda: fr(K(0), m, y, num_restarts=0), raises("num_restarts"), True)
    case(e, "num_restarts = -1", lambda: fr(K(0), m, y, num_restarts=-1), raises("num_restarts"), True)
    case(e, "wrong emission dim", lambda: fr(K(0), m, y[:, :2]), raises("data"), True)
    case(e, "negative counts", lambda: fr(K(0), m, -y), raises("data"), True)
    case(e, "unknown option", lambda: fr(K(0), m, y, bogus_option=1), raises("bogus_option"), True)
    case(e, "key=None", lambda: fr(None, m, y), raises("key"), True)
    case(e, "same key twice", lambda: (fr(K(1), m, y)[0].params, fr(K(1), m, y)[0].params), handles(same_pair()), False)
    case(
        e,
        "NaN rows == hand-built mask with garbage",
        lambda: fr(K(0), m, with_nan(y, rows))[0],
        handles(
            nan_check(
                "em", lambda: fr(K(0), m, masked_sequences(y, rows, "counts", 999))[0], lambda r: r.params, tol=1e-10
            )
        ),
        False,
    )
    e = "fit_em_restarts[HMM-GLM]"
    case(e, "wrong neuron count", lambda: fr(K(0), glm()[0], glm()[2][:, :2]), raises("data"), True)
    case(e, "negative spikes", lambda: fr(K(0), glm()[0], -glm()[2]), raises("data", "negative"), True)
    case(e, "non-integer spikes", lambda: fr(K(0), glm()[0], glm()[2] + 0.5), raises("data", "integer"), True)
    case(
        e,
        "+inf spike count",
        lambda: fr(K(0), glm()[0], np.where(glm()[2] == glm()[2].max(), np.inf, glm()[2])),
        raises("data", "inf"),
        True,
    )
    case(e, "string spikes", lambda: fr(K(0), glm()[0], glm()[2].astype(str)), raises("data"), True)
    case(
        e,
        "one time step",
        lambda: fr(K(0), glm()[0], glm()[2][:1]),
        handles(finite_check(lambda r: r[0].params)),
        False,
    )
    case(
        e,
        "NaN rows == hand-built mask with zeros stored",
        lambda: fr(K(0), glm()[0], with_nan(glm()[2], (4, 9)))[0],
        handles(
            nan_check(
                "em_glm",
                lambda: fr(K(0), glm()[0], masked_sequences(glm()[2], (4, 9), "counts", 0))[0],
                lambda r: r.params,
                tol=1e-10,
            )
        ),
        False,
    )
    case(
        e,
        "same key twice",
        lambda: (fr(K(1), glm()[0], glm()[2])[0].params, fr(K(1), glm()[0], glm()[2])[0].params),
        handles(same_pair()),
        False,
    )
    e = "HMMGLM.initialize"
    case(e, "wrong neuron count", lambda: glm()[0].initialize(K(0), glm()[2][:, :1]), raises("data"), True)
    case(e, "key=None", lambda: glm()[0].initialize(None, glm()[2]), raises("key"), True)
    e = "simulate_hmm_glm"
    case(
        e, "num_timesteps = 0", lambda: pm.simulate_hmm_glm(K(0), glm()[0], glm()[1], 0), raises("num_timesteps"), True
    )
    case(
        e,
        "covariates for a model without covariates",
        lambda: pm.simulate_hmm_glm(K(0), glm()[0], glm()[1], 5, np.zeros((5, 2))),
        raises("covariates"),
        True,
    )


# --------------------------------------------------------------------------------------------- SMC
def smc_cases() -> None:
    m, p, y = slg()
    T = y.shape[0]
    rows = (2, 5)
    obs = np.ones(T, bool)
    obs[list(rows)] = False
    garbage = np.where(obs[:, None], y, 50.0)
    pf = smc.particle_filter
    e = "particle_filter"
    for desc, bad in bad_variants(y).items():
        case(e, desc, lambda bad=bad: pf(K(0), m, p, bad, 16), raises("emissions"), True)
    case(e, "num_particles = 0", lambda: pf(K(0), m, p, y, 0), raises("num_particles"), True)
    case(e, "num_particles = 16.0", lambda: pf(K(0), m, p, y, 16.0), raises("num_particles"), True)
    case(
        e,
        "num_particles = np.int64(16)",
        lambda: pf(K(0), m, p, y, np.int64(16)),
        handles(equal_to(lambda: pf(K(0), m, p, y, 16), lambda r: r.log_likelihood), "num_particles"),
        True,
    )
    case(e, "ess_threshold = 2", lambda: pf(K(0), m, p, y, 16, ess_threshold=2.0), raises("ess_threshold"), True)
    case(
        e, "resampling='bogus'", lambda: pf(K(0), m, p, y, 16, resampling="bogus"), raises("resampling", "bogus"), True
    )
    case(e, "mask of wrong length", lambda: pf(K(0), m, p, y, 16, mask=np.ones(3, bool)), raises("mask"), True)
    case(e, "inputs with wrong T", lambda: pf(K(0), m, p, y, 16, inputs=np.zeros((3, 1))), raises("inputs"), True)
    case(e, "model is a string", lambda: pf(K(0), "lgssm", p, y, 16), raises("model", "SSM"), True)
    case(e, "params is None", lambda: pf(K(0), m, None, y, 16), raises("params"), True)
    case(
        e,
        "negative dynamics variance",
        lambda: pf(K(0), m, p._replace(dynamics_cov=-p.dynamics_cov), y, 16),
        raises("params", "cov"),
        True,
    )
    ms, ps, ys = sv()
    case(
        "particle_filter[SV]",
        "sigma < 0",
        lambda: pf(K(0), ms, ps._replace(sigma=-ps.sigma), ys, 16),
        raises("params", "sigma"),
        True,
    )
    case(
        "particle_filter[SV]",
        "phi NaN",
        lambda: pf(K(0), ms, ps._replace(phi=jnp.nan), ys, 16),
        raises("params", "phi"),
        True,
    )
    # an observation no particle can explain (its density underflows to 0 for all): the filter collapses
    yc = np.asarray(ys, np.float64).copy()
    yc[5] = 1e200
    # (bound now, as defaults: smc_cases reuses these names for other models further down)
    hist_c = functools.cache(lambda m=ms, p=ps, y=yc: pf(K(0), m, p, y, 16, history=True).history)
    collapsing = {
        "paris": lambda m=ms, p=ps, y=yc, **k: smc.paris(K(0), m, p, y, 16, lambda xp, x, t: x, **k),
        "particle_smoother": lambda m=ms, p=ps, y=yc, **k: smc.particle_smoother(K(0), m, p, y, 16, 4, **k),
        "ffbsi": lambda m=ms, p=ps, h=hist_c, **k: smc.ffbsi(K(1), m, p, h(), 4, **k),
        "marginal_smoother": lambda m=ms, p=ps, h=hist_c, **k: smc.marginal_smoother(m, p, h(), **k),
    }
    for e2, call in collapsing.items():
        case(e2, "collapsed filter (an impossible observation)", call, raises("collapsed"), True)
        case(
            e2,
            "collapsed filter with allow_collapsed=True",
            lambda call=call: call(allow_collapsed=True),
            handles(lambda r: (bool(getattr(r, "collapsed", True)), "returned (PaRIS flags collapsed=True)")),
            False,
        )
    case(
        "particle_filter[SV]",
        "collapsed filter is flagged",
        lambda m=ms, p=ps, y=yc: pf(K(0), m, p, y, 16, history=True),
        handles(lambda r: (bool(r.collapsed) and bool(r.history.collapsed[5]), f"collapsed={bool(r.collapsed)}")),
        True,
    )
    case(
        "particle_filter[SV]",
        "(T, 1) data for scalar emissions",
        lambda: pf(K(0), ms, ps, ys[:, None], 16),
        raises("emissions"),
        True,
    )
    case("StochasticVolatility.make_params", "sigma = -1", lambda: ms.make_params(sigma=-1.0), raises("sigma"), True)
    case("StochasticVolatility.make_params", "phi = 1.5", lambda: ms.make_params(phi=1.5), raises("phi"), True)
    key_cases(e, lambda k: pf(k, m, p, y, 16), quick=True, view=lambda r: r.log_likelihood)
    ref = functools.cache(lambda: pf(K(0), m, p, jnp.asarray(y), 16))
    case(e, "NumPy == jnp", lambda: pf(K(0), m, p, y, 16), handles(equal_to(ref, lambda r: r.log_likelihood)), True)
    case(
        e,
        "list == jnp",
        lambda: pf(K(0), m, p, y.tolist(), 16),
        handles(equal_to(ref, lambda r: r.log_likelihood)),
        True,
    )
    case(
        e,
        "(T,) data for emission_shape (1,)",
        lambda: pf(K(0), m, p, y[:, 0], 16),
        handles(equal_to(ref, lambda r: r.log_likelihood)),
        True,
    )
    case(
        e,
        "NaN rows == mask= with garbage (same key)",
        lambda: pf(K(0), m, p, with_nan(y, rows), 16),
        handles(
            nan_check(
                "particle_filter",
                lambda: pf(K(0), m, p, garbage, 16, mask=obs),
                lambda r: (r.log_likelihood, r.filtered),
            )
        ),
        True,
    )

    def pf_vs_kalman(rs):
        lls = np.array([float(r.log_likelihood) for r in rs])
        exact = float(inf.kalman_log_likelihood(p, with_nan(y, rows)))
        z = abs(lls.mean() - exact) / (lls.std(ddof=1) / np.sqrt(len(lls)) + 1e-12)
        NAN_ERR["particle_filter_vs_kalman_abs"] = float(abs(lls.mean() - exact))
        return z < 5, f"mean of 8 runs vs Kalman with rows masked: |z| = {z:.2f}"

    case(
        e,
        "NaN rows: log-likelihood vs Kalman (8 runs, |z| < 5)",
        lambda: [pf(k, m, p, with_nan(y, rows), 256) for k in jax.random.split(K(5), 8)],
        handles(pf_vs_kalman),
        False,
    )
    case(
        e,
        "all NaN: log-likelihood 0",
        lambda: pf(K(0), m, p, np.full_like(y, np.nan), 16),
        handles(lambda r: (float(r.log_likelihood) == 0.0, f"ll {float(r.log_likelihood)}")),
        True,
    )
    # PaRIS
    h = smc.AdditiveFunctional.from_fn(lambda xp, x, t: x, lambda x0: x0)
    e = "paris"
    case(e, "functional = 3", lambda: smc.paris(K(0), m, p, y, 16, 3), raises("functional"), True)
    case(e, "num_backward = 0", lambda: smc.paris(K(0), m, p, y, 16, h, num_backward=0), raises("num_backward"), True)
    case(
        e,
        "wrong emission dim",
        lambda: smc.paris(K(0), m, p, np.concatenate([y, y], 1), 16, h),
        raises("emissions"),
        True,
    )
    case(
        e,
        "inf emission",
        lambda: smc.paris(K(0), m, p, np.where(np.arange(T)[:, None] == 1, np.inf, y), 16, h),
        raises("emissions"),
        True,
    )
    case(e, "num_particles = 0", lambda: smc.paris(K(0), m, p, y, 0, h), raises("num_particles"), True)
    key_cases(e, lambda k: smc.paris(k, m, p, y, 16, h), quick=True, typed=False, view=lambda r: r.estimate)
    case(
        e,
        "NaN rows == mask= with garbage (same key)",
        lambda: smc.paris(K(0), m, p, with_nan(y, rows), 16, h),
        handles(
            nan_check(
                "paris",
                lambda: smc.paris(K(0), m, p, garbage, 16, h, mask=obs),
                lambda r: (r.estimate, r.log_likelihood),
            )
        ),
        True,
    )
    e = "paris_score"
    case(
        e,
        "NaN rows == mask= with garbage",
        lambda: smc.paris_score(K(0), m, p, with_nan(y, rows), 16),
        handles(nan_check("paris", lambda: smc.paris_score(K(0), m, p, garbage, 16, mask=obs), lambda r: r.estimate)),
        False,
    )
    # FFBSi / marginal smoother
    hist = functools.cache(lambda: pf(K(0), m, p, y, 16, history=True).history)
    e = "ffbsi"
    case(e, "history=None", lambda: smc.ffbsi(K(0), m, p, None, 4), raises("history"), True)
    case(
        e,
        "history is a filter result",
        lambda: smc.ffbsi(K(0), m, p, pf(K(0), m, p, y, 16), 4),
        raises("history"),
        True,
    )
    case(e, "num_trajectories = 0", lambda: smc.ffbsi(K(0), m, p, hist(), 0), raises("num_trajectories"), True)
    case(
        e,
        "inputs with wrong T",
        lambda: smc.ffbsi(K(0), m, p, hist(), 4, inputs=np.zeros((2, 1))),
        raises("inputs"),
        True,
    )
    key_cases(e, lambda k: smc.ffbsi(k, m, p, hist(), 4).trajectories, quick=True, typed=False)
    e = "marginal_smoother"
    case(e, "history=None", lambda: smc.marginal_smoother(m, p, None), raises("history"), True)
    case(e, "chunk_size = 0", lambda: smc.marginal_smoother(m, p, hist(), chunk_size=0), raises("chunk_size"), True)
    e = "particle_smoother"
    case(
        e,
        "num_trajectories = -1",
        lambda: smc.particle_smoother(K(0), m, p, y, 16, -1),
        raises("num_trajectories"),
        True,
    )
    case(
        e,
        "wrong emission dim",
        lambda: smc.particle_smoother(K(0), m, p, np.concatenate([y, y], 1), 16, 4),
        raises("emissions"),
        True,
    )
    case(
        e,
        "NaN rows == mask= with garbage",
        lambda: smc.particle_smoother(K(0), m, p, with_nan(y, rows), 16, 4),
        handles(
            nan_check(
                "ffbsi", lambda: smc.particle_smoother(K(0), m, p, garbage, 16, 4, mask=obs), lambda r: r.trajectories
            )
        ),
        True,
    )
    key_cases(
        e, lambda k: smc.particle_smoother(k, m, p, y, 16, 4), quick=False, typed=False, view=lambda r: r.trajectories
    )


# --------------------------------------------------------------------------------------------- particle MCMC
def pmcmc_cases() -> None:
    from pssm.models.testing import scalar_lg_conjugate_conditional

    m, p, y = slg()
    T = y.shape[0]
    rows = (2, 5)
    obs = np.ones(T, bool)
    obs[list(rows)] = False
    garbage = np.where(obs[:, None], y, 50.0)
    ref_path = functools.cache(lambda: inf.kalman_posterior_sample(K(0), p, y))
    cs = inf.conditional_smc
    e = "conditional_smc"
    case(e, "reference=None", lambda: cs(K(0), m, p, y, None, 8), raises("reference"), True)
    case(e, "reference of wrong length", lambda: cs(K(0), m, p, y, ref_path()[:4], 8), raises("reference"), True)
    case(e, "method='bogus'", lambda: cs(K(0), m, p, y, ref_path(), 8, method="bogus"), raises("method"), True)
    case(e, "num_particles = 1", lambda: cs(K(0), m, p, y, ref_path(), 1), raises("num_particles"), True)
    case(
        e,
        "backward= without method='backward'",
        lambda: cs(K(0), m, p, y, ref_path(), 8, backward=smc.ExactBackward()),
        raises("backward"),
        True,
    )
    case(
        e,
        "wrong emission dim",
        lambda: cs(K(0), m, p, np.concatenate([y, y], 1), ref_path(), 8),
        raises("emissions"),
        True,
    )
    case(
        e,
        "inf emission",
        lambda: cs(K(0), m, p, np.where(np.arange(T)[:, None] == 0, -np.inf, y), ref_path(), 8),
        raises("emissions"),
        True,
    )
    case(
        e,
        "NaN in the reference path",
        lambda: cs(K(0), m, p, y, ref_path().at[3].set(jnp.nan), 8),
        raises("reference"),
        True,
    )
    key_cases(e, lambda k: cs(k, m, p, y, ref_path(), 8).path, quick=True, typed=False)
    case(
        e,
        "NaN rows == mask= with garbage (same key)",
        lambda: cs(K(0), m, p, with_nan(y, rows), ref_path(), 8),
        handles(
            nan_check(
                "csmc", lambda: cs(K(0), m, p, garbage, ref_path(), 8, mask=obs), lambda r: (r.path, r.log_likelihood)
            )
        ),
        True,
    )

    def conditional(key, path, yy, pp):
        return scalar_lg_conjugate_conditional(key, path, yy, pp)

    pg = functools.partial(inf.particle_gibbs, num_samples=4, num_particles=8, num_chains=2, chunk_size=4)
    e = "particle_gibbs"
    case(e, "conditional=None", lambda: pg(K(0), m, p, y, conditional=None), raises("conditional"), True)
    case(
        e,
        "num_warmup = -1",
        lambda: pg(K(0), m, p, y, conditional=conditional, num_warmup=-1),
        raises("num_warmup"),
        True,
    )
    case(
        e,
        "num_chains = 0",
        lambda: pg(K(0), m, p, y, conditional=conditional, num_chains=0),
        raises("num_chains"),
        True,
    )
    case(e, "params=None without state", lambda: pg(K(0), m, None, y, conditional=conditional), raises("params"), True)
    case(
        e,
        "state of the wrong type",
        lambda: pg(K(0), m, p, y, conditional=conditional, state=(1, 2)),
        raises("state"),
        True,
    )
    case(
        e,
        "wrong emission dim",
        lambda: pg(K(0), m, p, np.concatenate([y, y], 1), conditional=conditional),
        raises("emissions"),
        True,
    )
    key_cases(e, lambda k: pg(k, m, p, y, conditional=conditional).paths, quick=False, typed=False)
    case(
        e,
        "NaN rows == mask= with garbage (same key)",
        lambda: pg(K(0), m, p, with_nan(y, rows), conditional=conditional),
        handles(
            nan_check(
                "particle_gibbs", lambda: pg(K(0), m, p, garbage, conditional=conditional, mask=obs), lambda r: r.paths
            )
        ),
        False,
    )
    h = smc.AdditiveFunctional.from_fn(lambda xp, x, t: x * xp, lambda x0: x0**2)
    ppg = functools.partial(
        inf.paris_particle_gibbs, functional=h, num_particles=8, num_iters=4, burn_in=1, chunk_size=4
    )
    e = "paris_particle_gibbs"
    case(e, "burn_in >= num_iters", lambda: ppg(K(0), m, p, y, burn_in=4), raises("burn_in"), True)
    case(e, "num_iters = 0", lambda: ppg(K(0), m, p, y, num_iters=0, burn_in=0), raises("num_iters"), True)
    case(e, "num_backward = 0", lambda: ppg(K(0), m, p, y, num_backward=0), raises("num_backward"), True)
    case(e, "state of the wrong type", lambda: ppg(K(0), m, p, y, state="x"), raises("state"), True)
    case(e, "functional = 'x'", lambda: ppg(K(0), m, p, y, functional="x"), raises("functional"), True)
    key_cases(e, lambda k: ppg(k, m, p, y).estimates, quick=False, typed=False)
    case(
        e,
        "NaN rows == mask= with garbage (same key)",
        lambda: ppg(K(0), m, p, with_nan(y, rows)),
        handles(nan_check("ppg", lambda: ppg(K(0), m, p, garbage, mask=obs), lambda r: r.estimates)),
        False,
    )
    ms, ps, ys = sv()
    pmmh = functools.partial(inf.pmmh, num_samples=6, num_warmup=4, num_chains=2, num_particles=16, chunk_size=10)
    e = "pmmh"
    case(e, "num_warmup = -1", lambda: pmmh(K(0), ms, ps, ys, num_warmup=-1), raises("num_warmup"), True)
    case(e, "num_samples = 0", lambda: pmmh(K(0), ms, ps, ys, num_samples=0), raises("num_samples"), True)
    case(
        e,
        "frozen unknown leaf",
        lambda: pmmh(K(0), ms, ps, ys, frozen=("bogus",)),
        raises("bogus", "frozen", also=(KeyError,)),
        True,
    )
    case(e, "everything frozen", lambda: pmmh(K(0), ms, ps, ys, frozen=("*",)), raises("prior", "sample"), True)
    case(
        e,
        "proposal_cov of wrong shape",
        lambda: pmmh(K(0), ms, ps, ys, proposal_cov=jnp.eye(5)),
        raises("proposal_cov"),
        True,
    )
    case(e, "init missing a site", lambda: pmmh(K(0), ms, ps, ys, init={"mu": 0.0}), raises("init"), True)
    case(e, "state of the wrong type", lambda: pmmh(K(0), ms, ps, ys, state=3), raises("state"), True)
    case(
        e, "resampling='bogus'", lambda: pmmh(K(0), ms, ps, ys, resampling="bogus"), raises("resampling", "bogus"), True
    )
    case(
        e,
        "inf emission",
        lambda: pmmh(K(0), ms, ps, np.where(np.arange(10) == 2, np.inf, ys)),
        raises("emissions"),
        True,
    )
    case(e, "wrong emission shape (T, 2)", lambda: pmmh(K(0), ms, ps, np.stack([ys, ys], 1)), raises("emissions"), True)
    case(
        e, "sigma < 0 start", lambda: pmmh(K(0), ms, ps._replace(sigma=-ps.sigma), ys), raises("params", "sigma"), True
    )
    key_cases(e, lambda k: pmmh(k, ms, ps, ys).samples, quick=False, typed=False)
    obs_s = np.arange(10) % 4 != 1
    case(
        e,
        "NaN rows == mask= with garbage (same key)",
        lambda: pmmh(K(0), ms, ps, np.where(obs_s, ys, np.nan)),
        handles(
            nan_check("pmmh", lambda: pmmh(K(0), ms, ps, np.where(obs_s, ys, 40.0), mask=obs_s), lambda r: r.samples)
        ),
        False,
    )
    import optax

    P0 = p

    def params_fn(th):
        return P0._replace(dynamics_weights=th["rho"].reshape(1, 1))

    th0 = {"rho": jnp.asarray(0.5)}
    sa = functools.partial(
        inf.score_ascent, params_fn=params_fn, optimizer=optax.adam(0.05), num_iters=3, num_particles=8, chunk_size=3
    )
    e = "score_ascent"
    case(e, "optimizer='adam'", lambda: sa(K(0), m, th0, y, optimizer="adam"), raises("optimizer"), True)
    case(e, "params_fn not callable", lambda: sa(K(0), m, th0, y, params_fn=3), raises("params_fn"), True)
    case(e, "estimator='sgd'", lambda: sa(K(0), m, th0, y, estimator="sgd"), raises("estimator"), True)
    case(e, "theta0=None", lambda: sa(K(0), m, None, y), raises("theta0"), True)
    case(
        e,
        "params_fn(theta0) fails",
        lambda: sa(K(0), m, {"wrong": jnp.asarray(0.5)}, y),
        raises("params_fn", "theta0"),
        True,
    )
    case(e, "state of the wrong type", lambda: sa(K(0), m, th0, y, state=[1]), raises("state"), True)
    case(
        e,
        "frozen unknown leaf",
        lambda: sa(K(0), m, th0, y, frozen=("bogus",)),
        raises("bogus", "frozen", also=(KeyError,)),
        True,
    )
    case(e, "num_iters = 0", lambda: sa(K(0), m, th0, y, num_iters=0), raises("num_iters"), True)
    key_cases(e, lambda k: sa(k, m, th0, y).theta, quick=False, typed=False)
    case(
        e,
        "NaN rows == mask= with garbage (same key)",
        lambda: sa(K(0), m, th0, with_nan(y, rows)),
        handles(nan_check("score_ascent", lambda: sa(K(0), m, th0, garbage, mask=obs), lambda r: r.theta)),
        False,
    )
    msc = functools.partial(
        inf.markov_score_climbing, optimizer=optax.adam(0.05), num_iters=3, num_particles=8, num_chains=2, chunk_size=3
    )
    e = "markov_score_climbing"
    case(e, "kernel='bogus'", lambda: msc(K(0), m, p, y, kernel="bogus"), raises("kernel"), True)
    case(e, "proposal='bogus'", lambda: msc(K(0), m, p, y, proposal="bogus"), raises("proposal"), True)
    case(e, "one time step", lambda: msc(K(0), m, p, y[:1]), raises("emissions", "time step"), True)
    case(e, "optimizer=None", lambda: msc(K(0), m, p, y, optimizer=None), raises("optimizer"), True)
    case(
        e,
        "discrete-state model",
        lambda: msc(K(0), hmm_pois()[0], hmm_pois()[1], hmm_pois()[2]),
        raises("continuous", "model"),
        True,
    )
    case(e, "q0 for another T", lambda: msc(K(0), m, p, y, q0=inf.gaussian_markov_q_init(4, 1)), raises("q0"), True)
    key_cases(e, lambda k: msc(k, m, p, y).means, quick=False, typed=False)
    case(
        e,
        "NaN rows == mask= with garbage (same key)",
        lambda: msc(K(0), m, p, with_nan(y, rows)),
        handles(nan_check("score_climbing", lambda: msc(K(0), m, p, garbage, mask=obs), lambda r: r.means)),
        False,
    )


# --------------------------------------------------------------------------------------------- SVI / NumPyro bridge
def svi_cases() -> None:
    from numpyro.infer.util import log_density

    from pssm.params import leaf_names

    m, p, y = hmm_pois()
    rows = (2, 6)
    fs = functools.partial(inf.fit_svi, num_iters=5)
    e = "fit_svi"
    case(e, "guide='bogus'", lambda: fs(K(0), m, p, y, guide="bogus"), raises("guide"), True)
    case(e, "num_iters = 0", lambda: fs(K(0), m, p, y, num_iters=0), raises("num_iters"), True)
    case(e, "negative counts", lambda: fs(K(0), m, p, -y), raises("data", "negative"), True)
    case(e, "wrong emission dim", lambda: fs(K(0), m, p, y[:, :2]), raises("data"), True)
    case(
        e,
        "params with 3 states",
        lambda: fs(K(0), m, _hmm_params(3, pm.PoissonParams(jnp.ones((3, 3)))), y),
        raises("params"),
        True,
    )
    case(e, "learning_rate negative", lambda: fs(K(0), m, p, y, learning_rate=-1.0), raises("learning_rate"), True)
    case(
        e,
        "frozen unknown leaf",
        lambda: fs(K(0), m, p, y, frozen=("bogus",)),
        raises("bogus", "frozen", also=(KeyError,)),
        True,
    )
    key_cases(e, lambda k: fs(k, m, p, y).params, quick=False, typed=False)
    case(
        e,
        "NaN rows == hand-built mask with garbage",
        lambda: fs(K(0), m, p, with_nan(y, rows)),
        handles(nan_check("svi", lambda: fs(K(0), m, p, masked_sequences(y, rows, "counts", 999)), lambda r: r.params)),
        False,
    )
    ml, pl, yl = slg()
    case(
        "fit_svi[continuous]",
        "NaN rows == mask (exact: Kalman-free check, finite loss and equal to masked)",
        lambda: fs(K(0), ml, pl, with_nan(yl, (2, 5))),
        handles(
            lambda r: (
                bool(np.isfinite(np.asarray(r.losses)).all()),
                f"losses finite: {bool(np.isfinite(np.asarray(r.losses)).all())}",
            )
        ),
        False,
    )
    case(
        "fit_svi[continuous]",
        "wrong emission dim",
        lambda: fs(K(0), ml, pl, np.concatenate([yl, yl], 1)),
        raises("data", "emissions"),
        False,
    )
    case(
        "fit_svi[continuous]",
        "+inf emission",
        lambda: fs(K(0), ml, pl, np.where(np.arange(10)[:, None] == 1, np.inf, yl)),
        raises("data", "emissions"),
        False,
    )
    fn = inf.make_numpyro_model(m, params=p)
    sites = dict(zip(leaf_names(p), jax.tree.leaves(p), strict=True))

    def ld(data):
        return float(log_density(fn, (data,), {}, sites)[0])

    e = "make_numpyro_model"
    case(
        e,
        "frozen unknown leaf",
        lambda: inf.make_numpyro_model(m, params=p, frozen=("bogus",)),
        raises("bogus", "frozen", also=(KeyError,)),
        True,
    )
    case(e, "log density: wrong emission dim", lambda: ld(y[:, :2]), raises("data", "emission"), True)
    case(e, "log density: negative counts", lambda: ld(-y), raises("data", "emissions", "negative"), True)

    def bridge_nan(v):
        want = float(inf.marginal_log_likelihood(m, p, masked_sequences(y, rows, "counts", 999))[0] + m.log_prior(p))
        d = abs(v - want)
        record_nan("numpyro_bridge", d)
        return d < 1e-9, f"log density vs masked log-lik + log prior: {d:.3g}"

    case(e, "log density with NaN rows == masked exact", lambda: ld(with_nan(y, rows)), handles(bridge_nan), True)
    fnc = inf.make_numpyro_model(ml, params=pl)

    def cont_ld(data, mask=None):
        from numpyro.infer.util import log_density as ldens

        from pssm.params import leaf_names as ln

        s = dict(zip(ln(pl), jax.tree.leaves(pl), strict=True))
        path = inf.kalman_posterior_sample(K(0), pl, yl)
        s["x_0"], s["x"] = path[0], path[1:]
        return float(ldens(fnc, (data,), {"mask": mask}, s)[0])

    obs = np.arange(10) % 4 != 2
    case(
        "make_numpyro_model[continuous]",
        "log density with NaN rows == mask=",
        lambda: cont_ld(np.where(obs[:, None], yl, np.nan)),
        handles(
            lambda v: (
                abs(v - cont_ld(np.where(obs[:, None], yl, 50.0), obs)) < 1e-9,
                f"{v} vs {cont_ld(np.where(obs[:, None], yl, 50.0), obs)}",
            )
        ),
        False,
    )
    case(
        "make_numpyro_model[continuous]",
        "log density: wrong emission dim",
        lambda: cont_ld(np.concatenate([yl, yl], 1)),
        raises("emissions"),
        False,
    )

    def nuts_run(data):
        from numpyro.infer import MCMC, NUTS

        mc = MCMC(NUTS(fn), num_warmup=8, num_samples=8, num_chains=1, progress_bar=False)
        mc.run(K(3), data)
        return mc.get_samples()

    case(
        "NUTS on make_numpyro_model",
        "NaN rows == hand-built mask with garbage (same key)",
        lambda: nuts_run(with_nan(y, rows)),
        handles(nan_check("nuts", lambda: nuts_run(masked_sequences(y, rows, "counts", 999)), tol=1e-9)),
        False,
    )


# --------------------------------------------------------------------------------------------- VAE
def vae_cases() -> None:
    from pssm.inference.variational import evaluate_bound, fit_vae, variational_smoother

    m, p, enc, g, seqs = dmm()
    kw = dict(guide=enc, guide_params=g, num_epochs=2, batch_size=3, pad_multiple=8)
    e = "fit_vae"
    case(
        e,
        "guide for another latent dim",
        lambda: fit_vae(K(0), m, p, seqs, **{**kw, "guide": pm.Encoder(3, 3, hidden=5)}),
        raises("guide", "latent_dim"),
        True,
    )
    case(e, "bound='vi'", lambda: fit_vae(K(0), m, p, seqs, **kw, bound="vi"), raises("bound"), True)
    case(e, "num_epochs = 0", lambda: fit_vae(K(0), m, p, seqs, **{**kw, "num_epochs": 0}), raises("num_epochs"), True)
    case(e, "batch_size = 0", lambda: fit_vae(K(0), m, p, seqs, **{**kw, "batch_size": 0}), raises("batch_size"), True)
    case(
        e,
        "fivo with annealing",
        lambda: fit_vae(K(0), m, p, seqs, **kw, bound="fivo", annealing_epochs=2),
        raises("annealing"),
        True,
    )
    case(
        e,
        "min_annealing = 0",
        lambda: fit_vae(K(0), m, p, seqs, **kw, min_annealing=0.0),
        raises("min_annealing"),
        True,
    )
    case(
        e,
        "eval_every without validation_data",
        lambda: fit_vae(K(0), m, p, seqs, **kw, eval_every=1),
        raises("validation_data"),
        True,
    )
    case(
        e, "patience without eval_every", lambda: fit_vae(K(0), m, p, seqs, **kw, patience=2), raises("patience"), True
    )
    case(e, "wrong emission dim", lambda: fit_vae(K(0), m, p, [s[:, :2] for s in seqs], **kw), raises("data"), True)
    case(
        e,
        "non-binary data for a Bernoulli DMM",
        lambda: fit_vae(K(0), m, p, [s * 2 for s in seqs], **kw),
        raises("data", "binary"),
        True,
    )
    case(
        e,
        "+inf in data",
        lambda: fit_vae(K(0), m, p, [np.where(s == 1, np.inf, s) for s in seqs], **kw),
        raises("data", "inf"),
        True,
    )
    case(
        e,
        "empty sequence in the list",
        lambda: fit_vae(K(0), m, p, seqs + [seqs[0][:0]], **kw),
        raises("data", "empty"),
        True,
    )
    case(
        e,
        "discrete-state model",
        lambda: fit_vae(K(0), hmm_pois()[0], hmm_pois()[1], seqs, **kw),
        raises("model", "guide"),
        True,
    )
    key_cases(e, lambda k: fit_vae(k, m, p, seqs, **kw).losses, quick=False, typed=False)
    nan_seqs = [with_nan(s, (1,)) if i % 2 == 0 else s for i, s in enumerate(seqs)]

    def masked_batch():
        B, Tm = len(seqs), max(len(s) for s in seqs)
        em = np.ones((B, Tm, 3))
        mask = np.zeros((B, Tm), bool)
        for i, s in enumerate(seqs):
            em[i, : len(s)] = s
            mask[i, : len(s)] = True
            if i % 2 == 0:
                mask[i, 1] = False
                em[i, 1] = 1.0 - s[1]  # garbage (still binary) at the masked step
        return Sequences(jnp.asarray(em), jnp.asarray(mask), jnp.asarray([len(s) for s in seqs]), None, "binary")

    case(
        e,
        "NaN rows == hand-built mask with garbage (same key)",
        lambda: fit_vae(K(0), m, p, nan_seqs, **kw),
        handles(
            nan_check(
                "vae", lambda: fit_vae(K(0), m, p, masked_batch(), **kw), lambda r: (r.params, r.guide_params, r.losses)
            )
        ),
        False,
    )
    ev = functools.partial(evaluate_bound, guide=enc, guide_params=g, num_samples=2)
    e = "evaluate_bound"
    case(e, "bound='bogus'", lambda: ev(K(0), m, p, seqs, bound="bogus"), raises("bound"), True)
    case(e, "num_samples = 0", lambda: ev(K(0), m, p, seqs, num_samples=0), raises("num_samples"), True)
    case(e, "wrong emission dim", lambda: ev(K(0), m, p, [s[:, :1] for s in seqs]), raises("data"), True)
    case(e, "string data", lambda: ev(K(0), m, p, [s.astype(str) for s in seqs]), raises("data"), True)
    key_cases(e, lambda k: ev(k, m, p, seqs), quick=False, typed=True)
    for b in ("elbo", "iwae", "fivo"):
        case(
            e,
            f"NaN rows == hand-built mask with garbage ({b})",
            lambda b=b: ev(K(0), m, p, nan_seqs, bound=b, per_sequence=True),
            handles(nan_check("vae", lambda b=b: ev(K(0), m, p, masked_batch(), bound=b, per_sequence=True))),
            b == "elbo",
        )
    ms, ps, ys = slg()
    vs = functools.partial(variational_smoother, num_steps=5)
    e = "variational_smoother"
    case(e, "one time step", lambda: vs(K(0), ms, ps, ys[:1]), raises("emissions", "time step"), True)
    case(e, "num_steps = 0", lambda: vs(K(0), ms, ps, ys, num_steps=0), raises("num_steps"), True)
    case(e, "learning_rate = -1", lambda: vs(K(0), ms, ps, ys, learning_rate=-1.0), raises("learning_rate"), True)
    case(
        e,
        "discrete-state model",
        lambda: vs(K(0), hmm_pois()[0], hmm_pois()[1], hmm_pois()[2]),
        raises("model", "continuous"),
        True,
    )
    case(e, "init of wrong type", lambda: vs(K(0), ms, ps, ys, init=3), raises("init"), True)
    case(e, "wrong emission dim", lambda: vs(K(0), ms, ps, np.concatenate([ys, ys], 1)), raises("emissions"), True)
    key_cases(e, lambda k: vs(k, ms, ps, ys).q, quick=False, typed=False)
    obs = np.arange(10) % 4 != 2
    case(
        e,
        "NaN rows == mask= with garbage (same key)",
        lambda: vs(K(0), ms, ps, np.where(obs[:, None], ys, np.nan)),
        handles(
            nan_check(
                "variational_smoother",
                lambda: vs(K(0), ms, ps, np.where(obs[:, None], ys, 50.0), mask=obs),
                lambda r: r.q,
            )
        ),
        False,
    )


# --------------------------------------------------------------------------------------------- constructors, simulate
def constructor_cases() -> None:
    e = "model constructors"
    cons = {
        "HMM(0 states)": lambda: pm.HMM(0, pm.PoissonEmissions(3)),
        "HMM(-2 states)": lambda: pm.HMM(-2, pm.PoissonEmissions(3)),
        "HMM(2.5 states)": lambda: pm.HMM(2.5, pm.PoissonEmissions(3)),
        "HMM('2' states)": lambda: pm.HMM("2", pm.PoissonEmissions(3)),
        "HMM(emission_component=None)": lambda: pm.HMM(2, None),
        "PoissonEmissions(0)": lambda: pm.PoissonEmissions(0),
        "PoissonEmissions(-1)": lambda: pm.PoissonEmissions(-1),
        "PoissonEmissions(rate_prior_shape=-1)": lambda: pm.PoissonEmissions(3, rate_prior_shape=-1.0),
        "GaussianEmissions(covariance='bogus')": lambda: pm.GaussianEmissions(2, covariance="bogus"),
        "GaussianEmissions(0)": lambda: pm.GaussianEmissions(0),
        "GaussianEmissions(covariance_reg=0)": lambda: pm.GaussianEmissions(2, covariance_reg=0.0),
        "CategoricalEmissions(2, num_classes=0)": lambda: pm.CategoricalEmissions(2, 0),
        "CategoricalEmissions(2, num_classes=1)": lambda: pm.CategoricalEmissions(2, 1),
        "CategoricalEmissions(concentration=-1)": lambda: pm.CategoricalEmissions(2, 3, concentration=-1.0),
        "StickyTransitions(stickiness=-1)": lambda: pm.StickyTransitions(stickiness=-1.0),
        "StickyTransitions(concentration=0)": lambda: pm.StickyTransitions(concentration=0.0),
        "StickyTransitions(self_transition=1.5)": lambda: pm.StickyTransitions(self_transition=1.5),
        "InitialDistribution(kind='bogus')": lambda: pm.InitialDistribution(kind="bogus"),
        "InitialDistribution(concentration=-1)": lambda: pm.InitialDistribution(concentration=-1.0),
        "sticky_matrix(3, 1.5)": lambda: pm.sticky_matrix(3, 1.5),
        "sticky_matrix(0)": lambda: pm.sticky_matrix(0),
        "LinearGaussianSSM(0, 1)": lambda: pm.LinearGaussianSSM(0, 1),
        "LinearGaussianSSM(2, -1)": lambda: pm.LinearGaussianSSM(2, -1),
        "LinearGaussianSSM(2.5, 1)": lambda: pm.LinearGaussianSSM(2.5, 1),
        "DeepMarkovModel(0, 3)": lambda: pm.DeepMarkovModel(0, 3),
        "DeepMarkovModel(emission_kind='bogus')": lambda: pm.DeepMarkovModel(2, 3, "bogus"),
        "Encoder(direction='bogus')": lambda: pm.Encoder(2, 3, direction="bogus"),
        "Encoder(cell='lstm')": lambda: pm.Encoder(2, 3, cell="lstm"),
        "Lorenz96(state_dim=3)": lambda: pm.Lorenz96(state_dim=3),
        "HMMGLM(2, 0 neurons)": lambda: pm.HMMGLM(2, 0),
        "HMMGLM(0 states, 3)": lambda: pm.HMMGLM(0, 3),
        "HMMGLM(link='bogus')": lambda: pm.HMMGLM(2, 3, link="bogus"),
        "HMMGLM(coupling_prior='bogus')": lambda: pm.HMMGLM(2, 3, coupling_prior="bogus"),
        "synthetic_hmm_glm(generator='bogus')": lambda: pm.synthetic_hmm_glm(K(0), 2, 3, generator="bogus"),
        "KitagawaGrowth.make_params(sigma_x=-1)": lambda: pm.KitagawaGrowth().make_params(sigma_x=-1.0),
        "PoissonLDS.random_params(key=None)": lambda: pm.PoissonLDS(2, 3).random_params(None),
        "markov_switching_ar(0 regimes)": lambda: pm.markov_switching_ar(0, 1),
    }
    names = {
        "HMM": ("num_states", "emission_component"),
        "Pois": ("emission_dim", "rate_prior"),
        "Gaus": ("covariance", "emission_dim"),
        "Cate": ("num_classes", "concentration"),
        "Stic": ("stickiness", "concentration", "self_transition"),
        "stic": ("self_transition", "num_states"),
        "Init": ("kind", "concentration"),
        "Line": ("state_dim", "emission_dim"),
        "Deep": ("latent_dim", "emission_kind"),
        "Enco": ("direction", "cell"),
        "Lore": ("state_dim",),
        "HMMG": ("num_neurons", "num_states", "link", "coupling_prior"),
        "synt": ("generator",),
        "Kita": ("sigma_x",),
        "Pois.": ("key",),
        "mark": ("num_regimes", "regimes", "num_states"),
    }
    for desc, fn in cons.items():
        nm = names.get(desc[:4], ("",))
        if desc.startswith("PoissonLDS"):
            nm = ("key",)
        case(e, desc, fn, raises(*nm), True)
    m, p, y = hmm_pois()
    e = "pssm.simulate"
    case(e, "num_timesteps = 0", lambda: pssm.simulate(K(0), m, p, 0), raises("num_timesteps"), True)
    case(e, "num_timesteps = 2.5", lambda: pssm.simulate(K(0), m, p, 2.5), raises("num_timesteps"), True)
    case(
        e,
        "params with 3 states",
        lambda: pssm.simulate(K(0), m, _hmm_params(3, pm.PoissonParams(jnp.ones((3, 3)))), 5),
        raises("params"),
        True,
    )
    case(
        e,
        "negative rates",
        lambda: pssm.simulate(K(0), m, p._replace(emissions=pm.PoissonParams(-p.emissions.rates)), 5),
        raises("params", "rate"),
        True,
    )
    case(e, "model is a string", lambda: pssm.simulate(K(0), "hmm", p, 5), raises("model"), True)
    case(
        e,
        "inputs for a model without inputs",
        lambda: pssm.simulate(K(0), m, p, 5, np.zeros((4, 1))),
        raises("inputs"),
        True,
    )
    key_cases(e, lambda k: pssm.simulate(k, m, p, 10), quick=True)
    e = "pssm.log_joint"
    z = functools.cache(lambda: pssm.simulate(K(4), m, p, 10)[0])
    case(e, "states of wrong length", lambda: pssm.log_joint(m, p, z()[:5], y), raises("states"), True)
    case(e, "state index out of range", lambda: pssm.log_joint(m, p, z().at[0].set(7), y), raises("states"), True)
    case(
        e,
        "NaN rows == mask=",
        lambda: pssm.log_joint(m, p, z(), with_nan(y, (2,))),
        handles(
            nan_check(
                "log_joint",
                lambda: pssm.log_joint(
                    m, p, z(), np.where(np.arange(10)[:, None] == 2, 999.0, y), mask=np.arange(10) != 2
                ),
            )
        ),
        True,
    )


# --------------------------------------------------------------------------------------------- to_arviz
def arviz_cases() -> None:
    import arviz as az

    def has(idata, arrays):
        """Each array of ``arrays`` equals (values, squeezed) one data variable of some group of ``idata``."""
        if not isinstance(idata, az.InferenceData):
            return False, f"not InferenceData: {type(idata).__name__}"
        vals = []
        for gname in idata.groups():
            ds = getattr(idata, gname)
            vals += [np.squeeze(np.asarray(ds[v].values)) for v in ds.data_vars]
        for a in arrays:
            a = np.squeeze(np.asarray(a, dtype=float))
            if not any(
                v.shape == a.shape and np.allclose(v.astype(float), a, equal_nan=True)
                for v in vals
                if v.dtype.kind in "biuf"
            ):
                return False, f"no variable equals an array of shape {a.shape}"
        return True, f"{len(arrays)} arrays found in {list(idata.groups())}"

    m, p, y = hmm_pois()
    ml, pl, yl = lg()
    ms, ps, ysl = slg()
    li, lt, ll = (
        np.asarray(m.log_initial(p)),
        np.asarray(m.log_transition_matrices(p, 10)),
        np.asarray(m.log_likelihoods(p, jnp.asarray(y))),
    )
    results: dict[str, tuple[Callable[[], Any], Callable[[Any], list], dict, bool]] = {
        "HMMFilterResult": (lambda: inf.hmm_filter(li, lt, ll), lambda r: [r.filtered_probs], {}, True),
        "HMMPosterior": (lambda: inf.hmm_smoother(li, lt, ll), lambda r: [r.smoothed_probs], {}, True),
        "HMMPosterior (model smoother, batch)": (
            lambda: inf.smoother(m, p, [y, y[:5]]),
            lambda r: [r.smoothed_probs],
            {},
            True,
        ),
        "KalmanFilterResult": (lambda: inf.kalman_filter(pl, yl), lambda r: [r.filtered_means], {}, True),
        "KalmanSmootherResult": (
            lambda: inf.kalman_smoother(pl, yl),
            lambda r: [r.smoothed_means],
            {"emissions": yl},
            True,
        ),
        "EMResult": (
            lambda: inf.fit_em(K(0), m, p, y, num_iters=3),
            lambda r: [r.params.emissions.rates, r.log_objective],
            {},
            True,
        ),
        "EMResult (ragged batch)": (
            lambda: inf.fit_em(K(0), m, p, [y, y[:6]], num_iters=2),
            lambda r: [r.params.emissions.rates],
            {},
            True,
        ),
        "ParticleFilterResult": (lambda: smc.particle_filter(K(0), ms, ps, ysl, 16), lambda r: [r.ess], {}, True),
        "PaRISResult": (lambda: smc.paris(K(0), ms, ps, ysl, 16, lambda xp, x, t: x), lambda r: [r.ess], {}, True),
        "FFBSiResult": (
            lambda: smc.particle_smoother(K(0), ms, ps, ysl, 16, 4),
            lambda r: [r.trajectories[..., 0]],
            {},
            True,
        ),
        "MarginalSmootherResult": (
            lambda: smc.marginal_smoother(ms, ps, smc.particle_filter(K(0), ms, ps, ysl, 16, history=True).history),
            lambda r: [r.means],
            {},
            True,
        ),
        "CSMCResult": (
            lambda: inf.conditional_smc(K(0), ms, ps, ysl, inf.kalman_posterior_sample(K(0), ps, ysl), 8),
            lambda r: [r.path],
            {},
            True,
        ),
        "PMMHResult": (
            lambda: inf.pmmh(K(0), *sv(), num_samples=4, num_warmup=2, num_chains=2, num_particles=8),
            lambda r: [r.samples["mu"]],
            {},
            False,
        ),
        "SVIResult": (lambda: inf.fit_svi(K(0), m, p, y, num_iters=3), lambda r: [r.losses], {}, False),
    }
    for name, (make, arrays, kw, quick) in results.items():
        made = functools.cache(make)
        case(
            "to_arviz",
            name,
            lambda made=made, kw=kw: (made(), pssm.to_arviz(made(), **kw)),
            handles(lambda out, arrays=arrays: has(out[1], arrays(out[0]))),
            quick,
        )
    case("to_arviz", "a dict", lambda: pssm.to_arviz({"a": 1}), raises("to_arviz", "converter"), True)
    case("to_arviz", "None", lambda: pssm.to_arviz(None), raises("to_arviz", "converter"), True)
    case(
        "to_arviz",
        "KalmanSmootherResult with emissions of wrong T",
        lambda: pssm.to_arviz(inf.kalman_smoother(pl, yl), emissions=yl[:3]),
        raises("emissions"),
        True,
    )


def arviz_slow_cases() -> None:
    """to_arviz on the results of the slower algorithms (built lazily, not in --quick)."""
    import arviz as az
    import optax

    from pssm.inference.variational import fit_vae, variational_smoother
    from pssm.models.testing import scalar_lg_conjugate_conditional

    ms, ps, ysl = slg()
    md, pd_, enc, g, seqs = dmm()

    def ok(idata, arr):
        if not isinstance(idata, az.InferenceData):
            return False, type(idata).__name__
        a = np.squeeze(np.asarray(arr, float))
        for gname in idata.groups():
            ds = getattr(idata, gname)
            for v in ds.data_vars:
                x = np.squeeze(np.asarray(ds[v].values))
                if x.dtype.kind in "biuf" and x.shape == a.shape and np.allclose(x, a, equal_nan=True):
                    return True, f"{gname}.{v}"
        return False, f"no variable equals an array of shape {a.shape}"

    def params_fn(th):
        return ps._replace(dynamics_weights=th["rho"].reshape(1, 1))

    h = smc.AdditiveFunctional.from_fn(lambda xp, x, t: x * xp, lambda x0: x0**2)
    slow = {
        "ParticleGibbsResult": (
            lambda: inf.particle_gibbs(
                K(0),
                ms,
                ps,
                ysl,
                conditional=lambda k, x, yy, pp: scalar_lg_conjugate_conditional(k, x, yy, pp),
                num_samples=4,
                num_particles=8,
                num_chains=2,
                chunk_size=4,
            ),
            lambda r: r.paths,
            {},
        ),
        "PPGResult": (
            lambda: inf.paris_particle_gibbs(
                K(0), ms, ps, ysl, functional=h, num_particles=8, num_iters=4, burn_in=1, chunk_size=4
            ),
            lambda r: r.estimates,
            {},
        ),
        "ScoreAscentResult": (
            lambda: inf.score_ascent(
                K(0),
                ms,
                {"rho": jnp.asarray(0.5)},
                ysl,
                params_fn=params_fn,
                optimizer=optax.adam(0.05),
                num_iters=3,
                num_particles=8,
                chunk_size=3,
            ),
            lambda r: r.log_likelihood_trace,
            {},
        ),
        "ScoreClimbingResult": (
            lambda: inf.markov_score_climbing(
                K(0), ms, ps, ysl, optimizer=optax.adam(0.05), num_iters=3, num_particles=8, num_chains=2, chunk_size=3
            ),
            lambda r: r.means,
            {},
        ),
        "VAEResult": (
            lambda: fit_vae(K(0), md, pd_, seqs, guide=enc, guide_params=g, num_epochs=2, batch_size=3, pad_multiple=8),
            lambda r: r.losses,
            {},
        ),
        "VariationalSmootherResult": (
            lambda: variational_smoother(K(0), ms, ps, ysl, num_steps=5),
            lambda r: r.smoothed_means,
            {},
        ),
    }
    for name, (make, arr, kw) in slow.items():
        made = functools.cache(make)
        case(
            "to_arviz",
            name,
            lambda made=made, kw=kw: (made(), pssm.to_arviz(made(), **kw)),
            handles(lambda out, arr=arr: ok(out[1], arr(out[0]))),
            False,
        )
    vae = functools.cache(slow["VAEResult"][0])
    case(
        "to_arviz",
        "VAEResult with key= but no model/guide",
        lambda: pssm.to_arviz(vae(), key=K(0)),
        raises("model", "guide", "emissions"),
        False,
    )
    case(
        "to_arviz",
        "VAEResult with key=None-like int",
        lambda: pssm.to_arviz(vae(), key=0, model=md, guide=enc, emissions=seqs[0]),
        raises("key"),
        False,
    )


# --------------------------------------------------------------------------------------------- save / load
SAVE_OK: list[str] = []


def io_cases(quick: bool) -> None:
    import conformance_checks as cc
    import equinox as eqx

    names = ("hmm_poisson", "hmm_gauss_tied", "lgssm", "stochastic_volatility", "deep_markov_model")
    for c in cc.CASES:
        q = c.name in names

        def roundtrip(c=c):
            model, params, _ = c.make(K(0))
            path = pssm.save(TMP / f"rt_{c.name}", model, params, extras={"x": np.arange(3)}, metadata={"case": c.name})
            got = pssm.load(path)
            return model, params, got

        def check(out, name=c.name):
            model, params, got = out
            same_type = type(got.model) is type(model) and bool(eqx.tree_equal(got.model, model))
            la, lb = jax.tree.leaves(params), jax.tree.leaves(got.params)
            struct = jax.tree.structure(params) == jax.tree.structure(got.params)
            bits = struct and all(
                np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(np.asarray(a), np.asarray(b))
                for a, b in zip(la, lb, strict=True)
            )
            extras = np.array_equal(got.extras["x"], np.arange(3)) and got.metadata["case"] == name
            if same_type and bits and extras:
                SAVE_OK.append(name)
            return same_type and bits and extras, f"model equal {same_type}, params bit-equal {bits}, extras {extras}"

        case("pssm.save/load", f"round trip {c.name}", roundtrip, handles(check), q)
    m, p, _ = hmm_pois()
    good = functools.cache(lambda: pssm.save(TMP / "good", m, p))

    def rewrite(mutate, name):
        src = good()
        with np.load(src, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        desc = json.loads(str(arrays["__pssm__"]))
        mutate(desc)
        arrays["__pssm__"] = np.array(json.dumps(desc))
        out = TMP / f"{name}.npz"
        np.savez(out, **arrays)
        return out

    def set_version(d):
        d["format_version"] = 999

    def foreign_class(d):
        def walk(node):
            if isinstance(node, dict):
                for k, v in node.items():
                    if isinstance(v, str) and v.startswith("pssm.") and ":" in v:
                        node[k] = "subprocess:Popen"
                    else:
                        walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(d["model"])

    e = "pssm.load"
    case(e, "incompatible format version", lambda: pssm.load(rewrite(set_version, "v999")), raises("format"), True)
    case(e, "class outside pssm", lambda: pssm.load(rewrite(foreign_class, "foreign")), raises("class", "pssm"), True)
    plain = TMP / "plain.npz"
    np.savez(plain, a=np.arange(3))
    case(e, "plain npz (not a pssm file)", lambda: pssm.load(plain), raises("pssm"), True)
    case(
        e,
        "missing file",
        lambda: pssm.load(TMP / "nope.npz"),
        raises("nope", "no pssm file", also=(FileNotFoundError,)),
        True,
    )
    txt = TMP / "text.npz"
    txt.write_text("hello")
    case(e, "text file named .npz", lambda: pssm.load(txt), raises("pssm", "npz", "file"), True)
    e = "pssm.save"
    case(
        e,
        "metadata not JSON-serialisable",
        lambda: pssm.save(TMP / "meta", m, p, metadata={"f": object()}),
        raises("metadata"),
        True,
    )
    case(
        e,
        "path without .npz gets it",
        lambda: pssm.save(TMP / "noext", m, p),
        handles(lambda path: (path.suffix == ".npz" and pssm.load(path).model == m, str(path.name))),
        True,
    )
    case(e, "model is not a pssm model", lambda: pssm.save(TMP / "notmodel", object(), p), raises("model"), True)
    case(e, "params with a lambda", lambda: pssm.save(TMP / "lam", m, {"f": lambda x: x}), raises("params"), True)


# --------------------------------------------------------------------------------------------- resume
def _vae_kw(path=None, callback=None, bound="elbo"):
    m, p, enc, g, seqs = dmm()
    kw = dict(guide=enc, guide_params=g, num_epochs=3, batch_size=3, pad_multiple=8, bound=bound)
    if bound == "elbo":
        kw["annealing_epochs"] = 2
    if path is not None:
        kw["checkpoint"] = path
    if callback is not None:
        kw["callback"] = callback
    return m, p, seqs, kw


class _Interrupt(Exception):
    pass


def _interrupt(epoch, loss):
    if epoch == 1:
        raise _Interrupt


def resume_checks(quick: bool) -> dict:
    """Every run that takes ``checkpoint=``: interrupted (an exception after a checkpoint; in the full run also a
    child process SIGKILLed after its first checkpoint), resumed, compared bit for bit with an uninterrupted run."""
    from helpers.long_runs import RUNS

    algos, identical, detail = [], [], {}
    names = ["fit_vae[elbo]"] + ([] if quick else ["fit_vae[fivo]", *RUNS])
    for name in names:
        algos.append(name)
        vae = name.startswith("fit_vae")
        hows = ("raise",) if quick or (vae and "fivo" in name) else ("raise", "kill")
        check = _resume_vae if vae else _resume_run
        if all([check(name, how, detail) for how in hows]):
            identical.append(name)
    return {"resume_algorithms": algos, "resume_identical": identical, "resume_detail": detail}


def _resume_vae(name: str, how: str, detail: dict) -> bool:
    from pssm.inference.variational import fit_vae

    bound = name[len("fit_vae[") : -1]
    path = TMP / f"ckpt_{bound}_{how}.npz"
    m, p, seqs, kw = _vae_kw(bound=bound)
    full = fit_vae(K(7), m, p, seqs, **kw)
    if how == "raise":
        try:
            fit_vae(K(7), m, p, seqs, **_vae_kw(path, _interrupt, bound)[3])
            detail[f"{name} ({how})"] = "callback exception did not stop the run"
            return False
        except _Interrupt:
            pass
    elif not _killed_child(["--child-vae", str(path)], path, name, detail):
        return False
    resumed = fit_vae(K(7), m, p, seqs, **_vae_kw(path, None, bound)[3])
    d = max_diff((full.params, full.guide_params, full.losses), (resumed.params, resumed.guide_params, resumed.losses))
    detail[f"{name} ({'callback raises after epoch 1' if how == 'raise' else 'child SIGKILLed'})"] = (
        f"max abs diff {d:.3g}"
    )
    return d == 0.0


def _killed_child(argv: list[str], path: Path, name: str, detail: dict) -> bool:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, timeout=600)
    if proc.returncode != -signal.SIGKILL or not any(path.parent.glob(path.name + "*")):
        detail[f"{name} (child SIGKILLed)"] = f"child exited {proc.returncode}: {proc.stderr.decode()[-300:]}"
        return False
    return True


def _resume_run(name: str, how: str, detail: dict) -> bool:
    from helpers.long_runs import RUNS, max_abs_diff

    run, target, calls = RUNS[name]
    path = TMP / f"ckpt_{name.replace('[', '_').replace(']', '')}_{how}"
    for old in TMP.glob(path.name + "*"):
        old.unlink()
    full = run(None)
    if how == "raise":
        module, attr = target
        real = getattr(module, attr)
        try:
            setattr(module, attr, _after(real, calls, _raise))
            run(path)
            detail[f"{name} (raise)"] = "the interruption did not stop the run"
            return False
        except _Interrupt:
            pass
        finally:
            setattr(module, attr, real)
    elif not _killed_child(["--child-run", name, str(path)], path, name, detail):
        return False
    d = max_abs_diff(full, run(path))
    label = f"exception after {calls} steps" if how == "raise" else f"child SIGKILLed after {calls} steps"
    detail[f"{name} ({label})"] = f"max abs diff {d:.3g}"
    return d == 0.0


def _raise():
    raise _Interrupt


def _sigkill():
    os.kill(os.getpid(), signal.SIGKILL)


def _after(real, calls: int, stop):
    seen = []

    def step(*a, **k):
        seen.append(1)
        if len(seen) > calls:
            stop()
        return real(*a, **k)

    return step


def child_run(name: str, path: str) -> None:
    """Child process: the named long run with a checkpoint, SIGKILLed at its step number ``calls + 1``."""
    from helpers.long_runs import RUNS

    run, (module, attr), calls = RUNS[name]
    setattr(module, attr, _after(getattr(module, attr), calls, _sigkill))
    run(path)


def child_vae(path: str) -> None:
    """Child process: fit_vae with a checkpoint, SIGKILL itself right after the first checkpoint is written."""
    from pssm.inference.variational import fit_vae

    def kill(epoch, loss):
        if epoch == 0 and Path(path).exists():
            os.kill(os.getpid(), signal.SIGKILL)

    m, p, seqs, kw = _vae_kw(path, kill)
    fit_vae(K(7), m, p, seqs, **kw)


# --------------------------------------------------------------------------------------------- main
def entry_cases() -> None:
    """NaN *entries* (some, not all, of a step) where the emission factorises or is Gaussian: only the observed
    entries count (the exact answers of tests/test_missing_entries.py: enumeration, closed forms, smaller models)."""
    import numpyro
    import test_missing_entries as tme
    from numpyro.infer.util import log_density
    from scipy import stats

    rng = np.random.default_rng(7)
    for fam, (comp, lik, draw) in tme.FAMILIES.items():
        model = pm.HMM(2, comp)
        params = model.initialize(jax.random.key(0), draw(rng, 40).astype(float))
        y = tme._holes(rng, draw(rng, 6))
        ref_ll, ref_post = tme._enumerate(model, params, y, lik)

        def fb(r, ref_ll=ref_ll, ref_post=ref_post):
            d = max(abs(float(r.log_likelihood) - ref_ll), float(np.abs(np.asarray(r.smoothed_probs) - ref_post).max()))
            record_nan("forward_backward_entries", d)
            return d < 1e-4, f"max abs err vs enumeration over the observed entries {d:.3g}"

        case(
            "smoother",
            f"NaN entries, {fam} HMM (vs enumeration)",
            lambda m=model, p=params, y=y: inf.smoother(m, p, y),
            handles(fb),
            True,
        )

    y = tme._holes(rng, np.minimum(rng.poisson(3.0, (120, 3)), 5))
    model = pm.HMM(2, pm.PoissonEmissions(3))
    params = model.initialize(jax.random.key(1), y)

    def em_check(new, model=model, params=params, y=y):
        g = np.asarray(inf.smoother(model, params, y).smoothed_probs, float)
        o, yc = ~np.isnan(y), np.nan_to_num(y)
        c = model.emission_component
        rates = (g.T @ yc + c.rate_prior_shape - 1.0) / (g.T @ o + c.rate_prior_rate)
        d = float(np.abs(np.asarray(new[0].params.emissions.rates) - rates).max())
        record_nan("em_entries", d)
        return d < 1e-4, f"M-step vs the closed form over the observed entries {d:.3g}"

    from pssm.boundary import as_model_data
    from pssm.inference.optim.em import em_init, em_step
    from pssm.params import trainable_mask

    case(
        "fit_em",
        "NaN entries: Poisson M-step (vs closed form)",
        lambda: em_step(
            jax.random.key(9),
            em_init(model, params),
            model,
            as_model_data(model, y),
            trainable_mask(model.param_spec()),
        ),
        handles(em_check),
        True,
    )

    import itertools

    import test_missing_gaussian_em as tmg
    from scipy.special import logsumexp

    rng_g = np.random.default_rng(11)
    for cov in ("full", "tied"):
        yg = tmg._holes(rng_g, rng_g.normal(size=(120, 3)) + np.where(rng_g.random((120, 1)) < 0.5, 2.0, 0.0))
        gm = pm.HMM(2, pm.GaussianEmissions(3, cov))
        gp = gm.initialize(jax.random.key(2), yg)

        def em_gauss_check(new, gm=gm, gp=gp, yg=yg):
            means, covs = tmg.gaussian_em_reference(gm, gp, yg)
            e = new[0].params.emissions
            d = max(float(np.abs(np.asarray(e.means) - means).max()), float(np.abs(np.asarray(e.covs) - covs).max()))
            record_nan("em_entries_gaussian", d)
            return d < 1e-3, f"M-step vs EM over the missing entries (NumPy block formulas) {d:.3g}"

        case(
            "fit_em",
            f"NaN entries: {cov}-covariance Gaussian M-step (conditional moments, vs NumPy)",
            lambda gm=gm, gp=gp, yg=yg: em_step(
                jax.random.key(9), em_init(gm, gp), gm, as_model_data(gm, yg), trainable_mask(gm.param_spec())
            ),
            handles(em_gauss_check),
            True,
        )

    ar = pm.HMM(2, pm.AutoregressiveEmissions(2, num_lags=1))
    rng_a = np.random.default_rng(0)
    ya = np.cumsum(rng_a.normal(size=(7, 2)), 0)
    ap = ar.initialize(jax.random.key(0), np.cumsum(rng_a.normal(size=(60, 2)), 0))
    ya[2, 0] = np.nan
    ya[4] = np.nan

    def lag_check(r, ap=ap, ya=ya):
        e = ap.emissions
        b, A, covs = (np.asarray(a, float) for a in (e.biases, e.coefficients, e.covs))
        lik = np.zeros((7, 2))
        for t in (0, 1, 2, 6):  # steps 3 and 5 have a missing lag, step 4 is missing
            lag, o = (np.zeros(2) if t == 0 else ya[t - 1]), ~np.isnan(ya[t])
            for s in range(2):
                lik[t, s] = stats.multivariate_normal((b[s] + A[s] @ lag)[o], covs[s][np.ix_(o, o)]).logpdf(ya[t][o])
        pi = np.exp(np.asarray(ar.log_initial(ap), float))
        P = np.asarray(ar.transition_component.matrix(ap.transitions), float)
        paths = np.array(list(itertools.product(range(2), repeat=7)))
        lp = np.log(pi[paths[:, 0]]) + np.log(P[paths[:, :-1], paths[:, 1:]]).sum(1) + lik[np.arange(7), paths].sum(1)
        d = abs(float(r.log_likelihood) - float(logsumexp(lp)))
        record_nan("forward_backward_missing_lags", d)
        return d < 1e-3, f"AR-HMM with a missing lag: steps with a missing lag not evaluated, vs enumeration {d:.3g}"

    case(
        "smoother",
        "NaN in a lag of an AR-HMM (vs enumeration without the steps it conditions)",
        lambda: inf.smoother(ar, ap, ya),
        handles(lag_check),
        True,
    )

    _, y1 = pssm.simulate(jax.random.key(0), tme._Echo(1), {}, 25)
    wide = jnp.concatenate([y1, jnp.full_like(y1, jnp.nan)], axis=1)

    def pf_check(r):
        ref = smc.particle_filter(jax.random.key(3), tme._Echo(1), {}, y1, 256)
        d = max(abs(float(r.log_likelihood) - float(ref.log_likelihood)), max_diff(r.filtered, ref.filtered))
        record_nan("particle_filter_entries", d)
        return d < 1e-4, f"vs the smaller model without the missing entry, same key {d:.3g}"

    case(
        "particle_filter",
        "NaN column (vs the smaller model, same key)",
        lambda: smc.particle_filter(jax.random.key(3), tme._Echo(2), {}, wide, 256),
        handles(pf_check),
        True,
    )

    echo = tme._Echo(3)
    x, ye = pssm.simulate(jax.random.key(1), echo, {}, 12)
    ye = jnp.asarray(tme._holes(rng, ye, 0.3))
    xs, yn = np.asarray(x), np.asarray(ye)
    o = ~np.isnan(yn)
    ref = stats.norm(0, 1).logpdf(xs[0]) + stats.norm(0.9 * xs[:-1], 0.5).logpdf(xs[1:]).sum()
    ref += stats.norm(np.repeat(xs[:, None], 3, 1)[o], 0.7).logpdf(yn[o]).sum()

    def joint_check(family):
        def check(v):
            d = abs(float(v) - ref)
            record_nan(family, d)
            return d < 1e-3 * abs(ref), f"vs scipy over the observed entries {d:.3g}"

        return check

    case(
        "log_joint",
        "NaN entries (vs scipy)",
        lambda: pssm.log_joint(echo, {}, x, ye),
        handles(joint_check("log_joint_entries")),
        True,
    )
    case(
        "make_numpyro_model",
        "NaN entries, continuous bridge (vs scipy)",
        lambda: log_density(inf.make_numpyro_model(echo), (ye,), {}, {"x_0": x[0], "x": x[1:]})[0],
        handles(joint_check("numpyro_bridge_entries")),
        True,
    )
    del numpyro


BUILDERS = (
    ("missing_entries", entry_cases, True),
    ("data", data_cases, True),
    ("nwb", nwb_cases, True),
    ("kalman", kalman_cases, True),
    ("forward_backward", fb_cases, True),
    ("discrete", discrete_cases, True),
    ("em", em_cases, True),
    ("smc", smc_cases, True),
    ("pmcmc", pmcmc_cases, True),
    ("svi", svi_cases, True),
    ("vae", vae_cases, True),
    ("constructors", constructor_cases, True),
    ("arviz", arviz_cases, True),
    ("arviz_slow", arviz_slow_cases, False),
)


CHEAP = ("Sequences", "pssm.", "model constructors", "LinearGaussianSSM", "StochasticVolatility")
SLOW_IN_QUICK = (
    "-inf value",
    "+inf value",
    "transition rows",
    "length = 2.5",
    "NaN log-likelihood",
    "sigma < 0",
    "phi NaN",
    "learning_rate",
    "NaN in the reference",
    "negative dynamics",
    "covariates for",
    "tol ",
    "reference of wrong",
    "key=None",
)
SLOW_ENTRIES = ("ffbsi", "marginal_smoother", "HMMGLM", "simulate_hmm_glm", "fit_em_restarts[HMM-GLM]", "to_arviz")


def _in_quick(c: Case) -> bool:
    """--quick: the flagged cases of the cheap entry points, and the flagged error cases of the others (most are
    refused at the boundary before anything compiles), minus a few that compile a kernel to return NaN."""
    if not c.quick:
        return False
    if c.entry.startswith(CHEAP):
        return not c.entry.startswith(("pssm.simulate", "pssm.log_joint"))
    if c.entry.startswith(SLOW_ENTRIES) or "(parallel)" in c.entry:
        return False
    return c.expect.check is None and not c.desc.startswith(SLOW_IN_QUICK)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the cheap subset (>= 1/3 of the cases), one resume check")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--only", default="", help="comma-separated builder names (debugging)")
    ap.add_argument("--verbose", action="store_true", help="print every case's outcome")
    ap.add_argument("--child-vae", default="", help=argparse.SUPPRESS)
    ap.add_argument("--child-run", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_vae:
        child_vae(args.child_vae)
        return
    if args.child_run:
        child_run(*args.child_run)
        return
    t0 = time.perf_counter()
    only = set(filter(None, args.only.split(",")))
    for name, build, _ in BUILDERS:
        if not only or name in only:
            build()
    if not only or "io" in only:
        io_cases(args.quick)
    t_build = time.perf_counter() - t0
    total = len(CASES)
    run = [c for c in CASES if _in_quick(c)] if args.quick else CASES
    if args.list:
        for c in run:
            print(f"{'Q' if c.quick else ' '} {c.entry}: {c.desc}")
        print(f"{len(run)} of {total} cases")
        return
    counts = {"clear_error": 0, "documented_handling": 0, "silent_or_cryptic": 0}
    bad: list[str] = []
    per_entry: dict[str, dict[str, int]] = {}
    for c in run:
        t = time.perf_counter()
        cls, detail = classify(c)
        counts[cls] += 1
        per_entry.setdefault(c.entry, {k: 0 for k in counts})[cls] += 1
        if cls == "silent_or_cryptic":
            bad.append(f"{c.entry}: {c.desc} -> {detail}")
        if args.verbose:
            print(f"[{cls:19s}] {time.perf_counter() - t:6.2f}s {c.entry}: {c.desc} -> {detail}", flush=True)
    t_resume = time.perf_counter()
    resume = resume_checks(args.quick) if not only else {"resume_algorithms": [], "resume_identical": []}
    t_resume = time.perf_counter() - t_resume
    out = {
        "quick": bool(args.quick),
        "cases": len(run),
        "cases_total": total,
        "clear_error": counts["clear_error"],
        "documented_handling": counts["documented_handling"],
        "silent_or_cryptic": counts["silent_or_cryptic"],
        "entry_points": len(per_entry),
        "nan_missing_max_err_vs_exact": {
            k: float(f"{v:.3g}") if np.isfinite(v) else "non-finite result" for k, v in sorted(NAN_ERR.items())
        },
        **resume,
        "save_load_models": len(set(SAVE_OK)),
        "save_load_model_names": sorted(set(SAVE_OK)),
        "seconds": round(time.perf_counter() - t0, 1),
        "seconds_building_fixtures": round(t_build, 1),
        "seconds_resume_checks": round(t_resume, 1),
        "silent_or_cryptic_cases": bad,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
