"""Encode and decode speed and peak memory of file-to-file compression, per codec.

A worker compresses whole scenes, so what matters is GeoTIFF -> .eoz -> GeoTIFF on a
realistic scene: here a mosaic of real Sentinel-2 10 m data, the 4-band training crop
tiled with mirroring to the requested size. Each compress_file and decompress_file runs
in a fresh Python process, so its peak RSS (VmHWM of that process) belongs to that run
alone. The same runs at a second, smaller scene show whether memory follows the tile size
(as eoz/scene.py promises) or the scene. Timings cover the compress_file / decompress_file call
only (GeoTIFF reading and writing included); imports and model loading are reported apart.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
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


def run_child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True)
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
    parser.add_argument("--repeats", type=int, default=1, help="runs per measurement")
    parser.add_argument("--source", default=SOURCE,
                        help="4-band GeoTIFF, relative to the data folder, to tile into scenes")
    parser.add_argument("--workdir", type=Path,
                        help="folder for the scenes and outputs (default: the system temp folder)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="folder for throughput.{md,json}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

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
    write_outputs(args.out, "throughput", markdown(data), data)


if __name__ == "__main__":
    main()
