"""Circular metrics, alignment, latent angles and the Poisson tuning-curve decoder (pssm.decoding)."""

import numpy as np
import pytest

from pssm.decoding import (
    CircularAlignment,
    TuningCurveDecoder,
    apply_alignment,
    circular_correlation,
    circular_mean,
    fit_circular_alignment,
    fit_tuning_curves,
    fit_whitening,
    latent_angle,
    wrap_angle,
)


def angular_distance(a, b):
    return np.abs(np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b)))))


def noisy_pair(seed, n=500, noise=0.6):
    rng = np.random.default_rng(seed)
    a = rng.vonmises(1.0, 0.5, n)
    return a, a + rng.vonmises(0.0, 1.0 / noise**2, n)


# ------------------------------------------------------------------------------------ circular correlation
@pytest.mark.parametrize("method", ["js", "fisher_lee"])
def test_circular_correlation_identical_reflected_and_rotations(method):
    a, b = noisy_pair(0)
    cc = lambda x, y: circular_correlation(x, y, method=method)  # noqa: E731
    assert cc(a, a) == pytest.approx(1.0, abs=1e-12)
    assert cc(a, -a) == pytest.approx(-1.0, abs=1e-12)
    assert cc(a, 2.0 - a) == pytest.approx(-1.0, abs=1e-12)  # a reflection about any axis
    r = cc(a, b)
    assert 0.3 < r < 0.99
    for c in (0.7, np.pi, -2.5, 10.0):
        assert cc(a + c, b + c) == pytest.approx(r, abs=1e-10)  # common rotation
        assert cc(a, b + c) == pytest.approx(r, abs=1e-10)  # both ignore either variable's offset
    assert cc(a + 2 * np.pi, b - 4 * np.pi) == pytest.approx(r, abs=1e-10)  # wrapping
    assert cc(b, a) == pytest.approx(r, abs=1e-12)  # symmetric


def test_fisher_lee_matches_its_pairwise_definition():
    a, b = noisy_pair(3, n=60)
    i, j = np.triu_indices(60, 1)
    sa, sb = np.sin(a[i] - a[j]), np.sin(b[i] - b[j])
    brute = np.sum(sa * sb) / np.sqrt(np.sum(sa**2) * np.sum(sb**2))
    assert circular_correlation(a, b, method="fisher_lee") == pytest.approx(brute, abs=1e-12)


def test_circular_correlation_of_independent_angles_is_zero_within_its_standard_error():
    """Under independence sqrt(n) r_c -> N(0, 1) (lambda = 1), so each r_c is within 4/sqrt(n) and the mean over
    S seeds within 4/sqrt(n S); the spread over seeds matches 1/sqrt(n) to 30 %.  Fisher-Lee (a degenerate
    U-statistic under independence, O(1/n)) stays well inside 1/sqrt(n)."""
    n, seeds = 400, 40
    rs, fl = [], []
    for s in range(seeds):
        rng = np.random.default_rng(100 + s)
        a = rng.vonmises(0.3, 1.0, n) if s % 2 else rng.uniform(0, 2 * np.pi, n)
        b = rng.uniform(-np.pi, np.pi, n)
        rs.append(circular_correlation(a, b))
        fl.append(circular_correlation(a, b, method="fisher_lee"))
    rs = np.asarray(rs)
    se = 1.0 / np.sqrt(n)
    assert np.all(np.abs(rs) < 4 * se), rs
    assert abs(rs.mean()) < 4 * se / np.sqrt(seeds)
    assert 0.7 * se < rs.std() < 1.3 * se
    assert np.all(np.abs(fl) < se) and abs(np.mean(fl)) < se / np.sqrt(seeds)


def test_js_needs_mean_directions_fisher_lee_does_not():
    """Near-uniform angles and a good noisy estimate: r_c depends on the noise-set mean directions (it swings over
    seeds), Fisher-Lee does not -- the documented caveat."""
    js, fl = [], []
    for s in range(12):
        rng = np.random.default_rng(s)
        a = rng.uniform(0, 2 * np.pi, 500)
        b = a + rng.vonmises(0.0, 8.0, 500)
        js.append(circular_correlation(a, b))
        fl.append(circular_correlation(a, b, method="fisher_lee"))
    assert np.ptp(fl) < 0.05 and min(fl) > 0.85
    assert min(js) < min(fl) - 0.1


# ------------------------------------------------------------------------------------ alignment and latents
@pytest.mark.parametrize("reflect", [False, True])
@pytest.mark.parametrize("offset", [0.0, 1.3, 5.9])
def test_alignment_recovers_a_known_reflection_and_offset_exactly(reflect, offset):
    rng = np.random.default_rng(1)
    est = rng.uniform(0, 2 * np.pi, 300)
    true = wrap_angle((-est if reflect else est) + offset)
    al = fit_circular_alignment(true, est)
    assert isinstance(al, CircularAlignment) and al.reflect is reflect
    assert angular_distance(al.offset, offset) < 1e-10
    assert al.mean_cos == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_less(angular_distance(apply_alignment(al, est), true), 1e-10)
    out = apply_alignment(al, est)
    assert out.min() >= 0.0 and out.max() < 2 * np.pi


def test_alignment_with_noise_is_the_mean_cosine_maximiser():
    a, b = noisy_pair(2, noise=0.8)
    est = 0.4 - b  # reflected and rotated estimate
    al = fit_circular_alignment(a, est)
    assert al.reflect
    grid = np.linspace(0, 2 * np.pi, 3601)
    brute = max(np.mean(np.cos(a - s * est - c)) for s in (1, -1) for c in grid)
    assert al.mean_cos >= brute - 1e-6
    assert al.mean_cos == pytest.approx(np.mean(np.cos(a - apply_alignment(al, est))), abs=1e-12)


@pytest.mark.parametrize("method", ["moments", "ellipse"])
@pytest.mark.parametrize("det_sign", [1, -1])
def test_latent_angle_after_whitening_recovers_the_angle_of_an_affine_ring(det_sign, method):
    """z = M u + m with u on the unit circle: whitening maps z to a multiple of R u (R orthogonal, det R = det M), so
    the latent angle equals the true angle up to a rotation (and the reflection when det M < 0).  With equally
    spaced angles both methods are exact (sample mean 0, covariance I/2)."""
    theta = np.arange(720) * 2 * np.pi / 720
    u = np.stack([np.cos(theta), np.sin(theta)], 1)
    M = np.array([[3.0, 1.2], [0.4, 0.5]]) @ np.diag([1.0, det_sign])
    z = u @ M.T + np.array([5.0, -2.0])
    w = fit_whitening(z, method=method)
    assert np.linalg.det(w.transform) > 0
    al = fit_circular_alignment(theta, latent_angle(z, w))
    assert al.reflect is (det_sign < 0)
    assert al.mean_cos == pytest.approx(1.0, abs=1e-9)
    raw = fit_circular_alignment(theta, latent_angle(z))  # without whitening the centre lies outside the ring
    assert raw.mean_cos < 0.5


def test_ellipse_whitening_is_exact_for_an_unevenly_visited_ring():
    """Angles concentrated on one side of the ring bias the moments (mean and covariance) but not the conic."""
    rng = np.random.default_rng(4)
    theta = wrap_angle(rng.vonmises(1.0, 1.0, 2000))
    z = np.stack([np.cos(theta), -np.sin(theta)], 1) @ np.array([[2.0, 0.5], [0.0, 0.7]]).T + 3.0
    ell = fit_circular_alignment(theta, latent_angle(z, fit_whitening(z, method="ellipse")))
    mom = fit_circular_alignment(theta, latent_angle(z, fit_whitening(z, method="moments")))
    assert ell.reflect and ell.mean_cos == pytest.approx(1.0, abs=1e-9)
    assert mom.mean_cos < 0.97
    blob = rng.normal(size=(300, 2))  # no ring: still a valid (orientation-preserving) whitening
    assert np.linalg.det(fit_whitening(blob, method="ellipse").transform) > 0


def test_circular_mean():
    assert circular_mean([0.1, 2 * np.pi - 0.1]) == pytest.approx(0.0, abs=1e-12)
    assert circular_mean([1.0, 2.0], weights=[1.0, 0.0]) == pytest.approx(1.0)
    np.testing.assert_allclose(circular_mean(np.array([[0.5, 0.7], [3.0, 3.2]]), axis=1), [0.6, 3.1], atol=1e-12)


# ------------------------------------------------------------------------------------ tuning-curve decoder
def von_mises_population(seed, concentration, num_units=16, num_train=4000, num_test=1000, peak=1.5, kappa=2.0):
    """Independent Poisson units with von Mises tuning (expected counts per bin
    0.05 + peak exp(kappa (cos(theta - phi_n) - 1))) at independent angles: uniform (``concentration=0``) or von
    Mises with that concentration about a random mean."""
    rng = np.random.default_rng(seed)
    phi = np.arange(num_units) * 2 * np.pi / num_units + rng.uniform(0, 0.3)
    T = num_train + num_test
    if concentration > 0:
        theta = wrap_angle(rng.vonmises(rng.uniform(-np.pi, np.pi), concentration, T))
    else:
        theta = rng.uniform(0, 2 * np.pi, T)

    def rate(th):
        return 0.05 + peak * np.exp(kappa * (np.cos(np.asarray(th)[..., None] - phi) - 1.0))

    y = rng.poisson(rate(theta))
    return y[:num_train], theta[:num_train], y[num_train:], theta[num_train:], rate


@pytest.mark.parametrize("seed,concentration,method", [(0, 1.0, "js"), (1, 1.0, "js"), (0, 0.0, "fisher_lee")])
def test_tuning_curve_decoder_recovers_simulated_angles(seed, concentration, method):
    """The fitted decoder's test circular correlation is within 0.03 of the oracle's -- the same Bayesian decoder
    with the *true* tuning curves on a fine grid, the best a per-bin decoder can do on these counts -- and the
    fitted tuning curves are within 15 % of the true ones (median over units and bins).  Uniform angles are scored
    with Fisher-Lee (J-S r_c is unreliable without a mean direction)."""
    y_tr, th_tr, y_te, th_te, rate = von_mises_population(seed, concentration)
    dec = fit_tuning_curves(y_tr, th_tr, num_bins=36, bandwidth=0.2)
    assert isinstance(dec, TuningCurveDecoder) and dec.rates.shape == (16, 36) and dec.num_bins == 36
    grid = (np.arange(360) + 0.5) * 2 * np.pi / 360
    oracle = TuningCurveDecoder(grid, rate(grid).T, np.full(360, -np.log(360)), np.ones(360))
    r_oracle = circular_correlation(th_te, oracle.decode(y_te), method=method)
    assert r_oracle > 0.8  # the simulation is informative enough for the check to mean something
    for how in ("mean", "map"):
        r = circular_correlation(th_te, dec.decode(y_te, how), method=method)
        assert r > r_oracle - 0.03, (how, r, r_oracle)
    rel = np.abs(dec.rates - rate(dec.bin_centers).T) / rate(dec.bin_centers).T
    assert np.median(rel) < 0.15
    post = dec.posterior(y_te)
    np.testing.assert_allclose(post.sum(1), 1.0, atol=1e-10)
    assert dec.occupancy.sum() == len(th_tr)
    occ = fit_tuning_curves(y_tr, th_tr, prior="occupancy")
    assert np.exp(occ.log_prior).sum() == pytest.approx(1.0)
    assert circular_correlation(th_te, occ.decode(y_te), method=method) > r_oracle - 0.05


def test_tuning_curve_floor_and_no_smoothing():
    y = np.zeros((50, 2), int)
    y[:, 1] = 1
    th = np.full(50, 0.3)  # a single visited angle bin; unit 0 silent
    dec = fit_tuning_curves(y + np.array([[1, 0]]) * (np.arange(50)[:, None] == 0), th, num_bins=8, bandwidth=0.0)
    assert np.all(dec.rates > 0)  # floored everywhere, including unvisited bins
    np.testing.assert_allclose(dec.rates[1, 0], 1.0)
    assert np.all(np.isfinite(dec.log_posterior(np.array([[3, 0], [0, 5]]))))


# ------------------------------------------------------------------------------------ boundary errors
def test_boundary_errors_name_the_argument_and_shapes():
    a = np.linspace(0, 6, 10)
    with pytest.raises(ValueError, match=r"b must have the same length as a: expected shape \(10,"):
        circular_correlation(a, a[:9])
    with pytest.raises(ValueError, match=r"a must be 1-dimensional; got shape \(10, 1\)"):
        circular_correlation(a[:, None], a)
    with pytest.raises(ValueError, match="at least 2"):
        circular_correlation(a[:1], a[:1])
    with pytest.raises(ValueError, match="b has no circular spread"):
        circular_correlation(a, np.full(10, 1.0))
    with pytest.raises(ValueError, match="b has no circular spread"):
        circular_correlation(a, np.tile([0.5, 0.5 + np.pi], 5), method="fisher_lee")
    with pytest.raises(ValueError, match="method must be 'js' or 'fisher_lee'"):
        circular_correlation(a, a, method="pearson")
    with pytest.raises(ValueError, match="NaN"):
        circular_correlation(np.r_[a[:9], np.nan], a)
    with pytest.raises(ValueError, match=r"angle_est must have the same length as angle_true"):
        fit_circular_alignment(a, a[:5])
    with pytest.raises(TypeError, match="CircularAlignment"):
        apply_alignment((False, 0.0), a)
    with pytest.raises(ValueError, match=r"latents must be 2-D latents of shape \(T, 2\); got \(10, 3\)"):
        latent_angle(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="lie on a line"):
        fit_whitening(np.stack([a, 2 * a], 1))
    with pytest.raises(ValueError, match="method must be 'moments' or 'ellipse'"):
        fit_whitening(np.ones((10, 2)), method="pca")
    with pytest.raises(ValueError, match=r"at least 6 points .*got \(4, 2\)"):
        fit_whitening(np.ones((4, 2)))
    with pytest.raises(TypeError, match="Whitening"):
        latent_angle(np.ones((4, 2)), whitening=np.eye(2))
    y = np.ones((10, 3), int)
    with pytest.raises(
        ValueError, match=r"angles must have one angle per row of counts: expected shape \(10,\); got \(9,\)"
    ):
        fit_tuning_curves(y, a[:9])
    with pytest.raises(ValueError, match="counts must be 2-dimensional"):
        fit_tuning_curves(y[:, 0], a)
    with pytest.raises(ValueError, match="non-negative"):
        fit_tuning_curves(-y, a)
    with pytest.raises(ValueError, match="num_bins must be >= 2"):
        fit_tuning_curves(y, a, num_bins=1)
    with pytest.raises(ValueError, match="bandwidth"):
        fit_tuning_curves(y, a, bandwidth=-1.0)
    with pytest.raises(ValueError, match="floor"):
        fit_tuning_curves(y, a, floor=0.0)
    with pytest.raises(ValueError, match="prior"):
        fit_tuning_curves(y, a, prior="flat")
    dec = fit_tuning_curves(y, a, num_bins=4)
    with pytest.raises(ValueError, match=r"counts must have shape \(T, 3\) .*; got \(5, 2\)"):
        dec.decode(np.ones((5, 2), int))
    with pytest.raises(ValueError, match="method"):
        dec.decode(y, method="median")


# ------------------------------------------------------------------------------------ the head-direction case study
def _case_study():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "case_studies" / "head_direction.py"
    spec = importlib.util.spec_from_file_location("head_direction_case_study", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_head_direction_data_and_evaluate_latents():
    hd = _case_study()
    d = hd.load_head_direction(100)
    T = d.counts.shape[0]
    assert d.num_units == 7 and d.counts.shape == (T, 7) and d.angles.shape == d.times.shape == (T,)
    assert d.num_time_gaps == 0 and np.all(np.diff(d.times) > 0)
    assert list(d.test_blocks) == [2, 5, 8] and d.block_bounds.shape == (10, 2)
    assert d.train_index.size + d.test_index.size == T and 0.65 < d.train_index.size / T < 0.75
    assert sum(len(c) for c in d.test_counts) == d.test_index.size
    np.testing.assert_array_equal(np.concatenate(d.test_angles), d.angles[d.test_index])
    assert d.angles.min() >= 0 and d.angles.max() < 2 * np.pi
    with pytest.raises(ValueError, match=r"bin_ms must lie in \[50, 100\]"):
        hd.load_head_direction(200)
    # latents: a reflected affine image of the true ring plus noise
    rng = np.random.default_rng(0)
    ring = lambda a: np.stack([np.cos(a), -np.sin(a)], 1) @ np.array([[2.0, 0.5], [0.0, 0.7]]).T + 3.0  # noqa: E731
    tr, te = d.train_index, d.test_index
    z = ring(d.angles) + 0.05 * rng.normal(size=(T, 2))
    ev = hd.evaluate_latents(z[tr], d.angles[tr], z[te], d.angles[te])
    assert ev["reflect"] and ev["circular_corr"] > 0.95 and ev["median_abs_error_deg"] < 5
    assert ev["test_angle_estimate"].shape == (te.size,)
    with pytest.raises(ValueError, match=r"latents_test must have shape \(T, 2\); got \(5, 3\)"):
        hd.evaluate_latents(z[tr], d.angles[tr], np.zeros((5, 3)), np.zeros(5))
    with pytest.raises(ValueError, match="the angles paired with latents_train"):
        hd.evaluate_latents(z[tr], d.angles[te], z[te], d.angles[te])
