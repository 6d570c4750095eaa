"""POST /v1/compress: a GeoTIFF upload or an S3 key in, a queued job out (202).

Everything that can be known before the job runs is checked first, so bad input fails
with a 4xx and nothing is queued: the model and the options its codec honours
(eoz.resolve, as the CLI and the job use it), and for an upload the file itself (a
GeoTIFF by signature and by GDAL's GTiff driver, within the pixel and band limits, with
the model's bands and dtype). An S3 source is checked for being allowed, present and
within the byte limit; its GeoTIFF checks run in the job, before any pixel is read. The
job gets the version resolved here, so a model published meanwhile does not change it.
``model: auto`` is picked here for an upload (the raster is on disk) and by the job for an
S3 key; the job's result says which model and why either way.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from app.auth import Owner
from app.errors import problems
from app.openapi import request_body
from app.routes.jobs import job_response
from app.schemas import CompressOptions, CompressRequest, CompressUpload, Job
from app.services import ServicesDep
from app.uploads import geotiff_job_input
from eoz.raster import RasterMeta
from eoz.resolve import AUTO, Resolved, resolve
from workers.keys import new_job_id

router = APIRouter(tags=["compress"])


def _resolve(options: CompressOptions, meta: RasterMeta | None = None) -> Resolved:
    return resolve(options.model, options.version, options.codec_options(), meta)


@router.post("/compress", status_code=202, response_model=Job,
             openapi_extra=request_body(CompressUpload, CompressRequest),
             responses=problems(400, 401, 403, 413, 415, 422, 503))
async def compress(request: Request, services: ServicesDep, owner: Owner) -> Job:
    """Queue a GeoTIFF for compression: multipart (``file`` plus fields) or JSON with ``source``.

    Answers 202 with the job; poll its ``status_url`` and fetch ``result_url`` when finished.
    """
    job_id = new_job_id()
    options, resolved, key, bucket = await geotiff_job_input(request, services, job_id, CompressOptions,
                                                             CompressRequest, _resolve)
    # auto, picked here for an upload: the job runs the pick, with the default quality it added
    picked = resolved.reason if resolved.model_id != AUTO else None
    record = await run_in_threadpool(
        services.runner.submit, job_id, "compress", resolved.model_id, resolved.queue,
        (job_id, key, resolved.model_id),
        {"source_bucket": bucket, "version": resolved.version,
         "params": {**options.codec_options(), **resolved.defaults}, "tile_size": options.tile_size,
         "picked": picked}, owner=owner)
    return job_response(request, record)
