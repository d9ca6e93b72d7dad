"""pssm.reporting.report: sections and figures for small real results, and every figure renders in Chromium."""

import os
import re

import arviz as az
import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS

from pssm import to_arviz
from pssm.boundary import as_model_data
from pssm.inference import fit_em, kalman_smoother, particle_gibbs
from pssm.inference.smc import particle_filter
from pssm.models import HMMGLM, LinearGaussianSSM
from pssm.models.testing import ScalarLinearGaussian, scalar_lg_conjugate_conditional
from pssm.reporting import browser_check, count_figures, report
from pssm.reporting.browser import find_chromium

# one worker runs this file: its module fixtures are built once, not on both workers (make test: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_report")

T = 50


def sections(path):
    return re.findall(r"<h2>([^<]+)</h2>", path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="module")
def lgssm():
    """A 2-D linear Gaussian SSM and T steps simulated in NumPy (no JAX compile)."""
    F, Q, R = np.array([[0.9, 0.1], [-0.1, 0.9]]), 0.2 * np.eye(2), 0.5 * np.eye(2)
    model = LinearGaussianSSM(2, 2)
    params = model.make_params(dynamics_weights=F, dynamics_cov=Q, emission_weights=np.eye(2), emission_cov=R)
    rng = np.random.default_rng(0)
    x = np.zeros((T, 2), np.float32)
    x[0] = rng.normal(size=2)
    for t in range(1, T):
        x[t] = F @ x[t - 1] + rng.multivariate_normal(np.zeros(2), Q)
    y = (x + rng.multivariate_normal(np.zeros(2), R, size=T)).astype(np.float32)
    return model, params, x, y


@pytest.fixture(scope="module")
def glm_fit():
    """A tiny one-hot HMM-GLM fit (3 EM iterations) on 4 neurons whose spike probabilities switch with a sticky
    2-state chain (simulated in NumPy)."""
    rng = np.random.default_rng(1)
    z = np.zeros(300, np.int32)
    for t in range(1, z.size):
        z[t] = z[t - 1] if rng.random() < 0.95 else 1 - z[t - 1]
    rates = np.array([[0.05, 0.3, 0.1, 0.4], [0.4, 0.05, 0.3, 0.1]])
    y = (rng.random((z.size, 4)) < rates[z]).astype(np.float32)
    model = HMMGLM(
        2, 4, link="sigmoid", coupling_prior="onehot", self_coupling=False, shared_bias=False,
        adjacency_sampling="deterministic", inner_steps=5,
    )  # fmt: skip
    data = as_model_data(model, y)
    fit = fit_em(jax.random.PRNGKey(2), model, model.initialize(jax.random.PRNGKey(1), data), data, num_iters=3)
    return model, fit, z, y


@pytest.fixture(scope="module")
def pages(out, lgssm, glm_fit):
    """Every report the browser test loads, written once."""
    model, params, x, y = lgssm
    gmodel, fit, z, spikes = glm_fit
    return {
        "kalman": report(kalman_smoother(params, y), out / "kalman.html", states=x),
        "pf": report(particle_filter(jax.random.PRNGKey(2), model, params, y, 32), out / "pf.html", states=x),
        "glm": report(
            fit, out / "glm.html", model=gmodel, params=fit.params, data=spikes, states=z, key=jax.random.PRNGKey(3),
            num_ppc=20,
        ),
    }  # fmt: skip


def test_kalman_smoother_report(pages):
    page = pages["kalman"]
    assert sections(page) == ["Summary", "Parameters and estimates", "Latent states"]
    html = page.read_text(encoding="utf-8")
    assert count_figures(page) == 1  # smoothed means ± 2 sd
    assert "mean ± 2 sd" in html and "dashed: true latent states" in html
    assert "log-likelihood" in html and "KalmanSmootherResult" in html


def test_particle_filter_report(pages):
    page = pages["pf"]
    assert sections(page) == ["Summary", "Parameters and estimates", "Sequential Monte Carlo", "Latent states"]
    html = page.read_text(encoding="utf-8")
    assert count_figures(page) == 2  # ESS + increments, filtered means
    assert "resampling steps" in html and "<th>particles</th><td>32</td>" in html


def test_hmm_glm_em_report(pages):
    page = pages["glm"]
    assert sections(page) == [
        "Summary",
        "Parameters and estimates",
        "Objective traces",
        "Posterior predictive check",
        "Hidden Markov model",
    ]
    html = page.read_text(encoding="utf-8")
    # objective, PPC, state raster, true vs decoded, transition matrix, adjacency, A0, couplings
    assert count_figures(page) == 8
    for text in ("Viterbi path", "zero fraction, dim 3", "per-state adjacency", "A0: shared prior", "coupling weights"):
        assert text in html, text
    assert "presynaptic" in html and "r_hat" not in html  # single-draw point estimates: no R-hat


def test_report_of_netcdf_matches_live_sections(tmp_path, glm_fit):
    """An InferenceData read back from netCDF (what the CLI passes) gives the same data-driven sections."""
    _, fit, _, _ = glm_fit
    nc = tmp_path / "fit.nc"
    to_arviz(fit).to_netcdf(nc)
    page = report(az.from_netcdf(nc), tmp_path / "nc.html")
    assert sections(page) == ["Summary", "Parameters and estimates", "Objective traces", "Hidden Markov model"]
    html = page.read_text(encoding="utf-8")
    assert "InferenceData" in html and "per-state adjacency" in html and "transition matrix" in html.lower()
    assert count_figures(page) == 6  # objective, raster, transition matrix, adjacency, A0, couplings (unscaled)


def test_gaussian_prior_glm_params_from_inference_data(tmp_path):
    """Dotted HMM-GLM leaf names in an InferenceData alone give W0 and the per-state couplings."""
    rng = np.random.default_rng(0)
    S, N, K = 2, 3, 2
    post = {
        "emissions.bias": rng.normal(size=(1, 1, S, N)),
        "emissions.weights": rng.normal(size=(1, 1, S, N, N * K)),
        "emissions.weights_mean": rng.normal(size=(1, 1, N, N * K)),
        "transitions.matrix": np.array([[[[0.9, 0.1], [0.3, 0.7]]]]),
    }
    page = report(az.from_dict(posterior=post), tmp_path / "w0.html")
    html = page.read_text(encoding="utf-8")
    assert "W0: shared mean weights" in html and "summed over basis functions, unscaled" in html
    assert count_figures(page) == 3  # transition matrix, per-state couplings, W0


def test_particle_gibbs_report_has_diagnostics(tmp_path):
    """2 chains x 40 sweeps of conjugate particle Gibbs: summary with flagged ESS, traces, ranks, sampled paths."""
    lg = LinearGaussianSSM(1, 1)
    p = lg.make_params(dynamics_weights=[[0.8]], dynamics_cov=[[1.0]], emission_weights=[[1.0]], emission_cov=[[0.25]])
    rng = np.random.default_rng(2)
    x = np.zeros((20, 1), np.float32)
    for t in range(1, 20):
        x[t] = 0.8 * x[t - 1] + rng.normal()
    y = (x + 0.5 * rng.normal(size=x.shape)).astype(np.float32)
    r = particle_gibbs(
        jax.random.PRNGKey(2), ScalarLinearGaussian(), p, y, conditional=scalar_lg_conjugate_conditional,
        num_samples=40, num_particles=8, num_chains=2, chunk_size=50,
    )  # fmt: skip
    page = report(r, tmp_path / "pg.html", states=x)
    html = page.read_text(encoding="utf-8")
    assert sections(page) == ["Summary", "Parameters and estimates", "MCMC diagnostics", "Latent states"]
    assert count_figures(page) == 4  # trace, rank, per-draw sampler statistics, sampled paths with band
    assert "r_hat" in html and "ess_bulk" in html and "mean path update rate" in html
    assert "100 × chains = 200" in html  # thresholds stated on the page
    assert 'class="flag"' in html  # 2 chains × 40 draws: ESS below 200 is flagged
    assert "5–95% of sampled paths" in html and "dashed: true latent states" in html


def test_numpyro_mcmc_report(tmp_path):
    def model():
        numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("sigma", dist.HalfNormal(1.0))

    mcmc = MCMC(NUTS(model), num_warmup=20, num_samples=20, num_chains=2, chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0))
    page = report(mcmc, tmp_path / "nuts.html", title="NUTS")
    html = page.read_text(encoding="utf-8")
    assert sections(page) == ["Summary", "Parameters and estimates", "MCMC diagnostics"]
    assert count_figures(page) == 2 and "divergences" in html and "<h1>NUTS</h1>" in html


def test_ppc_needs_key_and_unknown_inputs_are_rejected(tmp_path, lgssm):
    model, params, _, y = lgssm
    res = kalman_smoother(params, y)
    with pytest.raises(ValueError, match="key"):
        report(res, tmp_path / "r.html", model=model, params=params, data=y)
    with pytest.raises(TypeError, match="report cannot read a dict"):
        report({"a": 1}, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_every_figure_renders_in_chromium(pages):
    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI for the browser check: apt-get install -y chromium")
        pytest.skip("Chromium not installed (apt-get install -y chromium); the browser check runs in CI")
    for name, page in pages.items():
        res = browser_check(page)
        n = count_figures(page)
        assert n > 0
        assert res["figures"] == n and res["loaded"] == n and res["nonblank"] == n, (name, res)


def test_browser_check_detects_blank_figures(tmp_path):
    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI for the browser check: apt-get install -y chromium")
        pytest.skip("Chromium not installed (apt-get install -y chromium); the browser check runs in CI")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pssm.reporting import Page

    page = Page("blank")
    page.figure(plt.figure(figsize=(2, 2)), "a blank figure")
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    page.figure(fig, "a line")
    path = page.write(tmp_path / "blank.html")
    html = path.read_text(encoding="utf-8").replace("</body>", '<img class="pssm-figure" src="missing.png"></body>')
    path.write_text(html, encoding="utf-8")
    res = browser_check(path)
    assert (res["figures"], res["loaded"], res["nonblank"]) == (3, 2, 1), res
    assert "figure 0 is one colour" in res["errors"] and "figure 2 not loaded" in res["errors"]


def test_report_module_imports_no_plotting_stack():
    import subprocess
    import sys

    mods = "{'matplotlib', 'pandas', 'arviz', 'xarray'}"
    code = f"import sys, pssm.reporting, pssm.plotting; print(sorted({mods} & set(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
