"""The scaled-out runner: jobs on RQ queues in Redis, run by `eoz worker` processes.

The job id is the RQ job id. The record is read from RQ's own job hash: status, times,
the return value, and ``meta`` (kind, model, owner, progress, error) that the worker keeps up
to date. Jobs are enqueued with ``Retry(max=ABANDONED_RETRIES)``: RQ re-queues a job whose
worker stopped heart-beating only when it has retries left (see ``workers.worker``), and
with EOZ_JOB_TIMEOUT, which the worker enforces. Ended jobs expire after EOZ_RETENTION_DAYS.

Listing: each owner has a sorted set of its jobs (``LISTING_KEY``), members
``<created>|<id>`` at one score, so Redis orders them by time and a cursor is a member.
Cancel: a queued job is canceled in RQ at once; a running one is marked (``CANCEL_KEY``) and
its worker stops it at its next progress report (``workers.worker``); the mark also keeps a
job re-queued after its worker died from running again.
"""

from __future__ import annotations

from datetime import datetime, timezone

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

from eoz.resolve import QUEUES
from workers.errors import JobEndedError, JobNotFoundError
from workers.metrics import RedisTally
from workers.runner import (
    ABANDONED_RETRIES,
    CANCELED_REASON,
    JobPage,
    JobRecord,
    Status,
    decode_cursor,
    encode_cursor,
    sort_key,
)
from workers.settings import Settings

DEVICE_KEY = "eoz:worker-device:"  # + worker name -> device, expiring with the worker's heartbeat
LISTING_KEY = "eoz:jobs:"  # + owner -> sorted set of "<created>|<id>"
CANCEL_KEY = "eoz:cancel:"  # + job id -> set when the job was canceled
SCAN_BATCH = 200

_STATUS = {JobStatus.QUEUED: "queued", JobStatus.DEFERRED: "queued", JobStatus.SCHEDULED: "queued",
           JobStatus.CREATED: "queued", JobStatus.STARTED: "running", JobStatus.FINISHED: "finished",
           JobStatus.FAILED: "failed", JobStatus.STOPPED: "canceled", JobStatus.CANCELED: "canceled"}


def _utc(moment):
    return moment.replace(tzinfo=timezone.utc) if moment and moment.tzinfo is None else moment


def listing_key(owner: str) -> str:
    return LISTING_KEY + (owner or "open")


class RQRunner:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.redis = Redis.from_url(settings.redis_url)
        self.tally = RedisTally(self.redis)
        self.queues = {name: Queue(name, connection=self.redis) for name in QUEUES}

    def submit(self, job_id: str, kind: str, model: str | None, queue: str, args: tuple,
               kwargs: dict, owner: str = "") -> JobRecord:
        retention = self.settings.retention_seconds
        job = self.queues[queue].enqueue(
            f"workers.jobs.{kind}", args=args, kwargs=kwargs, job_id=job_id,
            job_timeout=self.settings.job_timeout, retry=Retry(max=ABANDONED_RETRIES),
            result_ttl=retention, failure_ttl=retention,
            meta={"kind": kind, "model": model, "owner": owner, "progress": 0.0},
            description=f"{kind} {model or ''} {job_id}")
        record = self._record(job, canceled=False)
        self.redis.zadd(listing_key(owner), {sort_key(record): 0})
        return record

    def _fetch(self, job_id: str, owner: str | None) -> Job:
        try:
            job = Job.fetch(job_id, connection=self.redis)
        except NoSuchJobError:
            raise JobNotFoundError(f"no job {job_id!r}") from None
        if owner is not None and job.get_meta(refresh=False).get("owner", "") != owner:
            raise JobNotFoundError(f"no job {job_id!r}")
        return job

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        job = self._fetch(job_id, owner)
        return self._record(job, self.redis.exists(CANCEL_KEY + job_id) > 0)

    @staticmethod
    def _record(job: Job, canceled: bool) -> JobRecord:
        meta = job.get_meta(refresh=False)
        status = _STATUS.get(job.get_status(refresh=False), "queued")
        if canceled and status != "finished":  # a job that finished before the cancel reached it stays finished
            status = "canceled"
        result = job.return_value() if status == "finished" else None
        ended = status in ("finished", "failed") or (status == "canceled" and job.ended_at)
        return JobRecord(
            id=job.id, kind=meta.get("kind", ""), model=meta.get("model"), queue=job.origin,
            status=status, created_at=_utc(job.created_at),
            progress=1.0 if status == "finished" else float(meta.get("progress", 0.0)),
            started_at=_utc(job.started_at) if status != "queued" and job.started_at else None,
            finished_at=_utc(job.ended_at) if ended else None,
            result=result, owner=meta.get("owner", ""),
            error=CANCELED_REASON if status == "canceled" else
            (meta.get("error") or "the job failed without a recorded reason") if status == "failed" else None)

    def list(self, owner: str, status: Status | None, limit: int, cursor: str | None) -> JobPage:
        """Walks the owner's listing newest first, in batches, keeping the jobs of the status."""
        key, upper = listing_key(owner), f"({decode_cursor(cursor)}" if cursor else "+"
        jobs: list[JobRecord] = []
        while len(jobs) <= limit:
            members = [m.decode() for m in self.redis.zrevrangebylex(key, upper, "-", start=0, num=SCAN_BATCH)]
            if not members:
                break
            ids = [m.rsplit("|", 1)[1] for m in members]
            with self.redis.pipeline() as pipe:
                for job_id in ids:
                    pipe.exists(CANCEL_KEY + job_id)
                canceled = pipe.execute()
            for member, job, is_canceled in zip(members, Job.fetch_many(ids, connection=self.redis), canceled):
                if job is None:  # expired from Redis
                    self.redis.zrem(key, member)
                    continue
                record = self._record(job, bool(is_canceled))
                if status is None or record.status == status:
                    jobs.append(record)
            upper = f"({members[-1]}"
        page = jobs[:limit]
        return JobPage(page, encode_cursor(page[-1]) if len(jobs) > limit else None)

    def cancel(self, job_id: str, owner: str | None = None) -> JobRecord:
        job = self._fetch(job_id, owner)
        record = self._record(job, canceled=False)
        if record.status in ("finished", "failed"):
            raise JobEndedError(f"job {job_id} already {record.status}: there is nothing to cancel")
        self.redis.set(CANCEL_KEY + job_id, 1, ex=self.settings.retention_seconds)
        if record.status == "queued":
            try:
                job.cancel()
            except InvalidJobOperation:  # canceled already
                pass
        return self.get(job_id, owner)

    def expire(self, ended_before: datetime) -> int:
        """Job hashes expire by TTL; this drops listing entries older than any record can be."""
        removed = 0
        for key in self.redis.scan_iter(match=f"{LISTING_KEY}*"):
            removed += self.redis.zremrangebylex(key, "-", f"({ended_before:%Y-%m-%dT%H:%M:%S.%fZ}")
        return removed

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
