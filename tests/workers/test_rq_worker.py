"""`eoz worker` processes on a real redis-server: failures, timeouts, and a SIGKILLed worker."""

from __future__ import annotations

import signal

import pytest
from rq.job import Job

from eoz import metrics
from eoz.scene import decompress_array
from tests.workers.servers import wait_until, write_crop
from workers.keys import new_job_id, result_key, upload_key
from workers.metrics import ServiceCollector
from workers.rq_runner import RQRunner
from workers.settings import Settings
from workers.store import make_store


@pytest.fixture()
def queue_env(service_env, redis_url, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("EOZ_HEARTBEAT_SECONDS", "1")
    settings = Settings()
    return settings, make_store(settings), RQRunner(settings)


def submit_compress(runner, store, path, params, tile_size=512):
    job_id = new_job_id()
    if path is not None:
        store.put_file(upload_key(job_id, ".tif"), path)
    runner.submit(job_id, "compress", "jpeg2000", "cpu", (job_id, upload_key(job_id, ".tif"), "jpeg2000"),
                  {"params": params, "tile_size": tile_size})
    return job_id


def outcomes(runner) -> dict:
    return {tuple(s.labels.values()): s.value for family in ServiceCollector(runner.tally, runner).collect()
            if family.name == "eoz_jobs" for s in family.samples if s.name == "eoz_jobs_total"}


def test_failures_and_timeouts_fail_at_once_with_their_reason(queue_env, scene, workers, monkeypatch, shared_data,
                                                               tmp_path):
    settings, store, runner = queue_env
    missing = submit_compress(runner, store, None, {"quality": 40.0})
    big = tmp_path / "big.tif"
    write_crop(shared_data, big, (0, 0, 768, 512))
    monkeypatch.setenv("EOZ_JOB_TIMEOUT", "1")
    slow = submit_compress(RQRunner(Settings()), store, big, {"psnr": 45.0}, tile_size=64)

    worker = workers.start("--queues", "cpu", "--burst")
    assert worker.wait(60) == 0, workers.logs()
    failed = runner.get(missing)
    assert failed.status == "failed" and "ObjectNotFoundError" in failed.error and "input.tif" in failed.error
    timed_out = runner.get(slow)
    assert timed_out.status == "failed" and "timeout" in timed_out.error
    for job_id in (missing, slow):  # ran once: a Retry is only for jobs whose worker vanished
        assert len(Job.fetch(job_id, connection=runner.redis).results()) == 1
    assert outcomes(runner) == {("compress", "jpeg2000", "failed"): 2}


def test_a_killed_worker_s_job_completes_on_another_worker(queue_env, workers, shared_data, tmp_path):
    settings, store, runner = queue_env
    path = tmp_path / "scene.tif"
    array, _ = write_crop(shared_data, path, (0, 0, 512, 512))  # 64 tiles: a few seconds of work
    job_id = submit_compress(runner, store, path, {"psnr": 45.0}, tile_size=64)

    first = workers.start("--queues", "cpu")
    wait_until(lambda: runner.get(job_id).progress > 0.05, 60, "the first worker to be mid-job")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert runner.get(job_id).status == "running"  # nobody knows yet

    workers.start("--queues", "cpu")
    wait_until(lambda: runner.get(job_id).status in ("finished", "failed"), 90, "the job to be re-run")
    record = runner.get(job_id)
    assert record.status == "finished", (record.error, workers.logs())
    assert store.keys(f"results/{job_id}/") == [result_key(job_id, ".eoz")]
    assert store.keys("tmp/") == []
    local = tmp_path / "result.eoz"
    store.get_file(record.result["key"], local)
    recon, _ = decompress_array(local.read_bytes())
    assert metrics.psnr(array, recon, 10000.0) == pytest.approx(record.result["psnr"]) and record.result["psnr"] >= 45
    assert outcomes(runner) == {("compress", "jpeg2000", "abandoned"): 1, ("compress", "jpeg2000", "finished"): 1}
