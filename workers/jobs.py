"""The job functions: plain importable functions taking ids and keys, never arrays.

Any worker can run any job, and run it again: inputs are read from the object store,
work happens in a scratch folder (``<job id>-*``, which a runner that kills the job removes,
and the retention pass otherwise), and the result is written to a temporary key of this
attempt's own and then moved under ``results/``, so a job killed mid-way and rerun leaves
exactly one complete result, and a stalled attempt cannot delete its re-run's object.
Each returns a small JSON-able dict: the result key and what it measured.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eoz.codecs import JPEG2000Codec, codec_for_model
from eoz.container import EozReader
from eoz.errors import InputError
from eoz.evaluation import measure_file, size_figures
from eoz.features import extract_features
from eoz.raster import RasterReader, RasterWriter
from eoz.resolve import check_cpu_work, resolve
from eoz.scene import encode_scene, header_meta, write_decoded
from workers import context
from workers.device import compute_device
from workers.keys import result_key, temp_key
from workers.models import archive_model, pinned_model_store
from workers.retry import with_backoff
from workers.sources import source_store
from workers.store import ObjectStore
from workers.validation import check_window, inspect_eoz

FORMATS = ("geotiff", "cog")


@contextmanager
def _scratch(job_id: str) -> Iterator[Path]:
    root = context.current().settings.scratch_dir
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fetch(key: str, bucket: str | None, path: Path) -> int:
    ctx = context.current()
    source = source_store(ctx.settings, ctx.store, bucket, key)
    with_backoff(lambda: source.get_file(key, path))
    return path.stat().st_size


def _publish(store: ObjectStore, job_id: str, path: Path, suffix: str) -> str:
    """This attempt's temporary key, then a move: the final key appears complete or not at all."""
    temporary, final = temp_key(job_id, suffix), result_key(job_id, suffix)
    with_backoff(lambda: store.put_file(temporary, path))
    with_backoff(lambda: store.move(temporary, final))
    return final


def compress(job_id: str, source_key: str, model: str, *, source_bucket: str | None = None,
             version: str | None = None, params: dict | None = None, tile_size: int | None = None,
             picked: str | None = None) -> dict:
    """GeoTIFF at source_key (in our store, or an allowed S3 bucket) -> results/<job>/output.eoz.

    ``model`` may be auto (an S3 source: picked here, from the raster); ``picked`` is why the
    API picked ``model`` for an upload. The result names the model and, for auto, why."""
    ctx = context.current()
    limits = ctx.settings.limits
    with _scratch(job_id) as folder:
        source = folder / "input.tif"
        input_bytes = _fetch(source_key, source_bucket, source)
        encoded = folder / "output.eoz"
        with RasterReader(source, limits) as reader, open(encoded, "wb") as out:
            meta = reader.meta
            resolved = resolve(model, version, params or {}, meta)
            if compute_device() == "cpu":   # an S3 source is first seen here: the API could not check it
                check_cpu_work(resolved, meta, ctx.settings.max_cpu_seconds)
            codec = resolved.codec()
            start = time.perf_counter()
            header = encode_scene(lambda c, r, w, h: reader.read((c, r, w, h))[0], meta, codec, out, tile_size,
                                  progress=lambda done, total: ctx.report_progress(0.75 * done / total),
                                  threads=ctx.settings.tile_threads, read_valid=reader.read_valid)
        codec_seconds = time.perf_counter() - start
        quality = measure_file(encoded, source, resolved.peak, limits,
                               progress=lambda done, total: ctx.report_progress(0.75 + 0.2 * done / total),
                               threads=ctx.settings.tile_threads)
        if not isinstance(codec, JPEG2000Codec):
            with_backoff(lambda: archive_model(ctx.store, codec.entry))
        size = encoded.stat().st_size
        key = _publish(ctx.store, job_id, encoded, ".eoz")
    return {
        "key": key, "bytes": size, "input_bytes": input_bytes,
        **size_figures(meta.height, meta.width, meta.count, meta.dtype, size),
        **quality,
        "width": meta.width, "height": meta.height, "bands": meta.band_names, "dtype": meta.dtype,
        "tiles": header.tile_count, "model_id": resolved.model_id, "model_version": header.model_version,
        "weights_sha256": header.weights_sha256, "codec_seconds": codec_seconds,
        "picked": picked or resolved.reason,
    }


def decompress(job_id: str, source_key: str, *, source_bucket: str | None = None,
               format: str = "geotiff", window: list[int] | None = None) -> dict:
    """.eoz at source_key -> results/<job>/output.tif (GeoTIFF or COG), whole or a window."""
    if format not in FORMATS:
        raise InputError(f"format must be one of {list(FORMATS)}, got {format!r}")
    ctx = context.current()
    box = tuple(window) if window else None
    with _scratch(job_id) as folder:
        source = folder / "input.eoz"
        input_bytes = _fetch(source_key, source_bucket, source)
        header = inspect_eoz(source, ctx.settings.limits)
        check_window(header, box)
        models = pinned_model_store(header, ctx.store, ctx.settings.model_cache_dir)
        meta = header_meta(header, box)
        decoded = folder / "output.tif"
        start = time.perf_counter()
        with EozReader(source) as reader, RasterWriter(decoded, meta, cog=format == "cog") as writer:
            write_decoded(reader, writer, box, models, lambda done, total: ctx.report_progress(0.9 * done / total),
                          ctx.settings.tile_threads)
        codec_seconds = time.perf_counter() - start
        size = decoded.stat().st_size
        key = _publish(ctx.store, job_id, decoded, ".tif")
    return {"key": key, "bytes": size, "input_bytes": input_bytes, "format": format,
            "window": list(box) if box else None, "width": meta.width, "height": meta.height,
            "bands": meta.band_names, "dtype": meta.dtype, "model_version": header.model_version,
            "codec_seconds": codec_seconds}


def features(job_id: str, source_key: str, model: str, *, source_bucket: str | None = None,
             version: str | None = None, quantized: bool = True, tile_size: int = 512) -> dict:
    """GeoTIFF at source_key -> results/<job>/output.tif: the model's top-level latents, georeferenced."""
    ctx = context.current()
    with _scratch(job_id) as folder:
        source = folder / "input.tif"
        input_bytes = _fetch(source_key, source_bucket, source)
        codec = codec_for_model(model, version)
        out = folder / "output.tif"
        start = time.perf_counter()
        meta = extract_features(source, out, codec, quantized, tile_size, ctx.settings.limits,
                                lambda done, total: ctx.report_progress(0.9 * done / total))
        codec_seconds = time.perf_counter() - start
        size = out.stat().st_size
        key = _publish(ctx.store, job_id, out, ".tif")
    return {"key": key, "bytes": size, "input_bytes": input_bytes, "width": meta.width, "height": meta.height,
            "bands": meta.band_names, "dtype": meta.dtype, "model_version": codec.entry.version,
            "weights_sha256": codec.entry.weights_sha256, "quantized": quantized, "codec_seconds": codec_seconds}
