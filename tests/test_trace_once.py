"""Top-level functions trace once: a second call with the same shapes compiles nothing."""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pssm import discrete_log_potentials, log_joint, simulate
from pssm.inference import (
    fit_svi,
    hmm_smoother,
    hmm_viterbi,
    kalman_log_likelihood,
    kalman_smoother,
    markov_score_climbing,
    paris_particle_gibbs,
    particle_gibbs,
    pmmh,
    score_ascent,
)
from pssm.inference.smc import paris
from pssm.models import HMM, LinearGaussianSSM, PoissonEmissions, StochasticVolatility
from pssm.models.glm.hmm_glm import HMMGLM


def glm2():
    """A fresh two-state HMM-GLM on each call."""
    return HMMGLM(2, 2, inner_steps=1, init_steps=1, init_kmeans=1)


@functools.cache
def glm2_params():
    return glm2().initialize(jax.random.PRNGKey(13), np.ones((30, 2)))


# an optimiser is a pair of functions: reuse the object across calls (a new optax.adam(...) is a new program)
OPT = optax.adam(1e-2)


def _compiles(fn, caplog) -> list[str]:
    """Messages of the XLA compilations that ``fn()`` triggers."""
    caplog.clear()
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        jax.block_until_ready(fn())
    return [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]


@pytest.fixture(scope="module")
def problems():
    lg = LinearGaussianSSM(2, 1)
    p = lg.random_params(jax.random.PRNGKey(0))
    hmm = HMM(3, PoissonEmissions(2))
    hp = hmm.initialize(jax.random.PRNGKey(1), np.ones((5, 2)))
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 1))  # plain NumPy input
    li, lt, ll = np.log(np.full(3, 1 / 3)), np.log(np.full((3, 3), 1 / 3)), rng.normal(size=(40, 3))
    return lg, p, hmm, hp, y, (li, lt, ll)


CALLS = {
    "kalman_smoother": lambda lg, p, hmm, hp, y, h: kalman_smoother(p, y),
    "kalman_log_likelihood": lambda lg, p, hmm, hp, y, h: kalman_log_likelihood(p, y),
    "hmm_smoother": lambda lg, p, hmm, hp, y, h: hmm_smoother(*h),
    "hmm_viterbi": lambda lg, p, hmm, hp, y, h: hmm_viterbi(*h),
    "simulate_lgssm": lambda lg, p, hmm, hp, y, h: simulate(jax.random.PRNGKey(3), lg, p, 40),
    "simulate_hmm": lambda lg, p, hmm, hp, y, h: simulate(jax.random.PRNGKey(4), hmm, hp, 40),
    "log_joint": lambda lg, p, hmm, hp, y, h: log_joint(hmm, hp, np.arange(40) % 3, np.ones((40, 2))),
    "discrete_log_potentials": lambda lg, p, hmm, hp, y, h: discrete_log_potentials(hmm, hp, np.ones((40, 2))),
    # a functional written inline: a new lambda object on every call, the same code -> the same program
    "paris_inline_lambda": lambda lg, p, hmm, hp, y, h: (
        paris(jax.random.PRNGKey(5), lg, p, y, 32, lambda x_prev, x, t: x * x_prev).estimate
    ),
    # samplers and optimisers: a fresh model object and inline lambdas on every call, one program
    "pmmh": lambda lg, p, hmm, hp, y, h: (
        pmmh(
            jax.random.PRNGKey(6),
            StochasticVolatility(),
            StochasticVolatility().make_params(),
            y[:, 0],
            frozen=("phi",),
            num_samples=4,
            num_warmup=3,
            num_chains=2,
            num_particles=16,
        ).samples
    ),
    "particle_gibbs": lambda lg, p, hmm, hp, y, h: (
        particle_gibbs(
            jax.random.PRNGKey(7),
            lg,
            p,
            y,
            conditional=lambda k, path, ys, params: params._replace(dynamics_bias=jnp.mean(path, 0) * 0.1),
            num_samples=3,
            num_particles=8,
            num_chains=2,
        ).paths
    ),
    "paris_particle_gibbs": lambda lg, p, hmm, hp, y, h: (
        paris_particle_gibbs(
            jax.random.PRNGKey(8), lg, p, y, functional=lambda xp, x, t: x, num_particles=8, num_iters=3, burn_in=1
        ).estimate
    ),
    "score_ascent": lambda lg, p, hmm, hp, y, h: (
        score_ascent(
            jax.random.PRNGKey(9),
            lg,
            {"log_q": jnp.zeros(())},
            y,
            params_fn=lambda th: p._replace(dynamics_cov=jnp.exp(th["log_q"]) * jnp.eye(2)),
            optimizer=OPT,
            num_iters=3,
            num_particles=8,
        ).theta
    ),
    # SVI through the discrete bridge: a fresh model, guide and SVI object per call, one compiled update
    "fit_svi": lambda lg, p, hmm, hp, y, h: (
        fit_svi(jax.random.PRNGKey(11), HMM(3, PoissonEmissions(2)), hp, np.ones((40, 2)), num_iters=3).losses
    ),
    # the same for a model holding a NumPy array (the GLM's history basis): no hash, compared by value
    "fit_svi_glm": lambda lg, p, hmm, hp, y, h: (
        fit_svi(jax.random.PRNGKey(12), glm2(), glm2_params(), np.ones((30, 2)), num_iters=3).losses
    ),
    "markov_score_climbing": lambda lg, p, hmm, hp, y, h: (
        markov_score_climbing(
            jax.random.PRNGKey(10), lg, p, y, optimizer=OPT, num_iters=3, num_particles=8, num_chains=2
        ).means
    ),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_second_call_compiles_nothing(name, problems, caplog):
    call = CALLS[name]
    first = _compiles(lambda: call(*problems), caplog)
    assert first, f"{name}: the first call should compile (else this test checks nothing)"
    again = _compiles(lambda: call(*problems), caplog)
    assert again == [], f"{name} compiled again on the same shapes: {again}"
    # new data values, same shapes: still nothing to compile
    li, lt, ll = problems[5]  # (the potentials stay log-probabilities: only the log-likelihoods move)
    shifted = (*problems[:4], problems[4] + 1.0, (li, lt, ll + 0.5))
    assert _compiles(lambda: call(*shifted), caplog) == []


def test_functionals_equal_exactly_when_they_compute_the_same():
    from pssm.inference.smc import AdditiveFunctional

    def scaled(c):
        return AdditiveFunctional.from_fn(lambda x_prev, x, t: c * x)

    two = 2.0
    assert scaled(two) == scaled(two) and hash(scaled(two)) == hash(scaled(two))
    assert scaled(two) != scaled(3.0)  # same code, other closure value
    assert AdditiveFunctional.from_fn(lambda xp, x, t: x) != AdditiveFunctional.from_fn(lambda xp, x, t: -x)


def test_fit_svi_reuses_a_program_only_for_the_same_held_values():
    """Held (frozen) leaves enter the compiled update: swapping the values of two held leaves of one shape must
    build a new update, giving the same result as a run with an empty cache."""
    from pssm.inference.optim import svi as svi_module
    from pssm.models import GaussianEmissions

    model = HMM(2, GaussianEmissions(2, covariance="diagonal"))
    y = np.random.default_rng(0).normal(size=(30, 2))
    p = model.initialize(jax.random.PRNGKey(0), y)
    a, b = jnp.array([[0.5, 1.0], [2.0, 3.0]]), jnp.array([[1.5, 0.7], [0.9, 2.5]])
    first, swapped = (p._replace(emissions=p.emissions._replace(means=m, covs=c)) for m, c in ((a, b), (b, a)))

    def run(q):
        return np.asarray(fit_svi(jax.random.PRNGKey(1), model, q, y, num_iters=3, frozen=["emissions"]).losses)

    run(first)
    after = run(swapped)
    svi_module._UPDATES.clear()
    np.testing.assert_array_equal(after, run(swapped))
