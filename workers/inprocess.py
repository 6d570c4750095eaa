"""The embedded default's runner: EOZ_WORKERS worker processes under the API, records in SQLite.

Same job functions, same context and metrics as the RQ workers, so `eoz serve` alone is a
complete service. Why processes, not threads: a job that exhausts memory, crashes in native
code or runs for hours takes down only its worker process, and a process can be stopped from
outside, which is how EOZ_JOB_TIMEOUT, cancel and shutdown stop a job. Each worker process is
spawned (no fork: no CUDA or lock state inherited), keeps its models loaded between jobs,
and is replaced after it was killed.

Each slot is a thread of the API that owns one worker process: it takes the oldest queued
job, sends it over a pipe, writes the progress the job reports (``workers.context``) into
the record, and settles it: finished, failed with the job's reason, failed past the timeout,
canceled, or re-queued when the worker process died (a SIGKILL, the OOM killer, a segfault;
up to ``ABANDONED_RETRIES`` times, as RQ does with a vanished worker). Shutdown stops the
running jobs at once and queues them again, without counting it against their retries; a
crash of the whole service leaves them "running", and the next start re-queues them, which
does count (``JobRecords.recover``), so a job that keeps bringing the service down is failed.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import threading
import time
from datetime import datetime, timezone
from multiprocessing.connection import Connection, wait

from eoz.resolve import QUEUES
from workers import context
from workers.device import compute_device
from eoz.errors import EozError
from workers.errors import JobEndedError, JobNotFoundError
from workers.job_records import JobRecords
from workers.metrics import MemoryTally, record_job
from workers.runner import (
    ABANDONED_RETRIES,
    CANCELED_REASON,
    JobPage,
    JobRecord,
    Status,
    describe_failure,
    throttled,
)
from workers.settings import Settings
from workers.store import ObjectStore, make_store

PROCESS_NAME = "eoz-job"  # worker processes are named eoz-job-<slot>
log = logging.getLogger("eoz.runner")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def serve_jobs(connection: Connection, settings: Settings) -> None:
    """A worker process: run the jobs the slot sends, one at a time, reporting over the pipe.

    Messages in: (kind, args, kwargs). Out: ("ready",) once, then per job any number of
    ("progress", fraction) and one ("finished", result) or ("failed", reason).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the API decides
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    from workers import jobs  # the heavy imports (torch, rasterio) before "ready": not on a job's clock

    store = make_store(settings)
    connection.send(("ready",))
    while True:
        try:
            kind, args, kwargs = connection.recv()
        except EOFError:  # the API closed the pipe
            return
        job_context = context.JobContext(settings, store, throttled(lambda f: connection.send(("progress", f))))
        try:
            with context.running(job_context):
                result = getattr(jobs, kind)(*args, **kwargs)
        except Exception as error:  # the job's failure is its record's, not the process's
            connection.send(("failed", describe_failure(error)))
        else:
            connection.send(("finished", result))


def _exit_with_parent(parent: int) -> None:
    """A worker whose API died (SIGKILL) stops too, rather than computing for nobody."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


class _Slot:
    """One worker process and the API thread that feeds it jobs and settles them."""

    def __init__(self, runner: InProcessRunner, number: int):
        self.runner, self.number = runner, number
        self.process: multiprocessing.Process | None = None
        self.connection: Connection | None = None
        self.job_id: str | None = None
        self._wake_reader, self._wake_writer = multiprocessing.Pipe(duplex=False)
        self.thread = threading.Thread(target=self._serve, name=f"eoz-slot-{number}", daemon=True)

    def wake(self) -> None:
        """Make the slot look at its job's record now (canceled) or at the runner (stopping)."""
        self._wake_writer.send(None)

    def _serve(self) -> None:
        runner = self.runner
        while True:
            job_id = runner.waiting.get()
            if job_id is None or runner.stopping.is_set():  # close(): the job stays queued
                break
            record = runner.records.get(job_id)
            self.job_id = job_id  # before it runs, so that a cancel finds its slot
            try:
                if runner.records.transition(job_id, ("queued",), status="running", started_at=_now(),
                                             progress=0.0, attempts=record.attempts + 1):
                    self._run(job_id, record)
            except Exception:  # a fault of the runner itself: fail the job, keep serving the others
                log.exception("the embedded runner failed on job %s", job_id)
                self._kill(job_id)
                runner.records.transition(job_id, ("running",), status="failed", finished_at=_now(),
                                          error="internal error of the job runner; the service log has it")
            finally:
                self.job_id = None
        self._stop_process()

    def _interrupted(self, job_id: str) -> bool:
        """After a wake: is the service stopping, or the job no longer running (canceled)?"""
        self._wake_reader.recv()
        return self.runner.stopping.is_set() or self.runner.records.get(job_id).status != "running"

    def _start_process(self, job_id: str) -> str:
        """"ready" (spawned when there was none), "interrupted" while starting, or "died"."""
        if self.process is not None and self.process.is_alive():
            return "ready"
        spawn = multiprocessing.get_context("spawn")
        self.connection, child = spawn.Pipe()
        self.process = spawn.Process(target=serve_jobs, args=(child, self.runner.settings),
                                     name=f"{PROCESS_NAME}-{self.number}", daemon=True)
        self.process.start()
        child.close()
        while True:  # importing torch takes seconds: stay interruptible meanwhile
            ready = wait([self.connection, self._wake_reader])
            if self._wake_reader in ready:
                if self._interrupted(job_id):
                    return "interrupted"
                continue
            try:
                return "ready" if self.connection.recv() == ("ready",) else "died"
            except EOFError:
                return "died"

    def _stop_process(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.connection.close()
            self.process = self.connection = None

    def _run(self, job_id: str, record: JobRecord) -> None:
        runner = self.runner
        start = time.perf_counter()
        started = self._start_process(job_id)
        if started != "ready":
            settle = self._settle_interrupted if started == "interrupted" else self._settle_abandoned
            settle(job_id, record, start)
            return
        self.connection.send(runner.records.task(job_id))
        deadline = time.monotonic() + runner.settings.job_timeout
        while True:
            ready = wait([self.connection, self.process.sentinel, self._wake_reader],
                         timeout=max(0.0, deadline - time.monotonic()))
            if self._wake_reader in ready:
                if self._interrupted(job_id):
                    self._settle_interrupted(job_id, record, start)
                    return
            elif not ready:  # past the deadline
                self._kill(job_id)
                reason = (f"the job ran past its timeout (EOZ_JOB_TIMEOUT={runner.settings.job_timeout} s) "
                          "and was stopped")
                self._end(job_id, record, start, "failed", reason)
                return
            elif self.connection in ready:
                try:
                    message = self.connection.recv()
                except EOFError:  # the process died, closing its end of the pipe
                    self._settle_abandoned(job_id, record, start)
                    return
                if message[0] == "progress":
                    runner.records.update(job_id, progress=message[1])
                else:
                    self._end(job_id, record, start, *message)
                    return
            else:
                self._settle_abandoned(job_id, record, start)
                return

    def _kill(self, job_id: str) -> None:
        """Stop the worker process mid-job and remove the scratch folder it leaves behind."""
        self._stop_process()
        for folder in self.runner.settings.scratch_dir.glob(f"{job_id}-*"):
            shutil.rmtree(folder, ignore_errors=True)

    def _end(self, job_id: str, record: JobRecord, start: float, outcome: str, value) -> None:
        """The job function returned (value: its result) or failed (value: the reason)."""
        runner = self.runner
        seconds = time.perf_counter() - start
        if outcome == "finished":
            if runner.records.transition(job_id, ("running",), status="finished", finished_at=_now(),
                                         progress=1.0, result=value):
                record_job(runner.tally, record.kind, record.model or "", "finished", seconds, value)
            else:  # canceled as it finished: a canceled job has no result
                runner.store.delete(value["key"])
            return
        if runner.records.transition(job_id, ("running",), status="failed", finished_at=_now(), error=value):
            record_job(runner.tally, record.kind, record.model or "", "failed", seconds)

    def _settle_interrupted(self, job_id: str, record: JobRecord, start: float) -> None:
        """Canceled (the record already says so) or shutting down (queued again, retry not spent)."""
        self._kill(job_id)
        if not self.runner.records.transition(job_id, ("running",), status="queued", progress=0.0,
                                              started_at=None, attempts=record.attempts):
            record_job(self.runner.tally, record.kind, record.model or "", "canceled", time.perf_counter() - start)

    def _settle_abandoned(self, job_id: str, record: JobRecord, start: float) -> None:
        """The worker process died under the job: run it again, or fail it once out of retries."""
        runner = self.runner
        if self.process is not None:
            self.process.join(5)  # it closed its pipe: it is exiting, if not gone already
        code = self.process.exitcode if self.process is not None else None
        how = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
        self._kill(job_id)
        record_job(runner.tally, record.kind, record.model or "", "abandoned", time.perf_counter() - start)
        attempts = record.attempts + 1
        if attempts <= ABANDONED_RETRIES:
            if runner.records.transition(job_id, ("running",), status="queued", progress=0.0, started_at=None):
                runner.waiting.put(job_id)
        else:
            runner.records.transition(job_id, ("running",), status="failed", finished_at=_now(),
                                      error=f"the job's worker process died ({how}) on each of its {attempts} "
                                            "attempts (out of memory, or a crash in native code)")


def _own_data_dir(settings: Settings):
    """An exclusive lock on the data folder's jobs: two runners on it would both recover and
    run the same jobs. Held while the returned file stays open."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = open(settings.data_dir / "jobs.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise EozError(f"another eoz serve runs the jobs of {settings.data_dir.absolute()}: one embedded "
                       "service per EOZ_DATA_DIR (set REDIS_URL to run several)") from None
    return lock


class InProcessRunner:
    def __init__(self, settings: Settings, store: ObjectStore):
        self.settings, self.store = settings, store
        self.tally = MemoryTally()
        self._lock = _own_data_dir(settings)
        self.records = JobRecords(settings.data_dir / "jobs.sqlite3")
        self.stopping = threading.Event()
        self.waiting: queue.Queue[str | None] = queue.Queue()
        for job_id in self.records.recover(max_attempts=1 + ABANDONED_RETRIES):
            self.waiting.put(job_id)
        self._slots = [_Slot(self, number) for number in range(settings.workers)]
        for slot in self._slots:
            slot.thread.start()

    def submit(self, job_id: str, kind: str, model: str | None, queue: str, args: tuple,
               kwargs: dict, owner: str = "") -> JobRecord:
        record = JobRecord(id=job_id, kind=kind, model=model, queue=queue, status="queued",
                           created_at=_now(), owner=owner)
        self.records.insert(record, args, kwargs)
        self.waiting.put(job_id)
        return record

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        record = self.records.get(job_id)
        if owner is not None and record.owner != owner:
            raise JobNotFoundError(f"no job {job_id!r}")
        return record

    def list(self, owner: str, status: Status | None, limit: int, cursor: str | None) -> JobPage:
        return self.records.page(owner, status, limit, cursor)

    def cancel(self, job_id: str, owner: str | None = None) -> JobRecord:
        record = self.get(job_id, owner)
        canceled = {"status": "canceled", "finished_at": _now(), "error": CANCELED_REASON}
        if self.records.transition(job_id, ("queued",), **canceled):
            record_job(self.tally, record.kind, record.model or "", "canceled", None)
        elif self.records.transition(job_id, ("running",), **canceled):
            for slot in self._slots:  # its slot stops the worker process and counts it
                if slot.job_id == job_id:
                    slot.wake()
        record = self.records.get(job_id)
        if record.status != "canceled":
            raise JobEndedError(f"job {job_id} already {record.status}: there is nothing to cancel")
        return record

    def expire(self, ended_before: datetime) -> int:
        return self.records.expire(ended_before)

    def queue_depths(self) -> dict[str, int]:
        return {**dict.fromkeys(QUEUES, 0), **self.records.queued_by_queue()}

    def worker_devices(self) -> dict[str, int]:
        return {compute_device(): self.settings.workers}

    def ping(self) -> None:
        """Ready while the records can be read (the worker processes start on demand)."""
        self.records.ping()

    def close(self) -> None:
        """Stop at once: running jobs are killed and queued again for the next start."""
        self.stopping.set()
        for slot in self._slots:
            self.waiting.put(None)
            slot.wake()
        for slot in self._slots:
            slot.thread.join()
        self.records.close()
        self._lock.close()
