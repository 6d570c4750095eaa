"""Job metrics: the same exposition from the in-memory and the Redis tally."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from eoz.codecs import codec_for_model
from eoz.container import EozReader, pack
from eoz.raster import RasterMeta
from eoz.scene import compress_array
from tests.workers.servers import wait_for_job
from workers.metrics import MemoryTally, RedisTally, ServiceCollector, record_job

RESULT = {"codec_seconds": 0.2, "input_bytes": 1000, "bytes": 100, "compression_ratio": 10.0, "psnr": 47.5}


class FakeRunner:
    def queue_depths(self):
        return {"gpu": 3, "cpu": 0}

    def worker_devices(self):
        return {"cpu": 2}


def exposition(tally) -> dict:
    registry = CollectorRegistry()
    registry.register(ServiceCollector(tally, FakeRunner()))
    return {s.name + str(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples}


def record_some(tally):
    record_job(tally, "compress", "jpeg2000", "finished", 1.5, RESULT)
    record_job(tally, "compress", "jpeg2000", "finished", 3.0, {**RESULT, "psnr": None})
    record_job(tally, "compress", "tiny-vq", "failed", 0.1)
    record_job(tally, "decompress", "tiny-vq", "abandoned", None)


def test_counters_histograms_and_gauges():
    tally = MemoryTally()
    record_some(tally)
    samples = exposition(tally)
    finished = "[('kind', 'compress'), ('model', 'jpeg2000'), ('outcome', 'finished')]"
    assert samples["eoz_jobs_total" + finished] == 2
    assert samples["eoz_input_bytes_total[('kind', 'compress')]"] == 2000
    assert samples["eoz_output_bytes_total[('kind', 'compress')]"] == 200
    seconds = "[('kind', 'compress'), ('le', '{}'), ('model', 'jpeg2000')]"
    assert samples["eoz_job_duration_seconds_bucket" + seconds.format("1.0")] == 0
    assert samples["eoz_job_duration_seconds_bucket" + seconds.format("2.5")] == 1
    assert samples["eoz_job_duration_seconds_bucket" + seconds.format("+Inf")] == 2
    assert samples["eoz_job_duration_seconds_sum[('kind', 'compress'), ('model', 'jpeg2000')]"] == 4.5
    assert samples["eoz_achieved_psnr_decibels_count[('model', 'jpeg2000')]"] == 1  # exact results have no PSNR
    assert samples["eoz_compression_ratio_count[('model', 'jpeg2000')]"] == 2
    assert samples["eoz_codec_duration_seconds_count[('kind', 'compress'), ('model', 'jpeg2000')]"] == 2
    assert samples["eoz_queued_jobs[('queue', 'gpu')]"] == 3
    assert samples["eoz_workers[('device', 'cpu')]"] == 2
    assert samples["eoz_workers[('device', 'cuda')]"] == 0


def test_the_redis_tally_adds_up_across_processes_like_memory(redis_url):
    shared, memory = RedisTally(redis.Redis.from_url(redis_url)), MemoryTally()
    record_some(shared)
    record_some(RedisTally(redis.Redis.from_url(redis_url)))  # a second worker
    record_some(memory)
    record_some(memory)
    assert exposition(shared) == exposition(memory)


def test_no_psnr_is_recorded_for_jobs_that_failed_or_measured_nothing_finite():
    """A failed job's result (if any came back) and a non-finite PSNR are not quality figures."""
    tally = MemoryTally()
    record_job(tally, "compress", "jpeg2000", "failed", 1.0, RESULT)
    record_job(tally, "compress", "jpeg2000", "finished", 1.0, {**RESULT, "psnr": math.nan})
    record_job(tally, "compress", "jpeg2000", "finished", 1.0, {**RESULT, "psnr": -math.inf})
    samples = exposition(tally)
    assert "eoz_achieved_psnr_decibels_count[('model', 'jpeg2000')]" not in samples
    assert samples["eoz_jobs_total[('kind', 'compress'), ('model', 'jpeg2000'), ('outcome', 'failed')]"] == 1


@pytest.fixture()
def client(service_env):
    with TestClient(create_app()) as client:
        yield client


def scrape(client) -> dict:
    return {s.name + str(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(client.get("/metrics").text) for s in family.samples}


def test_http_requests_are_counted_by_route_template_and_status(client):
    """Labels come from the route (its template), never from what the client put in the path."""
    for job_id in ("0" * 32, "1" * 32):
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.get("/healthz").status_code == 200
    assert client.get("/no/such/" + "x" * 300).status_code == 404
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    assert client.get("/docs-assets/" + "y" * 300).status_code == 404
    samples = scrape(client)
    job = "[('method', 'GET'), ('route', '/v1/jobs/{job_id}'), ('status', '404')]"
    assert samples["eoz_http_requests_total" + job] == 2
    assert samples["eoz_http_request_duration_seconds_count" + job] == 2
    assert samples["eoz_http_requests_total[('method', 'GET'), ('route', '/healthz'), ('status', '200')]"] == 1
    assert samples["eoz_http_requests_total[('method', 'GET'), ('route', 'unmatched'), ('status', '404')]"] == 1
    assets = "[('method', 'GET'), ('route', '/docs-assets/{path}'), ('status', '{status}')]"
    assert samples["eoz_http_requests_total" + assets.replace("{status}", "200")] == 1
    assert samples["eoz_http_requests_total" + assets.replace("{status}", "404")] == 1
    assert not any("xxx" in key or "0000" in key or "yyy" in key for key in samples)


def test_decompress_labels_only_known_models(client):
    """A model id is the client's to write into a header: the label is the codec's or a model this
    service holds (a learned file whose model is neither local nor archived is refused with 422)."""
    array = np.random.default_rng(0).integers(0, 3000, (2, 32, 32)).astype(np.uint16)
    meta = RasterMeta(32, 32, 2, "uint16", ["a", "b"], None, None, None)
    encoded = compress_array(array, meta, codec_for_model("jpeg2000", lossless=True), tile_size=64)
    with EozReader(encoded) as reader:
        header, tiles = reader.header, [reader.read_tile(i) for i in range(reader.header.tile_count)]
    for model_id in ("x" * 3000, "tiny-vq", None):   # a JPEG 2000 file: its label is jpeg2000 whatever it says
        crafted = pack(dataclasses.replace(header, model_id=model_id), tiles)
        answer = client.post("/v1/decompress", files={"file": ("x.eoz", crafted)})
        assert answer.status_code == 202, answer.text
        assert answer.json()["model"] == "jpeg2000"
        wait_for_job(client, answer.json()["status_url"])
    labels = {key for key in scrape(client) if key.startswith("eoz_jobs_total")}
    assert not any("xxx" in key for key in labels) and any("'jpeg2000'" in key for key in labels)
