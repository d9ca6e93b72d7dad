"""pssm.save / pssm.load: every model of the conformance registry round-trips exactly, without pickle."""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import pssm

sys.path.insert(0, str(Path(__file__).parent))
import conformance_checks as cc  # noqa: E402


def _same_tree(a, b) -> bool:
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    return ta == tb and all(_same_leaf(x, y) for x, y in zip(la, lb, strict=True))


def _same_leaf(x, y) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    return x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind in "fc")


@pytest.mark.parametrize("case", cc.CASES, ids=[c.name for c in cc.CASES])
def test_round_trip_is_exact(case, tmp_path):
    model, params, _ = case.make(jax.random.PRNGKey(0))  # no simulation needed: settings and params only
    path = pssm.save(tmp_path / case.name, model, params, extras={"trace": np.arange(3.0)}, metadata={"note": "x"})
    assert path.suffix == ".npz"
    back = pssm.load(path)
    assert type(back.model) is type(model) and _same_tree(back.model, model)  # settings and arrays inside
    assert _same_tree(back.params, params)
    assert type(back.params) is type(params)
    np.testing.assert_array_equal(back.extras["trace"], np.arange(3.0))
    assert back.metadata["note"] == "x" and back.metadata["pssm_version"] == pssm.__version__


def test_loaded_model_computes_the_same(tmp_path):
    case = next(c for c in cc.CASES if c.name == "hmm_glm")
    model, params, _, y, inputs = cc.case_data(case, 0)
    back = pssm.load(pssm.save(tmp_path / "m", model, params))
    assert float(back.model.log_prior(back.params)) == float(model.log_prior(params))
    assert back.model.emission_shape == model.emission_shape and back.model.num_states == model.num_states


def test_refuses_other_versions_code_and_non_pssm_classes(tmp_path):
    model, params, _ = cc.CASES[0].make(jax.random.PRNGKey(0))
    path = pssm.save(tmp_path / "m.npz", model, params)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    desc = json.loads(str(arrays["__pssm__"]))
    desc["format_version"] = 99
    np.savez(tmp_path / "future.npz", **{**arrays, "__pssm__": np.array(json.dumps(desc))})
    with pytest.raises(ValueError, match="format 99.*reads format 1"):
        pssm.load(tmp_path / "future.npz")
    desc["format_version"] = 1
    desc["model"]["dataclass"] = "os:system"
    np.savez(tmp_path / "evil.npz", **{**arrays, "__pssm__": np.array(json.dumps(desc))})
    with pytest.raises(ValueError, match="only classes of the pssm package"):
        pssm.load(tmp_path / "evil.npz")
    with pytest.raises(TypeError, match="hold code"):
        pssm.save(tmp_path / "f", model, {"f": len})
    with pytest.raises(ValueError, match="not a pssm.save file"):
        np.savez(tmp_path / "plain.npz", a=np.ones(2))
        pssm.load(tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError):
        pssm.load(tmp_path / "missing.npz")
