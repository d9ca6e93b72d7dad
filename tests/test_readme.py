"""README.md's ```python blocks run as written, in order, in one namespace (later blocks use earlier names)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in FENCE.finditer(text)]


def test_readme_has_the_documented_examples():
    text = README.read_text()
    blocks = python_blocks(text)
    assert len(blocks) >= 4
    code = "\n".join(blocks)
    for name in ("smoother(", "paris(", "particle_filter(", "HMMGLM(", "fit_em(", "from pssm.reporting import report"):
        assert name in code, name
    assert text.splitlines()[3].startswith("make demo") and text.splitlines()[4].startswith("make test")
    for cmd in ("pssm demo", "pssm fit", "pssm report", "pssm info"):
        assert cmd in text, cmd


def test_readme_python_blocks_run(tmp_path):
    blocks = python_blocks(README.read_text())
    # one script: each block is marked so a failure names its block
    parts = [f"print('### block {i}', flush=True)\n{b}" for i, b in enumerate(blocks)]
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n".join(parts))
    # XLA compilation is most of this run: compile with most optimisations off (results equal up to float rounding;
    # the test checks that every block runs and writes its reports, whatever the compiler settings)
    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=400, env=env
    )
    started = [line for line in proc.stdout.splitlines() if line.startswith("### block")]
    assert proc.returncode == 0, f"failed in {started[-1] if started else 'start-up'}:\n{proc.stderr[-4000:]}"
    assert len(started) == len(blocks)
    for name in ("hmm_glm_report.html", "sv_filter_report.html", "sv_pmmh_report.html"):
        assert (tmp_path / name).stat().st_size > 1000, name
