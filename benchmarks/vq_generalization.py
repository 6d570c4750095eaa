"""VQVAE-FPN on what it trained on against what it never saw: the generalization gap.

Issue 14 asks for SSIM on training and validation cities side by side. Each model version
named runs through the real codec path (``eoz.evaluation.evaluate``: compress, decompress,
measure) on

- training: every Sentinel-2 10 m training raster of the model's split, centre crop of at
  most CROP px (the OSCD cities whole; the large scene and the eo-learn scenes cropped), and
- validation: the held-out OSCD cities (bordeaux, dubai, hongkong), whole,

and the report gives ratio (raw bytes / file bytes, pooled), mean SSIM (per band, then per
image, then over images) and pooled PSNR (peak 10000) per part, and the gap between them.
A model that learned its cities rather than the sensor shows a large gap.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from common import RESULTS_DIR, command_line, machine, provenance_md, table, write_outputs
from rd_s2 import load_images
from eoz.codecs import codec_for_model
from eoz.evaluation import S2_PEAK, evaluate
from eoz.registry import ModelStore

CROP = 768


def _pooled(rows: list[dict]) -> dict:
    raw = sum(r["raw_bytes"] for r in rows)
    coded = sum(r["bytes"] for r in rows)
    sse = sum(r["samples"] * S2_PEAK ** 2 / 10 ** (r["psnr"] / 10) for r in rows)
    samples = sum(r["samples"] for r in rows)
    return {"images": len(rows), "ratio": raw / coded, "ssim": float(np.mean([r["ssim"] for r in rows])),
            "psnr": 10 * math.log10(S2_PEAK ** 2 * samples / sse)}


def measure(model_id: str, version: str, parts: dict[str, list[dict]], rate_weight: float) -> dict:
    codec = codec_for_model(model_id, version, ModelStore(), rate_weight=rate_weight or None)
    out = {"model_id": model_id, "version": version, "rate_weight": rate_weight}
    for part, images in parts.items():
        rows = []
        for image in images:
            r = evaluate(image["array"], image["meta"], codec, 512, S2_PEAK)
            rows.append({"image": image["name"], "bytes": r["bytes"], "raw_bytes": image["array"].nbytes,
                         "samples": image["array"].size, "psnr": r["psnr"], "ssim": r["ssim"],
                         "ratio": r["compression_ratio"]})
        out[part] = {"pooled": _pooled(rows), "per_image": rows}
        p = out[part]["pooled"]
        print(f"v{version} rw {rate_weight:g} {part}: ratio {p['ratio']:.2f}, SSIM {p['ssim']:.4f}, "
              f"PSNR {p['psnr']:.2f} ({p['images']} images)", flush=True)
    return out


def report(results: list[dict], command: str, info: dict, crop: int, model_id: str) -> list[str]:
    md = ["# VQVAE-FPN: training against validation rasters (the generalization gap)", ""]
    md += provenance_md(command, info)
    md += [f"Model `{model_id}`; training = every S2 10 m training raster of the split (centre crop of at most "
           f"{crop} px), validation = the held-out OSCD cities, whole. Ratio pooled (raw / file bytes), SSIM the "
           "mean over images of each image's mean over bands, PSNR from the pooled MSE at peak 10000. "
           "Whole `.eoz` files, 512 px tiles.", ""]
    rows = []
    for r in results:
        t, v = r["train"]["pooled"], r["validation"]["pooled"]
        rows.append([f"v{r['version']}", f"{r['rate_weight']:g}", f"{t['ratio']:.2f}", f"{v['ratio']:.2f}",
                     f"{t['ssim']:.4f}", f"{v['ssim']:.4f}", f"{v['ssim'] - t['ssim']:+.4f}",
                     f"{t['psnr']:.2f}", f"{v['psnr']:.2f}"])
    md += table(["version", "rate weight", "ratio train", "ratio validation", "SSIM train", "SSIM validation",
                 "SSIM gap (val - train)", "PSNR train", "PSNR validation"], rows)
    md += ["## Per validation image", ""]
    rows = [[f"v{r['version']}", f"{r['rate_weight']:g}", row["image"], f"{row['ratio']:.1f}", f"{row['ssim']:.4f}",
             f"{row['psnr']:.2f}"] for r in results for row in r["validation"]["per_image"]]
    md += table(["version", "rate weight", "image", "ratio", "SSIM", "PSNR"], rows)
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vqvae-fpn-s2-10m")
    parser.add_argument("--versions", nargs="+", help="default: every published version")
    parser.add_argument("--rate-weights", nargs="+", type=float, default=[0.0])
    parser.add_argument("--crop", type=int, default=CROP)
    parser.add_argument("--name", default="vq_generalization")
    args = parser.parse_args()
    parts = {"train": load_images(args.crop, None, "train"), "validation": load_images(None, None)}
    versions = args.versions or ModelStore().versions(args.model)
    results = [measure(args.model, v, parts, w) for v in versions for w in args.rate_weights]
    info, command = machine(), command_line()
    write_outputs(RESULTS_DIR, args.name, report(results, command, info, args.crop, args.model),
                  {"machine": info, "command": command, "crop": args.crop, "results": results})


if __name__ == "__main__":
    main()
