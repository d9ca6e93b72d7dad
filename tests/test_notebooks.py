"""The notebooks in case_studies/notebooks (paired percent-format scripts) execute end to end as notebooks.

Each is converted with jupytext and run cell by cell in a fresh IPython kernel by nbclient, with small settings
(``PSSM_QUICK=1``); a failing cell fails the test with the cell's traceback.  At these sizes XLA compilation is
most of the run, so the kernel compiles with most optimisations off (``JAX_DISABLE_MOST_OPTIMIZATIONS=1``, as
``case_studies/brain_states.py --quick`` does; about 40% less time): the same programs, results equal up to float
rounding, and what the test checks -- every cell runs without error and a report is written -- is unchanged.
"""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "case_studies" / "notebooks").glob("*.py"))


def execute_notebook(path: Path, out_dir: Path, timeout: int = 600):
    """Execute ``path`` (percent format) as a notebook; returns the executed notebook."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    env = {
        "PSSM_QUICK": "1",
        "PSSM_NOTEBOOK_OUT": str(out_dir),
        "PSSM_REPO": str(ROOT),
        "MPLBACKEND": "Agg",
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(out_dir)}}
        ).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return nb


def test_every_notebook_is_paired_and_listed():
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "brain_states_hmm_glm", "smc_tour"}
    for p in NOTEBOOKS:
        assert p.read_text().startswith("# ---\n# jupyter:"), f"{p.name} is not a jupytext percent notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    nb = execute_notebook(path, tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), "a code cell did not run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert list(tmp_path.glob("*.html")), "the notebook wrote no report"
