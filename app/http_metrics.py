"""HTTP request metrics: count and latency by method, route template and status.

The route label is the template the request matched (``/v1/jobs/{job_id}``; a mounted
app's ``/docs-assets/{path}``), or "unmatched", never the path as sent, so a client cannot
create label values at will. The
series live in the API process only (the job metrics gathered from every worker are
``workers.metrics``); ``/metrics`` exposes both.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Mount

LABELS = ("method", "route", "status")
UNMATCHED = "unmatched"


class HttpMetrics:
    """Pure ASGI middleware (streamed responses pass through untouched)."""

    def __init__(self, app, registry: CollectorRegistry, fastapi: FastAPI):
        self.app, self.fastapi, self._templates = app, fastapi, None
        self.requests = Counter("eoz_http_requests", "HTTP requests answered, by method, route template "
                                "and status.", LABELS, registry=registry)
        self.seconds = Histogram("eoz_http_request_duration_seconds", "Time to answer an HTTP request "
                                 "(the response's start), by method, route template and status.", LABELS,
                                 registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, send_status)
        finally:
            labels = (scope["method"], self._template(scope.get("route"), scope.get("root_path", "")), str(status))
            self.requests.labels(*labels).inc()
            self.seconds.labels(*labels).observe(time.perf_counter() - start)


    def _template(self, route, root_path: str) -> str:
        """The full template of the matched route: a route of an included router knows only its
        own part (``/jobs/{job_id}``), FastAPI's route contexts the prefix too. A mount sets no
        route, only its path as the request's root path."""
        if route is None:
            mounts = [m.path for m in self.fastapi.routes if isinstance(m, Mount)]
            return next((f"{m}/{{path}}" for m in mounts if root_path.endswith(m)), UNMATCHED)
        if self._templates is None:  # every route is registered by the first request
            self._templates = {id(c.original_route): c.path_format for c in iter_route_contexts(self.fastapi.routes)}
        return self._templates.get(id(route), getattr(route, "path_format", UNMATCHED))


def install(app: FastAPI) -> None:
    """Count every request of the app; the series go to ``app.state.http_metrics_registry``."""
    app.state.http_metrics_registry = CollectorRegistry()
    app.add_middleware(HttpMetrics, registry=app.state.http_metrics_registry, fastapi=app)
