"""The spectral-partition codec on real EnMAP bands: round trip, nodata bands, targets, errors."""

from __future__ import annotations

import json
import struct
from dataclasses import replace

import numpy as np
import pytest
import rasterio

from eoz import cli, metrics
from eoz.codecs import codec_for_model
from eoz.container import EozReader
from eoz.errors import ContainerError, InputError, ModelMismatchError
from eoz.quality import QualityTarget
from eoz.raster import read_raster
from eoz.registry import ModelStore
from eoz.scene import compress_array, decompress_array, decompress_file
from tests.conftest import publish_tiny_partition

TILE = "enmap_potsdam_hsi_tiles/enmap_potsdam_tile_96_96.tif"
BANDS = slice(120, 132)          # bands 130-132 (1-based) are EnMAP's all-nodata water-vapour bands
INTERVALS = [(0, 6), (6, 12)]


@pytest.fixture()
def cube(shared_data):
    array, meta = read_raster(shared_data / TILE)
    names = meta.band_names[BANDS]
    return array[BANDS], replace(meta, count=12, band_names=names)


@pytest.fixture()
def store(tmp_path, cube) -> ModelStore:
    store = ModelStore(tmp_path / "model_store")
    publish_tiny_partition(store, cube[1].band_names, INTERVALS)
    return store


def _codec(store, predict_bands=True, **target):
    return codec_for_model("tiny-hsi", store=store, target=QualityTarget(**target), predict_bands=predict_bands)


def _band_psnrs(array, out, nodata):
    return [metrics.psnr(a.astype(np.float64), o.astype(np.float64), 10000.0)
            for a, o in zip(array, out) if (a != nodata).any()]


@pytest.mark.parametrize("predict_bands", [True, False])
def test_every_coded_band_meets_the_target_and_nodata_bands_come_back(cube, store, predict_bands):
    array, meta = cube
    codec = _codec(store, predict_bands, psnr=45.0)
    data = compress_array(array, meta, codec)
    assert data == compress_array(array, meta, codec)
    out, out_meta = decompress_array(data, store=store)
    assert out.dtype == np.int16 and out.shape == array.shape
    assert out_meta.band_names == meta.band_names and out_meta.crs == meta.crs
    bad = (array == meta.nodata).all(axis=(1, 2))
    assert bad.sum() == 3 and (out[bad] == meta.nodata).all()
    assert min(_band_psnrs(array, out, meta.nodata)) >= 45.0
    with EozReader(data) as reader:
        assert reader.header.quality["band_prediction"] is predict_bands


def test_bands_are_predicted_only_within_an_interval_after_a_coded_band(cube, store):
    array, meta = cube
    codec = _codec(store, psnr=40.0)
    payload = codec.encode_tile(array.astype(np.int16)[:, :32, :32], array[:, :32, :32] != meta.nodata)
    modes, pos = [], 1 + payload[0]
    for _ in range(12):
        modes.append(payload[pos])
        pos += {0: 1, 1: 1, 2: 9}[modes[-1]]
        if modes[-1]:
            pos += 4 + struct.unpack_from("<I", payload, pos)[0]
    # band 6 opens the second interval; bands 9-11 are nodata, so band 12 follows nothing
    assert modes == [1, 2, 2, 2, 2, 2, 1, 2, 2, 0, 0, 0]


def test_band_prediction_spends_fewer_bits_on_correlated_bands(shared_data, tmp_path):
    """Neighbouring EnMAP bands correlate at 0.99+: even untrained models code the residual cheaper."""
    array, meta = read_raster(shared_data / TILE)
    array, names = array[60:72], meta.band_names[60:72]
    meta = replace(meta, count=12, band_names=names)
    store = ModelStore(tmp_path / "store")
    publish_tiny_partition(store, names, [(0, 12)])
    sizes = [len(compress_array(array, meta, _codec(store, p, psnr=45.0))) for p in (False, True)]
    assert sizes[1] < 0.8 * sizes[0]


def test_truncated_or_garbled_tiles_give_clear_errors(cube, store):
    array, meta = cube
    codec = _codec(store, psnr=40.0)
    tile = array.astype(np.int16)[:, :32, :32]
    payload = codec.encode_tile(tile, tile != meta.nodata)
    for bad, message in ((payload[:-3], "truncated|ends|not whole words"),
                         (payload[:20], "ends inside band"),
                         (payload + b"\0", "after its last band"),
                         (payload[:4] + b"\x07" + payload[5:], "unknown coding mode")):
        with pytest.raises(ContainerError, match=message):
            codec.decode_tile(bad, 12, 32, 32)


def test_a_target_is_required_and_the_band_count_is_checked(cube, store):
    array, meta = cube
    with pytest.raises(InputError, match="needs a target"):
        compress_array(array, meta, codec_for_model("tiny-hsi", store=store))
    with pytest.raises(InputError, match="12 bands"):
        compress_array(array[:4], replace(meta, count=4, band_names=meta.band_names[:4]), _codec(store, psnr=40.0))


def test_decoding_with_other_weights_is_refused(tmp_path, cube, store):
    array, meta = cube
    data = compress_array(array, meta, _codec(store, lmbda=1024.0))
    other = ModelStore(tmp_path / "other")
    publish_tiny_partition(other, meta.band_names, [(0, 12)])
    with pytest.raises(ModelMismatchError, match="refusing"):
        decompress_array(data, store=other)


def test_cli_picks_the_partition_model_for_an_enmap_raster(cube, store, tmp_path, monkeypatch, capsys):
    array, meta = cube
    src = tmp_path / "enmap12.tif"
    profile = {"driver": "GTiff", "width": meta.width, "height": meta.height, "count": 12, "dtype": "int16",
               "crs": meta.crs, "transform": rasterio.Affine(*meta.transform[:6]), "nodata": meta.nodata}
    with rasterio.open(src, "w", **profile) as ds:
        ds.write(array)
        ds.descriptions = tuple(meta.band_names)
    monkeypatch.setenv("EOZ_MODEL_STORE", str(store.root))
    assert cli.main(["compress", str(src), str(tmp_path / "a.eoz"), "--model", "auto", "--psnr", "42",
                     "--block", "16"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model_id"] == "tiny-hsi" and "tiny-hsi" in result["picked"]
    decompress_file(tmp_path / "a.eoz", tmp_path / "a.tif")
    with rasterio.open(tmp_path / "a.tif") as ds:
        assert ds.count == 12 and ds.nodata == meta.nodata and ds.crs == meta.crs


def test_cli_takes_the_peak_from_the_model_for_float_sar_in_db(shared_data, tmp_path, monkeypatch, capsys):
    """A float32 dB raster keeps its dtype, and --psnr is at the model's stated peak (50 dB), not 10000."""
    src = shared_data / "bigearthnet_s1_tiny/S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_39_VV-VH.tif"
    store = ModelStore(tmp_path / "store")
    publish_tiny_partition(store, ["VV_dB", "VH_dB"], [(0, 2)], model_id="tiny-sar", dtype="float32", peak=50.0)
    monkeypatch.setenv("EOZ_MODEL_STORE", str(store.root))
    assert cli.main(["eval", str(src), "--model", "tiny-sar", "--psnr", "30", "--block", "16"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["peak"] == 50.0 and result["dtype"] == "float32" and result["psnr"] >= 30.0
    assert cli.main(["compress", str(src), str(tmp_path / "s.eoz"), "--model", "tiny-sar", "--psnr", "30"]) == 0
    decompress_file(tmp_path / "s.eoz", tmp_path / "s.tif")
    original, meta = read_raster(src)
    out, out_meta = read_raster(tmp_path / "s.tif")
    assert out.dtype == np.float32 and out_meta.crs == meta.crs and out_meta.transform == meta.transform
    assert metrics.psnr(original, out, 50.0) >= 30.0
