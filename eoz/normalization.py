"""Per-band power transform learned from training data, stored with each model.

Reflectance digital numbers are skewed (dark water and vegetation, bright clouds); a
Box-Cox style power ``x**p`` evens that out so the network spends capacity across the
range. The exponent per band is the Box-Cox maximum-likelihood fit on training pixels,
clipped to [0.25, 1]: near-log exponents would spend bits on dark pixels that PSNR and
SSIM in the original units do not reward. Mean and standard deviation of the transformed
band then standardize it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

MIN_EXPONENT, MAX_EXPONENT = 0.25, 1.0


@dataclass
class BandNormalizer:
    offset: list[float]    # added before the power so values are positive
    exponent: list[float]
    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, samples: np.ndarray) -> "BandNormalizer":
        """Fit on (bands, n) training pixels."""
        samples = samples.astype(np.float64)
        offset = [float(max(0.0, 1.0 - band.min())) for band in samples]
        exponent, mean, std = [], [], []
        for band, off in zip(samples, offset):
            # a constant band has no shape to fit: keep it linear
            p = 1.0 if band.min() == band.max() else float(
                np.clip(stats.boxcox_normmax(band + off, method="mle"), MIN_EXPONENT, MAX_EXPONENT))
            transformed = (band + off) ** p
            exponent.append(p)
            mean.append(float(transformed.mean()))
            std.append(float(transformed.std()) or 1.0)
        return cls(offset, exponent, mean, std)

    @classmethod
    def fit_linear(cls, samples: np.ndarray) -> "BandNormalizer":
        """Per-band mean and one common scale: MSE after it is proportional to MSE in original units."""
        samples = samples.astype(np.float64)
        scale = float(samples.std(axis=1).mean()) or 1.0
        bands = len(samples)
        return cls([0.0] * bands, [1.0] * bands, [float(m) for m in samples.mean(axis=1)], [scale] * bands)

    def _params(self, ndim: int):
        shape = (-1,) + (1,) * (ndim - 1)
        return [np.asarray(v, dtype=np.float64).reshape(shape) for v in
                (self.offset, self.exponent, self.mean, self.std)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(bands, ...) original units -> normalized float32."""
        off, p, mean, std = self._params(x.ndim)
        y = x.astype(np.float64) + off
        y = np.where(p == 1.0, y, np.maximum(y, 0.0) ** p)   # a linear band may be negative (dB)
        return ((y - mean) / std).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Normalized -> original units (float64; the caller rounds and clips to the dtype)."""
        off, p, mean, std = self._params(y.ndim)
        z = y.astype(np.float64) * std + mean
        return np.where(p == 1.0, z, np.maximum(z, 0.0) ** (1.0 / p)) - off

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BandNormalizer":
        return cls(**{k: [float(v) for v in d[k]] for k in ("offset", "exponent", "mean", "std")})
