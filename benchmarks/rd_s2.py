"""Rate-distortion of the learned codecs against JPEG 2000 and JPEG-XL on the held-out cities.

Every figure follows DESIGN.md "Metrics", measured on the S2_10M validation rasters (cities
never seen in training), so the learned models are judged on data they were not fitted to.
Per image, each learned model is run through ``eoz.evaluation.evaluate`` and JPEG 2000
(plain and with the spectral KLT) is bisected to that image's ``.eoz`` file size, so the
comparison is at equal bytes. Classical curves (JPEG 2000 over target ratios, JPEG-XL over
distances) place those points in context.

Aggregation over images: bpp per band = 8 sum(bytes) / sum(h w bands); ratio = sum(raw
bytes) / sum(bytes); PSNR from the pooled MSE (all squared errors over all samples, peak
10000); SSIM = mean over images of each image's mean over bands.

JPEG-XL: libjxl (through imagecodecs) takes 1 to 4 interleaved channels as L, LA, RGB or
RGBA. Four bands as RGBA would code the NIR band as alpha, which libjxl keeps lossless,
and the other three through its perceptual colour transform; so each band is coded as
its own single-channel 16-bit image and the four codestreams' bytes are summed.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import imagecodecs
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: E402

from common import (  # noqa: E402
    RESULTS_DIR, command_line, machine, provenance_md, table, write_outputs)
from eoz import datasets, jpeg2000, metrics  # noqa: E402
from eoz.codecs import codec_for_model  # noqa: E402
from eoz.errors import InputError, UnknownModelError  # noqa: E402
from eoz.evaluation import S2_PEAK, evaluate  # noqa: E402
from eoz.raster import read_meta, window_transform  # noqa: E402
from eoz.registry import ModelEntry, ModelStore  # noqa: E402

TARGET_RATIO = 35.0
TARGET_SSIM = 0.96
DEFAULT_RATIOS = (10, 15, 20, 30, 40, 60, 80, 120, 200)
DEFAULT_DISTANCES = (0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16)
# the high-fidelity range archives care about (issue: PSNR 42-58 dB at peak 10000)
FIDELITY_PSNRS = (40, 42, 45, 48, 51, 54, 56, 58)
FIDELITY_RANGE = (42.0, 58.0)
HYPERPRIOR_CODES = (0, 32, 64, 96, 128, 160, 192, 224, 255)
TARGET_BD_AGAINST_KLT = -10.0
RATE_WEIGHTS = (0.6, 1.5, 3.0)


def load_images(crop: int | None, only: list[str] | None) -> list[dict]:
    """Validation rasters as uint16 (bands, h, w) with their meta, optionally centre-cropped."""
    root = datasets.data_dir()
    bands = datasets.S2_10M.bands
    images = []
    for rel in datasets.S2_10M.validation:
        name = Path(rel).stem
        if only and not any(o in name for o in only):
            continue
        path = root / rel
        array = datasets.load_bands(path, bands).astype(np.uint16)
        meta = replace(read_meta(path), count=len(bands), band_names=list(bands))
        if crop:
            _, h, w = array.shape
            r0, c0 = max(h - crop, 0) // 2, max(w - crop, 0) // 2
            array = np.ascontiguousarray(array[:, r0:r0 + crop, c0:c0 + crop])
            meta = replace(meta, height=array.shape[1], width=array.shape[2],
                           transform=window_transform(meta.transform, c0, r0))
        images.append({"name": name, "path": rel, "array": array, "meta": meta})
    if not images:
        raise SystemExit(f"no validation image matches {only}")
    return images


LEARNED = ("vqvae-fpn", "hyperprior")


def learned_models(store: ModelStore, wanted: list[str] | None) -> list[ModelEntry]:
    """The S2 10 m learned models: those asked for (id or id:version), else the newest of each."""
    if wanted:
        try:
            entries = [store.get(*spec.split(":", 1)) for spec in wanted]
        except UnknownModelError as e:
            raise SystemExit(str(e)) from None
    else:
        newest = {}
        for entry in store.entries():
            newest[entry.model_id] = store.get(entry.model_id)
        entries = list(newest.values())
    bands = list(datasets.S2_10M.bands)
    for e in entries:
        if wanted and (e.codec not in LEARNED or e.bands != bands):
            raise SystemExit(f"{e.model_id}:{e.version} is codec {e.codec} on bands {e.bands}, "
                             f"not one of {LEARNED} on {bands}")
    return [e for e in entries if e.codec in LEARNED and e.bands == bands]


def measure(array: np.ndarray, recon: np.ndarray, nbytes: int) -> dict:
    """Size and distortion of one reconstruction, with the squared-error sum for pooling."""
    bands, h, w = array.shape
    ssim = metrics.ssim_per_band(array, recon)
    sse = float(np.sum(np.square(array.astype(np.float64) - recon.astype(np.float64))))
    return {"bytes": nbytes, "raw_bytes": array.nbytes, "samples": bands * h * w,
            "compression_ratio": array.nbytes / nbytes,
            "bpp_per_band": metrics.bits_per_pixel_per_band(nbytes, h, w, bands),
            "sse": sse, "psnr": metrics.psnr(array, recon, S2_PEAK),
            "psnr_per_band": [metrics.psnr(array[b], recon[b], S2_PEAK) for b in range(bands)],
            "ssim": float(np.mean(ssim)), "ssim_per_band": ssim}


def j2k_to_size(array: np.ndarray, nbytes: int, klt: bool) -> dict:
    """JPEG 2000 bisected to fit nbytes (codestream + params JSON); flags a budget not met."""
    start = time.perf_counter()
    stream, params = jpeg2000.encode_to_size(array, nbytes, klt=klt)
    seconds = time.perf_counter() - start
    size = len(stream) + jpeg2000.params_nbytes(params)
    point = measure(array, jpeg2000.decode(stream, params), size)
    point.update(target_bytes=nbytes, fits_budget=size <= nbytes, quality=params["quality"],
                 search_seconds=seconds)
    return point


def jxl_point(array: np.ndarray, distance: float, effort: int) -> dict:
    """Each band as one 16-bit greyscale JPEG-XL image; sizes summed."""
    start = time.perf_counter()
    streams = [imagecodecs.jpegxl_encode(band, distance=distance, effort=effort) for band in array]
    encoded = time.perf_counter()
    recon = np.stack([imagecodecs.jpegxl_decode(s) for s in streams])
    decoded = time.perf_counter()
    if recon.shape != array.shape or recon.dtype != array.dtype:
        raise RuntimeError(f"JPEG-XL returned {recon.dtype} {recon.shape} for "
                           f"{array.dtype} {array.shape}")
    point = measure(array, recon, sum(len(s) for s in streams))
    point.update(distance=distance, encode_seconds=encoded - start,
                 decode_seconds=decoded - encoded)
    return point


def aggregate(points: list[dict]) -> dict:
    """Pooled figures over images (see the module docstring)."""
    nbytes = sum(p["bytes"] for p in points)
    raw = sum(p["raw_bytes"] for p in points)
    samples = sum(p["samples"] for p in points)
    mse = sum(p["sse"] for p in points) / samples
    return {"bytes": nbytes, "raw_bytes": raw, "compression_ratio": raw / nbytes,
            "bpp_per_band": 8.0 * nbytes / samples,
            "psnr": math.inf if mse == 0 else 10 * math.log10(S2_PEAK ** 2 / mse),
            "ssim": float(np.mean([p["ssim"] for p in points]))}


def run_rate_curve(entry: ModelEntry, store: ModelStore, images: list[dict], tile_size: int,
                   rate_weights: list[float]) -> list[dict]:
    """The VQ model's further points: codes chosen by distance + weight x bits (--rate-weight)."""
    curve = []
    for weight in rate_weights:
        codec = codec_for_model(entry.model_id, entry.version, store, rate_weight=weight)
        points = [_evaluated(image, codec, tile_size) for image in images]
        curve.append({"rate_weight": weight, "per_image": points, "aggregate": aggregate(points)})
        _print_point(f"{entry.model_id} rate weight {weight:g}", curve[-1]["aggregate"])
    return curve


def run_learned(entry: ModelEntry, store: ModelStore, images: list[dict], tile_size: int) -> dict:
    codec = codec_for_model(entry.model_id, entry.version, store)
    per_image, plain, klt = [], [], []
    for image in images:
        array = image["array"]
        result = _evaluated(image, codec, tile_size)
        per_image.append(result)
        plain.append(j2k_to_size(array, result["bytes"], klt=False) | {"image": image["name"]})
        klt.append(j2k_to_size(array, result["bytes"], klt=True) | {"image": image["name"]})
        print(f"  {image['name']}: {result['bytes']} B, ratio {result['compression_ratio']:.1f}, "
              f"PSNR {result['psnr']:.2f}, SSIM {result['ssim']:.4f} | same-size JPEG 2000 "
              f"SSIM {plain[-1]['ssim']:.4f}, +KLT {klt[-1]['ssim']:.4f}", flush=True)
    fixed = sum(r["index_bytes_fixed_length"] for r in per_image)
    coded = sum(r["index_bytes_entropy_coded"] for r in per_image)
    overhead = sum(r["bytes"] - r["index_bytes_entropy_coded"] for r in per_image)
    raw = sum(r["raw_bytes"] for r in per_image)
    return {"model_id": entry.model_id, "version": entry.version,
            "weights_sha256": entry.weights_sha256, "tile_size": tile_size,
            "per_image": per_image, "aggregate": aggregate(per_image),
            "index": {"entropy_coded_bytes": coded, "fixed_length_bytes": fixed,
                      "container_overhead_bytes": overhead,
                      "ratio_entropy_coded": raw / (overhead + coded),
                      "ratio_fixed_length": raw / (overhead + fixed)},
            "jpeg2000_same_size": {"per_image": plain, "aggregate": aggregate(plain)},
            "jpeg2000_klt_same_size": {"per_image": klt, "aggregate": aggregate(klt)}}


def _evaluated(image: dict, codec, tile_size: int) -> dict:
    array = image["array"]
    result = evaluate(array, image["meta"], codec, tile_size, S2_PEAK)
    # evaluate reports PSNR, not the error sum that pooling needs; PSNR gives it back.
    result["sse"] = array.size * S2_PEAK ** 2 / 10 ** (result["psnr"] / 10)
    result["samples"] = array.size
    result["image"] = image["name"]
    return result


def run_hyperprior(entry: ModelEntry, store: ModelStore, images: list[dict], tile_size: int,
                   codes: list[int], psnrs: list[float]) -> dict:
    """The multirate model two ways: one point per 8-bit lambda code (the learned layer alone,
    one lambda everywhere), and one per target PSNR (fixed quality per tile, closed loop and
    residual layer included: what a user asking for that PSNR gets)."""
    from eoz.quality import QualityTarget, lambda_of_code

    def point(target: QualityTarget, label: str, **extra) -> dict:
        codec = codec_for_model(entry.model_id, entry.version, store, target=target)
        points = [_evaluated(image, codec, tile_size) for image in images]
        _print_point(f"{entry.model_id} {label}", aggregate(points))
        return {**extra, "per_image": points, "aggregate": aggregate(points)}

    curve = [point(QualityTarget(lmbda=float(lambda_of_code(c))), f"lambda code {c}", lambda_code=c,
                   **{"lambda": float(lambda_of_code(c))}) for c in codes]
    targets = [point(QualityTarget(psnr=p, peak=S2_PEAK), f"target {p:g} dB", target_psnr=p) for p in psnrs]
    return {"model_id": entry.model_id, "version": entry.version, "weights_sha256": entry.weights_sha256,
            "tile_size": tile_size, "curve": curve, "target_curve": targets}


def run_j2k_psnr_curve(images: list[dict], psnrs: list[float], klt: bool) -> list[dict]:
    """JPEG 2000 bisected to each target PSNR per image (the fixed-quality classical baseline)."""
    curve = []
    for psnr in psnrs:
        points = []
        for im in images:
            stream, params = jpeg2000.encode_to_psnr(im["array"], psnr, S2_PEAK, klt=klt)
            size = len(stream) + jpeg2000.params_nbytes(params)
            points.append(measure(im["array"], jpeg2000.decode(stream, params), size) | {"image": im["name"]})
        curve.append({"target_psnr": psnr, "per_image": points, "aggregate": aggregate(points)})
        _print_point(f"JPEG 2000{' +KLT' if klt else ''} at {psnr:g} dB", curve[-1]["aggregate"])
    return curve


def fidelity_bd_rates(hyperprior: list[dict], curves: dict) -> dict:
    """BD-rate of each hyperprior against JPEG 2000 (plain, +KLT) within FIDELITY_RANGE."""
    def series(points):
        kept = [p for p in points if FIDELITY_RANGE[0] - 2 <= p["psnr"] <= FIDELITY_RANGE[1] + 2]
        return [p["bpp_per_band"] for p in kept], [p["psnr"] for p in kept]

    out = {}
    for model in hyperprior:
        test = series([p["aggregate"] for p in model["target_curve"]])
        row = {}
        for name in ("jpeg2000_psnr", "jpeg2000_klt_psnr"):
            try:
                row[name] = metrics.bd_rate(*series([p["aggregate"] for p in curves[name]]), *test)
            except InputError as e:
                row[name] = f"not computable: {e}"
        row["psnr_range"] = [min(test[1], default=None), max(test[1], default=None)]
        out[f"{model['model_id']} v{model['version']}"] = row
    return out


def run_j2k_curve(images: list[dict], ratios: list[float], klt: bool) -> list[dict]:
    curve = []
    for ratio in ratios:
        points = [j2k_to_size(im["array"], int(im["array"].nbytes / ratio), klt)
                  | {"image": im["name"]} for im in images]
        curve.append({"target_ratio": ratio, "per_image": points, "aggregate": aggregate(points)})
        _print_point(f"JPEG 2000{' +KLT' if klt else ''} 1:{ratio:g}", curve[-1]["aggregate"])
    return curve


def run_jxl_curve(images: list[dict], distances: list[float], effort: int) -> list[dict]:
    curve = []
    for distance in distances:
        points = [jxl_point(im["array"], distance, effort) | {"image": im["name"]} for im in images]
        curve.append({"distance": distance, "per_image": points, "aggregate": aggregate(points)})
        _print_point(f"JPEG-XL d={distance:g}", curve[-1]["aggregate"])
    return curve


def _print_point(label: str, agg: dict) -> None:
    print(f"  {label}: ratio {agg['compression_ratio']:.1f}, {agg['bpp_per_band']:.3f} bpp/band, "
          f"PSNR {agg['psnr']:.2f}, SSIM {agg['ssim']:.4f}", flush=True)


def bd_rates(curves: dict) -> dict:
    """BD-rate (PSNR, bpp) of each classical curve against plain JPEG 2000, where computable."""
    def series(curve):
        return ([p["aggregate"]["bpp_per_band"] for p in curve],
                [p["aggregate"]["psnr"] for p in curve])

    anchor = series(curves["jpeg2000"])
    out = {}
    for name in ("jpeg2000_klt", "jpegxl"):
        if curves.get(name):
            try:
                out[name] = metrics.bd_rate(*anchor, *series(curves[name]))
            except InputError as e:
                out[name] = f"not computable: {e}"
    return out


CURVE_STYLES = {"jpeg2000": ("JPEG 2000", "tab:blue", "o"),
                "jpeg2000_klt": ("JPEG 2000 + KLT", "tab:orange", "s"),
                "jpegxl": ("JPEG-XL (4 x 1 band)", "tab:green", "^")}


def plot(path: Path, learned: list[dict], curves: dict, hyperprior: list[dict]) -> None:
    """PSNR and SSIM against bpp/band: classical curves, each model and its same-size JPEG 2000."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6))
    panels = ((axes[0], "psnr", "PSNR (dB, peak 10000)"),
              (axes[1], "ssim", "SSIM (mean over bands)"))
    for ax, key, label in panels:
        for name, (legend, colour, marker) in CURVE_STYLES.items():
            points = [p["aggregate"] for p in curves.get(name, [])]
            if points:
                ax.plot([p["bpp_per_band"] for p in points], [p[key] for p in points],
                        marker=marker, color=colour, label=legend, markersize=4, linewidth=1.2)
        for model in hyperprior:
            for name, style, what in (("curve", "-", "lambda ladder"), ("target_curve", ":", "PSNR targets")):
                points = [p["aggregate"] for p in model[name]]
                ax.plot([p["bpp_per_band"] for p in points], [p[key] for p in points], marker="D",
                        color="tab:red", markersize=4, linewidth=1.6, linestyle=style,
                        label=f"{model['model_id']} v{model['version']} ({what})")
        for i, model in enumerate(learned):
            colour = plt.cm.Set1(i % 9)
            name = f"{model['model_id']} v{model['version']}"
            points = [model["aggregate"]] + [p["aggregate"] for p in model.get("rate_curve", [])]
            if len(points) > 1:
                ax.plot([p["bpp_per_band"] for p in points], [p[key] for p in points], color=colour,
                        linewidth=1, linestyle="--", marker=".", label=f"{name}, rate weights 0-"
                        f"{model['rate_curve'][-1]['rate_weight']:g}")
            for agg, marker, legend in (
                    (model["aggregate"], "*", name),
                    (model["jpeg2000_same_size"]["aggregate"], "o", f"JPEG 2000 @ size of {name}"),
                    (model["jpeg2000_klt_same_size"]["aggregate"], "s",
                     f"JPEG 2000+KLT @ size of {name}")):
                star = marker == "*"
                ax.plot(agg["bpp_per_band"], agg[key], linestyle="none", marker=marker,
                        markersize=14 if star else 8, markerfacecolor=colour if star else "none",
                        markeredgecolor=colour, markeredgewidth=1.5, label=legend)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator([0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 4]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.axvline(16 / TARGET_RATIO, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("bits per pixel per band (whole file)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].axhline(TARGET_SSIM, color="grey", linestyle=":", linewidth=1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.suptitle("Sentinel-2 10 m validation cities (B02 B03 B04 B08, uint16); "
                 f"dotted: 1:{TARGET_RATIO:g} and SSIM {TARGET_SSIM}")
    fig.tight_layout(rect=(0, 0.06 + 0.035 * math.ceil(len(labels) / 3), 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _row(label: str, agg: dict, extra: str = "") -> list:
    return [label, f"{agg['compression_ratio']:.2f}", f"{agg['bpp_per_band']:.4f}",
            f"{agg['psnr']:.2f}", f"{agg['ssim']:.4f}", extra]


def _model_name(m: dict) -> str:
    return f"{m['model_id']} v{m['version']}"


def _md_intro(data: dict, images: list[dict]) -> list[str]:
    s = data["settings"]
    extent = f"central {s['crop']}x{s['crop']} crop of each" if s["crop"] else "whole images"
    md = ["# Rate-distortion on the Sentinel-2 10 m validation split", ""]
    md += provenance_md(data["command"], data["machine"])
    md += [f"Images (held-out cities, bands B02 B03 B04 B08, uint16, {extent}):", ""]
    md += [f"- `{im['path']}`: {im['meta'].height} x {im['meta'].width}" for im in images] + [""]
    md += ["Definitions (DESIGN.md Metrics): ratio = sum of raw bytes (h w bands 2) / sum of coded "
           "bytes; bpp/band = 8 sum(bytes) / sum(h w bands); PSNR from the pooled MSE over all "
           "images, bands and pixels, peak 10000; SSIM per band (Gaussian 11x11, sigma 1.5, data "
           "range = the band's max - min), averaged over bands, then over images.",
           "",
           "Sizes counted: learned codecs, the whole `.eoz` file (header, tile table, tiles; tile "
           f"size {s['tile_size']}); JPEG 2000 (OpenJPEG, one untiled codestream for all bands of "
           "the image, mct off), the codestream plus its parameters as compact JSON (dtype, "
           "shape, quality, and the KLT matrix and means when used); JPEG-XL (libjxl, effort "
           f"{s['jxl_effort']}), the sum of four single-band 16-bit codestreams: libjxl takes four "
           "channels only as RGBA, where the fourth (NIR) would be coded losslessly as alpha and "
           "the others through its perceptual colour transform.",
           ""]
    return md


def _md_learned(data: dict) -> list[str]:
    md = ["## Learned codecs and JPEG 2000 at the same file size", ""]
    if not data["learned"]:
        return md + [f"No VQVAE-FPN model on bands B02 B03 B04 B08 in "
                     f"`{data['settings']['model_store']}`; only the classical curves were "
                     "measured.", ""]
    rows = []
    for m in data["learned"]:
        rows.append(_row(f"**{_model_name(m)}**", m["aggregate"]))
        for label, key in (("JPEG 2000", "jpeg2000_same_size"),
                           ("JPEG 2000 + KLT", "jpeg2000_klt_same_size")):
            over = sum(not p["fits_budget"] for p in m[key]["per_image"])
            note = (f"{over} image(s) could not fit the budget" if over
                    else "each image within its budget")
            rows.append(_row(f"{label} @ size of {_model_name(m)}", m[key]["aggregate"], note))
    md += table(["codec", "ratio", "bpp/band", "PSNR (dB)", "SSIM", "note"], rows)

    md += ["Index maps, summed over images: entropy-coded tile payloads against fixed-length "
           "indices (w h log2 K / 8 bytes per level); the rest of the file (header and tile "
           "table) is added to both ratios.", ""]
    rows = []
    for m in data["learned"]:
        ix = m["index"]
        rows.append([_model_name(m), ix["entropy_coded_bytes"], ix["fixed_length_bytes"],
                     f"{1 - ix['entropy_coded_bytes'] / ix['fixed_length_bytes']:.1%}",
                     ix["container_overhead_bytes"], f"{ix['ratio_entropy_coded']:.2f}",
                     f"{ix['ratio_fixed_length']:.2f}"])
    md += table(["model", "index bytes, entropy-coded", "index bytes, fixed-length", "saving",
                 "header + tile table bytes", "ratio, entropy-coded", "ratio, fixed-length"], rows)

    md += ["Per image (PSNR in dB):", ""]
    rows = []
    for m in data["learned"]:
        for r, p, k in zip(m["per_image"], m["jpeg2000_same_size"]["per_image"],
                           m["jpeg2000_klt_same_size"]["per_image"]):
            rows.append([_model_name(m), r["image"], r["bytes"], f"{r['compression_ratio']:.1f}",
                         f"{r['ssim']:.4f}", f"{p['ssim']:.4f}", f"{k['ssim']:.4f}",
                         f"{r['psnr']:.2f}", f"{p['psnr']:.2f}", f"{k['psnr']:.2f}"])
    md += table(["model", "image", "bytes", "ratio", "SSIM model", "SSIM J2K", "SSIM J2K+KLT",
                 "PSNR model", "PSNR J2K", "PSNR J2K+KLT"], rows)
    return md


def _md_targets(data: dict) -> list[str]:
    md = ["## Targets", "",
          f"Target: ratio >= {TARGET_RATIO:g} with mean SSIM >= {TARGET_SSIM} "
          "(aggregated as above).", ""]
    for m in data["learned"]:
        agg = m["aggregate"]
        met = agg["compression_ratio"] >= TARGET_RATIO and agg["ssim"] >= TARGET_SSIM
        md.append(f"- {_model_name(m)}: ratio {agg['compression_ratio']:.2f}, SSIM "
                  f"{agg['ssim']:.4f}: **{'met' if met else 'not met'}**.")
        for p in m.get("rate_curve", []):
            a = p["aggregate"]
            ok = a["compression_ratio"] >= TARGET_RATIO and a["ssim"] >= TARGET_SSIM
            md.append(f"  - with --rate-weight {p['rate_weight']:g}: ratio {a['compression_ratio']:.2f}, "
                      f"SSIM {a['ssim']:.4f}, PSNR {a['psnr']:.2f} dB: **{'met' if ok else 'not met'}**.")
        for label, key in (("JPEG 2000", "jpeg2000_same_size"),
                           ("JPEG 2000 + KLT", "jpeg2000_klt_same_size")):
            ref = m[key]
            diff = agg["ssim"] - ref["aggregate"]["ssim"]
            above = sum(r["ssim"] > p["ssim"] for r, p in zip(m["per_image"], ref["per_image"]))
            md.append(f"  - against {label} at the same size: SSIM "
                      f"{'above' if diff > 0 else 'below'} by {abs(diff):.4f} ({agg['ssim']:.4f} "
                      f"vs {ref['aggregate']['ssim']:.4f}), above on {above} of "
                      f"{len(m['per_image'])} images; PSNR {agg['psnr']:.2f} vs "
                      f"{ref['aggregate']['psnr']:.2f} dB.")
    for name, (label, _, _) in CURVE_STYLES.items():
        ok = [p["aggregate"] for p in data["curves"].get(name, [])
              if p["aggregate"]["ssim"] >= TARGET_SSIM]
        best = max(ok, key=lambda a: a["compression_ratio"], default=None)
        if best is None:
            md.append(f"- {label} curve: no measured point reaches SSIM {TARGET_SSIM}.")
            continue
        verdict = "meets" if best["compression_ratio"] >= TARGET_RATIO else "misses"
        md.append(f"- {label} curve: highest measured ratio with SSIM >= {TARGET_SSIM} is "
                  f"{best['compression_ratio']:.2f} (SSIM {best['ssim']:.4f}); {verdict} the "
                  "target at a measured point.")
    return md + [""]


def _md_curves(data: dict) -> list[str]:
    curves = data["curves"]
    rows = [_row("JPEG 2000", p["aggregate"], f"target 1:{p['target_ratio']:g}")
            for p in curves["jpeg2000"]]
    rows += [_row("JPEG 2000 + KLT", p["aggregate"], f"target 1:{p['target_ratio']:g}")
             for p in curves["jpeg2000_klt"]]
    rows += [_row("JPEG-XL", p["aggregate"], f"distance {p['distance']:g}")
             for p in curves.get("jpegxl", [])]
    md = ["## Classical curves", ""]
    md += table(["codec", "ratio", "bpp/band", "PSNR (dB)", "SSIM", "setting"], rows)
    if data["jpegxl_skipped"]:
        md += [f"JPEG-XL skipped: {data['jpegxl_skipped']}.", ""]
    if data["bd_rate"]:
        md += ["BD-rate against plain JPEG 2000 (bpp/band against pooled PSNR; negative = fewer "
               "bits): " + "; ".join(f"{k}: " + (f"{v:+.1f} %" if isinstance(v, float) else v)
                                     for k, v in data["bd_rate"].items()), ""]
    return md


def _md_fidelity(data: dict) -> list[str]:
    curves = data["curves"]
    if not curves.get("jpeg2000_psnr"):
        return []
    md = ["## High-fidelity range: hyperprior against JPEG 2000 at equal PSNR", "",
          f"JPEG 2000 is bisected per image to each target PSNR; the hyperprior runs once per 8-bit "
          f"lambda code (its learned layer alone) and once per target PSNR per tile (fixed-quality "
          f"mode: closed loop, and the residual layer where the learned layer cannot reach the "
          f"target). BD-rate (bpp/band against pooled PSNR, cubic fits) uses the target points and is taken "
          f"over the PSNR range both curves cover, using points within "
          f"{FIDELITY_RANGE[0] - 2:g}-{FIDELITY_RANGE[1] + 2:g} dB. Target: at most "
          f"{TARGET_BD_AGAINST_KLT:+g} % against JPEG 2000 + KLT.", ""]
    rows = []
    for model in data["hyperprior"]:
        for p in model["curve"]:
            rows.append(_row(f"{model['model_id']} v{model['version']}", p["aggregate"],
                             f"lambda code {p['lambda_code']} (lambda {p['lambda']:.0f}), learned layer only"))
        for p in model["target_curve"]:
            rows.append(_row(f"{model['model_id']} v{model['version']}", p["aggregate"],
                             f"target {p['target_psnr']:g} dB per tile (closed loop + residual)"))
    for name, label in (("jpeg2000_psnr", "JPEG 2000"), ("jpeg2000_klt_psnr", "JPEG 2000 + KLT")):
        rows += [_row(label, p["aggregate"], f"target {p['target_psnr']:g} dB per image") for p in curves[name]]
    md += table(["codec", "ratio", "bpp/band", "PSNR (dB)", "SSIM", "setting"], rows)
    for model, row in data["fidelity_bd_rate"].items():
        parts = []
        for name, label in (("jpeg2000_psnr", "JPEG 2000"), ("jpeg2000_klt_psnr", "JPEG 2000 + KLT")):
            v = row[name]
            parts.append(f"against {label}: " + (f"{v:+.1f} %" if isinstance(v, float) else v))
        klt = row["jpeg2000_klt_psnr"]
        met = isinstance(klt, float) and klt <= TARGET_BD_AGAINST_KLT
        lo, hi = row["psnr_range"]
        span = f"{lo:.1f}-{hi:.1f} dB" if lo is not None else "no points"
        md.append(f"- {model} (its points in range: {span}): " + "; ".join(parts)
                  + f". Target: **{'met' if met else 'not met'}**.")
    return md + [""]


def markdown(data: dict, images: list[dict]) -> list[str]:
    return (_md_intro(data, images) + _md_learned(data) + _md_targets(data) + _md_fidelity(data)
            + _md_curves(data) + ["![rate-distortion](rd_s2.png)", "", "Raw per-image numbers: `rd_s2.json`."])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", metavar="ID[:VERSION]",
                        help="learned models to evaluate (default: newest version of every "
                             "vqvae-fpn model on B02 B03 B04 B08 in the store)")
    parser.add_argument("--crop", type=int, help="use the central NxN of each image (quick runs)")
    parser.add_argument("--images", nargs="+", metavar="NAME",
                        help="keep only validation files whose name contains one of these")
    parser.add_argument("--tile-size", type=int, default=512,
                        help="tile size of the learned codecs")
    parser.add_argument("--ratios", type=float, nargs="+", default=DEFAULT_RATIOS,
                        help="JPEG 2000 curve: target compression ratios against raw uint16")
    parser.add_argument("--distances", type=float, nargs="+", default=DEFAULT_DISTANCES,
                        help="JPEG-XL curve: butteraugli distances")
    parser.add_argument("--jxl-effort", type=int, default=7, help="libjxl effort 1..9")
    parser.add_argument("--psnrs", type=float, nargs="*", default=FIDELITY_PSNRS,
                        help="JPEG 2000 at these target PSNRs, for BD-rates in the high-fidelity range "
                             "(none: skip)")
    parser.add_argument("--rate-weights", type=float, nargs="*", default=RATE_WEIGHTS,
                        help="VQVAE-FPN curve: --rate-weight values besides 0 (none: the one point)")
    parser.add_argument("--lambda-codes", type=int, nargs="+", default=HYPERPRIOR_CODES,
                        help="hyperprior curve: 8-bit lambda codes (0..255)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="folder for rd_s2.{md,png,json}")
    args = parser.parse_args(argv)

    store = ModelStore()
    images = load_images(args.crop, args.images)
    print(f"{len(images)} validation image(s): " + ", ".join(
        f"{im['name']} {im['meta'].height}x{im['meta'].width}" for im in images), flush=True)
    models = learned_models(store, args.models)
    if not models:
        print(f"no learned model on {list(datasets.S2_10M.bands)} in {store.root}: "
              "curves only", flush=True)

    learned, hyperprior = [], []
    for entry in models:
        print(f"{entry.model_id} v{entry.version}:", flush=True)
        if entry.codec == "hyperprior":
            hyperprior.append(run_hyperprior(entry, store, images, args.tile_size, args.lambda_codes, args.psnrs))
            continue
        learned.append(run_learned(entry, store, images, args.tile_size))
        _print_point("aggregate", learned[-1]["aggregate"])
        learned[-1]["rate_curve"] = run_rate_curve(entry, store, images, args.tile_size, args.rate_weights)

    curves = {}
    print("JPEG 2000 curves:", flush=True)
    curves["jpeg2000"] = run_j2k_curve(images, args.ratios, klt=False)
    curves["jpeg2000_klt"] = run_j2k_curve(images, args.ratios, klt=True)
    if args.psnrs:
        curves["jpeg2000_psnr"] = run_j2k_psnr_curve(images, args.psnrs, klt=False)
        curves["jpeg2000_klt_psnr"] = run_j2k_psnr_curve(images, args.psnrs, klt=True)
    jxl_skipped = None
    if imagecodecs.JPEGXL.available:
        print("JPEG-XL curve:", flush=True)
        curves["jpegxl"] = run_jxl_curve(images, args.distances, args.jxl_effort)
    else:
        jxl_skipped = "imagecodecs was built without JPEG-XL"
        print(f"JPEG-XL skipped: {jxl_skipped}", flush=True)

    data = {"command": command_line(), "machine": machine(),
            "settings": {"crop": args.crop, "tile_size": args.tile_size, "peak": S2_PEAK,
                         "jxl_effort": args.jxl_effort, "model_store": str(store.root),
                         "data_dir": str(datasets.data_dir())},
            "images": [{"name": im["name"], "path": im["path"],
                        "shape": list(im["array"].shape)} for im in images],
            "learned": learned, "hyperprior": hyperprior, "curves": curves,
            "jpegxl_skipped": jxl_skipped, "bd_rate": bd_rates(curves),
            "fidelity_bd_rate": fidelity_bd_rates(hyperprior, curves) if args.psnrs else {}}
    args.out.mkdir(parents=True, exist_ok=True)
    plot(args.out / "rd_s2.png", learned, curves, hyperprior)
    write_outputs(args.out, "rd_s2", markdown(data, images), data)


if __name__ == "__main__":
    main()
