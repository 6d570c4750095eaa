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

The wavelet codec (``wavelet-hyperprior``, any raster) gets one section per sensor split
(``WAVELET_SENSORS``): the codec at target PSNRs chosen per sensor from its peak so the
points span about 3:1 to 30:1, against JPEG 2000 and JPEG 2000 + KLT bisected to the same
target PSNRs (``jpeg2000.encode_to_psnr``), and the BD-rate of each sensor's pooled curve.
Single-scene splits (``train_rows``) are measured on their validation rows only. Errors are
measured over the bands with data, and within them over valid pixels: nodata pixels (the
split's nodata value) come back exactly from eoz and are no data for either codec.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from common import RESULTS_DIR, command_line, machine, provenance_md, table, write_outputs
from eoz import datasets, jpeg2000, metrics, spectral
from eoz.codecs import DEFAULT_TILE_SIZE, codec_for_model
from eoz.container import EozReader
from eoz.errors import InputError, UnknownModelError
from eoz.quality import QualityTarget
from eoz.raster import read_meta, window_transform
from eoz.registry import ModelStore
from eoz.scene import compress_array, decompress_array

SAR_STEP_DB = 0.01   # the JPEG 2000 baseline's integer step for dB values
WAVELET_MODEL = "wavelet-hyperprior"
WAVELET_TILE = 512
# Target PSNRs per split, from its peak: each list spans about 30:1 to 3:1 (raw bytes of the
# split's dtype over file bytes) on the split's validation rasters.
WAVELET_SENSORS = (
    (datasets.S2_20M, (42.0, 48.0, 54.0, 60.0, 66.0, 72.0)),
    (datasets.LANDSAT8, (38.0, 44.0, 50.0, 56.0, 62.0, 68.0)),
    (datasets.S2_L1C_13, (48.0, 54.0, 60.0, 66.0, 72.0, 78.0)),
    (datasets.ENMAP_HSI, (32.0, 38.0, 44.0, 50.0, 56.0, 62.0)),
    (datasets.S1_DB, (30.0, 38.0, 46.0, 54.0, 62.0, 70.0)),
    (datasets.S1_GRD_DN, (72.0, 78.0, 84.0, 90.0, 96.0, 102.0)),
    (datasets.RGBN_UINT8, (25.0, 29.0, 33.0, 37.0, 41.0, 45.0)),
    (datasets.S2_60M, (45.0, 52.0, 59.0, 66.0, 73.0, 80.0)),
)


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
    """Validation rasters in the split's dtype, with their meta: of a single-scene split
    (train_rows), the rows below the training part; nodata as the split declares it."""
    images = []
    for rel in split.validation:
        path = datasets.data_dir() / rel
        meta = read_meta(path)
        array = datasets.load_bands(path, split.bands).astype(split.dtype)
        row0 = 0 if split.train_rows is None else round(array.shape[1] * split.train_rows)
        array = np.ascontiguousarray(array[:, row0:])
        meta = replace(meta, count=len(array), band_names=list(split.bands) or meta.band_names,
                       height=array.shape[1],
                       transform=window_transform(meta.transform, 0, row0) if row0 else meta.transform,
                       nodata=meta.nodata if split.nodata is None else split.nodata)
        usable = spectral.usable_bands(array, split.nodata)
        images.append({"name": Path(rel).stem, "array": array, "meta": meta, "usable": usable,
                       "rows": [row0, row0 + array.shape[1]]})
    return images


def power_stats_error(array: np.ndarray, recon: np.ndarray) -> dict:
    """Largest relative error over bands of the mean and std of linear power 10^(dB/10)."""
    p, q = (10 ** (a.astype(np.float64) / 10) for a in (array, recon))
    mean = np.abs(q.mean(axis=(1, 2)) / p.mean(axis=(1, 2)) - 1)
    std = np.abs(q.std(axis=(1, 2)) / p.std(axis=(1, 2)) - 1)
    return {"power_mean_rel_error": float(mean.max()), "power_std_rel_error": float(std.max())}


def measure(image: dict, recon: np.ndarray, nbytes: int, split: datasets.Split) -> dict:
    """Bytes and errors over the bands with data, squared errors over their valid pixels."""
    usable = image["usable"]
    array, recon = image["array"][usable], recon[usable]
    valid = np.ones(array.shape, bool) if split.nodata is None else array != split.nodata
    error = (array.astype(np.float64) - recon.astype(np.float64))[valid]
    point = {"bytes": nbytes, "raw_bytes": image["array"].nbytes, "sse": float(np.sum(error ** 2)),
             "samples": int(valid.sum()), "ssim": float(np.mean(metrics.ssim_per_band(array, recon)))}
    if split.dtype == "float32":
        point.update(power_stats_error(array, recon))
    return point


def _j2k_step(array: np.ndarray) -> float:
    """JPEG 2000 codes integers: floats (dB) go in as int16 steps of SAR_STEP_DB."""
    return SAR_STEP_DB if array.dtype.kind == "f" else 1.0


def _j2k_point(image: dict, split: datasets.Split, encode) -> dict:
    """JPEG 2000 by ``encode(coded array) -> (codestream, params)``, measured on the original
    units; bytes = codestream + params."""
    array = image["array"]
    step = _j2k_step(array)
    stream, params = encode(np.rint(array / step).astype(np.int16) if step != 1 else array)
    recon = jpeg2000.decode(stream, params)
    recon = recon * step if step != 1 else recon
    return measure(image, recon, len(stream) + jpeg2000.params_nbytes(params), split)


def j2k_at_size(image: dict, nbytes: int, klt: bool, split: datasets.Split) -> dict:
    point = _j2k_point(image, split, lambda a: jpeg2000.encode_to_size(a, nbytes, klt=klt))
    # a per-image KLT stores a bands x bands matrix: on small many-band rasters that alone can exceed the budget
    return {**point, "fits_budget": point["bytes"] <= nbytes}


def j2k_at_psnr(image: dict, psnr: float, klt: bool, split: datasets.Split) -> dict:
    """JPEG 2000 bisected to the target PSNR at the split's peak (in coded units)."""
    peak = split.peak / _j2k_step(image["array"])
    return _j2k_point(image, split, lambda a: jpeg2000.encode_to_psnr(a, psnr, peak, klt=klt))


def eoz_point(image: dict, codec, split: datasets.Split, store: ModelStore,
              tile_size: int = DEFAULT_TILE_SIZE) -> dict:
    """The real path: the .eoz file in memory, decoded, measured; header bytes noted."""
    data = compress_array(image["array"], image["meta"], codec, tile_size)
    recon, _ = decompress_array(data, store=store)
    with EozReader(data) as reader:
        header = len(data) - sum(e.length for e in reader.entries)
    return {**measure(image, recon, len(data), split), "header_bytes": header}


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
            per["eoz"].append(eoz_point(image, codec, split, store))
            for key, klt in (("jpeg2000", False), ("jpeg2000_klt", True)):
                per[key].append(j2k_at_size(image, per["eoz"][-1]["bytes"], klt, split))
        row = {"setting": label, **{k: aggregate(v, split) for k, v in per.items()}}
        print(f"{model_id} {label}: " + "; ".join(
            f"{k} ratio {a['compression_ratio']:.1f} PSNR {a['psnr']:.2f} SSIM {a['ssim']:.4f}"
            for k, a in row.items() if k != "setting"), flush=True)
        rows.append(row)
    return {"model_id": model_id, "version": entry.version, "codec": entry.codec, "peak": split.peak,
            "images": [{"name": im["name"], "shape": list(im["array"].shape),
                        "bands_with_data": int(im["usable"].sum())} for im in images], "rows": rows}


CODECS = (("eoz", "eoz"), ("jpeg2000", "JPEG 2000"), ("jpeg2000_klt", "JPEG 2000 + KLT"))


def _at_target(images: list[dict], measure_one) -> dict:
    """One codec at one target on every raster: per-raster points and their aggregate, or why
    a raster could not reach the target (then the target is left out of that codec's curve)."""
    start = time.perf_counter()
    try:
        points = [measure_one(image) for image in images]
    except InputError as e:
        return {"unreachable": str(e)}
    return {"per_image": points, "seconds": time.perf_counter() - start}


def run_wavelet_section(split: datasets.Split, psnrs: tuple[float, ...], store: ModelStore,
                        tile_size: int = WAVELET_TILE) -> dict:
    """The wavelet codec on a split's validation rasters at each target PSNR, and JPEG 2000
    (plain, + KLT) bisected to the same targets; BD-rate of the pooled curves."""
    entry = store.get(WAVELET_MODEL)
    images = load_images(split)
    points = []
    for psnr in psnrs:
        codec = codec_for_model(WAVELET_MODEL, store=store, target=QualityTarget(psnr=psnr, peak=split.peak))
        point = {"target_psnr": psnr,
                 "eoz": _at_target(images, lambda im: eoz_point(im, codec, split, store, tile_size)),
                 **{key: _at_target(images, lambda im, klt=klt: j2k_at_psnr(im, psnr, klt, split))
                    for key, klt in (("jpeg2000", False), ("jpeg2000_klt", True))}}
        for key, _ in CODECS:
            if "per_image" in point[key]:
                point[key]["aggregate"] = aggregate(point[key]["per_image"], split)
        print(f"{WAVELET_MODEL} on {split.name} at {psnr:g} dB: " + "; ".join(
            f"{label} " + (f"ratio {point[key]['aggregate']['compression_ratio']:.1f} PSNR "
                           f"{point[key]['aggregate']['psnr']:.2f}" if "aggregate" in point[key] else "unreachable")
            for key, label in CODECS), flush=True)
        points.append(point)

    def series(key: str, header: bool = True) -> tuple[list[float], list[float]]:
        kept = [p[key]["aggregate"] for p in points if "aggregate" in p[key]]
        return ([a["bpp_per_band"] * (1 if header else 1 - a["header_share"]) for a in kept],
                [a["psnr"] for a in kept])

    bd = {}
    for key, _ in CODECS[1:]:
        for name, header in ((key, True), (f"{key}_header_excluded", False)):
            try:
                bd[name] = metrics.bd_rate(*series(key), *series("eoz", header))
            except InputError as e:
                bd[name] = f"not computable: {e}"
    return {"split": split.name, "model_id": WAVELET_MODEL, "version": entry.version,
            "weights_sha256": entry.weights_sha256, "dtype": split.dtype, "peak": split.peak,
            "nodata": split.nodata, "tile_size": tile_size,
            "images": [{"name": im["name"], "shape": list(im["array"].shape), "rows": im["rows"],
                        "bands_with_data": int(im["usable"].sum())} for im in images],
            "points": points, "bd_rate": bd}


def _pct(value) -> str:
    return f"{value:+.1f} %" if isinstance(value, float) else str(value)


def _images_md(section: dict) -> str:
    def described(im: dict) -> str:
        rows = f" (rows {im['rows'][0]}-{im['rows'][1]} of the scene)" if im["rows"][0] else ""
        bands = f", {im['bands_with_data']} bands with data" if im["bands_with_data"] < im["shape"][0] else ""
        return f"{im['name']} {im['shape']}{rows}{bands}"

    return "Validation rasters: " + "; ".join(described(im) for im in section["images"])


def _header_bytes(points: list[dict]) -> list[int]:
    """The distinct .eoz header sizes of these points, sorted."""
    return sorted({im["header_bytes"] for p in points if "per_image" in p["eoz"] for im in p["eoz"]["per_image"]})


def wavelet_markdown(sections: list[dict]) -> list[str]:
    if not sections:
        return []
    lines = [f"## {WAVELET_MODEL} against JPEG 2000 at equal PSNR, every sensor", "",
             "The wavelet codec at target PSNRs (one target per tile, `QualityTarget(psnr=P, peak=PEAK)`, tile "
             f"size {sections[0]['tile_size']}) through `compress_array` / `decompress_array`, bytes = the whole "
             "`.eoz` file; JPEG 2000 and JPEG 2000 + KLT bisected per raster to the same target PSNR "
             "(`jpeg2000.encode_to_psnr`), bytes = codestream + params (`jpeg2000.params_nbytes`, the KLT "
             "matrix and means included). Ratio = raw bytes (h w bands itemsize of the split's dtype) / bytes; "
             "PSNR from squared errors pooled over the split's validation rasters, over the bands with data and "
             "their valid pixels, at the peak stated per sensor (JPEG 2000's bisection counts every band and "
             "pixel, nodata included, so where a raster has nodata its PSNR here can land slightly under the "
             "target). BD-rate: bpp/band against pooled PSNR, cubic fits over the PSNR range both curves share; "
             "negative = eoz needs fewer bits. Target: at most 0 % against JPEG 2000 + KLT on every sensor.", ""]
    rows = []
    for s in sections:
        eoz = [p["eoz"]["aggregate"]["compression_ratio"] for p in s["points"] if "aggregate" in p["eoz"]]
        klt = s["bd_rate"]["jpeg2000_klt"]
        rows.append([s["split"], f"{s['dtype']}, {s['images'][0]['shape'][0]} bands", f"{s['peak']:g}",
                     " ".join(f"{p['target_psnr']:g}" for p in s["points"]),
                     f"{min(eoz, default=0):.1f}-{max(eoz, default=0):.1f}", _pct(s["bd_rate"]["jpeg2000"]),
                     _pct(klt), "yes" if isinstance(klt, float) and klt <= 0 else "**no**",
                     _pct(s["bd_rate"]["jpeg2000_klt_header_excluded"])])
    lines += table(["sensor (split)", "dtype, bands", "PSNR peak", "targets (dB)", "eoz ratios",
                    "BD-rate vs JPEG 2000", "BD-rate vs JPEG 2000 + KLT", "<= 0 % vs J2K+KLT",
                    "vs J2K+KLT, .eoz header excluded (diagnostic)"], rows)
    header = _header_bytes([p for s in sections for p in s["points"]])
    lines += ["The last column is a diagnostic, not a result: the same BD-rate with the `.eoz` header (JSON "
              "with georeferencing, the CRS as WKT, band names, model pins, quality; "
              f"{header[0]}-{header[-1]} bytes a file here) taken off eoz's bytes. JPEG 2000's raw codestream "
              "carries no georeferencing, so on small rasters the header is a handicap that only eoz pays.", ""]
    for s in sections:
        lines += [f"### {s['split']} ({s['dtype']}, PSNR peak {s['peak']:g}"
                  + (f", nodata {s['nodata']:g}" if s["nodata"] is not None else "") + ")", "",
                  _images_md(s), ""]
        body = []
        for p in s["points"]:
            row = [f"{p['target_psnr']:g}"]
            for key, _ in CODECS:
                a = p[key].get("aggregate")
                row += ([f"{a['compression_ratio']:.2f}", f"{a['bpp_per_band']:.3f}", f"{a['psnr']:.2f}"]
                        if a else ["unreachable", "-", "-"])
            e = p["eoz"].get("aggregate")
            row += [f"{e['ssim']:.4f}" if e else "-", f"{e['header_share']:.1%}" if e else "-"]
            body.append(row)
        lines += table(["target PSNR", *(f"{label} {what}" for _, label in CODECS
                                         for what in ("ratio", "bpp/band", "PSNR")), "eoz SSIM", "eoz header"], body)
        seconds = {key: sum(p[key].get("seconds", 0) for p in s["points"]) for key, _ in CODECS}
        header = _header_bytes(s["points"])
        for key, label in CODECS[1:]:
            below = [p["target_psnr"] for p in s["points"]
                     if p[key].get("aggregate", {}).get("compression_ratio", 1) < 1]
            if below:
                lines += [f"{label} is larger than the raw raster at {len(below)} of {len(s['points'])} targets: "
                          "its params (for the KLT, a bands x bands matrix as JSON) outweigh these rasters, so "
                          "that BD-rate says little about the coding itself.", ""]
        lines += [f"BD-rate of eoz against JPEG 2000: {_pct(s['bd_rate']['jpeg2000'])}; against JPEG 2000 + KLT: "
                  f"{_pct(s['bd_rate']['jpeg2000_klt'])} (`.eoz` header, {header[0]}-{header[-1]} bytes a file, "
                  f"excluded: {_pct(s['bd_rate']['jpeg2000_header_excluded'])} and "
                  f"{_pct(s['bd_rate']['jpeg2000_klt_header_excluded'])}). Seconds over all targets: "
                  f"eoz (encode + decode) {seconds['eoz']:.1f}, JPEG 2000 bisection {seconds['jpeg2000']:.1f}, + KLT "
                  f"{seconds['jpeg2000_klt']:.1f}.", ""]
        for p in s["points"]:
            for key, label in CODECS:
                if "unreachable" in p[key]:
                    lines += [f"- {label} at {p['target_psnr']:g} dB: {p[key]['unreachable']}"]
    return lines


def markdown(data: dict) -> list[str]:
    if not data["sections"]:
        return ["# Other sensors: the wavelet codec against JPEG 2000 at equal PSNR", "",
                *provenance_md(data["command"], data["machine"]), *wavelet_markdown(data["wavelet"])]
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
    return lines + wavelet_markdown(data["wavelet"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[m for m, _ in SECTIONS] + [WAVELET_MODEL],
                        help="which of the sensor models to run (default: all)")
    parser.add_argument("--sensors", nargs="+", default=[s.name for s, _ in WAVELET_SENSORS],
                        choices=[s.name for s, _ in WAVELET_SENSORS],
                        help=f"splits of the {WAVELET_MODEL} sections (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for NAME.{md,json}")
    parser.add_argument("--name", default="rd_sensors", help="base name of the output files")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    store = ModelStore()
    sections = []
    for model_id, split in SECTIONS:
        if model_id not in args.models:
            continue
        try:
            sections.append(run_section(model_id, split, store))
        except UnknownModelError as e:
            print(f"skipped: {e}", flush=True)
    wavelet = []
    if WAVELET_MODEL in args.models:
        for split, psnrs in WAVELET_SENSORS:
            if split.name in args.sensors:
                wavelet.append(run_wavelet_section(split, psnrs, store))
    data = {"command": command_line(), "machine": machine(), "sections": sections, "wavelet": wavelet,
            "run_seconds": time.perf_counter() - start}
    write_outputs(args.out, args.name, markdown(data) + [f"Whole run: {data['run_seconds'] / 60:.1f} min."], data)


if __name__ == "__main__":
    main()
