"""What is resolved when a job is submitted holds when it runs: the model version, the PSNR
peak of the target and of the report, and the device the metrics say jobs compute on."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from eoz.container import EozReader
from eoz.raster import RasterMeta, write_raster
from eoz.registry import ModelStore
from tests.conftest import publish_tiny_model
from tests.workers.servers import wait_for_job
from workers.device import compute_device


def test_a_version_published_after_submit_does_not_change_the_job(service_env, redis_url, workers, tmp_path,
                                                                  monkeypatch, scene):
    """Submitted through the RQ runner with no worker running; v2 appears; then a worker runs the job."""
    store = ModelStore(tmp_path / "model_store")
    publish_tiny_model(store)
    monkeypatch.setenv("EOZ_MODEL_STORE", str(store.root))
    monkeypatch.setenv("REDIS_URL", redis_url)
    with TestClient(create_app()) as client:
        answer = client.post("/v1/compress", files={"file": ("s.tif", scene[0].read_bytes())},
                             data={"model": "tiny-vq"})
        assert answer.status_code == 202, answer.text
        assert client.get(answer.json()["status_url"]).json()["status"] == "queued"
        newer = publish_tiny_model(store, version="2", seed=1)
        workers.start("--burst")
        job = wait_for_job(client, answer.json()["status_url"], timeout=120)
    assert job["status"] == "finished", (job, workers.logs())
    assert job["result"]["model_version"] == "1"
    assert job["result"]["weights_sha256"] != newer.weights_sha256


def _compressed(client, path, **fields) -> tuple[dict, dict]:
    """The finished job and the header of the .eoz it wrote."""
    answer = client.post("/v1/compress", files={"file": ("in.tif", path.read_bytes())}, data=fields)
    assert answer.status_code == 202, answer.text
    job = wait_for_job(client, answer.json()["status_url"], timeout=120)
    assert job["status"] == "finished", job
    with EozReader(client.get(job["result_url"]).content) as reader:
        return job, reader.header.quality


@pytest.fixture()
def sar_client(service_env, codec_env):
    """The embedded service with codec_store's models, among them tiny-sar (float32 dB, peak 50)."""
    with TestClient(create_app()) as client:
        yield client


def test_the_peak_of_the_target_is_the_peak_of_the_report(sar_client, tmp_path):
    """One rule (eoz.resolve.psnr_peak): uint8 through JPEG 2000 at 255, SAR dB at its model's 50."""
    rng = np.random.default_rng(0)
    bytes_ = tmp_path / "rgb.tif"
    write_raster(bytes_, rng.integers(0, 256, (3, 48, 48)).astype(np.uint8),
                 RasterMeta(48, 48, 3, "uint8", ["r", "g", "b"], None, None, None))
    job, quality = _compressed(sar_client, bytes_, model="jpeg2000", psnr="35")
    assert job["result"]["psnr_peak"] == quality["peak"] == 255.0
    assert job["result"]["psnr"] >= 35.0
    sar = tmp_path / "sar.tif"
    write_raster(sar, (rng.normal(-12.0, 4.0, (2, 32, 32))).astype(np.float32),
                 RasterMeta(32, 32, 2, "float32", ["VV_dB", "VH_dB"], None, None, None))
    job, quality = _compressed(sar_client, sar, model="tiny-sar", psnr="30")
    assert job["result"]["psnr_peak"] == quality["peak"] == 50.0
    assert job["result"]["psnr"] >= 30.0


def test_the_device_is_where_the_codecs_compute(monkeypatch):
    """eoz.codecs puts its networks on CUDA whenever torch sees a GPU; the gauge must say so.
    (No GPU here: torch's answer is what is replaced.)"""
    import torch

    assert compute_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert compute_device() == "cuda"
