"""POST /v1/features: a GeoTIFF (upload or S3 key) in, a job that writes its top-level latents out (202).

As for compression, everything knowable before the job runs is checked first: the model
exists and is a VQVAE-FPN model, and an upload is a GeoTIFF within limits with the
model's bands and dtype (eoz.resolve).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from app.auth import Owner
from app.errors import problems
from app.openapi import request_body
from app.routes.jobs import job_response
from app.schemas import FeaturesOptions, FeaturesRequest, FeaturesUpload, Job
from app.services import ServicesDep
from app.uploads import geotiff_job_input
from eoz.codecs import VQVAECodec
from eoz.raster import RasterMeta
from eoz.resolve import Resolved, resolve
from workers.keys import new_job_id

router = APIRouter(tags=["features"])


def _resolve(options: FeaturesOptions, meta: RasterMeta | None = None) -> Resolved:
    """Features come from a vqvae-fpn model's top level."""
    return resolve(options.model, options.version, {}, meta, codecs=(VQVAECodec.codec_id,))


@router.post("/features", status_code=202, response_model=Job,
             openapi_extra=request_body(FeaturesUpload, FeaturesRequest),
             responses=problems(400, 401, 403, 413, 415, 422, 503))
async def features(request: Request, services: ServicesDep, owner: Owner) -> Job:
    """Queue a GeoTIFF for latent export: multipart (``file`` plus fields) or JSON with ``source``.

    The result is a float32 GeoTIFF with one band per latent channel, at the top level's
    resolution, in the scene's CRS.
    """
    job_id = new_job_id()
    options, resolved, key, bucket = await geotiff_job_input(request, services, job_id, FeaturesOptions,
                                                             FeaturesRequest, _resolve)
    record = await run_in_threadpool(
        services.runner.submit, job_id, "features", resolved.model_id, resolved.queue,
        (job_id, key, resolved.model_id),
        {"source_bucket": bucket, "version": resolved.version, "quantized": options.quantized,
         "tile_size": options.tile_size}, owner=owner)
    return job_response(request, record)
