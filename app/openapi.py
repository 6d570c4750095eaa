"""The OpenAPI document, completed where FastAPI cannot infer it, so that it says what the service does.

POST /v1/compress, /v1/decompress and /v1/features read their bodies themselves (to stream uploads), so
their two request forms, multipart and JSON, are declared here, and their schemas and the
problem+json schema are added to the components, so a client generator gets them as is.
A compress body names the models (those in the store when the document is first asked for)
whose codec needs exactly one quality mode. FastAPI's validation-error body is never sent
(every error is problem+json): where a route's parameters can fail validation its 422 is
the problem+json body, elsewhere no 422 is declared.
"""

from __future__ import annotations

import json

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from eoz.registry import ModelStore
from eoz.resolve import CAPABILITIES, JPEG2000, TARGETS

from app.schemas import (
    CompressRequest,
    CompressUpload,
    DecompressRequest,
    DecompressUpload,
    FeaturesRequest,
    FeaturesUpload,
    Problem,
)
from app.errors import PROBLEM_JSON

COMPONENTS = (CompressUpload, CompressRequest, DecompressUpload, DecompressRequest, FeaturesUpload,
              FeaturesRequest, Problem)
REF = "#/components/schemas/{model}"


def request_body(form: type[BaseModel], json: type[BaseModel]) -> dict:
    """``openapi_extra`` of a route taking a multipart upload or a JSON body."""
    def ref(model):
        return {"schema": {"$ref": REF.format(model=model.__name__)}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": ref(form),
                                                          "application/json": ref(json)}}}


MODES = (*TARGETS, "quality", "lossless")  # a codec that takes a quality target needs exactly one of these


def _mode(option: str) -> dict:
    """The body gives this mode (lossless only when true: false is no option)."""
    return {"required": [option], **({"properties": {option: {"const": True}}} if option == "lossless" else {})}


def target_rules() -> list[dict]:
    """JSON Schema conditions: a model of a codec that takes a target needs exactly one of its modes."""
    models: dict[str, list[str]] = {JPEG2000: [JPEG2000]}
    for entry in ModelStore().entries():
        models.setdefault(entry.codec, []).append(entry.model_id)
    rules = []
    for codec, capability in CAPABILITIES.items():
        modes = [o for o in capability.options if o in MODES]
        if models.get(codec) and set(modes) & set(TARGETS):
            rules.append({"if": {"properties": {"model": {"enum": sorted(set(models[codec]))}}, "required": ["model"]},
                          "then": {"oneOf": [_mode(m) for m in modes]}})
    return rules


def _can_fail_validation(operation: dict) -> bool:
    """A plain string in the path always validates; anything else may not."""
    return any(p.get("in") != "path" or p.get("schema", {}).get("type") != "string" or len(p["schema"]) > 2
               for p in operation.get("parameters", []))


def _declare_sent_errors(schema: dict) -> None:
    problem = {"description": "Invalid request", "content": {PROBLEM_JSON: {"schema": {"$ref": REF.format(
        model="Problem")}}}}
    for item in schema["paths"].values():
        for operation in item.values():
            declared = operation.get("responses", {}).get("422", {})
            if "HTTPValidationError" in str(declared.get("content", {})):
                if _can_fail_validation(operation):
                    operation["responses"]["422"] = problem
                else:
                    del operation["responses"]["422"]
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        if name in components and f"/{name}\"" not in json.dumps(schema):
            del components[name]


def install(app: FastAPI) -> None:
    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            _, extra = models_json_schema([(m, "validation") for m in COMPONENTS], ref_template=REF)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in extra.get("$defs", {}).items():
                components.setdefault(name, definition)
            for name in ("CompressUpload", "CompressRequest"):
                components[name]["allOf"] = target_rules()
            _declare_sent_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
