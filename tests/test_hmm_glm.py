"""Switching HMM-GLM = HMM + GLMEmissions: features vs the convolution, likelihood vs brute force and the
protocol, Concrete density, autoregressive simulation, metrics, bad inputs."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import gammaln, logsumexp

from pssm.boundary import as_model_data
from pssm.inference import bits_per_spike
from pssm.inference.exact.discrete import marginal_log_likelihood, most_likely_states, smoother
from pssm.models.glm import (
    HMMGLM,
    Concrete,
    GLMEmissions,
    GLMParams,
    concrete_log_prob,
    hard_adjacency,
    hard_adjacency_params,
    history_features,
    raised_cosine_basis,
    simulate_hmm_glm,
    synthetic_hmm_glm,
)
from pssm.models.glm.metrics import (
    adjacency_balanced_accuracy,
    adjacency_from_weights,
    adjacency_prior_accuracy,
    align_states,
    balanced_accuracy,
    state_accuracy,
    weight_error,
    weights_to_adjacency_probs,
)
from pssm.models.hmm import HMMParams, InitialParams, TransitionParams
from pssm.protocol import discrete_log_potentials, model_inputs, simulate


def _loop_features(y, basis):
    T, N = y.shape
    L, K = basis.shape
    h = np.zeros((T, N, K))
    for t in range(T):
        for lag in range(1, L + 1):
            if t - lag >= 0:
                h[t] += y[t - lag][:, None] * basis[lag - 1][None, :]
    return h.reshape(T, N * K)


def test_features_equal_the_convolution_per_sequence_without_leakage():
    rng = np.random.default_rng(0)
    basis = raised_cosine_basis(2, 6)
    model = HMMGLM(2, 3, basis=basis)
    y = rng.poisson(1.0, (2, 20, 3)).astype(float)
    data = as_model_data(model, [y[0], y[1, :13]])  # ragged: row 1 padded after 13 steps
    h = np.asarray(data.inputs.history)
    np.testing.assert_allclose(h[0], _loop_features(y[0], basis), atol=1e-5)
    np.testing.assert_allclose(h[1, :13], _loop_features(y[1, :13], basis), atol=1e-5)
    np.testing.assert_allclose(np.asarray(history_features(y[0], basis)), _loop_features(y[0], basis), atol=1e-5)
    # causal: features at t do not see y[t]
    y2 = y[0].copy()
    y2[10:] += 5
    h2 = np.asarray(model_inputs(model, jnp.asarray(y2)).history)
    np.testing.assert_allclose(h2[:11], h[0, :11], atol=1e-5)
    assert model.emission_lags == 6 and model.emission_shape == (3,)


def _dense_rates(glm, em, y, link):
    """Independent numpy loop: eta[t, s, n] = b + sum_{n', k} W[s, n, n'k] sum_l phi[l, k] y[t-l, n']."""
    S = glm.num_states_of(em)
    N = glm.num_neurons
    basis = np.asarray(glm.basis, float)
    L, K = basis.shape
    W = np.asarray(glm.coupling_weights(em), float).reshape(S, N, N, K)
    T = y.shape[0]
    eta = np.zeros((T, S, N))
    for t in range(T):
        for s in range(S):
            for n in range(N):
                v = float(np.broadcast_to(np.asarray(em.bias, float), (S, N))[s, n])
                for m in range(N):
                    for k in range(K):
                        for lag in range(1, L + 1):
                            if t - lag >= 0:
                                v += W[s, n, m, k] * basis[lag - 1, k] * y[t - lag, m]
                eta[t, s, n] = v
    if link == "softplus":
        return np.log1p(np.exp(eta))
    if link == "exp":
        return np.exp(eta)
    if link == "sigmoid":
        return 2.0 / (1 + np.exp(-eta))
    return 1 / (1 + np.exp(-eta))  # bernoulli probabilities


@pytest.mark.parametrize("link", ["softplus", "exp", "sigmoid", "logistic"])
def test_likelihood_equals_brute_force_enumeration(x64, link):
    S, N, T = 2, 2, 6
    obs = "bernoulli" if link == "logistic" else "poisson"
    model = HMMGLM(S, N, basis=raised_cosine_basis(2, 3), observation=obs, link=link, rate_scale=2.0, shared_bias=False)
    glm = model.emission_component
    em = glm.init_params(jax.random.PRNGKey(3), S, weight_scale=0.7)
    em = em._replace(bias=jnp.array([[0.2, -0.3], [0.5, 0.1]]))
    p = HMMParams(InitialParams(jnp.array([0.3, 0.7])), TransitionParams(jnp.array([[0.8, 0.2], [0.35, 0.65]])), em)
    y = np.random.default_rng(1).integers(0, 2 if obs == "bernoulli" else 4, (T, N)).astype(float)
    rates = _dense_rates(glm, em, y, link)
    if obs == "bernoulli":
        lp = (y[:, None] * np.log(rates) + (1 - y[:, None]) * np.log1p(-rates)).sum(-1)
    else:
        lp = (y[:, None] * np.log(rates) - rates - gammaln(y[:, None] + 1)).sum(-1)  # (T, S)
    pi, A = np.asarray(p.initial.probs), np.asarray(p.transitions.matrix)
    paths = []
    for z in itertools.product(range(S), repeat=T):
        v = np.log(pi[z[0]]) + sum(np.log(A[z[t - 1], z[t]]) for t in range(1, T))
        paths.append(v + sum(lp[t, z[t]] for t in range(T)))
    assert abs(float(marginal_log_likelihood(model, p, y)) - logsumexp(paths)) < 1e-6
    # the vectorised log_likelihoods equal the protocol's vmapped emission(...).log_prob
    u = model_inputs(model, jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(model.log_likelihoods(p, jnp.asarray(y), u)), lp, atol=1e-8)
    proto = jax.vmap(lambda yt, ut: jax.vmap(lambda s: model.emission(p, s, 0, ut).log_prob(yt))(jnp.arange(S)))(
        jnp.asarray(y), u
    )
    np.testing.assert_allclose(np.asarray(proto), lp, atol=1e-8)
    _, _, ll_pot = discrete_log_potentials(model, p, jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(ll_pot), lp, atol=1e-8)


def test_covariate_only_bernoulli_log_likelihoods_match_protocol(x64):
    model = HMMGLM(2, 1, basis=None, num_covariates=2, observation="bernoulli", link="logistic", shared_bias=False)
    em = GLMParams(jnp.array([[0.0], [1.5]]), input_weights=jnp.array([[[4.0, 0.0]], [[1.0, -1.0]]]))
    x = jax.random.normal(jax.random.PRNGKey(0), (30, 2))
    y = (jax.random.uniform(jax.random.PRNGKey(1), (30, 1)) < 0.5).astype(jnp.float64)
    ll = model.emission_component.log_likelihoods(em, y, x)
    eta = np.asarray(em.bias)[None, :, 0] + np.einsum("td,sd->ts", np.asarray(x), np.asarray(em.input_weights)[:, 0])
    ref = np.asarray(y) * eta - np.log1p(np.exp(eta))
    np.testing.assert_allclose(np.asarray(ll), ref, atol=1e-10)


@eqx.filter_jit
def _simulate_batch(key, model, params, num_timesteps, num_sequences):
    """``num_sequences`` draws of the generic autoregressive simulator, compiled once per model and shape (the
    eager :func:`simulate_hmm_glm` re-traces its scan on every call)."""
    return jax.vmap(lambda k: simulate(k, model, params, num_timesteps))(jax.random.split(key, num_sequences))


@pytest.fixture(scope="module")
def synthetic():
    """A 3-state, 10-neuron ground truth and two simulated sequences (shared by the tests below)."""
    truth = synthetic_hmm_glm(jax.random.PRNGKey(2), num_states=3, num_neurons=10)
    z, y = _simulate_batch(jax.random.PRNGKey(3), truth.model, truth.params, 600, 2)
    return truth, np.asarray(z), np.asarray(y, np.float32)


def test_likelihood_float32_close_to_float64(synthetic, x64):
    truth, _, y = synthetic
    y = y[0, :200]  # any counts: this compares precisions only
    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), truth.params)
    ll32 = truth.model.emission_component.log_likelihoods(
        p32.emissions, jnp.asarray(y, jnp.float32), model_inputs(truth.model, jnp.asarray(y, jnp.float32))
    )
    assert ll32.dtype == jnp.float32
    p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), truth.params)
    y64 = jnp.asarray(y, jnp.float64)
    ll64 = truth.model.log_likelihoods(p64, y64, model_inputs(truth.model, y64))
    assert ll64.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(ll32), np.asarray(ll64), rtol=1e-4)


@pytest.mark.parametrize("tau", [0.2, 0.5, 1.5])
def test_concrete_density_normalises(x64, tau):
    # integrate over logits u = (u1, u2, 0): a = softmax(u), |da/du| = a1 a2 a3
    u = np.linspace(-40, 40, 801)
    U1, U2 = np.meshgrid(u, u, indexing="ij")
    logits = np.stack([U1, U2, np.zeros_like(U1)], -1)
    log_a = logits - logsumexp(logits, axis=-1, keepdims=True)
    log_pi = np.log(np.array([0.15, 0.6, 0.25]))
    dens = np.exp(np.asarray(concrete_log_prob(jnp.asarray(log_a), jnp.asarray(log_pi), tau)) + log_a.sum(-1))
    assert abs(dens.sum() * (u[1] - u[0]) ** 2 - 1.0) < 2e-3


def test_concrete_matches_relaxed_bernoulli_for_two_classes(x64):
    import numpyro.distributions as dist

    a1 = jnp.linspace(0.01, 0.99, 25)
    a = jnp.stack([1 - a1, a1], -1)
    logits = jnp.array([0.3, -0.4])
    for tau in (0.2, 0.7):
        ref = dist.RelaxedBernoulliLogits(tau, logits[1] - logits[0]).log_prob(a1)
        np.testing.assert_allclose(np.asarray(Concrete(tau, logits).log_prob(a)), np.asarray(ref), atol=1e-8)
    s = Concrete(0.5, jnp.log(jnp.array([0.2, 0.5, 0.3]))).sample(jax.random.PRNGKey(0), (20000,))
    # argmax of a Gumbel-softmax draw is Categorical(pi): z-test at 5 sigma
    freq = np.bincount(np.asarray(s.argmax(-1)), minlength=3) / 20000
    assert np.all(np.abs(freq - [0.2, 0.5, 0.3]) < 5 * np.sqrt(0.25 / 20000))


ONE_STATE = HMMGLM(1, 2, link="softplus")


def _one_state(W, bias):
    return HMMParams(InitialParams(jnp.ones(1)), TransitionParams(jnp.ones((1, 1))), GLMParams(bias, weights=W))


def _simulate_one_state(key, params):
    """4 sequences x 5000 steps (one compilation for both tests)."""
    return _simulate_batch(key, ONE_STATE, params, 5000, 4)[1]


def test_generic_simulate_residuals_uncorrelated_with_history():
    # single state with strong self/cross excitation; E[(y_t - f(eta_t)) h_t] = 0 only if the autoregressive
    # simulator's history matches the convolution (an off-by-one lag would break it)
    W = jnp.array([[[0.8, -1.0], [1.2, 0.5]]])
    p = _one_state(W, jnp.array([-0.5, -0.2]))
    ys = np.asarray(_simulate_one_state(jax.random.PRNGKey(0), p), float)
    basis = np.asarray(ONE_STATE.emission_component.basis)
    h = np.concatenate([_loop_features(yb, basis) for yb in ys])  # features per sequence (no leakage)
    y = ys.reshape(-1, 2)
    rate = np.log1p(np.exp(np.asarray(p.emissions.bias) + h @ np.asarray(W[0]).T))
    r = y - rate
    for n in range(2):
        for j in range(2):
            prod = r[:, n] * h[:, j]
            assert abs(prod.mean() / (prod.std() / np.sqrt(len(prod)))) < 4.5
    # the public batch simulator is this same vmapped draw (bit for bit), and one sequence without a batch axis
    z_pub, y_pub = simulate_hmm_glm(jax.random.PRNGKey(0), ONE_STATE, p, 30, num_sequences=4)
    np.testing.assert_array_equal(
        np.asarray(y_pub), np.asarray(_simulate_batch(jax.random.PRNGKey(0), ONE_STATE, p, 30, 4)[1])
    )
    assert z_pub.shape == (4, 30) and simulate_hmm_glm(jax.random.PRNGKey(1), ONE_STATE, p, 30)[1].shape == (30, 2)
    # a one-bin shift of the history must be detected by the same statistic
    h_shift = np.concatenate([np.vstack([np.zeros((1, 2)), _loop_features(yb, basis)[:-1]]) for yb in ys])
    r_bad = y - np.log1p(np.exp(np.asarray(p.emissions.bias) + h_shift @ np.asarray(W[0]).T))
    prod = r_bad[:, 0] * y[:, 0]
    assert abs(prod.mean() / (prod.std() / np.sqrt(len(prod)))) > 4.5


def test_simulated_mean_rate_matches_stationary_rate():
    # weak coupling: the stationary mean m solves m = softplus(b + W m sum(basis)) to first order; check the
    # long-run mean count against the fixed point computed independently (z-test on batch means)
    W = jnp.array([[[0.3, -0.2], [0.1, 0.2]]])
    p = _one_state(W, jnp.array([0.1, -0.3]))
    y = np.asarray(_simulate_one_state(jax.random.PRNGKey(4), p), float)[:, 200:]
    m = np.ones(2)
    for _ in range(200):
        m = np.log1p(np.exp(np.asarray(p.emissions.bias) + np.asarray(W[0]) @ m))
    batch = y.reshape(8, -1, 2).mean(1)  # two batches of 2400 steps per sequence
    se = batch.std(0, ddof=1) / np.sqrt(8)
    # Jensen's gap of the softplus is small at these weak couplings (well under the 5-sigma band here)
    assert np.all(np.abs(batch.mean(0) - m) < 5 * se + 0.02), (batch.mean(0), m)


def test_posterior_viterbi_decode_true_states_and_bits_per_spike(synthetic):
    truth, z, y = synthetic
    data = as_model_data(truth.model, [y[0], y[1, :400]])  # ragged
    vit = np.asarray(most_likely_states(truth.model, truth.params, data))
    assert np.all(vit[1, 400:] == -1)
    zt = z.copy()
    zt[1, 400:] = -1
    assert state_accuracy(zt, vit, 3) > 0.9  # chance is about 1/3
    post = smoother(truth.model, truth.params, data)
    np.testing.assert_allclose(np.asarray(post.smoothed_probs[0].sum(-1)), 1.0, atol=1e-4)
    assert state_accuracy(zt, np.where(zt >= 0, np.asarray(post.smoothed_probs.argmax(-1)), -1), 3) > 0.9
    assert bits_per_spike(truth.model, truth.params, data) > 0.05


def test_hard_adjacency_params_and_edge_weights():
    model = HMMGLM(2, 3, coupling_prior="onehot")
    glm: GLMEmissions = model.emission_component
    em = glm.init_params(jax.random.PRNGKey(0), 2)
    logits = jnp.tile(jnp.array([0.0, 1.0, 0.0]), (2, 3, 3, 1))
    logits = logits.at[0, 0, 1].set(jnp.array([0.0, 0.0, 3.0])).at[1, 2, 0].set(jnp.array([3.0, 0.0, 0.0]))
    p = HMMParams(
        InitialParams(jnp.ones(2) / 2),
        TransitionParams(jnp.eye(2)),
        em._replace(adjacency_logits=logits, strength=jnp.zeros((2, 3, 3))),
    )
    adj = np.asarray(hard_adjacency(p.emissions))
    assert adj[0, 0, 1] == 1 and adj[1, 2, 0] == -1 and (adj != 0).sum() == 2
    W = np.asarray(glm.edge_weights(hard_adjacency_params(p).emissions))
    sp0 = np.log(2.0) * sum((0.636, 0.234, 0.086, 0.032, 0.012))
    assert W[0, 0, 1] == pytest.approx(sp0, rel=1e-5) and W[1, 2, 0] == pytest.approx(-sp0, rel=1e-5)
    assert (np.abs(W) > 1e-6).sum() == 2


def test_metrics_hand_made():
    assert balanced_accuracy([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx((2 / 3 + 1) / 2)
    w = np.array([[2.0, 0.5, 0.0], [-1.0, -0.2, 1.5]])
    p = weights_to_adjacency_probs(w)
    np.testing.assert_allclose(p[0, 0], [0, 0, 1])
    np.testing.assert_allclose(p[0, 1], [0, 0.75, 0.25])
    np.testing.assert_allclose(p[1, 0], [1, 0, 0])
    np.testing.assert_allclose(p[1, 1], [0.2, 0.8, 0])
    np.testing.assert_allclose(p.sum(-1), 1.0)
    np.testing.assert_array_equal(adjacency_from_weights(w), [[1, 0, 0], [-1, 0, 1]])
    true = np.array([[[0, 1], [-1, 0]], [[0, 0], [1, 0]]])
    est = np.array([[[0, 1], [0, 0]], [[1, 0], [1, 0]]])
    assert adjacency_balanced_accuracy(true, est, exclude_diagonal=True) == pytest.approx((1 + 0 + 1) / 3)
    assert adjacency_balanced_accuracy(true, true) == 1.0
    assert adjacency_balanced_accuracy(true, true[0]) < 1.0
    prior_true = np.eye(3)[[[1, 2], [0, 1]]]
    assert adjacency_prior_accuracy(prior_true, prior_true + 0.01) == 1.0
    z_true = np.array([0, 0, 1, 1, 2, 2])
    z_est = np.array([2, 2, 0, 0, 1, 1])
    np.testing.assert_array_equal(align_states(np.array([10.0, 20.0, 0.0]), z_true, z_est), [0.0, 10.0, 20.0])
    assert state_accuracy(z_true, z_est, 3) == 1.0
    assert weight_error(np.array([3.0, 4.0]), np.array([3.0, 4.0 + 5.0])) == pytest.approx(1.0)


def test_bad_inputs_raise_named_errors():
    model = HMMGLM(2, 3)
    y = np.ones((10, 3))
    p = model.initialize(jax.random.PRNGKey(0), as_model_data(model, np.random.default_rng(0).poisson(1, (60, 3))))
    with pytest.raises(ValueError, match="negative|non-negative"):
        marginal_log_likelihood(model, p, -y)
    with pytest.raises(ValueError, match="emission_shape"):
        marginal_log_likelihood(model, p, np.ones((10, 4)))
    with pytest.raises(ValueError, match="integer"):
        marginal_log_likelihood(model, p, y * 0.5)
    with pytest.raises(ValueError, match="0 or 1|binary"):
        as_model_data(HMMGLM(2, 3, observation="bernoulli", link="logistic"), 2 * y)
    with pytest.raises(ValueError, match="link"):
        HMMGLM(2, 3, link="probit")
    with pytest.raises(ValueError, match="coupling_prior"):
        HMMGLM(2, 3, coupling_prior="spike_slab")
    with pytest.raises(ValueError, match="basis"):
        HMMGLM(2, 3, basis=np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="optimizer"):
        HMMGLM(2, 3, optimizer="sgd")
    with pytest.raises(ValueError, match="weights"):
        marginal_log_likelihood(model, p._replace(emissions=p.emissions._replace(weights=jnp.zeros((2, 3, 4)))), y)
    with pytest.raises(ValueError, match="transitions"):
        marginal_log_likelihood(model, p._replace(transitions=TransitionParams(jnp.eye(3))), y)
