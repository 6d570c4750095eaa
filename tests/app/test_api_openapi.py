"""The OpenAPI document is complete enough for a client generator."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app


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
    assert schemas["Job"]["properties"]["status"]["enum"] == ["queued", "running", "finished", "failed"]
    assert {"/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/models", "/healthz", "/readyz",
            "/metrics"} <= set(spec["paths"])
    security = spec["components"]["securitySchemes"]
    assert security["APIKeyHeader"]["name"] == "X-API-Key" and security["HTTPBearer"]["scheme"] == "bearer"
    # every $ref resolves
    text = str(spec)
    for name in {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in schemas, name
