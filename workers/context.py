"""What a running job reaches besides its arguments: settings, the object store, progress.

Job functions take only ids and keys, so that any worker can run them; the runner that
calls one (a thread of the in-process runner, or an RQ worker) binds a ``JobContext`` for
the call, and the job finds it here. The same function body therefore runs unchanged
in both runners and in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from workers.settings import Settings
from workers.store import ObjectStore


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    store: ObjectStore
    report_progress: Callable[[float], None]


_current: ContextVar[JobContext] = ContextVar("eoz_job_context")


def current() -> JobContext:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("a job function runs inside a runner (workers.context.running)") from None


@contextmanager
def running(context: JobContext) -> Iterator[JobContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
