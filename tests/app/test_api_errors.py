"""Every error path of the API, as RFC 7807 problem+json; nothing is queued on bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
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


def test_a_complex_sar_upload_is_refused_with_what_to_do(make_client, tmp_path):
    path = tmp_path / "slc.tif"
    with rasterio.open(path, "w", driver="GTiff", height=16, width=16, count=1, dtype="complex64") as ds:
        ds.write(np.ones((1, 16, 16), np.complex64))
    problem(post_file(client := make_client(), path.read_bytes(), model="jpeg2000", quality="40"), 422,
            "complex64 samples", "I and Q as two bands")
    assert queued(client) == 0


def test_bad_models_and_parameters_are_422(make_client, scene):
    client = make_client()
    content = scene[0].read_bytes()
    problem(post_file(client, content, model="no-such-model"), 422, "no model 'no-such-model'")
    problem(post_file(client, content, model="jpeg2000", quality="40", **{"lambda": "500"}), 422,
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
    problem(post_file(client, content, model="jpeg2000", lossless="true", klt="true"), 422,
            "klt (--klt) with lossless")
    problem(post_file(client, content, model="auto", lossless="true", rate_weight="1"), 422,
            "no codec honours lossless, rate_weight")
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
    answer = post_file(client, path.read_bytes(), model="tiny-wavelet", psnr="40", peak="10")
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


S2_BANDS = ["B02", "B03", "B04", "B08"]


def test_rasters_and_targets_the_models_cannot_take_are_422(make_client, scene, tmp_path):
    """Refused before anything is queued: a dtype the model was not trained for (naming the models
    that take the raster), a dtype OpenJPEG cannot code, a float raster's PSNR without a peak, and
    absurd quality targets."""
    client = make_client()
    floats = tmp_path / "reflectance.tif"
    write_raster(floats, np.random.default_rng(0).random((4, 32, 32), np.float32),
                 RasterMeta(32, 32, 4, "float32", S2_BANDS, None, None, None))
    problem(post_file(client, floats.read_bytes(), model="tiny-vq"), 422, "trained on uint16",
            "models that take it: tiny-predictive, tiny-wavelet")
    problem(post_file(client, floats.read_bytes(), model="jpeg2000", quality="40"), 422,
            "takes uint8, int8, uint16, int16")
    problem(post_file(client, floats.read_bytes(), model="tiny-wavelet", psnr="45"), 422,   # at Sentinel-2's peak
            "float32 raster has no natural PSNR peak", "state peak")
    content = scene[0].read_bytes()
    for model, field, value in (("jpeg2000", "quality", "inf"), ("jpeg2000", "quality", "1e308"),
                                ("jpeg2000", "quality", "1e-300"), ("jpeg2000", "psnr", "200"),
                                ("tiny-wavelet", "mse", "0"), ("tiny-wavelet", "mse", "inf"),
                                ("tiny-wavelet", "mse", "1e-300"), ("tiny-hp", "psnr", "nan")):
        body = problem(post_file(client, content, model=model, **{field: value}), 422)
        assert field in body["detail"], (field, value, body)
    source = {"bucket": "eoz", "key": "incoming/a.tif"}
    problem(client.post("/v1/compress", json={"source": source, "model": "jpeg2000", "quality": 1e308}), 422,
            "quality")
    assert queued(client) == 0


def test_work_a_cpu_worker_cannot_finish_in_time_is_422(make_client, scene):
    """The embedded worker computes on CPU here: a VQ encode estimated past EOZ_MAX_CPU_SECONDS is refused."""
    client = make_client(EOZ_MAX_CPU_SECONDS="0.01")
    problem(post_file(client, scene[0].read_bytes(), model="tiny-vq"), 422, "EOZ_MAX_CPU_SECONDS", "on CPU")
    assert queued(client) == 0


def _host_paths(client, *more) -> list[str]:
    settings = client.app.state.services.settings
    return [str(p) for p in (settings.data_dir, settings.data_dir.resolve(), settings.scratch_dir, *more)]


def test_no_host_paths_or_raw_errors_in_any_answer(make_client, scene, tiny_models, tmp_path):
    """422 details, a failed job's error and /readyz name no scratch file, data dir or model store,
    and carry no GDAL message (which names the file it read)."""
    client = make_client()
    leaks = _host_paths(client, tiny_models.root, tiny_models.root.resolve())
    content = scene[0].read_bytes()
    answers = [post_file(client, b"II*\x00" + bytes(range(256)) * 4, model="jpeg2000", quality="40"),
               post_file(client, content, model="no-such-model"),
               post_file(client, content, model="tiny-vq", version="9")]
    for answer in answers:
        body = problem(answer, 422)
        assert not any(leak in answer.text for leak in leaks), body
    assert "TIFFReadDirectory" not in answers[0].text
    cut = content[:len(content) // 2]  # tags intact, pixels cut off: fails inside the job
    job = wait_for_job(client, post_file(client, cut, model="jpeg2000", quality="40").json()["status_url"])
    assert job["status"] == "failed" and job["error"]
    assert not any(leak in job["error"] for leak in leaks), job["error"]
    shutil.rmtree(client.app.state.services.store.root)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["store"] != "ok"
    assert not any(leak in ready.text for leak in leaks), ready.text


def test_empty_uploads_are_422_not_415(make_client):
    """multipart/form-data is the right media type: an empty file part is bad input, said so."""
    client = make_client()
    problem(post_file(client, b"", model="jpeg2000", quality="40"), 422, "empty")
    problem(post_file(client, b"", "/v1/decompress"), 422, "empty")
    problem(post_file(client, b"", "/v1/features", model="tiny-vq"), 422, "empty")


def test_decompress_takes_the_window_as_repeated_fields_too(make_client, scene):
    """The OpenAPI document says window is an array: a multipart array is repeated fields."""
    client = make_client()
    job = wait_for_job(client, post_file(client, scene[0].read_bytes(), model="jpeg2000", quality="40")
                       .json()["status_url"])
    encoded = client.get(job["result_url"]).content
    for form in ({"window": ["8", "16", "32", "24"]}, {"window": "8,16,32,24"}):
        answer = client.post("/v1/decompress", files={"file": ("x.eoz", encoded)}, data=form)
        assert answer.status_code == 202, answer.text
        assert wait_for_job(client, answer.json()["status_url"])["result"]["window"] == [8, 16, 32, 24]
    problem(client.post("/v1/decompress", files={"file": ("x.eoz", encoded)},
                        data={"window": ["8", "16"]}), 422, "window")


def test_a_null_version_means_the_newest(make_client, scene):
    """JSON null, and the same as a form field (which has no null: 'null' or empty), is the newest version."""
    client = make_client()
    for version in ("null", ""):
        answer = post_file(client, scene[0].read_bytes(), "/v1/features", model="tiny-vq", version=version)
        assert answer.status_code == 202, answer.text
    answer = client.post("/v1/features", json={"source": {"bucket": "eoz", "key": "incoming/a.tif"},
                                               "model": "tiny-vq", "version": None})
    problem(answer, 403, "EOZ_S3_BUCKET")  # past validation and model resolution
