"""The statistical calibration tests (pytest marker ``slow``), run and reported.

These tests compare against exact answers with Monte Carlo error (posteriors within MCSEs of NUTS on the exact
likelihood, PaRIS/FFBSi errors shrinking like N^-1/2, PPG bias a fifth of PaRIS's, SVI and score ascent at the
exact optimum, unbiased likelihood estimates): 10-50 s each, too slow for the CI suite (``make test`` deselects
them; ``make test-slow`` runs them under pytest).  Prints one JSON object last: ``tests``, ``passed``,
``failed``, ``seconds`` and each test's outcome and time.  ``--quick`` runs the two cheapest (under a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = "unbiased_vs_kalman or unbiased_vs_grid"  # about 10 s each


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the two cheapest tests only (under a minute)")
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (default 2)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "slow.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "slow", f"--junitxml={xml}", "tests"]
        if args.workers > 1:
            cmd[3:3] = ["-n", str(args.workers), "--dist", "loadgroup"]
        if args.quick:
            cmd[-1:-1] = ["-k", QUICK]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "MPLBACKEND": "Agg"})
        seconds = time.perf_counter() - t0
        results = {}
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
            failed = case.find("failure") is not None or case.find("error") is not None
            outcome = "failed" if failed else "skipped" if case.find("skipped") is not None else "passed"
            results[name] = {"outcome": outcome, "seconds": round(float(case.get("time", 0.0)), 1)}
    out = {
        "quick": args.quick,
        "tests": len(results),
        "passed": sum(r["outcome"] == "passed" for r in results.values()),
        "failed": sum(r["outcome"] == "failed" for r in results.values()),
        "pytest_exit_code": proc.returncode,
        "seconds": round(seconds, 1),
        "results": results,
    }
    print(json.dumps(out))
    sys.exit(0 if proc.returncode == 0 else 1)


if __name__ == "__main__":
    main()
