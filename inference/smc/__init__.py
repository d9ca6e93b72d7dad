"""Sequential Monte Carlo engine: particle filters, backward kernels, FFBSi and PaRIS on the model protocol.

Layers, each usable on its own:

* **Resampling** (:mod:`.resampling`): ``multinomial``, ``stratified``, ``systematic``, ``residual`` with one
  signature ``(key, log_weights, num_samples) -> indices``; ``ess``/``log_ess``; ``normalize_log_weights``.
* **Filters** (:mod:`.filter`): a :class:`FeynmanKac` (``bootstrap``, ``guided``, ``auxiliary``) says how particles
  move and are weighted.  Kernels ``filter_init(key, fk, params, y0, N, u0)`` and ``filter_step(key, state, fk,
  params, y_t, u_t)`` return ``(ParticleFilterState, ParticleFilterInfo)``; the step is the composition of the
  pure pieces :func:`select_ancestors` → :func:`propagate` → :func:`reweight` so conditional filters can pin a
  particle in between.  :func:`particle_filter` scans them: log-likelihood (unbiased on the natural scale),
  ESS/resampling flags per step, filtering means or any test function, the collapse flag, optional history.
* **Backward kernels** (:mod:`.backward`): :class:`ExactBackward`, :class:`RejectionBackward` (hybrid),
  :class:`MCMCBackward`, all called as ``kernel(key, log_transition, particles_prev, log_weights_prev,
  particles_next, ancestors, log_bound, num_draws) -> (M, num_draws) indices``.
* **Smoothers**: :func:`ffbsi` (trajectories from a filter history), :func:`marginal_smoother` (FFBSm weights,
  means, variances), :func:`particle_smoother` (filter + FFBSi); :func:`paris` (offline) and
  :func:`paris_init` / :func:`paris_step` (streaming) for additive functionals, with the pure recursion
  :func:`paris_tau_update` / :func:`paris_tau_from_indices` / :func:`paris_update` reusable by conditional PaRIS
  (PPG); :func:`score_functional` and
  :func:`paris_score` give the Fisher-identity score.
* **Scale**: ``sharding=particle_sharding()`` splits the particle axis over devices; ``vmap`` the top-level functions
  over keys, data or parameter sets.
* **Output**: every result is a ``NamedTuple`` registered with :func:`pssm.to_arviz`;
  :func:`plot_smoothed_states` draws smoothed states with bands.

Keys come first and are never defaulted; all inputs are validated at the top-level functions; inside ``jit``
problems are reported by flags (``collapsed``) rather than NaN.
"""

from pssm.inference.smc.backward import BackwardKernel, ExactBackward, MCMCBackward, RejectionBackward
from pssm.inference.smc.ffbsi import (
    FFBSiResult,
    MarginalSmootherResult,
    ffbsi,
    marginal_smoother,
    particle_smoother,
)
from pssm.inference.smc.filter import (
    FeynmanKac,
    ParticleFilterInfo,
    ParticleFilterResult,
    ParticleFilterState,
    ParticleHistory,
    as_feynman_kac,
    filter_init,
    filter_step,
    particle_filter,
    particle_keys,
    propagate,
    reweight,
    select_ancestors,
)
from pssm.inference.smc.keys import fast_key
from pssm.inference.smc.paris import (
    AdditiveFunctional,
    PaRISResult,
    PaRISState,
    default_backward_kernel,
    paris,
    paris_estimate,
    paris_init,
    paris_score,
    paris_step,
    paris_tau_from_indices,
    paris_tau_update,
    paris_update,
    score_functional,
)
from pssm.inference.smc.plotting import plot_smoothed_states
from pssm.inference.smc.resampling import (
    RESAMPLERS,
    ess,
    log_ess,
    multinomial,
    normalize_log_weights,
    residual,
    stratified,
    systematic,
)
from pssm.inference.smc.sharding import particle_mesh, particle_sharding, shard_particles

__all__ = [
    "AdditiveFunctional",
    "BackwardKernel",
    "ExactBackward",
    "FFBSiResult",
    "FeynmanKac",
    "MCMCBackward",
    "MarginalSmootherResult",
    "PaRISResult",
    "PaRISState",
    "ParticleFilterInfo",
    "ParticleFilterResult",
    "ParticleFilterState",
    "ParticleHistory",
    "RESAMPLERS",
    "RejectionBackward",
    "as_feynman_kac",
    "default_backward_kernel",
    "ess",
    "ffbsi",
    "filter_init",
    "filter_step",
    "log_ess",
    "marginal_smoother",
    "multinomial",
    "normalize_log_weights",
    "paris",
    "paris_estimate",
    "paris_init",
    "paris_score",
    "paris_step",
    "paris_tau_from_indices",
    "paris_tau_update",
    "paris_update",
    "particle_filter",
    "particle_keys",
    "fast_key",
    "particle_mesh",
    "particle_sharding",
    "particle_smoother",
    "plot_smoothed_states",
    "propagate",
    "residual",
    "reweight",
    "score_functional",
    "select_ancestors",
    "shard_particles",
    "stratified",
    "systematic",
]
