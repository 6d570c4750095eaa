"""Load test of the service: concurrent clients through the real API, Redis and workers.

Everything runs as it would in a deployment, on loopback only: a ``redis-server`` of its
own on a free 127.0.0.1 port, ``eoz serve`` with REDIS_URL set and EOZ_DATA_DIR in a
temporary folder, and ``--workers`` ``eoz worker`` processes on the same Redis. Each of
``--clients`` threads posts ``--jobs`` real scenes (crops of the held-out Sentinel-2
validation rasters, written as GeoTIFF) to POST /v1/compress as multipart uploads, polls the
job's status_url until it is finished or failed, fetches the result and decodes it here
(eoz.scene.decompress_array), checking shape, dtype and georeferencing against the crop.

Reported: jobs per minute (finished jobs over the time from the first submit to the last
finish seen), latency from just before the upload starts to the poll that sees the job
finished (so it includes the upload, queueing and up to one poll interval), the same
split as the service records it (queued, running), peak resident memory (VmHWM) of the
api, each worker and redis, and whether anything was lost: every job must finish and
every result must decode; ``failures`` counts the jobs that did not (0 is a pass, and the
exit status is 1 otherwise). The service's own /metrics job counts are kept as a cross-check.

Every server is stopped at the end, also on an exception, Ctrl-C or SIGTERM; on Linux the
servers also get SIGTERM if this script dies. Every wait and request loop is bounded in
count and time.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

from common import RESULTS_DIR, command_line, machine, provenance_md, table, write_outputs
from eoz import datasets
from eoz.scene import decompress_array
from eoz.raster import RasterMeta, read_meta, window_transform, write_raster

HOST = "127.0.0.1"
PEAK = 10000.0  # PSNR peak for Sentinel-2 DN, as everywhere in eoz
# Service settings that would change what is measured (S3 store, API keys, limits): the
# servers start without them, so the benchmark always measures the same configuration.
_CLEARED = ("REDIS_URL", "EOZ_DATA_DIR", "EOZ_WORKERS", "EOZ_S3_ENDPOINT", "EOZ_S3_PUBLIC_ENDPOINT",
            "EOZ_S3_BUCKET", "EOZ_S3_SOURCES", "EOZ_API_KEYS", "EOZ_MAX_UPLOAD_BYTES",
            "EOZ_MAX_PIXELS", "EOZ_MAX_BANDS", "EOZ_JOB_TIMEOUT", "EOZ_HEARTBEAT_SECONDS")
_STARTUP_SECONDS = 180  # importing torch on a busy machine is slow
_STOP_SECONDS = 30


class Interrupted(Exception):
    """SIGTERM, turned into an exception so that the servers are stopped on the way out."""


# --------------------------------------------------------------------------- scenes


@dataclass
class Scene:
    name: str
    path: Path
    array: np.ndarray  # what was written, to check the reconstruction against
    meta: RasterMeta


def make_scenes(folder: Path, crop: int, per_raster: int) -> list[Scene]:
    """crop x crop GeoTIFFs cut from the S2 10 m validation rasters, georeferencing shifted."""
    scenes = []
    for rel in datasets.S2_10M.validation:
        path = datasets.data_dir() / rel
        meta = read_meta(path)
        if meta.height < crop or meta.width < crop:
            raise SystemExit(f"{rel} is {meta.width} x {meta.height}, smaller than --crop {crop}")
        bands = datasets.load_bands(path, datasets.S2_10M.bands)  # float32 of the stored values
        for i in range(per_raster):
            # evenly spaced along the diagonal: top-left first, bottom-right last
            f = i / (per_raster - 1) if per_raster > 1 else 0.5
            row, col = round(f * (meta.height - crop)), round(f * (meta.width - crop))
            array = bands[:, row:row + crop, col:col + crop].astype(meta.dtype)
            transform = window_transform(meta.transform, col, row)
            crop_meta = replace(meta, height=crop, width=crop, count=len(datasets.S2_10M.bands),
                                band_names=list(datasets.S2_10M.bands), transform=transform)
            name = f"{Path(rel).stem.split('_10m')[0]}_r{row}_c{col}"
            out = folder / f"{name}.tif"
            write_raster(out, array, crop_meta)
            scenes.append(Scene(name, out, array, crop_meta))
    return scenes


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _parent_death_signal():
    """preexec_fn: the child gets SIGTERM when this process dies (Linux), even by SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        return lambda: libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    return None


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a live process, in MiB; empty when it is gone."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return values


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (a worker that forked would show its horses here)."""
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return pids


class Servers:
    """The processes this benchmark starts, each stopped by its own pid at the end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[tuple[str, subprocess.Popen]] = []
        self._preexec = _parent_death_signal()

    def start(self, name: str, argv: list[str], env: dict, cwd: Path) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=self._preexec)
        self.started.append((name, process))
        return process

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        for name, process in self.started:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode}:\n{self.log_tail(name)}")

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM to the api and workers together, then redis; SIGKILL whatever outlives the wait."""
        codes = {}
        stages = [[s for s in self.started if s[0] != "redis"], [s for s in self.started if s[0] == "redis"]]
        for stage in stages:
            for _, process in stage:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + _STOP_SECONDS
            for name, process in stage:
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    print(f"{name} (pid {process.pid}) did not stop in {_STOP_SECONDS} s: SIGKILL",
                          file=sys.stderr)
                    process.kill()
                    process.wait()
                codes[name] = process.returncode
        return codes


def wait_until(condition, timeout: float, what: str, servers: Servers, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        servers.check_alive()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def start_service(servers: Servers, work: Path, n_workers: int) -> tuple[str, str]:
    """redis-server, `eoz serve` and the workers; returns (api base URL, redis URL) once all are up."""
    import redis
    from rq import Worker

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
    redis_port, api_port = free_port(), free_port()
    redis_url = f"redis://{HOST}:{redis_port}/0"
    (work / "redis").mkdir()
    servers.start("redis", [binary, "--port", str(redis_port), "--bind", HOST, "--save", "",
                            "--appendonly", "no", "--dir", str(work / "redis")], dict(os.environ), work)

    def redis_answers():
        try:
            return redis.Redis.from_url(redis_url, socket_timeout=1).ping()
        except redis.RedisError:
            return False
    wait_until(redis_answers, 20, "redis-server", servers)

    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(REDIS_URL=redis_url, EOZ_DATA_DIR=str(work / "eoz-data"))
    eoz = [sys.executable, "-m", "eoz.cli"]  # `eoz`, run by this interpreter
    servers.start("api", [*eoz, "serve", "--host", HOST, "--port", str(api_port)], env, work)
    for i in range(n_workers):
        servers.start(f"worker-{i}", [*eoz, "worker"], env, work)
    base = f"http://{HOST}:{api_port}"

    def ready():
        try:
            return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False
    wait_until(ready, _STARTUP_SECONDS, "`eoz serve` to be ready (/readyz)", servers)
    connection = redis.Redis.from_url(redis_url)
    wait_until(lambda: Worker.count(connection=connection) >= n_workers, _STARTUP_SECONDS,
               f"{n_workers} `eoz worker` to register", servers)
    return base, redis_url


# --------------------------------------------------------------------------- clients


@dataclass
class Outcome:
    client: int
    index: int
    scene: str
    status: str = "not submitted"  # finished, failed, rejected, timed out, interrupted, error
    job_id: str | None = None
    error: str | None = None
    submitted_at: float | None = None  # seconds since the run started
    latency_s: float | None = None     # upload start -> the poll that saw it finished
    queued_s: float | None = None      # service: created -> started
    running_s: float | None = None     # service: started -> finished
    polls: int = 0
    upload_bytes: int | None = None
    result_bytes: int | None = None
    compression_ratio: float | None = None
    psnr_service: float | None = None
    psnr_client: float | None = None
    decoded: bool = False


def _seconds(a: str | None, b: str | None) -> float | None:
    if a is None or b is None:
        return None
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def _psnr(reference: np.ndarray, decoded: np.ndarray) -> float | None:
    """dB at PEAK; None when the reconstruction is exact (as the service reports it)."""
    mse = float(np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return None if mse == 0 else 10 * math.log10(PEAK ** 2 / mse)


def check_result(content: bytes, scene: Scene) -> tuple[float | None, str | None]:
    """Decode a result here: (PSNR against the uploaded crop, None) or (None, what is wrong)."""
    array, meta = decompress_array(content)
    if array.shape != scene.array.shape or str(array.dtype) != str(scene.array.dtype):
        return None, f"decoded {array.shape} {array.dtype}, uploaded {scene.array.shape} {scene.array.dtype}"
    if meta.crs != scene.meta.crs or (meta.transform is None) != (scene.meta.transform is None) or (
            meta.transform and not np.allclose(meta.transform, scene.meta.transform)):
        return None, f"georeferencing differs: {meta.crs} {meta.transform} != {scene.meta.crs} {scene.meta.transform}"
    if meta.band_names != scene.meta.band_names:
        return None, f"bands {meta.band_names} != {scene.meta.band_names}"
    return _psnr(scene.array, array), None


def run_job(http: httpx.Client, base: str, form: dict, scene: Scene, outcome: Outcome, t0: float,
            deadline: float, poll: float, stop: threading.Event) -> None:
    start = time.monotonic()
    outcome.submitted_at = start - t0
    outcome.upload_bytes = scene.path.stat().st_size
    with open(scene.path, "rb") as f:
        response = http.post(f"{base}/v1/compress", data=form,
                             files={"file": (scene.path.name, f, "image/tiff")})
    if response.status_code != 202:
        outcome.status, outcome.error = "rejected", f"HTTP {response.status_code}: {response.text[:300]}"
        return
    job = response.json()
    outcome.job_id, outcome.status = job["id"], job["status"]
    transport_errors = 0
    for _ in range(int((deadline - start) / poll) + 2):  # bounded in count as well as in time
        if job["status"] in ("finished", "failed"):
            break
        if stop.is_set():
            outcome.status = "interrupted"
            return
        if time.monotonic() > deadline:
            outcome.status, outcome.error = "timed out", f"still {job['status']} at the deadline"
            return
        time.sleep(poll)
        try:
            r = http.get(job["status_url"])
            r.raise_for_status()
            job = r.json()
            outcome.polls += 1
            transport_errors = 0
        except httpx.HTTPError as error:  # a few in a row are tolerated, then the job counts as failed
            transport_errors += 1
            if transport_errors >= 5:
                outcome.status, outcome.error = "error", f"polling failed: {error}"
                return
    else:
        outcome.status, outcome.error = "timed out", f"still {job['status']} after the last poll"
        return
    outcome.latency_s = time.monotonic() - start
    outcome.status = job["status"]
    outcome.queued_s = _seconds(job["created_at"], job["started_at"])
    outcome.running_s = _seconds(job["started_at"], job["finished_at"])
    if job["status"] == "failed":
        outcome.error = job.get("error")
        return
    result = job["result"] or {}
    outcome.compression_ratio, outcome.psnr_service = result.get("compression_ratio"), result.get("psnr")
    r = http.get(job["result_url"], follow_redirects=True)
    if r.status_code != 200:
        outcome.error = f"result: HTTP {r.status_code}: {r.text[:300]}"
        return
    outcome.result_bytes = len(r.content)
    try:
        outcome.psnr_client, problem = check_result(r.content, scene)
    except Exception as error:  # any decoding failure is what this benchmark looks for
        problem = f"does not decode: {type(error).__name__}: {error}"
    outcome.error, outcome.decoded = problem, problem is None


def client(number: int, jobs: int, scenes: list[Scene], base: str, form: dict, args, t0: float,
           run_deadline: float, stop: threading.Event, outcomes: list[Outcome]) -> None:
    with httpx.Client(timeout=httpx.Timeout(60.0)) as http:
        for j in range(jobs):
            scene = scenes[(number * jobs + j) % len(scenes)]
            outcome = Outcome(client=number, index=j, scene=scene.name)
            outcomes.append(outcome)  # list.append is atomic
            if stop.is_set() or time.monotonic() > run_deadline:
                outcome.status = "interrupted" if stop.is_set() else "not submitted"
                continue
            deadline = min(time.monotonic() + args.job_timeout, run_deadline)
            try:
                run_job(http, base, form, scene, outcome, t0, deadline, args.poll, stop)
            except Exception as error:  # recorded per job; the run goes on
                outcome.status, outcome.error = "error", f"{type(error).__name__}: {error}"


# --------------------------------------------------------------------------- report


def service_job_counts(base: str) -> dict:
    """eoz_jobs_total by outcome and eoz_queued_jobs, from the service's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict = {"jobs_total": {}, "queue_depth": {}}
    text = httpx.get(f"{base}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "eoz_jobs_total":
                key = f"{sample.labels['kind']}/{sample.labels['model']}/{sample.labels['outcome']}"
                counts["jobs_total"][key] = sample.value
            elif sample.name == "eoz_queued_jobs":
                counts["queue_depth"][sample.labels["queue"]] = sample.value
    return counts


def _stats(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "max": None, "mean": None}
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max()), "mean": float(a.mean())}


def summarise(outcomes: list[Outcome]) -> dict:
    finished = [o for o in outcomes if o.status == "finished"]
    ok = [o for o in finished if o.decoded]
    submitted = [o for o in outcomes if o.submitted_at is not None]
    span = (max(o.submitted_at + o.latency_s for o in finished) - min(o.submitted_at for o in submitted)
            if finished else None)
    by_status: dict[str, int] = {}
    for o in outcomes:
        by_status[o.status] = by_status.get(o.status, 0) + 1
    psnr = [o.psnr_client for o in ok if o.psnr_client is not None]
    return {
        "jobs": len(outcomes), "finished": len(finished), "decoded": len(ok),
        "failures": len(outcomes) - len(ok), "by_status": by_status,
        "span_s": span, "jobs_per_minute": len(finished) / span * 60 if span else None,
        "latency_s": _stats([o.latency_s for o in finished]),
        "queued_s": _stats([o.queued_s for o in finished if o.queued_s is not None]),
        "running_s": _stats([o.running_s for o in finished if o.running_s is not None]),
        "polls_per_job": _stats([o.polls for o in finished]),
        "compression_ratio_mean": float(np.mean([o.compression_ratio for o in ok])) if ok else None,
        "psnr_client_mean_db": float(np.mean(psnr)) if psnr else None,
        "psnr_max_abs_diff_service_vs_client_db": max(
            (abs(o.psnr_client - o.psnr_service) for o in ok
             if o.psnr_service is not None and o.psnr_client is not None), default=None),
    }


def _f(value, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def markdown(data: dict, command: str, info: dict) -> list[str]:
    s, cfg, mem = data["summary"], data["config"], data["memory_mib"]
    lat, q, run = s["latency_s"], s["queued_s"], s["running_s"]
    verdict = ("nothing lost: every job finished and every result decoded"
               if s["failures"] == 0 else f"**{s['failures']} FAILURES**: {s['by_status']}")
    lines = [
        "# Service load: concurrent clients through the API, Redis and `eoz worker`",
        "",
        f"{cfg['clients']} client threads x {cfg['jobs_per_client']} jobs = {s['jobs']} compress jobs "
        f"(multipart upload, model `{cfg['model']}`{', quality ' + _f(cfg['quality'], 'g') if cfg['quality'] else ''}) "
        f"of {cfg['crop']}x{cfg['crop']} 4-band uint16 crops ({cfg['scenes']} distinct scenes from the "
        f"Sentinel-2 validation rasters), against `eoz serve` + {cfg['workers']} `eoz worker` process(es) + "
        f"`redis-server`, all on 127.0.0.1, filesystem object store in a temporary folder. "
        f"Each client polls status_url every {cfg['poll_s']} s, fetches the result and decodes it.",
        "",
        f"**Result: {verdict}.**",
        "",
        *table(["jobs", "finished", "decoded", "failures", "jobs/min", "latency p50 s", "p95 s", "max s"],
               [[s["jobs"], s["finished"], s["decoded"], s["failures"], _f(s["jobs_per_minute"], ".1f"),
                 _f(lat["p50"]), _f(lat["p95"]), _f(lat["max"])]]),
        "Latency is from the start of the upload to the poll that sees the job finished (upload, "
        "queueing, running, and up to one poll interval). As the service records it:",
        "",
        *table(["part", "p50 s", "p95 s", "max s"],
               [["queued (created -> started)", _f(q["p50"]), _f(q["p95"]), _f(q["max"])],
                ["running (started -> finished)", _f(run["p50"]), _f(run["p95"]), _f(run["max"])]]),
        f"Mean compression ratio {_f(s['compression_ratio_mean'])}, mean PSNR of the decoded results "
        f"against the uploads {_f(s['psnr_client_mean_db'])} dB (peak 10000); largest difference from "
        f"the PSNR the service reported: {_f(s['psnr_max_abs_diff_service_vs_client_db'], '.3f')} dB. "
        f"Service /metrics: {data['service_metrics']['jobs_total']}, queue depth at the end "
        f"{data['service_metrics']['queue_depth']}.",
        "",
        "Memory (MiB): RSS once ready and idle, and peak RSS (VmHWM) at the end of the run:",
        "",
        *table(["process", "RSS idle", "peak RSS"],
               [[name, _f(m.get("idle_rss")), _f(m.get("peak_rss"))] for name, m in mem.items()]),
        f"Load average (1 min) at start {data['loadavg_start'][0]:.2f}, at end {data['loadavg_end'][0]:.2f} "
        f"on {info['cpu_count']} CPUs: other work on the machine shares the CPUs with the service.",
        "",
        *provenance_md(command, info),
    ]
    return lines


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=4, help="concurrent client threads (default 4)")
    p.add_argument("--jobs", type=int, default=50, help="jobs each client posts, one after another (default 50)")
    p.add_argument("--workers", type=int, default=1, help="`eoz worker` processes (default 1)")
    p.add_argument("--model", default="jpeg2000", help="jpeg2000 (default) or a model id such as vqvae-fpn-s2-10m")
    p.add_argument("--quality", type=float, default=60.0, help="jpeg2000 quality in dB (default 60)")
    p.add_argument("--crop", type=int, default=256, help="scene edge in pixels (default 256)")
    p.add_argument("--scenes-per-raster", type=int, default=2, help="crops per validation raster (default 2)")
    p.add_argument("--poll", type=float, default=0.1, help="seconds between status polls (default 0.1)")
    p.add_argument("--job-timeout", type=float, default=300, help="seconds a job may take from submit (default 300)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds the whole load phase may take (default 1200)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default benchmarks/results)")
    p.add_argument("--name", default="service_load", help="results file name (default service_load)")
    args = p.parse_args(argv)
    for name in ("clients", "jobs", "workers", "crop", "scenes_per_raster"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.poll <= 0 or args.job_timeout <= 0 or args.timeout <= 0:
        p.error("--poll, --job-timeout and --timeout must be positive")
    return args


def _on_sigterm(signum, frame):
    raise Interrupted("SIGTERM")


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    form = {"model": args.model}
    quality = args.quality if args.model == "jpeg2000" else None
    if quality is not None:
        form["quality"] = str(quality)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    with tempfile.TemporaryDirectory(prefix="eoz-service-load-") as tmp:
        work = Path(tmp)
        (work / "scenes").mkdir()
        (work / "logs").mkdir()
        servers = Servers(work / "logs")
        try:
            scenes = make_scenes(work / "scenes", args.crop, args.scenes_per_raster)
            print(f"{len(scenes)} scenes of {args.crop}x{args.crop}; starting redis, api and "
                  f"{args.workers} worker(s)...", flush=True)
            base, _ = start_service(servers, work, args.workers)
            pids = {name: p.pid for name, p in servers.started}
            memory = {name: {"pid": pid, "idle_rss": proc_status(pid).get("VmRSS")} for name, pid in pids.items()}
            load_start = os.getloadavg()
            print(f"service up at {base}; {args.clients} clients x {args.jobs} jobs...", flush=True)

            outcomes: list[Outcome] = []
            t0 = time.monotonic()
            run_deadline = t0 + args.timeout
            for c in range(args.clients):
                t = threading.Thread(target=client, name=f"client-{c}", daemon=True,
                                     args=(c, args.jobs, scenes, base, form, args, t0, run_deadline, stop, outcomes))
                t.start()
                threads.append(t)
            # join in short slices so Ctrl-C is handled; bounded by the run deadline plus grace
            while any(t.is_alive() for t in threads):
                if time.monotonic() > run_deadline + 120:
                    stop.set()
                    raise TimeoutError("clients did not stop after the run deadline")
                servers.check_alive()
                for t in threads:
                    t.join(0.2)
            load_end = os.getloadavg()

            for name, pid in pids.items():
                status = proc_status(pid)
                memory[name]["peak_rss"] = status.get("VmHWM")
                memory[name]["end_rss"] = status.get("VmRSS")
                children = child_pids(pid)
                if children and name != "redis":  # would mean a forked work horse: say so
                    memory[name]["children"] = {c: proc_status(c) for c in children}
            metrics = service_job_counts(base)
        except KeyboardInterrupt:
            stop.set()
            print("interrupted: stopping the servers", file=sys.stderr)
            return 130
        except Interrupted:
            stop.set()
            print("SIGTERM: stopping the servers", file=sys.stderr)
            return 143
        finally:
            stop.set()
            for t in threads:
                t.join(5)
            exit_codes = servers.stop_all()

        outcomes.sort(key=lambda o: (o.client, o.index))
        summary = summarise(outcomes)
        info = machine()
        command = command_line()
        data = {
            "benchmark": "service_load",
            "command": command,
            "machine": info,
            "config": {"clients": args.clients, "jobs_per_client": args.jobs, "workers": args.workers,
                       "model": args.model, "quality": quality, "crop": args.crop, "scenes": len(scenes),
                       "scene_names": [s.name for s in scenes], "poll_s": args.poll,
                       "job_timeout_s": args.job_timeout, "store": "filesystem (EOZ_DATA_DIR in a temp folder)",
                       "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
            "summary": summary,
            "memory_mib": {name: {k: v for k, v in m.items() if k != "pid"} for name, m in memory.items()},
            "service_metrics": metrics,
            "server_exit_codes": exit_codes,
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "jobs": [asdict(o) for o in outcomes],
        }
        write_outputs(args.out, args.name, markdown(data, command, info), data)

    lat = summary["latency_s"]
    print(f"{summary['jobs']} jobs: {summary['finished']} finished, {summary['decoded']} decoded, "
          f"failures {summary['failures']} {summary['by_status']}")
    print(f"{_f(summary['jobs_per_minute'], '.1f')} jobs/min; latency p50 {_f(lat['p50'])} s, "
          f"p95 {_f(lat['p95'])} s, max {_f(lat['max'])} s")
    print("peak RSS MiB: " + ", ".join(f"{n} {_f(m.get('peak_rss'), '.0f')}" for n, m in data["memory_mib"].items()))
    for o in outcomes:
        if not o.decoded:
            print(f"  client {o.client} job {o.index} ({o.job_id}): {o.status}: {o.error}")
    return 0 if summary["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
