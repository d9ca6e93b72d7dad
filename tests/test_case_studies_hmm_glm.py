"""The two HMM-GLM case studies run end to end in their --quick modes on the bundled real data."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _jax_settings() -> dict:
    return {k: v for k, v in os.environ.items() if k.startswith(("JAX_", "XLA_"))}


def _run(script: str, *args: str, timeout: int = 300) -> dict:
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        # a bare environment, but the suite's compiler settings and its shared compilation cache (conftest.py)
        env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "HOME": str(ROOT), **_jax_settings()},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_brain_states_quick(tmp_path):
    out = _run("case_studies/brain_states.py", "--quick", "--out", str(tmp_path))
    figures = (
        "figure_heldout.png",
        "figure_heading.png",
        "figure_states.png",
        "figure_states_zoom.png",
        "figure_slow_states.png",
        "figure_slow_connectivity.png",
        "figure_adjacency.png",
    )
    for name in figures:
        assert (tmp_path / name).stat().st_size > 10_000, name
    assert json.loads((tmp_path / "summary.json").read_text()) == out
    # one self-contained page holds every figure and table
    assert Path(out["report"]) == tmp_path / "report.html"
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<img") >= len(figures) == out["num_figures"]
    assert page.count("<table>") >= 8
    for section in ("Held-out comparison", "heading assemblies", "Slow brain states", "Connectivity", "ArviZ summary"):
        assert section in page, section

    # held-out comparison of the fast models
    ll = out["heldout_ll_per_model"]
    assert set(ll) == {"GLM", "GHG-2"}
    assert all(math.isfinite(v) for v in ll.values())
    assert out["best_model"] in ll and ll[out["best_model"]] == max(ll.values())
    assert out["train_ll_per_model"]["GHG-2"] > out["train_ll_per_model"]["GLM"] + 0.5
    assert ll["GHG-2"] > ll["GLM"] + 0.5
    assert all(v > 0.3 for v in out["heldout_bits_per_spike"].values())

    # fast states carry information about the head angle in wake; the shifted control carries next to none
    mi, mi_shift = out["heading_state_information_bits"], out["heading_state_information_shifted_bits"]
    assert math.isfinite(mi) and math.isfinite(mi_shift)
    assert 0.05 < mi <= out["heading_state_entropy_bits"] + 1e-9
    assert abs(mi_shift) < 0.05 and mi > mi_shift + 0.1
    assert out["heading_state_information_plugin_bits"] >= mi  # Miller-Madow only removes bias
    assert out["heading_num_bins_wake"] > 2000  # tracking covers ~530 s of wake

    # slow states (two timescales, 60 s a-priori dwell) recover sleep and wake; one timescale does not
    agree, chance = out["sleep_wake_state_agreement"], out["sleep_wake_chance_agreement"]
    assert 0.0 <= chance <= 1.0 and 0.0 <= agree <= 1.0
    assert agree > 0.8 and agree > chance + 0.2, (agree, chance)
    assert out["one_timescale_agreement"] < agree - 0.1
    assert out["slow_dwell_prior_s"] == 60.0
    assert abs(out["slow_bin_s"] / (1.0 - out["slow_self_transition"]) - 60.0) < 1e-6
    assert sorted(out["slow_state_to_epoch"]) == ["sleep", "wake"]
    rip = out["slow_ripple_occupancy"]
    assert abs(sum(rip) - 1.0) < 1e-9
    assert rip[out["slow_state_to_epoch"].index("sleep")] > 0.9  # ripples happen in the sleep-like state
    slow_ll = out["slow_heldout_ll_per_bin"]
    assert slow_ll["two-timescale 2x4"] > slow_ll["one-timescale 2-state"] > slow_ll["homogeneous Poisson"]
    conn = out["slow_state_connectivity"]
    assert len(conn) == 2
    for c in conn.values():
        assert c["bins"] > 1000 and all(math.isfinite(v) for v in c.values())
    assert abs(sum(out["ripple_occupancy_best"]) - 1.0) < 1e-9

    # ArviZ summary of the best model (variables named by params leaf, pssm.params.leaf_names): transition rows on
    # the simplex, one per-state bias per unit, and the sticky prior keeps the states persistent
    summ = pd.read_csv(tmp_path / "arviz_summary.csv", index_col=0)
    for s in range(2):
        row = summ.loc[[i for i in summ.index if i.startswith(f"transitions.matrix[{s},")], "mean"]
        assert len(row) == 2 and abs(row.sum() - 1.0) < 2e-3
        assert summ.loc[f"transitions.matrix[{s}, {s}]", "mean"] > 0.5
    bias = [i for i in summ.index if i.startswith("emissions.bias[")]
    assert len(bias) == 2 * out["num_units"] and summ.loc[bias, "mean"].notna().all()


def test_rat_decisions_quick(tmp_path):
    out = _run("case_studies/rat_decisions.py", "--quick", "--out", str(tmp_path))
    for name in ("figure_psychometric.png", "figure_cv.png", "figure_sessions.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    assert (tmp_path / "report.md").read_text().startswith("# Decision-making states")
    assert json.loads((tmp_path / "summary.json").read_text()) == out
    bits = out["bits_per_trial_vs_glm"]
    assert set(bits) == {"1", "2", "3"} and bits["1"] == 0.0
    assert out["timing"]["seconds"] > 0
    # more states fit the training sessions better than the GLM
    train = out["train_bits_per_trial_vs_glm"]
    assert 0.005 < train["2"] < train["3"] + 1e-3
    # held out: the GLM-HMM beats the GLM and the GLM beats bias-only, close to the dynamax numbers (DESIGN §3:
    # +0.020 for K=2, +0.030 for K=3, GLM +0.079 over bias-only); per-fold SEMs are ~0.002 and ~0.008
    assert abs(bits["2"] - 0.020) < 0.012 and abs(bits["3"] - 0.030) < 0.012, bits
    assert abs(out["glm_vs_bias_bits_per_trial"] - 0.079) < 0.03
    assert abs(sum(out["state_occupancy"]) - 1.0) < 1e-4
    assert all(math.isfinite(v) for w in out["state_weights"].values() for v in w)
