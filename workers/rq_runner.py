"""The scaled-out runner: jobs on RQ queues in Redis, run by `eoz worker` processes.

The job id is the RQ job id. The record is read from RQ's own job hash: status, times,
the return value, and ``meta`` (kind, model, progress, error) that the worker keeps up to
date. Jobs are enqueued with ``Retry(max=ABANDONED_RETRIES)``: RQ re-queues a job whose
worker stopped heart-beating only when it has retries left (see ``workers.worker``).
"""

from __future__ import annotations

from datetime import timezone

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from eoz.resolve import QUEUES
from workers.errors import JobNotFoundError
from workers.metrics import RedisTally
from workers.runner import ABANDONED_RETRIES, RETENTION_SECONDS, JobRecord
from workers.settings import Settings

DEVICE_KEY = "eoz:worker-device:"  # + worker name -> device, expiring with the worker's heartbeat

_STATUS = {JobStatus.QUEUED: "queued", JobStatus.DEFERRED: "queued", JobStatus.SCHEDULED: "queued",
           JobStatus.CREATED: "queued", JobStatus.STARTED: "running", JobStatus.FINISHED: "finished",
           JobStatus.FAILED: "failed", JobStatus.STOPPED: "failed", JobStatus.CANCELED: "failed"}


def _utc(moment):
    return moment.replace(tzinfo=timezone.utc) if moment and moment.tzinfo is None else moment


class RQRunner:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.redis = Redis.from_url(settings.redis_url)
        self.tally = RedisTally(self.redis)
        self.queues = {name: Queue(name, connection=self.redis) for name in QUEUES}

    def submit(self, job_id: str, kind: str, model: str | None, queue: str, args: tuple,
               kwargs: dict) -> JobRecord:
        job = self.queues[queue].enqueue(
            f"workers.jobs.{kind}", args=args, kwargs=kwargs, job_id=job_id,
            job_timeout=self.settings.job_timeout, retry=Retry(max=ABANDONED_RETRIES),
            result_ttl=RETENTION_SECONDS, failure_ttl=RETENTION_SECONDS,
            meta={"kind": kind, "model": model, "progress": 0.0},
            description=f"{kind} {model or ''} {job_id}")
        return self._record(job)

    def get(self, job_id: str) -> JobRecord:
        try:
            job = Job.fetch(job_id, connection=self.redis)
        except NoSuchJobError:
            raise JobNotFoundError(f"no job {job_id!r}") from None
        return self._record(job)

    @staticmethod
    def _record(job: Job) -> JobRecord:
        meta = job.get_meta(refresh=False)
        status = _STATUS.get(job.get_status(refresh=False), "queued")
        result = job.return_value() if status == "finished" else None
        return JobRecord(
            id=job.id, kind=meta.get("kind", ""), model=meta.get("model"), queue=job.origin,
            status=status, created_at=_utc(job.created_at),
            progress=1.0 if status == "finished" else float(meta.get("progress", 0.0)),
            started_at=_utc(job.started_at) if status != "queued" else None,
            finished_at=_utc(job.ended_at) if status in ("finished", "failed") else None,
            result=result,
            error=(meta.get("error") or "the job failed without a recorded reason") if status == "failed" else None)

    def queue_depths(self) -> dict[str, int]:
        return {name: queue.count for name, queue in self.queues.items()}

    def worker_devices(self) -> dict[str, int]:
        keys = list(self.redis.scan_iter(match=f"{DEVICE_KEY}*"))
        devices: dict[str, int] = {}
        for value in self.redis.mget(keys) if keys else []:
            if value:
                devices[value.decode()] = devices.get(value.decode(), 0) + 1
        return devices

    def ping(self) -> None:
        self.redis.ping()

    def close(self) -> None:
        self.redis.close()
