"""Fitting the wavelet codec's entropy model: density estimation over quantized coefficients.

Nothing here is trained end to end. The transform (KLT + CDF 9/7) and the quantizer are
fixed; every coefficient of every training raster is a sample of what the model learns:

1. **Context weights**, per table group: the non-negative least-squares fit of each
   coefficient's magnitude on its context features (the ECECOW-style linear predictor of
   Wu, 1997), so a context class ranks coefficients by their expected magnitude.
2. **Starting counts** of every table row: the token histogram of the training samples that
   fall in it, smoothed towards its group's histogram where a row has few samples.

Training samples come from every split's *training* part (all sensors in shared/data),
quantized at a spread of qualities relative to each crop's variance; the validation parts
are only measured. A run takes minutes on 2 cores and writes its figures beside the
model, so there is no checkpoint to resume: a rerun refits from the data.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from safetensors.numpy import save as save_safetensors
from scipy.optimize import nnls

from eoz import datasets
from eoz.codecs.base import fill_nodata
from eoz.codecs.wavelet import (KLT_MAX_BANDS, LEVELS, MID_CODE, ROUNDING, Analysis, WaveletCodec, _Transform,
                                base_log2_step)
from eoz.registry import ModelStore
from eoz.subband_coder import (GROUPS, LL_CLASSES, N_WEIGHTS, ROWS, TOKENS, WEIGHT_BITS, SubbandModel,
                               inter_features, subband_group)

SNRS_DB = (18.0, 26.0, 34.0, 42.0)   # target MSE = crop variance x 10^(-snr/10)
CROP = 256
CROPS_PER_RASTER = 4
ROW_TOTAL = 4096                     # starting counts of a table row sum to about this
SMOOTHING = 32.0                     # pseudo-samples of the group's histogram in each row
ROUNDS = 2                           # quantize with the model, refit (see train)


def crops(array: np.ndarray, size: int = CROP, count: int = CROPS_PER_RASTER) -> list[np.ndarray]:
    """Up to ``count`` evenly spread crops (the whole raster when it is smaller)."""
    _, h, w = array.shape
    if h <= size and w <= size:
        return [array]
    rows = np.unique(np.linspace(0, max(h - size, 0), max(1, min(count, h // size + 1))).astype(int))
    cols = np.unique(np.linspace(0, max(w - size, 0), max(1, min(count, w // size + 1))).astype(int))
    picks = [(r, c) for r in rows for c in cols]
    picks = [picks[k] for k in np.linspace(0, len(picks) - 1, min(count, len(picks))).astype(int)]
    return [array[:, r:r + size, c:c + size] for r, c in picks]


def quantized_planes(array: np.ndarray, split: datasets.Split, model: SubbandModel) -> list[list[list[np.ndarray]]]:
    """The crop's quantized planes at each of SNRS_DB, through the codec's own quantizer
    (whose dependent quantization estimates rates with ``model``)."""
    tile, _ = fill_nodata(array.astype(split.dtype), split.nodata)
    variance = max(float(np.var(tile.astype(np.float64))), 1e-6)
    out = []
    for snr in SNRS_DB:
        mse = variance * 10 ** (-snr / 10)
        analysed = Analysis(_Transform.fit(tile), tile, base_log2_step(mse), model)
        out.append(analysed.quantize(np.full((1, 1), MID_CODE, np.int64), None)[0])
    return out


def held_out(splits) -> set[str]:
    """Rasters some split validates on; no other split may train on them (whole files: a
    scene split by rows validates only on its own rows)."""
    return {rel for s in splits if s.train_rows is None for rel in s.validation}


def part_crops(splits, part: str, size: int = CROP):
    """(split, crop) for every crop of every raster of the splits' ``part``; training leaves
    out every raster some split validates on."""
    excluded = held_out(splits) if part == "train" else set()
    for split in splits:
        if part == "train":
            split = replace(split, train=tuple(rel for rel in split.train if rel not in excluded))
        for array in datasets.load_split(split, part):
            for crop in crops(array, size):
                yield split, crop


def samples(splits, part: str, model: SubbandModel) -> list[tuple[str, list[list[np.ndarray]]]]:
    """(split name, planes) for every crop of every raster of the splits' ``part``, at every SNR."""
    return [(split.name, planes) for split, crop in part_crops(splits, part)
            for planes in quantized_planes(crop, split, model)]


def _shift(a: np.ndarray, di: int, dj: int) -> np.ndarray:
    """a[i - di, j - dj], zero outside (di, dj >= 0 look up and left; negative dj right)."""
    out = np.zeros_like(a)
    h, w = a.shape
    src = a[max(0, -di):h - max(0, di), max(0, -dj):w - max(0, dj)]
    out[max(0, di):max(0, di) + src.shape[0], max(0, dj):max(0, dj) + src.shape[1]] = src
    return out


def features(plane: list[np.ndarray], k: int, previous: list[np.ndarray] | None) -> np.ndarray:
    """(N_WEIGHTS - 1, h, w) context features of subband k, as eoz.subband_coder forms them:
    the spatial sums of the sequential loop, then the inter features."""
    a = np.abs(plane[k]).astype(np.float64)
    spatial = [_shift(a, 0, 1) + _shift(a, 1, 0), _shift(a, 1, 1) + _shift(a, 1, -1), _shift(a, 0, 2) + _shift(a, 2, 0)]
    return np.concatenate([np.stack(spatial), inter_features(plane, k, previous).astype(np.float64)])


def fit_weights(training) -> np.ndarray:
    """Per group, non-negative least squares of |q| on the context features over every
    coefficient, solved from the accumulated normal equations; in fixed point."""
    gram = np.zeros((GROUPS, N_WEIGHTS - 1, N_WEIGHTS - 1))
    moment = np.zeros((GROUPS, N_WEIGHTS - 1))
    for _, planes in training:
        levels = (len(planes[0]) - 1) // 3
        for c, plane in enumerate(planes):
            for k in range(1, len(plane)):
                g = subband_group(k, levels, c)
                f = features(plane, k, planes[c - 1] if c > 0 else None).reshape(N_WEIGHTS - 1, -1)
                gram[g] += f @ f.T
                moment[g] += f @ np.abs(plane[k]).ravel()
    weights = np.zeros((GROUPS, N_WEIGHTS), np.int64)
    for g in range(GROUPS):
        used = np.diag(gram[g]) > 0          # features that never occur in a group stay 0
        if not used.any():
            continue
        a = gram[g][np.ix_(used, used)] + 1e-9 * np.eye(used.sum())
        root = np.linalg.cholesky(a)         # |Xw - y|^2 = |root.T w - root^-1 X'y|^2 + const
        w, _ = nnls(root.T, np.linalg.solve(root, moment[g][used]))
        weights[g, :N_WEIGHTS - 1][used] = np.clip(np.rint(w * (1 << WEIGHT_BITS)), 0, 4095)
    return weights


def starting_counts(tallies: np.ndarray) -> np.ndarray:
    """Rows x tokens histograms -> starting counts: each row's own histogram, smoothed
    towards its group's where it has few samples, scaled to ROW_TOTAL, every token >= 1."""
    tallies = tallies.astype(np.float64)
    group = tallies.sum(-2, keepdims=True)
    group = (group + 1) / (group + 1).sum(-1, keepdims=True)
    p = (tallies + SMOOTHING * group) / (tallies.sum(-1, keepdims=True) + SMOOTHING)
    return np.maximum(1, np.rint(p * ROW_TOTAL)).astype(np.int64)


def fit(training) -> SubbandModel:
    weights = fit_weights(training)
    counting = SubbandModel(weights, np.ones((GROUPS, ROWS, TOKENS), np.int64),
                            np.ones((LL_CLASSES, TOKENS), np.int64))
    counts = np.zeros((GROUPS, ROWS, TOKENS), np.int64)
    lowpass = np.zeros((LL_CLASSES, TOKENS), np.int64)
    for _, planes in training:
        c, l = counting.tally(planes)
        counts += c
        lowpass += l
    return SubbandModel(weights, starting_counts(counts), starting_counts(lowpass[None])[0])


def bits_per_sample(model: SubbandModel, data) -> dict[str, float]:
    """Coded bits per coefficient of each split's samples (all qualities pooled)."""
    bits, size = {}, {}
    for name, planes in data:
        bits[name] = bits.get(name, 0) + 8 * len(model.encode(planes))
        size[name] = size.get(name, 0) + sum(b.size for p in planes for b in p)
    return {name: bits[name] / size[name] for name in bits}


def files(splits, part: str) -> list[str]:
    """The rasters a part reads, with the rows it takes of a scene split by rows."""
    out, excluded = [], held_out(splits) if part == "train" else set()
    for split in splits:
        for rel in getattr(split, part):
            if rel in excluded:
                continue
            if split.train_rows is None:
                out.append(rel)
            else:
                rows = f"[0, {split.train_rows})" if part == "train" else f"[{split.train_rows}, 1)"
                out.append(f"{rel} rows {rows} of the height")
    return sorted(set(out))


def train(run_dir: Path, splits=None, rounds: int = ROUNDS) -> tuple[SubbandModel, dict]:
    """Fit on the training parts, measure on both parts; write the figures to run_dir.

    The dependent quantizer picks levels with the model's own rates, so fitting alternates:
    quantize the training crops with the current model, refit on what it chose.
    """
    splits = splits or list(datasets.SPLITS.values())
    start = time.time()
    model, curve = SubbandModel.untrained(), []
    for round_ in range(rounds):
        training = samples(splits, "train", model)
        model = fit(training)
        curve.append({"round": round_ + 1, "train_bits_per_sample": bits_per_sample(model, training),
                      "seconds": round(time.time() - start, 1)})
    validation = samples(splits, "validation", model)
    report = {
        "splits": [s.name for s in splits], "snrs_db": list(SNRS_DB), "crop": CROP,
        "train_files": files(splits, "train"), "validation_files": files(splits, "validation"),
        "training_samples": len(training), "validation_samples": len(validation), "curve": curve,
        "bits_per_sample": {"train": bits_per_sample(model, training),
                            "validation": bits_per_sample(model, validation),
                            "validation_untrained": bits_per_sample(SubbandModel.untrained(), validation)},
        "seconds": round(time.time() - start, 1)}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    np.savez(run_dir / "model.npz", **model.to_tensors())
    return model, report


MODEL_ID = "wavelet-hyperprior"


def export(run_dir: Path, version: str, description: str = "", store: ModelStore | None = None) -> dict:
    """Publish a run's fitted model to the model store; returns the manifest."""
    report = json.loads((run_dir / "report.json").read_text())
    with np.load(run_dir / "model.npz") as tensors:
        model = SubbandModel.from_tensors(dict(tensors))
    manifest = {
        "codec": WaveletCodec.codec_id,
        "description": description or ("any raster (band count, dtype): spectral KLT + CDF 9/7 + learned "
                                        "adaptive context model; fixed quality per block or tile"),
        "bands": [], "dtype": None,
        "peak": 10000.0,   # Sentinel-2 DN; pass --peak for other data
        "transform": {"levels": LEVELS, "rounding": ROUNDING, "klt_max_bands": KLT_MAX_BANDS},
        "training": report}
    store = store or ModelStore()
    entry = store.publish(MODEL_ID, version, manifest, save_safetensors(model.to_tensors()))
    shutil.copy(run_dir / "report.json", entry.path / "training_report.json")
    return entry.manifest
