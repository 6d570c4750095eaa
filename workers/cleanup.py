"""Retention: what the service writes is removed once it is no longer needed.

| what | kept for |
|---|---|
| uploads/, tmp/ and results/ objects | EOZ_RETENTION_DAYS after they were written |
| embedded job records that ended | EOZ_RETENTION_DAYS after they ended (RQ: the same, as Redis TTLs) |
| scratch files and folders (uploads in flight, jobs that were killed) | EOZ_JOB_TIMEOUT + 10 minutes |
| models/ (the versions stored files pin) | forever: archives decode with them |

``cleanup`` is one idempotent pass; ``PeriodicCleanup`` runs it when the API or an
`eoz worker` starts and every hour after, and `eoz cleanup` runs it once (for a cron job).
Several processes running it at once only race to delete the same things. A queued job
whose upload expired before it ran fails with "no object", which takes a week of waiting.
"""

from __future__ import annotations

import logging
import shutil
import threading
from datetime import datetime, timedelta, timezone
from typing import Protocol

from workers.keys import EXPIRING
from workers.settings import Settings
from workers.store import ObjectStore

INTERVAL_SECONDS = 3600
SCRATCH_GRACE_SECONDS = 600  # beyond EOZ_JOB_TIMEOUT, before a scratch entry counts as left behind
log = logging.getLogger("eoz.cleanup")


class Expiring(Protocol):
    """Job records that forget ended jobs: ``JobRecords`` or a runner."""

    def expire(self, ended_before: datetime) -> int: ...


def cleanup(settings: Settings, store: ObjectStore, records: Expiring | None = None,
            now: datetime | None = None) -> dict[str, int]:
    """Remove what expired by now; how many objects, scratch entries and job records."""
    now = now or datetime.now(timezone.utc)
    expired_before = now - timedelta(seconds=settings.retention_seconds)
    objects = 0
    for prefix in EXPIRING:
        for key, modified in store.modified(prefix).items():
            if modified < expired_before:
                store.delete(key)
                objects += 1
    stale_before = (now - timedelta(seconds=settings.job_timeout + SCRATCH_GRACE_SECONDS)).timestamp()
    scratch = 0
    if settings.scratch_dir.is_dir():
        for entry in settings.scratch_dir.iterdir():
            if entry.stat().st_mtime < stale_before:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                scratch += 1
    expired_records = records.expire(ended_before=expired_before) if records is not None else 0
    return {"objects": objects, "scratch": scratch, "records": expired_records}


class PeriodicCleanup:
    """``cleanup`` on a daemon thread: at start, then every INTERVAL_SECONDS until stopped."""

    def __init__(self, settings: Settings, store: ObjectStore, records: Expiring | None = None):
        self._pass = lambda: cleanup(settings, store, records)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eoz-cleanup", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                removed = self._pass()
                if any(removed.values()):
                    log.info("expired %s", removed)
            except Exception:  # a store outage: try again next interval
                log.warning("cleanup pass failed", exc_info=True)
            if self._stop.wait(INTERVAL_SECONDS):
                return

    def start(self) -> PeriodicCleanup:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends the thread after its current pass (not waited for long: shutdown comes first)."""
        self._stop.set()
        self._thread.join(timeout=5)
