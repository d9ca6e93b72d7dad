"""The problem both the multi-process workers and the single-process reference solve."""

import jax

from pssm import simulate
from pssm.models import LinearGaussianSSM

N, NUM_KEYS = 64, 4


def problem():
    lg = LinearGaussianSSM(1, 1)
    p = lg.make_params(dynamics_weights=[[0.8]], dynamics_cov=[[1.0]], emission_weights=[[1.0]], emission_cov=[[0.5]])
    _, y = simulate(jax.random.PRNGKey(0), lg, p, 20)
    return lg, p, y
