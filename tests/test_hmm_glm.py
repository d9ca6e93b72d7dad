"""Switching HMM-GLM: features, exact likelihood vs brute force, Concrete density, simulation, metrics, inputs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pssm.inference.hmm_glm_em import (
    bits_per_spike,
    hmm_glm_log_likelihood,
    hmm_glm_posterior,
    hmm_glm_viterbi,
    prepare_data,
)
from pssm.models.hmm_glm import (
    HMMGLM,
    Concrete,
    GLMParams,
    HMMGLMParams,
    concrete_log_prob,
    hard_adjacency,
    hard_adjacency_params,
    history_features,
    raised_cosine_basis,
    simulate_hmm_glm,
    synthetic_hmm_glm,
)
from scipy.special import gammaln, logsumexp

from pssm.hmm_glm_metrics import (
    adjacency_balanced_accuracy,
    adjacency_from_weights,
    adjacency_prior_accuracy,
    align_states,
    balanced_accuracy,
    state_accuracy,
    weight_error,
    weights_to_adjacency_probs,
)
from pssm.protocol import discrete_log_potentials


def _loop_features(y, basis):
    T, N = y.shape
    L, K = basis.shape
    h = np.zeros((T, N, K))
    for t in range(T):
        for lag in range(1, L + 1):
            if t - lag >= 0:
                h[t] += y[t - lag][:, None] * basis[lag - 1][None, :]
    return h.reshape(T, N * K)


def test_history_features_loop_ragged_and_trial_ids():
    rng = np.random.default_rng(0)
    basis = raised_cosine_basis(2, 6)
    y = rng.poisson(1.0, (2, 20, 3)).astype(float)
    lengths = np.array([20, 13])
    h = np.asarray(history_features(y, basis, lengths))
    np.testing.assert_allclose(h[0], _loop_features(y[0], basis), atol=1e-5)
    np.testing.assert_allclose(h[1, :13], _loop_features(y[1, :13], basis), atol=1e-5)
    assert np.all(h[1, 13:] == 0)
    # two trials concatenated with trial_ids == the same trials as separate rows (no leakage across trials)
    cat = np.concatenate([y[0, :7], y[1, :9]])
    ids = np.r_[np.zeros(7), np.ones(9)]
    hc = np.asarray(history_features(cat, basis, trial_ids=ids))
    np.testing.assert_allclose(hc[:7], _loop_features(y[0, :7], basis), atol=1e-5)
    np.testing.assert_allclose(hc[7:], _loop_features(y[1, :9], basis), atol=1e-5)
    # causal: features at t do not see y[t]
    y2 = y[0].copy()
    y2[10:] += 5
    np.testing.assert_allclose(np.asarray(history_features(y2, basis))[:11], h[0, :11], atol=1e-5)


def _dense_rates(model, params, y, link):
    """Independent numpy loop: eta[t, s, n] = b + sum_{n', k} W[s, n, n'k] sum_l phi[l, k] y[t-l, n']."""
    em = params.emissions
    S, N = model.num_states, model.num_neurons
    basis = np.asarray(model.basis, float)
    L, K = basis.shape
    W = np.asarray(model.coupling_weights(em), float).reshape(S, N, N, K)
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
    model = HMMGLM(S, N, basis=raised_cosine_basis(2, 3), observation=obs, link=link, rate_scale=2.0,
                   shared_bias=False, num_covariates=0)
    key = jax.random.PRNGKey(3)
    p = model.init_params(key, weight_scale=0.7, dtype=jnp.float64)
    p = p._replace(initial_probs=jnp.array([0.3, 0.7]), transition_matrix=jnp.array([[0.8, 0.2], [0.35, 0.65]]),
                   emissions=p.emissions._replace(bias=jnp.array([[0.2, -0.3], [0.5, 0.1]])))
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2 if obs == "bernoulli" else 4, (T, N)).astype(float)
    rates = _dense_rates(model, p, y, link)
    if obs == "bernoulli":
        lp = (y[:, None] * np.log(rates) + (1 - y[:, None]) * np.log1p(-rates)).sum(-1)
    else:
        lp = (y[:, None] * np.log(rates) - rates - gammaln(y[:, None] + 1)).sum(-1)  # (T, S)
    pi, A = np.asarray(p.initial_probs), np.asarray(p.transition_matrix)
    paths = []
    for z in itertools.product(range(S), repeat=T):
        v = np.log(pi[z[0]]) + sum(np.log(A[z[t - 1], z[t]]) for t in range(1, T))
        paths.append(v + sum(lp[t, z[t]] for t in range(T)))
    brute = logsumexp(paths)
    data = prepare_data(model, y)
    ll = float(hmm_glm_log_likelihood(model, p, data)[0])
    assert abs(ll - brute) < 1e-6
    # the protocol path (emission() per step) gives the same per-state log-likelihoods
    _, _, ll_proto = discrete_log_potentials(model, p, data.spikes[0], jax.tree.map(lambda a: a[0], data.inputs))
    np.testing.assert_allclose(np.asarray(ll_proto), lp, atol=1e-8)


def test_likelihood_float32_close_to_float64(x64):
    truth = synthetic_hmm_glm(jax.random.PRNGKey(0), num_states=3, num_neurons=5)
    y = np.random.default_rng(0).poisson(0.5, (300, 5))  # any counts: this compares precisions only
    d32 = prepare_data(truth.model, y, dtype=jnp.float32)
    ll32_arr = hmm_glm_log_likelihood(truth.model, truth.params, d32)
    assert ll32_arr.dtype == jnp.float32
    ll32 = float(ll32_arr[0])
    ll64 = float(hmm_glm_log_likelihood(truth.model, truth.params, prepare_data(truth.model, y, dtype=jnp.float64))[0])
    assert np.isfinite(ll32) and abs(ll32 - ll64) < 1e-4 * abs(ll64)


@pytest.mark.parametrize("tau", [0.2, 0.5, 1.5])
def test_concrete_density_normalises(x64, tau):
    # integrate over logits u = (u1, u2, 0): a = softmax(u), |da/du| = a1 a2 a3
    u = np.linspace(-40, 40, 801)
    U1, U2 = np.meshgrid(u, u, indexing="ij")
    logits = np.stack([U1, U2, np.zeros_like(U1)], -1)
    log_a = logits - logsumexp(logits, axis=-1, keepdims=True)
    log_pi = np.log(np.array([0.15, 0.6, 0.25]))
    dens = np.exp(np.asarray(concrete_log_prob(jnp.asarray(log_a), jnp.asarray(log_pi), tau)) + log_a.sum(-1))
    total = dens.sum() * (u[1] - u[0]) ** 2
    assert abs(total - 1.0) < 2e-3


def test_concrete_matches_relaxed_bernoulli_for_two_classes(x64):
    import numpyro.distributions as dist

    a1 = jnp.linspace(0.01, 0.99, 25)
    a = jnp.stack([1 - a1, a1], -1)
    logits = jnp.array([0.3, -0.4])
    for tau in (0.2, 0.7):
        lp = Concrete(tau, logits).log_prob(a)
        ref = dist.RelaxedBernoulliLogits(tau, logits[1] - logits[0]).log_prob(a1)
        np.testing.assert_allclose(np.asarray(lp), np.asarray(ref), atol=1e-8)
    s = Concrete(0.5, jnp.log(jnp.array([0.2, 0.5, 0.3]))).sample(jax.random.PRNGKey(0), (20000,))
    # argmax of a Gumbel-softmax draw is Categorical(pi): z-test at 5 sigma
    freq = np.bincount(np.asarray(s.argmax(-1)), minlength=3) / 20000
    assert np.all(np.abs(freq - [0.2, 0.5, 0.3]) < 5 * np.sqrt(0.25 / 20000))


def test_simulator_residuals_uncorrelated_with_history():
    # single state with strong self/cross excitation; E[(y_t - f(eta_t)) h_t] = 0 only if the simulator's
    # history matches history_features (an off-by-one lag would break it)
    model = HMMGLM(1, 2, link="softplus")
    W = jnp.array([[[0.8, -1.0], [1.2, 0.5]]])
    p = HMMGLMParams(jnp.ones(1), jnp.ones((1, 1)), GLMParams(jnp.array([-0.5, -0.2]), weights=W))
    _, y = simulate_hmm_glm(jax.random.PRNGKey(0), model, p, 20000)
    h = np.asarray(history_features(y, model.basis))
    rate = np.asarray(model.mean(model.predictor(p.emissions, model.features(y))[:, 0]))
    r = np.asarray(y) - rate
    for n in range(2):
        for j in range(2):
            prod = r[:, n] * h[:, j]
            z = prod.mean() / (prod.std() / np.sqrt(len(prod)))
            assert abs(z) < 4.5
    # a one-bin shift of the history must be detected by the same statistic
    h_shift = np.vstack([np.zeros((1, 2)), h[:-1]])
    eta_bad = np.asarray(p.emissions.bias) + h_shift @ np.asarray(W[0]).T
    r_bad = np.asarray(y) - np.log1p(np.exp(eta_bad))
    prod = r_bad[:, 0] * np.asarray(y)[:, 0]
    assert abs(prod.mean() / (prod.std() / np.sqrt(len(prod)))) > 4.5


def test_posterior_viterbi_decode_true_states_and_bits_per_spike():
    truth = synthetic_hmm_glm(jax.random.PRNGKey(2), num_states=3, num_neurons=10)
    z, y = simulate_hmm_glm(jax.random.PRNGKey(3), truth.model, truth.params, 800, num_sequences=2)
    data = prepare_data(truth.model, [y[0], y[1, :500]])  # ragged
    vit = np.asarray(hmm_glm_viterbi(truth.model, truth.params, data))
    assert np.all(vit[1, 500:] == -1)
    zt = np.asarray(z).copy()
    zt[1, 500:] = -1
    assert state_accuracy(zt, vit, 3) > 0.95
    post = hmm_glm_posterior(truth.model, truth.params, data)
    np.testing.assert_allclose(np.asarray(post.smoothed_probs[0].sum(-1)), 1.0, atol=1e-4)
    assert state_accuracy(zt, np.where(zt >= 0, np.asarray(post.smoothed_probs.argmax(-1)), -1), 3) > 0.95
    assert bits_per_spike(truth.model, truth.params, data) > 0.05


def test_hard_adjacency_params_and_edge_weights():
    model = HMMGLM(2, 3, coupling_prior="onehot")
    p = model.init_params(jax.random.PRNGKey(0))
    logits = jnp.tile(jnp.array([0.0, 1.0, 0.0]), (2, 3, 3, 1))
    logits = logits.at[0, 0, 1].set(jnp.array([0.0, 0.0, 3.0])).at[1, 2, 0].set(jnp.array([3.0, 0.0, 0.0]))
    p = p._replace(emissions=p.emissions._replace(adjacency_logits=logits, strength=jnp.zeros((2, 3, 3))))
    adj = np.asarray(hard_adjacency(p.emissions))
    assert adj[0, 0, 1] == 1 and adj[1, 2, 0] == -1 and (adj != 0).sum() == 2
    W = np.asarray(model.edge_weights(hard_adjacency_params(p).emissions))
    sp0 = np.log(2.0) * sum((0.636, 0.234, 0.086, 0.032, 0.012))
    assert W[0, 0, 1] == pytest.approx(sp0, rel=1e-5) and W[1, 2, 0] == pytest.approx(-sp0, rel=1e-5)
    assert (np.abs(W) > 1e-6).sum() == 2


# ------------------------------------------------------------------------------------------------- metrics
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
    # off-diagonal entries: class 1 -> est [1, 1] (recall 1); class -1 -> est [0] (0); class 0 -> est [0] (1)
    assert adjacency_balanced_accuracy(true, est, exclude_diagonal=True) == pytest.approx((1 + 0 + 1) / 3)
    assert adjacency_balanced_accuracy(true, true) == 1.0
    # a one-state estimate broadcast against per-state truths
    assert adjacency_balanced_accuracy(true, true[0]) < 1.0
    prior_true = np.eye(3)[[[1, 2], [0, 1]]]
    assert adjacency_prior_accuracy(prior_true, prior_true + 0.01) == 1.0
    # state alignment and weight error
    z_true = np.array([0, 0, 1, 1, 2, 2])
    z_est = np.array([2, 2, 0, 0, 1, 1])
    vals = np.array([10.0, 20.0, 0.0])  # estimated state j's value
    np.testing.assert_array_equal(align_states(vals, z_true, z_est), [0.0, 10.0, 20.0])
    assert state_accuracy(z_true, z_est, 3) == 1.0
    assert weight_error(np.array([3.0, 4.0]), np.array([3.0, 4.0 + 5.0])) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_named_errors():
    model = HMMGLM(2, 3)
    y = np.ones((10, 3))
    with pytest.raises(ValueError, match="negative"):
        prepare_data(model, -y)
    bad = y.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        prepare_data(model, bad)
    mask = np.ones(10, bool)
    mask[2] = False
    assert prepare_data(model, bad, mask=mask).mask.sum() == 9  # NaN allowed where masked
    with pytest.raises(ValueError, match="num_neurons"):
        prepare_data(model, np.ones((10, 4)))
    with pytest.raises(ValueError, match="spikes must be"):
        prepare_data(model, np.ones(10))
    with pytest.raises(ValueError, match="non-integer"):
        prepare_data(model, y * 0.5)
    with pytest.raises(ValueError, match="Bernoulli"):
        prepare_data(HMMGLM(2, 3, observation="bernoulli", link="logistic"), 2 * y)
    with pytest.raises(ValueError, match="lengths"):
        prepare_data(model, np.ones((2, 10, 3)), lengths=[10, 11])
    with pytest.raises(ValueError, match="link"):
        HMMGLM(2, 3, link="probit")
    with pytest.raises(ValueError, match="coupling_prior"):
        HMMGLM(2, 3, coupling_prior="spike_slab")
    with pytest.raises(ValueError, match="basis"):
        HMMGLM(2, 3, basis=np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="covariates"):
        prepare_data(HMMGLM(2, 3, num_covariates=2), y)
    p = model.init_params(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="emissions.weights"):
        hmm_glm_log_likelihood(model, p._replace(emissions=p.emissions._replace(weights=jnp.zeros((2, 3, 4)))), y)
    with pytest.raises(ValueError, match="transition_matrix"):
        hmm_glm_log_likelihood(model, p._replace(transition_matrix=jnp.eye(3)), y)
