"""POST /v1/decompress: an .eoz upload or S3 key in, a queued GeoTIFF/COG job out (202).

An uploaded .eoz is parsed (header, tile table, trailer) and its window and pinned model
checked before queueing. An S3 source is checked for being allowed, present and within
the byte limit; the job parses it. Jobs of files whose codec is unknown until parsed go
to the gpu queue, which every default worker also serves. The job's model (its metrics
label) is one this service holds, else "unknown": never a string from the client's header.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from app.auth import Owner
from app.errors import problems
from app.openapi import request_body
from app.routes.jobs import job_response
from app.schemas import DecompressOptions, DecompressRequest, DecompressUpload, Job
from app.services import Services, ServicesDep
from app.uploads import media_type, receive_json, receive_upload
from eoz.container import Header
from eoz.registry import ModelStore
from eoz.resolve import GPU_QUEUE, JPEG2000, queue_for
from workers.keys import new_job_id, upload_key
from workers.models import check_decodable
from workers.sources import check_source
from workers.validation import check_window, inspect_eoz

router = APIRouter(tags=["decompress"])


def _check_upload(options: DecompressOptions, path: Path, services: Services) -> Header:
    header = inspect_eoz(path, services.settings.limits)
    check_window(header, tuple(options.window) if options.window else None)
    check_decodable(header, services.store)
    return header


def _metrics_label(header: Header) -> str:
    """The job's model as metrics label it: the header's id only when this service holds that
    model (a client writes the header, and every new label value is a new series)."""
    if header.codec == JPEG2000:
        return JPEG2000
    return header.model_id if header.model_id in {e.model_id for e in ModelStore().entries()} else "unknown"


@router.post("/decompress", status_code=202, response_model=Job,
             openapi_extra=request_body(DecompressUpload, DecompressRequest),
             responses=problems(400, 401, 403, 413, 415, 422, 503))
async def decompress(request: Request, services: ServicesDep, owner: Owner) -> Job:
    """Queue an .eoz for decoding to GeoTIFF or COG, whole or a window.

    Multipart (``file`` plus ``format`` and ``window`` fields) or JSON with ``source``.
    """
    settings = services.settings
    job_id = new_job_id()
    if media_type(request) == "application/json":
        body = DecompressRequest.model_validate_json(await receive_json(request))
        await run_in_threadpool(check_source, settings, services.store, body.source.bucket, body.source.key)
        options, key, bucket, model, queue = body, body.source.key, body.source.bucket, None, GPU_QUEUE
    else:
        async with receive_upload(request, settings.scratch_dir, settings.max_upload_bytes, ".eoz") as upload:
            options = DecompressOptions.model_validate(upload.fields)
            header = await run_in_threadpool(_check_upload, options, upload.path, services)
            key, bucket = upload_key(job_id, ".eoz"), None
            await run_in_threadpool(services.store.put_file, key, upload.path)
        model, queue = _metrics_label(header), queue_for(header.codec)
    record = await run_in_threadpool(
        services.runner.submit, job_id, "decompress", model, queue, (job_id, key),
        {"source_bucket": bucket, "format": options.format, "window": options.window}, owner=owner)
    return job_response(request, record)
