"""Request bodies read as they stream in, never whole in memory.

A multipart upload's ``file`` part goes chunk by chunk to a scratch file and is counted as
it arrives: past EOZ_MAX_UPLOAD_BYTES the request fails with 413 at once, without reading
the rest. Its other parts are short text fields. The scratch file is removed on leaving
the context, once the route has validated it and put it in the object store.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from pydantic import BaseModel
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from app.errors import MalformedRequestError
from eoz.errors import InputError
from eoz.resolve import CPU_QUEUE, check_cpu_work
from workers.errors import TooLargeError, UnsupportedMediaError
from workers.keys import upload_key
from workers.sources import check_source
from workers.validation import inspect_geotiff

FILE_FIELD = "file"
MAX_FIELD_BYTES = 16 * 1024
MAX_FIELDS = 32
MAX_JSON_BYTES = 64 * 1024
FORM_OVERHEAD = 64 * 1024  # multipart boundaries, part headers and fields around the file


@dataclass
class Upload:
    path: Path
    size: int = 0
    filename: str | None = None
    fields: dict[str, str | list[str]] = field(default_factory=dict)  # a repeated field: a list (an array)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


class _FormReader:
    """python-multipart callbacks: the file part into a file, the rest into fields."""

    def __init__(self, upload: Upload, sink, limit: int):
        self.upload, self.sink, self.limit = upload, sink, limit
        self.header_name = self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.name: str | None = None
        self.value = bytearray()
        self.seen_file = False

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_data, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end}

    def part_begin(self) -> None:
        self.headers, self.name, self.value = {}, None, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_data(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name = self.header_value = b""

    def headers_finished(self) -> None:
        disposition, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise MalformedRequestError("every multipart part needs Content-Disposition: form-data; name=...")
        self.name = options[b"name"].decode("utf-8", "replace")
        if self.name == FILE_FIELD:
            if self.seen_file:
                raise InputError(f"send one {FILE_FIELD!r} part, not several")
            self.seen_file = True
            self.upload.filename = options.get(b"filename", b"").decode("utf-8", "replace") or None
        elif len(self.upload.fields) >= MAX_FIELDS:
            raise InputError(f"more than {MAX_FIELDS} form fields")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.name == FILE_FIELD:
            self.upload.size += end - start
            if self.upload.size > self.limit:
                raise TooLargeError(f"the upload is over {self.limit} bytes (EOZ_MAX_UPLOAD_BYTES)")
            self.sink.write(data[start:end])
        else:
            self.value += data[start:end]
            if len(self.value) > MAX_FIELD_BYTES:
                raise InputError(f"form field {self.name!r} is over {MAX_FIELD_BYTES} bytes")

    def part_end(self) -> None:
        if self.name != FILE_FIELD:
            value, fields = self.value.decode("utf-8", "replace"), self.upload.fields
            if self.name in fields:  # OpenAPI's multipart encoding of an array: the field repeated
                previous = fields[self.name]
                fields[self.name] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                fields[self.name] = value


@asynccontextmanager
async def receive_upload(request: Request, scratch: Path, limit: int, suffix: str) -> AsyncIterator[Upload]:
    """The multipart body's ``file`` part in a scratch file, and its text fields."""
    if media_type(request) != "multipart/form-data":
        raise UnsupportedMediaError("send multipart/form-data with a 'file' part, or application/json")
    _, options = parse_options_header(request.headers["content-type"])
    boundary = options.get(b"boundary")
    if not boundary:
        raise MalformedRequestError("multipart/form-data without a boundary")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise TooLargeError(f"the request is {declared} bytes; uploads are limited to {limit} bytes "
                            "(EOZ_MAX_UPLOAD_BYTES)")
    scratch.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=scratch, prefix="upload-", suffix=suffix)
    upload = Upload(Path(name))
    try:
        with os.fdopen(descriptor, "wb") as sink:
            reader = _FormReader(upload, sink, limit)
            parser = MultipartParser(boundary, reader.callbacks())
            try:
                async for chunk in request.stream():
                    parser.write(chunk)
                parser.finalize()
            except MultipartParseError as e:
                raise MalformedRequestError(f"the multipart body cannot be parsed: {e}") from None
        if not reader.seen_file:
            raise InputError(f"the multipart body has no {FILE_FIELD!r} part")
        if upload.size == 0:
            raise InputError(f"the {FILE_FIELD!r} part is empty")
        yield upload
    finally:
        upload.path.unlink(missing_ok=True)


async def receive_json(request: Request) -> bytes:
    """A JSON body of at most MAX_JSON_BYTES."""
    if media_type(request) != "application/json":
        raise UnsupportedMediaError("send multipart/form-data with a 'file' part, or application/json")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise TooLargeError(f"a JSON body is limited to {MAX_JSON_BYTES} bytes; upload files as multipart")
    return bytes(body)


def _cuda_workers(services) -> int:
    """Workers computing on CUDA: without one, a gpu-queue job runs on a CPU too."""
    return services.runner.worker_devices().get("cuda", 0)


async def geotiff_job_input(request: Request, services, job_id: str, options_model: type[BaseModel],
                            json_model: type[BaseModel], resolve: Callable):
    """(options, resolution, source key, source bucket) of a job posted with a GeoTIFF.

    JSON: the options and an S3 ``source`` the service may read. Multipart: the options as
    fields and the ``file``, inspected before it is put in the object store.
    ``resolve(options, meta=None)`` refuses what cannot run: first the options alone, then,
    for an upload, against the raster's metadata (an S3 source's job checks that itself), and
    work a CPU would take longer than EOZ_MAX_CPU_SECONDS over when no CUDA worker can take it.
    """
    settings, store = services.settings, services.store
    if media_type(request) == "application/json":
        options = json_model.model_validate_json(await receive_json(request))
        resolved = await run_in_threadpool(resolve, options)
        await run_in_threadpool(check_source, settings, store, options.source.bucket, options.source.key)
        return options, resolved, options.source.key, options.source.bucket
    async with receive_upload(request, settings.scratch_dir, settings.max_upload_bytes, ".tif") as upload:
        options = options_model.model_validate(upload.fields)
        await run_in_threadpool(resolve, options)
        meta = await run_in_threadpool(inspect_geotiff, upload.path, settings.limits)
        resolved = await run_in_threadpool(resolve, options, meta)
        if resolved.queue == CPU_QUEUE or not await run_in_threadpool(_cuda_workers, services):
            check_cpu_work(resolved, meta, settings.max_cpu_seconds)
        key = upload_key(job_id, ".tif")
        await run_in_threadpool(store.put_file, key, upload.path)
    return options, resolved, key, None
