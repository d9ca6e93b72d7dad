"""Property tests (hypothesis) for the particle, PMCMC, optimisation and variational entry points.

For random NaN patterns, dtypes and shapes, every call either raises ``ValueError`` naming the emissions, or returns a
finite result that agrees with the exact answer for the observed values:

* particle filter, PaRIS and the FFBSi smoother on a 2-D Gaussian emission with NaN *entries* agree with the Kalman
  likelihood and RTS means computed on the observed entries only (tolerances about 8 Monte Carlo standard errors,
  set from the spread over 20 keys; see ``benchmarks/statistical_tests.py`` for the calibrated z-tests);
* conditional SMC, particle Gibbs, PaRIS particle Gibbs, PMMH, score ascent, Markov score climbing, the variational
  smoother, SVI and the VAE bounds, for NaN *rows*, equal bit for bit the same call (same key) on data with garbage
  at those rows and ``mask=False`` there: the observation is removed, not read.

Shapes are fixed within each test, so each entry point compiles once and the examples only change values.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers.problems import poisson_hmm
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import pssm.models as pm
from pssm import simulate
from pssm.data import Sequences
from pssm.inference import (
    conditional_smc,
    fit_svi,
    kalman_log_likelihood,
    kalman_posterior_sample,
    kalman_smoother,
    markov_score_climbing,
    paris_particle_gibbs,
    particle_gibbs,
    pmmh,
    score_ascent,
)
from pssm.inference.smc import AdditiveFunctional, paris, paris_score, particle_filter, particle_smoother
from pssm.inference.variational import evaluate_bound, variational_smoother
from pssm.models.testing import ScalarLinearGaussian, scalar_lg_conjugate_conditional

pytestmark = pytest.mark.xdist_group("properties_inference")
SETTINGS = settings(
    deadline=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: each example costs a compiled call
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SPARSE = st.sampled_from([False, False, True])
K = jax.random.key
T = 8


@functools.cache
def lg2():
    """1-D latent AR(1), 2-D correlated Gaussian emission: a NaN entry leaves the other entry's marginal."""
    m = pm.LinearGaussianSSM(1, 2)
    p = m.make_params(
        dynamics_weights=[[0.8]],
        dynamics_cov=[[0.5]],
        emission_weights=[[1.0], [0.6]],
        emission_cov=[[0.4, 0.15], [0.15, 0.3]],
    )
    return m, p, np.asarray(simulate(K(0), m, p, T)[1], np.float64)


@st.composite
def entry_data(draw):
    holes = draw(arrays(bool, (T, 2), elements=SPARSE))
    shape = draw(st.sampled_from(["(T, 2)"] * 4 + ["(T, 3)", "(T,)", "(2, T)"]))
    return holes, shape, draw(st.sampled_from(["float32", "float64", "list"]))


def _as(y: np.ndarray, shape: str, dtype: str):
    y = {"(T, 2)": y, "(T, 3)": np.concatenate([y, y[:, :1]], 1), "(T,)": y[:, 0], "(2, T)": y.T}[shape]
    return y.tolist() if dtype == "list" else y.astype(dtype)


# Tolerances, about 7 standard deviations: measured over 20 keys on the example data with four hole patterns (none,
# 1/3, 2/3 and 15 of 16 entries missing), the largest sd was 0.029 for the log-likelihood at N=8192 and 0.14 for the
# PaRIS sum at N=2048; the FFBSi mean path (512 paths) was at most 0.24 from the RTS means over the 8 steps.
TOL_LL, TOL_PARIS, TOL_FFBSI = 0.2, 0.9, 0.45


@settings(SETTINGS, max_examples=14)
@given(problem=entry_data())
def test_filter_paris_and_ffbsi_with_nan_entries_agree_with_kalman_on_the_observed_entries(problem):
    m, p, y0 = lg2()
    holes, shape, dtype = problem
    y = np.where(holes, np.nan, y0)
    data = _as(y, shape, dtype)
    calls = {
        "filter": lambda: particle_filter(K(1), m, p, data, 8192),
        "paris": lambda: paris(K(2), m, p, data, 2048, lambda xp, x, t: x),
        "ffbsi": lambda: particle_smoother(K(3), m, p, data, 512, 512),
    }
    if shape != "(T, 2)":
        for name, call in calls.items():
            with pytest.raises(ValueError, match="emissions"):
                call()
            del name
        return
    exact_ll = float(kalman_log_likelihood(p, y))
    means = np.asarray(kalman_smoother(p, y).smoothed_means, np.float64)[:, 0]
    res = calls["filter"]()
    assert np.isfinite(float(res.log_likelihood)) and not bool(res.collapsed)
    assert abs(float(res.log_likelihood) - exact_ll) < TOL_LL, (float(res.log_likelihood), exact_ll)
    est = float(np.asarray(calls["paris"]().estimate).sum())
    assert abs(est - means[1:].sum()) < TOL_PARIS, (est, means[1:].sum())  # h counts x_1..x_{T-1} (none at t = 0)
    traj = np.asarray(calls["ffbsi"]().trajectories, np.float64)[..., 0]
    assert np.isfinite(traj).all()
    assert np.abs(traj.mean(0) - means).max() < TOL_FFBSI, np.abs(traj.mean(0) - means).max()


@functools.cache
def slg():
    p = pm.LinearGaussianSSM(1, 1).make_params(
        dynamics_weights=[[0.8]], dynamics_cov=[[0.5]], emission_weights=[[1.0]], emission_cov=[[0.4]]
    )
    y = np.asarray(simulate(K(4), pm.LinearGaussianSSM(1, 1), p, 10)[1], np.float64)
    return ScalarLinearGaussian(), p, y


@functools.cache
def sv():
    m = pm.StochasticVolatility()
    p = m.make_params(mu=-1.0, phi=0.9, sigma=0.4)
    return m, p, np.asarray(simulate(K(5), m, p, 10)[1], np.float64)


def _pmcmc_calls():
    """Each entry point as ``(model, params, data) -> (call(data, mask), view of the result)``."""
    p0 = slg()[1]
    sa_opt, msc_opt = optax.adam(0.05), optax.adam(0.05)

    def params_fn(th):
        return p0._replace(dynamics_weights=th["rho"].reshape(1, 1))

    h = AdditiveFunctional.from_fn(lambda xp, x, t: x * xp, lambda x0: x0**2)
    ref = functools.cache(lambda: kalman_posterior_sample(K(6), p0, slg()[2]))
    return {
        "conditional_smc": (
            slg,
            lambda m, p, y, mask: conditional_smc(K(0), m, p, y, ref(), 8, mask=mask),
            lambda r: (r.path, r.log_likelihood),
        ),
        "particle_gibbs": (
            slg,
            lambda m, p, y, mask: particle_gibbs(
                K(0),
                m,
                p,
                y,
                conditional=scalar_lg_conjugate_conditional,
                num_samples=3,
                num_particles=8,
                num_chains=2,
                mask=mask,
            ),
            lambda r: r.paths,
        ),
        "paris_particle_gibbs": (
            slg,
            lambda m, p, y, mask: paris_particle_gibbs(
                K(0), m, p, y, functional=h, num_particles=8, num_iters=3, burn_in=1, mask=mask
            ),
            lambda r: r.estimates,
        ),
        "pmmh": (
            sv,
            lambda m, p, y, mask: pmmh(
                K(0), m, p, y, num_samples=4, num_warmup=2, num_chains=2, num_particles=16, mask=mask
            ),
            lambda r: r.samples,
        ),
        "paris_score": (slg, lambda m, p, y, mask: paris_score(K(0), m, p, y, 16, mask=mask), lambda r: r.estimate),
        "score_ascent": (
            slg,
            lambda m, p, y, mask: score_ascent(
                K(0),
                m,
                {"rho": jnp.asarray(0.5)},
                y,
                params_fn=params_fn,
                optimizer=sa_opt,
                num_iters=2,
                num_particles=8,
                mask=mask,
            ),
            lambda r: r.theta,
        ),
        "markov_score_climbing": (
            slg,
            lambda m, p, y, mask: markov_score_climbing(
                K(0), m, p, y, optimizer=msc_opt, num_iters=2, num_particles=8, num_chains=2, mask=mask
            ),
            lambda r: r.means,
        ),
        "variational_smoother": (
            slg,
            lambda m, p, y, mask: variational_smoother(K(0), m, p, y, num_steps=3, mask=mask),
            lambda r: r.q,
        ),
    }


PMCMC = _pmcmc_calls()


def _equal_trees(a, b):
    for x, z in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        x, z = np.asarray(x), np.asarray(z)
        assert np.isfinite(x).all(), x
        np.testing.assert_array_equal(x, z)


@pytest.mark.parametrize("name", sorted(PMCMC))
@settings(SETTINGS, max_examples=2)
@given(holes=arrays(bool, 10, elements=SPARSE))
@example(holes=np.arange(10) % 3 == 1)  # besides the drawn patterns, a fixed one with three holes
def test_pmcmc_and_optimisers_read_nan_rows_as_removed(name, holes):
    """NaN rows give exactly the result of garbage (50.0) at those rows with ``mask=False`` there, same key."""
    fixture, call, view = PMCMC[name]
    m, p, y = fixture()
    yy = y if y.ndim == 2 else y[:, None]
    nan = np.where(holes[:, None], np.nan, yy).reshape(y.shape)
    garbage = np.where(holes[:, None], 50.0, yy).reshape(y.shape)
    _equal_trees(view(call(m, p, nan, None)), view(call(m, p, garbage, ~holes)))


@functools.cache
def hmm_pois():
    m, p = poisson_hmm()
    return m, p, np.asarray(simulate(K(7), m, p, 10)[1], np.float64)


def _masked(y, holes, kind):
    """Hand-built ``Sequences`` (leading batch axis) holding ``y`` as given, with ``mask=False`` at ``holes``."""
    dtype = jnp.result_type(float) if kind != "counts" else jnp.result_type(int)
    B = y.shape[0]
    return Sequences(jnp.asarray(y, dtype), jnp.asarray(~holes), jnp.full(B, y.shape[1]), None, kind)


@settings(SETTINGS, max_examples=6)
@given(holes=arrays(bool, 10, elements=SPARSE), discrete=st.booleans())
def test_svi_and_the_bridges_read_nan_rows_as_removed(holes, discrete):
    """SVI through the discrete bridge (states summed out): NaN rows = garbage masked, bit for bit.  The continuous
    bridge's density (latent path drawn with the same seed) likewise, and SVI through it stays finite."""
    from numpyro.handlers import seed
    from numpyro.infer.util import log_density

    from pssm.inference import make_numpyro_model
    from pssm.params import leaf_names

    m, p, y = hmm_pois() if discrete else slg()
    nan = np.where(holes[:, None], np.nan, y)
    garbage = np.where(holes[:, None], 7.0, y)
    if discrete:
        a = fit_svi(K(0), m, p, nan, num_iters=4)
        b = fit_svi(K(0), m, p, _masked(garbage[None], holes[None], "counts"), num_iters=4)
        _equal_trees((a.params, a.losses), (b.params, b.losses))
        return
    fn = seed(make_numpyro_model(m, params=p), 3)
    sites = dict(zip(leaf_names(p), jax.tree.leaves(p), strict=True))
    lp_nan = log_density(fn, (jnp.asarray(nan),), {}, sites)[0]
    lp_mask = log_density(fn, (jnp.asarray(garbage),), {"mask": jnp.asarray(~holes)}, sites)[0]
    _equal_trees(lp_nan, lp_mask)
    assert np.isfinite(np.asarray(fit_svi(K(0), m, p, nan, num_iters=4).losses)).all()


@functools.cache
def dmm():
    m = pm.DeepMarkovModel(2, 3, "bernoulli", emitter_hidden=4, transition_hidden=4)
    enc = pm.Encoder(2, 3, hidden=5)
    rng = np.random.default_rng(0)
    return m, m.init_params(K(9)), enc, enc.init_params(K(10)), (rng.random((4, 6, 3)) < 0.4).astype(np.float64)


@settings(SETTINGS, max_examples=12)
@given(holes=arrays(bool, (4, 6), elements=SPARSE), bound=st.sampled_from(["elbo", "iwae", "fivo"]))
def test_vae_bounds_read_nan_rows_as_removed(holes, bound):
    """Per-sequence ELBO / IWAE / FIVO of a Bernoulli DMM: NaN rows = flipped bits at those rows, masked."""
    m, p, enc, g, y = dmm()
    holes = holes.copy()
    holes[:, 0] = False  # the encoder's first step is observed in every sequence (an all-missing one is allowed too)
    nan = [np.where(holes[b][:, None], np.nan, y[b]) for b in range(4)]
    kw = dict(guide=enc, guide_params=g, num_samples=2, bound=bound, per_sequence=True)
    a = evaluate_bound(K(0), m, p, nan, **kw)
    flipped = np.where(holes[..., None], 1.0 - y, y)
    b = evaluate_bound(K(0), m, p, _masked(flipped, holes, "binary"), **kw)
    _equal_trees(a, b)
