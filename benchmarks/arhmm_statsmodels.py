"""Hamilton's Markov-switching AR on US real GNP: pssm's regime-history HMM against statsmodels.

statsmodels' ``MarkovAutoregression`` conditions on the first ``order`` observations and starts the regimes in
their steady state; pssm reproduces that with :func:`pssm.models.hmm.regimes.conditional_sequences` (first
``order`` steps masked, still feeding the lags) and ``initial="stationary"`` on the expanded chain.

Figures (float64):

* ``arhmm_loglik_vs_statsmodels_abs_err``: ``|pssm log-likelihood - res.llf|`` at statsmodels' fitted params
  (k=2, order=4, switching mean only: the textbook example);
* ``arhmm_fit_loglik_minus_statsmodels``: best pssm EM log-likelihood over several starts minus statsmodels'
  maximum (``fit()``, plus ``search_reps`` random starts in the full run); must be >= -1e-3;
* in the full run the same two figures for the switching-AR(1) model (``arhmm_ar1switch_*``).

Usage: ``python benchmarks/arhmm_statsmodels.py [--quick]``; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from pssm.boundary import as_model_data  # noqa: E402
from pssm.inference.exact.discrete import marginal_log_likelihood  # noqa: E402
from pssm.inference.optim.em import fit_em  # noqa: E402
from pssm.models.hmm.regimes import (  # noqa: E402
    conditional_sequences,
    markov_switching_ar,
    markov_switching_ar_params,
    to_base_params,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "hamilton_rgnp.csv"


def load_rgnp() -> np.ndarray:
    """The bundled series, checked against the copy that ships with statsmodels' test suite."""
    from statsmodels.tsa.regime_switching.tests.test_markov_autoregression import rgnp

    y = np.loadtxt(DATA, skiprows=1)
    np.testing.assert_allclose(y, np.asarray(rgnp), atol=1e-8)
    return y


def statsmodels_to_base(sm_model, params, k, order, switching_ar, switching_variance):
    """statsmodels' params vector -> (means, ar, variances, P with P[i, j] = p(s_t = j | s_{t-1} = i))."""
    values = dict(zip(sm_model.param_names, np.asarray(params), strict=True))
    P = np.zeros((k, k))
    for i in range(k):
        for j in range(k - 1):
            P[i, j] = values[f"p[{i}->{j}]"]
        P[i, k - 1] = 1.0 - P[i, : k - 1].sum()
    means = np.array([values[f"const[{r}]"] for r in range(k)])
    if switching_variance:
        var = np.array([values[f"sigma2[{r}]"] for r in range(k)])
    else:
        var = np.asarray(values["sigma2"])
    if switching_ar:
        ar = np.array([[values[f"ar.L{lag}[{r}]"] for lag in range(1, order + 1)] for r in range(k)])
    else:
        ar = np.array([values[f"ar.L{lag}"] for lag in range(1, order + 1)])
    assert all(re.match(r"p\[|const|sigma2|ar\.L", n) for n in sm_model.param_names)
    return means, ar, var, P


def compare(y, k, order, switching_ar, switching_variance, num_starts, search_reps, num_iters):
    import statsmodels.api as sm

    t0 = time.perf_counter()
    sm_model = sm.tsa.MarkovAutoregression(
        y, k_regimes=k, order=order, switching_ar=switching_ar, switching_variance=switching_variance
    )
    res = sm_model.fit()
    best_sm = res
    if search_reps:
        res_search = sm_model.fit(search_reps=search_reps)
        if res_search.llf > best_sm.llf:
            best_sm = res_search
    sm_seconds = time.perf_counter() - t0

    model = markov_switching_ar(k, order, switching_ar, switching_variance)
    data = conditional_sequences(y, order)
    params = markov_switching_ar_params(
        model, *statsmodels_to_base(sm_model, res.params, k, order, switching_ar, switching_variance)
    )
    ll_at_sm = float(marginal_log_likelihood(model, params, data)[0])

    prepared = as_model_data(model, data)
    t0 = time.perf_counter()
    fits = []
    for s in range(num_starts):
        key = jax.random.PRNGKey(s)
        start = model.initialize(key, prepared)
        if s >= 2:  # beyond the k-means starts: perturb the means and the transition matrix
            kp, kq = jax.random.split(jax.random.fold_in(key, 1))
            e = start.emissions._replace(means=start.emissions.means + 0.5 * jax.random.normal(kp, (k,)))
            P = jax.random.dirichlet(kq, 2.0 * np.ones(k), (k,)) * 0.5 + 0.5 * np.eye(k)
            start = start._replace(emissions=e, transitions=start.transitions._replace(matrix=P))
        r = fit_em(jax.random.PRNGKey(100 + s), model, start, data, num_iters=num_iters, tol=1e-11)
        obj = np.asarray(r.log_objective)
        fits.append(
            dict(
                loglik=float(marginal_log_likelihood(model, r.params, data)[0]),
                iters=int(r.num_iters),
                monotone=bool(np.all(np.diff(obj) >= -1e-9 * np.abs(obj[:-1]))),
                params=r.params,
            )
        )
    em_seconds = time.perf_counter() - t0
    best = max(fits, key=lambda f: f["loglik"])
    base = to_base_params(model, best["params"])
    # align regimes with statsmodels' labelling (k = 2: swap if the means are in the other order)
    sm_means = statsmodels_to_base(sm_model, best_sm.params, k, order, switching_ar, switching_variance)[0]
    ours = np.asarray(base.means)
    perm = np.argsort(np.argsort(sm_means))
    ours_sorted = np.sort(ours)[perm]
    return dict(
        loglik_vs_statsmodels_abs_err=abs(ll_at_sm - float(res.llf)),
        loglik_at_statsmodels_params=ll_at_sm,
        statsmodels_llf=float(res.llf),
        statsmodels_best_llf=float(best_sm.llf),
        fit_loglik_minus_statsmodels=best["loglik"] - float(best_sm.llf),
        fit_best_loglik=best["loglik"],
        fit_logliks=[f["loglik"] for f in fits],
        fit_iters=[f["iters"] for f in fits],
        fit_all_monotone=all(f["monotone"] for f in fits),
        fit_means_max_abs_diff_vs_statsmodels=float(np.max(np.abs(ours_sorted - sm_means))),
        statsmodels_seconds=sm_seconds,
        em_seconds=em_seconds,
    )


def arhmm_figures(quick: bool) -> dict:
    y = load_rgnp()
    out = {}
    main = compare(
        y,
        2,
        4,
        False,
        False,
        num_starts=1 if quick else 6,
        search_reps=0 if quick else 20,
        num_iters=300 if quick else 1000,
    )
    out.update({f"arhmm_{k}": v for k, v in main.items()})
    if not quick:
        ar1 = compare(y, 2, 1, True, False, num_starts=4, search_reps=20, num_iters=1000)
        out.update({f"arhmm_ar1switch_{k}": v for k, v in ar1.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one EM start, no statsmodels search (< 1 min)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    figures = arhmm_figures(args.quick)
    figures["seconds"] = time.perf_counter() - t0
    figures["quick"] = bool(args.quick)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
