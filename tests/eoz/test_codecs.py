"""The tile loop and codecs: round trips, windows, odd sizes, nodata, pins, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from eoz.codecs import JPEG2000Codec, codec_for_model
from eoz.container import EozReader
from eoz.errors import ContainerError, CorruptTileError, InputError, ModelMismatchError, UnknownModelError
from eoz.raster import RasterMeta, read_meta, read_raster
from eoz.registry import ModelStore
from eoz.scene import compress_array, compress_file, decompress_array, decompress_file
from tests.conftest import S2_10M, publish_tiny_model

BANDS = ["B02", "B03", "B04", "B08"]


def _meta(array, nodata=None, transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)):
    return RasterMeta(height=array.shape[1], width=array.shape[2], count=array.shape[0],
                      dtype=str(array.dtype), band_names=BANDS[:array.shape[0]],
                      crs=rasterio.crs.CRS.from_epsg(32618).to_wkt(), transform=list(transform),
                      nodata=nodata)


@pytest.fixture()
def crop(shared_data):
    array, meta = read_raster(shared_data / S2_10M, window=(700, 300, 150, 130))
    return array, meta


def test_file_round_trip_keeps_shape_dtype_and_georeferencing(tmp_path, shared_data, tiny_store):
    src = tmp_path / "in.tif"
    array, meta = read_raster(shared_data / S2_10M, window=(0, 0, 200, 170))
    from eoz.raster import write_raster
    write_raster(src, array, meta)
    codec = codec_for_model("tiny-vq", store=tiny_store)
    compress_file(src, tmp_path / "x.eoz", codec, tile_size=64)
    out_meta = decompress_file(tmp_path / "x.eoz", tmp_path / "out.tif", store=tiny_store)
    back, back_meta = read_raster(tmp_path / "out.tif")
    assert back.shape == array.shape and back.dtype == array.dtype
    assert back_meta == meta == out_meta
    assert not (tmp_path / "x.eoz.part").exists()


def test_window_decode_equals_window_of_full_decode(crop, tiny_store):
    array, meta = crop
    data = compress_array(array, meta, codec_for_model("tiny-vq", store=tiny_store), tile_size=32)
    full, _ = decompress_array(data, store=tiny_store)
    for window in [(0, 0, 150, 130), (31, 33, 40, 50), (149, 129, 1, 1), (64, 0, 32, 32)]:
        part, part_meta = decompress_array(data, window=window, store=tiny_store)
        c, r, w, h = window
        np.testing.assert_array_equal(part, full[:, r:r + h, c:c + w])
        a, _, x0, _, e, y0 = meta.transform
        assert part_meta.transform[2] == x0 + c * a and part_meta.transform[5] == y0 + r * e


def test_window_decode_reads_only_touched_tiles(crop, tiny_store, monkeypatch):
    array, meta = crop
    data = compress_array(array, meta, codec_for_model("tiny-vq", store=tiny_store), tile_size=32)
    read = []
    original = EozReader.read_tile
    monkeypatch.setattr(EozReader, "read_tile", lambda self, i: read.append(i) or original(self, i))
    decompress_array(data, window=(40, 40, 20, 20), store=tiny_store)
    assert read == [6]  # 5 tile columns; (40, 40) lies in tile row 1, column 1


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (121, 999), (33, 2)])
def test_odd_sizes(shape, tiny_store):
    rng = np.random.default_rng(1)
    array = rng.integers(500, 3000, size=(4, *shape), dtype=np.uint16)
    data = compress_array(array, _meta(array), codec_for_model("tiny-vq", store=tiny_store), tile_size=256)
    back, meta = decompress_array(data, store=tiny_store)
    assert back.shape == array.shape and back.dtype == np.uint16
    assert (meta.height, meta.width) == shape


def test_nodata_pixels_come_back_exactly_and_only_there(crop, tiny_store):
    array, _ = crop
    array = array.copy()
    array[:, :20, :30] = 0
    array[2, 50:60, 70:75] = 0
    data = compress_array(array, _meta(array, nodata=0), codec_for_model("tiny-vq", store=tiny_store), 64)
    back, meta = decompress_array(data, store=tiny_store)
    assert meta.nodata == 0
    np.testing.assert_array_equal(back == 0, array == 0)


def test_lossless_jpeg2000_is_bit_exact_with_nodata(crop):
    array, _ = crop
    array = array.copy()
    array[:, 5:9, 5:9] = 0
    data = compress_array(array, _meta(array, nodata=0), JPEG2000Codec(lossless=True), tile_size=64)
    back, _ = decompress_array(data)
    np.testing.assert_array_equal(back, array)


def test_float_nan_nodata_round_trip_with_jpeg2000_refused_and_nan_without_nodata_refused():
    array = np.ones((2, 8, 8), np.float32)
    array[0, 0, 0] = np.nan
    meta = _meta(array)
    meta.band_names = ["VV", "VH"]
    with pytest.raises(InputError, match="NaN"):
        compress_array(array, meta, JPEG2000Codec(lossless=True))


def test_same_input_same_bytes(crop, tiny_store):
    array, meta = crop
    codec = codec_for_model("tiny-vq", store=tiny_store)
    assert compress_array(array, meta, codec, 64) == compress_array(array, meta, codec, 64)


def test_decoding_with_other_weights_is_refused_naming_both(crop, tiny_store, tmp_path):
    array, meta = crop
    data = compress_array(array, meta, codec_for_model("tiny-vq", store=tiny_store), 64)
    other = ModelStore(tmp_path / "other_store")
    publish_tiny_model(other, seed=7)
    with pytest.raises(ModelMismatchError, match="tiny-vq version 1") as err:
        decompress_array(data, store=other)
    message = str(err.value)
    assert tiny_store.get("tiny-vq").weights_sha256[:12] in message
    assert other.get("tiny-vq").weights_sha256[:12] in message
    with pytest.raises(UnknownModelError, match="available"):
        decompress_array(data, store=ModelStore(tmp_path / "empty"))


def test_tampered_weights_file_is_refused(tiny_store):
    entry = tiny_store.get("tiny-vq")
    path = entry.path / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelMismatchError, match="damaged"):
        entry.load_weights()


def test_wrong_band_count_is_refused(tiny_store):
    array = np.zeros((3, 16, 16), np.uint16)
    with pytest.raises(InputError, match="expects 4 bands"):
        compress_array(array, _meta(array), codec_for_model("tiny-vq", store=tiny_store))


def test_corrupt_tile_is_reported_by_index(crop, tiny_store):
    array, meta = crop
    data = bytearray(compress_array(array, meta, codec_for_model("tiny-vq", store=tiny_store), 64))
    with EozReader(bytes(data)) as reader:
        entry = reader.entries[4]
    data[entry.offset + entry.length // 2] ^= 0x55
    with pytest.raises(CorruptTileError, match="tile 4") as err:
        decompress_array(bytes(data), store=tiny_store)
    assert err.value.index == 4
    # tiles the damage does not touch still decode
    decompress_array(bytes(data), window=(0, 0, 64, 64), store=tiny_store)


def test_truncated_file_is_a_container_error(crop):
    array, meta = crop
    data = compress_array(array, meta, JPEG2000Codec(quality=60), 64)
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(ContainerError):
            decompress_array(data[:cut])


def test_compress_file_leaves_no_partial_output(tmp_path, tiny_store):
    with pytest.raises(InputError):
        compress_file(tmp_path / "missing.tif", tmp_path / "out.eoz",
                      codec_for_model("tiny-vq", store=tiny_store))
    (tmp_path / "bad.tif").write_text("not a tiff")
    with pytest.raises(InputError, match="GeoTIFF"):
        compress_file(tmp_path / "bad.tif", tmp_path / "out.eoz", JPEG2000Codec(lossless=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tif", "model_store"]


def test_read_meta_matches_header(tmp_path, shared_data, tiny_store):
    meta = read_meta(shared_data / S2_10M)
    assert meta.band_names == BANDS


def test_tiles_batched_through_the_network_code_as_they_do_one_by_one(crop, tiny_store, monkeypatch):
    """GPU workers hand several tiles to one network call; edge tiles of other shapes go apart."""
    import copy

    from eoz.codecs import VQVAECodec

    array, meta = crop
    single = codec_for_model("tiny-vq", store=tiny_store)
    expected = compress_array(array, meta, single, tile_size=32)
    batched = copy.copy(single)
    batched.batch_tiles = 3
    calls, index_maps = [], VQVAECodec.index_maps
    monkeypatch.setattr(VQVAECodec, "index_maps", lambda self, tiles: calls.append(len(tiles)) or index_maps(self, tiles))
    assert compress_array(array, meta, batched, tile_size=32) == expected
    assert sum(calls) == 25 and max(calls) == 3     # 5 x 5 tiles, some of them three to a call


def test_files_stream_through_tile_sized_windows_both_ways(tmp_path, shared_data, tiny_store, monkeypatch):
    """A raster many tiles large is read and written only by windows of one coded tile (with its
    overlap): memory follows the tile size, not the scene. A window decode of the file equals
    that window of the full decode."""
    from eoz.raster import RasterReader, RasterWriter, write_raster

    src = tmp_path / "in.tif"
    array, meta = read_raster(shared_data / S2_10M, window=(0, 0, 300, 230))
    write_raster(src, array, meta)
    reads, writes = [], []
    read, write = RasterReader.read, RasterWriter.write
    monkeypatch.setattr(RasterReader, "read", lambda self, window=None: reads.append(window) or read(self, window))
    monkeypatch.setattr(RasterWriter, "write", lambda self, a, *args: writes.append(a.shape) or write(self, a, *args))
    codec = codec_for_model("tiny-vq", store=tiny_store)
    header = compress_file(src, tmp_path / "x.eoz", codec, tile_size=64)
    assert header.tile_count == 5 * 4 and len(reads) == header.tile_count
    assert None not in reads and max(w * h for _, _, w, h in reads) <= (64 + 2 * codec.overlap) ** 2
    decompress_file(tmp_path / "x.eoz", tmp_path / "out.tif", store=tiny_store)
    assert len(writes) == header.tile_count and max(h * w for _, h, w in writes) <= 64 * 64
    full, _ = read_raster(tmp_path / "out.tif")
    decompress_file(tmp_path / "x.eoz", tmp_path / "part.tif", window=(70, 50, 150, 100), store=tiny_store)
    np.testing.assert_array_equal(read_raster(tmp_path / "part.tif")[0], full[:, 50:150, 70:220])
