"""The wavelet codec in the scene loop: per-block fixed quality on real S2 and S1 data, any
band count and dtype, odd tiles, nodata, damaged payloads, targets and model pins.

Everything runs with an untrained model (uniform starting counts): the quality control does
not depend on training, only the rate does.
"""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest
import rasterio
from safetensors.numpy import save as save_safetensors

from eoz import wavelet
from eoz.codecs import codec_for_model
from eoz.codecs.base import decode_tile_payload
from eoz.codecs.wavelet import _HEAD, KLT_MAX_BANDS, LEVELS, MID_CODE, Analysis, WaveletCodec, _Transform, \
    base_log2_step, choose_codes
from eoz.container import EozReader
from eoz.errors import ContainerError, InputError, ModelMismatchError
from eoz.quality import QualityTarget, block_grid, block_means
from eoz.raster import RasterMeta, read_raster
from eoz.registry import ModelStore
from eoz.scene import compress_array, decompress_array
from eoz.subband_coder import SubbandModel
from tests.conftest import S2_10M

MODEL = "wavelet-hyperprior"
S1_DB = "sen1floods11_sample/Spain_7370579_S1Hand_rows000-383.tif"
S2_WINDOW = (600, 400, 256, 256)          # col, row, width, height: fields, roads and a town


def _publish(store: ModelStore, model: SubbandModel) -> None:
    store.publish(MODEL, "1", {"codec": "wavelet", "bands": [], "dtype": None, "peak": 10000.0,
                               "description": "test"}, save_safetensors(model.to_tensors()))


@pytest.fixture(scope="session")
def wavelet_store(tmp_path_factory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("wavelet_store"))
    _publish(store, SubbandModel.untrained())
    return store


@pytest.fixture(scope="session")
def s2_crop(shared_data):
    return read_raster(shared_data / S2_10M, window=S2_WINDOW)


def _codec(store, **target) -> WaveletCodec:
    return codec_for_model(MODEL, store=store, target=QualityTarget(**target))


def _meta(array: np.ndarray, nodata=None) -> RasterMeta:
    return RasterMeta(height=array.shape[1], width=array.shape[2], count=array.shape[0], dtype=str(array.dtype),
                      band_names=[f"b{i + 1}" for i in range(array.shape[0])],
                      crs=rasterio.crs.CRS.from_epsg(32631).to_wkt(),
                      transform=[10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0], nodata=nodata)


def _smooth(bands: int, height: int, width: int, low: float, high: float, seed: int = 0) -> np.ndarray:
    """Smooth correlated bands with a little texture, spanning [low, high]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / 17.0
    base = np.sin(x + 0.3 * y) + np.cos(0.7 * y - 0.2 * x) + 0.5 * np.sin(0.23 * x * y / 10)
    planes = [(1 + 0.1 * b) * base + 0.2 * np.sin(x / (b + 1)) + 0.05 * rng.normal(size=base.shape)
              for b in range(bands)]
    stack = np.stack(planes)
    stack = (stack - stack.min()) / (stack.max() - stack.min())
    return low + (high - low) * stack


def _block_psnr(out: np.ndarray, ref: np.ndarray, valid: np.ndarray, block: int | None, peak: float) -> np.ndarray:
    err = (out.astype(np.float64) - ref.astype(np.float64)) ** 2
    err[~valid] = 0
    mse = block_means(err, valid, block).ravel()            # 0 for exact blocks and blocks of nodata only
    return np.where(mse > 0, 10 * np.log10(peak ** 2 / np.maximum(mse, 1e-300)), np.inf)


def _assert_blocks_meet(out, ref, target: QualityTarget, valid=None, tolerance_db=1e-9):
    valid = np.ones(ref.shape, bool) if valid is None else valid
    psnr = _block_psnr(out, ref, valid, target.block, target.peak)
    assert psnr.min() >= target.psnr - tolerance_db, (psnr.min(), target)
    return psnr


# --- fixed quality on real data -------------------------------------------------------------

@pytest.mark.parametrize("psnr", [40.0, 50.0])
@pytest.mark.parametrize("block", [None, 16, 32, 64])
def test_every_block_of_a_real_s2_crop_meets_the_target(s2_crop, wavelet_store, psnr, block, request):
    array, meta = s2_crop
    target = QualityTarget(psnr=psnr, block=block)
    data = compress_array(array, meta, _codec(wavelet_store, psnr=psnr, block=block), tile_size=256)
    out, out_meta = decompress_array(data, store=wavelet_store)
    assert out.shape == array.shape and out.dtype == np.uint16 and out_meta.band_names == meta.band_names
    psnr_blocks = _assert_blocks_meet(out, array, target)
    assert len(psnr_blocks) == np.prod(block_grid(256, 256, block))
    # met without wasting rate: the median block sits just above the target. With 16 px blocks
    # the coarse levels' coefficients span several blocks and take the finest of their steps,
    # so smooth blocks beside busy ones come out better than asked: more slack there. This
    # crop's 64 or 16 blocks of 32 or 64 px at 40 dB keep 0.36-0.43 dB after the one coded
    # secant round the encoder spends on slack (the benchmarks' medians: at most 0.25 dB on
    # whole images, 0.23 dB on 512 px crops; fixed_quality_wavelet*.md).
    slack = 0.6 if block == 16 else 0.45 if psnr == 40 and block in (32, 64) else 0.3
    assert np.median(psnr_blocks) <= psnr + slack
    assert len(data) < array.nbytes / (8 if psnr == 40 else 2)
    with EozReader(data) as reader:
        assert reader.header.codec == "wavelet" and reader.header.model_id == MODEL
        assert reader.header.quality == target.to_dict()


@pytest.mark.parametrize("source,psnr,block", [("s2", 40.0, 16), ("17-bands", 45.0, 32)],
                         ids=["s2-128px-16", "17-bands-40x48-32"])
def test_block_loop_keeps_a_target_the_base_step_already_meets(request, source, psnr, block):
    if source == "s2":
        tile = read_raster(request.getfixturevalue("shared_data") / S2_10M, window=(600, 400, 128, 128))[0]
    else:
        tile = np.rint(_smooth(17, 40, 48, 200, 3000, seed=17)).astype(np.uint16)
    target = QualityTarget(psnr=psnr, block=block)
    analysed = Analysis(_Transform.fit(tile), tile, base_log2_step(target.mse), SubbandModel.untrained())
    valid = np.ones(tile.shape, bool)
    uniform = np.full(block_grid(*tile.shape[1:], block), MID_CODE)
    assert analysed.block_mse(uniform, valid, block).max() <= target.mse     # reachable: the start meets it
    codes, mse = choose_codes(analysed, valid, block, target.mse)
    assert (mse <= target.mse).all()


def test_report_matches_what_the_decoder_outputs(s2_crop, wavelet_store):
    """The encoder measures the decoder's exact output: the reported block MSEs are those of the decode."""
    array, _ = s2_crop
    tile = array[:, :128, :160]
    valid = np.ones(tile.shape, bool)
    codec = _codec(wavelet_store, psnr=45.0, block=32)
    payload, report = codec.encode_with_report(tile, valid)
    decoded = np.clip(np.rint(codec.decode_tile(payload, 4, 128, 160)), 0, 65535)
    mse = block_means((decoded - tile) ** 2, valid, 32)
    np.testing.assert_allclose(mse, report["mse"], rtol=1e-12)
    assert report["codes"].shape == block_grid(128, 160, 32)
    assert (report["mse"] <= QualityTarget(psnr=45.0).mse).all()
    # the head carries what the report says
    _, levels, block, rows, cols, log2_base, klt = _HEAD.unpack_from(payload)
    assert (levels, block, rows, cols, klt) == (LEVELS, 32, 4, 5, 1)
    assert log2_base == pytest.approx(base_log2_step(QualityTarget(psnr=45.0).mse), abs=1e-6)
    side = _HEAD.size + 4 * 4 + 4 * 16
    np.testing.assert_array_equal(np.frombuffer(payload[side:side + 20], np.uint8).reshape(4, 5), report["codes"])


def test_compression_is_deterministic(s2_crop, wavelet_store):
    array, _ = s2_crop
    codec = _codec(wavelet_store, psnr=45.0, block=64)
    crop, crop_meta = array[:, :128, :128], _meta(array[:, :128, :128])
    assert compress_array(crop, crop_meta, codec, tile_size=64) == compress_array(crop, crop_meta, codec, tile_size=64)


def _s1(shared_data):
    path = shared_data / S1_DB
    if not path.exists():
        pytest.skip(f"{S1_DB} not found")
    return read_raster(path)


@pytest.mark.parametrize("block", [None, 32])
def test_float32_sar_in_db_meets_the_target(shared_data, wavelet_store, block):
    array, meta = _s1(shared_data)
    assert array.dtype == np.float32 and meta.nodata is not None and np.isnan(meta.nodata)
    valid = ~np.isnan(array)       # this split has no NaN pixels today; count only real ones anyway
    target = QualityTarget(psnr=40.0, peak=50.0, block=block)
    data = compress_array(array, meta, _codec(wavelet_store, psnr=40.0, peak=50.0, block=block), tile_size=256)
    out, out_meta = decompress_array(data, store=wavelet_store)
    assert out.dtype == np.float32 and out.shape == array.shape and out_meta.band_names == ["VV_dB", "VH_dB"]
    np.testing.assert_array_equal(np.isnan(out), ~valid)
    # float32 output rounding moves a block's MSE by ~1e-7 of itself at most
    psnr = _assert_blocks_meet(np.nan_to_num(out), np.nan_to_num(array), target, valid, tolerance_db=1e-5)
    assert np.median(psnr) <= 40.0 + 0.3
    assert len(data) < array.nbytes / 8


def test_float32_nan_nodata_is_kept(shared_data, wavelet_store):
    array, meta = _s1(shared_data)
    array = array[:, :200, :300].copy()
    array[:, 20:60, 100:170] = np.nan                 # a hole across both bands
    array[1, 150:, :40] = np.nan                      # and one in VH only
    valid = ~np.isnan(array)
    target = QualityTarget(psnr=40.0, peak=50.0, block=32)
    data = compress_array(array, _meta(array, nodata=float("nan")), _codec(wavelet_store, psnr=40.0, peak=50.0,
                                                                           block=32), tile_size=128)
    out, _ = decompress_array(data, store=wavelet_store)
    np.testing.assert_array_equal(np.isnan(out), ~valid)
    _assert_blocks_meet(np.nan_to_num(out), np.nan_to_num(array), target, valid, tolerance_db=1e-5)


def test_nan_pixels_without_a_nodata_value_are_refused(wavelet_store):
    array = _smooth(2, 40, 40, -20, 5).astype(np.float32)
    array[0, 3, 3] = np.nan
    with pytest.raises(InputError):
        compress_array(array, _meta(array), _codec(wavelet_store, psnr=40.0, peak=50.0), tile_size=64)


# --- band counts, dtypes, tile shapes, nodata -----------------------------------------------

@pytest.mark.parametrize("bands", [1, 3, KLT_MAX_BANDS, KLT_MAX_BANDS + 1, 20])
def test_any_band_count(wavelet_store, bands):
    array = np.rint(_smooth(bands, 48, 48, 200, 3000, seed=bands)).astype(np.uint16)
    target = QualityTarget(psnr=45.0, block=32)
    codec = _codec(wavelet_store, psnr=45.0, block=32)
    data = compress_array(array, _meta(array), codec, tile_size=128)
    out, meta = decompress_array(data, store=wavelet_store)
    assert out.shape == array.shape and out.dtype == np.uint16 and meta.count == bands
    _assert_blocks_meet(out, array, target)
    # the KLT is sent up to KLT_MAX_BANDS bands; above, band means only
    payload = codec.encode_tile(array, np.ones(array.shape, bool))
    klt = _HEAD.unpack_from(payload)[-1]
    assert klt == (bands <= KLT_MAX_BANDS)
    side = 4 * bands + (4 * bands * bands if klt else 0)
    rows, cols = block_grid(48, 48, 32)
    shapes = wavelet.flatten(wavelet.subband_shapes(48, 48, LEVELS))
    coefficients = payload[_HEAD.size + side + rows * cols + 2 * len(shapes):]
    assert SubbandModel.untrained().decode(coefficients, shapes, bands)[bands - 1][0].shape == shapes[0]


@pytest.mark.parametrize("dtype,low,high,peak,psnr", [
    ("uint8", 0, 255, 255.0, 38.0),          # touches both ends: clipping on the way out
    ("int16", -3000, 3000, 6000.0, 45.0),
    ("uint16", 0, 60000, 65535.0, 50.0),
    ("float32", -30.0, 10.0, 50.0, 42.0),
])
def test_dtypes_round_trip_at_their_target(wavelet_store, dtype, low, high, peak, psnr):
    values = _smooth(3, 90, 70, low, high, seed=3)
    array = (np.rint(values) if np.dtype(dtype).kind in "iu" else values).astype(dtype)
    target = QualityTarget(psnr=psnr, peak=peak, block=16 if dtype == "int16" else 64)
    codec = _codec(wavelet_store, psnr=psnr, peak=peak, block=target.block)
    data = compress_array(array, _meta(array), codec, tile_size=128)
    out, _ = decompress_array(data, store=wavelet_store)
    assert out.dtype == np.dtype(dtype) and out.shape == array.shape
    _assert_blocks_meet(out, array, target, tolerance_db=1e-9 if dtype != "float32" else 1e-5)
    if dtype == "int16":
        assert out.min() < 0


@pytest.mark.parametrize("tile_size,block", [(64, None), (64, 16), (64, 32),
                                             (48, 16), (200, 64)])
def test_odd_image_and_tile_sizes(wavelet_store, tile_size, block):
    array = np.rint(_smooth(4, 100, 77, 500, 4000, seed=5)).astype(np.uint16)
    target = QualityTarget(psnr=45.0, block=block)
    data = compress_array(array, _meta(array), _codec(wavelet_store, psnr=45.0, block=block), tile_size=tile_size)
    out, _ = decompress_array(data, store=wavelet_store)
    assert out.shape == array.shape
    # blocks restart in every tile: measure per tile
    for r in range(0, 100, tile_size):
        for c in range(0, 77, tile_size):
            part = (slice(None), slice(r, r + tile_size), slice(c, c + tile_size))
            _assert_blocks_meet(out[part], array[part], target)
    window, _ = decompress_array(data, window=(30, 41, 33, 50), store=wavelet_store)
    np.testing.assert_array_equal(window, out[:, 41:91, 30:63])


@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (40, 1), (2, 3), (5, 33)])
def test_tiny_and_thin_tiles(wavelet_store, shape):
    array = np.rint(_smooth(2, *shape, 1000, 2000, seed=6)).astype(np.uint16)
    target = QualityTarget(psnr=50.0)
    data = compress_array(array, _meta(array), _codec(wavelet_store, psnr=50.0), tile_size=64)
    out, _ = decompress_array(data, store=wavelet_store)
    assert out.shape == array.shape
    _assert_blocks_meet(out, array, target)


def test_integer_nodata_pixels_are_kept(wavelet_store):
    array = np.rint(_smooth(3, 96, 96, 100, 5000, seed=7)).astype(np.uint16)
    array[:, 10:30, 40:90] = 0
    array[2, 60:, :20] = 0
    array[0, 80, 80] = 1                                   # a valid pixel next to the nodata value
    valid = array != 0
    target = QualityTarget(psnr=45.0, block=32)
    data = compress_array(array, _meta(array, nodata=0), _codec(wavelet_store, psnr=45.0, block=32), tile_size=64)
    out, _ = decompress_array(data, store=wavelet_store)
    np.testing.assert_array_equal(out == 0, ~valid)        # nodata where it was, nowhere else
    for r in range(0, 96, 64):
        for c in range(0, 96, 64):
            part = (slice(None), slice(r, r + 64), slice(c, c + 64))
            _assert_blocks_meet(out[part], array[part], target, valid[part])


def test_blocks_of_nodata_beside_textured_ones_raise_no_warning(wavelet_store):
    """A block of nodata has nothing to miss (MSE 0): the closed loop's repair rounds for its
    neighbours must not take its logarithm (numpy warned of a division by zero)."""
    array = np.rint(_smooth(4, 40, 48, 100, 9000, seed=9) + np.random.default_rng(9).normal(0, 300, (4, 40, 48)))
    array = np.clip(array, 1, 65535).astype(np.uint16)
    array[:, :16, :16] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = compress_array(array, _meta(array, nodata=0), _codec(wavelet_store, psnr=45.0, block=16),
                              tile_size=64)
    out, _ = decompress_array(data, store=wavelet_store)
    assert (out[:, :16, :16] == 0).all()


def test_an_all_nodata_tile(wavelet_store):
    array = np.rint(_smooth(2, 64, 128, 100, 5000, seed=8)).astype(np.uint16)
    array[:, :, :64] = 7
    data = compress_array(array, _meta(array, nodata=7), _codec(wavelet_store, psnr=45.0, block=32), tile_size=64)
    out, _ = decompress_array(data, store=wavelet_store)
    assert (out[:, :, :64] == 7).all() and not (out[:, :, 64:] == 7).any()


# --- damaged payloads -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def payload(wavelet_store):
    array = np.rint(_smooth(4, 64, 64, 300, 4000, seed=9)).astype(np.uint16)
    codec = _codec(wavelet_store, psnr=45.0, block=16)
    return codec, codec.encode_tile(array, np.ones(array.shape, bool))


def _side_end(payload_bytes: bytes, bands: int = 4) -> int:
    _, levels, block, rows, cols, _, klt = _HEAD.unpack_from(payload_bytes)
    shapes = wavelet.flatten(wavelet.subband_shapes(64, 64, levels))
    return _HEAD.size + 4 * bands + (4 * bands * bands if klt else 0) + rows * cols + 2 * len(shapes)


def test_intact_payload_decodes(payload):
    codec, data = payload
    assert codec.decode_tile(data, 4, 64, 64).shape == (4, 64, 64)


def test_truncated_payloads_are_refused(payload):
    codec, data = payload
    side = _side_end(data)
    for keep in [0, 1, _HEAD.size - 1, _HEAD.size, _HEAD.size + 20, side - 1, side, side + 1, side + 50,
                 (side + len(data)) // 2, len(data) - 2, len(data) - 1]:
        with pytest.raises(ContainerError):
            codec.decode_tile(data[:keep], 4, 64, 64)


def test_random_bytes_in_the_coefficient_stream_are_refused(payload):
    codec, data = payload
    side = _side_end(data)
    rng = np.random.default_rng(10)
    for trial in range(25):
        bad = bytearray(data)
        for pos in rng.integers(side, len(bad), 1 + trial % 4):
            bad[pos] ^= int(rng.integers(1, 256))
        with pytest.raises(ContainerError):
            codec.decode_tile(bytes(bad), 4, 64, 64)
    junk = data[:side] + rng.integers(0, 256, len(data) - side, dtype=np.uint8).tobytes()
    with pytest.raises(ContainerError):
        codec.decode_tile(junk, 4, 64, 64)


@pytest.mark.parametrize("field,value", [
    ("block", 8), ("block", 32), ("block", 0), ("rows", 3), ("cols", 5), ("rows", 0),
    ("levels", 4), ("levels", 6), ("levels", 0), ("log2_base", float("nan")), ("log2_base", float("inf")),
    ("log2_base", 1e6), ("log2_base", -200.0), ("format", 0), ("format", 2), ("klt", 2), ("klt", 255),
])
def test_a_head_that_does_not_fit_the_tile_is_refused(payload, field, value):
    codec, data = payload
    head = dict(zip(("format", "levels", "block", "rows", "cols", "log2_base", "klt"), _HEAD.unpack_from(data)))
    head[field] = value
    bad = _HEAD.pack(*head.values()) + data[_HEAD.size:]
    # refused by the head checks themselves, before any coefficient is decoded
    expected = {"block": "grid", "rows": "grid", "cols": "grid", "format": "format", "klt": "KLT flag"}.get(
        field, "levels or a base step")
    with pytest.raises(ContainerError, match=expected):
        codec.decode_tile(bad, 4, 64, 64)


def test_a_klt_flag_on_more_bands_than_the_encoder_rotates_is_refused(wavelet_store):
    """Else a crafted many-band tile makes the inverse KLT spend bands^2 plane passes."""
    array = np.rint(_smooth(KLT_MAX_BANDS + 1, 32, 32, 300, 4000, seed=3)).astype(np.uint16)
    data = _codec(wavelet_store, psnr=40.0).encode_tile(array, np.ones(array.shape, bool))
    head = list(_HEAD.unpack_from(data))
    assert head[-1] == 0
    head[-1] = 1
    with pytest.raises(ContainerError, match="KLT flag"):
        _codec(wavelet_store, psnr=40.0).decode_tile(_HEAD.pack(*head) + data[_HEAD.size:], KLT_MAX_BANDS + 1, 32, 32)


@pytest.mark.parametrize("bands,height,width", [(4, 64, 48), (4, 48, 64), (4, 63, 64), (3, 64, 64), (5, 64, 64)])
def test_a_payload_of_another_tile_shape_is_refused(payload, bands, height, width):
    codec, data = payload
    with pytest.raises(ContainerError):
        codec.decode_tile(data, bands, height, width)


@pytest.mark.parametrize("offset", [0, 4 * 4 + 8], ids=["mean", "matrix"])
def test_non_finite_spectral_side_information_is_refused(payload, offset):
    codec, data = payload
    bad = bytearray(data)
    struct.pack_into("<f", bad, _HEAD.size + offset, float("nan"))
    with pytest.raises(ContainerError):
        codec.decode_tile(bytes(bad), 4, 64, 64)


def test_damaged_tiles_in_a_file_raise_container_errors(wavelet_store):
    array = np.rint(_smooth(3, 64, 96, 300, 4000, seed=11)).astype(np.uint16)
    data = compress_array(array, _meta(array), _codec(wavelet_store, psnr=45.0, block=32), tile_size=64)
    with EozReader(data) as reader:
        header, payloads = reader.header, [reader.read_tile(i) for i in range(reader.header.tile_count)]
    codec = codec_for_model(MODEL, store=wavelet_store, target=None)
    rng = np.random.default_rng(12)
    for index, good in enumerate(payloads):
        assert decode_tile_payload(codec, good, header, index).shape[0] == 3
        for bad in (good[:len(good) // 2], good[:1] + bytes(rng.integers(0, 256, len(good) - 1, dtype=np.uint8)),
                    good[:1] + _HEAD.pack(1, 5, 16, 9, 9, 1.0, 1) + good[1 + _HEAD.size:]):
            with pytest.raises(ContainerError):
                decode_tile_payload(codec, bad, header, index)
    # flipped bytes inside the file: the crc catches them
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x55
    with pytest.raises(ContainerError):
        decompress_array(bytes(damaged), store=wavelet_store)


# --- targets and pins -----------------------------------------------------------------------

def test_a_lambda_target_is_refused(wavelet_store):
    with pytest.raises(InputError):
        codec_for_model(MODEL, store=wavelet_store, target=QualityTarget(lmbda=500.0))
    codec = _codec(wavelet_store, psnr=40.0)
    with pytest.raises(InputError):
        codec.with_target(QualityTarget(lmbda=500.0, block=32))
    assert codec.with_target(QualityTarget(mse=25.0)).target.mse == 25.0
    assert codec.target.psnr == 40.0                      # with_target copies; the codec keeps its own


def test_encoding_without_a_target_is_refused(wavelet_store):
    array = np.rint(_smooth(1, 32, 32, 0, 100)).astype(np.uint16)
    codec = codec_for_model(MODEL, store=wavelet_store, target=None)
    with pytest.raises(InputError):
        compress_array(array, _meta(array), codec, tile_size=32)


def test_an_unreachable_target_is_refused(wavelet_store):
    """Integers reach any MSE (rounding makes them exact); floats at 1e-9 would need more than
    the coder's 2^30 quantization bins."""
    array = _smooth(2, 64, 64, 0, 60000, seed=13).astype(np.float32)
    with pytest.raises(InputError):
        compress_array(array, _meta(array), _codec(wavelet_store, mse=1e-9), tile_size=64)
    exact = np.rint(array).astype(np.uint16)
    data = compress_array(exact, _meta(exact), _codec(wavelet_store, mse=1e-6), tile_size=64)
    np.testing.assert_array_equal(decompress_array(data, store=wavelet_store)[0], exact)


def test_a_store_with_other_weights_is_refused(wavelet_store, tmp_path):
    array = np.rint(_smooth(2, 48, 48, 100, 3000, seed=14)).astype(np.uint16)
    data = compress_array(array, _meta(array), _codec(wavelet_store, psnr=45.0), tile_size=64)
    untrained = SubbandModel.untrained()
    other = ModelStore(tmp_path / "other")
    _publish(other, SubbandModel(untrained.weights, 2 * untrained.counts, untrained.lowpass_counts))
    with pytest.raises(ModelMismatchError):
        decompress_array(data, store=other)
    same = ModelStore(tmp_path / "same")
    _publish(same, SubbandModel.untrained())              # the same weights in another store decode
    np.testing.assert_array_equal(decompress_array(data, store=same)[0], decompress_array(data, store=wavelet_store)[0])
