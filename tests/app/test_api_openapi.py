"""The OpenAPI document is complete enough for a client generator."""

from __future__ import annotations

import json

import jsonschema
from fastapi.testclient import TestClient

from app.main import create_app
from eoz.resolve import BOUNDS


def test_both_request_forms_and_problem_responses_are_documented(service_env):
    with TestClient(create_app()) as client:
        spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, form, body in (("/v1/compress", "CompressUpload", "CompressRequest"),
                             ("/v1/decompress", "DecompressUpload", "DecompressRequest"),
                             ("/v1/features", "FeaturesUpload", "FeaturesRequest")):
        operation = spec["paths"][path]["post"]
        content = operation["requestBody"]["content"]
        assert content["multipart/form-data"]["schema"]["$ref"].endswith(form)
        assert content["application/json"]["schema"]["$ref"].endswith(body)
        assert operation["responses"]["413"]["content"]["application/problem+json"]["schema"]["$ref"] \
            .endswith("/Problem")
        assert "202" in operation["responses"]
    upload = schemas["CompressUpload"]["properties"]["file"]
    assert upload["type"] == "string"
    assert upload.get("format") == "binary" or upload.get("contentMediaType") == "application/octet-stream"
    assert {"psnr", "mse", "lambda", "block", "rate_weight", "quality", "lossless", "klt"} <= set(
        schemas["CompressRequest"]["properties"])
    assert schemas["S3Source"]["required"] == ["bucket", "key"]
    assert {"queued", "running", "finished", "failed"} <= set(schemas["Job"]["properties"]["status"]["enum"])
    assert {"/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/models", "/healthz", "/readyz",
            "/metrics"} <= set(spec["paths"])
    security = spec["components"]["securitySchemes"]
    assert security["APIKeyHeader"]["name"] == "X-API-Key" and security["HTTPBearer"]["scheme"] == "bearer"
    # every $ref resolves
    text = str(spec)
    for name in {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in schemas, name


def _spec(client) -> dict:
    return client.get("/openapi.json").json()


def _validator(spec: dict, name: str):
    """A validator of one component schema, its $refs resolved within the document."""
    return jsonschema.Draft202012Validator({**spec["components"]["schemas"][name], "components": spec["components"]})


def test_compress_bodies_say_which_models_need_a_target(service_env):
    """The schema refuses what the service refuses for a missing or double target; the bounds are shown."""
    with TestClient(create_app()) as client:
        spec = _spec(client)
    source = {"bucket": "eoz", "key": "incoming/a.tif"}
    validator = _validator(spec, "CompressRequest")
    for body in ({"model": "jpeg2000"}, {"model": "jpeg2000", "lossless": False},
                 {"model": "tiny-hp"}, {"model": "tiny-hp", "psnr": 40, "mse": 9},
                 {"model": "tiny-wavelet", "lambda": 500}, {"model": "jpeg2000", "quality": 1e308},
                 {"model": "tiny-hp", "psnr": 200}):
        assert not validator.is_valid({**body, "source": source}), body
    for body in ({"model": "jpeg2000", "quality": 40}, {"model": "jpeg2000", "lossless": True},
                 {"model": "tiny-vq"}, {"model": "tiny-hp", "lambda": 500}, {"model": "tiny-wavelet", "mse": 9}):
        assert validator.is_valid({**body, "source": source}), body
    upload = _validator(spec, "CompressUpload")
    assert not upload.is_valid({"model": "jpeg2000", "file": "x"})
    properties = spec["components"]["schemas"]["CompressRequest"]["properties"]
    psnr = next(s for s in properties["psnr"]["anyOf"] if s.get("type") == "number")
    assert (psnr["minimum"], psnr["maximum"]) == BOUNDS["psnr"]


def test_only_bodies_that_are_sent_are_declared(service_env):
    """FastAPI's own validation body is never sent (errors are problem+json): routes whose parameters
    cannot fail validation declare no 422 at all, the others the problem+json body."""
    with TestClient(create_app()) as client:
        spec = _spec(client)
    assert "HTTPValidationError" not in json.dumps(spec)
    for path in ("/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result"):
        assert "422" not in spec["paths"][path]["get"]["responses"], path
    for operation in (op for item in spec["paths"].values() for op in item.values()):
        if "422" in operation["responses"]:
            assert list(operation["responses"]["422"]["content"]) == ["application/problem+json"]
