"""Fitting the predictive codec's starting tables: density estimation over coded residuals.

The predictor adapts by itself; what is learned is where each table starts: the token
histogram of every error-level class, counted while coding every split's *training*
rasters (all sensors in shared/data) losslessly and at a spread of error bounds, smoothed
where a class saw few samples (``train_wavelet.starting_counts``). A tile then starts
coding with tables that already know how residuals of that error level spread, instead of
learning it from its own first samples. Validation parts are only measured. Minutes on 2
cores; a rerun refits from the data.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save as save_safetensors

from eoz import datasets
from eoz import predictive_coder as pc
from eoz.codecs.base import fill_nodata
from eoz.codecs.predictive import DTYPES, PredictiveCodec
from eoz.registry import ModelStore
from eoz.subband_coder import TOKENS
from eoz.train_wavelet import files, part_crops, starting_counts

MODEL_ID = "predictive"
INTEGER_BOUNDS = (0, 1, 2, 4, 8, 16, 32)
FLOAT_BOUNDS = (0.0, 0.01, 0.05, 0.2)   # dB for SAR backscatter


class _Tables(PredictiveCodec):
    """A predictive codec over given starting counts (training needs no store entry)."""

    def __init__(self, counts: np.ndarray):
        self.entry, self.max_error, self.nodata = None, None, None
        self.initial = np.ascontiguousarray(counts, np.int64)


def tiles(splits, part: str) -> list[tuple[str, np.ndarray]]:
    """(split name, crop in the split's dtype, nodata filled) of every raster of the parts."""
    return [(split.name, fill_nodata(crop.astype(split.dtype), split.nodata)[0])
            for split, crop in part_crops([s for s in splits if s.interval is None and s.dtype in DTYPES], part)]


def _bounds(tile: np.ndarray) -> tuple:
    return FLOAT_BOUNDS if tile.dtype.kind == "f" else INTEGER_BOUNDS


def tally(data, counts: np.ndarray) -> np.ndarray:
    """Token counts per table row over every tile at every bound."""
    total = np.zeros((pc.ROWS, TOKENS), np.int64)
    for _, tile in data:
        for bound in _bounds(tile):
            codec = _Tables(counts).with_bound(bound == 0 or None, bound or None)
            codec.encode_counted(tile, total)
    return total


def bits_per_sample(counts: np.ndarray, data) -> dict[str, dict[str, float]]:
    """Coded bits per sample of each split's tiles, per bound."""
    bits: dict[str, dict[str, float]] = {}
    for name, tile in data:
        for bound in _bounds(tile):
            codec = _Tables(counts).with_bound(bound == 0 or None, bound or None)
            key = "lossless" if bound == 0 else f"max_error {bound:g}"
            entry = bits.setdefault(name, {}).setdefault(key, [0, 0])
            entry[0] += 8 * len(codec.encode_tile(tile, None))
            entry[1] += tile.size
    return {name: {k: round(b / n, 4) for k, (b, n) in by.items()} for name, by in bits.items()}


def train(run_dir: Path, splits=None) -> tuple[np.ndarray, dict]:
    """Count on the training parts, measure on both parts; write the figures to run_dir."""
    splits = splits or list(datasets.SPLITS.values())
    start = time.time()
    training, validation = tiles(splits, "train"), tiles(splits, "validation")
    flat = np.ones((pc.ROWS, TOKENS), np.int64)
    counts = starting_counts(tally(training, flat)[None])[0]
    report = {
        "splits": sorted({name for name, _ in training}),
        "integer_bounds": list(INTEGER_BOUNDS), "float_bounds": list(FLOAT_BOUNDS),
        "train_files": files(splits, "train"), "validation_files": files(splits, "validation"),
        "training_tiles": len(training), "validation_tiles": len(validation),
        "bits_per_sample": {"train": bits_per_sample(counts, training),
                            "validation": bits_per_sample(counts, validation),
                            "validation_untrained": bits_per_sample(flat, validation)},
        "seconds": round(time.time() - start, 1)}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    np.savez(run_dir / "model.npz", counts=counts)
    return counts, report


def export(run_dir: Path, version: str, description: str = "", store: ModelStore | None = None) -> dict:
    """Publish a run's starting tables to the model store; returns the manifest."""
    report = json.loads((run_dir / "report.json").read_text())
    with np.load(run_dir / "model.npz") as saved:
        counts = saved["counts"]
    manifest = {
        "codec": PredictiveCodec.codec_id,
        "description": description or ("lossless and near-lossless (hard per-sample bound), any band count: "
                                        "adaptive spatial + spectral prediction, learned starting tables"),
        "bands": [], "dtype": list(DTYPES), "training": report}
    store = store or ModelStore()
    entry = store.publish(MODEL_ID, version, manifest, save_safetensors({"counts": counts}))
    shutil.copy(run_dir / "report.json", entry.path / "training_report.json")
    return entry.manifest
