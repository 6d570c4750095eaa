"""Every error the API answers with, as RFC 7807 problem+json, from ONE table.

Routes raise exceptions (the library's ``eoz.errors``, the service's ``workers.errors``,
the API's own below); ``STATUS`` maps each class to a status code and title, looked up
along the exception's class hierarchy, so a new subclass inherits its parent's code.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from app.schemas import Problem
from eoz.errors import (
    ContainerError,
    EozError,
    InputError,
    ModelMismatchError,
    UnknownModelError,
)
from workers.errors import (
    JobEndedError,
    JobNotFoundError,
    ObjectNotFoundError,
    ResultNotReadyError,
    SourceNotAllowedError,
    SourceNotFoundError,
    TooLargeError,
    TransientStoreError,
    UnsupportedMediaError,
)
from workers.redaction import redact

log = logging.getLogger("eoz.api")
PROBLEM_JSON = "application/problem+json"


class MalformedRequestError(InputError):
    """The body cannot be parsed at all (broken multipart, no boundary)."""


class MissingApiKeyError(EozError, PermissionError):
    """API keys are configured and the request carries none."""


class InvalidApiKeyError(EozError, PermissionError):
    """The request's API key is not one of EOZ_API_KEYS."""


STATUS: dict[type[BaseException], tuple[int, str]] = {
    MissingApiKeyError: (401, "API key required"),
    InvalidApiKeyError: (403, "API key not accepted"),
    SourceNotAllowedError: (403, "Source not allowed"),
    JobNotFoundError: (404, "Job not found"),
    ObjectNotFoundError: (404, "Object not found"),
    ResultNotReadyError: (409, "Result not ready"),
    JobEndedError: (409, "Job already ended"),
    TooLargeError: (413, "Input too large"),
    UnsupportedMediaError: (415, "Unsupported media type"),
    MalformedRequestError: (400, "Malformed request"),
    SourceNotFoundError: (422, "Source not found"),
    UnknownModelError: (422, "Unknown model"),
    ModelMismatchError: (422, "Model version mismatch"),
    ContainerError: (422, "Unreadable .eoz file"),
    InputError: (422, "Input cannot be processed"),
    ValidationError: (422, "Invalid request"),
    RequestValidationError: (422, "Invalid request"),
    TransientStoreError: (503, "Object store unavailable"),
    RedisError: (503, "Job queue unavailable"),
}


def status_of(error: BaseException) -> tuple[int, str]:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500, "Internal server error"


def problem_response(request: Request, status: int, title: str, detail: str,
                     errors: list[dict] | None = None, headers: dict | None = None) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, instance=request.url.path, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status,
                        media_type=PROBLEM_JSON, headers=headers)


async def _handle(request: Request, error: Exception) -> JSONResponse:
    status, title = status_of(error)
    errors = None
    if isinstance(error, (ValidationError, RequestValidationError)):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in error.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    elif status == 500:
        log.exception("unhandled error on %s", request.url.path, exc_info=error)
        detail = "the service failed unexpectedly; the error is logged"
    else:
        detail = redact(str(error), request.app.state.services.settings.data_dir)
    headers = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'} if status == 401 else None
    return problem_response(request, status, title, detail, errors, headers)


async def _handle_http(request: Request, error: HTTPException) -> JSONResponse:
    """Starlette's own errors (no such route, wrong method) in the same shape."""
    return problem_response(request, error.status_code, HTTPStatus(error.status_code).phrase,
                            str(error.detail), headers=error.headers)


def install(app: FastAPI) -> None:
    for cls in (*STATUS, Exception):
        app.add_exception_handler(cls, _handle)
    app.add_exception_handler(HTTPException, _handle_http)


def problems(*statuses: int) -> dict:
    """OpenAPI ``responses`` entries: the problem+json body of each error status a route answers."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {s: {"description": HTTPStatus(s).phrase, "content": {PROBLEM_JSON: {"schema": schema}}}
            for s in statuses}
