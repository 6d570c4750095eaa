"""What the object store leaves behind: durable renames, one temporary key per attempt, S3
objects a browser saves under a sensible name, and nothing kept past EOZ_RETENTION_DAYS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.workers.servers import ROOT
from workers.cleanup import cleanup
from workers.job_records import JobRecords
from workers.keys import result_key, temp_key
from workers.runner import JobRecord
from workers.settings import Settings
from workers.store import FilesystemStore, S3Store, make_store

JOB = "0123456789abcdef0123456789abcdef"


def test_each_attempt_writes_its_own_temporary_key():
    first, second = temp_key(JOB, ".eoz"), temp_key(JOB, ".eoz")
    assert first != second  # a stalled run and its re-run cannot delete each other's object
    assert first.startswith(f"tmp/{JOB}/") and second.endswith(".eoz")


def test_filesystem_renames_are_flushed_to_disk(tmp_path, monkeypatch):
    store = FilesystemStore(tmp_path / "store")
    source = tmp_path / "in.bin"
    source.write_bytes(b"payload")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(descriptor):  # a power cut cannot be staged: record what was flushed instead
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)
    monkeypatch.setattr(os, "fsync", fsync)

    store.put_file(f"tmp/{JOB}/a.eoz", source)
    assert any(p.endswith(".part") for p in synced)  # the data, before the rename
    assert synced[-1] == str(store.root / "tmp" / JOB)  # the rename itself
    synced.clear()
    store.move(f"tmp/{JOB}/a.eoz", result_key(JOB, ".eoz"))
    assert str(store.root / "results" / JOB) in synced


def test_s3_results_carry_a_content_type_and_a_filename(s3, moto_endpoint, tmp_path):
    client, bucket = s3
    store = S3Store(bucket, moto_endpoint)
    path = tmp_path / "out"
    path.write_bytes(b"II*\x00")
    for suffix, media_type in ((".tif", "image/tiff"), (".eoz", "application/octet-stream")):
        temporary = temp_key(JOB, suffix)
        store.put_file(temporary, path)
        store.move(temporary, result_key(JOB, suffix))
        head = client.head_object(Bucket=bucket, Key=result_key(JOB, suffix))
        assert head["ContentType"] == media_type
        assert head["ContentDisposition"] == f'attachment; filename="{JOB}{suffix}"'


def put(store, key: str, tmp_path) -> None:
    path = tmp_path / "object"
    path.write_bytes(b"x")
    store.put_file(key, path)


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_cleanup_expires_old_uploads_temporaries_results_scratch_and_records(backend, request, service_env,
                                                                             monkeypatch, tmp_path):
    if backend == "s3":
        request.getfixturevalue("s3")
    monkeypatch.setenv("EOZ_RETENTION_DAYS", "2")
    settings = Settings()
    store = make_store(settings)
    kept = ["models/" + "a" * 64 + "/manifest.json"]
    expiring = [f"uploads/{JOB}/input.tif", f"tmp/{JOB}/attempt.eoz", result_key(JOB, ".eoz")]
    for key in kept + expiring:
        put(store, key, tmp_path)
    killed = settings.scratch_dir / f"{JOB}-abc123"  # a killed job's scratch folder
    (killed / "input.tif").parent.mkdir(parents=True)
    (killed / "input.tif").write_bytes(b"x")
    records = JobRecords(settings.data_dir / "jobs.sqlite3")
    ended = datetime.now(timezone.utc)
    records.insert(JobRecord(id=JOB, kind="compress", model="jpeg2000", queue="cpu", status="finished",
                             created_at=ended, finished_at=ended), (), {})

    assert cleanup(settings, store, records) == {"objects": 0, "scratch": 0, "records": 0}
    assert store.keys("") == sorted(kept + expiring) and killed.exists()

    later = datetime.now(timezone.utc) + timedelta(days=2, hours=1)
    assert cleanup(settings, store, records, now=later) == {"objects": 3, "scratch": 1, "records": 1}
    assert store.keys("") == kept and not killed.exists()
    assert records.page("", None, 10, None).jobs == []


def test_eoz_cleanup_expires_an_aged_data_folder(service_env, tmp_path):
    settings = Settings()
    store = make_store(settings)
    put(store, f"uploads/{JOB}/input.tif", tmp_path)
    put(store, f"uploads/{'f' * 32}/input.tif", tmp_path)
    old = time.time() - 8 * 24 * 3600  # past the default retention of 7 days
    os.utime(store.root / "uploads" / JOB / "input.tif", (old, old))

    done = subprocess.run([sys.executable, "-m", "eoz.cli", "cleanup"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["objects"] == 1
    assert store.keys("uploads/") == [f"uploads/{'f' * 32}/input.tif"]
    assert not (store.root / "uploads" / JOB).exists()  # no empty folder left behind
