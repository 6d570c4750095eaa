"""A whole hyperspectral cube through the predictive codec: speed and memory, against JPEG 2000.

``lossless.py`` measures EnMAP on its 32 x 32 chips (the held-out anchor's size), where every
band of a chip is one small tile. A ground station codes whole cubes, which the decode limit
(``max_tile_samples``) cuts into tiles of about 192 x 192 px at 224 bands: there each band's
least-squares fit and the band-order trial weigh more than in a chip. ../shared/data holds no
whole EnMAP cube, so this one is a mosaic of all fourteen EnMAP chips (training and validation),
repeated and mirrored to 224 x 512 x 512: real spectra, with seams every 32 px that no
scene has. Its ratio is printed but says little (the chips repeat); speed and memory are the
point. Encode and decode are timed in CPU seconds, one thread, each the least of
``TIMING_RUNS`` calls, lossless and at max error 2; JPEG 2000 (OpenJPEG, reversible, all
bands in one codestream) is timed on the same cube in the same run, so the ratio of speeds
holds when this shared machine is slow. Peak RSS of the whole process is reported after each.
"""

from __future__ import annotations

import os
import resource

for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

import imagecodecs
import numpy as np

from common import RESULTS_DIR, command_line, least_cpu_time, machine, provenance_md, table, write_outputs
from eoz import datasets
from eoz.codecs import codec_for_model
from eoz.limits import DecodeLimits
from eoz.raster import RasterMeta
from eoz.scene import compress_array, decompress_array

EDGE = 512            # the cube's rows and columns
CHIP = 32
TIMING_RUNS = 2
MAX_ERRORS = (None, 2)


def cube() -> np.ndarray:
    """The fourteen EnMAP chips tiled to EDGE x EDGE, every other one mirrored left to right."""
    chips = datasets.load_split(datasets.ENMAP_HSI, "train") + datasets.load_split(datasets.ENMAP_HSI, "validation")
    per_side = EDGE // CHIP
    rows = [np.concatenate([chips[(r * per_side + c) % len(chips)][:, :, ::(-1) ** (r + c)]
                            for c in range(per_side)], axis=2) for r in range(per_side)]
    return np.ascontiguousarray(np.concatenate(rows, axis=1)).astype(np.int16)


def _timed(fn):
    return least_cpu_time(fn, TIMING_RUNS)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_eoz(array: np.ndarray, max_error: int | None) -> dict:
    bands, h, w = array.shape
    meta = RasterMeta(height=h, width=w, count=bands, dtype=str(array.dtype),
                      band_names=[f"band{i + 1}" for i in range(bands)], crs=None, transform=None, nodata=None)
    codec = codec_for_model("predictive", lossless=max_error is None or None, max_error=max_error)
    data, encode = _timed(lambda: compress_array(array, meta, codec))
    encode_rss = _peak_rss_mib()
    (decoded, _), decode = _timed(lambda: decompress_array(data))
    error = int(np.abs(decoded.astype(np.int32) - array).max())
    if error > (max_error or 0):
        raise AssertionError(f"eoz decoded with error {error} > {max_error or 0}")
    return {"bytes": len(data), "encode_s": encode, "decode_s": decode, "max_error": error,
            "peak_rss_mib_after_encode": encode_rss, "peak_rss_mib_after_decode": _peak_rss_mib()}


def measure_jpeg2000(array: np.ndarray) -> dict:
    stacked = np.ascontiguousarray(np.moveaxis(array, 0, -1))
    stream, encode = _timed(lambda: imagecodecs.jpeg2k_encode(stacked, level=0, reversible=True, numthreads=1))
    decoded, decode = _timed(lambda: imagecodecs.jpeg2k_decode(stream, numthreads=1))
    if not np.array_equal(decoded.reshape(stacked.shape), stacked):
        raise AssertionError("JPEG 2000 did not decode exactly")
    return {"bytes": len(stream), "encode_s": encode, "decode_s": decode, "max_error": 0}


def report(array: np.ndarray, rows: dict, command: str, info: dict) -> list[str]:
    samples, raw = array.size, array.nbytes
    edge = DecodeLimits().tile_size_for(array.shape[0], 0, 512)
    lines = ["# A whole hyperspectral cube: the predictive codec's speed and memory", ""]
    lines += provenance_md(command, info)
    lines += [f"Cube: {array.shape[0]} x {array.shape[1]} x {array.shape[2]} int16, a mosaic of the fourteen "
              f"EnMAP chips (see the script's docstring); eoz's tiles: {edge} x {edge} px "
              "(`max_tile_samples`). Speeds in million samples per CPU second, one thread, each the least of "
              f"{TIMING_RUNS} calls; the issue's target is 2. Ratios are raw / file bytes (the chips "
              "repeat: not a compression figure).", ""]
    cells = []
    for name, r in rows.items():
        cells.append([name, f"{raw / r['bytes']:.3f}", f"{samples / r['encode_s'] / 1e6:.2f}",
                      f"{samples / r['decode_s'] / 1e6:.2f}", r["max_error"],
                      f"{r['peak_rss_mib_after_encode']:.0f} / {r['peak_rss_mib_after_decode']:.0f}"
                      if "peak_rss_mib_after_encode" in r else "-"])
    lines += table(["codec", "ratio", "encode", "decode", "max error", "peak RSS MiB (after encode / decode)"], cells)
    j2k = rows["JPEG 2000 lossless"]
    lines += ["Against JPEG 2000's speed in this run (encode / decode): " + "; ".join(
        f"{name} {j2k['encode_s'] / r['encode_s']:.2f}x / {j2k['decode_s'] / r['decode_s']:.2f}x"
        for name, r in rows.items() if name.startswith("eoz")), ""]
    return lines


def main() -> None:
    info, command = machine(), command_line()
    array = cube()
    rows = {}
    for max_error in MAX_ERRORS:
        name = "eoz lossless" if max_error is None else f"eoz max error {max_error}"
        rows[name] = measure_eoz(array, max_error)
        print(name, {k: round(v, 2) for k, v in rows[name].items()}, flush=True)
    rows["JPEG 2000 lossless"] = measure_jpeg2000(array)
    print("jpeg2000", {k: round(v, 2) for k, v in rows["JPEG 2000 lossless"].items()}, flush=True)
    write_outputs(RESULTS_DIR, "hyperspectral_cube", report(array, rows, command, info),
                  {"machine": info, "command": command, "shape": list(array.shape), "results": rows})


if __name__ == "__main__":
    main()
