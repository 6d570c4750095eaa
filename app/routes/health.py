"""Liveness, readiness (queue and object store reachable) and Prometheus metrics; no API key."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.schemas import Health, Readiness
from app.services import ServicesDep

router = APIRouter(tags=["operations"])
log = logging.getLogger("eoz.api")


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(services: ServicesDep):
    """Ready when jobs can be queued (Redis, if used) and the object store answers."""
    checks = {}
    for name, ping in (("queue", services.runner.ping), ("store", services.store.ping)):
        try:
            ping()
            checks[name] = "ok"
        except Exception:  # readiness reports any failure; what failed (with paths, hosts) goes to the log
            log.warning("readiness: the %s is unavailable", name, exc_info=True)
            checks[name] = "unavailable (the service log says why)"
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
def metrics(request: Request) -> Response:
    """Jobs, bytes, timings, ratios and quality, queue depth, worker devices and HTTP requests."""
    state = request.app.state
    exposition = generate_latest(state.metrics_registry) + generate_latest(state.http_metrics_registry)
    return Response(exposition, media_type=CONTENT_TYPE_LATEST)
