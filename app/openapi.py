"""The OpenAPI document, completed where FastAPI cannot infer it.

POST /v1/compress, /v1/decompress and /v1/features read their bodies themselves (to stream uploads), so
their two request forms, multipart and JSON, are declared here, and their schemas and the
problem+json schema are added to the components, so a client generator gets them as is.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.schemas import (
    CompressRequest,
    CompressUpload,
    DecompressRequest,
    DecompressUpload,
    FeaturesRequest,
    FeaturesUpload,
    Problem,
)

COMPONENTS = (CompressUpload, CompressRequest, DecompressUpload, DecompressRequest, FeaturesUpload,
              FeaturesRequest, Problem)
REF = "#/components/schemas/{model}"


def request_body(form: type[BaseModel], json: type[BaseModel]) -> dict:
    """``openapi_extra`` of a route taking a multipart upload or a JSON body."""
    def ref(model):
        return {"schema": {"$ref": REF.format(model=model.__name__)}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": ref(form),
                                                          "application/json": ref(json)}}}


def install(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            _, extra = models_json_schema([(m, "validation") for m in COMPONENTS], ref_template=REF)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in extra.get("$defs", {}).items():
                components.setdefault(name, definition)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
