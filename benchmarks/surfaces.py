"""Where users meet pssm: import time, notebooks, the diagnostics report in a real browser, README blocks, the CLI.

Prints one JSON object as its last line with ``import_seconds_over_jax`` (median over fresh processes of the time
``import pssm`` adds to ``import jax, numpyro``), ``notebooks_executed`` (of ``notebooks_total``, executed as
notebooks by nbclient with ``PSSM_QUICK=1``), ``report_figures`` and ``report_figures_loaded_in_browser`` (a report
of an HMM EM fit with posterior predictive checks, loaded in headless Chromium: figures that loaded and are not
blank), ``readme_blocks_run`` of ``readme_blocks`` (README.md's python blocks run in order in one process),
``cli_commands_ok`` of ``cli_commands`` (``pssm info``, ``fit``, ``report``, ``demo --help``, ``--help``).
``--quick`` runs the quickstart notebook only and three import timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

IMPORT_CODE = (
    "import time; t0 = time.perf_counter(); import jax, numpyro; t1 = time.perf_counter(); import pssm; "
    "print(time.perf_counter() - t1)"
)


def import_seconds(repeats: int) -> float:
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", IMPORT_CODE], capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip()))
    return statistics.median(times)


def notebooks(quick: bool, work: Path) -> tuple[int, int]:
    from test_notebooks import NOTEBOOKS, execute_notebook

    chosen = [p for p in NOTEBOOKS if p.stem == "quickstart"] if quick else NOTEBOOKS
    ok = 0
    for path in chosen:
        out = work / f"nb_{path.stem}"
        out.mkdir()
        try:
            execute_notebook(path, out)
            ok += 1
        except Exception as err:  # noqa: BLE001 - count and say which failed
            print(f"notebook {path.name} failed: {type(err).__name__}: {str(err)[-400:]}", file=sys.stderr)
    return ok, len(chosen)


def report_in_browser(work: Path) -> dict:
    import jax
    import jax.numpy as jnp

    from pssm import report, simulate
    from pssm.inference import fit_em
    from pssm.models import HMM, PoissonEmissions
    from pssm.reporting import browser_check

    model = HMM(2, PoissonEmissions(4))
    truth = model.initialize(jax.random.PRNGKey(0), jnp.ones((10, 4)))
    truth = truth._replace(emissions=truth.emissions._replace(rates=jnp.array([[0.5] * 4, [3.0] * 4])))
    _, y = simulate(jax.random.PRNGKey(1), model, truth, 400)
    fit = fit_em(jax.random.PRNGKey(2), model, model.initialize(jax.random.PRNGKey(3), y), y, num_iters=20)
    path = report(fit, work / "report.html", model=model, params=fit.params, data=y, key=jax.random.PRNGKey(4))
    return browser_check(path)


def readme(work: Path) -> tuple[int, int]:
    from test_readme import README, python_blocks

    blocks = python_blocks(README.read_text())
    script = work / "readme_blocks.py"
    script.write_text("\n".join(f"print('### block {i}', flush=True)\n{b}" for i, b in enumerate(blocks)))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=work, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"}
    )
    started = sum(line.startswith("### block") for line in proc.stdout.splitlines())
    return (started if proc.returncode == 0 else started - 1), len(blocks)


def cli(work: Path) -> tuple[int, int]:
    import numpy as np

    exe = Path(sys.executable).parent / "pssm"
    rng = np.random.default_rng(0)
    counts = rng.poisson(np.repeat([[0.5] * 4, [3.0] * 4], 150, axis=0))
    np.save(work / "counts.npy", counts)
    (work / "hmm.toml").write_text(
        '[model]\nkind = "hmm"\nnum_states = 2\nemissions = "poisson"\n\n[data]\npath = "counts.npy"\n\n'
        '[fit]\nalgorithm = "em"\nnum_iters = 10\nseed = 0\n'
    )
    commands = [
        ["--help"],
        ["info", "--json"],
        ["fit", str(work / "hmm.toml"), "--out", str(work / "run")],
        ["report", str(work / "run")],
        ["demo", "--help"],
    ]
    ok = 0
    for c in commands:
        proc = subprocess.run([str(exe), *c], capture_output=True, text=True, cwd=work)
        if proc.returncode == 0:
            ok += 1
        else:
            print(f"pssm {' '.join(c)} failed: {proc.stderr[-400:]}", file=sys.stderr)
    return ok, len(commands)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out: dict = {"import_seconds_over_jax": round(import_seconds(3 if args.quick else 7), 3)}
        out["notebooks_executed"], out["notebooks_total"] = notebooks(args.quick, work)
        check = report_in_browser(work)
        out["report_figures"] = int(check["figures"])
        out["report_figures_loaded_in_browser"] = min(int(check["loaded"]), int(check["nonblank"]))
        out["readme_blocks_run"], out["readme_blocks"] = readme(work)
        out["cli_commands_ok"], out["cli_commands"] = cli(work)
    out["quick"] = args.quick
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
