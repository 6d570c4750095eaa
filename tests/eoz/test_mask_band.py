"""A raster's own mask band (GDAL's per-dataset mask, as COGs made with GDAL often carry instead
of a nodata value): read, coded beside the pixels, written back, checked by verify, and refused
where a file's tiles and header disagree about it."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

import eoz
from eoz import metrics
from eoz.codecs import JPEG2000Codec, codec_for_model
from eoz.container import ContainerError
from eoz.errors import InputError
from eoz.evaluation import measure_file
from eoz.raster import PER_DATASET, RasterReader, RasterWriter, read_meta, read_raster
from eoz.scene import compress_array, compress_file, decompress_array, decompress_file, encode_scene
from eoz.verify import verify
from tests.eoz.test_decode_limits import repack
from tests.eoz.test_raster import S2


def _edge(height: int, width: int, cut: int = 60) -> np.ndarray:
    """Valid pixels of a scene edge: all but a corner triangle and a notch."""
    rows, cols = np.mgrid[:height, :width]
    valid = rows + cols >= cut
    valid[height // 2:height // 2 + 3, width // 3:width // 3 + 40] = False
    return valid


@pytest.fixture()
def masked(tmp_path):
    """A 200 x 300 crop of the S2 scene with a mask band: (path, pixels, valid)."""
    array, meta = read_raster(S2, window=(0, 0, 300, 200))
    meta.metadata = {"mask": PER_DATASET}
    valid = _edge(200, 300)
    path = tmp_path / "masked.tif"
    with RasterWriter(path, meta) as writer:
        writer.write(array, 0, 0)
        writer.write_valid(valid, 0, 0)
    return path, array, valid


def _valid_of(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        assert ds.mask_flag_enums[0] == [rasterio.enums.MaskFlags.per_dataset]
        return ds.dataset_mask() > 0


@pytest.mark.parametrize("cog", [False, True])
def test_the_mask_band_is_read_and_written_window_by_window(masked, tmp_path, cog):
    path, array, valid = masked
    assert read_meta(path).metadata == {"mask": PER_DATASET} and read_meta(S2).metadata == {}
    with RasterReader(path) as reader:
        np.testing.assert_array_equal(reader.read_valid((40, 10, 100, 120)), valid[10:130, 40:140])
        meta = reader.meta
    out = tmp_path / "out.tif"
    with RasterWriter(out, meta, cog=cog) as writer:
        for col in (0, 150):
            writer.write(array[:, :, col:col + 150], col, 0)
            writer.write_valid(valid[:, col:col + 150], col, 0)
    np.testing.assert_array_equal(_valid_of(out), valid)


def test_a_mask_band_is_written_only_for_a_raster_that_has_one(tmp_path):
    array, meta = read_raster(S2, window=(0, 0, 30, 20))
    with pytest.raises(InputError, match="no mask band"), RasterWriter(tmp_path / "out.tif", meta) as writer:
        writer.write_valid(np.ones((20, 30), bool), 0, 0)


@pytest.mark.parametrize("model, options", [("predictive", {"lossless": True}), ("predictive", {"max_error": 3}),
                                            ("jpeg2000", {"psnr": 45})])
def test_the_mask_band_comes_back_whole_and_by_window_whatever_the_codec(masked, tmp_path, model, options):
    """Lossless or not, the mask comes back exactly (it says which pixels are valid, whatever
    their error); a window's, from the tiles it touches; eoz.open reads it without decoding."""
    path, array, valid = masked
    eoz.compress(path, tmp_path / "m.eoz", model=model, tile_size=128, **options)
    for cog in (False, True):
        decompress_file(tmp_path / "m.eoz", tmp_path / "back.tif", cog=cog)
        np.testing.assert_array_equal(_valid_of(tmp_path / "back.tif"), valid)
    decompress_file(tmp_path / "m.eoz", tmp_path / "part.tif", window=(100, 90, 170, 70))
    np.testing.assert_array_equal(_valid_of(tmp_path / "part.tif"), valid[90:160, 100:270])
    with eoz.open(tmp_path / "m.eoz") as ds:
        np.testing.assert_array_equal(ds.dataset_mask(), np.where(valid, 255, 0))
        np.testing.assert_array_equal(ds.dataset_mask((100, 90, 170, 70)), np.where(valid[90:160, 100:270], 255, 0))
    if options.get("lossless"):
        np.testing.assert_array_equal(read_raster(tmp_path / "back.tif")[0], array)   # masked pixels too


@pytest.mark.parametrize("model, options", [("jpeg2000", {"psnr": 45}), ("wavelet-hyperprior", {"psnr": 45})])
def test_a_quality_target_spends_nothing_on_masked_pixels_and_holds_on_the_rest(tmp_path, model, options):
    """Pixels a mask band calls invalid are nodata to a codec with a quality target: noise under
    the mask costs no bits, and the target holds on the valid pixels (as the service measures)."""
    array, meta = read_raster(S2, window=(0, 0, 256, 192))
    valid = np.ones((192, 256), bool)
    valid[:, :96] = False
    array[:, ~valid] = np.random.default_rng(5).integers(0, 10000, (4, int((~valid).sum())))
    sizes = {}
    for name, metadata in (("masked", {"mask": PER_DATASET}), ("plain", {})):
        meta.metadata = metadata
        with RasterWriter(tmp_path / f"{name}.tif", meta) as writer:
            writer.write(array, 0, 0)
            if metadata:
                writer.write_valid(valid, 0, 0)
        sizes[name] = eoz.compress(tmp_path / f"{name}.tif", tmp_path / f"{name}.eoz", model=model, tile_size=128,
                                   **options).bytes
    assert sizes["masked"] < 0.75 * sizes["plain"]
    decoded, _ = decompress_array((tmp_path / "masked.eoz").read_bytes())
    assert metrics.psnr(array[:, valid], decoded[:, valid], 10000.0) >= 45
    assert measure_file(tmp_path / "masked.eoz", tmp_path / "masked.tif", 10000.0)["psnr"] >= 45


def test_nan_under_the_mask_band_is_no_more_than_a_value_to_a_quality_target(tmp_path):
    """A float raster whose invalid pixels hold NaN, said by its mask band alone (no nodata
    value), codes to a quality target like any other; NaN where the mask says valid is refused."""
    array, meta = read_raster(S2, window=(0, 0, 256, 192))
    array = (array / 10000).astype(np.float32)   # reflectance
    valid = _edge(192, 256)
    meta.dtype, meta.metadata = "float32", {"mask": PER_DATASET}
    for name, holes in (("under", ~valid), ("valid", valid & ~np.roll(valid, 1, axis=1))):
        with RasterWriter(tmp_path / f"{name}.tif", meta) as writer:
            writer.write(np.where(holes, np.float32(np.nan), array), 0, 0)
            writer.write_valid(valid, 0, 0)
    eoz.compress(tmp_path / "under.tif", tmp_path / "m.eoz", model="wavelet-hyperprior", psnr=45, peak=1.0,
                 tile_size=128)
    decoded, _ = decompress_array((tmp_path / "m.eoz").read_bytes())
    assert metrics.psnr(array[:, valid], decoded[:, valid], 1.0) >= 45
    with pytest.raises(InputError, match="NaN pixels but declares no nodata"):
        eoz.compress(tmp_path / "valid.tif", tmp_path / "v.eoz", model="wavelet-hyperprior", psnr=45, peak=1.0,
                     tile_size=128)


def test_a_bound_holds_under_the_mask_too(masked, tmp_path):
    """Lossless and bounded files keep the pixels under a mask band (an archive's choice, not the codec's)."""
    path, array, valid = masked
    eoz.compress(path, tmp_path / "m.eoz", model="predictive", max_error=3, tile_size=128)
    decoded, _ = decompress_array((tmp_path / "m.eoz").read_bytes())
    assert np.abs(decoded.astype(int) - array)[:, ~valid].max() <= 3 and verify(tmp_path / "m.eoz", path)["verified"]


def test_dataset_mask_of_a_file_without_a_mask_band_is_where_any_band_has_data(tmp_path):
    array, meta = read_raster(S2, window=(0, 0, 64, 48))
    array[:, :10] = 0
    array[0, 10:20] = 0   # one band's nodata alone: the pixel stays valid, as GDAL's
    meta.nodata = 0
    data = compress_array(array, meta, codec_for_model("predictive", lossless=True))
    (tmp_path / "n.eoz").write_bytes(data)
    with eoz.open(tmp_path / "n.eoz") as ds:
        expected = np.full((48, 64), 255, np.uint8)
        expected[:10] = 0
        np.testing.assert_array_equal(ds.dataset_mask(), expected)


def test_verify_checks_the_mask_band(masked, tmp_path):
    path, array, valid = masked
    compress_file(path, tmp_path / "m.eoz", codec_for_model("predictive", lossless=True))
    assert verify(tmp_path / "m.eoz", path)["verified"]
    _, meta = read_raster(path)
    other = tmp_path / "other.tif"
    with RasterWriter(other, meta) as writer:   # the same pixels, one more masked
        writer.write(array, 0, 0)
        writer.write_valid(valid & ~np.eye(200, 300, 150, bool), 0, 0)
    report = verify(tmp_path / "m.eoz", other)
    assert not report["verified"] and report["exact"] and report["description_differs"] == ["mask pixels"]
    meta.metadata = {}
    plain = tmp_path / "plain.tif"
    with RasterWriter(plain, meta) as writer:
        writer.write(array, 0, 0)
    assert verify(tmp_path / "m.eoz", plain)["description_differs"] == ["mask"]


def test_a_raster_with_a_mask_band_needs_its_reader(masked, tmp_path):
    path, array, _ = masked
    with pytest.raises(InputError, match="mask band: give read_valid"), open(tmp_path / "x.eoz", "wb") as out:
        encode_scene(lambda c, r, w, h: array[:, r:r + h, c:c + w], read_meta(path), JPEG2000Codec(lossless=True), out)


def test_tiles_and_header_that_disagree_about_the_mask_band_are_refused(masked, tmp_path):
    """Header and tiles must agree: a reader would otherwise take mask bytes for the codec's, or
    write a mask band a file does not have. Builds before session 23 stop at the tile's flag."""
    path, _, _ = masked
    compress_file(path, tmp_path / "m.eoz", JPEG2000Codec(lossless=True), tile_size=128)
    data = (tmp_path / "m.eoz").read_bytes()
    assert decompress_array(data)[1].metadata == {"mask": PER_DATASET}
    with pytest.raises(ContainerError, match="tile 0 carries a mask of valid pixels, and the file declares none"):
        decompress_array(repack(data, metadata={}))
    array, meta = read_raster(path, window=(0, 0, 100, 100))
    meta.metadata = {}
    unmasked = compress_array(array, meta, JPEG2000Codec(lossless=True))
    with pytest.raises(ContainerError, match="tile 0 lacks a mask of valid pixels, and the file declares one"):
        decompress_array(repack(unmasked, metadata={"mask": PER_DATASET}))
    with pytest.raises(ContainerError, match="tile 0's mask of valid pixels"):
        decompress_array(repack(data, lambda tile: tile[:1] + (1 << 20).to_bytes(4, "little") + tile[5:]))
    with pytest.raises(ContainerError, match="tile 0 ends inside its mask of valid pixels's length"):
        decompress_array(repack(data, lambda tile: tile[:3]))


def test_eval_and_compress_through_the_command_line_keep_the_mask_band(masked, tmp_path, capsys):
    """`eoz eval` codes the mask band too (its bytes count), as `eoz compress` does."""
    from tests.eoz.test_cli import run

    path, _, valid = masked
    code, result, _ = run(capsys, "eval", path, "--model", "predictive", "--lossless", "--tile-size", 128)
    assert code == 0 and result["max_error_per_band"] == [0, 0, 0, 0]
    code, compressed, _ = run(capsys, "compress", path, tmp_path / "m.eoz", "--model", "predictive", "--lossless",
                              "--tile-size", 128)
    assert code == 0 and result["bytes"] == compressed["bytes"]
    with eoz.open(tmp_path / "m.eoz") as ds:
        np.testing.assert_array_equal(ds.dataset_mask() > 0, valid)
