"""POST /v1/features: a GeoTIFF (upload or S3 key) in, a job that writes its top-level latents out (202).

As for compression, everything knowable before the job runs is checked first: the model
exists and is a VQVAE-FPN model, and an upload is a GeoTIFF within limits with the
model's band count.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from app.errors import problems
from app.openapi import request_body
from app.routes.jobs import job_response
from app.schemas import FeaturesOptions, FeaturesRequest, FeaturesUpload, Job
from app.services import ServicesDep
from app.uploads import geotiff_job_input
from eoz.codecs import VQVAECodec
from eoz.errors import InputError
from workers.keys import new_job_id
from workers.models import check_bands, codec_of, queue_for
from workers.settings import Settings
from workers.validation import inspect_geotiff

router = APIRouter(tags=["features"])


def _check_upload(options: FeaturesOptions, path: Path, settings: Settings) -> None:
    check_bands(options.model, options.version, inspect_geotiff(path, settings.limits))


def _queue(options: FeaturesOptions) -> str:
    codec = codec_of(options.model, options.version)
    if codec != VQVAECodec.codec_id:
        raise InputError(f"features come from a vqvae-fpn model's top level; {options.model} is {codec}")
    return queue_for(codec)


@router.post("/features", status_code=202, response_model=Job,
             openapi_extra=request_body(FeaturesUpload, FeaturesRequest),
             responses=problems(400, 401, 403, 413, 415, 422, 503))
async def features(request: Request, services: ServicesDep) -> Job:
    """Queue a GeoTIFF for latent export: multipart (``file`` plus fields) or JSON with ``source``.

    The result is a float32 GeoTIFF with one band per latent channel, at the top level's
    resolution, in the scene's CRS.
    """
    job_id = new_job_id()
    options, queue, key, bucket = await geotiff_job_input(request, services, job_id, FeaturesOptions,
                                                          FeaturesRequest, _queue, _check_upload)
    record = await run_in_threadpool(
        services.runner.submit, job_id, "features", options.model, queue, (job_id, key, options.model),
        {"source_bucket": bucket, "version": options.version, "quantized": options.quantized,
         "tile_size": options.tile_size})
    return job_response(request, record)
