"""SSIM as a differentiable loss, with the definition of eoz.metrics (Gaussian window sigma
1.5 over 11 x 11, K1 = 0.01, K2 = 0.03, the valid area only), so what training optimizes is
what the benchmarks report. The VQ models are judged by SSIM at high ratios, where an MSE
loss alone spends the codes on smoothing rather than on keeping structure."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from eoz.metrics import SSIM_K1, SSIM_K2, SSIM_RADIUS, SSIM_SIGMA


def _window(dtype: torch.dtype, device) -> torch.Tensor:
    offsets = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=dtype, device=device)
    weights = torch.exp(-offsets ** 2 / (2 * SSIM_SIGMA ** 2))
    return weights / weights.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """Mean SSIM over every (batch, band) image of two (N, C, H, W) tensors, one data_range
    for all (in training it stands for a typical scene's range: a crop's own is too narrow)."""
    channels = x.shape[1]
    w = _window(x.dtype, x.device)
    rows = w.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    cols = w.view(1, 1, -1, 1).expand(channels, 1, -1, 1)

    def blur(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(image, rows, groups=channels), cols, groups=channels)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim_map.mean()
