"""Training and publishing a spectral-partition model: one small single-channel hyperprior
per spectral interval, and a second per interval for the band-to-band prediction residuals.

The intervals come from the training split's band correlation (``eoz.spectral``) and are
written to ``intervals.json`` in the run folder at the first start, so a resumed run trains
the same partition. Each sub-model is an ordinary resumable run in its own subfolder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from eoz import datasets, spectral
from eoz.models.hyperprior import LAMBDA_MAX_LOG2, LAMBDA_MIN_LOG2
from eoz.train import TrainConfig, fit_quality_model, hyperprior_coding_tensors, load_run, train, training_curve


def partition_intervals(split: datasets.Split) -> list[tuple[int, int]]:
    cubes = datasets.load_split(split, "train")
    corr, usable = spectral.band_correlation(cubes, split.nodata)
    return spectral.spectral_intervals(corr, usable)


def sub_runs(run_dir: Path, split_name: str) -> list[tuple[int, bool, Path, str]]:
    """(interval number, predicted?, run folder, split name) of every sub-model; the
    intervals are fixed at the first call."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "intervals.json"
    split = datasets.split_named(split_name)
    if not path.exists():
        path.write_text(json.dumps(partition_intervals(split)))
    runs = []
    for k, (start, stop) in enumerate(json.loads(path.read_text())):
        for predicted in (False, True):
            name = datasets.interval_split(split, (start, stop), predicted).name
            runs.append((k, predicted, run_dir / name.replace(":", "_"), name))
    return runs


def train_partition(run_dir: Path, cfg: TrainConfig, device: str = "cpu",
                    progress: Callable[[int, int], None] | None = None) -> None:
    """Every sub-model in turn; ``progress`` hears (steps done, steps in all) over all of them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    runs = sub_runs(run_dir, cfg.split)
    for k, (_, _, sub_dir, name) in enumerate(runs):
        train(sub_dir, replace(cfg, split=name), device,
              progress and (lambda done, total, k=k: progress(k * total + done, len(runs) * total)))


VALIDATION_PSNRS = (40.0, 45.0, 50.0)
SHARED_PREFIX = "y_tables."   # the Gaussian tables depend on no weights: stored once for all sub-models


def compact(name: str, value: np.ndarray) -> np.ndarray:
    """Ten sub-models add up: float16 network weights (the encoder runs the same rounded
    weights as the decoder), int16 fixed-point hyper-synthesis weights (below 2^14), int32 log gains."""
    if name.startswith("model.") and value.dtype == np.float32:
        return value.astype(np.float16)
    if name.startswith("hyper_synthesis_int.") and name.endswith(".weight") and np.abs(value).max() < 2 ** 15:
        return value.astype(np.int16)
    return value.astype(np.int32) if name == "log_gain" else value


def export_partition(run_dir: Path, version: str, store=None, description: str = "") -> dict:
    """Publish a partition run: every sub-model's tensors under ``interval<k>.<kind>.``, the
    intervals and each sub-model's normalization and fitted quality model in the manifest,
    and validation figures at a few PSNR targets with and without band prediction."""
    import tempfile

    from safetensors.numpy import save as save_safetensors

    from eoz.codecs import HyperpriorCodec, codec_for_model
    from eoz.codecs.partition import SubModel
    from eoz.evaluation import evaluate
    from eoz.quality import QualityTarget
    from eoz.raster import read_meta
    from eoz.registry import ModelStore

    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    split = datasets.split_named(cfg.split)
    intervals = json.loads((run_dir / "intervals.json").read_text())
    sections = [{"start": start, "stop": stop} for start, stop in intervals]
    tensors = {}
    for k, predicted, sub_dir, name in sub_runs(run_dir, cfg.split):
        sub_cfg, state, model, normalizer = load_run(sub_dir)
        sub_tensors = {f"model.{n}": v.detach().numpy() for n, v in model.state_dict().items()}
        sub_tensors.update(hyperprior_coding_tensors(model))
        section = {"architecture": sub_cfg.model.to_dict(), "normalization": normalizer.to_dict(),
                   "quality_model": {"a": 0.0, "b": -1.0, "c": 0.0, "d": 0.0},
                   "training": {"split": name, "steps": state["step"], "curve": training_curve(sub_dir)}}
        sub_tensors = {n: compact(n, v) for n, v in sub_tensors.items()}   # fit on what ships
        codec = HyperpriorCodec(SubModel(cfg.model_id, version, "", section, sub_tensors))
        section["quality_model"] = fit_quality_model(codec, datasets.split_named(name)).to_dict()
        kind = "predicted" if predicted else "independent"
        sections[k][kind] = section
        tensors.update({n if n.startswith(SHARED_PREFIX) else f"interval{k}.{kind}.{n}": v
                        for n, v in sub_tensors.items()})
    weights = save_safetensors(tensors)
    first = datasets.data_dir() / split.train[0]
    manifest = {
        "codec": "spectral-partition",
        "description": description,
        "bands": read_meta(first).band_names,
        "dtype": split.dtype,
        "peak": split.peak,
        "lambda_range": [LAMBDA_MIN_LOG2, LAMBDA_MAX_LOG2],
        "intervals": sections,
        "training": {"command": f"eoz train {cfg.model_id} --run-dir {run_dir.name} --steps {cfg.steps}",
                     "config": asdict(cfg), "train_files": list(split.train),
                     "validation_files": list(split.validation)},
    }
    per_file = {}
    with tempfile.TemporaryDirectory() as staging:
        staging_store = ModelStore(staging)
        staging_store.publish(cfg.model_id, version, manifest, weights)
        for rel in split.validation:
            array = datasets.load_bands(datasets.data_dir() / rel, split.bands).astype(split.dtype)
            meta = read_meta(datasets.data_dir() / rel)
            for psnr in VALIDATION_PSNRS:
                for predicted in (False, True):
                    codec = codec_for_model(cfg.model_id, version, staging_store,
                                            target=QualityTarget(psnr=psnr, peak=split.peak), predict_bands=predicted)
                    r = evaluate(array, meta, codec, peak=split.peak, store=staging_store)
                    per_file[f"{rel} @ {psnr:g} dB" + (" predicted" if predicted else "")] = {
                        k: r[k] for k in ("compression_ratio", "bpp_per_band", "psnr", "ssim")}
    figures = {}
    for psnr in VALIDATION_PSNRS:
        for suffix in ("", " predicted"):
            rows = [v for k, v in per_file.items() if k.endswith(f"@ {psnr:g} dB{suffix}")]
            figures[f"mean @ {psnr:g} dB{suffix}"] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    manifest["validation"] = {"peak": split.peak, "files": per_file, **figures}
    (store or ModelStore()).publish(cfg.model_id, version, manifest, weights)
    return manifest
