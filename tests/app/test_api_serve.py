"""`eoz serve` runs the API with the embedded default on the given port."""

from __future__ import annotations

import signal

import httpx

from tests.workers.servers import http_service


def test_eoz_serve_answers(service_env, tmp_path):
    with http_service(["eoz.cli", "serve"], tmp_path, tmp_path / "serve.log") as (server, base):
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        models = httpx.get(f"{base}/v1/models").json()
        assert {m["model_id"] for m in models} == {"tiny-vq", "tiny-hp", "tiny-wavelet", "tiny-predictive", "jpeg2000"}
        assert (tmp_path / "eoz-data" / "store").is_dir()  # EOZ_DATA_DIR from the environment
    # uvicorn shuts down gracefully, then re-raises SIGTERM as its exit status
    assert server.returncode in (0, -signal.SIGTERM), (tmp_path / "serve.log").read_text()
