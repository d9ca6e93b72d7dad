"""Case studies and benchmarks run end to end in their --quick modes, on the bundled real data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: int = 300) -> dict:
    # --quick runs are mostly XLA compilation: compile with most optimisations off (results equal up to float
    # rounding, far inside the tolerances below; as brain_states.py --quick does itself)
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "MPLBACKEND": "Agg", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sleep_wake_demo_quick(tmp_path):
    out = _run("case_studies/sleep_wake_hmm.py", "--quick", "--out", str(tmp_path))
    assert (tmp_path / "figure_states.png").stat().st_size > 10_000
    assert (tmp_path / "report.md").read_text().startswith("# Sleep/wake states")
    assert json.loads((tmp_path / "summary.json").read_text()) == out
    S = str(out["num_states_for_agreement"])
    # decoded states separate sleep from wake well above the shifted-path chance control
    assert out["sleep_wake_state_agreement"] > out["chance_agreement_by_num_states"][S] + 0.1
    assert out["sleep_wake_state_agreement"] > 0.7


@pytest.mark.slow
@pytest.mark.parametrize("script", ["benchmarks/exact_references.py"])
def test_exact_reference_benchmark_quick(script):
    out = _run(script, "--quick")
    assert out["kalman_max_abs_err"] < 1e-8
    assert out["forward_backward_max_abs_err"] < 1e-8
    assert out["viterbi_mismatches"] == 0
