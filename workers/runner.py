"""The job runner behind one interface: in-process threads (embedded default) or RQ.

The API submits jobs and reads their state only through ``Runner``; which one it gets
depends on REDIS_URL alone (``make_runner``). Both run the same job functions of
``workers.jobs`` inside a ``workers.context`` and report the same ``JobRecord``.

Failure policy, shared by both: an error the job raises fails it at once (store errors were
already retried with backoff inside the job, and bad input stays bad); a job past
EOZ_JOB_TIMEOUT is stopped and failed; only a job whose worker vanished (SIGKILL, OOM kill,
lost machine, a crash of the embedded service) is run again, up to ``ABANDONED_RETRIES`` times.
A canceled job (``cancel``) is stopped where it runs and never run again.

Every record belongs to the API key that created it (``owner``: the key's sha256, or "" on
an open service); the API reads, lists and cancels jobs only for their owner.
"""

from __future__ import annotations

import base64
import logging
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal, Protocol

from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from eoz.errors import EozError, InputError
from workers.errors import JobCanceledError
from workers.metrics import Tally
from workers.redaction import redact
from workers.settings import Settings
from workers.store import ObjectStore

Status = Literal["queued", "running", "finished", "failed", "canceled"]
STATUSES: tuple[Status, ...] = ("queued", "running", "finished", "failed", "canceled")
ENDED = ("finished", "failed", "canceled")
KINDS = ("compress", "decompress", "features")
ABANDONED_RETRIES = 2
PROGRESS_INTERVAL = 0.5  # seconds between progress writes to the record
CANCELED_REASON = "canceled on request (DELETE /v1/jobs/{id})"


@dataclass
class JobRecord:
    id: str
    kind: str
    model: str | None
    queue: str
    status: Status
    created_at: datetime
    progress: float = 0.0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict | None = None
    error: str | None = None
    owner: str = ""  # sha256 of the API key that created the job; "" on an open service
    attempts: int = 0  # times a worker started it


@dataclass(frozen=True)
class JobPage:
    """One page of a listing, newest first; next_cursor continues it (None: no more)."""

    jobs: list[JobRecord]
    next_cursor: str | None


def sort_key(record: JobRecord) -> str:
    """Orders jobs by creation, then id: fixed-width UTC time, so text order is time order."""
    return f"{record.created_at.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S.%fZ}|{record.id}"


def encode_cursor(record: JobRecord) -> str:
    """An opaque cursor: the listing continues with the jobs older than this one."""
    return base64.urlsafe_b64encode(sort_key(record).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The sort key a cursor stands for; InputError when it is not one of ours."""
    try:
        key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, job_id = key.split("|")
        datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InputError(f"cursor {cursor!r} is not a cursor from a previous page") from None
    if len(job_id) != 32:
        raise InputError(f"cursor {cursor!r} is not a cursor from a previous page")
    return key


def throttled(save: Callable[[float], None], interval: float = PROGRESS_INTERVAL) -> Callable[[float], None]:
    """Progress reporter that passes on at most one fraction per interval (the first at once)."""
    last = -interval

    def report(fraction: float) -> None:
        nonlocal last
        if time.monotonic() - last >= interval:
            last = time.monotonic()
            save(round(fraction, 4))
    return report


class Runner(Protocol):
    tally: Tally  # where ended jobs are counted, for /metrics

    def submit(self, job_id: str, kind: str, model: str | None, queue: str, args: tuple,
               kwargs: dict, owner: str = "") -> JobRecord:
        """Queue ``workers.jobs.<kind>(*args, **kwargs)`` under job_id, for owner."""

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        """The job's state; JobNotFoundError when there is no such job (or, given an owner,
        when it is someone else's)."""

    def list(self, owner: str, status: Status | None, limit: int, cursor: str | None) -> JobPage:
        """The owner's jobs, newest first, optionally of one status."""

    def cancel(self, job_id: str, owner: str | None = None) -> JobRecord:
        """Cancel a queued or running job (stopping it where it runs); a canceled job stays
        canceled. JobEndedError when it already finished or failed."""

    def expire(self, ended_before: datetime) -> int:
        """Forget jobs that ended before the moment (``workers.cleanup``); how many."""

    def queue_depths(self) -> dict[str, int]: ...

    def worker_devices(self) -> dict[str, int]:
        """How many live workers compute on each device."""

    def ping(self) -> None:
        """Raise when jobs cannot be queued (readiness)."""

    def close(self) -> None: ...


def describe_failure(error: BaseException) -> str:
    """The reason a client reads in the job's ``error``: the message, named by its kind."""
    if isinstance(error, JobCanceledError):
        return CANCELED_REASON
    if isinstance(error, JobTimeoutException):
        return f"the job ran past its timeout (EOZ_JOB_TIMEOUT): {error}"
    if isinstance(error, AbandonedJobError):
        return "the worker running the job stopped responding (killed or lost)"
    if isinstance(error, EozError):  # without this host's paths (workers/redaction.py)
        return redact(f"{type(error).__name__}: {error}")
    logging.getLogger("eoz.jobs").error("a job failed unexpectedly", exc_info=error)
    return f"internal error ({type(error).__name__}); the worker's log has the details"


def make_runner(settings: Settings, store: ObjectStore) -> Runner:
    """RQ queues on REDIS_URL when it is set, else worker processes of this one."""
    if settings.redis_url:
        from workers.rq_runner import RQRunner

        return RQRunner(settings)
    from workers.inprocess import InProcessRunner

    return InProcessRunner(settings, store)
