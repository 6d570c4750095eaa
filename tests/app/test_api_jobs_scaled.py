"""Jobs on RQ (a real redis-server, S3 on the moto server, `eoz worker` processes): cancel
queued and running jobs, list them, and see them only with the key that created them."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.app.test_api_jobs import QUICK, SLOW, post, running
from tests.workers.servers import wait_for_job

ALPHA, BETA = {"X-API-Key": "alpha-key"}, {"X-API-Key": "beta-key"}


@pytest.fixture()
def client(service_env, redis_url, s3, monkeypatch):
    from app.main import create_app

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("EOZ_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("EOZ_API_KEYS", "alpha-key,beta-key")
    with TestClient(create_app()) as client:
        yield client


@pytest.fixture()
def slow_scene(shared_data, tmp_path):
    from tests.workers.servers import write_crop

    path = tmp_path / "slow.tif"
    write_crop(shared_data, path, (0, 0, 768, 512))
    return path


def test_cancel_queued_and_running_jobs_on_rq(client, workers, scene, slow_scene):
    waiting = post(client, scene[0], headers=ALPHA, **QUICK)  # no worker yet: it stays queued
    answer = client.delete(waiting["status_url"], headers=ALPHA)
    assert answer.status_code == 200 and answer.json()["status"] == "canceled", answer.text

    slow = post(client, slow_scene, headers=ALPHA, **SLOW)
    workers.start("--queues", "cpu")
    running(client, slow, headers=ALPHA)
    answer = client.delete(slow["status_url"], headers=ALPHA)
    assert answer.status_code == 200 and answer.json()["status"] == "canceled", answer.text

    after = wait_for_job(client, post(client, scene[0], headers=ALPHA, **QUICK)["status_url"], headers=ALPHA)
    assert after["status"] == "finished", (after["error"], workers.logs())
    store = client.app.state.services.store
    for job in (waiting, slow):
        got = client.get(job["status_url"], headers=ALPHA).json()
        assert got["status"] == "canceled" and got["result"] is None
        assert store.keys(f"results/{job['id']}/") == []
    assert client.get(waiting["status_url"], headers=ALPHA).json()["started_at"] is None
    assert client.delete(after["status_url"], headers=ALPHA).status_code == 409


def test_rq_jobs_are_listed_and_scoped_to_their_key(client, scene):
    jobs = [post(client, scene[0], headers=ALPHA, **QUICK) for _ in range(3)]  # no worker: all queued
    client.delete(jobs[0]["status_url"], headers=ALPHA)
    page = client.get("/v1/jobs", params={"limit": 2}, headers=ALPHA).json()
    assert [j["id"] for j in page["jobs"]] == [jobs[2]["id"], jobs[1]["id"]] and page["next_cursor"]
    rest = client.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}, headers=ALPHA).json()
    assert [j["id"] for j in rest["jobs"]] == [jobs[0]["id"]] and rest["next_cursor"] is None
    queued = client.get("/v1/jobs", params={"status": "queued"}, headers=ALPHA).json()
    assert [j["id"] for j in queued["jobs"]] == [jobs[2]["id"], jobs[1]["id"]]

    assert client.get("/v1/jobs", headers=BETA).json() == {"jobs": [], "next_cursor": None}
    for call in (client.get, client.delete):
        assert call(jobs[1]["status_url"], headers=BETA).status_code == 404
    assert client.get(jobs[1]["status_url"], headers=ALPHA).json()["status"] == "queued"
