"""BandNormalizer fitted on real Sentinel-2 pixels: invertible, clipped Box-Cox, standardized."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from eoz.normalization import MAX_EXPONENT, MIN_EXPONENT, BandNormalizer
from eoz.raster import read_raster
from tests.conftest import S2_10M

BIGEARTHNET = "bigearthnet_s2_tiny/S2A_MSIL2A_20170617T113321_4_55_10m_B02-B03-B04-B08.tif"


@pytest.fixture(scope="module")
def s2_patch(shared_data):
    """A real L2A patch (4 x 120 x 120 uint16): one band's ML exponent lies inside [0.25, 1]."""
    array, meta = read_raster(shared_data / BIGEARTHNET)
    assert meta.band_names == ["B02", "B03", "B04", "B08"]
    return array


@pytest.fixture(scope="module")
def fitted(s2_patch):
    return BandNormalizer.fit(s2_patch.reshape(4, -1))


def test_forward_then_inverse_returns_the_input(fitted, s2_patch, shared_data):
    y = fitted.forward(s2_patch)
    assert y.dtype == np.float32 and y.shape == s2_patch.shape
    back = fitted.inverse(y)
    np.testing.assert_allclose(back, s2_patch.astype(np.float64), rtol=1e-6)
    # also on pixels it was not fitted on (another sensor level, another place)
    other, _ = read_raster(shared_data / S2_10M, window=(400, 300, 64, 48))
    np.testing.assert_allclose(fitted.inverse(fitted.forward(other)), other, rtol=1e-6)


def test_exponents_are_the_clipped_box_cox_ml_fit(fitted, s2_patch):
    assert all(MIN_EXPONENT <= p <= MAX_EXPONENT for p in fitted.exponent)
    assert (MIN_EXPONENT, MAX_EXPONENT) == (0.25, 1.0)
    clipped = [p for p in fitted.exponent if p in (MIN_EXPONENT, MAX_EXPONENT)]
    interior = [(b, p) for b, p in enumerate(fitted.exponent) if MIN_EXPONENT < p < MAX_EXPONENT]
    assert clipped and interior, fitted.exponent  # this patch exercises both cases
    for band, p in interior:
        # an interior exponent maximizes the Box-Cox log-likelihood
        x = s2_patch[band].ravel().astype(np.float64) + fitted.offset[band]
        best = stats.boxcox_llf(p, x)
        assert best >= stats.boxcox_llf(p - 0.02, x) and best >= stats.boxcox_llf(p + 0.02, x)


def test_transformed_training_pixels_are_standardized(fitted, s2_patch):
    y = fitted.forward(s2_patch).reshape(4, -1).astype(np.float64)
    np.testing.assert_allclose(y.mean(1), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std(1), 1.0, atol=1e-4)


def test_dark_and_negative_values_are_offset_to_stay_invertible(s2_patch):
    samples = s2_patch.reshape(4, -1)[:, :4000].astype(np.int32) - 300  # some pixels < 1
    assert samples.min() < 0
    normalizer = BandNormalizer.fit(samples)
    assert normalizer.offset == [max(0.0, 1.0 - float(band.min())) for band in samples]
    assert min(normalizer.offset) == 0.0 < max(normalizer.offset)  # only bands reaching below 1
    y = normalizer.forward(samples)
    assert np.isfinite(y).all()
    # float32 normalized values: near zero the error is absolute, far below integer rounding
    np.testing.assert_allclose(normalizer.inverse(y), samples, rtol=1e-6, atol=1e-4)


def test_constant_band_gets_unit_std_not_a_division_by_zero(s2_patch):
    samples = s2_patch.reshape(4, -1)[:, :2000].astype(np.float64)
    samples[1] = 1234.0
    normalizer = BandNormalizer.fit(samples)
    assert normalizer.std[1] == 1.0
    assert np.isfinite(normalizer.forward(samples)).all()


def test_dict_round_trip_survives_json(fitted, s2_patch):
    d = fitted.to_dict()
    assert set(d) == {"offset", "exponent", "mean", "std"}
    back = BandNormalizer.from_dict(json.loads(json.dumps(d)))
    assert back == fitted
    np.testing.assert_array_equal(back.forward(s2_patch), fitted.forward(s2_patch))
    assert BandNormalizer.from_dict({**d, "extra": 1}) == fitted
