"""Prometheus metrics of the jobs, gathered where the API can report them all.

Jobs run in API threads (embedded default) or in ``eoz worker`` processes on other
machines. Rather than scraping every worker, each finished job adds its observations to
one shared tally: a dict in the embedded default, a Redis hash (HINCRBYFLOAT, atomic across
workers) with RQ. The API's ``/metrics`` turns the tally into counters and histograms at
scrape time, with queue depth and worker devices read live from the runner. Counters
survive worker restarts; a Redis flush resets them, which Prometheus treats as a counter reset.

Histograms are kept as cumulative bucket counts, so adding an observation is a handful of
increments and reading needs no per-worker state.

Names follow Prometheus' conventions, unit last (``eoz_input_bytes_total``,
``eoz_job_duration_seconds``); deploy/monitoring/ has the dashboard and alert rules built on them.
"""

from __future__ import annotations

import json
import math
import threading
from collections import defaultdict
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

COUNTERS = {
    "eoz_jobs_total": ("Jobs that ended, by kind, model and outcome (finished, failed, abandoned).",
                       ("kind", "model", "outcome")),
    "eoz_input_bytes_total": ("Bytes of job inputs (GeoTIFF or .eoz).", ("kind",)),
    "eoz_output_bytes_total": ("Bytes of job results (.eoz or GeoTIFF).", ("kind",)),
}
HISTOGRAMS = {
    "eoz_job_duration_seconds": ("Wall time of a job, transfers included.", ("kind", "model"),
                        (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)),
    "eoz_codec_duration_seconds": ("Time spent encoding or decoding tiles.", ("kind", "model"),
                          (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)),
    "eoz_compression_ratio": ("Raw array bytes over .eoz bytes, per compress job.", ("model",),
                              (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)),
    "eoz_achieved_psnr_decibels": ("PSNR of the stored reconstruction against the input, per compress job.",
                             ("model",), (20, 25, 30, 35, 40, 45, 50, 55, 60, 70, 80)),
}
DEVICE_DOC = ("Live workers by the torch device the codecs compute on (cpu or cuda); an RQ worker counts "
              "while its heartbeat is current.")
QUEUE_DOC = "Jobs waiting in each queue."


class Tally(Protocol):
    def add(self, amounts: dict[str, float]) -> None:
        """Increase each field by its amount, atomically as a whole."""

    def totals(self) -> dict[str, float]: ...


class MemoryTally:
    """The tally of the embedded default: jobs run in this process."""

    def __init__(self):
        self._values: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, amounts: dict[str, float]) -> None:
        with self._lock:
            for field, amount in amounts.items():
                self._values[field] += amount

    def totals(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)


class RedisTally:
    """The tally shared by every worker on one Redis."""

    KEY = "eoz:metrics"

    def __init__(self, redis):
        self.redis = redis

    def add(self, amounts: dict[str, float]) -> None:
        with self.redis.pipeline() as pipe:
            for field, amount in amounts.items():
                pipe.hincrbyfloat(self.KEY, field, amount)
            pipe.execute()

    def totals(self) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.redis.hgetall(self.KEY).items()}


def _field(name: str, labels: dict[str, str]) -> str:
    return json.dumps([name, sorted(labels.items())])


def _observe(amounts: dict[str, float], name: str, labels: dict[str, str], value: float) -> None:
    """Cumulative buckets: every bound at or above value counts it (+Inf is the count)."""
    _, _, bounds = HISTOGRAMS[name]
    for bound in bounds:
        if value <= bound:
            amounts[_field(f"{name}_bucket", {**labels, "le": str(float(bound))})] = 1
    amounts[_field(f"{name}_sum", labels)] = value
    amounts[_field(f"{name}_count", labels)] = 1


def record_job(tally: Tally, kind: str, model: str, outcome: str, seconds: float | None,
               result: dict | None = None) -> None:
    """Add one ended job; result is the job function's return value when it finished."""
    amounts = {_field("eoz_jobs_total", {"kind": kind, "model": model, "outcome": outcome}): 1.0}
    if seconds is not None:
        _observe(amounts, "eoz_job_duration_seconds", {"kind": kind, "model": model}, seconds)
    if result:
        _observe(amounts, "eoz_codec_duration_seconds", {"kind": kind, "model": model}, result["codec_seconds"])
        amounts[_field("eoz_input_bytes_total", {"kind": kind})] = result["input_bytes"]
        amounts[_field("eoz_output_bytes_total", {"kind": kind})] = result["bytes"]
        if kind == "compress":
            _observe(amounts, "eoz_compression_ratio", {"model": model}, result["compression_ratio"])
            # exact results have no PSNR; a failed job's or a non-finite one is no quality figure
            if outcome == "finished" and result["psnr"] is not None and math.isfinite(result["psnr"]):
                _observe(amounts, "eoz_achieved_psnr_decibels", {"model": model}, result["psnr"])
    tally.add(amounts)


class ServiceCollector:
    """prometheus_client collector: the tally, plus queue depth and worker devices from the runner."""

    def __init__(self, tally: Tally, runner):
        self.tally, self.runner = tally, runner

    def collect(self):
        series: dict[str, dict[tuple, float]] = defaultdict(dict)
        for field, value in self.tally.totals().items():
            name, labels = json.loads(field)
            series[name][tuple(map(tuple, labels))] = value
        for name, (doc, labels, bounds) in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, doc, labels=labels)
            counted = series[f"{name}_bucket"]
            for key, total in sorted(series[f"{name}_sum"].items()):
                buckets = [(str(float(b)), counted.get(tuple(sorted((*key, ("le", str(float(b)))))), 0.0))
                           for b in bounds]
                buckets.append(("+Inf", series[f"{name}_count"][key]))
                family.add_metric([dict(key)[label] for label in labels], buckets, total)
            yield family
        for name, (doc, labels) in COUNTERS.items():
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, total in sorted(series[name].items()):
                family.add_metric([dict(key)[label] for label in labels], total)
            yield family
        depth = GaugeMetricFamily("eoz_queued_jobs", QUEUE_DOC, labels=("queue",))
        for queue, count in sorted(self.runner.queue_depths().items()):
            depth.add_metric([queue], count)
        yield depth
        devices = GaugeMetricFamily("eoz_workers", DEVICE_DOC, labels=("device",))
        found = self.runner.worker_devices()
        for device in sorted({"cpu", "cuda", *found}):
            devices.add_metric([device], found.get(device, 0))
        yield devices

