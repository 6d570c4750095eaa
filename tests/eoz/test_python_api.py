"""eoz.compress, eoz.decompress and eoz.open on the bundled samples (no ../shared needed)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.windows import Window

import eoz
from eoz.container import EozReader
from eoz.raster import read_raster, write_raster
from eoz.resolve import OPTIONS
from eoz.verify import verify

SAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"
S2 = SAMPLES / "s2_10m_B02-B03-B04-B08.tif"      # 4 x 256 x 256 uint16
HSI = SAMPLES / "enmap_hsi_224band.tif"           # 224 x 32 x 32 int16, nodata -32768
S1 = SAMPLES / "s1_db_VV-VH.tif"                  # 2 x 120 x 120 float32 dB


@pytest.fixture(scope="module")
def s2_tiled(tmp_path_factory) -> Path:
    """The S2 sample coded lossless in four 128 px tiles."""
    path = tmp_path_factory.mktemp("api") / "s2.eoz"
    eoz.compress(S2, path, model="predictive", lossless=True, tile_size=128)
    return path


def test_import_loads_neither_torch_nor_gdal():
    code = "import sys, eoz; print(sorted(m for m in ('torch', 'rasterio', 'numba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_compress_keywords_are_the_resolver_options():
    """Every option the CLI and the service take is a keyword of eoz.compress (lambda as lmbda)."""
    keywords = set(inspect.signature(eoz.compress).parameters) - {"src", "dst", "model", "version",
                                                                   "tile_size", "overlap", "threads"}
    assert keywords == {"lmbda" if o == "lambda" else o for o in OPTIONS}


def test_auto_lossless_round_trip_keeps_pixels_and_georeferencing(tmp_path):
    result = eoz.compress(HSI, tmp_path / "hsi.eoz", lossless=True)
    assert (result.model_id, result.lossless, result.path) == ("predictive", True, tmp_path / "hsi.eoz")
    assert "predictive" in result.picked
    assert result.bytes == (tmp_path / "hsi.eoz").stat().st_size and result.ratio > 1.2
    original, _ = read_raster(HSI)
    with rasterio.open(HSI) as src, eoz.open(tmp_path / "hsi.eoz") as ds:
        expected = {k: src.profile[k] for k in ("dtype", "count", "width", "height", "crs", "transform", "nodata")}
        assert ds.profile == expected
        assert ds.descriptions == src.descriptions
        assert ds.header.model_id == "predictive"
        np.testing.assert_array_equal(ds.read(), original)


@pytest.mark.parametrize("options", [dict(lossless=True), dict(model="wavelet-hyperprior", psnr=45)])
def test_a_products_gdal_metadata_comes_back_with_its_pixels(tmp_path, options):
    """Tags, band tags, scales, offsets and units: through eoz.open, and in the GeoTIFF written
    back, lossless or not (they say what the values mean, whatever their error)."""
    array, meta = read_raster(S2)
    meta.metadata = {"tags": {"ACQUISITION_TIME": "2017-06-17T11:33:21Z"}, "band_tags": [{}, {}, {"W": "665"}, {}],
                     "domains": {"IMAGERY": {"CLOUDCOVER": "3.5"}}, "band_domains": [{}, {"S": {"W": "560"}}, {}, {}],
                     "scales": [1e-4] * 4, "offsets": [-0.1] * 4, "units": ["reflectance", "", "", ""]}
    write_raster(tmp_path / "tagged.tif", array, meta)
    eoz.compress(tmp_path / "tagged.tif", tmp_path / "tagged.eoz", **options)
    with eoz.open(tmp_path / "tagged.eoz") as ds, rasterio.open(tmp_path / "tagged.tif") as src:
        assert ds.tags() == {"ACQUISITION_TIME": "2017-06-17T11:33:21Z"} and ds.tags(3) == {"W": "665"}
        assert ds.tags(ns="IMAGERY") == src.tags(ns="IMAGERY") == {"CLOUDCOVER": "3.5"}
        assert ds.tags(2, ns="S") == src.tags(2, ns="S") == {"W": "560"} and ds.tags(1, ns="S") == {}
        assert ds.scales == (1e-4,) * 4 and ds.offsets == (-0.1,) * 4 and ds.units == ("reflectance", None, None, None)
        with pytest.raises(IndexError, match="band index 5"):
            ds.tags(5)
    eoz.decompress(tmp_path / "tagged.eoz", tmp_path / "back.tif")
    with rasterio.open(tmp_path / "back.tif") as back:
        assert back.tags()["ACQUISITION_TIME"] == "2017-06-17T11:33:21Z" and back.tags(3) == {"W": "665"}
        assert back.tags(ns="IMAGERY") == {"CLOUDCOVER": "3.5"} and back.tags(2, ns="S") == {"W": "560"}
        assert back.scales == (1e-4,) * 4 and back.offsets == (-0.1,) * 4


def test_a_decoded_window_of_a_gcp_georeferenced_product_keeps_its_place(tmp_path):
    """Sentinel-1 GRD measurements are georeferenced by GCPs, not a geotransform: a window's
    GCPs move by its offset, so each pixel keeps its ground position."""
    array, meta = read_raster(S2)
    meta.crs, meta.transform = None, None
    meta.metadata = {"gcps": [[0.0, 0.0, 10.0, 45.0, 0.0], [200.0, 100.0, 10.1, 44.8, 0.0]],
                     "gcp_crs": rasterio.crs.CRS.from_epsg(4326).to_wkt()}
    write_raster(tmp_path / "grd.tif", array, meta)
    eoz.compress(tmp_path / "grd.tif", tmp_path / "grd.eoz", lossless=True, tile_size=128)
    eoz.decompress(tmp_path / "grd.eoz", tmp_path / "part.tif", window=(32, 16, 64, 48))
    with rasterio.open(tmp_path / "part.tif") as part:
        gcps, crs = part.gcps
        assert [(g.row, g.col, g.x, g.y) for g in gcps] == [(-16, -32, 10.0, 45.0), (184, 68, 10.1, 44.8)]
        assert crs == rasterio.crs.CRS.from_epsg(4326)
        np.testing.assert_array_equal(part.read(), array[:, 16:64, 32:96])


def test_a_file_without_gdal_metadata_reads_as_rasterio_defaults(s2_tiled):
    with eoz.open(s2_tiled) as ds, rasterio.open(S2) as src:
        assert (ds.tags(), ds.tags(1), ds.scales, ds.offsets, ds.units, ds.colorinterp) == \
            ({}, {}, src.scales, src.offsets, src.units, src.colorinterp) == \
            ({}, {}, (1.0,) * 4, (0.0,) * 4, (None,) * 4, (ColorInterp.gray,) + (ColorInterp.undefined,) * 3)
        with pytest.raises(ValueError, match="band 1 has no colour map"):
            ds.colormap(1)


def test_a_class_maps_colours_come_back(tmp_path):
    """A class map's colour table and palette interpretation, through eoz.open and the GeoTIFF
    written back, as rasterio gives them."""
    array, meta = read_raster(S2, window=(0, 0, 96, 64))
    classes = (array[:1] // 700).clip(0, 5).astype(np.uint8)
    meta.count, meta.dtype, meta.band_names = 1, "uint8", ["class"]
    meta.metadata = {"colorinterp": ["palette"], "colormap": [[1, 0, 100, 0, 255], [2, 250, 230, 160, 255]]}
    write_raster(tmp_path / "classes.tif", classes, meta)
    eoz.compress(tmp_path / "classes.tif", tmp_path / "classes.eoz", lossless=True)
    eoz.decompress(tmp_path / "classes.eoz", tmp_path / "back.tif")
    with rasterio.open(tmp_path / "classes.tif") as src, eoz.open(tmp_path / "classes.eoz") as ds, \
            rasterio.open(tmp_path / "back.tif") as back:
        assert ds.colorinterp == src.colorinterp == back.colorinterp == (ColorInterp.palette,)
        assert ds.colormap(1) == src.colormap(1) == back.colormap(1)
        assert ds.colormap(1)[2] == (250, 230, 160, 255) and len(ds.colormap(1)) == 256
        np.testing.assert_array_equal(back.read(), classes)


@pytest.mark.parametrize("dtype, nbits, bound", [("uint16", 12, 2), ("float32", 16, 0.01)])
def test_a_lossless_file_keeps_narrow_storage_and_a_bounded_one_does_not(tmp_path, dtype, nbits, bound):
    """12-bit DN or half floats decode into the same narrow storage when exact; a bounded file's
    samples need not fit it (a DN of 4095 + 2), so it decodes to the full dtype, and verify holds."""
    from tests.eoz.test_raster import _narrow

    array = _narrow(tmp_path / "narrow.tif", dtype, nbits)
    for name, options in (("exact", dict(lossless=True)), ("bounded", dict(max_error=bound))):
        eoz.compress(tmp_path / "narrow.tif", tmp_path / f"{name}.eoz", model="predictive", **options)
        eoz.decompress(tmp_path / f"{name}.eoz", tmp_path / f"{name}.tif")
        with rasterio.open(tmp_path / f"{name}.tif") as back, eoz.open(tmp_path / f"{name}.eoz") as ds:
            assert back.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == (str(nbits) if name == "exact" else None)
            assert ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == back.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
            assert np.abs(back.read().astype(np.float64) - array).max() <= (0 if name == "exact" else bound)
        assert verify(tmp_path / f"{name}.eoz", tmp_path / "narrow.tif")["verified"]


def test_bounded_error_on_float_db(tmp_path):
    result = eoz.compress(S1, tmp_path / "s1.eoz", model="predictive", max_error=0.05)
    assert result.picked is None and not result.lossless
    original, _ = read_raster(S1)
    with eoz.open(result.path) as ds:
        assert np.abs(ds.read() - original).max() <= 0.05


def test_fixed_quality_target_holds(tmp_path):
    result = eoz.compress(S2, tmp_path / "w.eoz", psnr=45)
    assert result.model_id == "wavelet-hyperprior"
    original, _ = read_raster(S2)
    with eoz.open(result.path) as ds:
        mse = np.mean((ds.read().astype(np.float64) - original) ** 2)
    assert 10 * np.log10(10000.0 ** 2 / mse) >= 45


def test_an_option_the_model_cannot_honour_is_refused(tmp_path):
    with pytest.raises(eoz.InputError, match="cannot honour psnr"):
        eoz.compress(S2, tmp_path / "vq.eoz", model="vqvae-fpn-s2-10m", psnr=45)
    assert not (tmp_path / "vq.eoz").exists()


def test_read_window_as_tuple_or_rasterio_window(s2_tiled):
    original, _ = read_raster(S2)
    with eoz.open(s2_tiled) as ds:
        part = ds.read(window=(100, 20, 60, 150))
        np.testing.assert_array_equal(part, original[:, 20:170, 100:160])
        np.testing.assert_array_equal(ds.read(window=Window(100, 20, 60, 150)), part)


@pytest.mark.parametrize("window", [(0.5, 0, 10, 10), (0, 0, 10), Window(200, 0, 100, 10), (0, 0, 0, 5)])
def test_a_bad_window_is_refused(s2_tiled, window):
    with eoz.open(s2_tiled) as ds, pytest.raises(eoz.InputError, match="window"):
        ds.read(window=window)


def test_read_decodes_only_the_tiles_the_window_touches(s2_tiled, tmp_path):
    """A damaged last tile: a window in the first tile still reads, the whole raster does not."""
    with EozReader(s2_tiled) as reader:
        last = reader.entries[-1]
    data = bytearray(s2_tiled.read_bytes())
    data[last.offset + last.length // 2] ^= 0xFF
    damaged = tmp_path / "damaged.eoz"
    damaged.write_bytes(bytes(data))
    original, _ = read_raster(S2)
    with eoz.open(damaged) as ds:
        np.testing.assert_array_equal(ds.read(window=(0, 0, 128, 128)), original[:, :128, :128])
        with pytest.raises(eoz.CorruptTileError, match="tile 3"):
            ds.read()


def test_decompress_window_to_cog_keeps_the_window_georeferenced(s2_tiled, tmp_path):
    written = eoz.decompress(s2_tiled, tmp_path / "part.tif", window=(64, 32, 128, 96), cog=True)
    with rasterio.open(S2) as src, rasterio.open(tmp_path / "part.tif") as out:
        assert out.transform == src.window_transform(Window(64, 32, 128, 96))
        assert (out.width, out.height, out.crs) == (128, 96, src.crs)
        assert out.descriptions == src.descriptions
        assert written == {k: out.profile[k] for k in written}
        np.testing.assert_array_equal(out.read(), src.read(window=Window(64, 32, 128, 96)))


def test_a_closed_dataset_refuses_to_read(s2_tiled):
    with eoz.open(s2_tiled) as ds:
        assert not ds.closed
    assert ds.closed
    with pytest.raises(ValueError, match="closed"):
        ds.read()


def test_open_refuses_a_file_that_is_not_eoz():
    with pytest.raises(eoz.ContainerError):
        eoz.open(S2)


def test_the_readme_example_runs(monkeypatch, tmp_path, capsys):
    """The README's Python API block, as a user pastes it at the repository root."""
    repo = SAMPLES.parents[1]
    text = (repo / "README.md").read_text()
    block = text[text.index("## Python API\n"):].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(repo)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    namespace: dict = {}
    exec(compile(block, "README.md: Python API", "exec"), namespace)
    assert namespace["corner"].shape == (4, 128, 128)
    assert namespace["result"].model_id == "wavelet-hyperprior"
    assert "wavelet-hyperprior" in capsys.readouterr().out
    assert {p.name for p in next(tmp_path.iterdir()).iterdir()} == {"s2.eoz", "archive.eoz", "part.tif"}
