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
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from eoz import datasets
from eoz.errors import InputError
from eoz.models import NETWORK_PREFIX, network_state
from eoz.models.hyperprior import LAMBDA_MAX_LOG2, LAMBDA_MIN_LOG2, HyperpriorConfig, ModulatedHyperprior
from eoz.models.ssim import ssim
from eoz.models.vqvae_fpn import VQVAEFPN, VQVAEFPNConfig
from eoz.normalization import BandNormalizer

@dataclass
class TrainConfig:
    model_id: str = "vqvae-fpn-s2-10m"
    split: str = "s2-10m"
    codec: str = "vqvae-fpn"          # or "hyperprior"
    steps: int = 20000
    batch_size: int = 16
    crop: int = 64
    lr: float = 3e-4
    min_lr_fraction: float = 0.05
    warmup: int = 300
    commitment: float = 0.25          # vqvae-fpn only
    checkpoint_every: int = 200
    log_every: int = 50
    validate_every: int = 1000
    seed: int = 0
    brightness: float = 0.0           # crops scaled by exp(U(-b, b)) in original units
    init_from: str = ""               # "model-id/version" in model_store, or a run folder: start from its weights
    ssim_weight: float = 0.0          # vqvae-fpn only: the loss adds this x (1 - SSIM in original units)
    ssim_range: float = 4000.0        # SSIM's data range in original units for that loss (a typical scene's)
    index_prior: str = "grid"         # vqvae-fpn only: the kind of index prior the export fits (eoz.entropy.KINDS)
    index_prior_rank: int = 0         # its factor rank (0: eoz.entropy.GRID_RANK)
    index_prior_steps: int = 0        # its fitting steps (0: the kind's default)
    model: VQVAEFPNConfig | HyperpriorConfig = field(
        default_factory=lambda: VQVAEFPNConfig(codebook_sizes=[256, 512]))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["model"] = MODEL_CONFIGS[d.get("codec", "vqvae-fpn")](**d["model"])
        return cls(**d)


MODEL_CONFIGS = {"vqvae-fpn": VQVAEFPNConfig, "hyperprior": HyperpriorConfig}


def recipe(model_id: str, split: str, codec: str) -> TrainConfig:
    """The settings the published models were trained with (see their manifests)."""
    if codec == "spectral-partition":   # one small single-channel hyperprior per interval
        return TrainConfig(model_id=model_id, split=split, codec="hyperprior", steps=3000, batch_size=32,
                           crop=32, lr=3e-4, warmup=200, model=HyperpriorConfig(
                               in_channels=1, channels=48, latent_channels=96, hyper_channels=48))
    bands = len(datasets.split_named(split).bands)
    if model_id.endswith("-x4"):   # levels at 4x and 8x, larger codebooks: ratios 50-100
        # a smaller prior generalizes better at 1024 codes: bits per index on a training hold-out
        # (every 5th tile) 8.707 at rank 16 and 100 steps, 8.734 at 16 and 300, 8.825 at 32 and 100
        return TrainConfig(model_id=model_id, split=split, codec=codec, index_prior="grid-lowrank",
                           index_prior_rank=16, index_prior_steps=100,
                           model=VQVAEFPNConfig(in_channels=bands, codebook_sizes=[1024, 1024], first_factor=4))
    if codec == "hyperprior":
        return TrainConfig(model_id=model_id, split=split, codec=codec, steps=9000, batch_size=8, crop=96,
                           lr=2e-4, warmup=500, model=HyperpriorConfig(in_channels=bands, latent_channels=192))
    return TrainConfig(model_id=model_id, split=split, codec=codec,
                       model=VQVAEFPNConfig(in_channels=bands, codebook_sizes=[256, 512]))


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


def _normalizer_for(cfg: TrainConfig, train_arrays: list[np.ndarray]) -> BandNormalizer:
    rng = np.random.default_rng(cfg.seed)
    pixels = np.concatenate([a.reshape(a.shape[0], -1) for a in train_arrays], axis=1)
    pick = pixels[:, rng.choice(pixels.shape[1], size=min(pixels.shape[1], 400_000), replace=False)]
    # the hyperprior is trained for MSE in original units, which a linear map keeps
    return BandNormalizer.fit_linear(pick) if cfg.codec == "hyperprior" else BandNormalizer.fit(pick)


def _warm_start(model: torch.nn.Module, spec: str) -> tuple[BandNormalizer, dict]:
    """Load a published model's weights (``model-id/version``) or a run's checkpoint (its
    folder) into ``model``, every tensor whose name and shape match (a model of another
    architecture, e.g. a 4x stem on a 2x model, keeps its fresh layers where they differ);
    its normalizer stays, so the network keeps seeing inputs on the scale it learned. A run
    as the source lets a run go on under another loss or schedule. Returns the normalizer
    and which tensors were loaded or new, with where they came from."""
    from eoz.registry import ModelStore

    run = Path(spec)
    if (run / "checkpoint.pt").is_file():
        source_cfg, state, source, normalizer = load_run(run)
        weights = source.state_dict()
        origin = {"from": spec, "from_step": state["step"], "from_command": train_command(source_cfg, run)}
        if (run / "warm_start.json").exists():
            origin["from_warm_start"] = json.loads((run / "warm_start.json").read_text())["from"]
    else:
        model_id, _, version = spec.partition("/")
        entry = ModelStore().get(model_id, version or None)
        weights = network_state(entry.load_weights())
        normalizer = BandNormalizer.from_dict(entry.manifest["normalization"])
        origin = {"from": f"{entry.model_id}/{entry.version}"}
    own = model.state_dict()
    loaded = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    if not loaded:
        raise InputError(f"{spec} shares no layer with this architecture")
    model.load_state_dict({**own, **loaded})
    return normalizer, {**origin, "loaded": sorted(loaded), "new": sorted(set(own) - set(loaded))}


def brighten(batch: np.ndarray, normalizer: BandNormalizer, limit: float, rng: np.random.Generator) -> np.ndarray:
    """Scale each normalized crop's original-unit values by one factor exp(U(-limit, limit)):
    scenes differ in sun angle, season and surface brightness more than the training cities do."""
    factors = np.exp(rng.uniform(-limit, limit, len(batch)))
    return np.stack([normalizer.forward(normalizer.inverse(crop) * f) for crop, f in zip(batch, factors)])


def _psnr(normalizer: BandNormalizer, recon: np.ndarray, crops: np.ndarray, split: datasets.Split) -> float:
    """PSNR (at the split's peak) in original units of normalized reconstructions of crops,
    rounded and clipped to the split's dtype as the decoder would."""
    from eoz.codecs.base import _to_dtype

    recon = np.stack([_to_dtype(normalizer.inverse(c), np.dtype(split.dtype)) for c in recon]).astype(np.float64)
    return 10 * math.log10(split.peak ** 2 / float(np.mean((recon - crops.astype(np.float64)) ** 2)))


VALIDATION_LAMBDAS_LOG2 = (7, 10, 13, 16)


def validate(model, normalizer: BandNormalizer, crops: np.ndarray, split: datasets.Split) -> dict:
    """Validation figures on fixed crops: PSNR for a VQ model; PSNR and bpp per lambda for a hyperprior."""
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        x = torch.from_numpy(np.stack([normalizer.forward(c) for c in crops])).to(device)
        if isinstance(model, VQVAEFPN):
            out = {"val_psnr": round(_psnr(normalizer, model.decode(model.encode(x)).cpu().numpy(), crops, split), 3)}
        else:
            psnr, bpp = [], []
            for log2 in VALIDATION_LAMBDAS_LOG2:
                r = model(x, torch.full((len(x),), 2.0 ** log2, device=device))
                psnr.append(round(_psnr(normalizer, r["recon"].cpu().numpy(), crops, split), 3))
                bpp.append(round(float(r["bpp"].mean()), 4))
            out = {"val_lambda_log2": list(VALIDATION_LAMBDAS_LOG2), "val_psnr": psnr, "val_bpp": bpp}
    model.train()
    return out


def original_units(normalizer: BandNormalizer, y: torch.Tensor) -> torch.Tensor:
    """BandNormalizer.inverse on (N, C, H, W) tensors, differentiable."""
    off, p, mean, std = (torch.tensor(v, dtype=y.dtype, device=y.device).view(1, -1, 1, 1)
                         for v in (normalizer.offset, normalizer.exponent, normalizer.mean, normalizer.std))
    z = y * std + mean
    return torch.where(p == 1.0, z, torch.clamp(z, min=1e-6) ** (1.0 / p)) - off


def _vq_loss(model: VQVAEFPN, x: torch.Tensor, cfg: TrainConfig, normalizer: BandNormalizer):
    """MSE in the normalized domain plus the commitment term, and with ``ssim_weight`` that
    weight x (1 - SSIM) in original units."""
    recon, commitment, indices = model(x)
    distortion = F.mse_loss(recon, x)
    loss = distortion + cfg.commitment * commitment
    stats = {"mse_normalized": distortion.item(), "commitment": commitment.item()}
    if cfg.ssim_weight:
        similarity = ssim(original_units(normalizer, x), original_units(normalizer, recon), cfg.ssim_range)
        loss = loss + cfg.ssim_weight * (1 - similarity)
        stats["ssim"] = similarity.item()
    return loss, stats, lambda: {"codes_in_batch": [int(torch.unique(i).numel()) for i in indices]}


def _hyperprior_loss(model: ModulatedHyperprior, x: torch.Tensor, cfg: TrainConfig, normalizer: BandNormalizer):
    """Rate + lambda * MSE with lambda drawn log-uniformly per crop over the model's range."""
    lmbda = 2.0 ** torch.empty(len(x), device=x.device).uniform_(LAMBDA_MIN_LOG2, LAMBDA_MAX_LOG2)
    out = model(x, lmbda)
    mse = ((out["recon"] - x) ** 2).mean(dim=(1, 2, 3))
    loss = (out["bpp"] + lmbda * mse).mean()
    stats = {"loss": loss.item(), "bpp": out["bpp"].mean().item(), "mse_normalized": mse.mean().item()}
    return loss, stats, dict


FAMILIES = {"vqvae-fpn": (VQVAEFPN, _vq_loss), "hyperprior": (ModulatedHyperprior, _hyperprior_loss)}


def train(run_dir: Path, cfg: TrainConfig | None = None, device: str = "cpu",
          progress: Callable[[int, int], None] | None = None) -> Path:
    """Train (or resume) the run in run_dir; returns the checkpoint path. ``progress`` hears
    (steps done, steps in all) after each step."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"
    if config_path.exists():
        cfg = TrainConfig.from_dict(json.loads(config_path.read_text()))
    else:
        cfg = cfg or TrainConfig()
        config_path.write_text(json.dumps(asdict(cfg), indent=2))
    split = datasets.split_named(cfg.split)
    train_arrays = datasets.load_split(split, "train")
    val_crops = datasets.fixed_crops(datasets.load_split(split, "validation"), split.validation_crop)
    torch.manual_seed(cfg.seed)
    model_class, loss_fn = FAMILIES[cfg.codec]
    model = model_class(cfg.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = datasets.CropSampler(train_arrays, cfg.crop, seed=cfg.seed)
    checkpoint_path = run_dir / "checkpoint.pt"
    step = 0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        if "optimizer" in state:   # a snapshot has none: Adam's moments start again
            optimizer.load_state_dict(state["optimizer"])
        sampler.rng.bit_generator.state = state["sampler_rng"]
        if "torch_rng" in state:  # codebook restarts, noise and lambdas draw from it
            torch.set_rng_state(state["torch_rng"])
        normalizer = BandNormalizer.from_dict(state["normalizer"])
        step = state["step"]
    elif cfg.init_from:
        normalizer, report = _warm_start(model, cfg.init_from)
        (run_dir / "warm_start.json").write_text(json.dumps(report, indent=1) + "\n")
    else:
        normalizer = _normalizer_for(cfg, train_arrays)
    # normalize once; crops are then plain slices
    sampler.arrays = [normalizer.forward(a) for a in sampler.arrays]

    def save():
        _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "sampler_rng": sampler.rng.bit_generator.state,
                      "torch_rng": torch.get_rng_state(), "step": step,
                      "normalizer": normalizer.to_dict(), "config": asdict(cfg)}, checkpoint_path)

    with open(run_dir / "log.jsonl", "a") as log:
        started, sums = time.time(), {}
        while step < cfg.steps:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step)
            batch = sampler.sample(cfg.batch_size)
            if cfg.brightness:
                batch = brighten(batch, normalizer, cfg.brightness, sampler.rng)
            x = torch.from_numpy(batch).to(device)
            loss, stats, extra = loss_fn(model, x, cfg, normalizer)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if progress:
                progress(step, cfg.steps)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            if step % cfg.log_every == 0:
                line = {"step": step, **{k: v / cfg.log_every for k, v in sums.items()},
                        "lr": learning_rate(cfg, step), **extra(),
                        "seconds": round(time.time() - started, 1)}
                sums = {}
                if step % cfg.validate_every == 0 or step == cfg.steps:
                    line.update(validate(model, normalizer, val_crops, split))
                log.write(json.dumps(line) + "\n")
                log.flush()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save()
    return checkpoint_path


def snapshot(run_dir: Path, dest: Path) -> Path:
    """A copy of a run without its optimizer state, which ``train`` resumes (Adam's moments
    start again): a third of the checkpoint's size, small enough to commit, so a run spans
    sessions on machines that do not keep runs/."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "log.jsonl", "warm_start.json"):
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, dest / name)
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    state.pop("optimizer", None)
    _atomic_save(state, dest / "checkpoint.pt")
    return dest


def vq_index_maps(model: VQVAEFPN, normalizer: BandNormalizer, split: datasets.Split, part: str = "train"
                  ) -> list[list[np.ndarray]]:
    """Each DEFAULT_TILE_SIZE tile's index maps (bottom level first) of a split's part,
    nearest codes: what the index prior is fitted on."""
    from eoz.codecs import DEFAULT_TILE_SIZE
    from eoz.tiling import grid_tiles, pad_to_multiple

    maps = []
    with torch.no_grad():
        for array in datasets.load_split(split, part):
            for tile in grid_tiles(array, DEFAULT_TILE_SIZE):
                x = torch.from_numpy(normalizer.forward(pad_to_multiple(tile, model.config.factor)))[None]
                maps.append([m[0].numpy() for m in model.encode(x)])
    return maps


def vq_coding_tensors(model: VQVAEFPN, cfg: TrainConfig, normalizer: BandNormalizer) -> dict:
    """The index prior (of the run's kind, eoz.entropy), fitted on the training split's index maps."""
    from eoz.entropy import IndexPrior

    maps = vq_index_maps(model, normalizer, datasets.split_named(cfg.split))
    return IndexPrior.fit(maps, cfg.model.codebook_sizes, kind=cfg.index_prior, rank=cfg.index_prior_rank,
                          steps=cfg.index_prior_steps or None).to_tensors()


def hyperprior_coding_tensors(model: ModulatedHyperprior) -> dict:
    """Integer hyper-synthesis, entropy tables, scale thresholds and the log-gain of every lambda code."""
    from eoz.models.entropy_models import GaussianConditional, scale_thresholds
    from eoz.models.hyperprior import IntegerHyperSynthesis
    from eoz.quality import TOP_CODE, lambda_of_code

    unit = 2.0 ** IntegerHyperSynthesis.ACTIVATION_BITS
    with torch.no_grad():
        log_gain = model.log_gain(torch.from_numpy(lambda_of_code(np.arange(TOP_CODE + 1))).float())
    return {**IntegerHyperSynthesis.from_module(model.hyper_synthesis).to_tensors("hyper_synthesis_int"),
            **model.entropy_bottleneck.tables().to_tensors("z_tables"),
            **GaussianConditional.tables().to_tensors("y_tables"),
            "y_tables.thresholds": scale_thresholds(unit),
            "log_gain": np.rint(log_gain.double().numpy() * unit).astype(np.int64)}


QUALITY_FIT_CODES = tuple(range(0, 256, 32)) + (255,)
QUALITY_FIT_CROP = 256


def fit_quality_model(codec, split: "datasets.Split", block: int = 16):
    """Fit the open-loop quality model on training crops coded at a ladder of lambdas."""
    from eoz.quality import CODE_STEP_LOG2, QualityModel, activity

    t, v, mse = [], [], []
    for array in datasets.load_split(split, "train"):
        size = min(QUALITY_FIT_CROP, min(array.shape[1:]) // codec.stride * codec.stride)
        if size < codec.stride:
            continue
        for crop in datasets.fixed_crops([array], size, per_array=1):
            tile = crop.astype(split.dtype)
            valid = np.ones(tile.shape, bool)
            analysed = codec._analyse(tile)
            act = activity(tile, valid, block).ravel()
            for code in QUALITY_FIT_CODES:
                codes = np.full((size // block,) * 2, code, np.uint8)
                mse.append(codec.block_mse(tile, valid, block, codes, analysed).ravel())
                t.append(np.full(act.size, LAMBDA_MIN_LOG2 + CODE_STEP_LOG2 * code))
                v.append(act)
    return QualityModel.fit(np.concatenate(t), np.concatenate(v), np.concatenate(mse))


VALIDATION_CODES = (0, 64, 128, 192, 255)


def load_run(run_dir: Path):
    """A run's config, checkpoint state, model (eval mode, CPU) and normalizer."""
    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    model_class, _ = FAMILIES[cfg.codec]
    model = model_class(cfg.model).eval()
    model.load_state_dict(state["model"])
    return cfg, state, model, BandNormalizer.from_dict(state["normalizer"])


def training_curve(run_dir: Path) -> list[dict]:
    """The validation lines and every 500th step of a run's log, for its manifest."""
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: line[k] for k in ("step", "mse_normalized", "bpp", "val_psnr", "val_bpp") if k in line}
            for line in log if "val_psnr" in line or line["step"] % 500 == 0]


# settings `eoz train` may change from a recipe at a run's first start, besides its steps
RECIPE_OPTIONS = ("lr", "brightness", "init_from", "ssim_weight")


def train_command(cfg: TrainConfig, run_dir: Path) -> str:
    """The `eoz train` line that reproduces a run from scratch."""
    default = recipe(cfg.model_id, cfg.split, cfg.codec)
    flags = [f"--{name.replace('_', '-')} {getattr(cfg, name)}" for name in RECIPE_OPTIONS
             if getattr(cfg, name) != getattr(default, name)]
    return " ".join([f"eoz train {cfg.model_id} --run-dir {run_dir.name} --steps {cfg.steps}", *flags])


def export(run_dir: Path, version: str, store=None, description: str = "") -> dict:
    """Publish a run as ``<model-id>/<version>`` in model_store.

    Builds what coding needs (the VQ index prior, or the hyperprior's integer tables and
    its fitted quality model), measures the real codec on every validation raster, and
    records architecture, normalization, data split, training curve and validation figures
    in the manifest.
    """
    import tempfile

    from safetensors.numpy import save as save_safetensors

    from eoz.codecs import HyperpriorCodec, codec_for_model
    from eoz.evaluation import evaluate
    from eoz.quality import QualityTarget, lambda_of_code
    from eoz.raster import read_meta
    from eoz.registry import ModelStore

    cfg, state, model, normalizer = load_run(run_dir)
    split = datasets.split_named(cfg.split)
    tensors = {NETWORK_PREFIX + k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    hyperprior = cfg.codec == HyperpriorCodec.codec_id
    tensors.update(hyperprior_coding_tensors(model) if hyperprior else vq_coding_tensors(model, cfg, normalizer))
    weights = save_safetensors(tensors)
    manifest = {
        "codec": cfg.codec,
        "description": description,
        "bands": list(split.bands),
        "dtype": split.dtype,
        "peak": split.peak,
        "architecture": cfg.model.to_dict(),
        "normalization": normalizer.to_dict(),
        "training": {
            "command": train_command(cfg, run_dir),
            "config": asdict(cfg),
            "steps": state["step"],
            "train_files": list(split.train),
            "validation_files": list(split.validation),
            "curve": training_curve(run_dir),
        },
    }
    if (run_dir / "warm_start.json").exists():   # where the run began: the chain of runs behind it
        start = json.loads((run_dir / "warm_start.json").read_text())
        manifest["training"]["warm_start"] = {k: v for k, v in start.items() if k != "loaded"}
    if hyperprior:
        manifest["lambda_range"] = [LAMBDA_MIN_LOG2, LAMBDA_MAX_LOG2]
        manifest["quality_model"] = {"a": 0.0, "b": -1.0, "c": 0.0, "d": 0.0}   # refitted below
    else:
        manifest["codebook_sha256"] = [q.codebook_sha256() for q in model.quantizers]
    with tempfile.TemporaryDirectory() as staging:
        staging_store = ModelStore(staging)
        staging_store.publish(cfg.model_id, version, manifest, weights)
        codec = codec_for_model(cfg.model_id, version, staging_store)
        settings = {None: codec}
        if hyperprior:
            codec.quality_model = fit_quality_model(codec, split)
            manifest["quality_model"] = codec.quality_model.to_dict()
            settings = {int(c): codec.with_target(QualityTarget(lmbda=float(lambda_of_code(c))))
                        for c in VALIDATION_CODES}
        per_file = {}
        for rel in split.validation:
            array = datasets.load_bands(datasets.data_dir() / rel, split.bands).astype(split.dtype)
            meta = read_meta(datasets.data_dir() / rel)
            for code, setting in settings.items():
                r = evaluate(array, meta, setting, peak=split.peak, store=staging_store)
                key = rel if code is None else f"{rel} @ lambda code {code}"
                per_file[key] = {k: r[k] for k in ("compression_ratio", "compression_ratio_fixed_length",
                                                   "bpp_per_band", "psnr", "ssim") if k in r}
    figures = {}
    for code in settings:
        rows = [v for k, v in per_file.items() if code is None or k.endswith(f"@ lambda code {code}")]
        figures["mean" if code is None else f"mean @ lambda code {code}"] = {
            k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    manifest["validation"] = {"peak": split.peak, "files": per_file, **figures}
    (store or ModelStore()).publish(cfg.model_id, version, manifest, weights)
    return manifest
