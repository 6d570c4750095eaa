"""The embedded default's job records in SQLite: they outlive the process, move only along
the job's life, page newest first per owner, and say what happens to interrupted jobs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from eoz.errors import InputError
from workers.errors import JobNotFoundError
from workers.job_records import JobRecords
from workers.runner import ABANDONED_RETRIES, JobRecord

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def record(number: int, owner: str = "a" * 64, status: str = "queued", **fields) -> JobRecord:
    return JobRecord(id=f"{number:032x}", kind="compress", model="jpeg2000", queue="cpu", status=status,
                     created_at=T0 + timedelta(seconds=number), owner=owner, **fields)


def test_records_outlive_the_connection(tmp_path):
    records = JobRecords(tmp_path / "jobs.sqlite3")
    records.insert(record(1), ("id", "uploads/x/input.tif", "jpeg2000"), {"params": {"quality": 40.0}})
    assert records.transition(f"{1:032x}", ("queued",), status="running", started_at=T0, progress=0.0)
    records.update(f"{1:032x}", progress=0.5)
    assert records.transition(f"{1:032x}", ("running",), status="finished", finished_at=T0, progress=1.0,
                              result={"key": "results/x/output.eoz", "bytes": 10})
    records.close()

    reopened = JobRecords(tmp_path / "jobs.sqlite3")
    got = reopened.get(f"{1:032x}")
    assert (got.status, got.progress, got.result, got.started_at, got.owner) == (
        "finished", 1.0, {"key": "results/x/output.eoz", "bytes": 10}, T0, "a" * 64)
    assert reopened.task(f"{1:032x}") == ("compress", ["id", "uploads/x/input.tif", "jpeg2000"],
                                          {"params": {"quality": 40.0}})
    with pytest.raises(JobNotFoundError):
        reopened.get(f"{2:032x}")


def test_a_transition_happens_only_from_the_states_it_names(tmp_path):
    records = JobRecords(tmp_path / "jobs.sqlite3")
    records.insert(record(1), (), {})
    assert records.transition(f"{1:032x}", ("queued",), status="canceled")
    assert not records.transition(f"{1:032x}", ("queued",), status="running")  # a canceled job never starts
    assert records.get(f"{1:032x}").status == "canceled"


def test_pages_are_newest_first_per_owner_and_filtered_by_status(tmp_path):
    records = JobRecords(tmp_path / "jobs.sqlite3")
    for number in range(1, 6):
        records.insert(record(number), (), {})
    records.insert(record(6, owner="b" * 64), (), {})
    records.transition(f"{2:032x}", ("queued",), status="canceled")
    records.transition(f"{4:032x}", ("queued",), status="canceled")

    first = records.page("a" * 64, None, 2, None)
    assert [r.id for r in first.jobs] == [f"{5:032x}", f"{4:032x}"] and first.next_cursor
    second = records.page("a" * 64, None, 2, first.next_cursor)
    assert [r.id for r in second.jobs] == [f"{3:032x}", f"{2:032x}"]
    last = records.page("a" * 64, None, 2, second.next_cursor)
    assert [r.id for r in last.jobs] == [f"{1:032x}"] and last.next_cursor is None
    assert [r.id for r in records.page("a" * 64, "canceled", 10, None).jobs] == [f"{4:032x}", f"{2:032x}"]
    assert [r.id for r in records.page("b" * 64, None, 10, None).jobs] == [f"{6:032x}"]
    with pytest.raises(InputError, match="cursor"):
        records.page("a" * 64, None, 2, "not-a-cursor")


def test_interrupted_jobs_are_requeued_until_they_ran_out_of_retries(tmp_path):
    records = JobRecords(tmp_path / "jobs.sqlite3")
    records.insert(record(1), (), {})  # queued: waits again
    records.insert(record(2, status="running", progress=0.4, attempts=1), (), {})  # may run again
    records.insert(record(3, status="running", progress=0.7, attempts=1 + ABANDONED_RETRIES), (), {})
    records.insert(record(4, status="finished", progress=1.0), (), {})

    assert records.recover(1 + ABANDONED_RETRIES) == [f"{1:032x}", f"{2:032x}"]
    rerun = records.get(f"{2:032x}")
    assert (rerun.status, rerun.progress, rerun.started_at) == ("queued", 0.0, None)
    given_up = records.get(f"{3:032x}")
    assert given_up.status == "failed" and "interrupted" in given_up.error and given_up.finished_at
    assert records.get(f"{4:032x}").status == "finished"


def test_ended_records_expire(tmp_path):
    records = JobRecords(tmp_path / "jobs.sqlite3")
    records.insert(record(1, status="finished", finished_at=T0), (), {})
    records.insert(record(2, status="running"), (), {})
    assert records.expire(ended_before=T0 + timedelta(days=1)) == 1
    assert [r.id for r in records.page("a" * 64, None, 10, None).jobs] == [f"{2:032x}"]
