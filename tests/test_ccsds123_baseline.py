"""The CCSDS 123.0-B-2 baseline of benchmarks/lossless.py: its streams decode to the image
(exactly, or within the error limit), and its predictor uses the earlier bands."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ccsds123  # noqa: E402  (a benchmark module, found through the path above)


def _round_trip(image: np.ndarray, max_error: int, prediction_bands: int = 3, gamma_star: int = 6):
    stream = ccsds123.encode(image, max_error, prediction_bands, gamma_star)
    depth, signed = ccsds123.dynamic_range(image)
    decoded = ccsds123.decode(stream, image.shape, depth, signed, max_error, prediction_bands, gamma_star)
    return stream, decoded


@pytest.mark.parametrize("shape", [(3, 17, 23), (2, 1, 9), (1, 6, 1), (4, 2, 2)])
@pytest.mark.parametrize("signed", [False, True])
def test_lossless_streams_decode_exactly(shape, signed):
    rng = np.random.default_rng(len(shape) + shape[1])
    image = rng.integers(-2000 if signed else 0, 3000, shape)
    _, decoded = _round_trip(image, 0)
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("max_error", [1, 3, 7])
def test_near_lossless_streams_hold_the_limit_and_spend_less(max_error):
    rng = np.random.default_rng(max_error)
    image = np.cumsum(rng.integers(-40, 41, (3, 20, 30)), axis=2) + 5000
    lossless, _ = _round_trip(image, 0)
    stream, decoded = _round_trip(image, max_error)
    error = np.abs(decoded - image)
    assert error.max() <= max_error and error.max() > 0
    assert len(stream) < len(lossless)


def test_the_earlier_bands_predict_the_next():
    rng = np.random.default_rng(5)
    band = np.cumsum(np.cumsum(rng.integers(-30, 31, (64, 64)), axis=0), axis=1) + 40000
    image = np.stack([band, band + 700, band - 300]).clip(0, 65535)
    spatial, _ = _round_trip(image, 0, prediction_bands=0)
    spectral, decoded = _round_trip(image, 0, prediction_bands=2)
    np.testing.assert_array_equal(decoded, image)
    assert len(spectral) < 0.6 * len(spatial)


def test_dynamic_range_is_the_fewest_bits_that_hold_the_samples():
    assert ccsds123.dynamic_range(np.array([0, 255])) == (8, False)
    assert ccsds123.dynamic_range(np.array([0, 256])) == (9, False)
    assert ccsds123.dynamic_range(np.array([-32768, 32767])) == (16, True)
    assert ccsds123.dynamic_range(np.array([-1, 1])) == (2, True)
