"""plot_raster_states: figure structure, image contents, epochs, PNG output, input checks."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from pssm.plotting import plot_raster_states  # noqa: E402


def _inputs(T=200, N=6, S=3, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, size=(T, N))
    edges = np.linspace(0.0, T * 0.1, T + 1)
    p = rng.dirichlet(np.ones(S), size=T)
    return counts, edges, p


def _spans(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle | matplotlib.patches.Polygon)]


def test_figure_structure_and_png(tmp_path):
    counts, edges, p = _inputs()
    epochs = pd.DataFrame({"start": [0.0, 10.0], "stop": [10.0, 20.0], "tags": ["sleep", "wake"]})
    fig = plot_raster_states(counts, edges, p, epochs=epochs, unit_labels=[f"u{i}" for i in range(6)])
    axes = fig.get_axes()
    assert len(axes) == 2
    raster, states = axes
    img = raster.get_images()
    assert len(img) == 1
    scale = np.maximum(np.percentile(counts, 99, axis=0), 1.0)  # per-unit normalisation (default)
    np.testing.assert_allclose(np.asarray(img[0].get_array()), counts.T / scale[:, None])
    assert [t.get_text() for t in raster.get_yticklabels()] == [f"u{i}" for i in range(6)]
    assert sum(isinstance(c, PolyCollection) for c in states.collections) == 3  # one band per state
    assert len(_spans(raster)) == 2 and len(_spans(states)) == 2  # one shaded span per epoch
    assert {t.get_text() for t in raster.texts} == {"sleep", "wake"}
    assert states.get_xlim() == pytest.approx((0.0, 20.0))
    out = tmp_path / "raster.png"
    fig.savefig(out, dpi=50)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000
    plt.close(fig)


def test_draws_into_given_axes_and_tuple_epochs():
    counts, edges, p = _inputs(T=50, N=2, S=2)
    fig, axs = plt.subplots(2, 1)
    out = plot_raster_states(counts, edges, p, epochs=[(0.0, 2.0, "a"), (2.0, 5.0)], ax=axs, normalize=False)
    np.testing.assert_array_equal(np.asarray(axs[0].get_images()[0].get_array()), counts.T)
    assert out is fig and len(_spans(axs[0])) == 2 and [t.get_text() for t in axs[0].texts] == ["a"]
    plt.close(fig)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"bin_edges": np.linspace(0, 1, 10)}, r"bin_edges must have shape \(51,\)"),
        ({"state_probs": np.full((49, 2), 0.5)}, "state_probs must have 50 rows"),
        ({"state_probs": np.full((50, 2), 1.5)}, r"state_probs must be probabilities in \[0, 1\]"),
        ({"counts": np.ones(50)}, "counts must be 2-dimensional"),
        ({"unit_labels": ["a"]}, "unit_labels must have 2 entries"),
        ({"epochs": [(0.0,)]}, r"epochs\[0\] must be \(start, stop\)"),
    ],
)
def test_rejects_bad_inputs(kw, match):
    counts, edges, p = _inputs(T=50, N=2, S=2)
    args = {"counts": counts, "bin_edges": edges, "state_probs": p} | kw
    with pytest.raises(ValueError, match=match):
        plot_raster_states(**args)
    plt.close("all")


# ------------------------------------------------------------------------------------------------ report plots


def test_plot_connectivity_per_state_with_groups():
    from pssm.plotting import plot_connectivity

    W = np.random.default_rng(0).normal(size=(2, 4, 4))
    fig = plot_connectivity(W, groups=["CA1", "CA1", "V1", "V1"], colorbar_label="edge weight")
    panels = [a for a in fig.get_axes() if a.get_images()]
    assert len(panels) == 2
    for s, a in enumerate(panels):
        np.testing.assert_allclose(np.asarray(a.get_images()[0].get_array()), W[s])
        assert a.get_xlabel() == "presynaptic neuron" and a.get_ylabel() == "postsynaptic neuron"
        assert [t.get_text() for t in a.get_xticklabels()] == ["CA1", "V1"]
        assert a.get_title() == f"state {s}"
    clim = panels[0].get_images()[0].get_clim()
    assert clim == pytest.approx((-np.abs(W).max(), np.abs(W).max()))  # shared, centred at 0
    fig2 = plot_connectivity({"A0": W[0]})
    assert fig2.get_axes()[0].get_title() == "A0"
    with pytest.raises(ValueError, match="groups must have 4 entries"):
        plot_connectivity(W, groups=["a"])
    with pytest.raises(ValueError, match=r"matrices must be \(N, N\) or \(S, N, N\)"):
        plot_connectivity(np.ones(3))
    plt.close("all")


def test_plot_objective_trace_and_ess():
    from pssm.plotting import plot_ess, plot_objective_trace

    fig = plot_objective_trace({"log-lik + log-prior": np.arange(5.0), "loss": np.ones((2, 7))})
    a, b = fig.get_axes()
    assert a.get_ylabel() == "log-lik + log-prior" and a.get_xlabel() == "iteration"
    np.testing.assert_allclose(a.get_lines()[0].get_ydata(), np.arange(5.0))
    assert len(b.get_lines()) == 2  # one line per chain
    with pytest.raises(ValueError, match="must be \\(iters,\\) or \\(chains, iters\\)"):
        plot_objective_trace(np.ones((2, 2, 2)))
    ess = np.linspace(10, 50, 20)
    res = np.zeros(20, bool)
    res[[3, 9]] = True
    fig = plot_ess(ess, resampled=res, num_particles=64, log_likelihood_increments=-np.ones(20))
    top, bottom = fig.get_axes()
    assert top.get_ylabel() == "effective sample size" and bottom.get_xlabel() == "time step"
    marks = [ln for ln in top.get_lines() if ln.get_marker() == "|"]
    np.testing.assert_array_equal(marks[0].get_xdata(), [3, 9])
    plt.close("all")


def test_plot_states_true_vs_decoded_uses_best_permutation():
    from pssm.plotting import plot_states_true_vs_decoded

    z = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    zhat = np.array([2, 2, 0, 0, 1, 1, 2, 1])  # relabelled, one error at the end
    fig = plot_states_true_vs_decoded(z, zhat, 3)
    top, bottom = fig.get_axes()
    np.testing.assert_array_equal(bottom.get_lines()[0].get_ydata(), [0, 0, 1, 1, 2, 2, 0, 2])
    assert "0.875" in top.get_title() and bottom.get_xlabel() == "time step"
    with pytest.raises(ValueError, match="same length"):
        plot_states_true_vs_decoded(z, zhat[:3])
    plt.close("all")


def test_latent_bands_state_probs_transition_and_ppc():
    from pssm.plotting import plot_latent_bands, plot_ppc, plot_state_probs, plot_transition_matrix

    m = np.zeros((30, 2))
    fig = plot_latent_bands(m, m - 1, m + 1, truth=np.ones((30, 2)), title="x")
    assert len(fig.get_axes()) == 2 and fig.get_axes()[1].get_ylabel() == "latent dim 1"
    with pytest.raises(ValueError, match="lower and upper"):
        plot_latent_bands(m, m - 1)
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=40)
    fig = plot_state_probs(p, viterbi=p.argmax(1), true_states=p.argmax(1))
    a = fig.get_axes()[0]
    np.testing.assert_allclose(np.asarray(a.get_images()[0].get_array()), p.T)
    assert a.get_ylabel() == "state" and a.get_xlabel() == "time step"
    fig = plot_transition_matrix(np.array([[0.9, 0.1], [0.2, 0.8]]))
    a = fig.get_axes()[0]
    assert {t.get_text() for t in a.texts} == {"0.90", "0.10", "0.20", "0.80"}
    assert a.get_xlabel().startswith("to state") and a.get_ylabel().startswith("from state")
    fig = plot_ppc({"mean": np.array([1.0, 2.0])}, {"mean": np.ones((50, 2))})
    axes = fig.get_axes()
    assert len(axes) == 2 and axes[1].get_xlabel() == "mean (dim 1)"
    assert axes[1].get_lines()[0].get_xdata()[0] == pytest.approx(2.0)  # observed value marked
    plt.close("all")
