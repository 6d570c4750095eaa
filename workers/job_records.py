"""Job records of the embedded default, in SQLite under EOZ_DATA_DIR, so a restart keeps them.

One row per job: its ``JobRecord`` plus what is needed to run it again (the job function's
arguments) and how often a worker started it. State changes are compare-and-set
(``transition``): a job moves queued -> running -> finished | failed, or to canceled from
queued or running, and a change from a state the job has already left does nothing, so a
cancel and the job's own end cannot both win. WAL with synchronous=NORMAL: a committed change
survives a crash of the process (a power cut may lose the last few).

A restart ``recover``s what was interrupted: queued jobs wait again; a running job is queued
again from progress 0, or failed with the reason once it was started ``max_attempts`` times
(a job that keeps bringing the service down is not run forever).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

from workers.errors import JobNotFoundError
from workers.runner import ENDED, JobPage, JobRecord, decode_cursor, encode_cursor, sort_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sort_key TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    progress REAL NOT NULL,
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    args TEXT NOT NULL,
    kwargs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, sort_key);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, sort_key);
"""
_TIMES = ("created_at", "started_at", "finished_at")
_FIELDS = ("id", "owner", "kind", "model", "queue", "status", "created_at", "started_at", "finished_at",
           "progress", "result", "error", "attempts")


def _column(name: str, value):
    if name in _TIMES:
        # fixed width (microseconds always written), so text order is time order
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds") if value else None
    if name == "result":
        return json.dumps(value) if value is not None else None
    return value


def _record(row: sqlite3.Row) -> JobRecord:
    fields = {name: row[name] for name in _FIELDS}
    for name in _TIMES:
        fields[name] = datetime.fromisoformat(fields[name]) if fields[name] else None
    fields["result"] = json.loads(fields["result"]) if fields["result"] else None
    return JobRecord(**fields)


class JobRecords:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()  # one connection, shared by the runner's threads
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def _run(self, sql: str, parameters=()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, parameters)

    def insert(self, record: JobRecord, args, kwargs: dict) -> None:
        columns = {name: _column(name, getattr(record, name)) for name in _FIELDS}
        columns.update(sort_key=sort_key(record), args=json.dumps(list(args)), kwargs=json.dumps(kwargs))
        self._run(f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                  tuple(columns.values()))

    def get(self, job_id: str) -> JobRecord:
        row = self._run("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return _record(row)

    def task(self, job_id: str) -> tuple[str, list, dict]:
        """(kind, args, kwargs) that run the job."""
        row = self._run("SELECT kind, args, kwargs FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row["kind"], json.loads(row["args"]), json.loads(row["kwargs"])

    def _set(self, changes: dict) -> tuple[str, list]:
        names = [n for n in changes if n in _FIELDS and n != "id"]
        if len(names) != len(changes):
            raise ValueError(f"not job record fields: {sorted(set(changes) - set(names))}")
        return ", ".join(f"{n} = ?" for n in names), [_column(n, changes[n]) for n in names]

    def transition(self, job_id: str, from_statuses: tuple[str, ...], **changes) -> bool:
        """Apply changes only while the job is in one of from_statuses; whether it was."""
        assignments, values = self._set(changes)
        marks = ", ".join("?" * len(from_statuses))
        cursor = self._run(f"UPDATE jobs SET {assignments} WHERE id = ? AND status IN ({marks})",
                           (*values, job_id, *from_statuses))
        return cursor.rowcount == 1

    def update(self, job_id: str, **changes) -> None:
        """Progress of a running job (nothing else changes without a transition)."""
        self.transition(job_id, ("running",), **changes)

    def page(self, owner: str, status: str | None, limit: int, cursor: str | None) -> JobPage:
        where, values = ["owner = ?"], [owner]
        if status:
            where.append("status = ?")
            values.append(status)
        if cursor:
            where.append("sort_key < ?")
            values.append(decode_cursor(cursor))
        rows = self._run(f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY sort_key DESC LIMIT ?",
                         (*values, limit + 1)).fetchall()
        jobs = [_record(row) for row in rows[:limit]]
        return JobPage(jobs, encode_cursor(jobs[-1]) if len(rows) > limit else None)

    def waiting(self) -> list[str]:
        """Queued jobs, oldest first."""
        return [row["id"] for row in self._run("SELECT id FROM jobs WHERE status = 'queued' ORDER BY sort_key")]

    def queued_by_queue(self) -> dict[str, int]:
        rows = self._run("SELECT queue, COUNT(*) AS n FROM jobs WHERE status = 'queued' GROUP BY queue")
        return {row["queue"]: row["n"] for row in rows}

    def recover(self, max_attempts: int) -> list[str]:
        """After a restart: requeue or fail the jobs that were running; the queued ones, oldest first."""
        now = datetime.now(timezone.utc)
        self._transition_all("attempts >= ?", (max_attempts,), status="failed", finished_at=now,
                            error=f"interrupted {max_attempts} times (the service or its worker stopped while "
                                  "the job ran); not run again")
        self._transition_all("attempts < ?", (max_attempts,), status="queued", progress=0.0,
                            started_at=None)
        return self.waiting()

    def _transition_all(self, condition: str, parameters: tuple, **changes) -> int:
        """Apply changes to every running job that meets the condition."""
        assignments, values = self._set(changes)
        return self._run(f"UPDATE jobs SET {assignments} WHERE status = 'running' AND {condition}",
                         (*values, *parameters)).rowcount

    def expire(self, ended_before: datetime) -> int:
        """Forget jobs that ended before the moment; how many."""
        marks = ", ".join("?" * len(ENDED))
        return self._run(f"DELETE FROM jobs WHERE status IN ({marks}) AND finished_at < ?",
                         (*ENDED, _column("finished_at", ended_before))).rowcount

    def ping(self) -> None:
        self._run("SELECT 1")

    def close(self) -> None:
        with self._lock:
            self._db.close()
