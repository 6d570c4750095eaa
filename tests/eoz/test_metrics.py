"""Metrics against hand-computed values and a slow, direct SSIM reference."""

import math

import numpy as np
import pytest

from eoz import metrics
from eoz.errors import InputError


def _direct_ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[float, float]:
    """Mean SSIM and contrast-structure over every fully-inside 11 x 11 window, one by one."""
    offsets = np.arange(-5, 6)
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    weights = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssims, css = [], []
    for i in range(5, x.shape[0] - 5):
        for j in range(5, x.shape[1] - 5):
            wx, wy = x[i - 5 : i + 6, j - 5 : j + 6], y[i - 5 : i + 6, j - 5 : j + 6]
            mx, my = (weights * wx).sum(), (weights * wy).sum()
            vx = (weights * (wx - mx) ** 2).sum()
            vy = (weights * (wy - my) ** 2).sum()
            cxy = (weights * (wx - mx) * (wy - my)).sum()
            cs = (2 * cxy + c2) / (vx + vy + c2)
            css.append(cs)
            ssims.append((2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs)
    return float(np.mean(ssims)), float(np.mean(css))


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    """Two bands of smooth structure plus noise, and a distorted copy (unit tests only)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:24, 0:26]
    clean = np.stack([1000 + 300 * np.sin(xx / 3.0) * np.cos(yy / 4.0), 50 + 2.0 * xx + yy])
    original = np.rint(clean + rng.normal(0, 20, clean.shape)).astype(np.uint16)
    distorted = np.clip(original + rng.normal(0, 30, clean.shape), 0, None).astype(np.uint16)
    return original, distorted


def test_identical_images_are_perfect(pair):
    original, _ = pair
    assert metrics.mse(original, original) == 0.0
    assert metrics.psnr(original, original, 10000) == math.inf
    assert metrics.ssim_per_band(original, original) == pytest.approx([1.0, 1.0])
    assert metrics.ssim(original, original) == pytest.approx(1.0)
    assert metrics.ms_ssim(original, original) == pytest.approx(1.0)


def test_known_mse_gives_known_psnr():
    original = np.zeros((3, 4, 5), dtype=np.uint16)
    reconstruction = np.full((3, 4, 5), 10, dtype=np.uint16)
    assert metrics.mse(original, reconstruction) == 100.0
    assert metrics.psnr(original, reconstruction, peak=1000) == pytest.approx(40.0)


def test_samples_nan_in_both_are_left_out_and_nan_against_a_number_is_infinite():
    """NaN kept (nodata, or NaN a lossless float code keeps) is no error and no data."""
    original = np.array([[[1.0, np.nan], [3.0, 5.0]]])
    same = original.copy()
    assert metrics.mse(original, same) == 0.0 and metrics.psnr(original, same, 10) == math.inf
    shifted = same + np.array([[[0.0, 0.0], [3.0, 0.0]]])
    assert metrics.mse(original, shifted) == pytest.approx(9 / 3)   # three samples counted
    lost = same.copy()
    lost[0, 0, 0] = np.nan
    assert metrics.mse(original, lost) == math.inf and metrics.psnr(original, lost, 10) == -math.inf
    assert metrics.mse(np.full((1, 2, 2), np.nan), np.full((1, 2, 2), np.nan)) == 0.0
    band = np.random.default_rng(3).random((1, 16, 16))
    band[0, 4:7, 2:9] = np.nan
    assert metrics.ssim_per_band(band, band.copy()) == [pytest.approx(1.0)]
    assert metrics.ms_ssim(band, band.copy()) == pytest.approx(1.0)
    noisy = band + 0.05
    assert 0.5 < metrics.ssim_per_band(band, noisy)[0] < 1.0


def test_mse_does_not_wrap_unsigned_differences():
    original = np.zeros((1, 2, 2), dtype=np.uint16)
    reconstruction = np.array([[[1, 3], [0, 0]]], dtype=np.uint16)
    assert metrics.mse(original, reconstruction) == pytest.approx(10 / 4)
    assert metrics.mse(reconstruction, original) == pytest.approx(10 / 4)


def test_shape_mismatch_and_bad_peak_are_refused():
    with pytest.raises(InputError):
        metrics.mse(np.zeros((2, 3, 3)), np.zeros((3, 3, 3)))
    with pytest.raises(InputError):
        metrics.psnr(np.zeros((2, 3, 3)), np.ones((2, 3, 3)), peak=0)


def test_ssim_matches_a_direct_window_loop(pair):
    original, distorted = pair
    expected = [
        _direct_ssim(x.astype(float), y.astype(float), float(x.max() - x.min()))[0]
        for x, y in zip(original, distorted)
    ]
    assert metrics.ssim_per_band(original, distorted) == pytest.approx(expected, abs=1e-10)
    assert metrics.ssim(original, distorted) == pytest.approx(np.mean(expected), abs=1e-10)


def test_ssim_uses_each_bands_own_range(pair):
    original, distorted = pair
    scaled = original.astype(float) * 10, distorted.astype(float) * 10
    # The same relative error in a band with 10x the range scores the same.
    assert metrics.ssim_per_band(*scaled) == pytest.approx(
        metrics.ssim_per_band(original, distorted), abs=1e-9
    )


def test_ssim_of_constant_band_uses_range_one():
    original = np.full((1, 12, 12), 5.0)
    assert metrics.ssim_per_band(original, original + 1)[0] == pytest.approx(
        _direct_ssim(original[0], original[0] + 1, 1.0)[0]
    )


def test_ssim_refuses_images_smaller_than_the_window():
    with pytest.raises(InputError):
        metrics.ssim(np.zeros((1, 10, 30)), np.zeros((1, 10, 30)))


def test_ms_ssim_is_plain_ssim_below_two_scales(pair):
    original, distorted = pair
    # 21 x 21 halves to 10 x 10, under the 11-pixel window: one scale only.
    smaller = original[:, :21, :21], distorted[:, :21, :21]
    assert metrics.ms_ssim(*smaller) == pytest.approx(metrics.ssim(*smaller))


def test_ms_ssim_two_scales_matches_direct_reference(pair):
    original, distorted = pair  # 24 x 26: two scales, weights 0.0448 and 0.2856 renormalised
    w1, w2 = 0.0448 / (0.0448 + 0.2856), 0.2856 / (0.0448 + 0.2856)
    expected = []
    for x, y in zip(original.astype(float), distorted.astype(float)):
        data_range = float(x.max() - x.min())
        _, cs = _direct_ssim(x, y, data_range)
        half = [a.reshape(12, 2, 13, 2).mean(axis=(1, 3)) for a in (x, y)]
        s2, _ = _direct_ssim(*half, data_range)
        expected.append(cs**w1 * s2**w2)
    assert metrics.ms_ssim(original, distorted) == pytest.approx(np.mean(expected), abs=1e-10)


def test_ms_ssim_full_scales_falls_with_distortion():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:180, 0:180]
    original = (1000 + 200 * np.sin(xx / 5.0) + 150 * np.cos(yy / 7.0))[None]
    mild = original + rng.normal(0, 5, original.shape)
    strong = original + rng.normal(0, 50, original.shape)
    assert 1.0 > metrics.ms_ssim(original, mild) > metrics.ms_ssim(original, strong) > 0.0


def test_rates():
    assert metrics.bits_per_pixel_per_band(1000, 10, 10, 4) == 20.0
    assert metrics.compression_ratio(10, 10, 4, 2, 100) == 8.0


RATES = [0.25, 0.5, 1.0, 2.0, 4.0]
PSNRS = [32.0, 36.5, 41.0, 45.0, 49.5]


def test_bd_rate_of_a_curve_against_itself_is_zero():
    assert metrics.bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_of_half_and_double_rate():
    half = [r / 2 for r in RATES]
    double = [r * 2 for r in RATES]
    assert metrics.bd_rate(RATES, PSNRS, half, PSNRS) == pytest.approx(-50.0)
    assert metrics.bd_rate(RATES, PSNRS, double, PSNRS) == pytest.approx(100.0)


def test_bd_rate_uses_only_the_shared_range():
    # Exact cubics, so the fits are exact; the curves overlap only on 40..49.5 dB, where
    # the test curve's log-rate is lower by 0.01 (p - 30).
    anchor_psnr = np.linspace(32.0, 49.5, 6)
    test_psnr = np.linspace(40.0, 60.0, 6)

    def log_rate(p):
        return -3.0 + 0.1 * (p - 30) + 1e-4 * (p - 30) ** 3

    anchor = np.exp(log_rate(anchor_psnr))
    test = np.exp(log_rate(test_psnr) - 0.01 * (test_psnr - 30))
    expected = 100 * (math.exp(-0.01 * ((40.0 + 49.5) / 2 - 30)) - 1)
    assert metrics.bd_rate(anchor, anchor_psnr, test, test_psnr) == pytest.approx(expected)


def test_bd_rate_refuses_too_few_points_or_no_overlap():
    with pytest.raises(InputError):
        metrics.bd_rate(RATES[:3], PSNRS[:3], RATES, PSNRS)
    with pytest.raises(InputError):
        metrics.bd_rate(RATES, PSNRS, RATES, [p + 30 for p in PSNRS])
    with pytest.raises(ValueError):  # InputError is a ValueError too
        metrics.bd_rate(RATES, PSNRS, [0.0] + RATES[1:], PSNRS)
