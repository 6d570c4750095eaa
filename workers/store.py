"""The object store behind one small interface: a folder (embedded default) or an S3 bucket.

The API writes uploads and reads results through it, jobs read inputs and write results
through it, so the embedded default runs the same code paths as a deployment on S3. Keys
follow ``workers.keys``. Writes are atomic on both backends: a reader sees a whole object
or none (a folder gets a hidden temporary, flushed to disk, renamed into place, and the
rename flushed too, so a power cut leaves the old object or the new one; S3 publishes an
object only when its upload completes). S3 objects carry the media type and a download
filename (``workers.keys``), so a presigned URL opened in a browser saves a named file.

Transient S3 failures (connection errors, throttling, 5xx) are retried by botocore's
"standard" mode with exponential backoff and jitter; what still fails becomes
``TransientStoreError``, which jobs retry again with a longer backoff (``workers.retry``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from workers.errors import ObjectNotFoundError, TransientStoreError
from workers.keys import check_key, download_name, media_type
from workers.settings import Settings

CHUNK = 1 << 20


class ObjectStore(Protocol):
    def put_file(self, key: str, path: Path) -> None:
        """Store a local file under key (replacing any object there)."""

    def get_file(self, key: str, path: Path) -> None:
        """Copy the object to a local file."""

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks, for streaming it out."""

    def size(self, key: str) -> int:
        """Bytes of the object; ObjectNotFoundError when there is none."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object if present."""

    def move(self, source: str, target: str) -> None:
        """Rename; the target appears complete or not at all."""

    def keys(self, prefix: str) -> list[str]:
        """Every key that starts with prefix, sorted."""

    def modified(self, prefix: str) -> dict[str, datetime]:
        """When each object under prefix was last written (UTC), for expiry."""

    def presigned_url(self, key: str, expires: int = 3600) -> str | None:
        """A URL a client can GET the object from directly, or None when there is none."""

    def ping(self) -> None:
        """Raise when the store cannot be used (readiness)."""


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (a rename), to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class FilesystemStore:
    """Objects as files under a root folder; keys are relative paths."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {key!r} in the store")
        return path

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            shutil.copyfile(path, part)
            _fsync(part)
            os.replace(part, target)
            _fsync(target.parent)
        finally:
            part.unlink(missing_ok=True)

    def get_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self._existing(key), path)

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        with open(self._existing(key), "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def size(self, key: str) -> int:
        return self._existing(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the file, then the folders it leaves empty (a job's uploads/<job>/), up to
        the top-level one (uploads/ stays: another request may be writing under it)."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder.parent == self.root or folder == self.root:
                break
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): the folders above are not empty either
                break

    def move(self, source: str, target: str) -> None:
        origin, destination = self._existing(source), self._path(target)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(origin, destination)
        _fsync(destination.parent)
        if origin.parent != destination.parent:
            _fsync(origin.parent)

    def _files(self, prefix: str) -> Iterator[tuple[str, Path]]:
        for path in self.root.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix) and not path.name.startswith(".") and path.is_file():
                yield key, path

    def keys(self, prefix: str) -> list[str]:
        return sorted(key for key, _ in self._files(prefix))

    def modified(self, prefix: str) -> dict[str, datetime]:
        return {key: datetime.fromtimestamp(path.stat().st_mtime, timezone.utc) for key, path in self._files(prefix)}

    def presigned_url(self, key: str, expires: int = 3600) -> None:
        return None

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise PermissionError(f"the data folder {self.root} is not writable")


class S3Store:
    """Objects in one S3 bucket (AWS, MinIO, moto), credentials from the AWS_* variables."""

    def __init__(self, bucket: str, endpoint: str | None = None, public_endpoint: str | None = None,
                 client=None, presign_client=None):
        import boto3
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5,
                        read_timeout=60, signature_version="s3v4")
        self.bucket = bucket
        self.client = client or boto3.client("s3", endpoint_url=endpoint, config=config)
        # Presigned URLs name the host they were signed for: clients may know S3 by another name.
        self.presign_client = presign_client or (
            boto3.client("s3", endpoint_url=public_endpoint, config=config)
            if public_endpoint and public_endpoint != endpoint else self.client)

    def for_bucket(self, bucket: str) -> S3Store:
        """The same connection on another bucket (where S3-key sources live)."""
        return S3Store(bucket, client=self.client, presign_client=self.presign_client)

    @contextmanager
    def _errors(self, key: str = ""):
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"s3://{self.bucket}/{key}"
        try:
            yield
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("404", "NoSuchKey", "NotFound"):
                raise ObjectNotFoundError(f"{where} does not exist") from e
            if status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout"):
                raise TransientStoreError(f"{where}: S3 failed ({code}), retry later") from e
            raise
        except (BotoCoreError, S3UploadFailedError) as e:
            raise TransientStoreError(f"{where}: S3 unreachable or failing: {e}") from e

    @staticmethod
    def _headers(key: str) -> dict:
        """Media type and download filename of the object a key names."""
        return {"ContentType": media_type(key),
                "ContentDisposition": f'attachment; filename="{download_name(key)}"'}

    def put_file(self, key: str, path: Path) -> None:
        with self._errors(key):
            self.client.upload_file(str(path), self.bucket, check_key(key), ExtraArgs=self._headers(key))

    def get_file(self, key: str, path: Path) -> None:
        with self._errors(key):
            self.client.download_file(self.bucket, check_key(key), str(path))

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        with self._errors(key):
            body = self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"]
        with self._errors(key), body:
            yield from body.iter_chunks(CHUNK)

    def size(self, key: str) -> int:
        with self._errors(key):
            return self.client.head_object(Bucket=self.bucket, Key=check_key(key))["ContentLength"]

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=check_key(key))

    def move(self, source: str, target: str) -> None:
        """Server-side copy (multipart for large objects), then delete the source; the copy
        gets the headers of its new key (a result's filename, not the temporary's)."""
        with self._errors(source):
            self.client.copy({"Bucket": self.bucket, "Key": check_key(source)}, self.bucket,
                             check_key(target), ExtraArgs={"MetadataDirective": "REPLACE", **self._headers(target)})
        self.delete(source)

    def _objects(self, prefix: str) -> Iterator[dict]:
        with self._errors(prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])

    def keys(self, prefix: str) -> list[str]:
        return sorted(o["Key"] for o in self._objects(prefix))

    def modified(self, prefix: str) -> dict[str, datetime]:
        return {o["Key"]: o["LastModified"].astimezone(timezone.utc) for o in self._objects(prefix)}

    def presigned_url(self, key: str, expires: int = 3600) -> str:
        return self.presign_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=expires)

    def ping(self) -> None:
        with self._errors():
            self.client.head_bucket(Bucket=self.bucket)


def make_store(settings: Settings) -> ObjectStore:
    """S3 when EOZ_S3_BUCKET is set, else a folder under EOZ_DATA_DIR."""
    if settings.s3_bucket:
        return S3Store(settings.s3_bucket, settings.s3_endpoint,
                       settings.s3_public_endpoint or settings.s3_endpoint)
    return FilesystemStore(settings.data_dir / "store")
