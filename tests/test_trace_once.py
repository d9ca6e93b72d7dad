"""Top-level functions trace once: a second call with the same shapes compiles nothing."""

import logging

import jax
import numpy as np
import pytest

from pssm import simulate
from pssm.inference import hmm_smoother, hmm_viterbi, kalman_log_likelihood, kalman_smoother
from pssm.inference.smc import paris
from pssm.models import HMM, LinearGaussianSSM, PoissonEmissions


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
    # a functional written inline: a new lambda object on every call, the same code -> the same program
    "paris_inline_lambda": lambda lg, p, hmm, hp, y, h: (
        paris(jax.random.PRNGKey(5), lg, p, y, 32, lambda x_prev, x, t: x * x_prev).estimate
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
    shifted = (*problems[:4], problems[4] + 1.0, tuple(a + 0.5 for a in problems[5]))
    assert _compiles(lambda: call(*shifted), caplog) == []


def test_functionals_equal_exactly_when_they_compute_the_same():
    from pssm.inference.smc import AdditiveFunctional

    def scaled(c):
        return AdditiveFunctional.from_fn(lambda x_prev, x, t: c * x)

    two = 2.0
    assert scaled(two) == scaled(two) and hash(scaled(two)) == hash(scaled(two))
    assert scaled(two) != scaled(3.0)  # same code, other closure value
    assert AdditiveFunctional.from_fn(lambda xp, x, t: x) != AdditiveFunctional.from_fn(lambda xp, x, t: -x)
