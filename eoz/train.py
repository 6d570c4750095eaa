"""Training entry point (`eoz train ...`): resumable CPU/GPU training of the learned codecs.

A run lives in one folder: ``config.json`` (fixed at the first start), ``checkpoint.pt``
(model, optimizer, step and sampler state, written atomically every few hundred steps) and
``log.jsonl`` (one line per logged step, validation lines included). Starting the same
command again resumes from the checkpoint, so a killed background run loses at most one
checkpoint interval. ``eoz train export`` turns a run into a versioned model_store entry.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from eoz import datasets
from eoz.models.vqvae_fpn import VQVAEFPN, VQVAEFPNConfig
from eoz.normalization import BandNormalizer

PEAK = 10000.0  # Sentinel-2 reflectance DN peak used for PSNR (DESIGN.md, Metrics)


@dataclass
class TrainConfig:
    model_id: str = "vqvae-fpn-s2-10m"
    split: str = "s2-10m"
    steps: int = 20000
    batch_size: int = 16
    crop: int = 64
    lr: float = 3e-4
    min_lr_fraction: float = 0.05
    warmup: int = 300
    commitment: float = 0.25
    checkpoint_every: int = 200
    log_every: int = 50
    validate_every: int = 1000
    seed: int = 0
    model: VQVAEFPNConfig = field(default_factory=lambda: VQVAEFPNConfig(codebook_sizes=[256, 512]))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["model"] = VQVAEFPNConfig(**d["model"])
        return cls(**d)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to min_lr_fraction of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t)))


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _normalizer_for(train_arrays: list[np.ndarray], seed: int) -> BandNormalizer:
    rng = np.random.default_rng(seed)
    pixels = np.concatenate([a.reshape(a.shape[0], -1) for a in train_arrays], axis=1)
    pick = rng.choice(pixels.shape[1], size=min(pixels.shape[1], 400_000), replace=False)
    return BandNormalizer.fit(pixels[:, pick])


def validation_psnr(model: VQVAEFPN, normalizer: BandNormalizer, crops: np.ndarray) -> float:
    """PSNR (peak 10000) over fixed validation crops, in original units."""
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.stack([normalizer.forward(c) for c in crops]))
        y = model.decode(model.encode(x)).numpy()
    model.train()
    recon = np.stack([np.clip(normalizer.inverse(c), 0, 65535) for c in y])
    mse = float(np.mean((recon - crops.astype(np.float64)) ** 2))
    return 10 * math.log10(PEAK ** 2 / mse)


def train(run_dir: Path, cfg: TrainConfig | None = None, device: str = "cpu") -> Path:
    """Train (or resume) the run in run_dir; returns the checkpoint path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"
    if config_path.exists():
        cfg = TrainConfig.from_dict(json.loads(config_path.read_text()))
    else:
        cfg = cfg or TrainConfig()
        config_path.write_text(json.dumps(asdict(cfg), indent=2))
    split = datasets.SPLITS[cfg.split]
    train_arrays = datasets.load_split(split, "train")
    val_crops = datasets.fixed_crops(datasets.load_split(split, "validation"), 128)
    torch.manual_seed(cfg.seed)
    model = VQVAEFPN(cfg.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = datasets.CropSampler(train_arrays, cfg.crop, seed=cfg.seed)
    checkpoint_path = run_dir / "checkpoint.pt"
    step = 0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.rng.bit_generator.state = state["sampler_rng"]
        if "torch_rng" in state:  # codebook restarts draw from it
            torch.set_rng_state(state["torch_rng"])
        normalizer = BandNormalizer.from_dict(state["normalizer"])
        step = state["step"]
    else:
        normalizer = _normalizer_for(train_arrays, cfg.seed)
    # normalize once; crops are then plain slices
    sampler.arrays = [normalizer.forward(a) for a in sampler.arrays]

    def save():
        _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "sampler_rng": sampler.rng.bit_generator.state,
                      "torch_rng": torch.get_rng_state(), "step": step,
                      "normalizer": normalizer.to_dict(), "config": asdict(cfg)}, checkpoint_path)

    with open(run_dir / "log.jsonl", "a") as log:
        started, sums = time.time(), np.zeros(2)
        while step < cfg.steps:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step)
            x = torch.from_numpy(sampler.sample(cfg.batch_size)).to(device)
            recon, commitment, indices = model(x)
            distortion = F.mse_loss(recon, x)
            loss = distortion + cfg.commitment * commitment
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            sums += (distortion.item(), commitment.item())
            if step % cfg.log_every == 0:
                usage = [int(torch.unique(i).numel()) for i in indices]
                line = {"step": step, "mse_normalized": sums[0] / cfg.log_every,
                        "commitment": sums[1] / cfg.log_every, "lr": learning_rate(cfg, step),
                        "codes_in_batch": usage, "seconds": round(time.time() - started, 1)}
                sums[:] = 0
                if step % cfg.validate_every == 0 or step == cfg.steps:
                    line["val_psnr"] = round(validation_psnr(model, normalizer, val_crops), 3)
                log.write(json.dumps(line) + "\n")
                log.flush()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save()
    return checkpoint_path


def _tiles(array: np.ndarray, size: int):
    for r in range(0, array.shape[1], size):
        for c in range(0, array.shape[2], size):
            yield array[:, r:r + size, c:c + size]


def export(run_dir: Path, version: str, store=None, description: str = "") -> dict:
    """Publish a run as ``<model-id>/<version>`` in model_store.

    Fits the index prior on the training split's index maps, measures the real codec on
    every validation raster, and records architecture, normalization, data split, training
    curve and validation figures in the manifest.
    """
    import tempfile

    from safetensors.numpy import save as save_safetensors

    from eoz.codecs import DEFAULT_TILE_SIZE, VQVAECodec
    from eoz.entropy import IndexPrior
    from eoz.evaluation import evaluate
    from eoz.raster import read_meta
    from eoz.registry import ModelStore
    from eoz.tiling import pad_to_multiple

    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    model = VQVAEFPN(cfg.model).eval()
    model.load_state_dict(state["model"])
    normalizer = BandNormalizer.from_dict(state["normalizer"])
    split = datasets.SPLITS[cfg.split]
    maps = []
    with torch.no_grad():
        for array in datasets.load_split(split, "train"):
            for tile in _tiles(array, DEFAULT_TILE_SIZE):
                x = torch.from_numpy(normalizer.forward(pad_to_multiple(tile, cfg.model.factor)))[None]
                maps.append([m[0].numpy() for m in model.encode(x)])
    prior = IndexPrior.fit(maps, cfg.model.codebook_sizes)
    tensors = {f"model.{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    tensors.update(prior.to_tensors())
    weights = save_safetensors(tensors)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    manifest = {
        "codec": "vqvae-fpn",
        "description": description,
        "bands": list(split.bands),
        "dtype": "uint16",
        "architecture": cfg.model.to_dict(),
        "normalization": normalizer.to_dict(),
        "codebook_sha256": [q.codebook_sha256() for q in model.quantizers],
        "training": {
            "command": f"eoz train {cfg.model_id} --run-dir {run_dir.name} --steps {cfg.steps}",
            "config": asdict(cfg),
            "steps": state["step"],
            "train_files": list(split.train),
            "validation_files": list(split.validation),
            "curve": [{k: line[k] for k in ("step", "mse_normalized", "val_psnr") if k in line}
                      for line in log if "val_psnr" in line or line["step"] % 500 == 0],
        },
    }
    with tempfile.TemporaryDirectory() as staging:
        staging_store = ModelStore(staging)
        codec = VQVAECodec(staging_store.publish(cfg.model_id, version, manifest, weights))
        per_file = {}
        for rel in split.validation:
            array = datasets.load_bands(datasets.data_dir() / rel, split.bands).astype(np.uint16)
            meta = read_meta(datasets.data_dir() / rel)
            r = evaluate(array, meta, codec, store=staging_store)
            per_file[rel] = {k: r[k] for k in ("compression_ratio", "compression_ratio_fixed_length",
                                               "bpp_per_band", "psnr", "ssim")}
    manifest["validation"] = {
        "peak": PEAK,
        "files": per_file,
        "mean": {k: float(np.mean([f[k] for f in per_file.values()])) for k in next(iter(per_file.values()))},
    }
    (store or ModelStore()).publish(cfg.model_id, version, manifest, weights)
    return manifest
