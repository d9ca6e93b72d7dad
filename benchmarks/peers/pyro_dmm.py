"""Host side of the Pyro/PyTorch peer of our deep Markov model (Krishnan et al. 2017): venv set-up and a pinned run.

Importable from the project's virtualenv (standard library only; numpy only inside :func:`make_synthetic_npz`).
:func:`ensure_pyro_venv` creates ``benchmarks/.venv-pyro`` on first use (``torch==2.13.0`` -- a CPU build here --,
``pyro-ppl==1.9.2``, ``numpy``; git-ignored) and :func:`run_pyro_dmm` runs ``pyro_dmm_worker.py`` in it as a
subprocess pinned to ``cpus`` before Python (hence torch) starts, with ``torch.set_num_threads(len(cpus))``, and
returns the worker's JSON dict (its last stdout line).

Matched with the JAX version (by construction of the worker; see its docstring): architecture and sizes (emitter,
gated transition, combiner, backward ReLU RNN with learned ``h_0``, learned ``z_0``/``z_q_0``), the Pyro example's
optimiser settings (ClippedAdam with element-wise clamp, coupled L2 weight decay, per-step lr decay), KL annealing on
the latent sites of model and guide, a single-sample Trace_ELBO summed over the minibatch, the seeded per-epoch
shuffle (``numpy.random.default_rng(seed).permutation``), and the loss normalisation (nats per time step).  Not
matched: random streams (torch vs JAX keys), hence initial weights and ELBO samples; the Pyro side loops over the
minibatch's own longest sequence in Python (no JIT), the JAX side presumably scans a fixed padded length.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".venv-pyro"
WORKER = HERE / "pyro_dmm_worker.py"
TORCH_VERSION = "2.13.0"
PYRO_VERSION = "1.9.2"
_CHECK = (
    "import numpy, torch, pyro; "
    f"assert torch.__version__.split('+')[0] == {TORCH_VERSION!r}, torch.__version__; "
    f"assert pyro.__version__ == {PYRO_VERSION!r}, pyro.__version__"
)


def ensure_pyro_venv() -> Path:
    """Path of the python of ``benchmarks/.venv-pyro``, creating or repairing the environment when needed."""
    py = VENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", _CHECK], capture_output=True).returncode == 0:
        return py
    if not py.exists() or subprocess.run([str(py), "-c", "pass"], capture_output=True).returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", f"torch=={TORCH_VERSION}", f"pyro-ppl=={PYRO_VERSION}", "numpy"],
        check=True,
    )
    subprocess.run([str(py), "-c", _CHECK], check=True)
    return py


def _pin(cpus: list[int] | None):
    """A ``preexec_fn`` pinning the child to ``cpus`` before it execs (``None``: no pinning)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, set(cpus))


def run_pyro_dmm(
    data_path: str | os.PathLike,
    *,
    epochs: int,
    batch_size: int = 20,
    z_dim: int = 100,
    emission_dim: int = 100,
    transition_dim: int = 200,
    rnn_dim: int = 600,
    learning_rate: float = 3e-4,
    beta1: float = 0.96,
    beta2: float = 0.999,
    clip_norm: float = 10.0,
    lr_decay: float = 0.99996,
    weight_decay: float = 2.0,
    annealing_epochs: int = 1000,
    minimum_annealing_factor: float = 0.2,
    seed: int = 0,
    cpus: list[int] | None = None,
    num_threads: int | None = None,
    max_train: int | None = None,
    eval_passes: int = 10,
    eval_batch_size: int = 256,
    evaluate: bool = True,
    timeout: float | None = 6 * 3600.0,
) -> dict:
    """Train the Pyro DMM for ``epochs`` epochs on ``data_path`` in a pinned subprocess; return its JSON result.

    ``cpus``: CPU ids the worker is pinned to (``None``: inherit this process's affinity); ``num_threads``: torch
    threads (default ``len(cpus)``, or the number of usable CPUs).  ``max_train`` keeps the first N training sequences.
    Evaluation (``evaluate``) averages ``eval_passes`` negative-ELBO passes over valid and test.  Raises
    ``RuntimeError`` (with the worker's stderr tail) when the worker fails, ``subprocess.TimeoutExpired`` on timeout.
    """
    py = ensure_pyro_venv()
    if num_threads is None and cpus:
        num_threads = len(cpus)
    cmd = [str(py), str(WORKER), str(Path(data_path).resolve()), "--epochs", str(epochs)]
    for name, val in [
        ("batch-size", batch_size),
        ("z-dim", z_dim),
        ("emission-dim", emission_dim),
        ("transition-dim", transition_dim),
        ("rnn-dim", rnn_dim),
        ("learning-rate", learning_rate),
        ("beta1", beta1),
        ("beta2", beta2),
        ("clip-norm", clip_norm),
        ("lr-decay", lr_decay),
        ("weight-decay", weight_decay),
        ("annealing-epochs", annealing_epochs),
        ("minimum-annealing-factor", minimum_annealing_factor),
        ("seed", seed),
        ("num-threads", num_threads),
        ("max-train", max_train),
        ("eval-passes", eval_passes),
        ("eval-batch-size", eval_batch_size),
        ("cpus", ",".join(map(str, cpus)) if cpus else None),
    ]:
        if val is not None:
            cmd += [f"--{name}", repr(val) if isinstance(val, float) else str(val)]
    if not evaluate:
        cmd.append("--no-eval")
    env = dict(os.environ)
    if num_threads is not None:
        env.update(OMP_NUM_THREADS=str(num_threads), MKL_NUM_THREADS=str(num_threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=_pin(cpus), timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"pyro DMM worker failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_synthetic_npz(path: str | os.PathLike, num_seqs: int = 50, min_len: int = 20, max_len: int = 120, seed=0):
    """Write a small random piano-roll ``.npz`` in the data format (sparse 0/1 rolls, ~4% notes on) to ``path``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in [("train", num_seqs), ("valid", max(2, num_seqs // 5)), ("test", max(2, num_seqs // 5))]:
        lengths = rng.integers(min_len, max_len + 1, size=n).astype(np.int32)
        arrays[f"{split}_rolls"] = (rng.random((int(lengths.sum()), 88)) < 0.04).astype(np.uint8)
        arrays[f"{split}_lengths"] = lengths
    np.savez(path, **arrays)
    return Path(path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Run the Pyro DMM peer (see benchmarks/peers/pyro_dmm_worker.py --help).")
    p.add_argument("data", help=".npz data file (written first with --make-synthetic)")
    p.add_argument("--make-synthetic", action="store_true", help="write a small synthetic data file to DATA first")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--cpus", type=str, default=None, help="comma-separated CPU ids")
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--no-eval", action="store_true")
    a = p.parse_args(argv)
    if a.make_synthetic:
        make_synthetic_npz(a.data)
    cpus = [int(c) for c in a.cpus.split(",")] if a.cpus else None
    res = run_pyro_dmm(
        a.data, epochs=a.epochs, batch_size=a.batch_size, cpus=cpus, max_train=a.max_train, evaluate=not a.no_eval
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
