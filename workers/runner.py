"""The job runner behind one interface: in-process threads (embedded default) or RQ.

The API submits jobs and reads their state only through ``Runner``; which one it gets
depends on REDIS_URL alone (``make_runner``). Both run the same job functions of
``workers.jobs`` inside a ``workers.context`` and report the same ``JobRecord``.

Failure policy, shared by both: an error the job raises fails it at once (store errors were
already retried with backoff inside the job, and bad input stays bad); only a job whose
worker vanished (SIGKILL, lost machine) is run again, up to ``ABANDONED_RETRIES`` times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from eoz.errors import EozError
from workers.metrics import Tally
from workers.redaction import redact
from workers.settings import Settings
from workers.store import ObjectStore

Status = Literal["queued", "running", "finished", "failed"]
KINDS = ("compress", "decompress", "features")
ABANDONED_RETRIES = 2
RETENTION_SECONDS = 7 * 24 * 3600  # how long job records are kept after they end


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


class Runner(Protocol):
    tally: Tally  # where ended jobs are counted, for /metrics

    def submit(self, job_id: str, kind: str, model: str | None, queue: str, args: tuple,
               kwargs: dict) -> JobRecord:
        """Queue ``workers.jobs.<kind>(*args, **kwargs)`` under job_id."""

    def get(self, job_id: str) -> JobRecord:
        """The job's state; JobNotFoundError when there is no such job."""

    def queue_depths(self) -> dict[str, int]: ...

    def worker_devices(self) -> dict[str, int]:
        """How many live workers compute on each device."""

    def ping(self) -> None:
        """Raise when jobs cannot be queued (readiness)."""

    def close(self) -> None: ...


def describe_failure(error: BaseException) -> str:
    """The reason a client reads in the job's ``error``: the message, named by its kind."""
    if isinstance(error, JobTimeoutException):
        return f"the job ran past its timeout (EOZ_JOB_TIMEOUT): {error}"
    if isinstance(error, AbandonedJobError):
        return "the worker running the job stopped responding (killed or lost)"
    if isinstance(error, EozError):  # without this host's paths (workers/redaction.py)
        return redact(f"{type(error).__name__}: {error}")
    logging.getLogger("eoz.jobs").error("a job failed unexpectedly", exc_info=error)
    return f"internal error ({type(error).__name__}); the worker's log has the details"


def make_runner(settings: Settings, store: ObjectStore) -> Runner:
    """RQ queues on REDIS_URL when it is set, else a thread pool in this process."""
    if settings.redis_url:
        from workers.rq_runner import RQRunner

        return RQRunner(settings)
    from workers.inprocess import InProcessRunner

    return InProcessRunner(settings, store)
