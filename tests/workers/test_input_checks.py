"""The checks uploads pass before a job is queued, and the .eoz parser path fuzzed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eoz.codecs import codec_for_model
from eoz.errors import DecodeLimitError, EozError, InputError
from eoz.raster import Limits, RasterMeta, write_raster
from eoz.scene import compress_array
from workers.errors import TooLargeError, UnsupportedMediaError
from workers.validation import check_window, inspect_eoz, inspect_geotiff

LIMITS = Limits(max_pixels=200 * 200, max_bands=8)


def test_a_geotiff_within_the_limits(scene):
    path, _, meta = scene
    assert inspect_geotiff(path, LIMITS) == meta


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n" + bytes(100),
    b'<VRTDataset rasterXSize="10" rasterYSize="10"><VRTRasterBand/></VRTDataset>',
    b"%PDF-1.7\n",
    b"",
])
def test_not_a_geotiff_is_an_unsupported_media_type(tmp_path, content):
    path = tmp_path / "upload.tif"
    path.write_bytes(content)
    with pytest.raises(UnsupportedMediaError, match="not a GeoTIFF"):
        inspect_geotiff(path, LIMITS)


def test_a_damaged_tiff_is_bad_input(tmp_path):
    path = tmp_path / "upload.tif"
    path.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    with pytest.raises(InputError) as caught:
        inspect_geotiff(path, LIMITS)
    assert not isinstance(caught.value, UnsupportedMediaError)


@pytest.mark.parametrize("shape", [(1, 201, 200), (9, 10, 10)])
def test_over_the_pixel_or_band_limit(tmp_path, shape):
    bands, height, width = shape
    meta = RasterMeta(height, width, bands, "uint16", [f"b{i}" for i in range(bands)], None, None, None)
    path = tmp_path / "big.tif"
    write_raster(path, np.zeros(shape, np.uint16), meta)
    with pytest.raises(TooLargeError, match="EOZ_MAX_PIXELS"):
        inspect_geotiff(path, LIMITS)


@pytest.fixture(scope="module")
def eoz_bytes() -> bytes:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 3000, (2, 40, 40)).astype(np.uint16)
    meta = RasterMeta(40, 40, 2, "uint16", ["a", "b"], None, None, None)
    return compress_array(array, meta, codec_for_model("jpeg2000", lossless=True), tile_size=64)


def _inspect(tmp_path, data: bytes):
    path = tmp_path / "upload.eoz"
    path.write_bytes(data)
    return inspect_eoz(path, LIMITS)


def test_a_valid_eoz_and_its_window(tmp_path, eoz_bytes):
    header = _inspect(tmp_path, eoz_bytes)
    assert (header.width, header.height, header.bands) == (40, 40, ["a", "b"])
    check_window(header, (0, 0, 40, 40))
    with pytest.raises(InputError, match="not inside"):
        check_window(header, (30, 0, 20, 5))


def test_not_an_eoz_is_an_unsupported_media_type(tmp_path, scene):
    with pytest.raises(UnsupportedMediaError):
        _inspect(tmp_path, scene[0].read_bytes())


def test_an_eoz_declaring_a_huge_image_is_refused(tmp_path):
    from eoz.container import Header, pack

    header = Header(codec="jpeg2000", height=100_000, width=100_000, bands=["a"], dtype="uint16",
                    tile_size=100_000)
    with pytest.raises((TooLargeError, DecodeLimitError), match="pixels"):  # the service's limit or the decoder's
        _inspect(tmp_path, pack(header, [b"x"]))


FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=2048))
def test_fuzz_any_bytes(tmp_path, data):
    """Random bytes: a header, or an eoz error (a 4xx); never another exception or a hang."""
    try:
        _inspect(tmp_path, data)
    except EozError:
        pass


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 10_000)), tail=st.binary(max_size=16))
def test_fuzz_damaged_files(tmp_path, eoz_bytes, edits, cut, tail):
    """A valid file with bytes changed, cut short or extended."""
    data = bytearray(eoz_bytes)
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    try:
        _inspect(tmp_path, bytes(data) + tail)
    except EozError:
        pass
