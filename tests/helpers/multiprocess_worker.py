"""One process of a multi-process (``jax.distributed``) run, started by tests/test_multiprocess.py.

``python multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT``: joins the CPU collectives (gloo) on localhost,
runs a bootstrap filter and PaRIS with the particle axis sharded over every process's devices, and a batch of
independent filters (one per key) sharded over processes, then prints one JSON line with the gathered results.
"""

import json
import sys

import jax

pid, nproc, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)

import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from pssm.inference.smc import paris, particle_filter, particle_mesh, particle_sharding  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from multiprocess_problem import NUM_KEYS, N, problem  # noqa: E402

lg, p, y = problem()
sharding = particle_sharding()  # every device of every process
pf = particle_filter(jax.random.PRNGKey(1), lg, p, y, N, sharding=sharding)
pa = paris(jax.random.PRNGKey(2), lg, p, y, N, lambda xp, x, t: x * xp, sharding=sharding)

# independent runs (chains, sequences): the key batch is split over processes, each runs its share
mesh = particle_mesh(axis_name="runs")
keys = jax.random.split(jax.random.PRNGKey(3), NUM_KEYS)
local = np.asarray(jax.random.key_data(keys))[pid * NUM_KEYS // nproc : (pid + 1) * NUM_KEYS // nproc]
global_keys = multihost_utils.host_local_array_to_global_array(local, mesh, PartitionSpec("runs"))
batch = jax.jit(
    jax.vmap(lambda k: particle_filter(k, lg, p, y, N).log_likelihood),
    out_shardings=NamedSharding(mesh, PartitionSpec("runs")),
)(global_keys)


def gather(a):
    return np.asarray(multihost_utils.process_allgather(a, tiled=True)).tolist()


print(
    json.dumps(
        {
            "process": jax.process_index(),
            "devices": jax.device_count(),
            "pf": gather(pf.log_likelihood),
            "paris": gather(pa.estimate),
            "batch": gather(batch),
        }
    ),
    flush=True,
)
jax.distributed.shutdown()
