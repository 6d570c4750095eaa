"""Property-based fuzzing of every codec's tile payload decoder (issue 12).

Random mutations, truncations and extensions of a valid payload must decode to a tile of the
right shape and dtype or raise ContainerError (or a subclass): nothing else, and within a
memory bound derived from the DecodeLimits that the tile itself fits.
"""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eoz.codecs import JPEG2000Codec, codec_for_model
from eoz.codecs.base import decode_tile_payload
from eoz.codecs.predictive import DOUBLE_BITS, FLOAT_BITS, PALETTE, STORED
from eoz.container import EozReader
from eoz.errors import ContainerError
from eoz.limits import DecodeLimits
from eoz.quality import QualityTarget
from eoz.raster import RasterMeta
from eoz.registry import ModelStore
from eoz.scene import compress_array, header_meta
from tests.conftest import publish_tiny_partition, publish_tiny_predictive
from tests.eoz.test_decode_limits import scene

# Python and numpy bytes that decoding may allocate per sample of its tile and per payload
# byte; the most a codec was measured to take is about 80 per sample (the hyperprior).
BYTES_PER_SAMPLE = 256
BYTES_PER_PAYLOAD_BYTE = 8
SLACK = 2 * 2**20   # interpreter and library bookkeeping that does not grow with the tile


def memory_bound(limits: DecodeLimits) -> int:
    return BYTES_PER_SAMPLE * limits.max_tile_samples + BYTES_PER_PAYLOAD_BYTE * limits.max_tile_bytes + SLACK


def _partition_codec(root) -> object:
    store = ModelStore(root)
    publish_tiny_partition(store, ["b0", "b1", "b2"], [(0, 2), (2, 3)])
    return codec_for_model("tiny-hsi", store=store, target=QualityTarget(psnr=40))


def _codec(name: str, models: ModelStore, tmp_path_factory):
    """(codec, raster): every codec, on a tile with nodata where the codec takes any raster."""
    if name == "jpeg2000":
        return JPEG2000Codec(lossless=True), dict(height=40, width=48, nodata=0)
    if name == "jpeg2000-klt":
        return JPEG2000Codec(quality=60, klt=True), dict(height=40, width=48)
    if name == "hyperprior":
        return codec_for_model("tiny-hp", store=models, target=QualityTarget(psnr=40, block=32)), \
            dict(height=64, width=64)
    if name == "vqvae-fpn":
        return codec_for_model("tiny-vq", store=models), dict(height=64, width=64)
    if name == "wavelet":
        return codec_for_model("tiny-wavelet", store=models, target=QualityTarget(psnr=45, block=16)), \
            dict(height=40, width=48, nodata=0)
    if name in ("predictive", "predictive-fast"):   # the current format, with and without the learned correction
        store = ModelStore(tmp_path_factory.mktemp("predictive"))
        publish_tiny_predictive(store)
        return codec_for_model("tiny-predictive", store=store, max_error=2, fast=name == "predictive-fast" or None), \
            dict(height=40, width=48, nodata=0)
    if name in ("predictive-stored", "predictive-float64", "predictive-half", "predictive-palette"):   # noise: the
        # tile is stored (format 11), not coded; float64: two planes a band; half floats as float32: 13 zero bits
        # shifted out; few values: a categorical tile (format 12)
        store = ModelStore(tmp_path_factory.mktemp("predictive"))
        publish_tiny_predictive(store)
        return codec_for_model("tiny-predictive", store=store, lossless=True), dict(height=40, width=48)
    if name == "spectral-partition":
        return _partition_codec(tmp_path_factory.mktemp("partition")), dict(height=32, width=32, bands=3)
    raise ValueError(name)


CODECS = ["jpeg2000", "jpeg2000-klt", "hyperprior", "vqvae-fpn", "wavelet", "spectral-partition", "predictive",
          "predictive-fast", "predictive-stored", "predictive-float64", "predictive-half", "predictive-palette"]


@pytest.fixture(scope="module", params=CODECS)
def tile(request, tiny_models, tmp_path_factory):
    """(codec, header, valid payload, limits the tile just fits), decoded once (warm caches)."""
    codec, raster = _codec(request.param, tiny_models, tmp_path_factory)
    array, meta = scene(**raster)
    if request.param == "spectral-partition":
        array, meta.dtype = array.astype(np.int16), "int16"
    if request.param == "predictive-stored":
        array = np.random.default_rng(5).integers(0, 1 << 16, array.shape).astype(array.dtype)
    if request.param == "predictive-float64":
        array, meta.dtype = array / 7.0, "float64"
    if request.param == "predictive-half":
        array, meta.dtype = (array / 7000.0).astype(np.float16).astype(np.float32), "float32"
    if request.param == "predictive-palette":
        array = array // (array.max() // 6 + 1)
    with EozReader(compress_array(array, meta, codec, tile_size=64)) as reader:
        header, payload = reader.header, reader.read_tile(0)
    if request.param == "predictive-stored":
        assert codec_body(payload)[0] == STORED
    if request.param == "predictive-float64":
        assert codec_body(payload)[1] == DOUBLE_BITS
    if request.param == "predictive-half":
        assert codec_body(payload)[1] == FLOAT_BITS and codec_body(payload)[2:10] == struct.pack("<d", 13)
    if request.param == "predictive-palette":
        assert codec_body(payload)[0] == PALETTE
    codec = codec.for_raster(header_meta(header))
    decode_tile_payload(codec, payload, header, 0)
    _, _, height, width = header.coded_bounds(0)
    limits = DecodeLimits(max_tile_samples=len(header.bands) * height * width, max_tile_bytes=len(payload) + 64)
    return codec, header, payload, limits


def mutate(payload: bytes, edits, cut, tail) -> bytes:
    data = bytearray(payload)
    for offset, value in edits:
        data[offset % len(data)] = value
    return bytes(data[:cut]) + tail


FUZZ = settings(max_examples=150, deadline=None, database=None)


# edits anywhere, and often in a payload's head, where its structure is (lengths, shapes,
# dtypes, flags), with digits among the values: a digit for a digit keeps JSON valid
OFFSETS = st.integers(0, 2**16) | st.integers(0, 96)
VALUES = st.integers(0, 255) | st.sampled_from(b"0123456789")


@FUZZ
@given(edits=st.lists(st.tuples(OFFSETS, VALUES), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 2**16)), tail=st.binary(max_size=8))
@example(edits=[], cut=None, tail=b"")
def test_a_damaged_payload_decodes_to_its_tile_or_is_a_container_error(tile, edits, cut, tail):
    codec, header, payload, limits = tile
    decode_within_bound(codec, header, mutate(payload, edits, cut, tail), limits)


def decode_within_bound(codec, header, payload: bytes, limits: DecodeLimits) -> None:
    """The property: a tile of the right shape and dtype, or a ContainerError, within the bound."""
    tracemalloc.start()
    try:
        out = decode_tile_payload(codec, payload, header, 0)
    except ContainerError:
        out = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if out is not None:
        assert out.shape == (len(header.bands), header.height, header.width)
        assert out.dtype == np.dtype(header.dtype)
    assert peak <= memory_bound(limits), f"decoding took {peak} bytes"

def codec_body(payload: bytes) -> bytes:
    """The codec's own bytes, after the flag byte and any nodata mask."""
    return payload[5 + int.from_bytes(payload[1:5], "little"):] if payload[0] & 1 else payload[1:]


@FUZZ
@given(size=st.integers(0, 2**22), fill=st.integers(0, 255))
def test_a_nodata_mask_of_any_size_decodes_or_is_a_container_error(tile, size, fill):
    """Masks inflate to exactly their tile's bits, in files that declare nodata."""
    codec, header, payload, limits = tile
    mask = zlib.compress(bytes([fill]) * size, 1)
    decode_within_bound(codec, header, b"\x01" + struct.pack("<I", len(mask)) + mask + codec_body(payload),
                        limits)
