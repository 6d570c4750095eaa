"""The embedded default end to end: `eoz serve` with no environment, through FastAPI's TestClient."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from fastapi.testclient import TestClient

from app.main import create_app
from eoz.scene import decompress_array
from tests.workers.servers import scene_edge, scene_psnr, wait_for_job


@pytest.fixture()
def client(service_env):
    with TestClient(create_app()) as client:
        yield client


def upload(client, path, **fields):
    with open(path, "rb") as f:
        return client.post("/v1/compress", files={"file": ("scene.tif", f, "image/tiff")},
                           data={k: str(v) for k, v in fields.items()})


@pytest.mark.parametrize("fields, min_psnr", [({"model": "jpeg2000", "psnr": 45, "tile_size": 64}, 45.0),
                                              ({"model": "tiny-vq", "tile_size": 64}, None),
                                              ({"model": "tiny-hp", "psnr": 42, "block": 32, "tile_size": 64}, 42.0),
                                              ({"model": "tiny-wavelet", "psnr": 45, "block": 32, "tile_size": 64},
                                               45.0)])
def test_upload_poll_fetch_decode(client, scene, fields, min_psnr):
    path, array, meta = scene
    answer = upload(client, path, **fields)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["status"] in ("queued", "running") and job["kind"] == "compress"
    assert job["status_url"].endswith(f"/v1/jobs/{job['id']}")

    job = wait_for_job(client, job["status_url"])
    assert job["status"] == "finished", job["error"]
    assert job["progress"] == 1.0 and job["started_at"] <= job["finished_at"]
    result = job["result"]
    fetched = client.get(job["result_url"])
    assert fetched.status_code == 200 and len(fetched.content) == result["bytes"]

    recon, recon_meta = decompress_array(fetched.content)
    assert recon_meta.crs == meta.crs and recon_meta.transform == meta.transform
    assert recon_meta.band_names == meta.band_names
    assert recon_meta.metadata == meta.metadata and meta.metadata["scales"] == [1e-4] * 4   # the product's tags
    achieved = scene_psnr(array, recon)   # measured where the mask band has data
    assert result["psnr"] == pytest.approx(achieved)
    assert result["compression_ratio"] == pytest.approx(array.nbytes / result["bytes"])
    if min_psnr is not None:
        assert achieved >= min_psnr


def test_decompress_a_window_as_cog(client, scene, tmp_path):
    path, array, meta = scene
    job = wait_for_job(client, upload(client, path, model="jpeg2000", lossless="true").json()["status_url"])
    encoded = client.get(job["result_url"]).content
    answer = client.post("/v1/decompress", files={"file": ("scene.eoz", encoded)},
                         data={"format": "cog", "window": "32,16,64,48"})
    assert answer.status_code == 202, answer.text
    job = wait_for_job(client, answer.json()["status_url"])
    assert job["status"] == "finished" and job["result"]["window"] == [32, 16, 64, 48]
    out = tmp_path / "window.tif"
    out.write_bytes(client.get(job["result_url"]).content)
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        np.testing.assert_array_equal(ds.read(), array[:, 16:64, 32:96])
        a, _, c, _, e, f = meta.transform
        assert (ds.transform.c, ds.transform.f) == (c + 32 * a, f + 16 * e)
        assert ds.tags()["ACQUISITION_TIME"] == "2017-06-17T11:33:21Z" and ds.scales == (1e-4,) * 4
        assert ds.tags(3) == {"WAVELENGTH_NM": "665"} and ds.units == ("reflectance",) * 4
        assert ds.colorinterp[:3] == (ColorInterp.blue, ColorInterp.green, ColorInterp.red)
        np.testing.assert_array_equal(ds.dataset_mask() > 0, scene_edge(*array.shape[1:])[16:64, 32:96])


def test_models_health_and_metrics(client, scene):
    models = {m["model_id"]: m for m in client.get("/v1/models").json()}
    assert models["tiny-vq"]["queue"] == "gpu" and models["jpeg2000"]["queue"] == "cpu"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "checks": {"queue": "ok", "store": "ok"}}

    wait_for_job(client, upload(client, scene[0], model="jpeg2000", quality=40).json()["status_url"])
    text = client.get("/metrics").text
    for name in ("eoz_jobs_total", "eoz_job_duration_seconds_bucket", "eoz_codec_duration_seconds_bucket",
                 "eoz_input_bytes_total", "eoz_output_bytes_total", "eoz_compression_ratio_bucket",
                 "eoz_achieved_psnr_decibels_bucket", "eoz_queued_jobs", "eoz_workers"):
        assert name in text, name
    assert 'eoz_jobs_total{kind="compress",model="jpeg2000",outcome="finished"} 1.0' in text
    assert 'eoz_workers{device="cpu"} 1.0' in text


def test_features_job_returns_a_latent_geotiff(client, scene, tmp_path):
    path, array, meta = scene
    with open(path, "rb") as f:
        answer = client.post("/v1/features", files={"file": ("scene.tif", f, "image/tiff")},
                             data={"model": "tiny-vq", "tile_size": "64", "quantized": "false"})
    assert answer.status_code == 202, answer.text
    job = wait_for_job(client, answer.json()["status_url"])
    assert job["status"] == "finished", job["error"] and job["kind"] == "features"
    assert job["result"]["quantized"] is False
    out = tmp_path / "latents.tif"
    out.write_bytes(client.get(job["result_url"]).content)
    with rasterio.open(out) as ds:
        assert ds.count == len(job["result"]["bands"]) and ds.dtypes[0] == "float32"
        assert ds.crs == rasterio.crs.CRS.from_wkt(meta.crs)
    with open(path, "rb") as f:
        refused = client.post("/v1/features", files={"file": ("scene.tif", f, "image/tiff")},
                              data={"model": "tiny-hp"})
    assert refused.status_code == 422 and "vqvae-fpn" in refused.json()["detail"]


@pytest.mark.parametrize("fields, bounds", [({"lossless": "true"}, [0, 0, 0, 0]),
                                            ({"max_error": ["0", "3", "10", "30"]}, [0, 3, 10, 30]),
                                            ({"max_error": ["0", "3", "10", "30"], "fast": "true"}, [0, 3, 10, 30])])
def test_lossless_and_bounded_error(client, scene, fields, bounds):
    path, array, _ = scene
    with open(path, "rb") as f:
        answer = client.post("/v1/compress", files={"file": ("scene.tif", f, "image/tiff")},
                             data={"model": "tiny-predictive", "tile_size": "64", **fields})
    assert answer.status_code == 202, answer.text
    job = wait_for_job(client, answer.json()["status_url"])
    assert job["status"] == "finished", job["error"]
    recon, _ = decompress_array(client.get(job["result_url"]).content)
    error = np.abs(recon.astype(np.int64) - array.astype(np.int64)).reshape(4, -1).max(1)
    assert (error <= np.array(bounds)).all() and (bounds[-1] == 0 or error[-1] > 3)
