"""pssm — probabilistic state-space models and inference on JAX and NumPyro.

Core (this package): the model protocol (:class:`SSM`, :func:`simulate`, :func:`log_joint`), data containers and
validation, ArviZ conversion (:func:`to_arviz`), metrics
and plotting.  Model families live in :mod:`pssm.models`, algorithms in :mod:`pssm.inference`.

Importing pssm changes no global JAX configuration; enable float64 yourself with
``jax.config.update("jax_enable_x64", True)`` if you want it.
"""

from pssm.arviz import to_arviz
from pssm.data import (
    BinnedSpikes,
    Sequences,
    bin_spikes,
    intervals_to_labels,
    intervals_to_mask,
    split_by_group,
    train_test_split_blocks,
)
from pssm.io import load, save
from pssm.nwb import NWBRecording, read_nwb
from pssm.protocol import SSM, discrete_log_potentials, inputs_at, log_joint, simulate

__version__ = "0.1.0"


def report(result, path, **kwargs):
    """Write a self-contained HTML diagnostics page for ``result``; see :func:`pssm.reporting.report`."""
    from pssm.reporting import report as _report

    return _report(result, path, **kwargs)


__all__ = [
    "BinnedSpikes",
    "NWBRecording",
    "Sequences",
    "bin_spikes",
    "intervals_to_labels",
    "intervals_to_mask",
    "read_nwb",
    "report",
    "save",
    "load",
    "split_by_group",
    "train_test_split_blocks",
    "SSM",
    "discrete_log_potentials",
    "inputs_at",
    "log_joint",
    "simulate",
    "to_arviz",
]
