"""Deep Markov model + inference networks: NumPyro programs vs the protocol densities, bound ordering,
kill-and-resume, missing data, and the SMC engine on a trained model."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density

from pssm import log_joint, simulate
from pssm.inference.mcmc.csmc import conditional_smc
from pssm.inference.smc import paris, particle_filter
from pssm.inference.variational import encoder_feynman_kac, evaluate_bound, fit_vae, path_log_weight
from pssm.inference.variational.numpyro_vae import GUIDE_SITE, MODEL_SITE, FlatModule, make_vae_guide, make_vae_model
from pssm.models.deep import DeepMarkovModel, Encoder

M = DeepMarkovModel(2, 3, "bernoulli", emitter_hidden=4, transition_hidden=4)
E = Encoder(2, 3, hidden=5)
# compiled once per shape (eager calls would dispatch, and compile, op by op)
_path_log_weight = eqx.filter_jit(path_log_weight)
_log_joint = eqx.filter_jit(log_joint)


@pytest.fixture(scope="module")
def setup():
    p = M.init_params(jax.random.key(0))
    g = E.init_params(jax.random.key(1))
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 13, size=24)
    ys = jax.vmap(lambda k: simulate(k, M, p, 12)[1])(jax.random.split(jax.random.key(10), 24))
    seqs = [np.asarray(y[:n]) for y, n in zip(ys, lengths, strict=True)]
    return p, g, seqs


def _batch(seqs):
    T = max(len(s) for s in seqs)
    y = np.zeros((len(seqs), T, 3), np.float32)
    valid = np.zeros((len(seqs), T), bool)
    for b, s in enumerate(seqs):
        y[b, : len(s)] = s
        valid[b, : len(s)] = True
    return jnp.asarray(y), jnp.asarray(valid)


def _guide_log_prob(g, y, valid, observed, z):
    h = E.features(g, y, valid, observed)
    lq = E.initial_distribution(g, h[0]).log_prob(z[0])
    steps = jax.vmap(lambda zp, ht, zt: E.step_distribution(g, zp, ht).log_prob(zt))(z[:-1], h[1:], z[1:])
    return lq + jnp.sum(jnp.where(valid[1:], steps, 0.0))


@pytest.mark.parametrize("annealing", [1.0, 0.4])
def test_numpyro_programs_equal_protocol_densities(setup, annealing):
    """NumPyro model density = annealed log_joint (masked emission dropped); guide density = the encoder's."""
    p, g, seqs = setup
    y, valid = _batch(seqs[:3])
    observed = valid.at[1, 2].set(False)  # one missing observation
    z = jax.random.normal(jax.random.key(5), (y.shape[1], y.shape[0], 2))  # scan sites: (T, B, Z)
    args = (y, valid, observed, annealing)
    lp_model = jax.jit(
        lambda: log_density(make_vae_model(M, p), args, {}, {MODEL_SITE: FlatModule(p).flat, "z": z})[0]
    )()
    lp_guide = jax.jit(
        lambda: log_density(make_vae_guide(E, g), args, {}, {GUIDE_SITE: FlatModule(g).flat, "z": z})[0]
    )()
    want_model = want_guide = 0.0
    for b in range(3):
        n = int(valid[b].sum())
        emission, latent, guide = _reference(
            p, g, z[:n, b], y[b, :n], observed[b, :n], y[b], valid[b], observed[b], z[:, b]
        )
        want_model += annealing * latent + emission
        want_guide += annealing * guide
    np.testing.assert_allclose(lp_model, want_model, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(lp_guide, want_guide, rtol=1e-5, atol=1e-4)


@jax.jit
def _reference(p, g, zb, yb, ob, y_pad, valid, observed, z_pad):
    """Emission and latent terms of log_joint for one sequence, and the guide's log density (one compile)."""
    emission = _emission_lp(p, zb, yb, ob)
    return emission, log_joint(M, p, zb, yb, mask=ob) - emission, _guide_log_prob(g, y_pad, valid, observed, z_pad)


def _emission_lp(p, z, y, observed):
    lps = jax.vmap(lambda zt, yt: M.emission(p, zt, 0).log_prob(yt))(z, y)
    return jnp.sum(jnp.where(observed, lps, 0.0))


def test_path_log_weight_is_log_joint_minus_guide(setup):
    p, g, seqs = setup
    y, valid = _batch(seqs[3:4])
    y, valid = y[0], valid[0]
    lw, z = _path_log_weight(jax.random.key(2), M, p, E, g, y, valid, valid)
    want = _log_joint(M, p, z, y) - jax.jit(_guide_log_prob)(g, y, valid, valid, z)
    np.testing.assert_allclose(lw, want, rtol=1e-5, atol=1e-4)


def test_a_missing_entry_drops_only_its_own_emission_term(setup):
    """The guide sees a missing entry as 0, so with y[t, d] = NaN or 0 the same path is drawn; the two log-weights
    differ by exactly log p(y[t, d] = 0 | z_t).  The NumPyro model's density drops that term as well."""
    p, g, seqs = setup
    y, valid = _batch(seqs[3:4])
    y0, valid = y[0].at[2, 1].set(0.0), valid[0]
    y_nan = y0.at[2, 1].set(jnp.nan)
    lw_nan, z = _path_log_weight(jax.random.key(2), M, p, E, g, y_nan, valid, valid)
    lw_0, z0 = _path_log_weight(jax.random.key(2), M, p, E, g, y0, valid, valid)
    np.testing.assert_array_equal(np.asarray(z), np.asarray(z0))
    entry = M.emission(p, z[2], 2).base_dist.log_prob(jnp.zeros(3))[1]
    np.testing.assert_allclose(lw_0 - lw_nan, entry, rtol=1e-4, atol=1e-5)
    zs = jax.random.normal(jax.random.key(5), (y0.shape[0], 1, 2))
    args0 = (y0[None], valid[None], valid[None], 1.0)
    args_nan = (y_nan[None], valid[None], valid[None], 1.0)
    subs = {MODEL_SITE: FlatModule(p).flat, "z": zs}
    lp0 = log_density(make_vae_model(M, p), args0, {}, subs)[0]
    lp_nan = log_density(make_vae_model(M, p), args_nan, {}, subs)[0]
    np.testing.assert_allclose(
        lp0 - lp_nan, M.emission(p, zs[2, 0], 2).base_dist.log_prob(jnp.zeros(3))[1], rtol=1e-4, atol=1e-5
    )


def test_features_of_padded_sequence_equal_unpadded(setup):
    """A backward RNN over a padded sequence sees only the sequence's own steps."""
    _, g, seqs = setup
    for enc in (E, Encoder(2, 3, hidden=5, direction="bidirectional", cell="gru")):
        gp = enc.init_params(jax.random.key(3))
        s = jnp.asarray(seqs[0], jnp.float32)
        n = s.shape[0]
        padded = jnp.concatenate([s, jnp.ones((5, 3))])
        valid = jnp.arange(n + 5) < n
        features = jax.jit(enc.features)
        np.testing.assert_allclose(
            features(gp, padded, valid)[:n], features(gp, s, jnp.ones(n, bool)), rtol=1e-6, atol=1e-6
        )
    del g


def test_nan_row_is_a_missing_observation(setup):
    p, g, seqs = setup
    y = jnp.asarray(seqs[3], jnp.float32)  # the sequence (shape) of the test above: the same compiled function
    n = y.shape[0]
    obs = jnp.ones(n, bool).at[2].set(False)
    a = _path_log_weight(jax.random.key(4), M, p, E, g, y.at[2].set(jnp.nan), jnp.ones(n, bool), obs)[0]
    b = _path_log_weight(jax.random.key(4), M, p, E, g, y.at[2].set(1.0), jnp.ones(n, bool), obs)[0]
    assert np.isfinite(a) and a == b
    # through the boundary: NaN rows become unobserved steps
    with_nan = [np.asarray(s, np.float32) for s in seqs[:4]]
    with_nan[0][1] = np.nan
    v = evaluate_bound(jax.random.key(6), M, p, with_nan, guide=E, guide_params=g)
    assert np.isfinite(v)


@pytest.mark.slow
def test_bounds_order_and_tighten_with_k(setup):
    """As NLL bounds: IWAE_16 < ELBO and FIVO_16 < FIVO_1 (paired z > 3 over sequences); FIVO with one particle
    never resamples, so its mean equals the ELBO's (two-sample |z| < 4 over 3 keys)."""
    p, g, seqs = setup

    def per_seq(bound, k, seed):
        return evaluate_bound(
            jax.random.key(seed), M, p, seqs, guide=E, guide_params=g, bound=bound, num_samples=k, per_sequence=True
        )

    e1 = np.stack([per_seq("elbo", 1, 20 + s) for s in range(3)])
    f1 = np.stack([per_seq("fivo", 1, 10 + s) for s in range(3)])
    iw16, fivo16 = per_seq("iwae", 16, 3), per_seq("fivo", 16, 4)

    def z(d):
        return d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))

    assert z(iw16 - e1[0]) > 3 and z(fivo16 - f1[0]) > 3
    se = np.sqrt(f1.var(ddof=1) / f1.size + e1.var(ddof=1) / e1.size)
    assert abs(f1.mean() - e1.mean()) / se < 4


class _Kill(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted(setup, tmp_path):
    p, g, seqs = setup
    kw = dict(guide=E, guide_params=g, num_epochs=4, batch_size=8, annealing_epochs=3, pad_multiple=16)
    full = fit_vae(jax.random.key(7), M, p, seqs, **kw)
    path = tmp_path / "ckpt.npz"

    def kill(epoch, loss):
        if epoch == 1:
            raise _Kill

    with pytest.raises(_Kill):
        fit_vae(jax.random.key(7), M, p, seqs, checkpoint=path, callback=kill, **kw)
    resumed = fit_vae(jax.random.key(7), M, p, seqs, checkpoint=path, **kw)
    diff = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))),
        (full.params, full.guide_params),
        (resumed.params, resumed.guide_params),
    )
    assert max(jax.tree.leaves(diff)) == 0.0
    np.testing.assert_array_equal(full.losses, resumed.losses)
    # linear per minibatch from 0.2 over 3 epochs of 3 minibatches (value at each epoch's last minibatch), then 1
    np.testing.assert_allclose(full.annealing, [0.2 + 0.8 * 3 / 9, 0.2 + 0.8 * 6 / 9, 1.0, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="same settings"):
        fit_vae(jax.random.key(7), M, p, seqs, checkpoint=path, **{**kw, "batch_size": 4})


def test_early_stopping_returns_the_best_epoch_and_resumes(setup, tmp_path):
    """patience: the run stops ``patience`` epochs after its best validated epoch and returns exactly the params an
    uninterrupted run of ``best_epoch + 1`` epochs ends with (same key); a kill-and-resume stops alike."""
    p, g, seqs = setup
    # batch and optimiser as in the resume test above: the same compiled SVI step
    kw = dict(guide=E, guide_params=g, batch_size=8, validation_data=seqs[:8], eval_every=1)
    res = fit_vae(jax.random.key(3), M, p, seqs[8:], num_epochs=8, patience=2, **kw)
    b = res.best_epoch
    assert b is not None and len(res.validation) in (b + 3, 8)
    assert res.validation[b] == np.min(res.validation)
    ref = fit_vae(jax.random.key(3), M, p, seqs[8:], num_epochs=b + 1, **kw)
    assert ref.best_epoch is None
    leaves = [jax.tree.leaves((x.params, x.guide_params)) for x in (res, ref)]
    for a, r in zip(*leaves, strict=True):
        np.testing.assert_array_equal(a, r)
    # min_delta larger than any change: epoch 0 stays best, the run stops after epoch 2
    path = tmp_path / "es.npz"

    def kill(epoch, loss):
        if epoch == 1:
            raise _Kill

    kw2 = dict(num_epochs=8, patience=2, min_delta=1e3, checkpoint=path, **kw)
    with pytest.raises(_Kill):
        fit_vae(jax.random.key(3), M, p, seqs[8:], callback=kill, **kw2)
    stop = fit_vae(jax.random.key(3), M, p, seqs[8:], **kw2)
    again = fit_vae(jax.random.key(3), M, p, seqs[8:], **kw2)  # a stopped run's checkpoint returns at once
    assert stop.best_epoch == again.best_epoch == 0 and len(stop.losses) == len(again.losses) == 3
    one = fit_vae(jax.random.key(3), M, p, seqs[8:], num_epochs=1, **kw)
    for a, r, c in zip(*(jax.tree.leaves((x.params, x.guide_params)) for x in (stop, one, again)), strict=True):
        np.testing.assert_array_equal(a, r)
        np.testing.assert_array_equal(c, r)
    with pytest.raises(ValueError, match="patience"):
        fit_vae(jax.random.key(3), M, p, seqs, guide=E, guide_params=g, num_epochs=2, patience=2)


def test_smc_engine_runs_on_a_fivo_trained_model(setup):
    p, g, seqs = setup
    res = fit_vae(
        jax.random.key(8), M, p, seqs, guide=E, guide_params=g, num_epochs=1, batch_size=8, bound="fivo", num_samples=4
    )
    y = jnp.asarray(seqs[2], jnp.float32)
    n = y.shape[0]
    h = E.features(res.guide_params, y, jnp.ones(n, bool))
    fk = encoder_feynman_kac(M, E, res.guide_params)
    guided = particle_filter(jax.random.key(9), fk, res.params, y, 64, inputs=h)
    boot = particle_filter(jax.random.key(9), M, res.params, y, 64)
    assert np.isfinite(guided.log_likelihood) and np.isfinite(boot.log_likelihood)
    est = paris(jax.random.key(10), fk, res.params, y, 32, lambda xp, x, t: x, inputs=h).estimate
    assert est.shape == (2,) and np.all(np.isfinite(est))
    ref = jnp.zeros((n, 2))
    out = conditional_smc(jax.random.key(11), M, res.params, y, ref, 16)
    assert np.all(np.isfinite(out.path))


def test_boundary_errors(setup):
    p, g, seqs = setup
    with pytest.raises(ValueError, match="emission_shape"):
        fit_vae(jax.random.key(0), M, p, [np.zeros((5, 4))], guide=E, guide_params=g, num_epochs=1)
    with pytest.raises(ValueError, match="bound"):
        fit_vae(jax.random.key(0), M, p, seqs, guide=E, guide_params=g, num_epochs=1, bound="vi")
    with pytest.raises(ValueError, match="annealing"):
        fit_vae(jax.random.key(0), M, p, seqs, guide=E, guide_params=g, num_epochs=1, bound="fivo", annealing_epochs=5)
    with pytest.raises(ValueError, match="latent_dim"):
        fit_vae(jax.random.key(0), M, p, seqs, guide=Encoder(3, 3), guide_params=g, num_epochs=1)
    with pytest.raises(ValueError, match="binary|0/1|values"):
        fit_vae(jax.random.key(0), M, p, [np.full((5, 3), 2.0)], guide=E, guide_params=g, num_epochs=1)
    with pytest.raises(ValueError, match="emission_kind"):
        DeepMarkovModel(2, 3, "gamma")


def test_flow_guide_density_and_autoregressive_masks(setup):
    """With IAF steps the guide's log density from the sampling intermediates equals the one from inverting the
    flow, and each MADE's mean is strictly lower-triangular in its input (autoregressive)."""
    p, _, seqs = setup
    enc = Encoder(2, 3, hidden=5, num_flows=2, flow_hidden=6)
    g = enc.init_params(jax.random.key(12))
    y = jnp.asarray(seqs[5], jnp.float32)
    ones = jnp.ones(y.shape[0], bool)
    lw, z = _path_log_weight(jax.random.key(13), M, p, enc, g, y, ones, ones)

    @jax.jit
    def guide_log_prob(z):  # no intermediates: numpyro inverts the flow
        h = enc.features(g, y, ones)
        steps = jax.vmap(lambda zp, ht, zt: enc.step_distribution(g, zp, ht).log_prob(zt))(z[:-1], h[1:], z[1:])
        return enc.initial_distribution(g, h[0]).log_prob(z[0]) + steps.sum()

    np.testing.assert_allclose(lw, _log_joint(M, p, z, y) - guide_log_prob(z), rtol=1e-4, atol=1e-3)
    big = Encoder(2, 3, hidden=5, num_flows=1, flow_hidden=8).init_params(jax.random.key(14)).flows[0]
    from pssm.models.deep import MADE

    made = MADE(5, 9, key=jax.random.key(15))
    for net in (big, made):
        jac = np.asarray(jax.jacfwd(lambda x, net=net: net(x)[0])(jnp.linspace(0.1, 1.0, net.w1.shape[1])))
        assert np.all(np.triu(jac) == 0) and np.any(np.tril(jac, -1) != 0)


def test_to_arviz_and_divergence_is_an_error(setup):
    from pssm import to_arviz

    p, g, seqs = setup
    res = fit_vae(jax.random.key(7), M, p, seqs, guide=E, guide_params=g, num_epochs=2, batch_size=8)
    hist = to_arviz(res)
    np.testing.assert_array_equal(hist.sample_stats["loss"].values.ravel(), res.losses)
    y = np.asarray(seqs[0], np.float32)
    draws = to_arviz(res, key=jax.random.key(1), model=M, guide=E, emissions=y, num_samples=5)
    assert draws.posterior["z"].shape == (1, 5, len(y), 2)
    with pytest.raises(ValueError, match="emissions="):
        to_arviz(res, key=jax.random.key(1))
    # a non-finite loss stops the run with an error (NaN start: the same compiled step as above)
    bad = p._replace(initial_latent=p.initial_latent * jnp.nan)
    with pytest.raises(FloatingPointError, match="loss became nan"):
        fit_vae(jax.random.key(7), M, bad, seqs, guide=E, guide_params=g, num_epochs=2, batch_size=8)


def test_amortised_smoothing_of_any_continuous_model_keeps_its_params():
    """``train_model=False`` fits only the encoder (here on a linear Gaussian model, whose params hold no networks);
    the model's params come back bit for bit and the negative ELBO falls."""
    from pssm.inference.variational import clipped_adam
    from pssm.models import LinearGaussianSSM

    lg = LinearGaussianSSM(2, 2)
    p = lg.random_params(jax.random.PRNGKey(0))
    ys = np.asarray(jax.vmap(lambda k: simulate(k, lg, p, 12)[1])(jax.random.split(jax.random.key(1), 16)))
    enc = Encoder(2, 2, hidden=8)
    res = fit_vae(
        jax.random.key(2),
        lg,
        p,
        ys,
        guide=enc,
        guide_params=enc.init_params(jax.random.key(3)),
        num_epochs=8,
        batch_size=4,
        optimizer=clipped_adam(3e-3),
        train_model=False,
    )
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(p), strict=True))
    assert res.losses[-1] < res.losses[0]
    with pytest.raises(ValueError, match="Encoder\\(2, 2\\)"):
        fit_vae(jax.random.key(2), lg, p, ys, guide=E, guide_params=E.init_params(jax.random.key(3)), num_epochs=1)
