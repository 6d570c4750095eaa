"""Every error path of the API, as RFC 7807 problem+json; nothing is queued on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from eoz.raster import RasterMeta, write_raster
from tests.conftest import HONOURED, OPTION_VALUES, with_option
from tests.workers.servers import wait_for_job, write_crop


@pytest.fixture()
def make_client(service_env, monkeypatch):
    clients = []

    def make(**environment):
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        client = TestClient(create_app())
        clients.append(client.__enter__())
        return client
    yield make
    for client in clients:
        client.__exit__(None, None, None)


def problem(answer, status: int, *needles: str) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["status"] == status and body["title"] and body["instance"].startswith("/")
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    return body


def post_file(client, content: bytes, endpoint: str = "/v1/compress", **fields):
    return client.post(endpoint, files={"file": ("upload", content)}, data=fields)


def queued(client) -> int:
    return sum(client.app.state.services.runner.queue_depths().values()) + len(
        client.app.state.services.store.keys("uploads/"))


def test_not_a_geotiff_is_415(make_client):
    client = make_client()
    problem(post_file(client, b"\x89PNG\r\n\x1a\n" + bytes(64), model="jpeg2000", quality="40"), 415, "not a GeoTIFF")
    problem(post_file(client, b"<VRTDataset/>", model="jpeg2000", quality="40"), 415, "not a GeoTIFF")
    problem(client.post("/v1/compress", content=b"raw bytes", headers={"content-type": "image/tiff"}), 415,
            "multipart/form-data")
    assert queued(client) == 0


def test_bad_models_and_parameters_are_422(make_client, scene):
    client = make_client()
    content = scene[0].read_bytes()
    problem(post_file(client, content, model="no-such-model"), 422, "no model 'no-such-model'")
    problem(post_file(client, content, model="jpeg2000", quality="40", **{"lambda": "0.1"}), 422,
            "'jpeg2000' (codec jpeg2000) cannot honour lambda")
    problem(post_file(client, content, model="tiny-vq", psnr="40"), 422, "cannot honour psnr")
    problem(post_file(client, content, model="jpeg2000"), 422, "needs one of psnr")
    body = problem(post_file(client, content, model="jpeg2000", psnr="loud"), 422, "psnr")
    assert body["errors"][0]["loc"] == ["psnr"]
    problem(post_file(client, content, model="jpeg2000", quality="40", colour="blue"), 422, "colour")
    assert queued(client) == 0


@pytest.mark.parametrize("option", OPTION_VALUES)
@pytest.mark.parametrize("model", sorted(HONOURED))
def test_every_option_against_every_codec(make_client, codec_env, model, option):
    """Not honoured: 422 naming it. Honoured: the options pass, and the (unset) S3 source is what stops it."""
    client = make_client()
    answer = client.post("/v1/compress", json={"source": {"bucket": "eoz", "key": "incoming/a.tif"},
                                               "model": model, **with_option(model, option)})
    if option in HONOURED[model]:
        problem(answer, 403, "EOZ_S3_BUCKET")
    else:
        problem(answer, 422, f"cannot honour {option}", "models: ")
    assert queued(client) == 0


def test_an_upload_the_model_cannot_honour_is_422(make_client, scene):
    client = make_client()
    content = scene[0].read_bytes()
    problem(post_file(client, content, model="tiny-vq", lossless="true"), 422, "cannot honour lossless",
            "models: jpeg2000")
    problem(post_file(client, content, model="jpeg2000", lossless="true", klt="true"), 422, "klt with lossless")
    problem(post_file(client, content, model="auto", lossless="true"), 422, "name a model")
    assert queued(client) == 0


def test_wrong_band_count_for_the_model_is_422(make_client, shared_data, tmp_path):
    client = make_client()
    path = tmp_path / "rgb.tif"
    write_crop(shared_data, path, (0, 0, 64, 64), bands=[0, 1, 2])
    problem(post_file(client, path.read_bytes(), model="tiny-vq"), 422, "expects 4 bands")
    assert queued(client) == 0


def test_unknown_jobs_are_404_and_results_of_failed_jobs_409(make_client, tmp_path):
    client = make_client()
    problem(client.get("/v1/jobs/" + "0" * 32), 404, "no job")
    problem(client.get("/v1/jobs/not-a-job-id/result"), 404, "no job")
    problem(client.get("/v1/no-such-route"), 404)

    path = tmp_path / "holes.tif"  # valid to open, refused by the codec: NaN pixels, no nodata declared
    array = np.full((1, 32, 32), 5.0, np.float32)
    array[0, 3, 4] = np.nan
    write_raster(path, array, RasterMeta(32, 32, 1, "float32", ["b"], None, None, None))
    answer = post_file(client, path.read_bytes(), model="jpeg2000", quality="40")
    failed = wait_for_job(client, answer.json()["status_url"])
    assert failed["status"] == "failed" and "NaN" in failed["error"] and failed["result"] is None
    problem(client.get(failed["result_url"]), 409, "failed", "NaN")


def test_uploads_over_the_limit_are_413(make_client, scene):
    client = make_client(EOZ_MAX_UPLOAD_BYTES="10000")
    problem(post_file(client, scene[0].read_bytes(), model="jpeg2000", quality="40"), 413, "EOZ_MAX_UPLOAD_BYTES")

    def chunked():  # no Content-Length: the limit is enforced while the body streams in
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.tif\"\r\n\r\n"
        for _ in range(100):
            yield b"II*\x00" + bytes(1020)
    answer = client.post("/v1/compress", content=chunked(),
                         headers={"content-type": "multipart/form-data; boundary=b"})
    problem(answer, 413, "over 10000 bytes")
    assert not any(client.app.state.services.settings.scratch_dir.iterdir())
    assert queued(client) == 0


def test_rasters_over_the_pixel_limit_are_413(make_client, scene):
    client = make_client(EOZ_MAX_PIXELS=str(100 * 100))
    problem(post_file(client, scene[0].read_bytes(), model="jpeg2000", quality="40"), 413, "EOZ_MAX_PIXELS")


def test_api_keys_401_and_403(make_client):
    client = make_client(EOZ_API_KEYS="alpha, beta")
    body = problem(client.get("/v1/models"), 401, "API key")
    assert body["title"] == "API key required"
    assert client.get("/v1/models").headers["www-authenticate"].startswith("ApiKey")
    problem(client.get("/v1/models", headers={"X-API-Key": "gamma"}), 403, "not valid")
    assert client.get("/v1/models", headers={"X-API-Key": "beta"}).status_code == 200
    assert client.get("/v1/models", headers={"Authorization": "Bearer alpha"}).status_code == 200
    problem(client.post("/v1/compress", files={"file": ("x", b"II*\x00")}, data={"model": "jpeg2000"}), 401)
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200


def test_s3_sources_need_s3_and_an_allowed_existing_key(make_client, s3, scene):
    s3_client, bucket = s3
    s3_client.put_object(Bucket=bucket, Key="incoming/scene.tif", Body=scene[0].read_bytes())
    client = make_client()

    def compress(source):
        return client.post("/v1/compress", json={"source": source, "model": "jpeg2000", "quality": 40})
    problem(compress({"bucket": bucket, "key": "results/x/output.eoz"}), 403, "outside the allowed sources",
            f"{bucket}/incoming/")
    problem(compress({"bucket": "someone-elses", "key": "incoming/scene.tif"}), 403, "outside")
    problem(compress({"bucket": bucket, "key": "incoming/../results/x"}), 422, "not a valid object key")
    problem(compress({"bucket": bucket, "key": "incoming/missing.tif"}), 422,
            f"s3://{bucket}/incoming/missing.tif does not exist")
    problem(client.post("/v1/compress", content=b"{not json", headers={"content-type": "application/json"}),
            422, "JSON")
    assert compress({"bucket": bucket, "key": "incoming/scene.tif"}).status_code == 202


def test_s3_sources_without_s3_are_403(make_client):
    client = make_client()
    answer = client.post("/v1/compress", json={"source": {"bucket": "eoz", "key": "incoming/a.tif"},
                                               "model": "jpeg2000", "quality": 40})
    problem(answer, 403, "EOZ_S3_BUCKET")


def test_decompress_refuses_bad_files_and_windows(make_client, scene):
    client = make_client()
    problem(post_file(client, scene[0].read_bytes(), "/v1/decompress"), 415, "not an .eoz")
    job = wait_for_job(client, post_file(client, scene[0].read_bytes(), model="jpeg2000", quality="40")
                       .json()["status_url"])
    encoded = client.get(job["result_url"]).content
    problem(post_file(client, encoded[:-10], "/v1/decompress"), 422)
    damaged = bytearray(encoded)
    damaged[20] ^= 0xFF
    problem(post_file(client, bytes(damaged), "/v1/decompress"), 422, "corrupt")
    problem(post_file(client, encoded, "/v1/decompress", window="100,100,64,64"), 422, "not inside")
    problem(post_file(client, encoded, "/v1/decompress", window="1,2,3"), 422, "window")
    problem(post_file(client, encoded, "/v1/decompress", format="png"), 422, "format")


def test_broken_multipart_is_400(make_client):
    client = make_client()
    problem(client.post("/v1/compress", content=b"x", headers={"content-type": "multipart/form-data"}), 400,
            "boundary")
    answer = client.post("/v1/compress", content=b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
                         headers={"content-type": "multipart/form-data; boundary=b"})
    problem(answer, 400, "Content-Disposition")
