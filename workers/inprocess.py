"""The embedded default's runner: a pool of EOZ_WORKERS threads in the API process.

Same job functions, same context and metrics as the RQ workers, so `eoz serve` alone is a
complete service. Job records live in memory (a restart forgets them, results stay in the
store) and, as threads cannot be stopped from outside, EOZ_JOB_TIMEOUT applies to RQ
workers only.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from eoz.resolve import QUEUES
from workers import context, jobs
from workers.device import compute_device
from workers.errors import JobNotFoundError
from workers.metrics import MemoryTally, record_job
from workers.runner import RETENTION_SECONDS, JobRecord, describe_failure
from workers.settings import Settings
from workers.store import ObjectStore


def _now() -> datetime:
    return datetime.now(timezone.utc)


class InProcessRunner:
    def __init__(self, settings: Settings, store: ObjectStore):
        self.settings, self.store = settings, store
        self.tally = MemoryTally()
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="eoz-job")
        self._records: dict[str, JobRecord] = {}
        self._lock = threading.Lock()

    def submit(self, job_id: str, kind: str, model: str | None, queue: str, args: tuple,
               kwargs: dict) -> JobRecord:
        record = JobRecord(id=job_id, kind=kind, model=model, queue=queue, status="queued",
                           created_at=_now())
        with self._lock:
            self._forget_old()
            self._records[job_id] = record
        self._pool.submit(self._run, record, args, kwargs)
        return replace(record)

    def _run(self, record: JobRecord, args: tuple, kwargs: dict) -> None:
        start = time.perf_counter()
        self._update(record, status="running", started_at=_now())
        job_context = context.JobContext(self.settings, self.store,
                                         lambda fraction: self._update(record, progress=round(fraction, 4)))
        try:
            with context.running(job_context):
                result = getattr(jobs, record.kind)(*args, **kwargs)
        except Exception as error:  # the job's failure is its record's, not the pool's
            self._update(record, status="failed", finished_at=_now(), error=describe_failure(error))
            record_job(self.tally, record.kind, record.model or "", "failed", time.perf_counter() - start)
        else:
            self._update(record, status="finished", finished_at=_now(), progress=1.0, result=result)
            record_job(self.tally, record.kind, record.model or "", "finished",
                       time.perf_counter() - start, result)

    def _update(self, record: JobRecord, **changes) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(record, name, value)

    def _forget_old(self) -> None:
        cutoff = _now() - timedelta(seconds=RETENTION_SECONDS)
        for job_id in [i for i, r in self._records.items() if r.finished_at and r.finished_at < cutoff]:
            del self._records[job_id]

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            if job_id not in self._records:
                raise JobNotFoundError(f"no job {job_id!r}")
            return replace(self._records[job_id])

    def queue_depths(self) -> dict[str, int]:
        depths = dict.fromkeys(QUEUES, 0)
        with self._lock:
            for record in self._records.values():
                depths[record.queue] += record.status == "queued"
        return depths

    def worker_devices(self) -> dict[str, int]:
        return {compute_device(): self.settings.workers}

    def ping(self) -> None:
        """Threads of this process: ready whenever the process runs."""

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
