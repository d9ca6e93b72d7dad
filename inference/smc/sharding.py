"""Sharding the particle axis across devices.

Every SMC entry point (:func:`~pssm.inference.smc.particle_filter`, :func:`~pssm.inference.smc.paris`, the
``*_init`` / ``*_step`` kernels) takes ``sharding=``: a :class:`jax.sharding.NamedSharding` whose mesh axis splits
the leading (particle) axis.  Particle arrays are pinned to it with ``with_sharding_constraint`` after every step;
reductions (log-sum-exp, cumulative sums of resampling, gathers of ancestors) are left to the SPMD partitioner.
Random numbers are generated with JAX's partitionable threefry, so a sharded run reproduces the unsharded run for
the same key (up to floating-point summation order).

The mesh axis is built with ``AxisType.Auto``: with ``Explicit`` axes (the default of ``jax.make_mesh``) a
``cumsum`` over a sharded axis raises ``ShardingTypeError``.  ``num_particles`` must be a multiple of the number of
devices.  Test on CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before JAX starts).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["particle_mesh", "particle_sharding", "shard_particles"]


def particle_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = "particles") -> Mesh:
    """A 1-D mesh over ``devices`` (default: all) with an ``Auto`` axis named ``axis_name``."""
    devs = np.asarray(jax.devices() if devices is None else list(devices))
    if devs.size == 0:
        raise ValueError("particle_mesh needs at least one device.")
    try:
        from jax.sharding import AxisType

        return Mesh(devs, (axis_name,), axis_types=(AxisType.Auto,))
    except (ImportError, TypeError):  # older JAX: every axis is Auto
        return Mesh(devs, (axis_name,))


def particle_sharding(devices: Sequence[jax.Device] | None = None, axis_name: str = "particles") -> NamedSharding:
    """Sharding of the leading (particle) axis over ``devices``; pass it as ``sharding=`` to the SMC functions."""
    mesh = particle_mesh(devices, axis_name)
    return NamedSharding(mesh, PartitionSpec(axis_name))


def shard_particles(tree, sharding: NamedSharding):
    """Place every leaf (leading particle axis) of ``tree`` on ``sharding`` (outside ``jit``)."""
    return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)
