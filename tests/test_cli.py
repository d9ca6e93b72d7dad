"""The ``pssm`` command line: info, fit (HMM by EM, linear Gaussian by Kalman), config errors, report, demo."""

import json
import subprocess
import sys
from pathlib import Path

import arviz as az
import numpy as np
import pytest

from pssm.inference import cli

HMM_TOML = """
[model]
kind = "hmm"
num_states = 2
emissions = "poisson"

[data]
path = "counts.npy"

[fit]
algorithm = "em"
num_iters = 10
seed = 0
"""


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def hmm_run(tmp_path_factory):
    """A 2-state Poisson HMM (300 bins, 5 neurons) fitted by 10 EM iterations through ``pssm fit``."""
    tmp = tmp_path_factory.mktemp("cli_hmm")
    rng = np.random.default_rng(0)
    z = np.cumsum(rng.random(300) < 0.03) % 2
    rates = np.array([[1.0, 4.0, 2.0, 0.5, 6.0], [6.0, 0.5, 3.0, 5.0, 1.0]])
    np.save(tmp / "counts.npy", rng.poisson(rates[z]).astype(np.float32))
    cfg = _write(tmp, "hmm.toml", HMM_TOML)
    return tmp, cfg, z


def test_info_text_and_json(capsys):
    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    for word in ("pssm", "jax", "jaxlib", "numpyro", "arviz", "numpy", "python", "backend", "precision"):
        assert word in text
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["pssm"] and info["versions"]["jax"]
    assert info["default_backend"] in ("cpu", "gpu", "tpu", "cuda", "rocm")
    assert info["precision"] in ("float32", "float64") and len(info["devices"]) == info["device_count"]


def test_console_script_help():
    exe = Path(sys.executable).with_name("pssm")
    if not exe.exists():
        pytest.skip("console script not installed (run pip install -e .)")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for cmd in ("demo", "fit", "report", "info"):
        assert cmd in proc.stdout


def test_subcommand_help(capsys):
    for cmd, words in (("demo", ("--quick", "--out", "brain_states")), ("fit", ("CONFIG.toml", "[model]", "pmmh"))):
        with pytest.raises(SystemExit) as e:
            cli.main([cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert all(w in out for w in words), out


def test_demo_locates_script_and_explains_when_missing(monkeypatch, capsys):
    script = cli.find_demo_script()
    assert script is not None and script.name == "brain_states.py"  # the tests run from the checkout
    mod = cli.load_demo(script)  # the real flagship script imports as a module (its dataclasses need sys.modules)
    assert callable(mod.main)
    monkeypatch.setattr(cli, "find_demo_script", lambda: None)
    assert cli.main(["demo", "--quick"]) == 2
    assert "repository checkout" in capsys.readouterr().err


def test_demo_runs_the_scripts_main_with_quick_and_out(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "brain_states.py"
    fake.write_text(
        "from __future__ import annotations\nimport dataclasses, json\n\n"
        "@dataclasses.dataclass\nclass C:\n    x: int\n\n"
        "def main(argv):\n    print(json.dumps({'argv': argv}))\n    return {}\n"
    )
    monkeypatch.setattr(cli, "find_demo_script", lambda: fake)
    assert cli.main(["demo", "--quick", "--out", str(tmp_path / "o"), "--", "--states", "2"]) == 0
    assert _last_json(capsys.readouterr().out)["argv"] == ["--quick", "--out", str(tmp_path / "o"), "--states", "2"]


def test_fit_hmm_em_writes_run_dir(hmm_run, capsys):
    tmp, cfg, z = hmm_run
    assert cli.main(["fit", str(cfg)]) == 0
    summary = _last_json(capsys.readouterr().out)
    run = tmp / "hmm_run"
    assert Path(summary["run_dir"]) == run.resolve()
    for name in ("config.toml", "result.nc", "params.npz", "summary.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "summary.json").read_text()) == summary
    assert (run / "config.toml").read_text() == HMM_TOML
    assert summary["model"] == "hmm" and summary["algorithm"] == "em"
    assert summary["data"]["shape"] == [300, 5] and 1 <= summary["num_iters"] <= 10
    assert np.isfinite(summary["log_likelihood"]) and summary["seconds"] > 0
    assert summary["params"]["emissions.rates"] == [2, 5]
    idata = az.from_netcdf(str(run / "result.nc"))
    probs = idata.posterior["smoothed_probs"].values.reshape(300, 2)
    acc = np.mean(probs.argmax(-1) == z)
    assert max(acc, 1 - acc) > 0.9  # two well-separated rate vectors: states recovered up to relabelling
    rates = np.load(run / "params.npz")["emissions.rates"]
    assert rates.shape == (2, 5) and np.all(rates > 0)


def test_report_of_fit_run(hmm_run, capsys):
    pytest.importorskip("pssm.reporting", reason="pssm.reporting not available")
    from pssm import reporting

    if not hasattr(reporting, "report"):
        pytest.skip("pssm.reporting.report not available yet")
    tmp, cfg, _ = hmm_run
    run = tmp / "report_run"
    assert cli.main(["fit", str(cfg), "--out", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["report", str(run)]) == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert path == run / "report.html" and path.stat().st_size > 1000
    assert "<html" in path.read_text().lower()


def test_report_without_result(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "result.nc" in capsys.readouterr().err


def test_fit_linear_gaussian_kalman(tmp_path, capsys):
    rng = np.random.default_rng(1)
    y = np.cumsum(rng.normal(size=(120, 2)), 0) * 0.3 + rng.normal(size=(120, 2))
    np.savez(tmp_path / "obs.npz", y=y, other=np.zeros(3))
    cfg = _write(
        tmp_path,
        "lg.toml",
        '[model]\nkind = "linear_gaussian"\nstate_dim = 2\n\n[data]\npath = "obs.npz"\nkey = "y"\n\n'
        '[fit]\nalgorithm = "kalman"\nseed = 3\n',
    )
    out = tmp_path / "custom_run"
    assert cli.main(["fit", str(cfg), "--out", str(out)]) == 0
    summary = _last_json(capsys.readouterr().out)
    assert summary["algorithm"] == "kalman" and summary["data"]["shape"] == [120, 2]
    assert np.isfinite(summary["log_likelihood"])
    idata = az.from_netcdf(str(out / "result.nc"))
    assert idata.posterior["smoothed_mean"].shape == (1, 1, 120, 2)
    assert "y" in idata.observed_data


def _error(tmp_path, capsys, text: str, files=("counts.npy",)) -> str:
    for f in files:
        np.save(tmp_path / f, np.ones((20, 3), np.float32))
    cfg = _write(tmp_path, "bad.toml", text)
    assert cli.main(["fit", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pssm fit: error: config")
    return err


DATA = '\n[data]\npath = "counts.npy"\n'


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            '[model]\nkind = "hmmm"' + DATA,
            ["[model].kind", "'hmmm'", "'hmm'", "'hmm_glm'", "'linear_gaussian'", "'stochastic_volatility'"],
        ),
        ('[model]\nkind = "hmm"\nnum_states = 2\ncolour = 1' + DATA, ["[model]", "unknown key 'colour'", "num_states"]),
        ('[model]\nkind = "hmm"' + DATA, ["[model].num_states", "missing"]),
        ('[model]\nkind = "hmm"\nnum_states = "two"' + DATA, ["[model].num_states", "expected int"]),
        ('[model]\nkind = "hmm"\nnum_states = 2\nemissions = "binomial"' + DATA, ["[model].emissions", "'poisson'"]),
        ('[model]\nkind = "hmm"\nnum_states = 2\n[data]\npath = "missing.npy"\n', ["[data].path", "missing.npy"]),
        ('[model]\nkind = "hmm"\nnum_states = 2\n[data]\npath = "x.parquet"\n', ["[data].path", "'.npy'"]),
        ('[model]\nkind = "hmm"\nnum_states = 2' + DATA + '[fit]\nalgorithm = "pmmh"\n', ["[fit].algorithm", "'em'"]),
        ('[model]\nkind = "hmm"\nnum_states = 2' + DATA + "[fit]\nnum_particles = 9\n", ["[fit]", "num_particles"]),
        ('[model]\nkind = "hmm"\nnum_states = 2' + DATA + '[fit]\nfrozen = ["initiall"]\n', ["[fit].frozen"]),
        ('[model]\nkind = "hmm_glm"\nnum_states = 2\nlinkk = "exp"' + DATA, ["unknown key 'linkk'", "'link'"]),
        ('[modell]\nkind = "hmm"' + DATA, ["'modell'", "'model'"]),
    ],
    ids=[
        "bad-kind",
        "unknown-model-key",
        "missing-required",
        "wrong-type",
        "bad-emissions",
        "missing-data-file",
        "bad-suffix",
        "bad-algorithm",
        "unknown-fit-key",
        "bad-frozen-path",
        "unknown-glm-setting",
        "unknown-table",
    ],
)
def test_config_errors_name_the_key(tmp_path, capsys, text, expected):
    err = _error(tmp_path, capsys, text)
    for e in expected:
        assert e in err, (e, err)


def test_config_npz_needs_key(tmp_path, capsys):
    np.savez(tmp_path / "two.npz", a=np.ones((5, 2)), b=np.ones((5, 2)))
    err = _error(tmp_path, capsys, '[model]\nkind = "hmm"\nnum_states = 2\n[data]\npath = "two.npz"\n', files=())
    assert "[data].key" in err and "'a'" in err and "'b'" in err
