"""Fixed-quality coding on the held-out cities: does every block reach its target PSNR?

For each target PSNR (peak 10000) and block size, every validation image goes through the
real path (``compress_array`` then ``decompress_array``), and the decoded image is cut into
the blocks the target applies to (``global``: the 512 px tiles). Per block: the achieved
PSNR minus the target. Reported over all blocks of all images: the fraction meeting the
target (goal 100 %), mean and standard deviation of achieved minus target (goal: mean
overshoot <= 0.3 dB), bits per pixel per band of the whole files, and the same with the
closed-loop correction switched off (the quality model alone, as in Mijares i Verdú et al.,
whose open loop misses by 0.1-0.8 dB on average with 1.2-3.7 dB standard deviation).

Codecs without an open loop (not in OPEN_LOOP_CODECS) run closed only; the wavelet codec's
open loop is the step that high-rate theory gives for the target, nothing measured. Blocks
are cut from the decoded image on the image grid, which is the grid the codec used: tiles
start at multiples of the tile size (512) from the image origin, and each tile's blocks at
the tile's origin, so with block sizes dividing the tile size every block of the codec is a
block of the image grid (edge blocks and tiles smaller). Beside the mean, the
median and 90th percentile of achieved minus target (the overshoot), and bytes, compression
ratio and encode and decode times of the whole files.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

import numpy as np

from common import REPO_ROOT, RESULTS_DIR, command_line, machine, provenance_md, table, write_outputs
from eoz.codecs import DEFAULT_TILE_SIZE, codec_for_model
from eoz.quality import QualityTarget, block_means, psnr_to_mse
from eoz.registry import ModelStore
from eoz.scene import compress_array, decompress_array
from rd_s2 import load_images

PEAK = 10000.0
PSNR_CAP = 99.0   # an exact block has infinite PSNR: counted as met, capped for the statistics
OPEN_LOOP_CODECS = ("hyperprior", "wavelet")   # codecs that honour QualityTarget(closed_loop=False)
# the wavelet codec's modules change fast: the reports name the contents they measured
WAVELET_SOURCES = ("eoz/codecs/wavelet.py", "eoz/subband_coder.py", "eoz/wavelet.py")


def source_digests(paths: tuple[str, ...] = WAVELET_SOURCES) -> dict:
    """First 12 hex digits of the sha256 of each source file, as measured."""
    return {path: hashlib.sha256((REPO_ROOT / path).read_bytes()).hexdigest()[:12] for path in paths}


def digests_md(settings: dict) -> list[str]:
    """A line naming the model's weights and the codec sources' digests."""
    sources = ", ".join(f"`{path}` {digest}" for path, digest in settings["sources_sha256"].items())
    return [f"Weights sha256 {settings['weights_sha256'][:12]}; codec sources (sha256): {sources}.", ""]


def block_psnr(array: np.ndarray, recon: np.ndarray, block: int | None,
               tile_size: int = DEFAULT_TILE_SIZE) -> np.ndarray:
    """PSNR of every block of the decoded image (global: every tile), on the image grid:
    the codec's grid too, as tiles start at multiples of tile_size and block divides it."""
    if block is not None and tile_size % block:
        raise ValueError(f"block {block} does not divide the tile size {tile_size}: "
                         "the codec's blocks would not lie on the image grid")
    err = (recon.astype(np.float64) - array.astype(np.float64)) ** 2
    mse = block_means(err, np.ones(err.shape, bool), block or tile_size).ravel()
    with np.errstate(divide="ignore"):
        return np.minimum(10 * np.log10(PEAK ** 2 / mse), PSNR_CAP)


def run(model: str, store: ModelStore, images: list[dict], psnr: float, block: int | None,
        closed_loop: bool) -> dict:
    codec = codec_for_model(model, store=store, target=QualityTarget(psnr=psnr, block=block, peak=PEAK,
                                                                     closed_loop=closed_loop))
    deltas, nbytes, raw_bytes, samples, pixels, seconds, decode_seconds = [], 0, 0, 0, 0, 0.0, 0.0
    for image in images:
        start = time.perf_counter()
        data = compress_array(image["array"], image["meta"], codec, DEFAULT_TILE_SIZE)
        seconds += time.perf_counter() - start
        start = time.perf_counter()
        recon, _ = decompress_array(data, store=store)
        decode_seconds += time.perf_counter() - start
        deltas.append(block_psnr(image["array"], recon, block) - psnr)
        nbytes += len(data)
        raw_bytes += image["array"].nbytes
        samples += image["array"].size
        pixels += image["array"][0].size
    d = np.concatenate(deltas)
    return {"target_psnr": psnr, "target_mse": psnr_to_mse(psnr, PEAK), "block": block or "global",
            "closed_loop": closed_loop, "blocks": int(d.size), "met": float(np.mean(d >= 0)),
            "worst_db": float(d.min()), "mean_db": float(d.mean()), "std_db": float(d.std()),
            "median_db": float(np.median(d)), "p90_db": float(np.percentile(d, 90)),
            "bytes": nbytes, "compression_ratio": raw_bytes / nbytes,
            "bpp_per_band": 8 * nbytes / samples, "encode_seconds": seconds,
            "decode_seconds": decode_seconds, "encode_mpx_per_second": pixels / 1e6 / seconds,
            "decode_mpx_per_second": pixels / 1e6 / decode_seconds}


def _table(data: dict) -> list[str]:
    """Per setting: the closed loop's overshoot quantiles, sizes and times; the open loop's
    (the quality model or high-rate step alone) beside it where the codec has one."""
    rows = []
    for r, o in zip(data["closed_loop"], data["open_loop"] or [None] * len(data["closed_loop"])):
        row = [f"{r['target_psnr']:g}", f"{r['target_mse']:.1f}", r["block"], r["blocks"], f"{r['met']:.1%}",
               f"{r['mean_db']:+.2f}", f"{r['std_db']:.2f}", f"{r['worst_db']:+.2f}", f"{r['bpp_per_band']:.3f}",
               f"{r['median_db']:+.2f}", f"{r['p90_db']:+.2f}", r["bytes"], f"{r['compression_ratio']:.2f}",
               f"{r['encode_seconds']:.1f}", f"{r['decode_seconds']:.1f}"]
        if o:
            row += [f"{o['met']:.1%}", f"{o['mean_db']:+.2f}", f"{o['std_db']:.2f}", f"{o['bpp_per_band']:.3f}",
                    f"{o['encode_seconds']:.1f}"]
        rows.append(row)
    headers = ["target PSNR", "target MSE", "block", "blocks", "met (closed)", "mean (closed)", "std (closed)",
               "worst (closed)", "bpp/band (closed)", "median (closed)", "p90 (closed)", "bytes (closed)",
               "ratio (closed)", "encode s (closed)", "decode s (closed)"]
    if data["open_loop"]:
        headers += ["met (open)", "mean (open)", "std (open)", "bpp/band (open)", "encode s (open)"]
    return table(headers, rows)


def markdown(data: dict, name: str = "fixed_quality") -> list[str]:
    md = ["# Fixed-quality coding on the Sentinel-2 10 m validation split", ""]
    md += provenance_md(data["command"], data["machine"])
    s = data["settings"]
    md += [f"Model `{s['model']}` (version {s['version']}); images: {', '.join(s['images'])} "
           f"({'central %dx%d crop of each' % (s['crop'], s['crop']) if s['crop'] else 'whole images'}); "
           f"PSNR peak {PEAK:g}. Achieved minus target is in dB per block, over all blocks of all "
           f"images (blocks with zero error count as met and enter the statistics at {PSNR_CAP:g} dB).", ""]
    md += digests_md(s)
    md += [f"Tile size {s['tile_size']}; blocks on the image grid (see the script's docstring). "
           f"Load average (1, 5, 15 min) at the start {s['load_average']['start']}, at the end "
           f"{s['load_average']['end']}, on {data['machine']['cpu_count']} cores shared with other "
           "work: times are wall clock, for the whole split (encode: compress_array, decode: "
           "decompress_array), and move with that load.", ""]
    md += _table(data)
    all_met = all(r["met"] == 1.0 for r in data["closed_loop"])
    mean_over = max(r["mean_db"] for r in data["closed_loop"])
    median_over = max(r["median_db"] for r in data["closed_loop"])
    md += [f"- Every block meets its target with the closed loop: **{'yes' if all_met else 'no'}**.",
           f"- Largest median overshoot over the settings: {median_over:+.2f} dB "
           f"(goal <= 0.3 dB: **{'met' if median_over <= 0.3 else 'not met'}**).",
           f"- Largest mean overshoot over the settings: {mean_over:+.2f} dB "
           f"(goal <= 0.3 dB: **{'met' if mean_over <= 0.3 else 'not met'}**).", "",
           f"Raw numbers: `{name}.json`."]
    return md


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hyperprior-s2-10m")
    parser.add_argument("--psnrs", type=float, nargs="+", default=(40, 45, 50, 55))
    parser.add_argument("--blocks", nargs="+", default=("64", "32", "16", "global"))
    parser.add_argument("--crop", type=int, default=512, help="central NxN of each image (0: whole images)")
    parser.add_argument("--images", nargs="+", metavar="NAME", help="only validation files matching these")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="fixed_quality", help="results file stem: NAME.{md,json}")
    args = parser.parse_args(argv)

    store = ModelStore()
    entry = store.get(args.model)
    images = load_images(args.crop or None, args.images)
    load_start = [round(v, 2) for v in os.getloadavg()]
    results = {"closed_loop": [], "open_loop": []}
    for psnr in args.psnrs:
        for b in args.blocks:
            block = None if b == "global" else int(b)
            for closed in (True, False) if entry.codec in OPEN_LOOP_CODECS else (True,):
                r = run(entry.model_id, store, images, psnr, block, closed)
                results["closed_loop" if closed else "open_loop"].append(r)
                print(f"{psnr:g} dB, block {b}, {'closed' if closed else 'open'} loop: met {r['met']:.1%}, "
                      f"median {r['median_db']:+.2f} dB, mean {r['mean_db']:+.2f} dB, std {r['std_db']:.2f}, "
                      f"worst {r['worst_db']:+.2f}, {r['bpp_per_band']:.3f} bpp/band, "
                      f"{r['encode_seconds']:.1f} s", flush=True)
    data = {"command": command_line(), "machine": machine(),
            "settings": {"model": entry.model_id, "version": entry.version, "crop": args.crop,
                         "images": [im["name"] for im in images], "peak": PEAK,
                         "psnr_cap": PSNR_CAP, "tile_size": DEFAULT_TILE_SIZE,
                         "weights_sha256": entry.weights_sha256, "sources_sha256": source_digests(),
                         "load_average": {"start": load_start,
                                          "end": [round(v, 2) for v in os.getloadavg()]}},
            **results}
    args.out.mkdir(parents=True, exist_ok=True)
    write_outputs(args.out, args.name, markdown(data, args.name), data)


if __name__ == "__main__":
    main()
