"""POST /v1/compress: a GeoTIFF upload or an S3 key in, a queued job out (202).

Everything that can be known before the job runs is checked first, so bad input fails
with a 4xx and nothing is queued: the model and its parameters, and for an upload the
file itself (a GeoTIFF by signature and by GDAL's GTiff driver, within the pixel and band
limits, with the model's band count). An S3 source is checked for being allowed, present
and within the byte limit; its GeoTIFF checks run in the job, before any pixel is read.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from app.errors import problems
from app.openapi import request_body
from app.routes.jobs import job_response
from app.schemas import CompressOptions, CompressRequest, CompressUpload, Job
from app.services import ServicesDep
from app.uploads import geotiff_job_input
from workers.keys import new_job_id
from workers.models import check_bands, codec_of, codec_params, queue_for
from workers.settings import Settings
from workers.validation import inspect_geotiff

router = APIRouter(tags=["compress"])


def _queue(options: CompressOptions) -> str:
    """The queue for the model, after refusing an unknown model or parameters it does not take."""
    codec_params(options.model, options.version, options.quality_parameters())
    return queue_for(codec_of(options.model, options.version))


def _check_upload(options: CompressOptions, path: Path, settings: Settings) -> None:
    meta = inspect_geotiff(path, settings.limits)
    check_bands(options.model, options.version, meta)


@router.post("/compress", status_code=202, response_model=Job,
             openapi_extra=request_body(CompressUpload, CompressRequest),
             responses=problems(400, 401, 403, 413, 415, 422, 503))
async def compress(request: Request, services: ServicesDep) -> Job:
    """Queue a GeoTIFF for compression: multipart (``file`` plus fields) or JSON with ``source``.

    Answers 202 with the job; poll its ``status_url`` and fetch ``result_url`` when finished.
    """
    job_id = new_job_id()
    options, queue, key, bucket = await geotiff_job_input(request, services, job_id, CompressOptions,
                                                          CompressRequest, _queue, _check_upload)
    params = {k: v for k, v in options.quality_parameters().items() if v not in (None, False)}
    record = await run_in_threadpool(
        services.runner.submit, job_id, "compress", options.model, queue, (job_id, key, options.model),
        {"source_bucket": bucket, "version": options.version, "params": params,
         "tile_size": options.tile_size})
    return job_response(request, record)
