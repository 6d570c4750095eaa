"""Rate-distortion rows of the other-sensor models against JPEG 2000 on their held-out data.

One section per model, each on its split's validation rasters (never seen in training):

- ``vqvae-fpn-s2-20m`` (Sentinel-2 B05 B06 B07 B8A B11 B12, uint16, peak 10000): the model
  at rate weights 0 and 1.5.
- ``hyperprior-s1-db`` (Sentinel-1 VV/VH backscatter in dB, float32, peak 50 dB): PSNR targets
  in the dB domain, plus what users of backscatter read: the relative error of each band's
  mean and standard deviation in linear power (10^(dB/10)). JPEG 2000 codes integers, so its
  baseline codes the dB values in steps of 0.01 dB as int16 (the rounding costs 0.003 dB RMS).
- ``hyperprior-enmap-hsi`` (EnMAP, 224 bands, int16, peak 10000): the spectral partition at
  PSNR targets, with every band coded on its own and with band-to-band prediction.
  Figures cover the 218 bands with data; the 6 all-nodata bands come back exactly.

Every eoz point goes through the real path (``compress_array``, ``decompress_array``), and
JPEG 2000 (all bands in one codestream, plain and with the spectral KLT) is bisected to the
same file size, so each row compares equal bytes. Aggregates pool the squared errors and
bytes of all validation rasters; SSIM is the mean over rasters of the mean over bands.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from common import RESULTS_DIR, command_line, machine, provenance_md, table, write_outputs
from eoz import datasets, jpeg2000, metrics, spectral
from eoz.codecs import codec_for_model
from eoz.container import EozReader
from eoz.errors import UnknownModelError
from eoz.quality import QualityTarget
from eoz.raster import read_meta
from eoz.registry import ModelStore
from eoz.scene import compress_array, decompress_array

SAR_STEP_DB = 0.01   # the JPEG 2000 baseline's integer step for dB values


def _settings(split: datasets.Split, codec: str) -> list[tuple[str, dict]]:
    """(label, codec_for_model parameters) of each point of a model."""
    if codec == "vqvae-fpn":
        return [("rate weight 0", {}), ("rate weight 1.5", {"rate_weight": 1.5})]
    psnrs = (30.0, 35.0, 40.0) if split.dtype == "float32" else (40.0, 45.0, 50.0)
    points = [(f"{p:g} dB", {"target": QualityTarget(psnr=p, peak=split.peak)}) for p in psnrs]
    if codec == "spectral-partition":
        points = [(f"{label}, {'predicted' if pb else 'band by band'}", {**params, "predict_bands": pb})
                  for label, params in points for pb in (False, True)]
    return points


SECTIONS = (("vqvae-fpn-s2-20m", datasets.S2_20M), ("hyperprior-s1-db", datasets.S1_DB),
            ("hyperprior-enmap-hsi", datasets.ENMAP_HSI))


def load_images(split: datasets.Split) -> list[dict]:
    images = []
    for rel in split.validation:
        path = datasets.data_dir() / rel
        meta = read_meta(path)
        array = datasets.load_bands(path, split.bands).astype(split.dtype)
        meta = replace(meta, count=len(array), band_names=list(split.bands) or meta.band_names)
        usable = spectral.usable_bands(array, split.nodata)
        images.append({"name": Path(rel).stem, "array": array, "meta": meta, "usable": usable})
    return images


def power_stats_error(array: np.ndarray, recon: np.ndarray) -> dict:
    """Largest relative error over bands of the mean and std of linear power 10^(dB/10)."""
    p, q = (10 ** (a.astype(np.float64) / 10) for a in (array, recon))
    mean = np.abs(q.mean(axis=(1, 2)) / p.mean(axis=(1, 2)) - 1)
    std = np.abs(q.std(axis=(1, 2)) / p.std(axis=(1, 2)) - 1)
    return {"power_mean_rel_error": float(mean.max()), "power_std_rel_error": float(std.max())}


def measure(image: dict, recon: np.ndarray, nbytes: int, split: datasets.Split) -> dict:
    usable = image["usable"]
    array, recon = image["array"][usable], recon[usable]
    point = {"bytes": nbytes, "raw_bytes": image["array"].nbytes,
             "sse": float(np.sum((array.astype(np.float64) - recon.astype(np.float64)) ** 2)),
             "samples": array.size, "ssim": float(np.mean(metrics.ssim_per_band(array, recon)))}
    if split.dtype == "float32":
        point.update(power_stats_error(array, recon))
    return point


def j2k_at_size(image: dict, nbytes: int, klt: bool, split: datasets.Split) -> dict:
    array = image["array"]
    coded = np.rint(array / SAR_STEP_DB).astype(np.int16) if array.dtype.kind == "f" else array
    stream, params = jpeg2000.encode_to_size(coded, nbytes, klt=klt)
    recon = jpeg2000.decode(stream, params)
    recon = recon * SAR_STEP_DB if array.dtype.kind == "f" else recon
    point = measure(image, recon, len(stream) + jpeg2000.params_nbytes(params), split)
    # a per-image KLT stores a bands x bands matrix: on small many-band rasters that alone can exceed the budget
    return {**point, "fits_budget": point["bytes"] <= nbytes}


def aggregate(points: list[dict], split: datasets.Split) -> dict:
    sse, samples = sum(p["sse"] for p in points), sum(p["samples"] for p in points)
    out = {"compression_ratio": sum(p["raw_bytes"] for p in points) / sum(p["bytes"] for p in points),
           "bpp_per_band": 8 * sum(p["bytes"] for p in points) / samples,
           "psnr": 10 * np.log10(split.peak ** 2 / (sse / samples)) if sse else float("inf"),
           "ssim": float(np.mean([p["ssim"] for p in points])),
           "fits_budget": all(p.get("fits_budget", True) for p in points),
           "header_share": sum(p.get("header_bytes", 0) for p in points) / sum(p["bytes"] for p in points)}
    for key in ("power_mean_rel_error", "power_std_rel_error"):
        if key in points[0]:
            out[key] = max(p[key] for p in points)
    return out


def run_section(model_id: str, split: datasets.Split, store: ModelStore) -> dict:
    entry = store.get(model_id)
    images = load_images(split)
    rows = []
    for label, params in _settings(split, entry.codec):
        codec = codec_for_model(model_id, store=store, **params)
        per = {"eoz": [], "jpeg2000": [], "jpeg2000_klt": []}
        for image in images:
            data = compress_array(image["array"], image["meta"], codec)
            recon, _ = decompress_array(data, store=store)
            with EozReader(data) as reader:
                header = len(data) - sum(e.length for e in reader.entries)
            per["eoz"].append({**measure(image, recon, len(data), split), "header_bytes": header})
            for key, klt in (("jpeg2000", False), ("jpeg2000_klt", True)):
                per[key].append(j2k_at_size(image, len(data), klt, split))
        row = {"setting": label, **{k: aggregate(v, split) for k, v in per.items()}}
        print(f"{model_id} {label}: " + "; ".join(
            f"{k} ratio {a['compression_ratio']:.1f} PSNR {a['psnr']:.2f} SSIM {a['ssim']:.4f}"
            for k, a in row.items() if k != "setting"), flush=True)
        rows.append(row)
    return {"model_id": model_id, "version": entry.version, "codec": entry.codec, "peak": split.peak,
            "images": [{"name": im["name"], "shape": list(im["array"].shape),
                        "bands_with_data": int(im["usable"].sum())} for im in images], "rows": rows}


def markdown(data: dict) -> list[str]:
    lines = ["# Other sensors: rate-distortion against JPEG 2000 at equal file size", "",
             *provenance_md(data["command"], data["machine"]),
             "Each row: the eoz model at one setting, and JPEG 2000 (plain, and with the spectral KLT) "
             "bisected to the same bytes on each validation raster. PSNR pools squared errors over all "
             "rasters at the stated peak; SSIM is the mean over rasters of the mean over bands. eoz sizes "
             "include the `.eoz` header (georeferencing, model pins, tile table; its share is the 'header' "
             "column), which weighs on small rasters; JPEG 2000 gets the whole budget for its codestream.", ""]
    for s in data["sections"]:
        lines += [f"## {s['model_id']} v{s['version']} ({s['codec']}, PSNR peak {s['peak']:g})", "",
                  "Validation rasters: " + ", ".join(f"{im['name']} {im['shape']}" for im in s["images"]), ""]
        sar = "power_mean_rel_error" in s["rows"][0]["eoz"]
        headers = ["setting", "ratio", "header", "bpp/band", "eoz PSNR", "eoz SSIM", "J2K PSNR", "J2K SSIM",
                   "J2K+KLT PSNR", "J2K+KLT SSIM"]
        if sar:
            headers += ["eoz power mean / std err", "J2K power mean / std err"]
        body = []

        def baseline(a: dict) -> list[str]:
            if not a["fits_budget"]:
                return [f"over budget ({a['compression_ratio']:.1f}:1 at its smallest)", "-"]
            return [f"{a['psnr']:.2f}", f"{a['ssim']:.4f}"]

        for r in s["rows"]:
            e, j, k = r["eoz"], r["jpeg2000"], r["jpeg2000_klt"]
            row = [r["setting"], f"{e['compression_ratio']:.1f}", f"{e['header_share']:.0%}", f"{e['bpp_per_band']:.3f}",
                   f"{e['psnr']:.2f}", f"{e['ssim']:.4f}", *baseline(j), *baseline(k)]
            if sar:
                row += [f"{e['power_mean_rel_error']:.2%} / {e['power_std_rel_error']:.2%}",
                        f"{j['power_mean_rel_error']:.2%} / {j['power_std_rel_error']:.2%}"]
            body.append(row)
        lines += table(headers, body)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[m for m, _ in SECTIONS],
                        help="which of the sensor models to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for rd_sensors.{md,json}")
    args = parser.parse_args(argv)
    store = ModelStore()
    sections = []
    for model_id, split in SECTIONS:
        if model_id not in args.models:
            continue
        try:
            sections.append(run_section(model_id, split, store))
        except UnknownModelError as e:
            print(f"skipped: {e}", flush=True)
    data = {"command": command_line(), "machine": machine(), "sections": sections}
    write_outputs(args.out, "rd_sensors", markdown(data), data)


if __name__ == "__main__":
    main()
