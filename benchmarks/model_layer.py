"""Model-layer benchmark: conformance over the model registry, EM vs direct optimisation, AR-HMM vs statsmodels.

Prints ONE JSON object as its last line:

* ``conformance_models``: model classes (and HMM component classes) whose every registered case passes the checks
  of ``tests/conformance_checks.py`` (the same functions the conformance test asserts);
* ``em_objective_vs_loglik_plus_prior_max_err``, ``bridge_vs_em_objective_max_err`` (relative errors),
  ``frozen_leaf_max_change``;
* ``tied_gaussian_em_loglik`` / ``tied_gaussian_direct_loglik`` / ``tied_gaussian_rel_diff``: a tied-covariance
  Gaussian HMM fitted by EM (best of restarts) and by L-BFGS on the exact marginal log-likelihood + log prior over
  unconstrained params (softmax rows, Cholesky factor with log diagonal), from the EM solution's neighbourhood and
  from k-means starts;
* ``arhmm_loglik_vs_statsmodels_abs_err``, ``arhmm_fit_loglik_minus_statsmodels`` (from
  ``benchmarks/arhmm_statsmodels.py`` when present, else null);
* ``hmm_glm_specific_lines``: non-blank, non-comment lines in ``models/glm/*.py``.

Usage: ``python benchmarks/model_layer.py [--quick]``.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import conformance_checks as cc  # noqa: E402

import pssm.inference as inf  # noqa: E402
import pssm.models as pm  # noqa: E402
from pssm.boundary import as_model_data  # noqa: E402

QUICK_CASES = ("hmm_poisson", "hmm_gauss_tied", "lgssm", "stochastic_volatility")


def conformance(quick: bool) -> dict:
    """All registered cases (``--quick``: four of them, one per kind: discrete closed-form, tied, Kalman, SMC)."""
    cases = [c for c in cc.CASES if c.name in QUICK_CASES] if quick else cc.CASES
    out = cc.run_all(cases)
    em = [r["em"] for r in out["cases"].values() if r["em"] is not None]
    return {
        "conformance_models": len(out["classes_passed"]),
        "conformance_classes": out["classes_passed"],
        "conformance_cases_passed": len(out["passed"]),
        "conformance_cases": len(cases),
        "conformance_failed_cases": sorted(set(out["cases"]) - set(out["passed"])),
        "unregistered_classes": cc.unregistered_model_classes(),
        "results_without_arviz": cc.results_without_converter(),
        "em_objective_vs_loglik_plus_prior_max_err": max(r["objective_err"] for r in em),
        "bridge_vs_em_objective_max_err": max(r["bridge_vs_em_err"] for r in em),
        "em_max_rel_decrease": max(r["max_rel_decrease"] for r in em),
        "frozen_leaf_max_change": max(r.get("frozen_max_change", 0.0) for r in em),
        "filter_max_abs_z": max(abs(r["filter"]["z"]) for r in out["cases"].values() if "z" in r["filter"]),
    }


# --------------------------------------------------------------------------------------------- tied Gaussian
def _tied_model(S, D):
    # flat-ish prior: Dir(1) rows and initial, flat means, inverse-Wishart limit with a tiny reg
    return pm.HMM(S, pm.GaussianEmissions(D, "tied", covariance_reg=1e-6))


def _unpack(model, u, S, D):
    i = 0

    def take(n):
        nonlocal i
        v = u[i : i + n]
        i += n
        return v

    pi = jax.nn.softmax(take(S))
    A = jax.nn.softmax(take(S * S).reshape(S, S), axis=-1)
    means = take(S * D).reshape(S, D)
    low = take(D * (D + 1) // 2)
    L = jnp.zeros((D, D)).at[jnp.tril_indices(D)].set(low)
    L = L.at[jnp.diag_indices(D)].set(jnp.exp(jnp.diag(L)))
    return pm.HMMParams(pm.InitialParams(pi), pm.TransitionParams(A), pm.GaussianParams(means, L @ L.T))


def _pack(params):
    pi = jnp.log(params.initial.probs)
    A = jnp.log(params.transitions.matrix)
    L = jnp.linalg.cholesky(params.emissions.covs)
    L = L.at[jnp.diag_indices(L.shape[0])].set(jnp.log(jnp.diag(L)))
    low = L[jnp.tril_indices(L.shape[0])]
    return jnp.concatenate(
        [pi - pi.mean(), (A - A.mean(1, keepdims=True)).ravel(), params.emissions.means.ravel(), low]
    )


def tied_gaussian(quick: bool) -> dict:
    S, D, T = 3, 2, (400 if quick else 2000)
    model = _tied_model(S, D)
    key = jax.random.PRNGKey(0)
    k_true, k_sim, k_fit = jax.random.split(key, 3)
    true = pm.HMMParams(
        pm.InitialParams(jnp.ones(S) / S),
        pm.TransitionParams(pm.sticky_matrix(S, 0.9)),
        pm.GaussianParams(2.0 * jax.random.normal(k_true, (S, D)), jnp.array([[1.0, 0.3], [0.3, 0.6]])),
    )
    _, y = model.simulate(k_sim, true, T)
    best, _ = inf.fit_em_restarts(k_fit, model, y, num_restarts=2 if quick else 6, num_iters=500, tol=1e-12)
    data = as_model_data(model, y)

    def objective(params):
        ll = inf.marginal_log_likelihood(model, params, data).sum()
        return ll + model.log_prior(params), ll

    @jax.jit
    def loss_and_grad(u):
        (v, _), g = jax.value_and_grad(lambda x: tuple(-a for a in objective(_unpack(model, x, S, D))), has_aux=True)(u)
        return v, g

    def direct(u0):
        r = scipy.optimize.minimize(
            lambda x: tuple(np.asarray(a, np.float64) for a in loss_and_grad(jnp.asarray(x))),
            np.asarray(u0),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 3000, "gtol": 1e-9, "ftol": 1e-15},
        )
        return _unpack(model, jnp.asarray(r.x), S, D)

    u_em = _pack(best.params)
    starts = [u_em + 0.05 * jax.random.normal(k, u_em.shape) for k in jax.random.split(jax.random.PRNGKey(1), 2)]
    starts += [_pack(model.initialize(k, data)) for k in jax.random.split(jax.random.PRNGKey(2), 2 if quick else 4)]
    fits = [direct(u) for u in starts]
    objs = [float(objective(p)[0]) for p in fits]
    p_direct = fits[int(np.argmax(objs))]
    em_obj, em_ll = (float(a) for a in objective(best.params))
    dir_obj, dir_ll = (float(a) for a in objective(p_direct))
    return {
        "tied_gaussian_em_loglik": em_ll,
        "tied_gaussian_direct_loglik": dir_ll,
        "tied_gaussian_em_objective": em_obj,
        "tied_gaussian_direct_objective": dir_obj,
        "tied_gaussian_rel_diff": abs(em_ll - dir_ll) / abs(dir_ll),
        "tied_gaussian_objective_rel_diff": abs(em_obj - dir_obj) / abs(dir_obj),
        "tied_gaussian_direct_from_kmeans_objectives": objs[2:],
    }


# --------------------------------------------------------------------------------------------- AR-HMM, GLM lines
def arhmm(quick: bool) -> dict:
    try:
        from arhmm_statsmodels import arhmm_figures
    except ImportError as err:
        return {
            "arhmm_loglik_vs_statsmodels_abs_err": None,
            "arhmm_fit_loglik_minus_statsmodels": None,
            "arhmm_note": f"benchmarks/arhmm_statsmodels.py not importable: {err}",
        }
    try:
        figs = arhmm_figures(quick)
    except Exception as err:  # noqa: BLE001 - another helper's benchmark: report, do not fail this one
        return {
            "arhmm_loglik_vs_statsmodels_abs_err": None,
            "arhmm_fit_loglik_minus_statsmodels": None,
            "arhmm_note": f"arhmm_figures failed: {type(err).__name__}: {err}",
        }
    return {k: figs.get(k) for k in ("arhmm_loglik_vs_statsmodels_abs_err", "arhmm_fit_loglik_minus_statsmodels")}


def glm_lines() -> int:
    n = 0
    for f in sorted((ROOT / "models" / "glm").glob("*.py")):
        n += sum(1 for line in f.read_text().splitlines() if line.strip() and not line.strip().startswith("#"))
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (< 1 min)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out: dict = {"benchmark": "model_layer", "quick": bool(args.quick), "x64": True}
    out.update(conformance(args.quick))
    out.update(tied_gaussian(args.quick))
    out.update(arhmm(args.quick))
    out["hmm_glm_specific_lines"] = glm_lines()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["cpus"] = os.cpu_count()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
