"""`eoz serve` runs the API with the embedded default on the given port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from tests.workers.servers import ROOT, free_port, wait_until


def test_eoz_serve_answers(service_env, tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "eoz.cli", "serve", "--port", str(port)], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT)

    def healthy():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        except httpx.TransportError:
            return None
    try:
        assert wait_until(healthy, 60, "eoz serve to answer") == {"status": "ok"}
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert {m["model_id"] for m in models} == {"tiny-vq", "tiny-hp", "tiny-wavelet", "tiny-predictive", "jpeg2000"}
        assert (tmp_path / "eoz-data" / "store").is_dir()  # EOZ_DATA_DIR from the environment
    finally:
        server.terminate()
        server.wait(20)
    # uvicorn shuts down gracefully, then re-raises SIGTERM as its exit status
    assert server.returncode in (0, -signal.SIGTERM), (tmp_path / "serve.log").read_text()
