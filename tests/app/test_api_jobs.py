"""Jobs of the embedded default: durable across restarts, cancelable, timed out, listed, scoped
to the API key that created them; each job runs in a worker process the API outlives."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.main import create_app
from eoz.errors import EozError
from tests.workers.servers import ROOT, http_service, start_http, wait_for_job, wait_until, write_crop
from workers.job_records import JobRecords
from workers.settings import Settings


@contextmanager
def service(monkeypatch, **environment):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with TestClient(create_app()) as client:
        yield client


def post(client, path, headers=None, **fields):
    with open(path, "rb") as f:
        answer = client.post("/v1/compress", files={"file": ("scene.tif", f, "image/tiff")},
                             data={k: str(v) for k, v in fields.items()}, headers=headers)
    assert answer.status_code == 202, answer.text
    return answer.json()


@pytest.fixture()
def slow_scene(shared_data, tmp_path):
    """768 x 512 px in 96 tiles of 64 px, each bisected to a PSNR: seconds of real work."""
    path = tmp_path / "slow.tif"
    write_crop(shared_data, path, (0, 0, 768, 512))
    return path


SLOW = {"model": "jpeg2000", "psnr": 45, "tile_size": 64}
QUICK = {"model": "jpeg2000", "lossless": "true", "tile_size": 64}


def running(client, job, headers=None) -> dict:
    """The job once it runs and has reported progress."""
    def started():
        got = client.get(job["status_url"], headers=headers).json()
        return got if got["status"] == "running" and got["progress"] > 0 else None
    return wait_until(started, 120, f"job {job['id']} to make progress", interval=0.05)


def test_a_restart_keeps_finished_jobs_and_reruns_interrupted_ones(service_env, monkeypatch, scene, slow_scene):
    with service(monkeypatch) as client:
        done = wait_for_job(client, post(client, scene[0], **QUICK)["status_url"])
        assert done["status"] == "finished"
        interrupted = running(client, post(client, slow_scene, **SLOW))
    # shutdown stopped the running job instead of waiting for it: it is queued again, from 0
    records = JobRecords(Settings().data_dir / "jobs.sqlite3")
    left = records.get(interrupted["id"])
    records.close()
    assert (left.status, left.progress, left.started_at, left.result) == ("queued", 0.0, None, None)

    with service(monkeypatch) as client:
        assert client.get(done["status_url"]).json() == done
        assert client.get(done["result_url"]).status_code == 200
        rerun = wait_for_job(client, interrupted["status_url"], timeout=180)
        assert rerun["status"] == "finished", rerun["error"]
        assert rerun["started_at"] > interrupted["started_at"]
        store = client.app.state.services.store
        assert store.keys(f"results/{rerun['id']}/") == [rerun["result"]["key"]] and store.keys("tmp/") == []


def test_a_killed_worker_process_leaves_the_api_up_and_its_job_reruns(service_env, monkeypatch, slow_scene):
    with service(monkeypatch) as client:
        job = running(client, post(client, slow_scene, **SLOW))
        (process,) = [p for p in multiprocessing.active_children() if p.name.startswith("eoz-job")]
        os.kill(process.pid, signal.SIGKILL)  # as the kernel's OOM killer or a segfault would
        assert client.get("/healthz").status_code == 200
        rerun = wait_for_job(client, job["status_url"], timeout=180)
        assert rerun["status"] == "finished", rerun["error"]
        assert 'outcome="abandoned"} 1.0' in client.get("/metrics").text


def test_a_job_past_eoz_job_timeout_is_stopped_and_failed(service_env, monkeypatch, scene, slow_scene):
    with service(monkeypatch, EOZ_JOB_TIMEOUT="1") as client:
        slow = wait_for_job(client, post(client, slow_scene, **SLOW)["status_url"], timeout=180)
        assert slow["status"] == "failed" and "EOZ_JOB_TIMEOUT" in slow["error"], slow
        assert slow["result"] is None and client.app.state.services.store.keys(f"results/{slow['id']}/") == []
        quick = wait_for_job(client, post(client, scene[0], **QUICK)["status_url"])  # the next job runs
        assert quick["status"] == "finished", quick["error"]


def test_cancel_a_queued_and_a_running_job(service_env, monkeypatch, scene, slow_scene):
    with service(monkeypatch) as client:
        first = running(client, post(client, slow_scene, **SLOW))
        waiting = post(client, scene[0], **QUICK)  # one worker: it waits behind the first
        assert client.get(waiting["status_url"]).json()["status"] == "queued"

        answer = client.delete(waiting["status_url"])
        assert answer.status_code == 200 and answer.json()["status"] == "canceled", answer.text
        answer = client.delete(first["status_url"])
        assert answer.status_code == 200 and answer.json()["status"] == "canceled", answer.text
        assert client.delete(first["status_url"]).json()["status"] == "canceled"  # again: no change

        after = wait_for_job(client, post(client, scene[0], **QUICK)["status_url"])  # the worker is free
        assert after["status"] == "finished"
        for job in (first, waiting):
            got = client.get(job["status_url"]).json()
            assert got["status"] == "canceled" and got["result"] is None
            assert client.app.state.services.store.keys(f"results/{job['id']}/") == []
            assert client.get(job["result_url"]).status_code == 409
        assert client.get(waiting["status_url"]).json()["started_at"] is None
        ended = client.delete(after["status_url"])  # a finished job keeps its result
        assert ended.status_code == 409 and "finished" in ended.json()["detail"]
        assert client.delete("/v1/jobs/" + "0" * 32).status_code == 404


def test_listing_pages_newest_first_and_filters_by_status(service_env, monkeypatch, scene, slow_scene):
    with service(monkeypatch) as client:
        slow = running(client, post(client, slow_scene, **SLOW))
        quick = [post(client, scene[0], **QUICK) for _ in range(2)]
        client.delete(slow["status_url"])
        for job in quick:
            assert wait_for_job(client, job["status_url"])["status"] == "finished"

        page = client.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["id"] for j in page["jobs"]] == [quick[1]["id"], quick[0]["id"]] and page["next_cursor"]
        rest = client.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        assert [j["id"] for j in rest["jobs"]] == [slow["id"]] and rest["next_cursor"] is None
        assert rest["jobs"][0]["status"] == "canceled"
        canceled = client.get("/v1/jobs", params={"status": "canceled"}).json()
        assert [j["id"] for j in canceled["jobs"]] == [slow["id"]]
        finished = client.get("/v1/jobs", params={"status": "finished"}).json()
        assert [j["id"] for j in finished["jobs"]] == [quick[1]["id"], quick[0]["id"]]
        for bad in ({"status": "done"}, {"limit": 0}, {"limit": 1001}, {"cursor": "nonsense"}):
            answer = client.get("/v1/jobs", params=bad)
            assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"


def test_a_job_is_seen_only_with_the_key_that_created_it(service_env, monkeypatch, scene):
    alpha, beta = {"X-API-Key": "alpha-key"}, {"Authorization": "Bearer beta-key"}
    with service(monkeypatch, EOZ_API_KEYS="alpha-key, beta-key") as client:
        job = wait_for_job(client, post(client, scene[0], headers=alpha, **QUICK)["status_url"], headers=alpha)
        assert job["status"] == "finished"
        for call in (client.get, client.delete):
            answer = call(job["status_url"], headers=beta)
            assert answer.status_code == 404 and answer.headers["content-type"] == "application/problem+json"
        assert client.get(job["result_url"], headers=beta).status_code == 404
        assert client.get("/v1/jobs", headers=beta).json() == {"jobs": [], "next_cursor": None}
        assert [j["id"] for j in client.get("/v1/jobs", headers=alpha).json()["jobs"]] == [job["id"]]
        assert client.get("/v1/jobs").status_code == 401
        records = JobRecords(Settings().data_dir / "jobs.sqlite3")
        assert "alpha-key" not in repr(records.get(job["id"]))  # a fingerprint, never the key
        records.close()


@pytest.mark.parametrize("keys", [" , ", ",", " "])
def test_api_keys_without_a_usable_key_refuse_to_start(service_env, monkeypatch, keys):
    monkeypatch.setenv("EOZ_API_KEYS", keys)
    with pytest.raises(ValidationError, match="EOZ_API_KEYS"):
        Settings()
    served = subprocess.run([sys.executable, "-m", "eoz.cli", "serve", "--port", "1"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=120)
    assert served.returncode == 2 and "EOZ_API_KEYS" in served.stderr, served.stderr


def test_the_service_expires_aged_objects_as_it_starts(service_env, monkeypatch, tmp_path):
    from workers.store import make_store

    store = make_store(Settings())
    aged, fresh = f"uploads/{'a' * 32}/input.tif", f"results/{'b' * 32}/output.eoz"
    (tmp_path / "object").write_bytes(b"x")
    for key in (aged, fresh):
        store.put_file(key, tmp_path / "object")
    old = time.time() - 2 * 24 * 3600
    os.utime(store.root / aged, (old, old))
    with service(monkeypatch, EOZ_RETENTION_DAYS="1"):
        wait_until(lambda: not store.exists(aged), 30, "the retention pass to remove the aged upload")
        assert store.exists(fresh)


def test_sigterm_stops_eoz_serve_without_waiting_and_its_jobs_survive(service_env, slow_scene, scene, tmp_path):
    """Through real uvicorn: SIGTERM re-queues the running job and keeps the queued one."""
    server, base = start_http(["eoz.cli", "serve"], tmp_path, tmp_path / "serve-1.log")
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            slow = running(client, post(client, slow_scene, **SLOW))
            waiting = post(client, scene[0], **QUICK)
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
    records = JobRecords(Settings().data_dir / "jobs.sqlite3")
    assert [(records.get(j["id"]).status, records.get(j["id"]).progress) for j in (slow, waiting)] == [
        ("queued", 0.0), ("queued", 0.0)]
    records.close()

    with http_service(["eoz.cli", "serve"], tmp_path, tmp_path / "serve-2.log") as (_, base), \
            httpx.Client(base_url=base, timeout=60) as client:
        for job in (slow, waiting):
            ended = wait_for_job(client, f"/v1/jobs/{job['id']}", timeout=180)
            assert ended["status"] == "finished", ended["error"]


def test_one_embedded_service_per_data_folder(service_env, monkeypatch):
    with service(monkeypatch):
        with pytest.raises(EozError, match="one embedded service per EOZ_DATA_DIR"):
            TestClient(create_app()).__enter__()
    with service(monkeypatch) as client:  # the first one stopped: the folder is free again
        assert client.get("/v1/jobs").json() == {"jobs": [], "next_cursor": None}
