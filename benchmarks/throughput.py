"""Encode and decode speed and peak memory of file-to-file compression, per codec.

A worker compresses whole scenes, so what matters is GeoTIFF -> .eoz -> GeoTIFF on a
realistic scene: here a mosaic of real Sentinel-2 10 m data, the 4-band training crop
tiled with mirroring to the requested size. Each compress_file and decompress_file runs
in a fresh Python process, so its peak RSS (VmHWM of that process) belongs to that run
alone. The same runs at a second, smaller scene show whether memory follows the tile size
(as eoz/scene.py promises) or the scene. Timings cover the compress_file / decompress_file call
only (GeoTIFF reading and writing included); imports and model loading are reported apart.

``--mode openjpeg`` measures instead a fixed-quality wavelet model (``--model``) against
OpenJPEG (eoz.jpeg2000, plain and + spectral KLT) in the same run, in memory, on S2 10 m
validation data: a 512 x 512 crop (one tile) and the whole image. Each case (input, codec,
target PSNR, block) runs in its own fresh process: one first call (numba loads its compiled
loops, or compiles them once with an empty cache; reported apart), then ``--repeats`` timed
encodes and decodes (median), then peak memory of one encode and one decode: the growth of
the process's peak RSS during the call (VmHWM reset through /proc/self/clear_refs) and
tracemalloc's peak (numpy and Python allocations). eoz goes the whole way through
``compress_array`` / ``decompress_array`` (512 px tiles, container); OpenJPEG codes the
whole array as one codestream at the ``quality`` level that ``encode_to_psnr`` finds for
the target (the search is timed apart and left out of its encode time). On the single tile
the wavelet codec's stages are timed apart too: analysis (KLT + DWT), the closed loop on the
block steps, final quantization, entropy coding; entropy decoding, dequantization + inverse
transform.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from common import RESULTS_DIR, command_line, machine, provenance_md, table, write_outputs
from eoz import datasets
from eoz.raster import RasterMeta, RasterWriter, read_meta, read_raster
from eoz.registry import ModelStore

SOURCE = "s2_sat_testdata/S2_L1C_10m_B02-B03-B04-B08_train_top75.tif"
J2K = "jpeg2000"
_STRIP = 512


def _mirrored(n: int, length: int) -> np.ndarray:
    """Indices 0..n-1 folded back and forth over 0..length-1 (symmetric tiling)."""
    i = np.arange(n) % (2 * length)
    return np.where(i < length, i, 2 * length - 1 - i)


def build_scene(source: Path, size: int, path: Path) -> RasterMeta:
    """A size x size GeoTIFF of the source tiled with mirroring, written strip by strip."""
    array, src = read_raster(source)
    meta = RasterMeta(height=size, width=size, count=src.count, dtype=src.dtype,
                      band_names=src.band_names, crs=src.crs, transform=src.transform,
                      nodata=src.nodata)
    rows, cols = _mirrored(size, src.height), _mirrored(size, src.width)
    with RasterWriter(path, meta) as writer:
        for r0 in range(0, size, _STRIP):
            writer.write(np.ascontiguousarray(array[:, rows[r0:r0 + _STRIP]][:, :, cols]), 0, r0)
    return meta


def _max_rss_mib() -> float:
    """Peak resident memory of this process's own address space.

    Linux carries ru_maxrss across exec, so a fresh child would report its parent's peak
    when that is higher; VmHWM starts afresh with the new program.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(spec: dict) -> dict:
    """One compress or decompress, measured from inside the process that does it."""
    import torch

    from eoz.codecs import codec_for_model
    from eoz.scene import compress_file, decompress_file

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    rss_imports = _max_rss_mib()
    start = time.perf_counter()
    # Decoding finds the model in the same per-process cache: loading stays out of the timing.
    params = {"quality": spec["quality"]} if spec["codec"] == J2K else {}
    codec = codec_for_model(spec["codec"], **params)
    load_seconds = time.perf_counter() - start
    rss_loaded = _max_rss_mib()
    cpu0, start = _cpu_seconds(), time.perf_counter()
    if spec["op"] == "compress":
        compress_file(spec["src"], spec["dst"], codec, spec["tile_size"])
    else:
        decompress_file(spec["src"], spec["dst"])
    wall = time.perf_counter() - start
    device = str(next(codec.model.parameters()).device) if hasattr(codec, "model") else "none"
    return {"wall_seconds": wall, "cpu_seconds": _cpu_seconds() - cpu0,
            "load_seconds": load_seconds, "peak_rss_mib": _max_rss_mib(),
            "rss_after_imports_mib": rss_imports, "rss_after_load_mib": rss_loaded,
            "torch_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available(),
            "model_device": device}


def run_child(spec: dict, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{spec['op']} with {spec['codec']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(codec: str, scene: dict, args, workdir: Path) -> dict:
    """Compress then decompress one scene, args.repeats times; median times, largest peak RSS."""
    stem = f"{codec}_{scene['size']}"
    eoz_path, tif_path = workdir / f"{stem}.eoz", workdir / f"{stem}.out.tif"
    base = {"codec": codec, "quality": args.j2k_quality, "tile_size": args.tile_size,
            "threads": args.threads}
    label = f"{J2K} (quality {args.j2k_quality:g})" if codec == J2K else codec
    result = {"codec": label, "size": scene["size"], "pixels": scene["pixels"],
              "raw_bytes": scene["raw_bytes"]}
    for op, src, dst in (("compress", scene["path"], eoz_path),
                         ("decompress", eoz_path, tif_path)):
        spec = {**base, "op": op, "src": str(src), "dst": str(dst)}
        runs = [run_child(spec) for _ in range(args.repeats)]
        wall = statistics.median(r["wall_seconds"] for r in runs)
        m = result[op] = {
            "runs": runs, "wall_seconds": wall,
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
            "megapixels_per_second": scene["pixels"] / 1e6 / wall,
            "mb_per_second": scene["raw_bytes"] / 1e6 / wall,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "rss_after_load_mib": max(r["rss_after_load_mib"] for r in runs)}
        print(f"  {label} {scene['size']}^2 {op}: {wall:.2f} s, "
              f"{m['megapixels_per_second']:.3f} Mpx/s, peak RSS {m['peak_rss_mib']:.0f} MiB",
              flush=True)
    result["file_bytes"] = eoz_path.stat().st_size
    result["compression_ratio"] = scene["raw_bytes"] / result["file_bytes"]
    result["bpp_per_band"] = 8 * result["file_bytes"] / (scene["pixels"] * scene["bands"])
    eoz_path.unlink()
    tif_path.unlink()
    return result


def _md_speed(data: dict) -> list[str]:
    s = data["settings"]
    runs = [run for r in data["results"] for op in ("compress", "decompress")
            for run in r[op]["runs"]]
    devices = ", ".join(sorted({run["model_device"] for run in runs} - {"none"})) or "no model run"
    cuda = ", ".join(str(v) for v in sorted({run["cuda_available"] for run in runs}))
    threads = ", ".join(str(v) for v in sorted({run["torch_threads"] for run in runs}))
    sizes = " and ".join(f"{sc['size']} x {sc['size']}" for sc in data["scenes"])
    md = [f"Device: **CPU only** (in the measured processes torch.cuda.is_available() = "
          f"{cuda}, model parameters on: {devices}; torch threads = {threads}; OpenJPEG codes "
          "with one thread, as eoz.jpeg2000 sets).", "",
          f"Scenes: `{s['source']}` ({s['source_shape'][1]} x {s['source_shape'][2]}, 4 bands "
          f"uint16, real Sentinel-2 L1C 10 m) tiled with mirroring to {sizes}, written as tiled "
          f"DEFLATE GeoTIFFs. Tile size {s['tile_size']}; {s['repeats']} run(s) per measurement "
          "(median time, largest peak RSS). Decompression writes a tiled DEFLATE GeoTIFF.", "",
          "Definitions: Mpx/s = height x width / 10^6 / wall seconds; MB/s = raw input bytes "
          "(h x w x 4 bands x 2) / 10^6 / wall seconds, for both directions; wall and CPU seconds "
          "cover the `compress_file` or `decompress_file` call alone (GeoTIFF read and write "
          "included, imports and model loading not); peak RSS = VmHWM of the fresh process that "
          "ran it, Python, torch and libraries included (not ru_maxrss, which Linux carries over "
          "from the parent across exec); 'RSS before' is that peak after imports and model "
          "loading, before the call; ratio = raw bytes / .eoz file bytes.", ""]
    rows = []
    for r in data["results"]:
        for op in ("compress", "decompress"):
            m = r[op]
            rows.append([r["codec"], f"{r['size']} x {r['size']}", op, f"{m['wall_seconds']:.2f}",
                         f"{m['cpu_seconds']:.2f}", f"{m['megapixels_per_second']:.3f}",
                         f"{m['mb_per_second']:.2f}", f"{m['peak_rss_mib']:.0f}",
                         f"{m['rss_after_load_mib']:.0f}", r["file_bytes"],
                         f"{r['compression_ratio']:.2f}"])
    return md + table(["codec", "scene", "op", "wall s", "CPU s", "Mpx/s", "MB/s",
                       "peak RSS MiB", "RSS before MiB", ".eoz bytes", "ratio"], rows)


def _md_memory(data: dict) -> list[str]:
    large, small = data["scenes"]
    raw_growth = (large["raw_bytes"] - small["raw_bytes"]) / 2**20
    tile = data["settings"]["tile_size"]
    counts = {sc["size"]: math.ceil(sc["size"] / tile) ** 2 for sc in data["scenes"]}
    tiles = {size: f"{n} tile{'s' if n > 1 else ''} of {tile}" for size, n in counts.items()}
    by_key = {(r["codec"], r["size"]): r for r in data["results"]}
    rows = []
    for codec in dict.fromkeys(r["codec"] for r in data["results"]):
        for op in ("compress", "decompress"):
            a = by_key[(codec, small["size"])][op]["peak_rss_mib"]
            b = by_key[(codec, large["size"])][op]["peak_rss_mib"]
            rows.append([codec, op, f"{a:.0f}", f"{b:.0f}", f"{b - a:+.0f}",
                         f"{(b - a) / raw_growth:.1%}"])
    md = ["## Does memory grow with the scene?", ""]
    md += table(["codec", "op", f"peak RSS MiB at {small['size']}^2 ({tiles[small['size']]})",
                 f"peak RSS MiB at {large['size']}^2 ({tiles[large['size']]})",
                 "growth MiB", f"growth / raw scene growth ({raw_growth:.0f} MiB)"], rows)
    return md + ["Memory bounded by the tile size shows as a growth near 0 % of the raw scene "
                 "growth; near 100 % or more means the whole scene (or more) is held at once. "
                 "With scenes of only a few tiles, caches of a few MiB in the libraries can "
                 "dominate that ratio; the default sizes (4096 and 2048) make it telling.", ""]


def markdown(data: dict) -> list[str]:
    return (["# Throughput and memory of file-to-file compression", ""]
            + provenance_md(data["command"], data["machine"]) + _md_speed(data)
            + _md_memory(data) + ["Raw numbers (every run): `throughput.json`."])


# --- --mode openjpeg: a fixed-quality wavelet model against OpenJPEG, in memory ----------------

PEAK = 10000.0
OPENJPEG = {"openjpeg": False, "openjpeg+klt": True}   # label -> spectral KLT
ENCODE_GOAL, DECODE_GOAL = 0.5, 0.25                   # issue 11: x OpenJPEG's Mpx/s


def _reset_peak_rss() -> float:
    """Reset this process's VmHWM to its current RSS (Linux: clear_refs 5); that RSS in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmRSS in /proc/self/status")


def _load_input(spec: dict):
    """The case's array and meta: a validation image, its central crop, or a mirrored mosaic of it."""
    from dataclasses import replace

    from rd_s2 import load_images

    image = load_images(spec["crop"], [spec["image"]])[0]
    array, meta = image["array"], image["meta"]
    if spec["mosaic"]:
        rows, cols = _mirrored(spec["mosaic"], array.shape[1]), _mirrored(spec["mosaic"], array.shape[2])
        array = np.ascontiguousarray(array[:, rows][:, :, cols])
        meta = replace(meta, height=spec["mosaic"], width=spec["mosaic"])
    return array, meta


def _coders(spec: dict, array: np.ndarray, meta):
    """encode() -> coded, decode(coded) -> array, size(coded) -> bytes, and what setting up cost."""
    from eoz import jpeg2000
    from eoz.codecs import codec_for_model
    from eoz.quality import QualityTarget
    from eoz.scene import compress_array, decompress_array

    start = time.perf_counter()
    if spec["codec"] in OPENJPEG:
        klt = OPENJPEG[spec["codec"]]
        quality = jpeg2000.encode_to_psnr(array, spec["psnr"], PEAK, klt=klt)[1]["quality"]
        setup = {"quality": quality, "search_seconds": time.perf_counter() - start}
        return (lambda: jpeg2000.encode(array, quality=quality, klt=klt), lambda coded: jpeg2000.decode(*coded),
                lambda coded: len(coded[0]) + jpeg2000.params_nbytes(coded[1]), setup)
    codec = codec_for_model(spec["codec"], target=QualityTarget(psnr=spec["psnr"], peak=PEAK, block=spec["block"]))
    setup = {"load_seconds": time.perf_counter() - start}
    return (lambda: compress_array(array, meta, codec), lambda data: decompress_array(data)[0], len, setup)


def _timed(call, *args):
    """(result, wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = call(*args)
    return result, time.perf_counter() - wall, _cpu_seconds() - cpu


def _fixed_malloc() -> None:
    """Have glibc return freed memory to the system and map every large block afresh, so the
    RSS peak of the next call counts what it allocates (after warm runs, glibc's raised mmap
    threshold would serve it from memory that is already resident)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 128 * 1024)   # M_MMAP_THRESHOLD: fixed, not raised by frees
    libc.malloc_trim(0)


def _rss_growth_mib(call, *args) -> float:
    """Growth of the process's peak RSS during one call (VmHWM reset to the RSS just before)."""
    import gc

    gc.collect()
    _fixed_malloc()
    rss = _reset_peak_rss()
    call(*args)
    return _max_rss_mib() - rss


def _traced_peak_mib(call, *args) -> float:
    tracemalloc.start()
    try:
        call(*args)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _median_stats(runs: list[tuple], pixels: int, samples: int) -> dict:
    wall, cpu = statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs)
    return {"wall_seconds": wall, "cpu_seconds": cpu, "runs_wall_seconds": [r[1] for r in runs],
            "runs_cpu_seconds": [r[2] for r in runs], "megapixels_per_second": pixels / 1e6 / wall,
            "msamples_per_second": samples / 1e6 / wall, "megapixels_per_cpu_second": pixels / 1e6 / cpu}


class _TimedQuantizer:
    """Stands in for the codec's SubbandModel inside an Analysis: its ``quantize`` (the
    dependent quantizer's search) is timed, everything else passes through."""

    def __init__(self, model):
        self.model, self.seconds, self.calls = model, 0.0, 0

    def quantize(self, *args, **kwargs):
        start = time.process_time()
        try:
            return self.model.quantize(*args, **kwargs)
        finally:
            self.seconds += time.process_time() - start
            self.calls += 1

    def __getattr__(self, name):
        return getattr(self.model, name)


def wavelet_stages(spec: dict, array: np.ndarray) -> dict:
    """Median CPU seconds of each stage of the wavelet codec on one tile, called from the
    outside (CPU time: on a shared machine wall time would mostly measure the other work)."""
    from eoz import wavelet
    from eoz.codecs import codec_for_model
    from eoz.codecs.wavelet import Analysis, _Transform, base_log2_step, choose_codes
    from eoz.quality import QualityTarget

    codec = codec_for_model(spec["codec"], target=QualityTarget(psnr=spec["psnr"], peak=PEAK, block=spec["block"]))
    target, valid = codec.target, np.ones(array.shape, bool)
    bands, height, width = array.shape
    keys = ("analysis", "closed_loop", "quantize", "entropy_encode", "entropy_decode", "decode_tile")
    runs, wall_runs = [], []
    for _ in range(spec["repeats"]):
        laps, wall_laps = [], []

        def lap(call, *args, _laps=laps, _wall_laps=wall_laps):
            cpu, wall = time.process_time(), time.perf_counter()
            result = call(*args)
            _laps.append(time.process_time() - cpu)
            _wall_laps.append(time.perf_counter() - wall)
            return result

        quantizer = _TimedQuantizer(codec.model)
        analysed = lap(lambda: Analysis(_Transform.fit(array), array, base_log2_step(target.mse), quantizer))
        passes, block_mse = {"proxy": 0, "coded": 0}, analysed.block_mse

        def counted(*args, _inner=block_mse, **kwargs):
            # the 4th argument, dependent=False, marks a pass on the closed loop's scalar proxy
            passes["coded" if (args[3] if len(args) > 3 else kwargs.get("dependent", True)) else "proxy"] += 1
            return _inner(*args, **kwargs)

        analysed.block_mse = counted
        codes, _ = lap(choose_codes, analysed, valid, target.block, target.mse)
        loop_quantizer = quantizer.seconds
        quantized = lap(analysed.quantize, codes, target.block)
        body = lap(codec.model.encode, quantized[0])
        shapes = wavelet.flatten(wavelet.subband_shapes(height, width, analysed.levels))
        lap(codec.model.decode, body, shapes, bands)
        payload = codec._payload(analysed, codes, target.block, quantized)   # codes the planes again: not timed
        lap(codec.decode_tile, payload, bands, height, width)
        runs.append(dict(zip(keys, laps), closed_loop_quantizer=loop_quantizer,
                         final_quantizer=quantizer.seconds - loop_quantizer, **{f"{k}_passes": v
                                                                                for k, v in passes.items()}))
        wall_runs.append(dict(zip(keys, wall_laps)))
    median = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    return {**{f"{k}_seconds" if "passes" not in k else k: v for k, v in median.items()},
            "inverse_seconds": median["decode_tile"] - median["entropy_decode"],
            "payload_bytes": len(body), "runs_cpu_seconds": runs, "runs_wall_seconds": wall_runs}


def array_child(spec: dict) -> dict:
    """One case in a fresh process: first call, repeated timings, peak memory, stages."""
    from eoz import metrics

    load = [os.getloadavg()]
    array, meta = _load_input(spec)
    bands, height, width = array.shape
    pixels, samples = height * width, array.size
    encode, decode, size, setup = _coders(spec, array, meta)
    coded, first_encode, _ = _timed(encode)
    recon, first_decode, _ = _timed(decode, coded)
    out = {"shape": list(array.shape), "pixels": pixels, "samples": samples, "raw_bytes": array.nbytes,
           **setup, "first_encode_seconds": first_encode, "first_decode_seconds": first_decode}
    if spec["first_only"]:
        return out
    encodes, decodes = [], []
    for _ in range(spec["repeats"]):
        encodes.append(_timed(encode))
        decodes.append(_timed(decode, encodes[-1][0]))
    coded, recon = encodes[-1][0], decodes[-1][0]
    out.update(bytes=size(coded), compression_ratio=array.nbytes / size(coded),
               achieved_psnr=metrics.psnr(array, recon, PEAK),
               encode=_median_stats(encodes, pixels, samples), decode=_median_stats(decodes, pixels, samples))
    del encodes, decodes, recon
    if spec["time_stages"]:
        out["stages"] = wavelet_stages(spec, array)
    out["encode"]["tracemalloc_peak_mib"] = _traced_peak_mib(encode)
    out["decode"]["tracemalloc_peak_mib"] = _traced_peak_mib(decode, coded)
    out["encode"]["peak_rss_growth_mib"] = _rss_growth_mib(encode)   # last: it changes malloc's settings
    out["decode"]["peak_rss_growth_mib"] = _rss_growth_mib(decode, coded)
    load.append(os.getloadavg())
    out["load_average"] = [[round(v, 2) for v in la] for la in load]
    return out


def run_against_openjpeg(args) -> None:
    """Every case of every input in its own process, OpenJPEG and the model side by side."""
    from fixed_quality import source_digests   # here: the files mode's processes stay as they were

    entry = ModelStore().get(args.model)
    inputs = [{"input": "tile", "crop": 512, "mosaic": None}, {"input": "image", "crop": None, "mosaic": None}]
    if args.mosaic:
        inputs.append({"input": "mosaic", "crop": None, "mosaic": args.mosaic})
    blocks = [None if b == "global" else int(b) for b in args.blocks]
    base = {"op": "arrays", "image": args.image, "repeats": args.repeats or 3, "first_only": False,
            "time_stages": False}
    results, load = [], [[round(v, 2) for v in os.getloadavg()]]
    for inp in inputs:
        for psnr in args.psnrs:
            cases = [{"codec": c, "block": None} for c in OPENJPEG] + \
                    [{"codec": entry.model_id, "block": b, "time_stages": inp["input"] == "tile"} for b in blocks]
            for case in cases:
                spec = {**base, **inp, **case, "psnr": psnr}
                r = {**spec, **run_child(spec)}
                results.append(r)
                print(f"{inp['input']} {r['shape']} {psnr:g} dB {_case_label(r)}: {r['achieved_psnr']:.2f} dB, "
                      f"{r['bytes']} B, encode {r['encode']['megapixels_per_second']:.3f} Mpx/s, "
                      f"decode {r['decode']['megapixels_per_second']:.3f} Mpx/s, first call "
                      f"{r['first_encode_seconds']:.2f} / {r['first_decode_seconds']:.2f} s", flush=True)
    # The first call with numba's on-disk cache emptied: what a fresh install pays once.
    with tempfile.TemporaryDirectory() as cache:
        spec = {**base, **inputs[0], "codec": entry.model_id, "block": blocks[0], "psnr": args.psnrs[0],
                "first_only": True}
        cold = {**spec, **run_child(spec, env={**os.environ, "NUMBA_CACHE_DIR": cache})}
    load.append([round(v, 2) for v in os.getloadavg()])
    for r in results:   # the model's speed as a multiple of OpenJPEG's on the same input and target
        if r["codec"] not in OPENJPEG:
            for other in results:
                if other["codec"] in OPENJPEG and (other["input"], other["psnr"]) == (r["input"], r["psnr"]):
                    r.setdefault("speed_vs", {})[other["codec"]] = {
                        f"{op}{by}": r[op][f"megapixels_per{by}_second"] / other[op][f"megapixels_per{by}_second"]
                        for op in ("encode", "decode") for by in ("", "_cpu")}
    data = {"command": command_line(), "machine": machine(),
            "settings": {"model": entry.model_id, "version": entry.version, "image": args.image,
                         "weights_sha256": entry.weights_sha256, "sources_sha256": source_digests(),
                         "psnrs": list(args.psnrs), "blocks": args.blocks, "repeats": base["repeats"],
                         "mosaic": args.mosaic, "peak": PEAK, "tile_size": 512,
                         "goals": {"encode": ENCODE_GOAL, "decode": DECODE_GOAL}, "load_average": load},
            "results": results, "cold_first_call": cold}
    name = args.name or "throughput_wavelet"
    write_outputs(args.out, name, markdown_openjpeg(data, name), data)


def _case_label(r: dict) -> str:
    return r["codec"] if r["codec"] in OPENJPEG else f"{r['codec']} (block {r['block'] or 'global'})"


def _input_label(r: dict, image: str) -> str:
    shape = f"{r['shape'][2]} x {r['shape'][1]} x {r['shape'][0]}"
    return {"tile": f"tile {shape} (centre of {image})", "image": f"whole {image} ({shape})",
            "mosaic": f"mosaic {shape} ({image} mirrored)"}[r["input"]]


def _md_openjpeg_speed(data: dict) -> list[str]:
    image, rows = data["settings"]["image"], []
    for r in data["results"]:
        e, d = r["encode"], r["decode"]
        rows.append([_input_label(r, image), f"{r['psnr']:g}", _case_label(r), f"{r['achieved_psnr']:.2f}",
                     r["bytes"], f"{r['compression_ratio']:.2f}", f"{e['wall_seconds']:.3f}",
                     f"{e['cpu_seconds']:.3f}", f"{e['megapixels_per_second']:.3f}",
                     f"{e['msamples_per_second']:.3f}", f"{d['wall_seconds']:.3f}", f"{d['cpu_seconds']:.3f}",
                     f"{d['megapixels_per_second']:.3f}", f"{d['msamples_per_second']:.3f}",
                     f"{r['first_encode_seconds']:.3f}", f"{r['first_decode_seconds']:.3f}"])
    return ["## Speed", ""] + table(
        ["input", "target dB", "codec", "PSNR dB", "bytes", "ratio", "encode s", "encode CPU s", "encode Mpx/s",
         "encode Msamples/s", "decode s", "decode CPU s", "decode Mpx/s", "decode Msamples/s",
         "first encode s", "first decode s"], rows)


def _md_openjpeg_ratios(data: dict) -> list[str]:
    goals, rows, met = data["settings"]["goals"], [], {}
    for r in data["results"]:
        if "speed_vs" not in r:
            continue
        cells = []
        for op in ("encode", "decode"):
            for other in OPENJPEG:
                x = r["speed_vs"][other]
                met.setdefault((op, other), []).append(x[op] >= goals[op])
                cells += [f"{x[op]:.2f}x {'(met)' if x[op] >= goals[op] else '(not met)'}", f"{x[op + '_cpu']:.2f}x"]
        rows.append([_input_label(r, data["settings"]["image"]), f"{r['psnr']:g}", r["block"] or "global", *cells])
    md = ["## Speed as a multiple of OpenJPEG's (same input and target, same run)", "",
          "Mpx/s of the model over OpenJPEG's by wall time (the goal's measure), and by CPU "
          "time (less moved by the other work on the machine).", ""]
    md += table(["input", "target dB", "block", "encode / OpenJPEG", "(CPU)", "encode / OpenJPEG+KLT", "(CPU)",
                 "decode / OpenJPEG", "(CPU)", "decode / OpenJPEG+KLT", "(CPU)"], rows)
    return md + [f"- Goal encode >= {goals['encode']}x, decode >= {goals['decode']}x OpenJPEG (wall): met in "
                 + ", ".join(f"{sum(v)} of {len(v)} cases for {op} against {other}"
                             for (op, other), v in met.items()) + ".", ""]


def _md_openjpeg_memory(data: dict) -> list[str]:
    rows = [[_input_label(r, data["settings"]["image"]), f"{r['psnr']:g}", _case_label(r),
             f"{r['raw_bytes'] / 2**20:.1f}", f"{r['encode']['peak_rss_growth_mib']:.1f}",
             f"{r['encode']['tracemalloc_peak_mib']:.1f}", f"{r['decode']['peak_rss_growth_mib']:.1f}",
             f"{r['decode']['tracemalloc_peak_mib']:.1f}"] for r in data["results"]]
    return ["## Peak memory of one call", "",
            "Growth of the process's peak RSS during one call after the timed ones (VmHWM reset to "
            "the RSS just before; glibc told to return freed memory and to map large blocks afresh, "
            "so memory kept from earlier calls does not hide the call's own), and tracemalloc's "
            "peak during another call (numpy and Python allocations: numba's and OpenJPEG's own "
            "are not traced). The input array is "
            "allocated before the call and not counted; a decode's output array is. Bounded by "
            "the tile shows as the model's figures staying flat from the tile to the whole image "
            "and the mosaic, while OpenJPEG's (one codestream for the whole array) grow with it.",
            ""] + table(["input", "target dB", "codec", "raw input MiB", "encode RSS growth MiB",
                         "encode tracemalloc MiB", "decode RSS growth MiB", "decode tracemalloc MiB"], rows)


def _md_openjpeg_stages(data: dict) -> list[str]:
    rows = []
    for r in data["results"]:
        s = r.get("stages")
        if not s:
            continue
        encode = s["analysis_seconds"] + s["closed_loop_seconds"] + s["quantize_seconds"] + s["entropy_encode_seconds"]
        share = lambda v, total: f"{v:.3f} ({v / total:.0%})"  # noqa: E731
        rows.append([f"{r['psnr']:g}", r["block"] or "global", share(s["analysis_seconds"], encode),
                     share(s["closed_loop_seconds"], encode), f"{s['proxy_passes']:g} + {s['coded_passes']:g}",
                     share(s["closed_loop_quantizer_seconds"], encode), share(s["quantize_seconds"], encode),
                     share(s["entropy_encode_seconds"], encode), f"{encode:.3f}",
                     share(s["entropy_decode_seconds"], s["decode_tile_seconds"]),
                     share(s["inverse_seconds"], s["decode_tile_seconds"]), f"{s['decode_tile_seconds']:.3f}"])
    return ["## Where the time goes (one 512 x 512 tile, median CPU seconds and share)", "",
            "Called from the outside: `Analysis` (KLT fit + forward transform), `choose_codes` (the "
            "closed loop: passes on the scalar proxy, then passes with the dependent quantizer as "
            "coded; each pass quantizes, dequantizes and inverts the whole tile to measure the block "
            "MSEs), of which the dependent quantizer's search (`SubbandModel.quantize`), the final "
            "`Analysis.quantize` (kept from the loop's last pass when the codes are the same), "
            "`SubbandModel.encode` (context modelling and range coding); `SubbandModel.decode`, and "
            "the rest of `decode_tile` (dequantization, inverse DWT and KLT). CPU seconds of this "
            "process, as the machine is shared (wall seconds of every run are in the JSON).", ""] + table(
        ["target dB", "block", "analysis s", "closed loop s", "passes (proxy + coded)",
         "of which dependent quantizer s", "final quantize s", "entropy coding s", "encode s",
         "entropy decoding s", "dequantize + inverse s", "decode s"], rows)


def markdown_openjpeg(data: dict, name: str) -> list[str]:
    from fixed_quality import digests_md

    s, cold = data["settings"], data["cold_first_call"]
    warm = next(r for r in data["results"] if r["codec"] == s["model"] and r["input"] == "tile")
    md = ["# Wavelet codec against OpenJPEG: speed and memory on the CPU", ""]
    md += provenance_md(data["command"], data["machine"])
    md += [f"Model `{s['model']}` (version {s['version']}) against OpenJPEG through `eoz.jpeg2000` "
           f"(plain and + spectral KLT, one thread as that module sets), on the S2 10 m validation "
           f"image `{s['image']}` (uint16, 4 bands): its central 512 x 512 tile, the whole image"
           + (f", and a {s['mosaic']} x {s['mosaic']} mosaic of it (mirrored)" if s["mosaic"] else "")
           + f". Target PSNR (peak {s['peak']:g}) per block for the model; OpenJPEG at the quality "
           "level that `encode_to_psnr` finds for the same PSNR over the whole array (that search "
           "is not in its encode time). The model runs the whole path, `compress_array` / "
           f"`decompress_array` with {s['tile_size']} px tiles; OpenJPEG codes the array as one "
           f"codestream. Each case runs in a fresh process: one first call, then {s['repeats']} "
           "timed encodes and decodes (median wall seconds; CPU seconds beside them), then one "
           "call each under tracemalloc. Mpx/s = height x width / 10^6 / wall s; Msamples/s counts "
           "the 4 bands. CPU only.", "",
           f"Load average (1, 5, 15 min) before the run {s['load_average'][0]}, after it "
           f"{s['load_average'][-1]}, on {data['machine']['cpu_count']} cores shared with other work "
           "(each case's own is in the JSON): wall times move with that load, CPU seconds less.", "",
           f"First call in a fresh process (the tile, {s['psnrs'][0]:g} dB, block "
           f"{s['blocks'][0]}): with numba's on-disk cache {warm['first_encode_seconds']:.2f} s encode "
           f"and {warm['first_decode_seconds']:.2f} s decode (median warm encode "
           f"{warm['encode']['wall_seconds']:.2f} s); with an empty cache (numba compiles the "
           f"coder) {cold['first_encode_seconds']:.2f} s and {cold['first_decode_seconds']:.2f} s. "
           "Both are left out of the timings below. OpenJPEG's first call comes after its quality "
           "search, so it is warm already.", ""]
    md += digests_md(s) + _md_openjpeg_speed(data) + _md_openjpeg_ratios(data) + _md_openjpeg_stages(data)
    return md + _md_openjpeg_memory(data) + [f"Raw numbers (every run): `{name}.json`."]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="scene edge in pixels")
    parser.add_argument("--small-size", type=int,
                        help="edge of the second, smaller scene (default: size / 2)")
    parser.add_argument("--codecs", nargs="+", default=["vqvae-fpn-s2-10m", J2K],
                        help="model ids from the store, or jpeg2000")
    parser.add_argument("--j2k-quality", type=float, default=60.0,
                        help="JPEG 2000 fixed quality level (see eoz.jpeg2000)")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--threads", type=int, help="torch threads in each run (default: torch's)")
    parser.add_argument("--repeats", type=int, help="runs per measurement (default 1; openjpeg mode 3)")
    parser.add_argument("--source", default=SOURCE,
                        help="4-band GeoTIFF, relative to the data folder, to tile into scenes")
    parser.add_argument("--workdir", type=Path,
                        help="folder for the scenes and outputs (default: the system temp folder)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="folder for throughput.{md,json}")
    parser.add_argument("--mode", choices=("files", "openjpeg"), default="files",
                        help="files: file-to-file scenes per codec (default); openjpeg: a "
                             "fixed-quality wavelet model against OpenJPEG in memory")
    parser.add_argument("--model", default="wavelet-hyperprior", help="openjpeg mode: the model")
    parser.add_argument("--psnrs", type=float, nargs="+", default=(45.0, 55.0),
                        help="openjpeg mode: target PSNRs (peak 10000)")
    parser.add_argument("--blocks", nargs="+", default=("global", "32"),
                        help="openjpeg mode: block sizes of the wavelet model's target")
    parser.add_argument("--image", default="dubai_imgs_1",
                        help="openjpeg mode: the validation image (whole, and its central tile)")
    parser.add_argument("--mosaic", type=int, default=2048,
                        help="openjpeg mode: edge of a mirrored mosaic of the image (0: none)")
    parser.add_argument("--name", help="results file stem (default: throughput, or "
                                       "throughput_wavelet in openjpeg mode)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(array_child(spec) if spec["op"] == "arrays" else child(spec)))
        return
    if args.mode == "openjpeg":
        run_against_openjpeg(args)
        return

    args.repeats = args.repeats or 1
    small = args.small_size or args.size // 2
    if small >= args.size:
        raise SystemExit("--small-size must be below --size")
    source = datasets.data_dir() / args.source
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        scenes = []
        for size in (args.size, small):
            path = Path(tmp) / f"scene_{size}.tif"
            meta = build_scene(source, size, path)
            scenes.append({"size": size, "path": path, "pixels": size * size, "bands": meta.count,
                           "raw_bytes": size * size * meta.count * np.dtype(meta.dtype).itemsize,
                           "geotiff_bytes": path.stat().st_size})
            print(f"scene {size} x {size}: {scenes[-1]['geotiff_bytes']} B GeoTIFF", flush=True)
        results = [measure(codec, scene, args, Path(tmp))
                   for codec in args.codecs for scene in scenes]
    src = read_meta(source)
    data = {"command": command_line(), "machine": machine(),
            "settings": {"source": args.source, "source_shape": [src.count, src.height, src.width],
                         "tile_size": args.tile_size, "j2k_quality": args.j2k_quality,
                         "threads": args.threads, "repeats": args.repeats,
                         "model_store": str(ModelStore().root)},
            "scenes": [{k: v for k, v in sc.items() if k != "path"} for sc in scenes],
            "results": results}
    write_outputs(args.out, args.name or "throughput", markdown(data), data)


if __name__ == "__main__":
    main()
