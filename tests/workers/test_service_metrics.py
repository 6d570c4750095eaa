"""Job metrics: the same exposition from the in-memory and the Redis tally."""

from __future__ import annotations

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

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
    assert samples["eoz_bytes_in_total[('kind', 'compress')]"] == 2000
    assert samples["eoz_bytes_out_total[('kind', 'compress')]"] == 200
    seconds = "[('kind', 'compress'), ('le', '{}'), ('model', 'jpeg2000')]"
    assert samples["eoz_job_seconds_bucket" + seconds.format("1.0")] == 0
    assert samples["eoz_job_seconds_bucket" + seconds.format("2.5")] == 1
    assert samples["eoz_job_seconds_bucket" + seconds.format("+Inf")] == 2
    assert samples["eoz_job_seconds_sum[('kind', 'compress'), ('model', 'jpeg2000')]"] == 4.5
    assert samples["eoz_achieved_psnr_db_count[('model', 'jpeg2000')]"] == 1  # exact results have no PSNR
    assert samples["eoz_compression_ratio_count[('model', 'jpeg2000')]"] == 2
    assert samples["eoz_codec_seconds_count[('kind', 'compress'), ('model', 'jpeg2000')]"] == 2
    assert samples["eoz_queue_depth[('queue', 'gpu')]"] == 3
    assert samples["eoz_worker_device[('device', 'cpu')]"] == 2
    assert samples["eoz_worker_device[('device', 'cuda')]"] == 0


def test_the_redis_tally_adds_up_across_processes_like_memory(redis_url):
    shared, memory = RedisTally(redis.Redis.from_url(redis_url)), MemoryTally()
    record_some(shared)
    record_some(RedisTally(redis.Redis.from_url(redis_url)))  # a second worker
    record_some(memory)
    record_some(memory)
    assert exposition(shared) == exposition(memory)
