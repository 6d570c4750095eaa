"""`eoz serve` says what it serves: data folder, runner, store, models and docs URL, before uvicorn's lines."""

from __future__ import annotations

from app.banner import banner
from tests.workers.servers import http_service
from workers.settings import Settings


def lines(text: str) -> dict[str, str]:
    """The banner's "name  value" lines as a dict."""
    return dict(line.strip().split(None, 1) for line in text.splitlines()[1:])


def test_the_embedded_default(service_env, tmp_path, tiny_models):
    said = lines(banner(Settings(workers=3), "127.0.0.1", 8123))
    assert said["data"] == str(tmp_path / "eoz-data")
    assert said["runner"] == "embedded, 3 worker processes (EOZ_WORKERS)"
    assert said["store"] == f"filesystem {tmp_path / 'eoz-data' / 'store'}"
    models = "jpeg2000, tiny-hp 1, tiny-predictive 1, tiny-vq 1, tiny-wavelet 1"
    assert said["models"] == f"{models} (from {tiny_models.root})"
    assert said["docs"] == "http://127.0.0.1:8123/docs"


def test_redis_without_its_password_and_s3(service_env, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://eoz:s3cret@redis.example:6380/2")
    text = banner(Settings(s3_bucket="scenes", s3_endpoint="http://minio:9000"), "0.0.0.0", 8000)
    said = lines(text)
    assert "s3cret" not in text
    assert said["runner"] == "Redis redis://eoz@redis.example:6380/2 (jobs run by `eoz worker` processes)"
    assert said["store"] == "S3 bucket scenes at http://minio:9000"
    assert said["docs"] == "http://localhost:8000/docs"  # a wildcard address is no place to browse to
    aws = lines(banner(Settings(s3_bucket="scenes"), "::1", 80))
    assert aws["store"] == "S3 bucket scenes at AWS" and aws["docs"] == "http://[::1]:80/docs"


def test_eoz_serve_prints_it_before_uvicorn(service_env, tmp_path):
    log = tmp_path / "serve.log"
    with http_service(["eoz.cli", "serve"], tmp_path, log) as (_, base):
        pass
    text = log.read_text()
    assert f"docs    {base}/docs" in text, text
    assert text.index("runner  embedded") < text.index("Uvicorn running on"), text
