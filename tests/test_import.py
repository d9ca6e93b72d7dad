"""Importing pssm is light: the heavy optional libraries load only where they are used."""

import subprocess
import sys

import pytest

HEAVY = ("arviz", "matplotlib", "pandas", "h5py", "xarray")


@pytest.mark.parametrize("module", ["pssm", "pssm.models", "pssm.inference", "pssm.inference.smc"])
def test_import_loads_no_heavy_library(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = [m for m in out.stdout.strip().split(",") if m]
    assert loaded == [], f"import {module} loaded {loaded}"


def test_lazy_names_still_work():
    code = (
        "import pssm, pssm.inference as inf; from pssm import to_arviz, report, Sequences, read_nwb;"
        "assert callable(report) and callable(inf.fit_em); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
