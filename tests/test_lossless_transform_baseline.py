"""The transform design of benchmarks/lossless.py (benchmarks/lossless_transform.py): its
reversible transform inverts exactly, and its coder runs against this build's residual coder
(a numba cache of an older one once hid that its call no longer matched)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import lossless_transform  # noqa: E402  (a benchmark module, found through the path above)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 9, 14), (3, 33, 20)])
def test_the_integer_wavelet_inverts_exactly(shape):
    plane = np.random.default_rng(shape[1]).integers(-40000, 40000, shape[1:])
    levels = lossless_transform.max_levels(*shape[1:], lossless_transform.LEVELS)
    np.testing.assert_array_equal(lossless_transform.inverse(lossless_transform.forward(plane, levels)), plane)


def test_a_smooth_tile_codes_to_fewer_bytes_than_noise():
    rng = np.random.default_rng(5)
    ramp = np.add.outer(np.arange(48), np.arange(40)) * 20
    smooth = np.stack([ramp, ramp * 2 + 100]) + rng.integers(0, 4, (2, 48, 40))
    noise = rng.integers(0, 1 << 16, (2, 48, 40))
    smooth_bytes, noise_bytes = (lossless_transform.coded_bytes(t) for t in (smooth, noise))
    assert 0 < smooth_bytes < smooth.size / 2 < noise.size * 2 < noise_bytes
