"""Model-conformance checks shared by ``tests/test_conformance.py`` and ``benchmarks/model_layer.py``.

A :class:`Case` builds ``(model, params, num_timesteps)`` (and optionally the user inputs); :data:`CASES` is the
registry, one line per model configuration.  Every exported concrete :class:`pssm.SSM` subclass of
:mod:`pssm.models` must appear in it (:func:`unregistered_model_classes`).  Each ``check_*`` function returns plain
numbers (errors, z-scores) so the test asserts thresholds and the benchmark reports them.

Checks, per case:

* :func:`check_log_joint` — ``log_joint`` of a simulated path equals the sum of the protocol's initial, transition
  and emission log-densities evaluated step by step (and, for discrete models, the sum of the log potentials along
  the path);
* :func:`check_filter_vs_exact` — the bootstrap particle filter's log-likelihood estimates against the exact value
  (forward algorithm for discrete states, Kalman for linear Gaussian params): a z-score over independent runs;
* :func:`check_em` — EM's objective never decreases and ``log_objective[i]`` equals
  ``marginal_log_likelihood + log_prior`` at the params entering iteration ``i`` (first and last); the NumPyro
  bridge's log density equals the same objective; a frozen leaf does not move;
* :func:`check_bridge` — the bridge's log density (latent sites substituted for continuous models) equals
  ``log p(y | θ) + log p(θ)`` (discrete) or ``log_joint + log p(θ)`` (continuous), and freezing a leaf removes
  its site without changing the density;
* :func:`check_arviz` — :func:`pssm.to_arviz` converts every result produced here.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.util import log_density

import pssm
import pssm.inference as inf
import pssm.inference.smc as smc
import pssm.models as pm
from pssm.boundary import as_model_data
from pssm.models.hmm.components import Component
from pssm.models.testing import ScalarLinearGaussian
from pssm.params import freeze, is_spec, leaf_names
from pssm.protocol import SSM, discrete_log_potentials, inputs_at, model_inputs

PyTree = Any

__all__ = [
    "Case",
    "CASES",
    "case_data",
    "unregistered_model_classes",
    "results_without_converter",
    "check_log_joint",
    "check_filter_vs_exact",
    "check_em",
    "check_bridge",
    "check_pmmh_frozen",
    "check_arviz",
    "run_all",
]


# --------------------------------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class Case:
    """One model configuration: ``make(key) -> (model, params, num_timesteps)``; ``inputs(key, T)`` the user
    inputs (``None``: none); ``frozen`` a dotted leaf held fixed in the freezing checks; ``em``: fit by
    :func:`pssm.inference.fit_em` (component-built discrete models); ``particles`` for the filter z-test."""

    name: str
    make: Callable[[jax.Array], tuple[SSM, PyTree, int]]
    inputs: Callable[[jax.Array, int], PyTree] | None = None
    frozen: str | None = None
    em: bool = False
    particles: int = 1000


def _spd(key, d, scale=1.0):
    m = jax.random.normal(key, (d, d)) / jnp.sqrt(d)
    return scale * (m @ m.T + 0.5 * jnp.eye(d))


def _simplex(key, shape):
    """A random point of the simplex (last axis): normalised exponentials, i.e. a Dirichlet(1) draw without the
    gamma sampler's rejection loop (which costs seconds of compilation)."""
    e = jax.random.exponential(key, shape)
    return e / e.sum(-1, keepdims=True)


def _transitions(key, S):
    A = 0.7 * jnp.eye(S) + 0.3 * _simplex(key, (S, S))
    return pm.TransitionParams(A / A.sum(1, keepdims=True))


def _hmm(emissions, emission_params, S=3, T=60, initial="learned"):
    """An HMM case builder: ``emission_params(key, S)`` gives the emission params."""

    def make(key):
        k0, k1, k2 = jax.random.split(key, 3)
        model = pm.HMM(S, emissions, initial_component=pm.InitialDistribution(initial))
        probs = None if initial == "stationary" else 0.5 / S + 0.5 * _simplex(k0, (S,))
        return model, pm.HMMParams(pm.InitialParams(probs), _transitions(k1, S), emission_params(k2, S)), T

    return make


def _poisson(D):
    return lambda k, S: pm.PoissonParams(jax.random.uniform(k, (S, D), minval=0.5, maxval=8.0))


def _gaussian(D, cov):
    def params(k, S):
        k1, k2 = jax.random.split(k)
        means = 3.0 * jax.random.normal(k1, (S, D))
        ks = jax.random.split(k2, S)
        covs = {
            "full": jnp.stack([_spd(kk, D) for kk in ks]),
            "diagonal": jax.random.uniform(k2, (S, D), minval=0.3, maxval=2.0),
            "tied": _spd(k2, D),
        }[cov]
        return pm.GaussianParams(means, covs)

    return params


def _poisson_hmm(D, S=3, initial="learned"):
    return _hmm(pm.PoissonEmissions(D), _poisson(D), S=S, initial=initial)


def _gauss_hmm(cov, S=3, D=2):
    return _hmm(pm.GaussianEmissions(D, cov), _gaussian(D, cov), S=S)


def _categorical(D, C):
    return lambda k, S: pm.CategoricalParams(0.5 / C + 0.5 * _simplex(k, (S, D, C)))


def _lgssm(key):
    model = pm.LinearGaussianSSM(2, 2)
    return model, model.random_params(key), 30


def _scalar_lg(key):
    p = pm.LinearGaussianSSM(1, 1).make_params(
        dynamics_weights=[[0.8]], dynamics_cov=[[0.5]], emission_weights=[[1.0]], emission_cov=[[0.4]]
    )
    return ScalarLinearGaussian(), p, 30


def _sv(key):
    m = pm.StochasticVolatility()
    return m, m.make_params(), 30


def _kitagawa(key):
    m = pm.KitagawaGrowth()
    return m, m.make_params(), 20


def _lorenz(key):
    m = pm.Lorenz96(state_dim=4, num_substeps=2)
    return m, m.make_params(), 15


def _rnn(key):
    m = pm.ChaoticRNN(state_dim=4, emission_dim=2)
    return m, m.make_params(key), 20


def _plds(key):
    m = pm.PoissonLDS(2, 3)
    return m, m.random_params(key), 25


def _dmm(key):
    m = pm.DeepMarkovModel(2, 3, "poisson", emitter_hidden=4, transition_hidden=4)
    return m, m.init_params(key), 20


def _hmm_glm(key):
    """Switching population GLM (spike-history coupling: lagged features)."""
    S, N = 2, 3
    model = pm.HMMGLM(S, N, basis="exponential", link="softplus", shared_bias=False, inner_steps=5)
    k1, k2, k3 = jax.random.split(key, 3)
    K = model.emission_component.num_basis
    em = pm.GLMParams(
        bias=0.5 + 0.3 * jax.random.normal(k1, (S, N)), weights=0.3 * jax.random.normal(k2, (S, N, N * K))
    )
    return model, pm.HMMParams(pm.InitialParams(jnp.full((S,), 1.0 / S)), _transitions(k3, S), em), 50


def _hmm_glm_covariates(key):
    """GLM-HMM on external covariates only (Bernoulli, logistic link; user inputs, no lags)."""
    S, N = 2, 2
    model = pm.HMMGLM(
        S, N, basis=None, num_covariates=1, observation="bernoulli", link="logistic", shared_bias=False, inner_steps=5
    )
    k1, k2, k3 = jax.random.split(key, 3)
    em = pm.GLMParams(bias=jax.random.normal(k1, (S, N)), input_weights=2.0 * jax.random.normal(k2, (S, N, 1)))
    return model, pm.HMMParams(pm.InitialParams(jnp.full((S,), 1.0 / S)), _transitions(k3, S), em), 50


def _covariates(key, T):
    return jax.random.normal(key, (T, 1))


def _hmm_ar(key):
    """Vector AR(2) emissions (lagged features)."""
    from pssm.models.hmm.autoregressive import AutoregressiveEmissions, AutoregressiveParams

    S, D, p = 2, 2, 2
    k1, k2, k3, k4 = jax.random.split(key, 4)
    model = pm.HMM(S, AutoregressiveEmissions(D, num_lags=p))
    em = AutoregressiveParams(
        jax.random.normal(k1, (S, D)),
        0.3 * jax.random.normal(k2, (S, D, p * D)) / p,
        jnp.stack([_spd(k, D, 0.5) for k in jax.random.split(k3, S)]),
    )
    return model, pm.HMMParams(pm.InitialParams(jnp.full((S,), 1.0 / S)), _transitions(k4, S), em), 60


def _msar(key):
    """Hamilton's Markov-switching mean AR(1) (an HMM on regime histories, stationary start)."""
    from pssm.models.hmm.regimes import markov_switching_ar, markov_switching_ar_params

    model = markov_switching_ar(2, 1)
    params = markov_switching_ar_params(model, [-1.0, 1.5], [0.5], 0.5, [[0.9, 0.1], [0.2, 0.8]])
    return model, params, 60


CASES: tuple[Case, ...] = (
    Case("hmm_poisson", _poisson_hmm(2), frozen="emissions.rates", em=True),
    Case("hmm_gauss_full", _gauss_hmm("full", S=2), frozen="transitions", em=True),
    Case("hmm_gauss_diag", _gauss_hmm("diagonal"), frozen="emissions.covs", em=True),
    Case("hmm_gauss_tied", _gauss_hmm("tied"), frozen="emissions.means", em=True),
    Case("hmm_categorical", _hmm(pm.CategoricalEmissions(2, 3), _categorical(2, 3)), frozen="initial", em=True),
    Case("hmm_stationary", _poisson_hmm(1, S=2, initial="stationary"), frozen="emissions", em=True),
    Case("hmm_glm", _hmm_glm, frozen="emissions.bias", em=True),
    Case("hmm_glm_covariates", _hmm_glm_covariates, inputs=_covariates, frozen="emissions.input_weights", em=True),
    Case("hmm_ar", _hmm_ar, frozen="emissions.coefficients", em=True),
    Case("ms_ar", _msar, frozen="emissions.means", em=True),
    Case("lgssm", _lgssm, frozen="dynamics_weights", particles=2000),
    Case("scalar_lg", _scalar_lg, frozen="dynamics_weights"),
    Case("stochastic_volatility", _sv, frozen="phi"),
    Case("kitagawa", _kitagawa, frozen="sigma_y"),
    Case("lorenz96", _lorenz, frozen="forcing"),
    Case("chaotic_rnn", _rnn, frozen="gain"),
    Case("poisson_lds", _plds, frozen="emission_bias"),
    Case("deep_markov_model", _dmm, frozen="initial_latent"),
)


def _used_classes(cases):
    used = set()
    for c in cases:
        model = eqx.filter_eval_shape(c.make, jax.random.PRNGKey(0))[0]  # no compilation, no simulation
        used.add(type(model))
        for field in ("initial_component", "transition_component", "emission_component"):
            if hasattr(model, field):
                used.add(type(getattr(model, field)))
    return used


def unregistered_model_classes(cases=CASES) -> list[str]:
    """Concrete :class:`pssm.SSM` subclasses and HMM component classes exported by :mod:`pssm.models` that no
    case builds (a new model class or component is added to :data:`CASES` by one line)."""
    used = _used_classes(cases)
    bases = (SSM, Component)
    missing = []
    for name in pm.__all__:
        obj = getattr(pm, name)
        if isinstance(obj, type) and issubclass(obj, bases) and not inspect.isabstract(obj) and obj not in used:
            missing.append(name)
    return missing


def results_without_converter() -> list[str]:
    """Result ``NamedTuple`` classes (names ending in ``Result``/``Posterior``) exported by :mod:`pssm.inference`
    (and :mod:`pssm.inference.smc`) that have no :func:`pssm.to_arviz` converter."""
    fallback = pssm.to_arviz.registry[object]
    out = []
    for mod in (inf, smc):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not (isinstance(obj, type) and name.endswith(("Result", "Posterior"))):
                continue
            if issubclass(obj, tuple) and hasattr(obj, "_fields") and pssm.to_arviz.dispatch(obj) is fallback:
                out.append(name)
    return sorted(set(out))


_DATA: dict = {}


def case_data(case: Case, seed: int = 0):
    """``(model, params, states, emissions, inputs)`` with a path simulated from the case's params (cached per
    case, seed and precision)."""
    cache_key = (case.name, seed, bool(jax.config.jax_enable_x64))
    if cache_key not in _DATA:

        @eqx.filter_jit
        def build(key):  # one compilation: building the params and simulating
            k_make, k_in, k_sim = jax.random.split(key, 3)
            model, params, T = case.make(k_make)
            inputs = None if case.inputs is None else case.inputs(k_in, T)
            states, emissions = pssm.simulate(k_sim, model, params, T, inputs)
            return model, params, states, emissions, inputs

        _DATA[cache_key] = build(jax.random.PRNGKey(seed))
    return _DATA[cache_key]


# --------------------------------------------------------------------------------------------- (a) log joint
@eqx.filter_jit
def _step_terms(model, params, x_prev, x, y, t, u):
    lf = model.transition(params, x_prev, t, u).log_prob(x)
    lg = model.emission(params, x, t, u).log_prob(y)
    return lf, lg


@eqx.filter_jit
def _first_terms(model, params, x, y, u):
    return model.initial(params, u).log_prob(x), model.emission(params, x, jnp.asarray(0), u).log_prob(y)


def check_log_joint(case: Case, seed: int = 0) -> float:
    """Largest |log_joint - hand sum| (step-by-step protocol densities; discrete: also the log potentials)."""
    model, params, states, y, inputs = case_data(case, seed)
    feats = model_inputs(model, y, inputs)
    at = lambda t: jax.tree.map(lambda a: a[t], states)  # noqa: E731
    lp0, lg0 = _first_terms(model, params, at(0), y[0], inputs_at(feats, 0))
    total = float(lp0) + float(lg0)
    for t in range(1, y.shape[0]):
        lf, lg = _step_terms(model, params, at(t - 1), at(t), y[t], jnp.asarray(t), inputs_at(feats, t))
        total += float(lf) + float(lg)
    lj = float(eqx.filter_jit(pssm.log_joint)(model, params, states, y, inputs))
    err = abs(lj - total)
    if model.discrete_states:
        li, lt, ll = eqx.filter_jit(discrete_log_potentials)(model, params, y, inputs)
        z = np.asarray(states)
        T = y.shape[0]
        lt = np.broadcast_to(np.asarray(lt), (T - 1,) + np.shape(lt)[-2:])
        pot = (
            float(li[z[0]])
            + float(np.sum(lt[np.arange(T - 1), z[:-1], z[1:]]))
            + float(np.sum(np.asarray(ll)[np.arange(T), z]))
        )
        err = max(err, abs(lj - pot))
    return err


# --------------------------------------------------------------------------------------------- (b) filter vs exact
def exact_log_likelihood(model, params, emissions, inputs=None) -> float | None:
    """Forward algorithm for discrete states, Kalman for linear Gaussian params; ``None`` otherwise."""
    if model.discrete_states:
        return float(inf.marginal_log_likelihood(model, params, emissions, inputs=inputs).sum())
    if isinstance(params, pm.LGSSMParams):
        return float(inf.kalman_log_likelihood(params, emissions, inputs))
    return None


def check_filter_vs_exact(case: Case, seed: int = 0, num_runs: int = 16) -> dict[str, float] | None:
    """z-score of the mean of ``num_runs`` bootstrap log-likelihood estimates against the exact value.

    The log of an unbiased estimator is biased by about :math:`-\\mathrm{Var}/2`; ``bias_over_se`` reports
    :math:`(s^2/2)/\\mathrm{se}`, which must stay well below the z threshold (enough particles)."""
    model, params, _, y, inputs = case_data(case, seed)
    exact = exact_log_likelihood(model, params, y, inputs)
    keys = jax.random.split(jax.random.PRNGKey(1000 + seed), num_runs)
    est = np.array(  # the filter computes lagged model inputs itself (one boundary for every algorithm)
        [float(smc.particle_filter(k, model, params, y, case.particles, inputs=inputs).log_likelihood) for k in keys]
    )
    out = {"mean": float(est.mean()), "sd": float(est.std(ddof=1)), "finite": bool(np.all(np.isfinite(est)))}
    if exact is None:
        return out
    se = out["sd"] / np.sqrt(num_runs)
    out.update(
        exact=exact, se=float(se), z=float((out["mean"] - exact) / se), bias_over_se=float(0.5 * out["sd"] ** 2 / se)
    )
    return out


# --------------------------------------------------------------------------------------------- (d) bridge
def _trainable_sites(model, params, frozen=()):
    spec = model.param_spec()
    spec = freeze(spec, *frozen) if frozen else spec
    specs = jax.tree.leaves(spec, is_leaf=is_spec)
    values = jax.tree_util.tree_structure(spec, is_leaf=is_spec).flatten_up_to(params)
    names = leaf_names(params)
    if names != leaf_names(spec, is_leaf=is_spec):
        raise AssertionError(f"leaf_names(params) {names} != leaf_names(spec) {leaf_names(spec, is_leaf=is_spec)}")
    return {n: v for n, s, v in zip(names, specs, values, strict=True) if s.trainable}


def bridge_log_density(model, params, emissions, inputs=None, states=None, frozen=()):
    """``(log density, site names)`` of ``make_numpyro_model(model, params=params, frozen=frozen)`` with the param
    sites (and, for continuous models, ``x_0``/``x`` = ``states``) substituted."""
    sites = _trainable_sites(model, params, frozen)
    if not model.discrete_states:
        sites["x_0"] = jax.tree.map(lambda a: a[0], states)
        sites["x"] = jax.tree.map(lambda a: a[1:], states)
    ld, latent = _bridge_run(model, params, tuple(frozen), emissions, inputs, sites)
    return float(ld), list(latent)


@eqx.filter_jit
def _bridge_run(model, params, frozen, emissions, inputs, values):
    """One compilation per (model, frozen, shapes): the bridge is rebuilt inside, the params traced."""
    fn = inf.make_numpyro_model(model, params=params, frozen=frozen)
    ld, trace = log_density(fn, (emissions,), {"inputs": inputs}, values)
    latent = {k: v["value"] for k, v in trace.items() if v["type"] == "sample" and not v.get("is_observed")}
    return ld, latent


def target_log_density(model, params, emissions, inputs=None, states=None) -> float:
    """``log p(y|θ) + log p(θ)`` (discrete) or ``log p(x, y|θ) + log p(θ)`` (continuous)."""
    lp = float(_log_prior(model, params))
    if model.discrete_states:
        return lp + float(inf.marginal_log_likelihood(model, params, emissions, inputs=inputs).sum())
    return lp + float(eqx.filter_jit(pssm.log_joint)(model, params, states, emissions, inputs))


@eqx.filter_jit
def _log_prior(model, params):
    return model.log_prior(params)


def check_bridge(case: Case, seed: int = 0) -> dict[str, float]:
    """Bridge vs target density, and the same with ``case.frozen`` frozen (its site must disappear)."""
    model, params, states, y, inputs = case_data(case, seed)
    target = target_log_density(model, params, y, inputs, states)
    ld, names = bridge_log_density(model, params, y, inputs, states)
    out = {"abs_err": abs(ld - target), "rel_err": abs(ld - target) / (abs(target) + 1.0)}
    if case.frozen is not None:
        ldf, names_f = bridge_log_density(model, params, y, inputs, states, frozen=(case.frozen,))
        out["frozen_rel_err"] = abs(ldf - target) / (abs(target) + 1.0)
        out["frozen_site_present"] = any(n == case.frozen or n.startswith(case.frozen + ".") for n in names_f)
        out["frozen_site_was_present"] = any(n == case.frozen or n.startswith(case.frozen + ".") for n in names)
    return out


# --------------------------------------------------------------------------------------------- (c, e) EM
def _objective(model, params, y, inputs):
    return float(inf.marginal_log_likelihood(model, params, y, inputs=inputs).sum()) + float(_log_prior(model, params))


def _tree_max_change(a, b) -> float:
    diffs = [
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(z, np.float64))))
        for x, z in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        if np.size(x)
    ]
    return max(diffs, default=0.0)


def _leaf(tree, path):
    for part in path.split("."):
        tree = tree[int(part)] if part.isdigit() else getattr(tree, part)
    return tree


def check_em(case: Case, seed: int = 0, num_iters: int = 12) -> dict[str, Any] | None:
    """EM monotonicity, objective = log-lik + log prior at the params entering the first and last iterations,
    bridge = EM objective there, and the frozen leaf unchanged (bit for bit)."""
    if not case.em:
        return None
    model, _, _, y, inputs = case_data(case, seed)
    key = jax.random.PRNGKey(7 + seed)
    start = model.initialize(key, as_model_data(model, y, inputs))
    short = inf.fit_em(key, model, start, y, inputs=inputs, num_iters=num_iters - 1, tol=0.0)
    res = inf.fit_em(key, model, start, y, inputs=inputs, num_iters=num_iters, tol=0.0)
    obj = np.asarray(res.log_objective, np.float64)
    rel_drop = float(np.max(np.maximum(-np.diff(obj), 0.0) / (np.abs(obj[:-1]) + 1.0), initial=0.0))
    # params entering the last iteration: those returned by the shorter run (or res.params if it converged)
    entering_last = res.params if res.converged else short.params
    first = _objective(model, start, y, inputs)
    last = _objective(model, entering_last, y, inputs)
    b_first, _ = bridge_log_density(model, start, y, inputs)
    b_last, _ = bridge_log_density(model, entering_last, y, inputs)
    scale = abs(obj[0]) + 1.0
    out = {
        "result": res,
        "num_iters": int(res.num_iters),
        "max_rel_decrease": rel_drop,
        "objective_err": max(abs(obj[0] - first), abs(obj[-1] - last)) / scale,
        "bridge_vs_em_err": max(abs(obj[0] - b_first), abs(obj[-1] - b_last)) / scale,
        "improvement": float(obj[-1] - obj[0]),
    }
    if case.frozen is not None:
        fr = inf.fit_em(key, model, start, y, inputs=inputs, num_iters=5, tol=0.0, frozen=[case.frozen])
        a, b = _leaf(fr.params, case.frozen), _leaf(start, case.frozen)
        same = all(
            np.array_equal(np.asarray(u), np.asarray(v))
            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )
        out["frozen_bitwise_equal"] = same
        out["frozen_max_change"] = 0.0 if same else _tree_max_change(a, b)
        out["others_moved"] = _tree_max_change(fr.params, start) > 0
        fobj = np.asarray(fr.log_objective, np.float64)
        out["frozen_max_rel_decrease"] = float(
            np.max(np.maximum(-np.diff(fobj), 0.0) / (np.abs(fobj[:-1]) + 1.0), initial=0.0)
        )
    return out


# --------------------------------------------------------------------------------------------- PMMH freezing
def check_pmmh_frozen(seed: int = 0) -> dict[str, Any]:
    """PMMH with ``frozen=("phi",)``: the leaf must not be a site and every draw must hold it bit for bit."""
    case = next(c for c in CASES if c.name == "stochastic_volatility")
    model, params, _, y, _ = case_data(case, seed)
    opts = dict(num_samples=20, num_particles=64, num_warmup=10, num_chains=2)
    res = inf.pmmh(jax.random.PRNGKey(3), model, params, y, frozen=("phi",), **opts)
    return {
        "result": res,
        "frozen_in_samples": "phi" in res.samples,
        "frozen_max_change": float(np.max(np.abs(np.asarray(res.params.phi) - np.asarray(params.phi)))),
        "others_moved": bool(np.ptp(res.samples["mu"]) > 0),
    }


# --------------------------------------------------------------------------------------------- (f) ArviZ
def check_arviz(results) -> list[str]:
    """Names of the results :func:`pssm.to_arviz` fails on (empty list: all converted)."""
    import arviz as az

    bad = []
    for r in results:
        try:
            idata = pssm.to_arviz(r)
            # ... and onward to xarray's DataTree, the ArviZ 1.x container (one group per child)
            ok = isinstance(idata, az.InferenceData) and set(idata.to_datatree().children) == set(idata.groups())
        except Exception as err:  # noqa: BLE001 - report which converter fails
            ok = False
            bad.append(f"{type(r).__name__}: {type(err).__name__}: {err}")
            continue
        if not ok:
            bad.append(type(r).__name__)
    return bad


def case_results(case: Case, em: dict | None, seed: int = 0) -> list:
    """Results produced for a case: EM, smoother posterior (discrete), a particle filter, Kalman (LG params)."""
    model, params, _, y, inputs = case_data(case, seed)
    # case.particles: the program the filter check compiled (same shapes), not a second one
    out = [smc.particle_filter(jax.random.PRNGKey(5), model, params, y, case.particles, inputs=inputs)]
    if model.discrete_states:
        out.append(inf.smoother(model, params, y, inputs=inputs))
    if isinstance(params, pm.LGSSMParams):
        yy = y if y.ndim == 2 else y[:, None]
        out += [inf.kalman_filter(params, yy), inf.kalman_smoother(params, yy)]
    if em is not None:
        out.append(em["result"])
    return out


# --------------------------------------------------------------------------------------------- everything
Z_MAX = 4.0
TOL = 1e-6


def run_all(cases=CASES) -> dict[str, Any]:
    """All checks on all cases; ``passed`` names the cases that pass every check (thresholds as in the test)."""
    per_case, passed = {}, []
    for c in cases:
        r: dict[str, Any] = {"log_joint_err": check_log_joint(c)}
        r["filter"] = check_filter_vs_exact(c)
        r["bridge"] = check_bridge(c)
        em = check_em(c)
        r["em"] = None if em is None else {k: v for k, v in em.items() if k != "result"}
        r["arviz_failures"] = check_arviz(case_results(c, em))
        ok = r["log_joint_err"] < TOL * 100 and r["bridge"]["rel_err"] < TOL and not r["arviz_failures"]
        f = r["filter"]
        ok &= f["finite"] and ("z" not in f or (abs(f["z"]) < Z_MAX and f["bias_over_se"] < 1.0))
        if c.frozen is not None:
            ok &= (not r["bridge"]["frozen_site_present"]) and r["bridge"]["frozen_rel_err"] < TOL
        if em is not None:
            ok &= em["max_rel_decrease"] <= TOL and em["objective_err"] < TOL and em["bridge_vs_em_err"] < TOL
            ok &= em.get("frozen_bitwise_equal", True) and em.get("others_moved", True)
        per_case[c.name] = r
        r["passed"] = bool(ok)
        r["model_class"] = type(case_data(c)[0]).__name__
        if ok:
            passed.append(c.name)
    classes = {r["model_class"] for r in per_case.values()}
    good = sorted(k for k in classes if all(r["passed"] for r in per_case.values() if r["model_class"] == k))
    return {"cases": per_case, "passed": passed, "classes_passed": good}
