"""GET /v1/jobs/{id} and its result: state, progress, timings, result and failure reason."""

from __future__ import annotations

from pathlib import PurePosixPath

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, StreamingResponse

from app.errors import problems
from app.schemas import Job
from app.services import Services, ServicesDep
from workers.errors import JobNotFoundError, ResultNotReadyError
from workers.keys import is_job_id
from workers.runner import JobRecord

router = APIRouter(tags=["jobs"])
MEDIA_TYPES = {".eoz": "application/octet-stream", ".tif": "image/tiff"}


def job_response(request: Request, record: JobRecord) -> Job:
    return Job.from_record(record, str(request.url_for("get_job", job_id=record.id)))


def _record(services: Services, job_id: str) -> JobRecord:
    if not is_job_id(job_id):
        raise JobNotFoundError(f"no job {job_id!r}: job ids are 32 hex digits")
    return services.runner.get(job_id)


@router.get("/jobs/{job_id}", response_model=Job, name="get_job", responses=problems(401, 403, 404))
def get_job(job_id: str, request: Request, services: ServicesDep) -> Job:
    """The job's state (queued, running, finished, failed), progress, timings, result or reason."""
    return job_response(request, _record(services, job_id))


@router.get("/jobs/{job_id}/result", response_class=StreamingResponse, name="get_job_result",
            responses={200: {"description": "the result (.eoz or GeoTIFF)",
                             "content": {"application/octet-stream": {}, "image/tiff": {}}},
                       307: {"description": "S3 store: redirect to a presigned URL of the result"},
                       **problems(401, 403, 404, 409)})
def get_job_result(job_id: str, services: ServicesDep):
    """The result file: streamed from the store, or a 307 to a presigned S3 URL."""
    record = _record(services, job_id)
    if record.status != "finished":
        reason = f": {record.error}" if record.error else ""
        raise ResultNotReadyError(f"job {job_id} is {record.status}{reason}")
    key = record.result["key"]
    url = services.store.presigned_url(key)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    suffix = PurePosixPath(key).suffix
    size = services.store.size(key)
    return StreamingResponse(
        services.store.iter_bytes(key), media_type=MEDIA_TYPES.get(suffix, "application/octet-stream"),
        headers={"Content-Length": str(size),
                 "Content-Disposition": f'attachment; filename="{job_id}{suffix}"'})
