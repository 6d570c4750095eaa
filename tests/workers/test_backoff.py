"""Transient store errors are retried with growing delays; other errors are not."""

from __future__ import annotations

import pytest

from workers.errors import ObjectNotFoundError, TransientStoreError
from workers.retry import with_backoff


def flaky(failures: int, error=TransientStoreError):
    calls = []

    def operation():
        calls.append(1)
        if len(calls) <= failures:
            raise error("store hiccup")
        return "done"
    return operation, calls


def test_retries_transient_errors_with_growing_delays():
    operation, calls = flaky(3)
    delays = []
    assert with_backoff(operation, attempts=5, first_delay=1.0, sleep=delays.append) == "done"
    assert len(calls) == 4
    assert len(delays) == 3 and delays[0] < delays[1] < delays[2]
    assert 0.8 <= delays[0] <= 1.2 and 3.2 <= delays[2] <= 4.8


def test_gives_up_after_the_last_attempt():
    operation, calls = flaky(10)
    with pytest.raises(TransientStoreError):
        with_backoff(operation, attempts=3, sleep=lambda _: None)
    assert len(calls) == 3


def test_other_errors_fail_at_once():
    operation, calls = flaky(1, ObjectNotFoundError)
    with pytest.raises(ObjectNotFoundError):
        with_backoff(operation, sleep=lambda _: None)
    assert len(calls) == 1
