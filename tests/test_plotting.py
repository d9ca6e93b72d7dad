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
