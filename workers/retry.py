"""Retrying object-store operations that failed transiently, with exponential backoff.

botocore already retries each S3 request a few times within seconds; this outer loop
spans a longer outage (a MinIO restart, a network blip of tens of seconds) so a long
job is not thrown away at its last step. Only ``TransientStoreError`` is retried: a
missing key or a bad request fails at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from workers.errors import TransientStoreError

T = TypeVar("T")


def with_backoff(operation: Callable[[], T], attempts: int = 5, first_delay: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Run operation, retrying transient store errors after 0.5, 1, 2, 4 s (with jitter)."""
    delay = first_delay
    for _ in range(attempts - 1):
        try:
            return operation()
        except TransientStoreError:
            sleep(delay * random.uniform(0.8, 1.2))
            delay *= 2
    return operation()
