"""Rate and distortion measures, defined once so every figure in eoz compares.

The definitions follow DESIGN.md "Metrics": errors in the original units, PSNR against a
stated peak, SSIM per band with each band's own data range, rates per pixel per band.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from eoz.errors import InputError

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11 x 11 window, as in Wang et al. (2004)
SSIM_K1, SSIM_K2 = 0.01, 0.03
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _pair(original: np.ndarray, reconstruction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64, refusing shape mismatches that broadcasting would hide."""
    a = np.asarray(original)
    b = np.asarray(reconstruction)
    if a.shape != b.shape:
        raise InputError(f"shapes differ: original {a.shape}, reconstruction {b.shape}")
    if a.size == 0:
        raise InputError("cannot measure an empty array")
    return a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)


def _absolute_errors(original: np.ndarray, reconstruction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|original - reconstruction|, where both are NaN): NaN against NaN is no error (nodata
    kept), NaN against a number an infinite one."""
    a, b = _pair(original, reconstruction)
    both_nan = np.isnan(a) & np.isnan(b)
    error = np.where(both_nan, 0.0, np.abs(a - b))
    error[np.isnan(error)] = np.inf
    return error, both_nan


def squared_errors(original: np.ndarray, reconstruction: np.ndarray) -> tuple[float, int]:
    """(sum of squared errors, samples counted), in the original units: a sample NaN in both
    is left out (no error, no data), NaN against a number is an infinite error."""
    error, both_nan = _absolute_errors(original, reconstruction)
    return float(np.square(error).sum()), int(error.size - both_nan.sum())


def mse(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean squared error over all bands and pixels, in the original units (samples NaN in both
    left out: 0 where every one is)."""
    total, count = squared_errors(original, reconstruction)
    return total / count if count else 0.0


def max_error_per_band(original: np.ndarray, reconstruction: np.ndarray) -> list[float]:
    """Largest absolute error of each band, in original units; NaN against NaN counts as exact
    (nodata kept), NaN against a number as an infinite error."""
    error, _ = _absolute_errors(original, reconstruction)
    return [float(e.max()) for e in error.reshape(error.shape[0], -1)]


def psnr(original: np.ndarray, reconstruction: np.ndarray, peak: float) -> float:
    """10 log10(peak^2 / MSE) in dB; inf for an exact reconstruction.

    The peak is the caller's to state (10000 for Sentinel-2 DN), never guessed here,
    because a dtype maximum would make 16-bit reflectances look 16 dB better.
    """
    if not peak > 0:
        raise InputError(f"peak must be positive, got {peak}")
    return psnr_of_mse(mse(original, reconstruction), peak)


def psnr_of_mse(error: float, peak: float) -> float:
    """10 log10(peak^2 / error) in dB: inf for no error, -inf for an infinite one."""
    if error == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / error) if math.isfinite(error) else -math.inf


def _bands(original: np.ndarray, reconstruction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bands, h, w) float64 views; a 2-D array is one band."""
    a, b = _pair(original, reconstruction)
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.ndim != 3:
        raise InputError(f"expected (bands, height, width), got shape {a.shape}")
    return a, b


def _ssim_maps(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    """SSIM and contrast-structure maps over the valid area (window fully inside).

    Gaussian-weighted moments without the sample-covariance correction, as in Wang et
    al.'s reference implementation.
    """
    if min(x.shape) < 2 * SSIM_RADIUS + 1:
        raise InputError(
            f"SSIM needs at least {2 * SSIM_RADIUS + 1} pixels per side, got {x.shape}"
        )
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2

    def blur(image: np.ndarray) -> np.ndarray:
        out = ndimage.gaussian_filter(image, SSIM_SIGMA, radius=SSIM_RADIUS)
        return out[SSIM_RADIUS:-SSIM_RADIUS, SSIM_RADIUS:-SSIM_RADIUS]

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    cs = (2.0 * cov + c2) / (var_x + var_y + c2)
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return luminance * cs, cs


def _data_range(band: np.ndarray) -> float:
    """The band's max - min in the original, 1 for a constant band (avoids C1 = C2 = 0)."""
    spread = float(band.max() - band.min())
    return spread if spread > 0 else 1.0


def ssim_per_band(original: np.ndarray, reconstruction: np.ndarray) -> list[float]:
    """Mean SSIM of each band: Gaussian window sigma 1.5 (11 x 11), K1 = 0.01, K2 = 0.03.

    data_range is that band's (max - min) in the original; bands narrower than 11 pixels
    on a side raise InputError.
    """
    a, b = _nan_kept_filled(*_bands(original, reconstruction))
    return [float(_ssim_maps(x, y, _data_range(x))[0].mean()) for x, y in zip(a, b)]


def _nan_kept_filled(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples NaN in both (nodata kept) filled in both with the band's mean of the others, so
    they neither count as an error nor poison the windows around them; NaN against a number
    stays NaN (an SSIM of NaN: no similarity can be claimed)."""
    both_nan = np.isnan(a) & np.isnan(b)
    if not both_nan.any():
        return a, b
    a, b = a.copy(), b.copy()
    for x, y, kept in zip(a, b, both_nan):
        fill = float(x[~kept].mean()) if (~kept).any() else 0.0
        x[kept], y[kept] = fill, fill
    return a, b


def ssim(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean of :func:`ssim_per_band` over bands."""
    return float(np.mean(ssim_per_band(original, reconstruction)))


def _halve(image: np.ndarray) -> np.ndarray:
    """2 x 2 block mean, dropping an odd last row or column."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    return image[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def ms_ssim(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """Multi-scale SSIM (Wang, Simoncelli, Bovik 2003), per band then averaged.

    Five scales with the standard weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333);
    each scale halves the image by 2 x 2 averaging. When the smaller side is too short
    for five scales (under 176 pixels), only the first M scales that keep at least
    11 pixels per side are used, their weights renormalised to sum 1 (M = 1 is plain
    SSIM). data_range stays the original band's max - min at every scale. Negative
    contrast-structure means are clipped to 0, as a fractional power of them is undefined.
    Samples NaN in both are filled alike, as for :func:`ssim_per_band`.
    """
    a, b = _nan_kept_filled(*_bands(original, reconstruction))
    window = 2 * SSIM_RADIUS + 1
    smallest = min(a.shape[1:])
    if smallest < window:
        raise InputError(f"MS-SSIM needs at least {window} pixels per side, got {a.shape[1:]}")
    scales = 1
    while scales < len(_MS_SSIM_WEIGHTS) and smallest >> scales >= window:
        scales += 1
    weights = np.array(_MS_SSIM_WEIGHTS[:scales])
    weights /= weights.sum()

    values = []
    for x, y in zip(a, b):
        data_range = _data_range(x)
        factors = []
        for scale in range(scales):
            ssim_map, cs_map = _ssim_maps(x, y, data_range)
            last = scale == scales - 1
            factors.append(max(float((ssim_map if last else cs_map).mean()), 0.0))
            if not last:
                x, y = _halve(x), _halve(y)
        values.append(float(np.prod(np.power(factors, weights))))
    return float(np.mean(values))


def bits_per_pixel_per_band(nbytes: int, height: int, width: int, bands: int) -> float:
    """8 x file bytes / (height x width x bands)."""
    return 8.0 * nbytes / (height * width * bands)


def compression_ratio(height: int, width: int, bands: int, itemsize: int, nbytes: int) -> float:
    """Raw bytes of the original array over the compressed file's bytes, header included."""
    return height * width * bands * itemsize / nbytes


def bd_rate(
    rate_anchor: list[float],
    psnr_anchor: list[float],
    rate_test: list[float],
    psnr_test: list[float],
) -> float:
    """Bjontegaard delta rate of test against anchor, in percent (negative = fewer bits).

    log(rate) is fitted as a cubic in PSNR for each curve, both fits are integrated over
    the PSNR range the curves share, and the mean log-rate difference is returned as
    100 (exp(d) - 1). Any rate unit works as long as both curves use the same.
    """
    curves = []
    for name, rate, quality in (
        ("anchor", rate_anchor, psnr_anchor),
        ("test", rate_test, psnr_test),
    ):
        r = np.asarray(rate, dtype=np.float64)
        q = np.asarray(quality, dtype=np.float64)
        if r.ndim != 1 or r.shape != q.shape:
            raise InputError(f"{name}: rates and PSNRs must be 1-D and of equal length")
        if r.size < 4:
            raise InputError(f"{name}: a cubic fit needs at least 4 points, got {r.size}")
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q)) and np.all(r > 0)):
            raise InputError(f"{name}: rates must be positive and PSNRs finite")
        curves.append((np.polyfit(q, np.log(r), 3), q.min(), q.max()))

    low = max(curves[0][1], curves[1][1])
    high = min(curves[0][2], curves[1][2])
    if not high > low:
        raise InputError("the two curves share no PSNR range")
    mean_log = []
    for coefficients, _, _ in curves:
        integral = np.polyint(coefficients)
        mean_log.append((np.polyval(integral, high) - np.polyval(integral, low)) / (high - low))
    return float(100.0 * (math.exp(mean_log[1] - mean_log[0]) - 1.0))
