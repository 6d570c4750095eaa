"""Latent export and --model auto: georeferenced top-level latents, and choosing a model for a raster."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.rpc import RPC
from rasterio.transform import GCPTransformer, RPCTransformer

from eoz.cli import main
from eoz.codecs import codec_for_model
from eoz.errors import InputError, UnknownModelError
from eoz.features import extract_features
from eoz.raster import PER_DATASET, RasterWriter, read_raster, write_raster
from tests.conftest import LEVEL1_GCPS, LEVEL1_RPCS, S2_10M, publish_tiny_hyperprior, write_level1


@pytest.fixture()
def scene(shared_data, tmp_path):
    path = tmp_path / "in.tif"
    write_raster(path, *read_raster(shared_data / S2_10M, window=(300, 500, 150, 101)))
    return path


def test_features_are_georeferenced_codebook_vectors(scene, tmp_path, tiny_store):
    codec = codec_for_model("tiny-vq", store=tiny_store)
    f = codec.config.factor
    meta = extract_features(scene, tmp_path / "f.tif", codec, tile_size=64)
    assert (meta.height, meta.width, meta.count) == (-(-101 // f), -(-150 // f), codec.config.embedding_dim)
    with rasterio.open(tmp_path / "f.tif") as ds, rasterio.open(scene) as src:
        latents = ds.read()
        assert ds.crs == src.crs and ds.dtypes[0] == "float32"
        assert ds.transform.a == pytest.approx(src.transform.a * f)
        assert ds.transform.e == pytest.approx(src.transform.e * f)
        assert (ds.transform.c, ds.transform.f) == (src.transform.c, src.transform.f)
        assert ds.descriptions[0] == "latent_0"
    codebook = codec.model.quantizers[-1].embedding.detach().numpy()
    vectors = latents.reshape(latents.shape[0], -1).T
    assert np.abs(vectors[:, None, :] - codebook[None]).max(-1).min(-1).max() < 1e-5


def _coefficients(**terms) -> list[float]:
    """An RPC polynomial's 20 coefficients from its nonzero terms (GDAL's order: 1, L, P, H, LP)."""
    order = ["one", "lon", "lat", "height", "lon_lat"]
    return [terms.get(order[i], 0.0) if i < len(order) else 0.0 for i in range(20)]


# lines run south, samples east, slightly sheared and curved (the test raster's RPCs are singular)
_INVERTIBLE_RPCS = RPC(**LEVEL1_RPCS.to_dict() | {
    "line_num_coeff": _coefficients(lat=-1.0, lon=0.1, lon_lat=0.05), "samp_num_coeff": _coefficients(lon=1.0, lat=0.1),
    "line_den_coeff": _coefficients(one=1.0), "samp_den_coeff": _coefficients(one=1.0)})


@pytest.mark.parametrize("kind", ["gcps", "rpcs"])
def test_features_of_a_level1_scene_keep_its_place_on_the_ground(scene, tmp_path, tiny_store, kind):
    """A Sentinel-1 GRD (GCPs) or an optical Level-1 product (RPCs) has no geotransform: its
    latents' GCPs or RPCs put each latent on the ground where its f x f pixels are."""
    codec = codec_for_model("tiny-vq", store=tiny_store)
    f = codec.config.factor
    array, _ = read_raster(scene, window=(0, 0, 64, 48))
    write_level1(tmp_path / "l1.tif", array, {"gcps": LEVEL1_GCPS, "crs": CRS.from_epsg(4326)} if kind == "gcps"
                 else {"rpcs": _INVERTIBLE_RPCS})
    extract_features(tmp_path / "l1.tif", tmp_path / "f.tif", codec)
    with rasterio.open(tmp_path / "l1.tif") as src, rasterio.open(tmp_path / "f.tif") as ds:
        assert ds.transform.is_identity and (kind == "rpcs" or ds.gcps[1] == CRS.from_epsg(4326))
        transformers = [GCPTransformer(d.gcps[0]) if kind == "gcps" else RPCTransformer(d.rpcs) for d in (src, ds)]
    rows, cols = np.meshgrid(np.linspace(0, array.shape[1], 7), np.linspace(0, array.shape[2], 9), indexing="ij")
    xs, ys = transformers[0].xy(rows.ravel(), cols.ravel(), offset="ul")   # points on the ground ...
    pixel = np.array(transformers[0].rowcol(xs, ys, op=lambda v: v))
    latent = np.array(transformers[1].rowcol(xs, ys, op=lambda v: v))
    np.testing.assert_allclose(latent, pixel / f, atol=1e-6)   # ... fall in the latent over their pixels
    for transformer in transformers:
        transformer.close()


def test_pixels_a_mask_band_calls_invalid_are_filled_as_nodata(scene, tmp_path, tiny_store):
    """Features see a masked pixel as the codecs do: filled with its band's mean over the valid
    pixels, whatever it holds (here noise), as if the raster had held that value there."""
    codec = codec_for_model("tiny-vq", store=tiny_store)
    array, meta = read_raster(scene, window=(0, 0, 64, 48))
    valid = np.ones((48, 64), bool)
    valid[:, :20] = False
    noisy = array.copy()
    noisy[:, ~valid] = np.random.default_rng(0).integers(0, 10000, (4, int((~valid).sum())))
    filled = array.copy()
    filled[:, ~valid] = array[:, valid].astype(np.float64).mean(1).astype(array.dtype)[:, None]   # as assigned
    write_raster(tmp_path / "filled.tif", filled, meta)
    meta.metadata = {"mask": PER_DATASET}
    with RasterWriter(tmp_path / "masked.tif", meta) as writer:
        writer.write(noisy, 0, 0)
        writer.write_valid(valid, 0, 0)
    for name in ("masked", "filled"):
        extract_features(tmp_path / f"{name}.tif", tmp_path / f"{name}.f.tif", codec, quantized=False)
    np.testing.assert_allclose(read_raster(tmp_path / "masked.f.tif")[0], read_raster(tmp_path / "filled.f.tif")[0],
                               rtol=1e-5, atol=1e-5)


def test_features_of_one_tile_match_the_model(scene, tmp_path, tiny_store):
    codec = codec_for_model("tiny-vq", store=tiny_store)
    array, _ = read_raster(scene, window=(0, 0, 64, 64))
    window = tmp_path / "w.tif"
    write_raster(window, *read_raster(scene, window=(0, 0, 64, 64)))
    extract_features(window, tmp_path / "f.tif", codec, quantized=False)
    with torch.no_grad():
        x = torch.from_numpy(codec.normalizer.forward(array.astype(np.float64)))[None]
        expected = codec.model.top_latents(x, quantized=False)[0].numpy()
    np.testing.assert_allclose(read_raster(tmp_path / "f.tif")[0], expected, rtol=1e-5, atol=1e-5)


def test_features_need_a_vq_model(scene, tmp_path, tiny_hyperprior_store):
    with pytest.raises(InputError, match="VQVAE-FPN"):
        extract_features(scene, tmp_path / "f.tif", codec_for_model("tiny-hp", store=tiny_hyperprior_store))


def test_cli_features_and_auto(scene, tmp_path, tiny_store, monkeypatch, capsys):
    monkeypatch.setenv("EOZ_MODEL_STORE", str(tiny_store.root))
    assert main(["features", str(scene), str(tmp_path / "f.tif"), "--model", "tiny-vq", "--continuous"]) == 0
    assert '"quantized": false' in capsys.readouterr().out
    assert main(["compress", str(scene), str(tmp_path / "x.eoz"), "--model", "auto", "--tile-size", "64"]) == 0
    captured = capsys.readouterr()
    assert "picked tiny-vq version 1" in captured.err and '"picked"' in captured.out
    three = tmp_path / "three.tif"
    array, meta = read_raster(scene)
    write_raster(three, array[:3], replace(meta, count=3, band_names=meta.band_names[:3]))
    # no model fits 3 bands: JPEG 2000 at its default operating point, and auto says so
    assert main(["compress", str(three), str(tmp_path / "y.eoz"), "--model", "auto", "--tile-size", "64"]) == 0
    assert "picked jpeg2000: no model in the store fits the raster" in capsys.readouterr().err


def test_pick_prefers_the_asked_codec_then_names_then_counts(tiny_store):
    publish_tiny_hyperprior(tiny_store)
    bands = ["B02", "B03", "B04", "B08"]
    assert tiny_store.pick(bands, "uint16", "vqvae-fpn")[0].model_id == "tiny-vq"
    assert tiny_store.pick(bands, "uint16", "hyperprior")[0].model_id == "tiny-hp"
    entry, reason = tiny_store.pick(["band1", "band2", "band3", "band4"], "uint16")
    assert entry.model_id in ("tiny-hp", "tiny-vq") and "no descriptions" in reason
    with pytest.raises(UnknownModelError, match="available: tiny-hp"):
        tiny_store.pick(bands, "float32")
    with pytest.raises(UnknownModelError, match="jpeg2000 takes any raster"):
        tiny_store.pick(["B02", "B03", "B04", "B05"], "uint16")
