"""The model layer's own contracts: params spec, frozen leaves, lagged inputs, stationary initial, support checks."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from pssm.boundary import as_model_data
from pssm.distributions import Dirichlet
from pssm.inference import fit_em, marginal_log_likelihood
from pssm.models import (
    HMM,
    GaussianEmissions,
    HMMParams,
    InitialDistribution,
    InitialParams,
    PoissonEmissions,
    PoissonParams,
    StickyTransitions,
    TransitionParams,
    stationary_distribution,
)
from pssm.params import ParamSpec, freeze, leaf_names, select_trainable, spec_log_prior, trainable_mask
from pssm.protocol import SSM, model_inputs, simulate

KEY = jax.random.PRNGKey(0)


def _poisson_params(pi, A, rates):
    return HMMParams(
        InitialParams(jnp.asarray(pi)), TransitionParams(jnp.asarray(A)), PoissonParams(jnp.asarray(rates))
    )


def test_freeze_marks_leaves_by_dotted_path_and_select_keeps_frozen_bits():
    model = HMM(2, GaussianEmissions(2))
    spec = model.param_spec()
    assert leaf_names(spec, is_leaf=lambda s: isinstance(s, ParamSpec)) == [
        "initial.probs",
        "transitions.matrix",
        "emissions.means",
        "emissions.covs",
    ]
    fz = freeze(spec, "emissions.covs", "initial")
    mask = trainable_mask(fz)
    assert jax.tree.leaves(mask) == [False, True, True, False]
    old = jax.tree.map(jnp.zeros_like, model.initialize(KEY, as_model_data(model, np.arange(10.0).reshape(5, 2))))
    new = jax.tree.map(jnp.ones_like, old)
    out = select_trainable(fz, new, old)
    assert float(out.emissions.covs.sum()) == 0.0 and float(out.emissions.means.sum()) == 4.0
    assert jax.tree.leaves(trainable_mask(freeze(spec, "*"))) == [False] * 4
    with pytest.raises(KeyError, match="no parameter is called 'emissions.rates'"):
        freeze(spec, "emissions.rates")


def test_dirichlet_prior_is_finite_at_zero_entries_under_concentration_one():
    A = jnp.array([[1.0, 0.0], [0.3, 0.7]])
    lp = Dirichlet(jnp.ones((2, 2))).to_event(1).log_prob(A)
    assert np.isfinite(float(lp))
    np.testing.assert_allclose(float(lp), 0.0, atol=1e-5)  # Dir(1, 1) is uniform on the 1-simplex: log 1 = 0
    assert float(Dirichlet(jnp.full((2, 2), 2.0)).to_event(1).log_prob(A)) == -np.inf
    x = jnp.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(
        Dirichlet(jnp.array([1.5, 2.0, 3.0])).log_prob(x),
        dist.Dirichlet(jnp.array([1.5, 2.0, 3.0])).log_prob(x),
        rtol=1e-6,
    )


def test_hmm_log_prior_is_the_sum_of_its_components_priors(x64):
    model = HMM(
        2,
        PoissonEmissions(1, rate_prior_shape=2.0, rate_prior_rate=0.5),
        initial_component=InitialDistribution(concentration=3.0),
        transition_component=StickyTransitions(concentration=1.5, stickiness=4.0),
    )
    p = _poisson_params([0.3, 0.7], [[0.9, 0.1], [0.2, 0.8]], [[1.0], [5.0]])
    want = (
        dist.Dirichlet(jnp.full(2, 3.0)).log_prob(p.initial.probs)
        + dist.Dirichlet(jnp.array([[5.5, 1.5], [1.5, 5.5]])).log_prob(p.transitions.matrix).sum()
        + dist.Gamma(2.0, 0.5).log_prob(p.emissions.rates).sum()
    )
    np.testing.assert_allclose(float(model.log_prior(p)), float(want), rtol=1e-12)
    np.testing.assert_allclose(float(spec_log_prior(model.param_spec(), p)), float(want), rtol=1e-12)


def test_stationary_initial_distribution_is_invariant_and_em_keeps_it_so(x64):
    A = jnp.array([[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.3, 0.0, 0.7]])
    pi = stationary_distribution(A)
    np.testing.assert_allclose(np.asarray(pi @ A), np.asarray(pi), atol=1e-12)
    np.testing.assert_allclose(float(pi.sum()), 1.0, atol=1e-12)
    model = HMM(3, PoissonEmissions(2), initial_component=InitialDistribution("stationary"))
    truth = HMMParams(InitialParams(None), TransitionParams(A), PoissonParams(jnp.array([[1.0, 6], [5, 1], [9, 9]])))
    _, y = simulate(KEY, model, truth, 300)
    init = model.initialize(jax.random.PRNGKey(1), as_model_data(model, y))
    r = fit_em(KEY, model, init, y, num_iters=25, tol=0.0)
    assert np.all(np.diff(r.log_objective) > -1e-9 * np.abs(r.log_objective[:-1]))
    A_hat = r.params.transitions.matrix
    np.testing.assert_allclose(np.exp(model.log_initial(r.params)), stationary_distribution(A_hat), atol=1e-12)
    assert r.params.initial.probs is None


def test_fixed_initial_distribution_is_not_trained(x64):
    model = HMM(2, PoissonEmissions(1), initial_component=InitialDistribution("fixed"))
    p = _poisson_params([0.9, 0.1], [[0.9, 0.1], [0.2, 0.8]], [[1.0], [5.0]])
    _, y = simulate(KEY, model, p, 50)
    r = fit_em(KEY, model, p, y, num_iters=5)
    np.testing.assert_array_equal(np.asarray(r.params.initial.probs), [0.9, 0.1])


class _LaggedToy(SSM):
    """y_t | x_t ~ N(x_t + 0.5 y_{t-1} - 0.25 y_{t-2}, 1): emissions that see the last two emissions."""

    def initial(self, params, inputs=None):
        return dist.Normal(0.0, 1.0)

    def transition(self, params, state, t, inputs=None):
        return dist.Normal(0.9 * state, 1.0)

    def emission(self, params, state, t, inputs=None):
        return dist.Normal(state + inputs, 1.0)

    @property
    def emission_shape(self):
        return ()

    @property
    def emission_lags(self):
        return 2

    def emission_features(self, past, inputs=None):
        return 0.5 * past[0] - 0.25 * past[1]

    def param_constraints(self):
        return ()


def test_lagged_features_use_only_the_past_and_never_cross_sequences():
    model = _LaggedToy()
    y = jnp.arange(1.0, 6.0)
    u = model_inputs(model, y)
    want = [0.0, 0.5 * 1, 0.5 * 2 - 0.25 * 1, 0.5 * 3 - 0.25 * 2, 0.5 * 4 - 0.25 * 3]
    np.testing.assert_allclose(np.asarray(u), want)
    # two sequences padded into one batch: the second starts from an empty history
    data = as_model_data(model, [np.arange(1.0, 6.0), np.array([10.0, 20.0])])
    np.testing.assert_allclose(np.asarray(data.inputs[1, :2]), [0.0, 5.0])
    # autoregressive simulation: the emission mean at t uses the simulated past
    xs, ys = simulate(jax.random.PRNGKey(3), model, (), 200)
    resid = ys[2:] - xs[2:] - (0.5 * ys[1:-1] - 0.25 * ys[:-2])
    assert abs(float(resid.mean())) < 4 / np.sqrt(198) and abs(float(resid.std()) - 1.0) < 0.15


def test_simulate_and_log_joint_take_pytree_states():
    class TwoPart(SSM):
        def initial(self, params, inputs=None):
            return _Pair(dist.Normal(0.0, 1.0), dist.Normal(1.0, 2.0))

        def transition(self, params, state, t, inputs=None):
            return _Pair(dist.Normal(state["a"], 1.0), dist.Normal(0.5 * state["b"], 1.0))

        def emission(self, params, state, t, inputs=None):
            return dist.Normal(state["a"] + state["b"], 0.5)

        @property
        def emission_shape(self):
            return ()

        def param_constraints(self):
            return ()

    model = TwoPart()
    xs, ys = simulate(KEY, model, (), 10)
    assert set(xs) == {"a", "b"} and xs["a"].shape == (10,) and ys.shape == (10,)
    from pssm.protocol import log_joint

    a, b = xs["a"], xs["b"]
    want = (
        dist.Normal(0.0, 1.0).log_prob(a[0])
        + dist.Normal(1.0, 2.0).log_prob(b[0])
        + dist.Normal(a[:-1], 1.0).log_prob(a[1:]).sum()
        + dist.Normal(0.5 * b[:-1], 1.0).log_prob(b[1:]).sum()
        + dist.Normal(a + b, 0.5).log_prob(ys).sum()
    )
    np.testing.assert_allclose(float(log_joint(model, (), xs, ys)), float(want), rtol=1e-5)


class _Pair:
    """A product distribution over a dict state ``{"a", "b"}`` (duck-typed sample/log_prob)."""

    def __init__(self, da, db):
        self.da, self.db = da, db

    def sample(self, key):
        ka, kb = jax.random.split(key)
        return {"a": self.da.sample(ka), "b": self.db.sample(kb)}

    def log_prob(self, x):
        return self.da.log_prob(x["a"]) + self.db.log_prob(x["b"])


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda p: p._replace(initial=InitialParams(jnp.array([0.6, 0.6]))), "initial.probs is outside its support"),
        (lambda p: p._replace(emissions=PoissonParams(jnp.array([[1.0], [-1.0]]))), "emissions.rates"),
        (lambda p: p._replace(emissions=PoissonParams(jnp.array([[1.0], [jnp.nan]]))), "NaN 1"),
        (lambda p: p._replace(transitions=TransitionParams(jnp.ones((3, 3)) / 3)), "3, 3"),
        (lambda p: p._replace(emissions=PoissonParams(jnp.ones((2, 4)))), "emission_shape|states|shape"),
    ],
)
def test_params_are_checked_against_the_model(bad, match):
    model = HMM(2, PoissonEmissions(1))
    p = _poisson_params([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [[1.0], [5.0]])
    model.check_params(p)
    with pytest.raises(ValueError, match=match):
        model.check_params(bad(p))
        marginal_log_likelihood(model, bad(p), np.ones((4, 1)))
