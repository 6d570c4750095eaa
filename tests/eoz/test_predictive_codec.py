"""The predictive codec: exact lossless round trips, the hard bound of near-lossless, the sha256 check."""

from __future__ import annotations

import hashlib
import struct
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eoz import palette_coder
from eoz.codecs import codec_for_model, predictive
from eoz.codecs.base import _split_masks
from eoz.codecs.predictive import PredictiveCodec
from eoz.container import EozReader
from eoz.errors import ContainerError, InputError
from eoz.raster import RasterMeta
from eoz.scene import compress_array, decompress_array
from tests.conftest import publish_tiny_predictive


@pytest.fixture(scope="module")
def codec(tmp_path_factory) -> PredictiveCodec:
    from eoz.registry import ModelStore

    store = ModelStore(tmp_path_factory.mktemp("predictive_store"))
    publish_tiny_predictive(store)
    return codec_for_model("tiny-predictive", store=store, lossless=True)


def _meta(array: np.ndarray, nodata=None) -> RasterMeta:
    bands, h, w = array.shape
    return RasterMeta(height=h, width=w, count=bands, dtype=str(array.dtype),
                      band_names=[f"band{i + 1}" for i in range(bands)], crs=None, transform=None, nodata=nodata)


def _round_trip(codec, array, nodata=None, tile_size=64) -> tuple[np.ndarray, bytes]:
    from eoz.registry import ModelStore

    data = compress_array(array, _meta(array, nodata), codec, tile_size)
    decoded, _ = decompress_array(data, store=ModelStore(codec.entry.path.parents[1]))
    return decoded, data


def _smooth(rng, shape, dtype, scale=300.0, offset=0.0) -> np.ndarray:
    """Correlated bands with texture and noise: what the predictor is built for."""
    bands, h, w = shape
    base = np.cumsum(np.cumsum(rng.normal(0, 1, (h, w)), 0), 1)
    base = (base - base.min()) / max(np.ptp(base), 1e-9)
    cube = np.stack([base * scale * (1 + 0.3 * b) + rng.normal(0, 3, (h, w)) for b in range(bands)]) + offset
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(cube), info.min, info.max).astype(dtype)
    return cube.astype(dtype)


@pytest.mark.parametrize("dtype, offset", [("uint16", 500), ("int16", -2000), ("uint8", 0), ("int8", -60),
                                           ("uint32", 1e6), ("int32", -1e6)])
def test_lossless_is_exact_for_every_integer_dtype(codec, dtype, offset):
    rng = np.random.default_rng(1)
    scale = 100 if np.dtype(dtype).itemsize == 1 else 3000
    array = _smooth(rng, (3, 45, 71), dtype, scale=scale, offset=offset)   # odd sizes, several tiles
    decoded, data = _round_trip(codec, array)
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)
    assert EozReader(data).header.lossless


@pytest.mark.parametrize("dtype", ["uint32", "int32"])
@pytest.mark.parametrize("bound", [0, 1000])
def test_full_range_32_bit_noise_round_trips(codec, dtype, bound):
    """The least-squares sums stay exact in int64 at the extremes of 32-bit samples."""
    rng = np.random.default_rng(12)
    info = np.iinfo(dtype)
    array = rng.integers(info.min, int(info.max) + 1, (3, 21, 19)).astype(dtype)
    array[1] = array[0]                   # a duplicated band: collinear references
    array[2, :, ::2] = info.max
    decoded, _ = _round_trip(codec.with_bound(None, bound), array)
    assert np.abs(decoded.astype(np.int64) - array.astype(np.int64)).max() <= bound


@pytest.mark.parametrize("dtype, bound", [("uint32", 0), ("int32", 7), ("float32", 0)])
def test_incompressible_tiles_never_write_past_the_encoder_s_buffer(codec, dtype, bound):
    """Full-range noise codes to more than SAMPLE_BYTES a sample (its residuals escape to 40
    raw bits): the loop stops before a row that might not fit, and the tile is coded again with
    room for the worst a sample takes (this build's first wrote past the buffer: a corrupt heap)."""
    rng = np.random.default_rng(21)
    array = rng.integers(0, 1 << 32, (2, 150, 160), dtype=np.uint64).astype(np.uint32).view(dtype)
    nodata = float("nan") if dtype == "float32" else None   # random bits are NaN now and then
    decoded, _ = _round_trip(codec.with_bound(None, bound), array, nodata, tile_size=256)
    if dtype == "float32":
        valid = ~np.isnan(array)
        np.testing.assert_array_equal(decoded.view(np.uint32)[valid], array.view(np.uint32)[valid])
        assert np.isnan(decoded[~valid]).all()
    else:
        assert np.abs(decoded.astype(np.int64) - array.astype(np.int64)).max() <= bound


def test_a_tile_that_outgrows_the_buffer_is_coded_again_to_the_same_bytes_and_tallies(codec, monkeypatch):
    """The second try starts from scratch: its payload, and the training tallies, are what
    one try with room enough gives."""

    tile = _smooth(np.random.default_rng(22), (3, 140, 50), "uint16")
    tallies = [np.zeros_like(codec.initial) for _ in range(2)]
    payload = codec.encode_counted(tile, tallies[0])
    monkeypatch.setattr(predictive, "SAMPLE_BYTES", 0)   # a buffer of one row: every tile overruns it
    tries, order_and_code = [], predictive.PredictiveCodec._order_and_code
    monkeypatch.setattr(predictive.PredictiveCodec, "_order_and_code", lambda self, *args: tries.append(args[-1]) or
                        order_and_code(self, *args))
    assert codec.encode_counted(tile, tallies[1]) == payload
    assert tries == [0, predictive.pc.WORST_SAMPLE_BYTES]
    np.testing.assert_array_equal(tallies[1], tallies[0])
    assert tallies[0].sum() > 0


@pytest.mark.parametrize("dtype, bound", [("uint32", 0), ("uint8", 0), ("float32", 0), ("float64", 0),
                                          ("int32", 3)])
def test_noise_is_stored_at_its_raw_size_not_coded_larger(codec, dtype, bound):
    """Noise that no prediction shrinks (full-range uint32 coded 28 % larger, uint8 1-2 %) is
    stored bit-packed: a tile takes its raw samples and 59 bytes; float NaN bits and the bound
    hold as in a coded tile."""
    shape = (3, 50, 61)
    tile = np.frombuffer(np.random.default_rng(41).bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize),
                         dtype).reshape(shape)
    payload = codec.with_bound(None, bound).encode_tile(tile, None)
    assert payload[0] == predictive.STORED
    assert len(payload) <= tile.nbytes + 59
    decoded = codec.decode_tile(payload, *tile.shape)
    if dtype.startswith("float"):
        bits = f"uint{8 * np.dtype(dtype).itemsize}"
        np.testing.assert_array_equal(decoded.view(bits), tile.view(bits))
    else:
        assert np.abs(decoded.astype(np.int64) - tile.astype(np.int64)).max() <= bound


def test_a_stored_tile_keeps_nodata_and_a_coded_one_is_not_stored(codec):
    rng = np.random.default_rng(42)
    noise = rng.integers(0, 1 << 16, (2, 70, 90)).astype(np.uint16)
    noise[:, 5, 10:30] = 0   # a few nodata samples (where many are, coding skips them and wins)
    decoded, data = _round_trip(codec, noise, nodata=0, tile_size=128)
    np.testing.assert_array_equal(decoded, noise)
    with EozReader(data) as reader:
        *_, body = _split_masks(reader.read_tile(0), reader.header, 0)
    assert body[0] == predictive.STORED
    smooth = _smooth(rng, (2, 70, 90), "uint16", offset=500)
    assert codec.encode_tile(smooth, None)[0] == predictive.FORMAT


def test_a_damaged_stored_tile_is_refused(codec):
    rng = np.random.default_rng(43)
    tile = rng.integers(0, 1 << 32, (1, 20, 30), dtype=np.uint64).astype(np.uint32)
    payload = bytearray(codec.encode_tile(tile, None))
    assert payload[0] == predictive.STORED
    with pytest.raises(ContainerError, match="stored predictive tile has"):
        codec.decode_tile(bytes(payload[:-1]), *tile.shape)
    flipped = payload.copy()
    flipped[-5] ^= 0x10
    with pytest.raises(ContainerError, match="lossless check failed"):
        codec.decode_tile(bytes(flipped), *tile.shape)
    inverted = payload.copy()   # lowest above highest
    inverted[10:26] = payload[18:26] + payload[10:18]
    with pytest.raises(ContainerError, match="inconsistent"):
        codec.decode_tile(bytes(inverted), *tile.shape)


def test_lossless_keeps_constant_bands_extremes_and_noise(codec):
    rng = np.random.default_rng(2)
    array = np.stack([np.full((40, 33), 7, np.uint16), rng.integers(0, 65536, (40, 33)).astype(np.uint16),
                      np.where(rng.random((40, 33)) < 0.5, 0, 65535).astype(np.uint16)])
    decoded, _ = _round_trip(codec, array)
    np.testing.assert_array_equal(decoded, array)


def test_lossless_float32_keeps_every_bit_including_nan_nodata(codec):
    rng = np.random.default_rng(3)
    array = _smooth(rng, (2, 30, 37), "float32", scale=20, offset=-25)
    array[0, 3:6, 4:9] = np.nan
    array[1, 0, 0] = -0.0
    decoded, _ = _round_trip(codec, array, nodata=float("nan"))
    assert np.array_equal(decoded.view(np.uint32)[~np.isnan(array)], array.view(np.uint32)[~np.isnan(array)])
    assert np.isnan(decoded[np.isnan(array)]).all()


@pytest.mark.parametrize("source", ["float64", "float32"])
def test_lossless_float64_keeps_every_bit(codec, source):
    """float64 rasters, true float64 (a mantissa's end is noise) or float32 values widened
    (their 29 shared trailing zero bits shifted out: about what the float32 raster codes to);
    NaN without nodata, -0, infinities and (float64) a subnormal."""
    smooth = _smooth(np.random.default_rng(44), (3, 40, 45), "float64", scale=2000, offset=-300)
    array = smooth if source == "float64" else smooth.astype(np.float32).astype(np.float64)
    array[0, 0, :5] = [np.nan, -0.0, np.inf, -np.inf, -1.5]
    if source == "float64":
        array[0, 0, 5] = 5e-324   # no trailing zeros
    decoded, data = _round_trip(codec, array)
    assert decoded.dtype == np.float64
    np.testing.assert_array_equal(decoded.view(np.uint64), array.view(np.uint64))
    if source == "float32":
        assert len(data) < 1.2 * len(_round_trip(codec, array.astype(np.float32))[1])


def test_widened_float32_with_nan_nodata_keeps_its_shift(codec):
    """The nodata samples' fill (a band mean) has no trailing zeros; they are never coded, so
    they do not count: the widened raster still codes to about the float32 one."""
    array = _smooth(np.random.default_rng(51), (3, 60, 70), "float32", scale=2000, offset=-300)
    array[0, 10:20, 5:40] = np.nan
    decoded, data = _round_trip(codec, array.astype(np.float64), nodata=float("nan"))
    np.testing.assert_array_equal(decoded, array.astype(np.float64))
    assert len(data) < 1.1 * len(_round_trip(codec, array, nodata=float("nan"))[1])


@pytest.mark.parametrize("zeros", [13, 16])
def test_float32_of_fewer_bits_codes_about_as_its_narrow_patterns(codec, zeros):
    """Half floats read as float32 (a GeoTIFF of 16-bit floats: 13 zero bits) and bfloat16's (16):
    the zero bits every valid sample shares are shifted out (NaN nodata does not count, -0 is
    kept), so the raster codes to about its narrow patterns as integers, where coded raw those
    bits took 2.4x the file on a Sentinel-2 crop as half-float reflectance."""
    smooth = _smooth(np.random.default_rng(61), (3, 60, 70), "float32", scale=0.4, offset=0.02)
    array = (smooth.view(np.uint32) & np.uint32(~((1 << zeros) - 1) & 0xFFFFFFFF)).view(np.float32)
    array[0, 10:20, 5:40] = np.nan
    array[1, 0, 0] = -0.0
    decoded, data = _round_trip(codec, array, nodata=float("nan"))
    valid = ~np.isnan(array)
    np.testing.assert_array_equal(decoded.view(np.uint32)[valid], array.view(np.uint32)[valid])
    assert np.isnan(decoded[~valid]).all()
    narrow = (np.where(valid, array, 0).view(np.uint32) >> zeros).astype(np.int32)   # every value positive but -0
    narrow[~valid] = -1
    assert len(data) < 1.1 * len(_round_trip(codec, narrow, nodata=-1)[1])
    with EozReader(data) as reader:
        *_, body = _split_masks(reader.read_tile(0), reader.header, 0)   # the first 64 px tile
    assert struct.unpack_from("<BBd", body) == (predictive.FORMAT, predictive.FLOAT_BITS, zeros)


@pytest.mark.parametrize("shift", [32, 1.5, -1])
def test_a_float32_shift_out_of_range_is_a_container_error(codec, shift):
    tile = _smooth(np.random.default_rng(62), (1, 20, 30), "float32", scale=3, offset=1)
    payload = bytearray(codec.encode_tile(tile, None))
    assert payload[1] == predictive.FLOAT_BITS
    struct.pack_into("<d", payload, 2, shift)
    with pytest.raises(ContainerError, match="float tile head is inconsistent"):
        codec.decode_tile(bytes(payload), *tile.shape)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bound", [0, 2])
def test_whole_numbered_floats_code_as_the_integers_they_are(codec, dtype, bound):
    """Digital numbers written as floats, NaN their nodata: coded as integers, they take what
    the integer raster takes (as bit patterns, Sentinel-2's took 2.5 times that)."""
    integers = _smooth(np.random.default_rng(47), (3, 40, 45), "int32", scale=3000, offset=-100)
    array = integers.astype(dtype)
    array[1, 5:9, 7:20] = np.nan
    coder = codec.with_bound(None, bound)
    payload = coder.encode_tile(array, ~np.isnan(array))
    assert payload[1] == (predictive.FLOAT_SCALED if dtype == "float32" else predictive.DOUBLE_SCALED)
    decoded, data = _round_trip(coder, array, nodata=float("nan"))
    assert decoded.dtype == np.dtype(dtype)
    assert np.array_equal(np.isnan(decoded), np.isnan(array))
    assert np.nanmax(np.abs(decoded - array)) <= bound
    reference = np.where(np.isnan(array), -1, integers).astype(np.int32)
    assert len(data) < 1.02 * len(_round_trip(coder, reference, nodata=-1)[1])


@pytest.mark.parametrize("offset, bound", [(1e6, 0.04), (-20.0, 1e-4), (100.0, 1e-6)])
def test_the_grid_search_ends_after_a_few_passes_where_rounding_pushes_values_out(codec, monkeypatch, offset,
                                                                                  bound):
    """A bound near the float32 spacing of the values: shrinking the step by 2^-20 a pass took
    3000 to 250000 passes over the tile (minutes for a 512 px tile). Shrinks of 2^-40 here,
    which would take millions: the search still ends, within the bound or with the bits."""
    monkeypatch.setattr(predictive, "_GRID_SHRINK", 1 - 2.0 ** -40)
    array = _smooth(np.random.default_rng(49), (2, 30, 35), "float64", scale=100, offset=offset).astype(np.float32)
    found = []
    search = threading.Thread(target=lambda: found.append(predictive._grid(array, bound)), daemon=True)
    search.start()
    search.join(60)
    assert found, "the grid search did not end in a minute"
    payload = codec.with_bound(None, bound).encode_tile(array, None)
    decoded = codec.decode_tile(payload, *array.shape)
    assert np.abs(decoded.astype(np.float64) - array).max() <= bound


def test_nodata_among_float64_values_near_the_largest_is_filled_finite(codec):
    """Their band mean overflowed to inf, which a bounded code refused as not finite."""
    array = np.random.default_rng(50).standard_normal((2, 20, 25)) * 5e307
    array[0, 2:5, 3:9] = np.nan
    decoded, _ = _round_trip(codec.with_bound(None, 0.5), array, nodata=float("nan"))
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("source", ["dn / 10000 in float64", "dn / 10000 in float32", "(dn - 1000) / 10000 in float32",
                                    "dn / 10000 as float64"])
def test_reflectances_written_as_scaled_digital_numbers_code_as_those_numbers(codec, source):
    """Surface reflectance as digital numbers / 10000 (Sentinel-2's scale; from baseline 04.00
    less an offset of 1000), however a pipeline rounded the quotient: coded as the integers,
    exactly, in about the integer raster's bytes; a scale not among DIVISORS keeps the bits."""
    dn = _smooth(np.random.default_rng(52), (3, 40, 45), "uint16", scale=3000, offset=1200)
    array = {"dn / 10000 in float64": (dn / 10000).astype(np.float32),
             "dn / 10000 in float32": dn.astype(np.float32) / np.float32(10000),
             "(dn - 1000) / 10000 in float32": (dn.astype(np.float32) - np.float32(1000)) / np.float32(10000),
             "dn / 10000 as float64": dn / 10000.0}[source]
    payload = codec.encode_tile(array, None)
    assert payload[1] in predictive.SCALED and struct.unpack_from("<d", payload, 2)[0] == 10000.0
    decoded, data = _round_trip(codec, array)
    bits = f"uint{8 * array.dtype.itemsize}"
    np.testing.assert_array_equal(decoded.view(bits), array.view(bits))
    assert len(data) < 1.02 * len(_round_trip(codec, dn.astype(np.int32) - (1000 if "1000" in source else 0))[1])
    assert codec.encode_tile((array * np.pi).astype(array.dtype), None)[1] in (predictive.FLOAT_BITS,
                                                                                predictive.DOUBLE_BITS)


def test_whole_numbered_floats_with_a_negative_zero_keep_it(codec):
    array = np.rint(_smooth(np.random.default_rng(48), (1, 20, 25), "float32", scale=50, offset=-25))
    array[0, 3, 4] = -0.0
    payload = codec.encode_tile(array, None)
    assert payload[1] == predictive.FLOAT_BITS
    np.testing.assert_array_equal(codec.decode_tile(payload, *array.shape).view(np.uint32), array.view(np.uint32))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bound", [0.5, 1e-3])
def test_float_near_lossless_holds_its_bound_in_its_dtype(codec, dtype, bound):
    array = _smooth(np.random.default_rng(45), (2, 40, 45), dtype, scale=200, offset=-30)
    decoded, _ = _round_trip(codec.with_bound(None, bound), array, nodata=-9999.0)
    assert decoded.dtype == np.dtype(dtype)
    assert np.abs(decoded.astype(np.float64) - array.astype(np.float64)).max() <= bound


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_bounds_per_band_hold_and_cost_what_each_band_asks(codec, dtype):
    """Bounds that differ by band share one fine grid, each band within its own: about the mean
    of the bytes each bound costs alone (Sentinel-1 dB at 0.01 / 0.05: 6.850 bits a sample
    against 7.992 and 5.665), where one bound for all was the only way before."""
    array = _smooth(np.random.default_rng(46), (3, 48, 50), dtype, scale=40, offset=-30)
    bounds = [0.01, 0.05, 0.2]
    decoded, data = _round_trip(codec.with_bound(None, bounds), array, nodata=-9999.0)
    error = np.abs(decoded.astype(np.float64) - array.astype(np.float64)).reshape(3, -1).max(1)
    assert (error <= bounds).all() and (error > np.array(bounds) / 2).all()
    alone = [len(_round_trip(codec.with_bound(None, [b] * 3), array, nodata=-9999.0)[1]) for b in bounds]
    assert len(data) < 1.05 * sum(alone) / 3
    with pytest.raises(InputError, match="all lossless or all bounded"):
        _round_trip(codec.with_bound(None, [0, 0.05, 0.2]), array)


@pytest.mark.parametrize("dtype, scale, bound", [("float32", 1e12, 0.01), ("float64", 1e15, 1e-6),
                                                 ("float32", 3e5, 1e-6)])
def test_a_bound_finer_than_the_floats_spacing_is_met_by_their_bits(codec, dtype, scale, bound):
    """A grid of step 2e over such values had integers past 2^33, which the loop's sums do not
    hold: 1e12 at max error 0.01 decoded 1e12 off. Its bit patterns meet any bound, exactly."""
    array = _smooth(np.random.default_rng(46), (2, 30, 35), "float64", scale=0.1 * scale, offset=scale).astype(dtype)
    array[1] = -array[1]
    payload = codec.with_bound(None, bound).encode_tile(array, None)
    assert payload[1] in (predictive.FLOAT_BITS, predictive.DOUBLE_BITS)
    np.testing.assert_array_equal(codec.decode_tile(payload, *array.shape), array)


def test_lossless_keeps_nan_bits_where_no_nodata_is_declared(codec):
    """A float raster with NaN and no nodata tag (common in float products): lossless codes NaN
    as the bit patterns it is, payloads included; a bounded code needs the nodata declared."""
    rng = np.random.default_rng(31)
    array = _smooth(rng, (2, 40, 50), "float32", scale=20, offset=-25)
    array[0, 4:9, 10:30] = np.nan
    array.view(np.uint32)[1, 0, :3] = [0x7FC12345, 0xFFC00001, 0x7F800001]   # quiet and signalling NaNs
    decoded, data = _round_trip(codec, array)
    np.testing.assert_array_equal(decoded.view(np.uint32), array.view(np.uint32))
    with EozReader(data) as reader:
        assert reader.header.nodata is None
    with pytest.raises(InputError, match="NaN pixels but declares no nodata"):
        _round_trip(codec.with_bound(None, 0.5), array)


def test_lossless_keeps_integer_nodata(codec):
    rng = np.random.default_rng(4)
    array = _smooth(rng, (2, 33, 40), "int16", scale=2000, offset=-1000)
    array[:, :5] = -32768
    decoded, _ = _round_trip(codec, array, nodata=-32768)
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("layout", ["scattered", "border", "band", "rows", "all"])
@pytest.mark.parametrize("dtype, bound", [("uint16", 0), ("int16", 3), ("float32", 0), ("uint8", 1)])
def test_nodata_samples_are_skipped_and_every_other_sample_kept(codec, layout, dtype, bound):
    """Format 9 codes nothing for nodata samples (both sides know the mask): whatever its
    shape, nodata comes back where it was and every other sample exactly or within the bound."""
    rng = np.random.default_rng(len(layout) + bound)
    array = _smooth(rng, (3, 70, 90), dtype, scale=100 if dtype == "uint8" else 3000)
    nodata = 0.0 if dtype != "int16" else -32768.0
    mask = {"scattered": rng.random(array.shape) < 0.2, "border": np.zeros(array.shape, bool),
            "band": np.zeros(array.shape, bool), "rows": np.zeros(array.shape, bool),
            "all": np.ones(array.shape, bool)}[layout]
    mask[:, :, 71:] |= layout == "border"
    mask[1] |= layout == "band"
    mask[:, 20:30] |= layout == "rows"
    array[mask] = nodata
    mask = array == nodata   # with the valid samples that happen to equal it
    decoded, _ = _round_trip(codec.with_bound(None, bound or None), array, nodata=nodata, tile_size=64)
    assert (decoded[mask] == nodata).all()
    error = np.abs(decoded[~mask].astype(np.float64) - array[~mask].astype(np.float64))
    assert error.max(initial=0) <= bound and (decoded[~mask] != nodata).all()


def test_a_nodata_border_costs_little_more_than_its_mask(codec):
    """A scene's nodata border (a swath's edge) costs about its mask (deflated bits), not the
    jumps into and out of a fill: the tile with it against the tile cut before it."""
    array = _smooth(np.random.default_rng(8), (2, 96, 120), "uint16", scale=3000, offset=100)
    array[:, :, 100:] = 0
    with_border = len(_round_trip(codec, array, nodata=0, tile_size=128)[1])
    cut = np.ascontiguousarray(array[:, :, :100])
    without = len(_round_trip(codec, cut, nodata=0, tile_size=128)[1])
    assert with_border - without < 60, (with_border, without)


def test_a_tile_decoded_with_another_nodata_mask_is_refused():
    """The decoder must be given the mask the encoder skipped: with another (here none) it
    reads more samples than were coded, and the stream running out or the lossless check
    says so rather than returning them."""
    from eoz.codecs import predictive

    coder = codec_for_model("predictive", lossless=True)
    tile = _smooth(np.random.default_rng(2), (2, 40, 50), "uint16", offset=100)
    valid = np.ones(tile.shape, bool)
    valid[:, :, 40:] = False
    payload = coder.encode_tile(tile, valid)
    np.testing.assert_array_equal(coder.decode_tile(payload, *tile.shape, valid=valid)[valid], tile[valid])
    with pytest.raises(ContainerError, match="lossless check failed|stream is truncated"):
        coder.decode_tile(payload, *tile.shape)
    assert payload[0] == predictive.FORMAT


@pytest.mark.parametrize("bound", [0, 1])
def test_skipped_samples_carry_the_error_level_into_a_rotated_frame(monkeypatch, shared_data, bound):
    """A Level-1 scene's rotated frame puts nodata before the data on every row: format 10's
    skipped samples take their neighbours' recent errors, so the first samples in meet the
    data's error level (format 9 gave them zero). A Landsat crop framed so: fewer bytes (measured
    -0.9 %), and format 9's tiles, skipping with errors zero, still decode."""
    from eoz.codecs import predictive
    from eoz.datasets import LANDSAT8, load_split

    tile = load_split(LANDSAT8, "validation", shared_data)[0][:, :, :256].astype(np.uint16)
    rows, cols = np.mgrid[:tile.shape[1], :tile.shape[2]]
    valid = np.broadcast_to((rows * 0.97 - cols * 0.25 > -45) & (rows * 0.25 + cols * 0.97 > 51), tile.shape)
    coder, sizes = codec_for_model("predictive", lossless=bound == 0 or None, max_error=bound or None), {}
    for written in (9, 10):
        monkeypatch.setattr(predictive, "FORMAT", written)
        payload = coder.encode_tile(tile, valid)
        assert payload[0] == written
        decoded = coder.decode_tile(payload, *tile.shape, valid=valid)
        assert np.abs(decoded.astype(np.int64) - tile)[valid].max() <= bound
        sizes[written] = len(payload)
    assert sizes[10] < 0.995 * sizes[9], sizes


def _resampled(array: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resampling onto an h x w grid at least as fine: samples repeat along
    rows and columns, as in reprojected or upsampled products."""
    return array[:, np.arange(h) * array.shape[1] // h][:, :, np.arange(w) * array.shape[2] // w]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 16), bound=st.integers(0, 40), dtype=st.sampled_from(["uint16", "int16", "uint8"]),
       bands=st.integers(1, 4), h=st.integers(1, 40), w=st.integers(1, 40),
       layout=st.sampled_from(["smooth", "noisy", "resampled"]))
def test_every_sample_is_within_the_bound(codec, seed, bound, dtype, bands, h, w, layout):
    rng = np.random.default_rng(seed)
    if layout == "noisy":
        info = np.iinfo(dtype)
        array = rng.integers(info.min, int(info.max) + 1, (bands, h, w)).astype(dtype)
    else:
        array = _smooth(rng, (bands, h, w), dtype, scale=100 if dtype == "uint8" else 3000,
                        offset=0 if dtype != "int16" else -1500)
    if layout == "resampled":   # the copy flags' case: repeated samples
        array = _resampled(array[:, :max(1, 2 * h // 3), :w // 2 + 1], h, w)
    decoded, _ = _round_trip(codec.with_bound(None, bound), array, tile_size=32)
    error = np.abs(decoded.astype(np.int64) - array.astype(np.int64))
    assert error.max() <= bound


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2 ** 16), dtype=st.sampled_from(["float32", "float64"]),
       magnitude=st.integers(-3, 15), bound=st.one_of(st.just(0.0), st.integers(-9, 2).map(lambda e: 10.0 ** e)),
       bands=st.integers(1, 3), h=st.integers(1, 30), w=st.integers(1, 30),
       layout=st.sampled_from(["smooth", "whole", "scaled", "noisy", "narrow"]), holes=st.booleans(),
       per_band=st.lists(st.sampled_from([1, 1.5, 3, 1000]), min_size=3, max_size=3))
def test_every_float_sample_is_within_the_bound(codec, seed, dtype, magnitude, bound, bands, h, w, layout, holes,
                                                per_band):
    """Floats of any magnitude at any bound, whole-numbered, integers / 100, of a half float's 10
    mantissa bits (their zero bits shifted out) or none of these, with NaN nodata: every sample
    within the bound (lossless: every bit), NaN where it was."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** magnitude
    array = _smooth(rng, (bands, h, w), "float64", scale=scale, offset=-scale / 3)
    if layout in ("whole", "scaled"):
        array = np.rint(array) / (100 if layout == "scaled" else 1)
    elif layout == "noisy":
        array = rng.normal(0, scale, (bands, h, w))
    elif layout == "narrow":
        array = (array.view(np.uint64) & np.uint64(~((1 << 42) - 1) & (2 ** 64 - 1))).view(np.float64)
    array = array.astype(dtype)
    if holes:
        array[rng.random(array.shape) < 0.1] = np.nan
    bounds = [bound * factor for factor in per_band[:bands]]   # the same, or differing by band
    decoded, _ = _round_trip(codec.with_bound(None, bounds), array, nodata=float("nan") if holes else None,
                             tile_size=32)
    assert decoded.dtype == array.dtype
    assert np.array_equal(np.isnan(decoded), np.isnan(array))
    valid = ~np.isnan(array)
    if bound == 0:
        bits = f"uint{8 * array.dtype.itemsize}"
        np.testing.assert_array_equal(decoded.view(bits)[valid], array.view(bits)[valid])
    else:
        error = np.where(valid, np.abs(decoded.astype(np.float64) - array), 0).reshape(bands, -1).max(1)
        assert (error <= bounds).all()


def _land_cover(shared_data, rows=200, cols=300) -> tuple[np.ndarray, np.ndarray]:
    """A class map and bit flags of a real Sentinel-2 crop (``eoz.datasets.categorical_products``),
    each (1, rows, cols)."""
    from eoz.datasets import S2_10M, categorical_products, load_split

    classes, flags = categorical_products(load_split(S2_10M, "validation", shared_data)[0][:, :rows, :cols])
    return classes[None], flags[None]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_categorical_tiles_code_as_which_neighbour_each_equals(codec, shared_data, monkeypatch, dtype):
    """A class map and bit flags (a few values in uniform areas) take format PALETTE: smaller than
    JPEG-XL's lossless file (effort 7), where the predictive loop took 1.7-2x it; with a nodata
    border, and two bands (classes and flags) in one tile; any dtype whose values are few."""
    import imagecodecs

    classes, flags = _land_cover(shared_data)
    array = np.concatenate([classes, flags]).astype(dtype) * (-1 if dtype == "int16" else 1)
    array[:, :, :40] = 0
    decoded, data = _round_trip(codec, array, nodata=0, tile_size=512)
    np.testing.assert_array_equal(decoded, array)
    with EozReader(data) as reader:
        *_, body = _split_masks(reader.read_tile(0), reader.header, 0)
    assert body[0] == predictive.PALETTE
    if dtype == "uint8":   # the class map's tile alone: about JPEG-XL's file, where the predictive loop took 1.4x it
        alone = len(codec.encode_tile(classes, None))
        assert alone < 1.03 * len(imagecodecs.jpegxl_encode(classes[0], lossless=True, effort=7))
        monkeypatch.setattr(palette_coder, "MAX_PALETTE", 0)
        assert alone < 0.8 * len(codec.encode_tile(classes, None))


def test_a_tile_of_many_values_or_a_bound_is_not_categorical(codec):
    rng = np.random.default_rng(63)
    many = rng.integers(0, 65, (1, 60, 70)).astype(np.uint8)   # 65 values: MAX_PALETTE + 1
    assert codec.encode_tile(many, None)[0] != predictive.PALETTE
    few = rng.integers(0, 3, (1, 6, 7)).repeat(10, 1).repeat(10, 2).astype(np.uint8)   # fields of three classes
    assert codec.encode_tile(few, None)[0] == predictive.PALETTE
    assert codec.with_bound(None, 1).encode_tile(few, None)[0] != predictive.PALETTE


def test_a_damaged_categorical_tile_is_refused(codec, shared_data):
    tile = _land_cover(shared_data, 64, 80)[0]
    payload = bytearray(codec.encode_tile(tile, None))
    assert payload[0] == predictive.PALETTE
    np.testing.assert_array_equal(codec.decode_tile(bytes(payload), *tile.shape), tile)
    head = predictive._HEAD.size
    for damaged, message in ((payload[:head + 3], "truncated"), (payload[:-6], "truncated|lossless check failed"),
                             (payload[:head] + bytes([0]) + payload[head + 1:], "no values"),
                             (payload[:head] + bytes([0x81, 0x02]) + payload[head + 1:], "out of range"),
                             (payload[:head + 1] + bytes([0x7F]) + payload[head + 2:], "out of range")):
        with pytest.raises(ContainerError, match=message):
            codec.decode_tile(bytes(damaged), *tile.shape)
    flipped = payload.copy()
    flipped[-3] ^= 0x21
    with pytest.raises(ContainerError, match="lossless check failed|truncated"):
        codec.decode_tile(bytes(flipped), *tile.shape)


def test_near_lossless_on_real_data_is_bounded_and_smaller(codec, shared_data):
    from eoz.datasets import S2_10M, load_split

    array = load_split(S2_10M, "validation", shared_data)[0][:, :128, :128].astype(np.uint16)
    sizes = {}
    for bound in (0, 1, 4, 16):
        decoded, data = _round_trip(codec.with_bound(None, bound), array, tile_size=128)
        assert np.abs(decoded.astype(np.int64) - array).max() <= bound
        sizes[bound] = len(data)
    assert sizes[0] > sizes[1] > sizes[4] > sizes[16]


def test_per_band_bounds(codec):
    rng = np.random.default_rng(5)
    array = _smooth(rng, (3, 40, 40), "uint16", scale=5000)
    decoded, _ = _round_trip(codec.with_bound(None, [0, 3, 30]), array)
    error = np.abs(decoded.astype(np.int64) - array).reshape(3, -1).max(1)
    assert error[0] == 0 and error[1] <= 3 and error[2] <= 30 and error[2] > 3


def test_a_valid_sample_never_decodes_to_nodata(codec):
    """Near-lossless would otherwise round a sample next to the nodata value onto it."""
    array = np.tile(np.array([[5, 6, 7, 8, 9, 10, 11, 12]], np.uint16), (3, 16, 2))
    array[:, :, :2] = 10    # nodata pixels among values within the bound of it
    decoded, _ = _round_trip(codec.with_bound(None, 4), array, nodata=10)
    valid = array != 10
    assert (decoded[~valid] == 10).all()
    assert (decoded[valid] != 10).all()
    assert np.abs(decoded.astype(np.int64) - array)[valid].max() <= 4


def test_a_copy_never_decodes_a_valid_sample_to_nodata(codec):
    """A column of nodata, then one within the bound of it that repeats down the rows: the
    copy flag would take the west sample (nodata) for the valid one, and must not."""
    array = np.full((1, 12, 6), 13, np.uint16)
    array[:, :, :3] = 10
    decoded, _ = _round_trip(codec.with_bound(None, 4), array, nodata=10)
    assert (decoded[:, :, :3] == 10).all() and (decoded[:, :, 3:] != 10).all()
    assert np.abs(decoded.astype(np.int64) - array).max() <= 4


@pytest.mark.parametrize("rows, cols, limit", [(1, 1.12, 1.03), (2, 2, 1.15)])
def test_repeated_samples_of_a_resampled_raster_code_almost_free(codec, rows, cols, limit):
    """Nearest-neighbour resampling repeats samples (one column in nine here, or each sample
    four times); format 3's copy flags code a repeat in a fraction of a bit, so the resampled
    raster costs little more than its source (without them: 1.11 and 3.05 times as much)."""
    rng = np.random.default_rng(13)
    source = _smooth(rng, (3, 96, 96), "uint16", scale=3000)
    source = source + rng.integers(0, 40, source.shape).astype(np.uint16)   # texture: repeats are the news
    resampled = _resampled(source, round(96 * rows), round(96 * cols))
    decoded, data = _round_trip(codec, resampled, tile_size=256)
    np.testing.assert_array_equal(decoded, resampled)
    _, alone = _round_trip(codec, source, tile_size=256)
    assert len(data) < limit * len(alone)


@pytest.mark.parametrize("bound", [0.01, 0.25, 1.0])
def test_float32_max_error(codec, bound):
    rng = np.random.default_rng(6)
    array = _smooth(rng, (2, 30, 30), "float32", scale=30, offset=-35)
    decoded, _ = _round_trip(codec.with_bound(None, bound), array)
    assert decoded.dtype == np.float32
    assert np.abs(decoded.astype(np.float64) - array.astype(np.float64)).max() <= bound


def test_the_sha256_catches_a_tile_that_decodes_differently(codec):
    rng = np.random.default_rng(7)
    tile = _smooth(rng, (2, 20, 20), "uint16")
    payload = bytearray(codec.encode_tile(tile, np.ones(tile.shape, bool)))
    np.testing.assert_array_equal(codec.decode_tile(bytes(payload), 2, 20, 20), tile)
    digest_at = bytes(payload).index(hashlib.sha256(tile.astype("<i8").tobytes()).digest())
    payload[digest_at] ^= 1
    with pytest.raises(ContainerError, match="lossless check failed"):
        codec.decode_tile(bytes(payload), 2, 20, 20)


def test_a_band_that_is_a_window_of_its_reference_codes_almost_free(codec):
    """Format 2's least-squares candidate reads a 3 x 3 window of the reference band: a band
    that is the sum of its reference and the reference's east neighbour (no causal predictor
    sees that sample) costs a fraction of its white-noise reference (its residuals are zero;
    what it costs is the tables learning that in contexts that expected noise); without the
    candidate it would cost more than the reference."""
    rng = np.random.default_rng(9)
    noise = rng.integers(1000, 3000, (192, 180)).astype(np.int64)   # big enough for the least-squares candidate
    east = np.concatenate([noise[:, 1:], noise[:, -1:]], 1)
    tile = np.stack([noise, noise + east]).astype(np.uint16)
    valid = np.ones(tile.shape, bool)
    both, alone = codec.encode_tile(tile, valid), codec.encode_tile(tile[:1], valid[:1])
    np.testing.assert_array_equal(codec.decode_tile(both, 2, 192, 180), tile)
    assert len(both) - len(alone) < 0.3 * len(alone)


HEAD = 27             # the tile head, with format 5's band order byte (from format 7, the flags byte)
FIXED_RECORD = 8      # formats 2 to 5: a band record before its references and weights


def _as_format_5(codec, tile: np.ndarray, monkeypatch) -> bytearray:
    """The tile as format 5 wrote it (format 6's head and stream, fixed-size band records), for
    the decoder's checks of the fixed records older archives hold: the encoder writes format 6
    where its format is set to 6 (the tables of formats before 8), then the records are rewritten."""
    import struct

    from eoz.codecs import predictive

    with monkeypatch.context() as patch:
        patch.setattr(predictive, "FORMAT", 6)
        payload = codec.encode_tile(tile, np.ones(tile.shape, bool))
    bands = tile.shape[0]
    plans, end = predictive._band_plans(payload, bands, HEAD, compact=True)
    records = b""
    for refs, gain, weights, constant, bound in plans:
        records += struct.pack("<BBhI", len(refs), weights is not None, gain, bound)
        records += struct.pack(f"<{len(refs)}H", *refs)
        if weights is not None:
            records += weights.astype("<i4").tobytes() + struct.pack("<q", constant)
    return bytearray(bytes([5]) + payload[1:HEAD] + records + payload[end:])


def _big_tile(seed: int) -> np.ndarray:
    """Two bands with enough samples that the encoder sends least-squares weights."""
    return _smooth(np.random.default_rng(seed), (2, 192, 180), "uint16")


@pytest.mark.parametrize("dtype", ["uint16", "int32", "uint32"])
@pytest.mark.parametrize("amplitude", [3.0, 2.0 ** 20, None])   # None: full-range noise
@pytest.mark.parametrize("bound", [0, 3])
def test_the_learned_correction_keeps_every_bound_at_every_scale(codec, dtype, amplitude, bound):
    """Format 4's fixed-point network learns as it codes: its sums must stay exact from fine
    texture to full-range 32-bit noise (where it switches itself off), beside the least-squares
    candidate's (bands this large have one)."""
    rng = np.random.default_rng(13)
    tile = _big_tile(14).astype(np.int64)
    info = np.iinfo(dtype)
    if amplitude is None:
        tile[1] = rng.integers(info.min, int(info.max) + 1, tile.shape[1:])
    else:
        tile[1] += np.rint(rng.laplace(0, amplitude, tile.shape[1:])).astype(np.int64)
    tile = np.clip(tile, info.min, info.max).astype(dtype)
    decoded, _ = _round_trip(codec.with_bound(None, bound), tile, tile_size=192)
    assert np.abs(decoded.astype(np.int64) - tile.astype(np.int64)).max() <= bound


def _band_bytes(codec, band: np.ndarray, learn: bool, linear_path: bool = True) -> int:
    """The bytes of one band coded alone with its least-squares weights, with or without the
    learned correction (and format 5's linear path beside it)."""
    from eoz import predictive_coder
    from eoz.codecs import predictive
    from eoz.subband_coder import encoder_state, finish, new_tables

    x = band.astype(np.int64)
    lo, hi = int(x.min()), int(x.max())
    coded = np.empty((1, 3, *x.shape), np.int64)
    weights, constant = predictive._fit(x, (lo + hi) >> 1, coded, [], predictive._FIT_SAMPLES, predictive._REWEIGHTS)
    state, buffer = encoder_state(), np.zeros(x.size * 5 + 1024, np.uint8)
    predictive._code(x, coded, 0, [], 0, weights, constant, 0, lo, hi, None, predictive._NO_SKIP_TILE, True,
                     *codec._tables(predictive.FORMAT),
                     new_tables(predictive._COPY_COUNTS), predictive_coder.new_learned() if learn else None,
                     linear_path, state, buffer, False, predictive._NO_COUNTS)
    return finish(state, buffer)


def test_the_learned_correction_saves_bits_on_real_data(codec, shared_data):
    from eoz.datasets import S2_10M, load_split

    band = load_split(S2_10M, "validation", shared_data)[0][3, :256, :256]
    assert _band_bytes(codec, band, True) < 0.998 * _band_bytes(codec, band, False)


def test_the_linear_path_saves_bits_beside_the_hidden_units(codec, shared_data):
    """Format 5's linear path, on what format 4's correction leaves, band by band on S2 and S1
    (a little, 0.03-0.1 %, on bands coded alone; 0.2-0.3 % on tiles, where references feed
    it); a wrong learning rate makes it cost instead (2^-8: 6 % more on Landsat)."""
    from eoz.datasets import S1_GRD_DN, S2_10M, load_split

    bands = [*load_split(S2_10M, "validation", shared_data)[0][:, :256, :256],
             *load_split(S1_GRD_DN, "validation", shared_data)[0][:, :, :256]]
    for band in bands:
        assert _band_bytes(codec, band, True) < _band_bytes(codec, band, True, False)


def test_a_small_band_takes_least_squares_weights_where_it_has_enough_samples_a_weight(codec, shared_data,
                                                                                     monkeypatch):
    """Below LEAST_SQUARES_SAMPLES, a band with references sends the weights where it has
    WEIGHT_SAMPLES samples a weight: on 100 x 110 Landsat bands every band with a reference
    does (and they pay for them), on 64 x 64 none; each band passes through the loop once."""
    from eoz.codecs import predictive
    from eoz.datasets import LANDSAT8, load_split

    landsat = load_split(LANDSAT8, "validation", shared_data)[0].astype(np.uint16)
    passes, code = [], predictive._code
    monkeypatch.setattr(predictive, "_code", lambda *args: (passes.append(1), code(*args))[1])
    monkeypatch.setattr(predictive, "ORDER_TRIAL_MIN_HEIGHT", 10 ** 6)   # the band-order trial aside
    for rows, cols, takes in ((100, 110, True), (64, 64, False)):
        tile = np.ascontiguousarray(landsat[:, :rows, :cols])
        assert rows * cols < predictive.LEAST_SQUARES_SAMPLES
        passes.clear()
        payload = codec.encode_tile(tile, None)
        assert len(passes) == tile.shape[0]
        np.testing.assert_array_equal(codec.decode_tile(payload, *tile.shape), tile)
        plans, _ = predictive._band_plans(payload, tile.shape[0], HEAD, compact=True)
        assert sum(bool(refs) for refs, *_ in plans) >= tile.shape[0] - 1
        assert all((weights is not None) == (takes and bool(refs)) for refs, _, weights, _, _ in plans)
    tile = np.ascontiguousarray(landsat[:, :100, :110])
    with_weights = codec.encode_tile(tile, None)
    monkeypatch.setattr(predictive, "WEIGHT_SAMPLES", 10 ** 6)   # no small band takes them
    assert len(with_weights) < len(codec.encode_tile(tile, None))


def test_the_encoder_codes_the_bands_in_the_order_that_pays(codec, shared_data):
    """Landsat's bands cost less coded last to first (its long wavelengths are the sharper
    references): the trial on a strip finds it, the order byte says so, and the decoder puts
    the bands back in their order."""
    from eoz.codecs import predictive
    from eoz.datasets import LANDSAT8, load_split

    tile = np.ascontiguousarray(load_split(LANDSAT8, "validation", shared_data)[0][:, :128, :192].astype(np.uint16))
    payload = codec.encode_tile(tile, np.ones(tile.shape, bool))
    assert payload[HEAD - 1] == 1
    np.testing.assert_array_equal(codec.decode_tile(payload, *tile.shape), tile)
    samples = tile.astype(np.int64)
    lo, hi = int(samples.min()), int(samples.max())
    natural, backwards = (sum(map(len, codec._code_bands(s, [0] * len(s), predictive._NO_SKIP_TILE, lo, hi, None,
                                                         predictive._NO_COUNTS, False, predictive.SAMPLE_BYTES)))
                          for s in (samples, samples[::-1]))
    assert len(payload) == HEAD + 32 + backwards < HEAD + 32 + natural   # head, sha256, records and stream

    bounds = list(range(tile.shape[0]))   # one bound per band goes with its band
    payload = codec.with_bound(None, bounds).encode_tile(tile, np.ones(tile.shape, bool))
    assert payload[HEAD - 1] == 1
    error = np.abs(codec.decode_tile(payload, *tile.shape).astype(np.int64) - samples).max(axis=(1, 2))
    assert (error <= bounds).all() and error[-1] > 0


@pytest.mark.parametrize("dtype, bound, nodata", [("uint16", 0, 0), ("int16", 3, -32768), ("float32", 0, "nan"),
                                                   ("float32", 0.01, "nan")])
def test_tiles_coded_last_to_first_keep_bounds_nodata_and_nan(codec, monkeypatch, dtype, bound, nodata):
    """A hazy band before a sharp one (a blurred copy, as blue is of red) pays coded last to
    first; such tiles keep every guarantee: exact or within the bound, nodata and NaN where
    they were."""
    from eoz.codecs import predictive

    rng = np.random.default_rng(21)
    sharp = _smooth(rng, (1, 160, 150), "float64", scale=3000)[0] + rng.normal(0, 40, (160, 150))
    hazy = (sharp + np.roll(sharp, 1, 0) + np.roll(sharp, 1, 1) + np.roll(sharp, (1, 1), (0, 1))) / 4
    array = np.stack([hazy, sharp]) / (100 if dtype == "float32" else 1) + (500 if dtype == "uint16" else 0)
    array = array.astype(dtype) if dtype == "float32" else np.rint(array).astype(dtype)
    nodata = float(nodata)
    array[:, :7, :9] = nodata
    orders, decode_tile = [], predictive.PredictiveCodec.decode_tile

    def decode_noting_the_order(self, payload, *shape, valid=None):
        orders.append(payload[HEAD - 1])
        return decode_tile(self, payload, *shape, valid=valid)

    monkeypatch.setattr(predictive.PredictiveCodec, "decode_tile", decode_noting_the_order)
    decoded, _ = _round_trip(codec.with_bound(None, bound or None), array, nodata=nodata, tile_size=256)
    assert orders == [1]
    same = (decoded == array) | (np.isnan(decoded) & np.isnan(array))
    assert same[:, :7, :9].all() and (np.abs(decoded[~same] - array[~same]) <= bound).all()
    if not bound:
        assert same.all()


@pytest.mark.parametrize("dtype, bound, nodata", [("uint16", 0, 0), ("int16", 3, -32768), ("float32", 0, "nan"),
                                                   ("float32", 0.01, "nan")])
def test_fast_writes_tiles_that_keep_bounds_nodata_and_nan(codec, monkeypatch, dtype, bound, nodata):
    """fast: tiles whose flags byte says no learned correction, first to last, that
    this build decodes with every guarantee of the default's: exact or within the bound,
    nodata and NaN where they were."""
    from eoz.codecs import predictive

    rng = np.random.default_rng(22)
    array = _smooth(rng, (3, 150, 140), "float64", scale=3000) / (100 if dtype == "float32" else 1)
    array = array.astype(dtype) if dtype == "float32" else np.rint(array).astype(dtype)
    array[:, :7, :9] = float(nodata)
    formats, decode_tile = [], predictive.PredictiveCodec.decode_tile

    def decode_noting_the_format(self, payload, *shape, valid=None):
        formats.append((payload[0], payload[HEAD - 1]))
        return decode_tile(self, payload, *shape, valid=valid)

    monkeypatch.setattr(predictive.PredictiveCodec, "decode_tile", decode_noting_the_format)
    fast = codec.with_bound(None, bound or None, fast=True)
    decoded, data = _round_trip(fast, array, nodata=float(nodata), tile_size=128)
    assert formats == [(predictive.FORMAT, predictive.UNLEARNED)] * 4
    same = (decoded == array) | (np.isnan(decoded) & np.isnan(array))
    assert same[:, :7, :9].all() and (np.abs(decoded[~same] - array[~same]) <= bound).all()
    assert same.all() or bound
    formats.clear()
    assert len(data) > len(_round_trip(codec.with_bound(None, bound or None), array, float(nodata), 128)[1])
    assert [f & predictive.UNLEARNED for _, f in formats] == [0] * 4   # the learned correction pays


@pytest.mark.parametrize("version, source, rows, cols, bound, share", [
    (8, "s1-grd-dn", slice(None), slice(512, 1024), 4, 0.99),   # measured -1.4 %
    (8, "s2_sat_testdata/S2_L1C_10m_B02-B03-B04-B08_train_top75.tif", slice(0, 256), slice(0, 512), 1, 0.999),  # -0.18 %
    (9, "s1-grd-dn", slice(None), slice(512, 1024), 1, 0.997),   # -0.41 %
    (9, "s2_sat_testdata/S2_L1C_10m_B02-B03-B04-B08_train_top75.tif", slice(0, 256), slice(0, 512), 0, 0.999),  # -0.20 %
])
def test_each_residual_format_saves_bytes_on_real_data(monkeypatch, shared_data, version, source, rows, cols, bound,
                                                       share):
    """Each format's residual coding saves bytes against the format before on the same tile,
    here Sentinel-1's validation raster and a clean Sentinel-2 L1C crop, with the shipped
    model's learned tables, and both decode: format 8 chooses the tables by the prediction's
    value too (speckle, and photon noise, grow with the signal), format 9 codes a magnitude's
    first low bit and its sign with adaptive odds."""
    from eoz.codecs import predictive
    from eoz.datasets import S2_10M, SPLITS, load_bands, load_split

    if source in SPLITS:
        array = load_split(SPLITS[source], "validation", shared_data)[0].astype(SPLITS[source].dtype)
    else:
        array = load_bands(shared_data / source, S2_10M.bands).astype(np.uint16)
    tile = np.ascontiguousarray(array[:, rows, cols])
    coder, sizes = codec_for_model("predictive", lossless=bound == 0 or None, max_error=bound or None), {}
    for written in (version - 1, version):
        monkeypatch.setattr(predictive, "FORMAT", written)   # the tables and the head of that format
        payload = coder.encode_tile(tile, np.ones(tile.shape, bool))
        assert payload[0] == written
        assert np.abs(coder.decode_tile(payload, *tile.shape).astype(np.int64) - tile).max() <= bound
        sizes[written] = len(payload)
    assert sizes[version] < share * sizes[version - 1], sizes


def test_binary_odds_count_the_first_bits_then_follow_and_never_reach_certainty():
    """Format 9's odds of a bit: P(0) moves as a frequency at first (after three zeros, 7/8),
    then at a fixed rate; a long run of one value leaves the other codable."""
    from eoz import predictive_coder as pc

    odds = pc.new_bit_odds()
    for _ in range(3):
        pc._learn_bit(odds, 0, 0)
    assert abs(odds[0, 0] / pc.BIT_ONE - 7 / 8) < 1e-5 and odds[0, 1] == 3
    for _ in range(20000):
        pc._learn_bit(odds, 1, 1)
    assert odds[1, 0] == pc.BIT_MARGIN and odds[1, 1] == pc.BIT_RATE_AFTER
    for bit in np.random.default_rng(5).random(20000) < 0.3:
        pc._learn_bit(odds, 2, int(bit))
    assert abs(odds[2, 0] / pc.BIT_ONE - 0.7) < 0.05


def test_binary_odds_code_skewed_bits_near_their_entropy_and_decode_them():
    """The range coder's binary step (a multiply where a table's symbol takes a division)
    round-trips bits, and with adaptive odds a 9:1 stream costs near its entropy (0.47 bit)."""
    from eoz import predictive_coder as pc
    from eoz.subband_coder import decoder_state, encoder_state, finish

    bits = (np.random.default_rng(6).random(8000) < 0.1).astype(np.int64)
    state, buffer, odds = encoder_state(), np.zeros(8000, np.uint8), pc.new_bit_odds()
    for bit in bits:
        pc._encode_bit(state, buffer, odds, 7, bit)
    stream = buffer[:finish(state, buffer)].copy()
    assert len(stream) * 8 < 0.5 * len(bits)
    state, odds = decoder_state(stream), pc.new_bit_odds()
    np.testing.assert_array_equal([pc._decode_bit(state, stream, odds, 7) for _ in bits], bits)


def test_fast_is_kept_or_dropped_by_with_bound(codec):
    """with_bound sets every setting each time: a codec made fast for one job is not fast for the next."""
    fast = codec.with_bound(True, None, fast=True)
    assert fast.fast and not fast.with_bound(True, None).fast and not codec.fast


@pytest.mark.parametrize("version, fast, flags", [(6, False, 2), (6, False, 3), (7, True, 4), (7, True, 6),
                                                (8, False, 4), (8, True, 6), (8, True, 0x80), (9, False, 4),
                                                (9, True, 6)])
def test_flags_a_format_does_not_have_are_a_container_error(codec, monkeypatch, version, fast, flags):
    """Format 6's order byte takes 0 or 1, the flags byte of formats 7 to 9 bits 0 and 1 alone."""
    from eoz.codecs import predictive

    tile = _big_tile(3)
    monkeypatch.setattr(predictive, "FORMAT", version)   # the tables and the head of that format
    payload = bytearray(codec.with_bound(True, None, fast=fast).encode_tile(tile, np.ones(tile.shape, bool)))
    assert payload[0] == version
    payload[HEAD - 1] = flags
    with pytest.raises(ContainerError, match="inconsistent"):
        codec.decode_tile(bytes(payload), *tile.shape)


@pytest.mark.parametrize("fixed", [False, True])   # the compact records of formats 6 to 9, format 5's fixed ones
def test_predictor_weights_out_of_range_are_a_container_error(codec, monkeypatch, fixed):
    tile = _big_tile(10)
    payload = _as_format_5(codec, tile, monkeypatch) if fixed else \
        bytearray(codec.encode_tile(tile, np.ones(tile.shape, bool)))
    if fixed:
        np.testing.assert_array_equal(codec.decode_tile(bytes(payload), 2, 192, 180), tile)
        assert payload[HEAD] == 0 and payload[HEAD + 1] == 1   # the first band: weights, and no reference
        weights = HEAD + FIXED_RECORD
        payload[weights:weights + 4] = (1 << 25).to_bytes(4, "little")
    else:
        from eoz.codecs import predictive

        assert payload[HEAD] == 0b100                # the same in the compact flags; its bound is 0, as before it
        weights = HEAD + 1                           # the first weight's varint: replaced by one past the limit
        end = next(i for i in range(weights, len(payload)) if payload[i] < 0x80) + 1
        payload[weights:end] = predictive._varint(predictive._zigzag(-(1 << 20)))
    with pytest.raises(ContainerError, match="weights out of range"):
        codec.decode_tile(bytes(payload), 2, 192, 180)


@pytest.mark.parametrize("fixed", [False, True])
def test_a_reference_to_a_band_not_yet_decoded_is_a_container_error(codec, monkeypatch, fixed):
    from eoz.codecs import predictive

    rng = np.random.default_rng(11)
    tile = _smooth(rng, (2, 24, 24), "uint16")
    payload = _as_format_5(codec, tile, monkeypatch) if fixed else \
        bytearray(codec.encode_tile(tile, np.ones(tile.shape, bool)))
    if fixed:
        record = HEAD + FIXED_RECORD                 # band 1's (the tile is too small for weights)
        assert payload[record] == 1 and payload[record + 1] == 0   # one reference (band 0), no weights
        payload[record + FIXED_RECORD:record + FIXED_RECORD + 2] = (1).to_bytes(2, "little")   # band 1 itself
    else:
        record = HEAD + 1                            # band 1's, after band 0's flags alone
        assert payload[record] == 1                  # one reference, no weights, the same bound
        (_, gain, _, _, _), = predictive._band_plans(bytes(payload), 2, HEAD, compact=True)[0][1:]
        distance = record + 1 + len(predictive._varint(predictive._zigzag(gain - 256)))
        assert payload[distance] == 0                # band 0: the band just before
        payload[distance] = 1                        # two bands back: before the first
    with pytest.raises(ContainerError, match="not yet decoded"):
        codec.decode_tile(bytes(payload), 2, 24, 24)


def test_format_6_band_records_take_a_few_bytes_and_keep_each_band_s_bound(codec):
    """A hyperspectral chip's records cost a few bytes a band (format 5's took 14: 2-3 % of the
    file), and a bound that changes from band to band is written where it changes."""
    from eoz.codecs import predictive

    rng = np.random.default_rng(12)
    base = _smooth(rng, (1, 24, 20), "uint16").astype(np.int64)
    tile = np.clip(base + np.arange(60)[:, None, None] * 40 + rng.integers(-3, 4, (60, 24, 20)), 0, 65535)
    tile = tile.astype(np.uint16)
    bounds = [0] * 20 + [2] * 20 + [0, 5] * 10
    bounded = codec.with_bound(None, bounds)
    payload = bounded.encode_tile(tile, np.ones(tile.shape, bool))
    plans, end = predictive._band_plans(payload, 60, HEAD, compact=True)
    assert [plan[4] for plan in plans] == bounds
    assert end - HEAD < 6 * 60
    decoded = bounded.decode_tile(payload, *tile.shape)
    assert (np.abs(decoded.astype(np.int64) - tile).max(axis=(1, 2)) <= bounds).all()


@pytest.mark.parametrize("shape, refs", [((2, 1, 1), [1]), ((3, 1, 7), [0, 2]), ((3, 7, 1), [2]),
                                         ((4, 2, 2), [3, 0, 1]), ((4, 33, 17), [1, 2]), ((2, 5, 6), [])])
def test_the_reference_window_reads_the_planes_edges_replicated(shape, refs):
    """What the least-squares candidate reads of its references (their values, then their
    residuals, in 3 x 3 windows with the edges replicated), both as the fit's features and as
    the per-sample sum the loop adds, against numpy on odd shapes, a row or a column alone."""
    from eoz import predictive_coder as pc

    rng = np.random.default_rng(sum(shape) + len(refs))
    coded = rng.integers(-5000, 5000, (shape[0], 3, *shape[1:]))
    h, w = shape[1:]
    planes = [coded[r, 0] for r in refs] + [coded[r, 2] for r in refs]
    padded = [np.pad(p, 1, mode="edge") for p in planes]
    windows = np.array([q[1 + di:1 + di + h, 1 + dj:1 + dj + w] for q in padded for di, dj in pc.WINDOW],
                       np.int64).reshape(-1, h, w)
    weights = rng.integers(-(1 << 19), 1 << 19, len(windows))
    expected = 12345 + np.einsum("k,khw->hw", weights, windows)
    part = pc.reference_part(weights, 12345, coded, np.array(refs, np.int64), h, w)
    np.testing.assert_array_equal(part, expected)

    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    features = np.zeros((h * w, len(windows)))
    pc.window_features(coded, np.array(refs, np.int64), rows.ravel(), cols.ravel(), features)
    np.testing.assert_array_equal(features, windows.reshape(len(windows), h * w).T)


@pytest.mark.parametrize("w", [1, 2, 3, 8, 33])
@pytest.mark.parametrize("i", [0, 1, 2, 5])
def test_the_rows_above_sum_each_ring_s_errors_edges_clamped(i, w):
    """What the loop reads of the rows above (N twice, NW, NE, and NN from the third row on),
    against numpy with the edges replicated, on every ring it is given and none other, for a
    column alone, two, and rows of odd widths."""
    from eoz import predictive_coder as pc

    rng = np.random.default_rng(10 * i + w)
    err = rng.integers(0, 1 << 40, (pc.FINAL + 1, 3, w + pc.RING_PAD))
    rings = np.array([0, 3, pc.FINAL], np.int64)
    rows = np.array([i % 3, (i + 2) % 3, (i + 1) % 3], np.int64)
    above = np.full((pc.FINAL + 1, w), -1, np.int64)
    pc._rows_above(err, rings, rows, i, w, above)
    expected = np.zeros_like(above)
    if i:
        north = np.pad(err[:, rows[1], pc.RING_PAD:], ((0, 0), (1, 1)), mode="edge")
        expected[rings] = (2 * north[rings, 1:-1] + north[rings, :-2] + north[rings, 2:]
                           + (i > 1) * err[rings, rows[2], pc.RING_PAD:])
    np.testing.assert_array_equal(above, expected)


def test_weights_are_written_as_the_zigzag_varints_the_decoder_reads():
    """The records' weights, coded for a whole band at once, are the varints read one by one:
    every length from one byte to nine (the constant reaches 2^60), signs, powers of two."""
    from eoz.codecs import predictive

    rng = np.random.default_rng(3)
    edges = [0, -1, 1, 63, -64, 64, -65, 8191, 8192, (1 << 20) - 1, -(1 << 20) + 1, (1 << 60) - 1, -(1 << 60) + 1]
    values = np.concatenate([edges, rng.integers(-(1 << 20), 1 << 20, 300), rng.integers(-(1 << 60), 1 << 60, 50)])
    data = predictive._zigzag_varints(values.astype(np.int64))
    assert data == b"".join(predictive._varint(predictive._zigzag(int(v))) for v in values)
    pos, read = 0, []
    while pos < len(data):
        z, pos = predictive._read_varint(data, pos, 1 << 62)
        read.append(predictive._unzigzag(z))
    assert read == values.tolist()


@pytest.mark.parametrize("flags, varints, message", [
    (0b10000, b"", "unknown flags"),
    (0b1001, bytes([0, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]), "out of range"),   # a gain of 1, a bound past 32 bits
    (0b1001, bytes([0] + [0x80] * 12 + [0]), "out of range"),             # a bound padded past 64 bits
])
def test_a_corrupt_format_6_record_is_a_container_error(codec, flags, varints, message):
    """Flag bits no format gives, or a varint past its limit."""
    rng = np.random.default_rng(11)
    tile = _smooth(rng, (2, 24, 24), "uint16")
    payload = bytearray(codec.encode_tile(tile, np.ones(tile.shape, bool)))
    band_1 = HEAD + 1
    payload[band_1] = flags    # one reference and a new bound: its varints (gain, bound) read on
    payload[band_1 + 1:band_1 + 1] = varints
    with pytest.raises(ContainerError, match=message):
        codec.decode_tile(bytes(payload), 2, 24, 24)


@pytest.mark.parametrize("cut", [0, 5, 30, -3])
def test_a_truncated_payload_is_a_container_error(codec, cut):
    rng = np.random.default_rng(8)
    tile = _smooth(rng, (2, 24, 24), "uint16")
    payload = codec.encode_tile(tile, np.ones(tile.shape, bool))
    with pytest.raises(ContainerError):
        codec.decode_tile(payload[:cut], 2, 24, 24)


def test_bad_bounds_are_refused(codec):
    with pytest.raises(InputError, match="whole numbers"):
        _round_trip(codec.with_bound(None, 1.5), np.zeros((1, 8, 8), np.uint16))
    with pytest.raises(InputError, match="one of lossless or max_error"):
        codec.with_bound(True, 2)
    with pytest.raises(InputError, match="one per band"):
        _round_trip(codec.with_bound(None, [1, 2]), np.zeros((3, 8, 8), np.uint16))
