"""/v1/jobs: the caller's jobs listed, one job's state, its result, and cancel.

Jobs are scoped to the API key that created them: another key gets 404, as for a job that
does not exist. DELETE cancels a queued or running job (it is stopped where it runs and
keeps the status "canceled"; canceling it again answers the same); a job that already
finished or failed answers 409 and keeps its result until EOZ_RETENTION_DAYS expire it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, StreamingResponse

from app.auth import Owner
from app.errors import problems
from app.schemas import Job, JobList
from app.services import Services, ServicesDep
from workers.errors import JobNotFoundError, ResultNotReadyError
from workers.keys import download_name, is_job_id, media_type
from workers.runner import JobRecord, Status

router = APIRouter(tags=["jobs"])
MAX_PAGE = 1000


def job_response(request: Request, record: JobRecord) -> Job:
    return Job.from_record(record, str(request.url_for("get_job", job_id=record.id)))


def _checked(job_id: str) -> str:
    if not is_job_id(job_id):
        raise JobNotFoundError(f"no job {job_id!r}: job ids are 32 hex digits")
    return job_id


def _record(services: Services, job_id: str, owner: str) -> JobRecord:
    return services.runner.get(_checked(job_id), owner)


@router.get("/jobs", response_model=JobList, name="list_jobs", responses=problems(401, 403, 422))
def list_jobs(request: Request, services: ServicesDep, owner: Owner,
              status: Annotated[Status | None, Query(description="only jobs in this state")] = None,
              limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="jobs per page")] = 100,
              cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None
              ) -> JobList:
    """The caller's jobs, newest first, a page at a time."""
    page = services.runner.list(owner, status, limit, cursor)
    return JobList(jobs=[job_response(request, r) for r in page.jobs], next_cursor=page.next_cursor)


@router.get("/jobs/{job_id}", response_model=Job, name="get_job", responses=problems(401, 403, 404))
def get_job(job_id: str, request: Request, services: ServicesDep, owner: Owner) -> Job:
    """The job's state (queued, running, finished, failed, canceled), progress, timings, result or reason."""
    return job_response(request, _record(services, job_id, owner))


@router.delete("/jobs/{job_id}", response_model=Job, name="cancel_job", responses=problems(401, 403, 404, 409))
def cancel_job(job_id: str, request: Request, services: ServicesDep, owner: Owner) -> Job:
    """Cancel a queued or running job: it stops where it runs and its status becomes "canceled".
    A job that already finished or failed answers 409 (its result stays until it expires)."""
    return job_response(request, services.runner.cancel(_checked(job_id), owner))


@router.get("/jobs/{job_id}/result", response_class=StreamingResponse, name="get_job_result",
            responses={200: {"description": "the result (.eoz or GeoTIFF)",
                             "content": {"application/octet-stream": {}, "image/tiff": {}}},
                       307: {"description": "S3 store: redirect to a presigned URL of the result"},
                       **problems(401, 403, 404, 409)})
def get_job_result(job_id: str, services: ServicesDep, owner: Owner):
    """The result file: streamed from the store, or a 307 to a presigned S3 URL."""
    record = _record(services, job_id, owner)
    if record.status != "finished":
        reason = f": {record.error}" if record.error else ""
        raise ResultNotReadyError(f"job {job_id} is {record.status}{reason}")
    key = record.result["key"]
    url = services.store.presigned_url(key)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    size = services.store.size(key)
    return StreamingResponse(
        services.store.iter_bytes(key), media_type=media_type(key),
        headers={"Content-Length": str(size), "Content-Disposition": f'attachment; filename="{download_name(key)}"'})
