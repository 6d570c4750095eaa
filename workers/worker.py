"""`eoz worker`: an RQ worker that keeps models loaded, is CUDA-safe and still heart-beats.

Why not RQ's default ``Worker``: it forks a work horse per job, so every job would load
its model again, and a CUDA context does not survive ``fork()``. ``SpawnWorker`` avoids the
fork but still starts a fresh interpreter per job. ``EozWorker`` is a ``SimpleWorker``: the
job runs in the worker process itself, so models loaded once (``eoz.codecs`` caches them)
stay loaded and on their device across jobs, and nothing is forked after CUDA starts.

What SimpleWorker gives up, and what this class puts back:

* liveness during long jobs - SimpleWorker heart-beats only between jobs, so a one-hour job
  looks alive for an hour even when its machine died. A heartbeat thread renews the
  worker, job and execution every EOZ_HEARTBEAT_SECONDS; their TTL is three beats.
* prompt recovery of abandoned jobs - RQ re-queues a job whose execution TTL lapsed only
  in a maintenance pass (StartedJobRegistry cleanup), every 10 minutes by default, and the
  worker blocks on the queue for up to ``worker_ttl - 15`` s. Here every worker waits at most
  one beat on the queue and runs the maintenance pass every three beats, so a SIGKILLed
  worker's job is re-queued within a few beats (jobs are enqueued with a Retry for this).
* a crash inside a job kills the worker itself rather than a horse: the supervisor (Docker,
  Kubernetes) restarts it, and the job is recovered as abandoned.
* cancel - RQ stops a job by killing its horse, and there is none: a canceled job
  (``workers.rq_runner.CANCEL_KEY``) raises at its next progress report and is marked stopped.

The job timeout still works: SimpleWorker runs the job in the main thread, where RQ's
SIGALRM death penalty fires.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from redis import Redis
from rq import SimpleWorker
from rq.exceptions import AbandonedJobError
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.worker import WorkerStatus

from eoz.errors import EozError
from workers import context
from workers.cleanup import PeriodicCleanup
from workers.device import compute_device
from workers.metrics import RedisTally, record_job
from workers.errors import JobCanceledError
from workers.rq_runner import CANCEL_KEY, DEVICE_KEY
from workers.runner import describe_failure, throttled
from workers.settings import Settings
from workers.store import ObjectStore, make_store

BEATS_PER_TTL = 3


class Heartbeat:
    """Calls beat() every interval seconds on a thread, between start and stop."""

    def __init__(self, beat: Callable[[], None], interval: float):
        self._beat, self._interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eoz-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception:  # a missed beat is retried next interval; the job goes on
                logging.getLogger("rq.worker").warning("heartbeat failed", exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def __exit__(self, *exc) -> None:
        self.stop()


def _progress_saver(job: Job) -> Callable[[float], None]:
    """Writes progress into the job's meta (throttled), and stops a job that was canceled:
    a cancel is seen at the job's next progress report, in its own thread."""
    def save(fraction: float) -> None:
        if job.connection.exists(CANCEL_KEY + job.id):
            raise JobCanceledError(f"job {job.id} was canceled")
        job.meta["progress"] = fraction
        job.save_meta()
    return throttled(save)


class EozWorker(SimpleWorker):
    def __init__(self, queues, settings: Settings, store: ObjectStore, connection: Redis, **kwargs):
        self.settings, self.store = settings, store  # before RQ's init, which reads dequeue_timeout
        beat = settings.heartbeat_seconds
        super().__init__(queues, connection=connection, maintenance_interval=beat * BEATS_PER_TTL,
                         job_monitoring_interval=beat, **kwargs)
        self.tally = RedisTally(connection)
        self.device = compute_device()
        self._heartbeat: Heartbeat | None = None
        self.push_exc_handler(self._record_failure)

    @property
    def dequeue_timeout(self) -> int:
        return self.settings.heartbeat_seconds

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.settings.heartbeat_seconds * BEATS_PER_TTL

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        """RQ's worker heartbeat, plus the device this worker computes on (for /metrics)."""
        super().heartbeat(timeout, pipeline)
        target = pipeline if pipeline is not None else self.connection
        # Beats come at least every heartbeat_seconds, idle or busy: a dead worker drops out fast.
        target.set(DEVICE_KEY + self.name, self.device, ex=self.settings.heartbeat_seconds * BEATS_PER_TTL)

    def register_death(self) -> None:
        self.connection.delete(DEVICE_KEY + self.name)
        super().register_death()

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        job.meta.update(progress=0.0, error=None)
        job.save_meta()
        job_context = context.JobContext(self.settings, self.store, _progress_saver(job))
        start = time.perf_counter()
        self._heartbeat = Heartbeat(lambda: self.maintain_heartbeats(job, execution),
                                    self.settings.heartbeat_seconds)
        with self._heartbeat, context.running(job_context):
            self.perform_job(job, queue, execution)
        status = job.get_status(refresh=False)
        finished = status == JobStatus.FINISHED
        outcome = {JobStatus.FINISHED: "finished", JobStatus.STOPPED: "canceled"}.get(status, "failed")
        record_job(self.tally, job.meta.get("kind", ""), job.meta.get("model") or "", outcome,
                   time.perf_counter() - start, job.return_value() if finished else None)
        self.set_state(WorkerStatus.IDLE)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """Stop heart-beating before RQ settles the job, so no beat renews a settled execution."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry=None, exc_string="",
                           execution=None) -> None:
        """A job that raised fails now: its Retry is kept for jobs whose worker vanished. A
        canceled one is marked stopped, as RQ marks the jobs it stops itself."""
        job.retries_left = 0
        if self.connection.exists(CANCEL_KEY + job.id):
            self._stopped_job_id = job.id
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    def _record_failure(self, job: Job, exc_type, exc_value, traceback) -> bool:
        """Exception handler: the reason into the job's meta; abandoned jobs counted here too."""
        job.meta["error"] = describe_failure(exc_value)
        job.save_meta()
        if issubclass(exc_type, AbandonedJobError):
            record_job(self.tally, job.meta.get("kind", ""), job.meta.get("model") or "", "abandoned", None)
        return True


def run_worker(queues: list[str], burst: bool = False) -> bool:
    """Serve the queues on REDIS_URL until stopped (or, with burst, until they are empty)."""
    settings = Settings()
    if not settings.redis_url:
        raise EozError("eoz worker needs REDIS_URL (without it, `eoz serve` runs jobs itself)")
    connection = Redis.from_url(settings.redis_url)
    store = make_store(settings)
    worker = EozWorker(queues, settings, store, connection)
    cleaner = PeriodicCleanup(settings, store).start()  # this machine's scratch folder, and the store
    try:
        return worker.work(burst=burst, logging_level="INFO")
    finally:
        cleaner.stop()
