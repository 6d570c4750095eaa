"""Real parts for the service tests: a redis-server, the moto S3 server over HTTP, real scenes,
`eoz worker` processes, and a client that waits for jobs.

Imported by tests/app/conftest.py and tests/workers/conftest.py (each directory gets its
own session servers, which keeps their queues apart).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from eoz import metrics
from eoz.raster import RasterWriter, read_raster
from eoz.registry import ModelStore
from tests.conftest import (S2_10M, publish_tiny_hyperprior, publish_tiny_model, publish_tiny_predictive,
                            publish_tiny_wavelet)

ROOT = Path(__file__).resolve().parents[2]
SERVICE_VARIABLES = ("REDIS_URL", "EOZ_S3_ENDPOINT", "EOZ_S3_PUBLIC_ENDPOINT", "EOZ_S3_BUCKET",
                     "EOZ_S3_SOURCES", "EOZ_API_KEYS", "EOZ_MAX_UPLOAD_BYTES", "EOZ_MAX_PIXELS",
                     "EOZ_MAX_BANDS", "EOZ_WORKERS", "EOZ_JOB_TIMEOUT", "EOZ_HEARTBEAT_SECONDS",
                     "EOZ_RETENTION_DAYS", "EOZ_TILE_THREADS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_http(args: list[str], cwd: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``python -m ARGS --port P`` from cwd on a free loopback port (output to log): the
    process and its base URL, once its /healthz answers 200."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", *args, "--port", str(port)], cwd=cwd,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthz").status_code == 200
        except httpx.TransportError:
            return False
    try:
        wait_until(healthy, 60, f"{' '.join(args)} to answer")
    except BaseException:
        process.kill()
        raise
    return process, base


@contextmanager
def http_service(args: list[str], cwd: Path, log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """start_http, stopped (SIGTERM) on leaving."""
    process, base = start_http(args, cwd, log)
    try:
        yield process, base
    finally:
        process.terminate()
        process.wait(60)


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> str:
    """A redis-server of its own on a free loopback port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: `apt-get install redis-server` (.ci/run does this)")
    import redis

    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"

    def answers():
        try:
            return redis.Redis.from_url(url).ping()
        except redis.ConnectionError:
            return False
    try:
        wait_until(answers, 10, "redis-server to accept connections")
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture()
def redis_url(redis_server) -> str:
    """The redis-server, emptied for this test."""
    import redis

    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """moto's S3 API served over HTTP on a free loopback port, as MinIO would be."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> ModelStore:
    """A model store with the tiny VQ model, the tiny hyperprior and the untrained wavelet
    and predictive models, published once per session."""
    store = ModelStore(tmp_path_factory.mktemp("model_store"))
    publish_tiny_model(store)
    publish_tiny_hyperprior(store)
    publish_tiny_wavelet(store)
    publish_tiny_predictive(store)
    return store


@pytest.fixture()
def service_env(tmp_path, monkeypatch, tiny_models) -> dict:
    """A clean environment: data under tmp_path, the tiny model in the model store, nothing else."""
    for name in SERVICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EOZ_DATA_DIR", str(tmp_path / "eoz-data"))
    monkeypatch.setenv("EOZ_MODEL_STORE", str(tiny_models.root))
    return os.environ


@pytest.fixture()
def s3(moto_endpoint, service_env, monkeypatch):
    """A fresh bucket on the moto server, set as the object store (EOZ_S3_*), and a client."""
    import boto3

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"eoz-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    client.create_bucket(Bucket=bucket)
    monkeypatch.setenv("EOZ_S3_ENDPOINT", moto_endpoint)
    monkeypatch.setenv("EOZ_S3_BUCKET", bucket)
    return client, bucket


# GDAL metadata of a product, which the scene fixture's GeoTIFF carries through the service: its
# tags, its bands' colours, and a mask band (the pixels above the scene's diagonal edge invalid)
PRODUCT_METADATA = {"tags": {"ACQUISITION_TIME": "2017-06-17T11:33:21Z", "PROCESSING_LEVEL": "L1C"},
                    "band_tags": [{"WAVELENGTH_NM": w} for w in ("490", "560", "665", "842")],
                    "scales": [1e-4] * 4, "offsets": [-0.1] * 4, "units": ["reflectance"] * 4,
                    "colorinterp": ["blue", "green", "red", "undefined"], "mask": "per_dataset"}


def scene_edge(height: int, width: int) -> np.ndarray:
    """The valid pixels of a scene with a mask band: those on and below its diagonal edge."""
    rows, cols = np.mgrid[:height, :width]
    return rows + cols >= min(height, width) // 2


def scene_psnr(array: np.ndarray, recon: np.ndarray) -> float:
    """PSNR (peak 10000) of the scene fixture's reconstruction where its mask band has data, as the
    service measures it."""
    valid = scene_edge(*array.shape[1:])
    return metrics.psnr(array[:, valid], recon[:, valid], 10000.0)


def write_crop(shared_data: Path, path: Path, window: tuple[int, int, int, int],
               bands: list[int] | None = None, metadata: dict | None = None) -> tuple[np.ndarray, object]:
    """A real Sentinel-2 10 m crop (optionally some of its bands, with GDAL metadata, and a mask
    band of ``scene_edge`` where the metadata names one) written as a GeoTIFF."""
    array, meta = read_raster(shared_data / S2_10M, window=window)
    if bands is not None:
        array = array[bands]
        meta.count, meta.band_names = len(bands), [meta.band_names[b] for b in bands]
    meta.metadata = metadata or {}
    with RasterWriter(path, meta) as writer:
        writer.write(array, 0, 0)
        if "mask" in meta.metadata:
            writer.write_valid(scene_edge(meta.height, meta.width), 0, 0)
    return array, meta


@pytest.fixture()
def scene(shared_data, tmp_path):
    """A 128 x 128 crop of the 4-band scene: (path, array, meta)."""
    path = tmp_path / "scene.tif"
    array, meta = write_crop(shared_data, path, (600, 300, 128, 128), metadata=PRODUCT_METADATA)
    return path, array, meta


class Workers:
    """`eoz worker` processes started by a test, each stopped by its own pid at the end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        log = open(self.log_dir / f"worker-{len(self.processes)}.log", "wb")
        process = subprocess.Popen([sys.executable, "-m", "eoz.cli", "worker", *args], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("worker-*.log")))

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture()
def workers(tmp_path):
    pool = Workers(tmp_path)
    yield pool
    pool.stop_all()


def wait_for_job(client, status_url: str, timeout: float = 60, headers: dict | None = None) -> dict:
    """Poll a job until it finishes or fails; returns its JSON."""
    def ended():
        job = client.get(status_url, headers=headers).json()
        return job if job["status"] in ("finished", "failed") else None
    return wait_until(ended, timeout, f"job {status_url}", interval=0.1)

