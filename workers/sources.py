"""Which S3 objects a client may name as a job's input (EOZ_S3_SOURCES), and where they live.

A source key comes from the client, so it is checked twice: by the API before a job is
queued, and by the job before it reads, against the same allow-list of ``bucket/prefix``
entries. Only S3 deployments take S3-key sources; the embedded default takes uploads.
"""

from __future__ import annotations

from workers.errors import (
    ObjectNotFoundError,
    SourceNotAllowedError,
    SourceNotFoundError,
    TooLargeError,
)
from workers.keys import check_key
from workers.settings import Settings
from workers.store import ObjectStore, S3Store


def source_store(settings: Settings, store: ObjectStore, bucket: str | None, key: str) -> ObjectStore:
    """The store holding bucket/key, after checking the pair is allowed; None bucket = our own."""
    if bucket is None:
        return store
    check_key(key)
    if not isinstance(store, S3Store):
        raise SourceNotAllowedError("S3-key sources need an S3 deployment (EOZ_S3_BUCKET); "
                                    "upload the file instead")
    allowed = settings.allowed_sources
    if not any(bucket == b and key.startswith(prefix) for b, prefix in allowed):
        listed = ", ".join(f"{b}/{p}" for b, p in allowed) or "none"
        raise SourceNotAllowedError(f"s3://{bucket}/{key} is outside the allowed sources ({listed})")
    return store.for_bucket(bucket)


def check_source(settings: Settings, store: ObjectStore, bucket: str, key: str) -> int:
    """Bytes of an allowed, existing source object no larger than EOZ_MAX_UPLOAD_BYTES."""
    try:
        size = source_store(settings, store, bucket, key).size(key)
    except ObjectNotFoundError:
        raise SourceNotFoundError(f"s3://{bucket}/{key} does not exist") from None
    if size > settings.max_upload_bytes:
        raise TooLargeError(f"s3://{bucket}/{key} is {size} bytes; the limit is "
                            f"{settings.max_upload_bytes} (EOZ_MAX_UPLOAD_BYTES)")
    return size
