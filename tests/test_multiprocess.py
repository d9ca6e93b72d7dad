"""Beyond one process with JAX's own runtime: 2 CPU processes on localhost (``jax.distributed``, gloo collectives)
shard the particle axis of the filter and PaRIS, and a batch of independent runs, and get the single-process
results for the same keys."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))
from multiprocess_problem import NUM_KEYS, N, problem  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one():
    from pssm.inference.smc import paris, particle_filter

    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(HELPERS / "multiprocess_worker.py"), str(i), "2", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert [o["process"] for o in outs] == [0, 1] and all(o["devices"] == 2 for o in outs)

    lg, p, y = problem()
    ref_pf = float(particle_filter(jax.random.PRNGKey(1), lg, p, y, N).log_likelihood)
    ref_pa = np.asarray(paris(jax.random.PRNGKey(2), lg, p, y, N, lambda xp, x, t: x * xp).estimate)
    keys = jax.random.split(jax.random.PRNGKey(3), NUM_KEYS)
    ref_batch = np.asarray(jax.vmap(lambda k: particle_filter(k, lg, p, y, N).log_likelihood)(keys))
    for o in outs:
        np.testing.assert_allclose(o["pf"], ref_pf, rtol=1e-6)
        np.testing.assert_allclose(o["paris"], ref_pa, rtol=1e-6)
        np.testing.assert_allclose(o["batch"], ref_batch, rtol=1e-6)
