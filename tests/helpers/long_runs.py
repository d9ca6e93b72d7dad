"""Small instances of every long run that takes ``checkpoint=`` (shared by the tests and benchmarks/bad_inputs.py).

``RUNS[name] = (run, (module, attribute), calls)``: ``run(checkpoint)`` performs the whole run and returns the
pytree of its results that an interrupted-and-resumed run must reproduce bit for bit; the module attribute is the
jitted step the run calls once per chunk or iteration, which a test replaces to interrupt the run after ``calls``
calls (mid-way, past at least one checkpoint).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pssm.inference.chunked as chunked
import pssm.inference.optim.em as em
from pssm import simulate
from pssm.inference import (
    fit_em,
    fit_em_restarts,
    fit_svi,
    markov_score_climbing,
    paris_particle_gibbs,
    particle_gibbs,
    pmmh,
    score_ascent,
)
from pssm.models import HMM, HMMGLM, GaussianEmissions, LinearGaussianSSM, StochasticVolatility

OPT = optax.adam(1e-2)


def _lgssm():
    lg = LinearGaussianSSM(2, 1)
    p = lg.random_params(jax.random.PRNGKey(0))
    _, y = simulate(jax.random.PRNGKey(1), lg, p, 30)
    return lg, p, y


def _hmm():
    model = HMM(2, GaussianEmissions(1))
    y = np.concatenate([np.random.default_rng(0).normal(m, 1.0, size=(40, 1)) for m in (-2.0, 2.0, -2.0)])
    return model, y


def _pmmh(checkpoint):
    y = np.random.default_rng(2).normal(size=30)
    sv = StochasticVolatility()
    r = pmmh(
        jax.random.PRNGKey(6), sv, sv.make_params(), y, frozen=("phi",), num_samples=6, num_warmup=4,
        num_chains=2, num_particles=16, chunk_size=2, checkpoint=checkpoint,
    )  # fmt: skip
    return r.samples, r.log_likelihood, r.accepted


def _pg(checkpoint):
    lg, p, y = _lgssm()
    r = particle_gibbs(
        jax.random.PRNGKey(7), lg, p, y,
        conditional=lambda k, path, ys, params: params._replace(dynamics_bias=jnp.mean(path, 0) * 0.1),
        num_samples=6, num_particles=8, num_chains=2, chunk_size=2, checkpoint=checkpoint,
    )  # fmt: skip
    return r.paths, r.params, r.log_likelihood, r.state


def _ppg(checkpoint):
    lg, p, y = _lgssm()
    r = paris_particle_gibbs(
        jax.random.PRNGKey(8), lg, p, y, functional=lambda xp, x, t: x, num_particles=8, num_iters=7, burn_in=1,
        chunk_size=2, checkpoint=checkpoint,
    )  # fmt: skip
    return r.estimate, r.estimates, r.log_likelihoods, r.state


def _score_ascent(checkpoint):
    lg, p, y = _lgssm()
    r = score_ascent(
        jax.random.PRNGKey(9), lg, {"log_q": jnp.zeros(())}, y,
        params_fn=lambda th: p._replace(dynamics_cov=jnp.exp(th["log_q"]) * jnp.eye(2)),
        optimizer=OPT, num_iters=6, num_particles=8, chunk_size=2, checkpoint=checkpoint,
    )  # fmt: skip
    return r.theta, r.theta_trace, r.score_trace, r.log_likelihood_trace, r.state


def _msc(checkpoint):
    lg, p, y = _lgssm()
    r = markov_score_climbing(
        jax.random.PRNGKey(10), lg, p, y, optimizer=OPT, num_iters=6, num_particles=8, num_chains=2, chunk_size=2,
        checkpoint=checkpoint,
    )  # fmt: skip
    return r.means, r.covs, r.log_q_trace, r.log_likelihood_trace, r.state


def _fit_em(checkpoint):
    model, y = _hmm()
    r = fit_em(
        jax.random.PRNGKey(11), model, model.initialize(jax.random.PRNGKey(12), y), y, num_iters=8, tol=0.0,
        checkpoint=checkpoint, checkpoint_every=2,
    )  # fmt: skip
    return r.params, r.log_objective, r.log_likelihoods, r.m_step_state, r.posterior.smoothed_probs


def _restarts(checkpoint, key, model, y, num_restarts, num_iters, every):
    best, runs = fit_em_restarts(
        jax.random.PRNGKey(key), model, y, num_restarts=num_restarts, num_iters=num_iters, tol=0.0,
        checkpoint=checkpoint, checkpoint_every=every,
    )  # fmt: skip
    return best.params, [r.log_objective for r in runs]


def _em_restarts(checkpoint):
    return _restarts(checkpoint, 13, *_hmm(), num_restarts=3, num_iters=6, every=2)


def _hmm_glm_restarts(checkpoint):
    y = np.random.default_rng(3).poisson(0.5, size=(60, 3)).astype(float)
    return _restarts(checkpoint, 14, HMMGLM(2, 3, basis=None, shared_bias=False), y, 2, 4, 1)


def _fit_svi(checkpoint):
    lg, p, y = _lgssm()
    r = fit_svi(jax.random.PRNGKey(15), lg, p, y, num_iters=12, chunk_size=4, checkpoint=checkpoint)
    return r.params, r.losses, r.guide_params


CHUNK = (chunked, "_run_chunk")
EM_STEP = (em, "_em_step_jit")
RUNS = {
    "pmmh": (_pmmh, CHUNK, 3),
    "particle_gibbs": (_pg, CHUNK, 2),
    "paris_particle_gibbs": (_ppg, CHUNK, 2),
    "score_ascent": (_score_ascent, CHUNK, 2),
    "markov_score_climbing": (_msc, CHUNK, 2),
    "fit_svi": (_fit_svi, CHUNK, 2),
    "fit_em": (_fit_em, EM_STEP, 5),
    "fit_em_restarts": (_em_restarts, EM_STEP, 8),
    "fit_em_restarts[HMM-GLM]": (_hmm_glm_restarts, EM_STEP, 5),
}


def max_abs_diff(a, b) -> float:
    """Largest absolute difference over two pytrees of arrays (inf when their structures or shapes differ)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(la) != len(lb):
        return float("inf")
    out = 0.0
    for x, y in zip(la, lb, strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            same = (x == y) | (np.isnan(x) & np.isnan(y))
            out = max(out, float(np.max(np.where(same, 0.0, np.abs(x - y)))))
    return out
