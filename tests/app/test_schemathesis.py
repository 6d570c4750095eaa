"""schemathesis against the live OpenAPI document of the embedded service, open and with API keys.

Stateless, bounded (max_examples per operation): every answer must be no server error, a
status code the document declares for the operation, with the declared content type and a
body that matches the declared schema.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import checks

from app.main import create_app

KEY = "alpha"
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]


@pytest.fixture(params=[None, KEY], ids=["open", "api-keys"])
def api_key(request) -> str | None:
    return request.param


@pytest.fixture()
def live_schema(service_env, monkeypatch, api_key):
    if api_key:
        monkeypatch.setenv("EOZ_API_KEYS", api_key)
    app = create_app()
    with TestClient(app):  # the lifespan: runner, store and metrics, as `eoz serve` starts them
        yield schemathesis.openapi.from_asgi("/openapi.json", already_started(app))


def already_started(app):
    """The app for schemathesis' clients, whose lifespan is the fixture's: each client would start
    its own, and the embedded service runs one per data folder."""
    async def serve(scope, receive, send):
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    return serve


schema = schemathesis.pytest.from_fixture("live_schema")


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_what_the_document_declares(case, api_key):
    case.call_and_validate(headers={"X-API-Key": api_key} if api_key else None, checks=CHECKS)
