"""Small fixed models shared by the tests and benchmarks/bad_inputs.py."""

import jax.numpy as jnp

import pssm.models as pm

POISSON_RATES = ((1.0, 2.0, 3.0), (5.0, 1.0, 4.0))


def poisson_hmm() -> tuple:
    """A 2-state Poisson HMM on 3 counts (sticky, self-transition 0.85) and its params."""
    m = pm.HMM(2, pm.PoissonEmissions(3))
    p = pm.HMMParams(
        pm.InitialParams(jnp.array([0.6, 0.4])),
        pm.TransitionParams(pm.sticky_matrix(2, 0.85)),
        pm.PoissonParams(jnp.asarray(POISSON_RATES)),
    )
    return m, p
