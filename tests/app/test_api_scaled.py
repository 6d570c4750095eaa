"""Scaled out: the API on a real redis-server and S3 (the moto server), jobs run by `eoz worker`."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient

from app.main import create_app
from eoz.scene import decompress_array
from tests.workers.servers import scene_psnr, wait_for_job


@pytest.fixture()
def client(service_env, redis_url, s3, workers, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("EOZ_HEARTBEAT_SECONDS", "1")
    workers.start()  # both queues, as `eoz worker` runs by default
    with TestClient(create_app()) as client:
        yield client


def fetch(client, job) -> bytes:
    """The result through its presigned URL: the API answers 307 on S3."""
    answer = client.get(job["result_url"], follow_redirects=False)
    assert answer.status_code == 307, answer.text
    return httpx.get(answer.headers["location"]).raise_for_status().content


def test_s3_key_source_through_a_worker(client, s3, scene):
    s3_client, bucket = s3
    path, array, meta = scene
    s3_client.put_object(Bucket=bucket, Key="incoming/scene.tif", Body=path.read_bytes())
    answer = client.post("/v1/compress", json={"source": {"bucket": bucket, "key": "incoming/scene.tif"},
                                               "model": "jpeg2000", "psnr": 45, "tile_size": 64})
    assert answer.status_code == 202, answer.text
    assert answer.json()["queue"] == "cpu"
    job = wait_for_job(client, answer.json()["status_url"])
    assert job["status"] == "finished", job["error"]

    recon, recon_meta = decompress_array(fetch(client, job))
    assert scene_psnr(array, recon) == pytest.approx(job["result"]["psnr"])
    assert job["result"]["psnr"] >= 45
    assert (recon_meta.crs, recon_meta.transform) == (meta.crs, meta.transform)
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == ["incoming/scene.tif", job["result"]["key"]]


def test_learned_model_upload_then_window_decode_on_s3(client, s3, scene, tmp_path):
    s3_client, bucket = s3
    path, array, meta = scene
    with open(path, "rb") as f:
        answer = client.post("/v1/compress", files={"file": ("scene.tif", f)},
                             data={"model": "tiny-vq", "tile_size": "64"})
    assert answer.status_code == 202 and answer.json()["queue"] == "gpu", answer.text
    job = wait_for_job(client, answer.json()["status_url"])
    assert job["status"] == "finished", job["error"]
    sha = job["result"]["weights_sha256"]
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {f"models/{sha}/manifest.json", f"models/{sha}/weights.safetensors", job["result"]["key"],
            f"uploads/{job['id']}/input.tif"} == keys
    encoded = fetch(client, job)

    answer = client.post("/v1/decompress", files={"file": ("scene.eoz", encoded)},
                         data={"window": "8,8,100,60"})
    assert answer.status_code == 202, answer.text
    decoded = wait_for_job(client, answer.json()["status_url"])
    assert decoded["status"] == "finished", decoded["error"]
    out = tmp_path / "window.tif"
    out.write_bytes(fetch(client, decoded))
    full, _ = decompress_array(encoded)
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), full[:, 8:68, 8:108])
        assert ds.transform.c == meta.transform[2] + 8 * meta.transform[0]

    assert client.get("/readyz").json()["status"] == "ready"
    text = client.get("/metrics").text
    assert 'eoz_jobs_total{kind="compress",model="tiny-vq",outcome="finished"} 1.0' in text
    assert 'eoz_jobs_total{kind="decompress",model="tiny-vq",outcome="finished"} 1.0' in text
    assert 'eoz_workers{device="cpu"} 1.0' in text
    assert 'eoz_queued_jobs{queue="gpu"} 0.0' in text
