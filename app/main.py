"""The FastAPI application: `eoz serve` runs ``app.main:app`` with uvicorn.

Everything is configured from the environment (``workers.settings``): with nothing set it
is the embedded default (jobs in worker processes of this one, job records and objects
under EOZ_DATA_DIR); REDIS_URL sends jobs to `eoz worker` processes, EOZ_S3_BUCKET keeps
objects in S3. The runner, the store and the retention pass (``workers.cleanup``) start
with the app, so importing this module has no side effects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry

from app import docs, errors, http_metrics, openapi
from app.auth import require_api_key
from app.routes import compress, decompress, features, health, jobs, models
from app.services import Services
from workers.cleanup import PeriodicCleanup
from workers.metrics import ServiceCollector
from workers.runner import make_runner
from workers.settings import Settings
from workers.store import make_store

DESCRIPTION = """Compression of Earth-observation rasters with learned codecs.

POST a GeoTIFF (or name an S3 object) to /v1/compress, poll the job's status_url, and
fetch its result_url; /v1/decompress turns .eoz files back into GeoTIFF or COG."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """An app on these settings (default: from the environment when it starts)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings or Settings()
        store = make_store(config)
        runner = make_runner(config, store)
        app.state.services = Services(config, store, runner)
        app.state.metrics_registry = CollectorRegistry()
        app.state.metrics_registry.register(ServiceCollector(runner.tally, runner))
        cleaner = PeriodicCleanup(config, store, runner).start()
        try:
            yield
        finally:
            cleaner.stop()
            runner.close()

    app = FastAPI(title="eoz", version="1", description=DESCRIPTION, lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    v1 = [Depends(require_api_key)]
    for router in (compress.router, decompress.router, features.router, jobs.router, models.router):
        app.include_router(router, prefix="/v1", dependencies=v1)
    app.include_router(health.router)
    errors.install(app)
    http_metrics.install(app)
    openapi.install(app)
    docs.install(app)
    return app


app = create_app()
