"""Boundary checks of the public entry points (bad_inputs.py groups G1-G3, G8, G9, G16, G17).

Every check fires outside ``jit`` on the concrete inputs, before anything is compiled, so this file is fast.
Each case asserts the exception type and that the message names the offending argument.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pssm
import pssm.models as pm
from pssm.inference import (
    fit_em,
    fit_em_restarts,
    hmm_filter,
    hmm_log_likelihood,
    hmm_posterior_sample,
    hmm_smoother,
    hmm_viterbi,
    kalman_filter,
    kalman_log_likelihood,
    kalman_posterior_sample,
    kalman_smoother,
    score_ascent,
)
from pssm.inference.smc import ffbsi, paris, paris_score, particle_filter, particle_smoother

T = 8


@pytest.fixture(scope="module")
def lg():
    model = pm.LinearGaussianSSM(2, 1)
    params = model.make_params(dynamics_weights=0.9 * jnp.eye(2), dynamics_cov=0.1 * jnp.eye(2),
                               emission_weights=jnp.ones((1, 2)), emission_cov=jnp.eye(1))  # fmt: skip
    y = np.random.default_rng(0).normal(size=(T, 1))
    return model, params, y


@pytest.fixture(scope="module")
def hmm():
    model = pm.HMM(2, pm.PoissonEmissions(1))
    params = pm.HMMParams(
        pm.InitialParams(jnp.ones(2) / 2),
        pm.TransitionParams(pm.sticky_matrix(2, 0.9)),
        pm.PoissonParams(jnp.ones((2, 1))),
    )
    y = np.ones((T, 1))
    return model, params, y


HMM_POTENTIALS = (np.log(np.full(2, 0.5)), np.log(np.full((2, 2), 0.5)), np.zeros((T, 2)))

BAD_KEYS = {
    "None": None,
    "int": 0,
    "batch": jax.random.split(jax.random.PRNGKey(0), 2),
    "float": jnp.zeros(2),
    "uint32(3,)": jnp.zeros(3, jnp.uint32),
}

KEY_ENTRIES = {
    "kalman_posterior_sample": lambda key, lg, hmm: kalman_posterior_sample(key, lg[1], lg[2]),
    "hmm_posterior_sample": lambda key, lg, hmm: hmm_posterior_sample(key, *HMM_POTENTIALS),
    "particle_filter": lambda key, lg, hmm: particle_filter(key, lg[0], lg[1], lg[2], 4),
    "paris": lambda key, lg, hmm: paris(key, lg[0], lg[1], lg[2], 4, lambda xp, x, t: x),
    "paris_score": lambda key, lg, hmm: paris_score(key, lg[0], lg[1], lg[2], 4),
    "ffbsi": lambda key, lg, hmm: ffbsi(key, lg[0], lg[1], None, 2),
    "particle_smoother": lambda key, lg, hmm: particle_smoother(key, lg[0], lg[1], lg[2], 4, 2),
    "simulate": lambda key, lg, hmm: pssm.simulate(key, lg[0], lg[1], T),
    "fit_em_restarts": lambda key, lg, hmm: fit_em_restarts(key, hmm[0], hmm[2], num_restarts=2),
    "HMM.initialize": lambda key, lg, hmm: hmm[0].initialize(key, hmm[2]),
    "PoissonLDS.random_params": lambda key, lg, hmm: pm.PoissonLDS(2, 3).random_params(key),
}


# every key form on three entry points (Kalman, forward-backward and SMC code paths); None on all of them
KEY_CASES = [(e, b) for e in KEY_ENTRIES for b in BAD_KEYS if b == "None" or e in list(KEY_ENTRIES)[:3]]


@pytest.mark.parametrize(("entry", "bad"), KEY_CASES, ids=[f"{e}-{b}" for e, b in KEY_CASES])
def test_bad_key_is_refused(entry, bad, lg, hmm):
    with pytest.raises((TypeError, ValueError), match="key"):
        KEY_ENTRIES[entry](BAD_KEYS[bad], lg, hmm)


KALMAN = {
    "kalman_filter": kalman_filter,
    "kalman_smoother": kalman_smoother,
    "kalman_log_likelihood": kalman_log_likelihood,
}
BAD_EMISSIONS = {
    "None": lambda y: None,
    "object": lambda y: y.astype(object),
    "str": lambda y: y.astype(str),
    "scalar": lambda y: np.float64(1.0),
}


@pytest.mark.parametrize("parallel", [False, True], ids=["seq", "parallel"])
@pytest.mark.parametrize("bad", list(BAD_EMISSIONS), ids=list(BAD_EMISSIONS))
@pytest.mark.parametrize("fn", list(KALMAN), ids=list(KALMAN))
def test_kalman_bad_emissions(fn, bad, parallel, lg):
    _, p, y = lg
    with pytest.raises((TypeError, ValueError), match="emissions"):
        KALMAN[fn](p, BAD_EMISSIONS[bad](y), parallel=parallel)


@pytest.mark.parametrize("value", [np.inf, -np.inf], ids=["+inf", "-inf"])
@pytest.mark.parametrize("parallel", [False, True], ids=["seq", "parallel"])
@pytest.mark.parametrize("fn", list(KALMAN), ids=list(KALMAN))
def test_kalman_inf_emissions(fn, parallel, value, lg):
    _, p, y = lg
    y = y.copy()
    y[3, 0] = value
    with pytest.raises(ValueError, match=r"emissions holds ±inf \(first at step 3\)"):
        KALMAN[fn](p, y, parallel=parallel)


def test_kalman_posterior_sample_inf_emissions(lg):
    _, p, y = lg
    y = y.copy()
    y[5, 0] = np.inf
    with pytest.raises(ValueError, match="emissions holds ±inf"):
        kalman_posterior_sample(jax.random.PRNGKey(0), p, y)


HMM_FNS = {
    "hmm_filter": hmm_filter,
    "hmm_smoother": hmm_smoother,
    "hmm_viterbi": hmm_viterbi,
    "hmm_log_likelihood": hmm_log_likelihood,
}


@pytest.mark.parametrize("fn", list(HMM_FNS), ids=list(HMM_FNS))
def test_hmm_object_log_likelihoods(fn):
    li, lt, ll = HMM_POTENTIALS
    with pytest.raises(TypeError, match="log_likelihoods"):
        HMM_FNS[fn](li, lt, ll.astype(object))
    with pytest.raises(TypeError, match="log_likelihoods"):
        HMM_FNS[fn](li, lt, None)


@pytest.mark.parametrize("dtype", [object, str], ids=["object", "str"])
def test_particle_filter_bad_dtype(dtype, lg):
    model, p, y = lg
    with pytest.raises(TypeError, match="emissions"):
        particle_filter(jax.random.PRNGKey(0), model, p, y.astype(dtype), 4)


EM_OPTIONS = {
    "tol=-1": ({"tol": -1.0}, ValueError, "tol"),
    "tol=nan": ({"tol": float("nan")}, ValueError, "tol"),
    "tol=str": ({"tol": "small"}, TypeError, "tol"),
    "min_iters=-2": ({"min_iters": -2}, ValueError, "min_iters"),
    "min_iters=1.5": ({"min_iters": 1.5}, TypeError, "min_iters"),
}


@pytest.mark.parametrize("case", list(EM_OPTIONS), ids=list(EM_OPTIONS))
def test_em_options(case, hmm):
    model, params, y = hmm
    options, exc, name = EM_OPTIONS[case]
    with pytest.raises(exc, match=name):
        fit_em(jax.random.PRNGKey(0), model, params, y, num_iters=2, **options)


CONSTRUCTORS = {
    "HMM(2.5)": (lambda: pm.HMM(2.5, pm.PoissonEmissions(1)), TypeError, "num_states"),
    "HMM('2')": (lambda: pm.HMM("2", pm.PoissonEmissions(1)), TypeError, "num_states"),
    "HMM(0)": (lambda: pm.HMM(0, pm.PoissonEmissions(1)), ValueError, "num_states"),
    "HMM(2, None)": (lambda: pm.HMM(2, None), TypeError, "emission_component"),
    "PoissonEmissions(0)": (lambda: pm.PoissonEmissions(0), ValueError, "emission_dim"),
    "PoissonEmissions(-1)": (lambda: pm.PoissonEmissions(-1), ValueError, "emission_dim"),
    "PoissonEmissions(shape=-1)": (lambda: pm.PoissonEmissions(1, rate_prior_shape=-1), ValueError, "rate_prior_shape"),
    "PoissonEmissions(rate=0)": (lambda: pm.PoissonEmissions(1, rate_prior_rate=0.0), ValueError, "rate_prior_rate"),
    "GaussianEmissions(0)": (lambda: pm.GaussianEmissions(0), ValueError, "emission_dim"),
    "Categorical(num_classes=0)": (lambda: pm.CategoricalEmissions(2, num_classes=0), ValueError, "num_classes"),
    "Categorical(num_classes=1)": (lambda: pm.CategoricalEmissions(2, num_classes=1), ValueError, "num_classes"),
    "Categorical(conc=-1)": (lambda: pm.CategoricalEmissions(2, 3, concentration=-1), ValueError, "concentration"),
    "sticky_matrix(3, 1.5)": (lambda: pm.sticky_matrix(3, 1.5), ValueError, "self_transition"),
    "sticky_matrix(3, -0.1)": (lambda: pm.sticky_matrix(3, -0.1), ValueError, "self_transition"),
    "sticky_matrix(0)": (lambda: pm.sticky_matrix(0), ValueError, "num_states"),
    "LinearGaussianSSM(0, 1)": (lambda: pm.LinearGaussianSSM(0, 1), ValueError, "state_dim"),
    "LinearGaussianSSM(2, -1)": (lambda: pm.LinearGaussianSSM(2, -1), ValueError, "emission_dim"),
    "LinearGaussianSSM(2.5, 1)": (lambda: pm.LinearGaussianSSM(2.5, 1), TypeError, "state_dim"),
    "LinearGaussianSSM(input_dim=-1)": (lambda: pm.LinearGaussianSSM(2, 1, -1), ValueError, "input_dim"),
    "SV sigma=-1": (lambda: pm.StochasticVolatility().make_params(sigma=-1.0), ValueError, "sigma"),
    "SV phi=1.5": (lambda: pm.StochasticVolatility().make_params(phi=1.5), ValueError, "phi"),
    "SV mu=nan": (lambda: pm.StochasticVolatility().make_params(mu=float("nan")), ValueError, "mu"),
    "Kitagawa sigma_x=-1": (lambda: pm.KitagawaGrowth().make_params(sigma_x=-1.0), ValueError, "sigma_x"),
}


@pytest.mark.parametrize("case", list(CONSTRUCTORS), ids=list(CONSTRUCTORS))
def test_constructor_checks(case):
    make, exc, name = CONSTRUCTORS[case]
    with pytest.raises(exc, match=name):
        make()


def test_valid_constructors_still_work():
    assert pm.sticky_matrix(1).shape == (1, 1)
    np.testing.assert_allclose(pm.sticky_matrix(3, 1.0), np.eye(3))
    assert pm.CategoricalEmissions(1, num_classes=2).num_classes == 2
    assert pm.LinearGaussianSSM(1, 1, 0).input_dim == 0
    assert pm.HMM(np.int64(3), pm.GaussianEmissions(2)).num_states == 3
    p = jax.jit(lambda s: pm.StochasticVolatility().make_params(sigma=s))(0.3)  # traced values pass unchecked
    assert float(p.sigma) == pytest.approx(0.3)


@pytest.mark.parametrize("content", ["text", "npy"])
def test_load_non_npz(tmp_path, content):
    path = tmp_path / "model.npz"
    if content == "text":
        path.write_text("hello")
    else:
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match=r"model\.npz is not a pssm\.save file"):
        pssm.load(path)


def test_score_ascent_params_fn_message(lg):
    model, p, y = lg
    with pytest.raises(ValueError, match=r"params_fn\(theta0\) failed with KeyError.*params_fn must map theta0"):
        score_ascent(
            jax.random.PRNGKey(0),
            model,
            {"a": jnp.zeros(())},
            y,
            params_fn=lambda th: th["rho"],
            optimizer=optax.sgd(1e-2),
            num_iters=1,
            num_particles=4,
        )


# --------------------------------------------------------------------------- G10, G11, G13, G14: params at the SMC
# entry points and simulate, NaN reference paths, NaN rows in log_joint
_SV = pm.StochasticVolatility()
_BAD_MODEL_PARAMS = {
    "sv: sigma < 0": (_SV, _SV.make_params()._replace(sigma=jnp.asarray(-0.3)), ValueError, "sigma"),
    "sv: phi NaN": (_SV, _SV.make_params()._replace(phi=jnp.asarray(jnp.nan)), ValueError, "phi"),
    "sv: params None": (_SV, None, TypeError, "params is None"),
    "lg: negative dynamics variance": (
        pm.LinearGaussianSSM(1, 1),
        pm.LinearGaussianSSM(1, 1).random_params(jax.random.PRNGKey(0))._replace(dynamics_cov=-0.5 * jnp.eye(1)),
        ValueError,
        "dynamics_cov",
    ),
    "lg: 2-D params for a 1-D model": (
        pm.LinearGaussianSSM(1, 1),
        pm.LinearGaussianSSM(2, 1).random_params(jax.random.PRNGKey(0)),
        ValueError,
        r"state_dim=1",
    ),
}


@pytest.mark.parametrize("case", list(_BAD_MODEL_PARAMS))
@pytest.mark.parametrize("entry", ["simulate", "particle_filter", "paris", "conditional_smc"])
def test_model_params_are_checked_at_the_smc_entry_points_and_simulate(entry, case):
    from pssm.inference.mcmc.csmc import conditional_smc

    model, params, err, message = _BAD_MODEL_PARAMS[case]
    y = np.zeros((T, 1)) if isinstance(model, pm.LinearGaussianSSM) else np.zeros(T)
    ref = np.zeros((T, 1)) if isinstance(model, pm.LinearGaussianSSM) else np.zeros(T)
    call = {
        "simulate": lambda: pssm.simulate(jax.random.PRNGKey(0), model, params, T),
        "particle_filter": lambda: particle_filter(jax.random.PRNGKey(0), model, params, y, 16),
        "paris": lambda: paris(jax.random.PRNGKey(0), model, params, y, 16, lambda xp, x, t: x),
        "conditional_smc": lambda: conditional_smc(jax.random.PRNGKey(0), model, params, y, ref, 8),
    }[entry]
    with pytest.raises(err, match=message):
        call()


def test_hmm_params_with_the_wrong_number_of_states_are_refused_by_simulate(hmm):
    model, params, _ = hmm
    three = pm.HMMParams(
        pm.InitialParams(jnp.ones(3) / 3),
        pm.TransitionParams(pm.sticky_matrix(3, 0.9)),
        pm.PoissonParams(jnp.ones((3, 1))),
    )
    with pytest.raises(ValueError, match="states"):
        pssm.simulate(jax.random.PRNGKey(0), model, three, T)
    with pytest.raises(ValueError, match="rates"):
        pssm.simulate(jax.random.PRNGKey(0), model, params._replace(emissions=pm.PoissonParams(-jnp.ones((2, 1)))), T)
    with pytest.raises(TypeError, match="pssm.SSM"):
        pssm.simulate(jax.random.PRNGKey(0), "hmm", three, T)


def test_a_nan_reference_path_is_refused(lg):
    from pssm.inference.mcmc.csmc import conditional_smc

    model, params, y = lg
    ref = np.zeros((T, 2))
    ref[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"reference holds NaN .* t=3"):
        conditional_smc(jax.random.PRNGKey(0), model, params, y, ref, 8)


def test_log_joint_drops_nan_rows_like_the_mask(lg):
    """A NaN emission row is missing: the same value as masking that step (and finite)."""
    model, params, y = lg
    x, _ = pssm.simulate(jax.random.PRNGKey(1), model, params, T)
    y_nan = y.copy()
    y_nan[2] = np.nan
    mask = np.arange(T) != 2
    want = pssm.log_joint(model, params, x, jnp.asarray(np.where(mask[:, None], y, 0.0)), mask=jnp.asarray(mask))
    got = pssm.log_joint(model, params, x, jnp.asarray(y_nan))
    assert np.isfinite(got)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_log_joint_checks_the_states_and_pmmh_and_glm_simulation_check_their_inputs(hmm):
    from pssm.inference import pmmh

    model, params, y = hmm
    z = np.zeros(T, int)
    assert np.isfinite(pssm.log_joint(model, params, z, y))
    with pytest.raises(ValueError, match="leading axis 8"):
        pssm.log_joint(model, params, z[:5], y)
    with pytest.raises(ValueError, match=r"integers in \[0, 2\)"):
        pssm.log_joint(model, params, np.where(np.arange(T) == 3, 5, z), y)
    sv = pm.StochasticVolatility()
    with pytest.raises(ValueError, match="sigma"):
        pmmh(jax.random.PRNGKey(0), sv, sv.make_params()._replace(sigma=jnp.asarray(-0.3)), np.zeros(T),
             num_samples=2, num_particles=8, num_warmup=0, num_chains=1)  # fmt: skip
    glm = pm.HMMGLM(2, 3, basis=None, shared_bias=False)
    gp = glm.initialize(jax.random.PRNGKey(0), np.ones((20, 3)))
    with pytest.raises(ValueError, match="num_covariates=0"):
        pm.simulate_hmm_glm(jax.random.PRNGKey(0), glm, gp, 10, covariates=np.zeros((10, 1)))


INPUT_ENTRIES = {
    "smoother": lambda lg, hmm, u: pssm.inference.smoother(hmm[0], hmm[1], hmm[2], inputs=u),
    "most_likely_states": lambda lg, hmm, u: pssm.inference.most_likely_states(hmm[0], hmm[1], hmm[2], inputs=u),
    "marginal_log_likelihood": lambda lg, hmm, u: pssm.inference.marginal_log_likelihood(
        hmm[0], hmm[1], hmm[2], inputs=u
    ),
    "fit_em": lambda lg, hmm, u: fit_em(jax.random.PRNGKey(0), hmm[0], hmm[1], hmm[2], inputs=u),
    "Sequences.inputs": lambda lg, hmm, u: pssm.inference.smoother(
        hmm[0], hmm[1], pssm.Sequences.from_arrays([hmm[2]], inputs=[u])
    ),
    "particle_filter": lambda lg, hmm, u: particle_filter(jax.random.PRNGKey(0), lg[0], lg[1], lg[2], 4, inputs=u),
    "paris": lambda lg, hmm, u: paris(jax.random.PRNGKey(0), lg[0], lg[1], lg[2], 4, lambda xp, x, t: x, inputs=u),
    "particle_filter[SV]": lambda lg, hmm, u: particle_filter(
        jax.random.PRNGKey(0),
        pm.StochasticVolatility(),
        pm.StochasticVolatility().make_params(),
        lg[2][:, 0],
        4,
        inputs=u,
    ),  # fmt: skip
}


@pytest.mark.parametrize("entry", list(INPUT_ENTRIES))
def test_inputs_to_a_model_that_reads_none_are_refused(entry, lg, hmm):
    """An HMM with Poisson emissions, an LGSSM with input_dim=0 and SV read no inputs: given ones, they would be
    ignored (a different model from the one meant), so the boundary refuses them."""
    with pytest.raises(ValueError, match="reads no inputs"):
        INPUT_ENTRIES[entry](lg, hmm, np.ones((T, 2)))


def test_models_declare_whether_they_read_inputs():
    assert not pm.HMM(2, pm.GaussianEmissions(1)).takes_inputs
    assert not pm.HMMGLM(2, 3).takes_inputs and pm.HMMGLM(2, 3, num_covariates=2).takes_inputs
    assert not pm.LinearGaussianSSM(2, 1).takes_inputs and pm.LinearGaussianSSM(2, 1, input_dim=1).takes_inputs
    assert not pm.StochasticVolatility().takes_inputs


# ----------------------------------------------------------------------------------- degenerate runs are flagged
LI, LT = np.log(np.full(2, 0.5)), np.log(np.array([[0.9, 0.1], [0.1, 0.9]]))


def _impossible_at(t: int, T_: int = 6) -> np.ndarray:
    ll = np.random.default_rng(t).normal(size=(T_, 2))
    ll[t] = -np.inf
    return ll


@pytest.mark.parametrize("parallel", [False, True], ids=["seq", "parallel"])
def test_impossible_observation_is_flagged_not_nan(parallel):
    post = hmm_smoother(LI, LT, _impossible_at(3), parallel=parallel)
    assert int(post.impossible_step) == 3 and float(post.log_likelihood) == -np.inf
    assert float(hmm_log_likelihood(LI, LT, _impossible_at(3), parallel=parallel)) == -np.inf
    # an impossible step in the padding (t >= length) changes nothing: the exact answer on the real steps
    padded = hmm_smoother(LI, LT, _impossible_at(4), length=4, parallel=parallel)
    exact = hmm_smoother(LI, LT, _impossible_at(4)[:4], parallel=parallel)
    assert int(padded.impossible_step) == -1
    np.testing.assert_allclose(padded.smoothed_probs[:4], exact.smoothed_probs, atol=1e-6)
    np.testing.assert_allclose(padded.log_likelihood, exact.log_likelihood, rtol=1e-6)
    assert int(hmm_filter(LI, LT, _impossible_at(0)).impossible_step) == 0


def test_a_state_that_cannot_explain_the_data_is_not_impossible():
    ll = _impossible_at(2)
    ll[2] = [0.0, -np.inf]  # only state 1 is ruled out: a proper posterior, no flag
    post = hmm_smoother(LI, LT, ll)
    assert int(post.impossible_step) == -1 and np.isfinite(post.log_likelihood)
    assert float(post.smoothed_probs[2, 1]) == 0.0 and int(hmm_viterbi(LI, LT, ll)[2]) == 0


def test_viterbi_and_posterior_draws_refuse_data_of_probability_zero():
    ll = _impossible_at(2)
    with pytest.raises(ValueError, match="no state path has positive probability"):
        hmm_viterbi(LI, LT, ll)
    with pytest.raises(ValueError, match="no state path has positive probability"):
        hmm_posterior_sample(jax.random.PRNGKey(0), LI, LT, ll)
    with pytest.raises(Exception, match="no state path has positive probability"):  # inside the user's jit too
        jax.block_until_ready(jax.jit(hmm_viterbi)(LI, LT, ll))
    model = pm.HMM(2, pm.CategoricalEmissions(1, 3))
    probs = np.array([[[0.5, 0.5, 0.0]], [[0.5, 0.5, 0.0]]])
    params = pm.HMMParams(pm.InitialParams(jnp.ones(2) / 2), pm.TransitionParams(pm.sticky_matrix(2, 0.9)),
                          pm.CategoricalParams(jnp.asarray(probs)))  # fmt: skip
    y = np.zeros((5, 1), int)
    y[3] = 2  # class 2 has probability zero in both states
    assert int(pssm.inference.smoother(model, params, y).impossible_step) == 3
    with pytest.raises(ValueError, match="most_likely_states: no state path"):
        pssm.inference.most_likely_states(model, params, y)


@pytest.fixture(scope="module")
def collapsed_sv():
    model = pm.StochasticVolatility()
    y = np.random.default_rng(0).normal(size=12).astype(np.float32)
    y[5] = 1e30  # float32: the Gaussian log-density underflows to -inf for every particle
    return model, model.make_params(), y


SMOOTHERS = {
    "paris": lambda m, p, y, **k: paris(jax.random.PRNGKey(0), m, p, y, 16, lambda xp, x, t: x, **k),
    "particle_smoother": lambda m, p, y, **k: particle_smoother(jax.random.PRNGKey(0), m, p, y, 16, 4, **k),
    "ffbsi": lambda m, p, y, **k: ffbsi(
        jax.random.PRNGKey(1), m, p, particle_filter(jax.random.PRNGKey(0), m, p, y, 16, history=True).history, 4, **k
    ),
    "marginal_smoother": lambda m, p, y, **k: pssm.inference.smc.marginal_smoother(
        m, p, particle_filter(jax.random.PRNGKey(0), m, p, y, 16, history=True).history, **k
    ),
}


@pytest.mark.parametrize("name", list(SMOOTHERS))
def test_smoothers_refuse_a_collapsed_filter_unless_asked(name, collapsed_sv, x32):
    m, p, y = collapsed_sv
    assert bool(particle_filter(jax.random.PRNGKey(0), m, p, y, 16).collapsed)
    with pytest.raises(FloatingPointError, match="collapsed"):
        SMOOTHERS[name](m, p, y)
    out = SMOOTHERS[name](m, p, y, allow_collapsed=True)
    if name == "paris":
        assert bool(out.collapsed)
    ok = y.copy()
    ok[5] = 0.3
    SMOOTHERS[name](m, p, ok)  # the same data without the impossible value: no error
