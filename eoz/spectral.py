"""Spectral partition of many-band rasters, and the band-to-band prediction that codes within it.

Hyperspectral cubes are coded band by band, so cost grows linearly with the band count
(after Mijares i Verdú et al., learned hyperspectral compression with spectral
partitioning): neighbouring bands whose pixels are highly correlated form an interval,
and one small single-channel model per interval codes each of its bands. Intervals come
from the data's band correlation matrix: a band opens a new interval when its
correlation with the interval's first band falls below a threshold.

Beyond band-by-band coding, each band after an interval's first can be coded as the
residual of a linear prediction from the previous *decoded* band (gain and offset fitted
per tile, stored as float32). The decoder forms the same prediction from what it has
already decoded, so errors never accumulate along the spectrum.
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.9
MIN_INTERVAL = 8   # no interval is shorter: a short run of bands joins its neighbours


def usable_bands(cube: np.ndarray, nodata: float | None) -> np.ndarray:
    """(bands,) True where a band has any valid, non-constant pixel (bad bands are all nodata)."""
    flat = cube.reshape(len(cube), -1)
    valid = np.ones(flat.shape, bool) if nodata is None else flat != nodata
    return np.array([v.any() and np.ptp(b[v]) > 0 for b, v in zip(flat, valid)])


def band_correlation(cubes: list[np.ndarray], nodata: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation between bands over every pixel valid in all usable bands, and the usable mask."""
    usable = np.logical_and.reduce([usable_bands(c, nodata) for c in cubes])
    pixels = np.concatenate([c.reshape(len(c), -1) for c in cubes], axis=1).astype(np.float64)
    if nodata is not None:
        pixels = pixels[:, (pixels[usable] != nodata).all(axis=0)]
    corr = np.eye(len(usable))
    corr[np.ix_(usable, usable)] = np.corrcoef(pixels[usable])
    return corr, usable


def spectral_intervals(corr: np.ndarray, usable: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                       min_bands: int = MIN_INTERVAL) -> list[tuple[int, int]]:
    """Contiguous [start, stop) band intervals covering every band.

    A band opens an interval when it correlates less than ``threshold`` with the current
    interval's reference band and that interval already has ``min_bands`` bands; otherwise
    it becomes the reference and stays, so a short run of odd bands joins the bands after
    it (at the end of the spectrum, the interval before it). Unusable bands stay in
    whichever interval they fall in; the codec skips them.
    """
    starts, first = [0], None
    for b in np.flatnonzero(usable):
        if first is None:
            first = b
        elif corr[first, b] < threshold:
            if b - starts[-1] >= min_bands:
                starts.append(int(b))
            first = b
    stops = starts[1:] + [len(usable)]
    if len(starts) > 1 and stops[-1] - starts[-1] < min_bands:
        starts.pop()
        stops = starts[1:] + [len(usable)]
    return list(zip(starts, stops))


def fit_prediction(previous: np.ndarray, band: np.ndarray, valid: np.ndarray) -> tuple[np.float32, np.float32]:
    """Least-squares gain and offset predicting ``band`` from ``previous`` on valid pixels (float32)."""
    p, x = previous[valid].astype(np.float64), band[valid].astype(np.float64)
    if p.size == 0:
        return np.float32(0), np.float32(0)
    var = p.var()
    gain = ((p - p.mean()) * (x - x.mean())).mean() / var if var > 0 else 0.0
    return np.float32(gain), np.float32(x.mean() - gain * p.mean())


def predict(previous: np.ndarray, gain: np.float32, offset: np.float32, integer: bool = True) -> np.ndarray:
    """The prediction both sides form (float64 products and sums round the same way anywhere),
    rounded for integer data so that the residual is an integer too."""
    value = np.float64(gain) * previous.astype(np.float64) + np.float64(offset)
    return np.rint(value) if integer else value


def klt_basis(cube: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Band means and the band covariance's eigenvectors (columns), largest variance first,
    each vector's largest entry positive (eigh's sign is arbitrary): the spectral KLT that
    JPEG 2000 Part 2's multi-component transform applies, and the wavelet codec too."""
    pixels = cube.reshape(cube.shape[0], -1).astype(np.float64)
    means = pixels.mean(axis=1)
    centred = pixels - means[:, None]
    _, vectors = np.linalg.eigh(centred @ centred.T / centred.shape[1])
    vectors = vectors[:, ::-1]
    peaks = vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])]
    return means, vectors * np.where(peaks < 0, -1.0, 1.0)
