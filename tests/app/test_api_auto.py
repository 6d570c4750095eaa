"""model=auto through the API (issue 15 item 5): an upload is picked for at submit, an S3 key by
the job; either way the job's result names the model and why, and a default quality is kept."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from eoz import metrics
from eoz.container import EozReader
from eoz.raster import read_raster, write_raster
from eoz.scene import decompress_array
from tests.conftest import S2_10M
from tests.workers.servers import wait_for_job


@pytest.fixture()
def landsat_like(shared_data, tmp_path):
    """Ten real uint16 bands (the S2 crop's four, shifted crops of them) with Landsat's band count:
    no VQ or band-fitted model takes them."""
    crops = [read_raster(shared_data / S2_10M, window=(600 + 40 * k, 300, 96, 96))[0] for k in range(3)]
    array = np.concatenate(crops)[:10]
    _, meta = read_raster(shared_data / S2_10M, window=(600, 300, 96, 96))
    meta.count, meta.band_names = 10, [f"B{i}" for i in range(1, 11)]
    path = tmp_path / "landsat_like.tif"
    write_raster(path, array, meta)
    return path, array


def _finished(client, answer) -> dict:
    assert answer.status_code == 202, answer.text
    job = wait_for_job(client, answer.json()["status_url"], timeout=120)
    assert job["status"] == "finished", job["error"]
    return job


@pytest.mark.parametrize("model", [{"model": "auto"}, {}], ids=["auto", "no-model-field"])
def test_an_upload_with_auto_and_no_target_gets_the_default_and_says_so(service_env, landsat_like, model):
    """auto, asked for or by default (no model field: as the command line)."""
    path, array = landsat_like
    with TestClient(create_app()) as client:
        answer = client.post("/v1/compress", files={"file": ("l8.tif", path.read_bytes())},
                             data={**model, "tile_size": "64"})
        assert answer.json()["model"] == "tiny-wavelet" and answer.json()["queue"] == "cpu"
        job = _finished(client, answer)
        encoded = client.get(job["result_url"]).content
    result = job["result"]
    assert result["model_id"] == "tiny-wavelet"
    assert "no vqvae-fpn model takes a 10-band uint16 raster" in result["picked"]
    assert "its default --psnr 50 at peak 10000" in result["picked"]
    with EozReader(encoded) as reader:
        assert reader.header.quality["psnr"] == 50.0
    recon, _ = decompress_array(encoded)
    assert result["psnr"] == pytest.approx(metrics.psnr(array, recon, 10000.0)) and result["psnr"] >= 50


def test_an_s3_key_with_auto_is_picked_by_the_job(s3, service_env, scene):
    s3_client, bucket = s3
    path, array, _ = scene
    s3_client.put_object(Bucket=bucket, Key="incoming/scene.tif", Body=path.read_bytes())
    with TestClient(create_app()) as client:
        answer = client.post("/v1/compress", json={"source": {"bucket": bucket, "key": "incoming/scene.tif"},
                                                   "lossless": True, "tile_size": 64})   # no model: auto
        assert (answer.json()["model"], answer.json()["queue"]) == ("auto", "cpu")
        job = _finished(client, answer)
    result = job["result"]
    assert result["model_id"] == "tiny-predictive" and result["psnr"] is None and result["mse"] == 0
    assert result["picked"].startswith("tiny-predictive version 1: ")


def test_auto_refuses_options_no_codec_honours_together(service_env, scene):
    with TestClient(create_app()) as client:
        answer = client.post("/v1/compress", files={"file": ("s.tif", scene[0].read_bytes())},
                             data={"model": "auto", "lossless": "true", "rate_weight": "1"})
        assert answer.status_code == 422 and "no codec honours" in answer.json()["detail"]
        assert client.app.state.services.store.keys("uploads/") == []


def test_an_s3_source_past_the_cpu_work_limit_fails_in_the_job_with_the_reason(s3, service_env, scene,
                                                                               monkeypatch):
    """The API cannot see an S3 raster at submit; the CPU worker refuses it before encoding."""
    s3_client, bucket = s3
    s3_client.put_object(Bucket=bucket, Key="incoming/scene.tif", Body=scene[0].read_bytes())
    monkeypatch.setenv("EOZ_MAX_CPU_SECONDS", "0.001")
    with TestClient(create_app()) as client:
        answer = client.post("/v1/compress", json={"source": {"bucket": bucket, "key": "incoming/scene.tif"},
                                                   "model": "tiny-vq", "tile_size": 64})
        assert answer.status_code == 202, answer.text
        job = wait_for_job(client, answer.json()["status_url"])
    assert job["status"] == "failed" and "EOZ_MAX_CPU_SECONDS" in job["error"]
