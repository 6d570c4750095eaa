"""The training SSIM is the benchmarks' SSIM, and it has gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eoz import metrics
from eoz.models.ssim import ssim


def test_training_ssim_equals_the_metric_for_one_data_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3000, (2, 3, 40, 37))
    y = x + rng.normal(0, 150, x.shape)
    expected = np.mean([metrics._ssim_maps(a, b, 3000.0)[0].mean() for xs, ys in zip(x, y) for a, b in zip(xs, ys)])
    got = ssim(torch.from_numpy(x), torch.from_numpy(y), 3000.0)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    assert float(ssim(torch.from_numpy(x), torch.from_numpy(x), 3000.0)) == pytest.approx(1.0)


def test_training_ssim_gradient_moves_a_reconstruction_towards_the_original():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.uniform(0, 1000, (1, 2, 24, 24)))
    y = (x + torch.from_numpy(rng.normal(0, 200, x.shape))).requires_grad_()
    before = ssim(x, y, 1000.0)
    before.backward()
    with torch.no_grad():
        after = ssim(x, y + 2000.0 * y.grad, 1000.0)
    assert after > before
