"""A NaN *entry* is missing where the emission factorises (or is Gaussian): only the observed entries of that step
count, in exact inference, EM, the particle filter, the NumPyro bridge and the VAE bounds — each checked against
an answer computed without the missing entries (scipy densities, brute-force enumeration, a smaller model)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats
from scipy.special import logsumexp

from pssm import SSM, log_joint, simulate
from pssm.boundary import as_model_data
from pssm.distributions import GaussianTril, observed_log_prob
from pssm.inference import (
    fit_em,
    kalman_log_likelihood,
    make_numpyro_model,
    marginal_log_likelihood,
    site_names,
    smoother,
)
from pssm.inference.optim.em import em_init, em_step
from pssm.inference.smc import particle_filter
from pssm.models import HMM, CategoricalEmissions, GaussianEmissions, LinearGaussianSSM, PoissonEmissions
from pssm.params import trainable_mask

pytestmark = pytest.mark.xdist_group("test_missing_entries")


def _holes(rng, y, frac=0.25):
    """``y`` with random NaN entries (some rows partly, one row wholly missing)."""
    y = np.array(y, dtype=float)
    y[rng.random(y.shape) < frac] = np.nan
    y[len(y) // 2] = np.nan
    return y


# ----------------------------------------------------------------------------------------- observed_log_prob
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_observed_log_prob_is_the_density_of_the_observed_entries(seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(4, 4))
    S, mu, y = A @ A.T + np.eye(4), rng.normal(size=4), rng.normal(size=4)
    miss = np.array([False, True, False, True])
    o = ~miss
    yn = np.where(miss, np.nan, y)
    ref = stats.multivariate_normal(mu[o], S[np.ix_(o, o)]).logpdf(y[o])
    for d in (dist.MultivariateNormal(mu, S), GaussianTril.from_cov(jnp.asarray(mu), jnp.asarray(S))):
        np.testing.assert_allclose(observed_log_prob(d, jnp.asarray(yn)), ref, rtol=1e-5)
        np.testing.assert_allclose(observed_log_prob(d, jnp.asarray(y)), d.log_prob(y), rtol=1e-6)
    scale = rng.uniform(0.5, 2.0, 4)
    d = dist.Normal(jnp.asarray(mu), jnp.asarray(scale)).to_event(1)
    np.testing.assert_allclose(
        observed_log_prob(d, jnp.asarray(yn)), stats.norm(mu[o], scale[o]).logpdf(y[o]).sum(), 1e-5
    )
    assert float(observed_log_prob(d, jnp.asarray(y))) == float(d.log_prob(jnp.asarray(y)))  # bit for bit
    counts = rng.poisson(3.0, 4).astype(float)
    pois = dist.Poisson(jnp.asarray(scale)).to_event(1)
    cn = np.where(miss, np.nan, counts)
    np.testing.assert_allclose(
        observed_log_prob(pois, jnp.asarray(cn)), stats.poisson(scale[o]).logpmf(counts[o]).sum(), 1e-5
    )
    assert float(observed_log_prob(d, jnp.full(4, jnp.nan))) == 0.0
    # a batch of steps with different missing entries (as the NumPyro bridge's scan evaluates them)
    locs, ys = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    holes = rng.random((5, 4)) < 0.4
    got = observed_log_prob(dist.MultivariateNormal(jnp.asarray(locs), S), jnp.asarray(np.where(holes, np.nan, ys)))
    want = [
        stats.multivariate_normal(locs[i][~h], S[np.ix_(~h, ~h)]).logpdf(ys[i][~h]) if (~h).any() else 0.0
        for i, h in enumerate(holes)
    ]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    # no marginal in closed form: the whole step is dropped
    dirichlet = dist.Dirichlet(jnp.ones(3))
    assert float(observed_log_prob(dirichlet, jnp.array([0.2, jnp.nan, 0.5]))) == 0.0
    # gradients stay finite at a missing entry
    g = jax.grad(lambda m: observed_log_prob(dist.MultivariateNormal(m, S), jnp.asarray(yn)))(jnp.asarray(mu))
    assert np.isfinite(np.asarray(g)).all() and float(g[1]) == 0.0


# ----------------------------------------------------------------------------------------- HMMs: exact
def _poisson(e, s, yt):
    o = ~np.isnan(yt)
    return stats.poisson(np.asarray(e.rates[s])[o]).logpmf(yt[o]).sum()


def _diag(e, s, yt):
    o = ~np.isnan(yt)
    return stats.norm(np.asarray(e.means[s])[o], np.sqrt(np.asarray(e.covs[s]))[o]).logpdf(yt[o]).sum()


def _full(e, s, yt):  # the marginal of the observed entries
    o = ~np.isnan(yt)
    if not o.any():
        return 0.0
    cov = np.asarray(e.covs[s] if e.covs.ndim == 3 else e.covs)
    return stats.multivariate_normal(np.asarray(e.means[s])[o], cov[np.ix_(o, o)]).logpdf(yt[o])


def _categorical(e, s, yt):
    p = np.asarray(e.probs[s])
    return sum(np.log(p[d, int(v)]) for d, v in enumerate(yt) if not np.isnan(v))


FAMILIES = {
    "poisson": (PoissonEmissions(3), _poisson, lambda r, n: r.poisson(3.0, (n, 3))),
    "gauss_diag": (GaussianEmissions(3, "diagonal"), _diag, lambda r, n: r.normal(size=(n, 3))),
    "gauss_full": (GaussianEmissions(3, "full"), _full, lambda r, n: r.normal(size=(n, 3))),
    "gauss_tied": (GaussianEmissions(3, "tied"), _full, lambda r, n: r.normal(size=(n, 3))),
    "categorical": (CategoricalEmissions(3, 4), _categorical, lambda r, n: r.integers(0, 4, (n, 3))),
}


def _enumerate(model, params, y, lik):
    """log p(y) and p(z_t = s | y) by summing over every state path."""
    pi = np.exp(np.asarray(model.log_initial(params), float))
    A = np.asarray(model.transition_component.matrix(params.transitions), float)
    T, S = len(y), model.num_states
    L = np.array([[lik(params.emissions, s, y[t]) for s in range(S)] for t in range(T)])
    paths = np.array(list(itertools.product(range(S), repeat=T)))
    lp = np.log(pi[paths[:, 0]]) + np.log(A[paths[:, :-1], paths[:, 1:]]).sum(1) + L[np.arange(T), paths].sum(1)
    total = logsumexp(lp)
    post = np.stack([[np.exp(logsumexp(lp[paths[:, t] == s]) - total) for s in range(S)] for t in range(T)])
    return total, post


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("seed", [0, 1])
def test_forward_backward_with_nan_entries_equals_enumeration(family, seed):
    comp, lik, draw = FAMILIES[family]
    rng = np.random.default_rng(seed)
    model = HMM(2, comp)
    params = model.initialize(jax.random.key(seed), draw(rng, 40).astype(float))
    y = _holes(rng, draw(rng, 6))
    ref_ll, ref_post = _enumerate(model, params, y, lik)
    np.testing.assert_allclose(float(marginal_log_likelihood(model, params, y)), ref_ll, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(smoother(model, params, y).smoothed_probs), ref_post, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_em_m_steps_use_the_observed_entries(seed):
    """One EM step from fixed params = the weighted closed forms over the observed entries only."""
    rng = np.random.default_rng(seed)
    y = _holes(rng, np.minimum(rng.poisson(3.0, (120, 3)), 5))  # counts, and labels of 6 classes
    o, yc = ~np.isnan(y), np.nan_to_num(y)
    for comp in (PoissonEmissions(3), GaussianEmissions(3, "diagonal"), CategoricalEmissions(3, 6)):
        model = HMM(2, comp)
        params = model.initialize(jax.random.key(seed), y)
        g = np.asarray(smoother(model, params, y).smoothed_probs, float)
        new, _ = em_step(
            jax.random.key(9),
            em_init(model, params),
            model,
            as_model_data(model, y),
            trainable_mask(model.param_spec()),
        )
        e = new.params.emissions
        if isinstance(comp, PoissonEmissions):
            rates = (g.T @ yc + comp.rate_prior_shape - 1.0) / (g.T @ o + comp.rate_prior_rate)
            np.testing.assert_allclose(np.asarray(e.rates), rates, rtol=1e-4)
        elif isinstance(comp, GaussianEmissions):
            n = g.T @ o
            means = (g.T @ yc) / n
            scatter = np.einsum("ns,nd,snd->sd", g, o, (yc[None] - means[:, None]) ** 2)
            np.testing.assert_allclose(np.asarray(e.means), means, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(
                np.asarray(e.covs), (scatter + comp.covariance_reg) / (n + comp._dof + 2.0), rtol=1e-4
            )
        else:
            onehot = np.eye(6)[yc.astype(int)] * o[..., None]
            counts = np.einsum("ns,ndc->sdc", g, onehot) + comp.concentration - 1.0
            np.testing.assert_allclose(np.asarray(e.probs), counts / counts.sum(-1, keepdims=True), rtol=1e-4)


def test_em_with_nan_entries_increases_the_objective():
    rng = np.random.default_rng(4)
    y = _holes(rng, rng.poisson(3.0, (150, 3)), 0.3)
    model = HMM(2, PoissonEmissions(3))
    fit = fit_em(jax.random.key(1), model, model.initialize(jax.random.key(0), y), y, num_iters=20, tol=0.0)
    assert np.diff(np.asarray(fit.log_objective)).min() > -1e-3


# ----------------------------------------------------------------------------------------- SMC, log_joint, bridge
class _Echo(SSM):
    """x_t = 0.9 x_{t-1} + noise; every entry of y_t is x_t + noise (factorises over entries)."""

    dim: int

    @property
    def emission_shape(self):
        return (self.dim,)

    @property
    def takes_inputs(self):
        return False

    def param_constraints(self):
        return {}

    def initial(self, params, inputs=None):
        return dist.Normal(0.0, 1.0)

    def transition(self, params, state, t, inputs=None):
        return dist.Normal(0.9 * state, 0.5)

    def emission(self, params, state, t, inputs=None):
        return dist.Normal(jnp.full(self.dim, state), 0.7).to_event(1)


def test_particle_filter_with_a_missing_column_equals_the_smaller_model():
    """Same key, same draws: only XLA's rounding (another fusion of the weights) may differ."""
    _, y = simulate(jax.random.key(0), _Echo(1), {}, 25)
    wide = jnp.concatenate([y, jnp.full_like(y, jnp.nan)], axis=1)  # the second entry never observed
    a = particle_filter(jax.random.key(3), _Echo(2), {}, wide, 256)
    b = particle_filter(jax.random.key(3), _Echo(1), {}, y, 256)
    np.testing.assert_allclose(float(a.log_likelihood), float(b.log_likelihood), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(a.ess), np.asarray(b.ess), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(a.filtered), np.asarray(b.filtered), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_particle_filter_with_nan_entries_is_unbiased_for_the_kalman_likelihood():
    """Several data sets: the mean of 200 runs is within 4 standard errors of the Kalman log-likelihood of the
    observed entries (Kalman conditions on the observed entries: tested against dense conditioning elsewhere)."""
    lg = LinearGaussianSSM(2, 3)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        p = lg.random_params(jax.random.key(seed))
        _, y = simulate(jax.random.key(10 + seed), lg, p, 30)
        y = jnp.asarray(_holes(rng, y, 0.3))
        exact = float(kalman_log_likelihood(p, y))
        lls = np.asarray(
            jax.vmap(lambda k, p=p, y=y: particle_filter(k, lg, p, y, 512).log_likelihood)(
                jax.random.split(jax.random.key(seed), 200)
            )
        )
        # log of the likelihood estimate is biased by -var/2: compare the likelihood ratio instead
        ratio = np.exp(lls - exact)
        assert abs(ratio.mean() - 1.0) < 4 * ratio.std() / np.sqrt(len(ratio)) + 1e-3, (seed, ratio.mean())


def test_log_joint_and_the_numpyro_bridge_count_the_observed_entries():
    rng = np.random.default_rng(0)
    model = _Echo(3)
    x, y = simulate(jax.random.key(1), model, {}, 12)
    y = _holes(rng, y, 0.3)
    xs = np.asarray(x)
    ref = stats.norm(0, 1).logpdf(xs[0]) + stats.norm(0.9 * xs[:-1], 0.5).logpdf(xs[1:]).sum()
    o = ~np.isnan(y)
    ref += stats.norm(np.repeat(xs[:, None], 3, 1)[o], 0.7).logpdf(y[o]).sum()
    np.testing.assert_allclose(float(log_joint(model, {}, x, jnp.asarray(y))), ref, rtol=1e-5)
    fn = make_numpyro_model(model)
    lp, _ = numpyro.infer.util.log_density(fn, (jnp.asarray(y),), {}, {"x_0": x[0], "x": x[1:]})
    np.testing.assert_allclose(float(lp), ref, rtol=1e-5)


def test_discrete_bridge_counts_the_observed_entries():
    rng = np.random.default_rng(2)
    model = HMM(2, PoissonEmissions(3))
    y = _holes(rng, rng.poisson(2.0, (30, 3)))
    params = model.initialize(jax.random.key(0), y)
    fn = make_numpyro_model(model, params=params, frozen=tuple(site_names(model.param_spec())))
    trace = numpyro.handlers.trace(numpyro.handlers.seed(fn, 0)).get_trace(jnp.asarray(y))
    site = trace["log_likelihood"]
    exact = float(marginal_log_likelihood(model, params, y))
    np.testing.assert_allclose(float(site["fn"].log_prob(site["value"])), exact, rtol=1e-5)
    ll_rows = float(marginal_log_likelihood(model, params, np.where(np.isnan(y).any(1, keepdims=True), np.nan, y)))
    assert exact < ll_rows  # the partly observed steps add their observed entries' (negative) log-probabilities
