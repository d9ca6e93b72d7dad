"""Inference algorithms: pure functions over the model protocol and arrays (one file per algorithm)."""

from pssm.inference.em import EMResult, as_batch, e_step, fit_em, fit_em_restarts
from pssm.inference.forward_backward import (
    HMMFilterResult,
    HMMPosterior,
    hmm_filter,
    hmm_log_likelihood,
    hmm_posterior_sample,
    hmm_smoother,
    hmm_viterbi,
)
from pssm.inference.kalman import (
    KalmanFilterResult,
    KalmanSmootherResult,
    kalman_filter,
    kalman_log_likelihood,
    kalman_posterior_sample,
    kalman_smoother,
)

__all__ = [
    "EMResult",
    "as_batch",
    "e_step",
    "fit_em",
    "fit_em_restarts",
    "HMMFilterResult",
    "HMMPosterior",
    "hmm_filter",
    "hmm_log_likelihood",
    "hmm_posterior_sample",
    "hmm_smoother",
    "hmm_viterbi",
    "KalmanFilterResult",
    "KalmanSmootherResult",
    "kalman_filter",
    "kalman_log_likelihood",
    "kalman_posterior_sample",
    "kalman_smoother",
]
