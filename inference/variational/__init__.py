"""Variational inference for state-space models: deep VAE-SSM training (ELBO / IWAE / FIVO), bounds, and
variational smoothing of any continuous-state model (structured Gaussian-Markov guide, or an amortised encoder)."""

from pssm.inference.variational.bounds import (
    encoder_feynman_kac,
    fivo_log_likelihood,
    path_log_weight,
    sample_log_weights,
    sequence_bound,
)
from pssm.inference.variational.numpyro_vae import make_vae_guide, make_vae_model
from pssm.inference.variational.smoothing import (
    GUIDE_SITES,
    VariationalSmootherResult,
    gaussian_markov_guide,
    guide_params_to_q,
    variational_smoother,
)
from pssm.inference.variational.training import (
    BOUNDS,
    ParticleBound,
    VAEResult,
    clipped_adam,
    evaluate_bound,
    fit_vae,
)

__all__ = [
    "GUIDE_SITES",
    "VariationalSmootherResult",
    "gaussian_markov_guide",
    "guide_params_to_q",
    "variational_smoother",
    "BOUNDS",
    "ParticleBound",
    "VAEResult",
    "clipped_adam",
    "encoder_feynman_kac",
    "evaluate_bound",
    "fit_vae",
    "fivo_log_likelihood",
    "make_vae_guide",
    "make_vae_model",
    "path_log_weight",
    "sample_log_weights",
    "sequence_bound",
]
