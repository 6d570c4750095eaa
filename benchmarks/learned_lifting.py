"""Learned lifting on top of the fixed CDF 9/7: does it pay? (the wavelet codec's ablation (d))

The issue's design adds learned lifting steps to the fixed 9/7, zero-initialized so that
training starts exactly at 9/7, and ships them only if they improve the validation BD-rate.
This study builds the cheapest form that can be trained on 2 cores and measures it with the
shipped codec's own quantizer and entropy coder:

- after the 9/7 analysis of levels 1 and 2 (15/16 of all coefficients), three predict steps
  per level: HL -= P(LL), LH -= P(LL, HL), HH -= P(LL, HL, LH). Invertible whatever P is: the
  decoder adds back P of what it has already decoded. Each P is a small CNN without biases
  (ReLU, so P(a x) = a P(x) for a > 0: one network for every sensor's scale) on LL's local
  detail (LL minus its 3 x 3 mean) and the details decoded before; its last layer starts at
  zero;
- trained on the training crops of S2 10 m, S2 20 m and Landsat 8 (their KLT components) at
  steps spread over the 42-58 dB range: the bits of each predicted band (log2(1 + |d| / s),
  the magnitude cost of a Laplacian-like coder), plus the error that quantization noise on
  P's inputs carries through P at the decoder, weighed by the high-rate slope 6 / (ln 2 s^2)
  bits per unit squared error;
- measured on the S2 10 m validation images, in 512 px tiles, at the steps the codec's open
  loop takes for 42..58 dB (one step per tile): bytes of the shipped model's entropy coder
  (the learned context model, fitted to plain 9/7 coefficients) and PSNR of the real
  reconstruction through the inverse steps, against the codec without them. BD-rate pooled
  over the images and per image.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from common import RESULTS_DIR, command_line, machine, provenance_md, table, write_outputs
from eoz import datasets, metrics, wavelet
from eoz.codecs import codec_for_model
from eoz.codecs.base import _to_dtype
from eoz.codecs.wavelet import MID_CODE, Analysis, _component_group, _Transform, base_log2_step, dequantize
from eoz.evaluation import S2_PEAK
from eoz.tiling import grid_tiles
from eoz.train_wavelet import part_crops

LEARNED_LEVELS = 2
HIDDEN = 8
SPLITS = (datasets.S2_10M, datasets.S2_20M, datasets.LANDSAT8)
STEP_RANGE = (2.0, 48.0)      # coefficient steps of the 42-58 dB targets on these sensors, and around
SLOPE = 6 / np.log(2)         # high-rate bits per unit squared error, times the step squared
PSNRS = (42, 45, 48, 51, 54, 58)
TILE = 512
MODEL = "wavelet-hyperprior"


def _local_detail(ll: torch.Tensor) -> torch.Tensor:
    """LL minus its 3 x 3 mean (edges replicated): what of LL a predictor may use without
    depending on the image's level."""
    padded = nn.functional.pad(ll, (1, 1, 1, 1), mode="replicate")
    return ll - nn.functional.avg_pool2d(padded, 3, stride=1)


class Predictor(nn.Module):
    """Three bias-free 3 x 3 convolutions with ReLUs; the last one starts at zero."""

    def __init__(self, inputs: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.Conv2d(inputs, HIDDEN, 3, bias=False), nn.Conv2d(HIDDEN, HIDDEN, 3, bias=False),
                                     nn.Conv2d(HIDDEN, 1, 3, bias=False)])
        nn.init.zeros_(self.layers[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            x = layer(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"))
            if k < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class LearnedSteps(nn.Module):
    """The predict steps of each learned level: HL from LL, LH from LL and HL, HH from all three."""

    def __init__(self):
        super().__init__()
        self.levels = nn.ModuleList([nn.ModuleList([Predictor(k) for k in (1, 2, 3)])
                                     for _ in range(LEARNED_LEVELS)])

    def predict(self, level: int, k: int, ll: torch.Tensor, before: list[torch.Tensor], shape) -> torch.Tensor:
        """P of detail band k (HL, LH, HH) of a level from its LL and the details before it,
        all (n, 1, h, w) as decoded, at the band's shape."""
        inputs = [_local_detail(_fit(ll, shape))] + [_fit(d, shape) for d in before]
        return self.levels[level][k](torch.cat(inputs, 1))

    def predictions(self, level: int, ll: torch.Tensor, details: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.predict(level, k, ll, details[:k], d.shape[-2:]) for k, d in enumerate(details)]


def _fit(x: torch.Tensor, shape) -> torch.Tensor:
    """x cropped to shape, and edge-replicated where it is a row or column short (odd sizes)."""
    h, w = shape
    x = x[..., :h, :w]
    return nn.functional.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]), mode="replicate")


def level_bands(plane: np.ndarray) -> list[tuple[np.ndarray, tuple]]:
    """(LL, (HL, LH, HH)) of each learned level, finest first, as eoz.wavelet's analysis makes them."""
    out, ll = [], np.asarray(plane, np.float64)
    for _ in range(min(LEARNED_LEVELS, wavelet.max_levels(*plane.shape, LEARNED_LEVELS))):
        ll, details = wavelet.forward(ll, 1)
        out.append((ll, details))
    return out


def training_bands(part: str) -> list[list[tuple[np.ndarray, tuple]]]:
    """Per KLT component of every crop of the part: its learned levels' bands."""
    out = []
    for _, crop in part_crops(list(SPLITS), part):
        if min(crop.shape[1:]) < 4 * 2 ** LEARNED_LEVELS:
            continue
        tile = crop.astype(np.float64)
        for component in _Transform.fit(tile).forward(tile):
            out.append(level_bands(component))
    return out


def _batch(samples: list, level: int, size: int) -> list[torch.Tensor]:
    """LL and the three details of one level from each sample, cropped to a common shape."""
    bands = [[s[level][0]] + list(s[level][1]) for s in samples]
    h = min(b.shape[0] for group in bands for b in group)
    w = min(b.shape[1] for group in bands for b in group)
    h, w = min(h, size), min(w, size)
    return [torch.tensor(np.stack([group[k][:h, :w] for group in bands])[:, None], dtype=torch.float32)
            for k in range(4)]


def loss(steps: LearnedSteps, batch: list[torch.Tensor], level: int, step: torch.Tensor) -> torch.Tensor:
    """Bits of the predicted bands at these steps, plus the decoder-side error of P on noisy inputs."""
    ll, details = batch[0], batch[1:]
    clean = steps.predictions(level, ll, details)
    noisy_inputs = [b + (torch.rand_like(b) - 0.5) * step for b in batch]
    noisy = steps.predictions(level, noisy_inputs[0], noisy_inputs[1:])
    total = 0.0
    for band, p, q in zip(details, clean, noisy):
        total = total + torch.log2(1 + (band - p).abs() / step).mean() + SLOPE * ((q - p) ** 2 / step ** 2).mean()
    return total


def train(train_samples: list, val_samples: list, iterations: int, seed: int) -> tuple[LearnedSteps, list[dict]]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    steps = LearnedSteps()
    optimizer = torch.optim.Adam(steps.parameters(), lr=1e-3)
    curve = []
    fixed_steps = torch.tensor(np.geomspace(*STEP_RANGE, 8), dtype=torch.float32)[:, None, None, None]

    def evaluate(samples: list) -> float:
        """Mean loss at 8 fixed steps over every level, on the first 64 samples (same each time)."""
        with torch.no_grad():
            torch.manual_seed(seed)
            subset = samples[:64]
            return float(np.mean([loss(steps, _batch(subset[i:i + 8], level, 128), level,
                                       fixed_steps[:len(subset[i:i + 8])]).item()
                                  for level in range(LEARNED_LEVELS) for i in range(0, len(subset), 8)]))

    for it in range(iterations + 1):
        if it % max(iterations // 8, 1) == 0:
            curve.append({"iteration": it, "train_loss": evaluate(train_samples), "validation_loss": evaluate(val_samples)})
            print(f"iteration {it}: loss {curve[-1]['train_loss']:.4f} train, {curve[-1]['validation_loss']:.4f} "
                  f"validation", flush=True)
        if it == iterations:
            break
        picks = [train_samples[i] for i in rng.choice(len(train_samples), 8, replace=False)]
        step = torch.tensor(np.exp(rng.uniform(*np.log(STEP_RANGE), 8)), dtype=torch.float32)[:, None, None, None]
        level = int(rng.integers(LEARNED_LEVELS))
        value = loss(steps, _batch(picks, level, 128), level, step)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    return steps, curve


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))[None, None]


def apply_steps(steps: LearnedSteps, flat: list[np.ndarray], inverse: bool) -> list[np.ndarray]:
    """The flat subbands (eoz.wavelet.flatten's layout) with the learned steps (float64) taken
    (forward: LL and details as analysed) or undone (inverse: as decoded)."""
    out = list(flat)
    n_levels = (len(flat) - 1) // 3
    learned = range(min(LEARNED_LEVELS, n_levels))
    with torch.no_grad():
        # forward finest level first (each level's LL from the analysed coarser bands), inverse
        # coarsest first (each level's LL from coarser bands already restored)
        for level in (reversed(learned) if inverse else learned):
            first = 1 + 3 * (n_levels - 1 - level)                        # its HL in the flat layout
            ll = _as_tensor(wavelet.inverse(wavelet.nest(out[:first])))
            details = [_as_tensor(b) for b in out[first:first + 3]]
            if inverse:   # each band restored before it predicts the next
                for k in range(3):
                    details[k] = details[k] + steps.predict(level, k, ll, details[:k], details[k].shape[-2:])
            else:
                details = [d - p for d, p in zip(details, steps.predictions(level, ll, details))]
            out[first:first + 3] = [d[0, 0].numpy() for d in details]
    return out


def measure(steps: LearnedSteps | None, image: np.ndarray, model, psnr: float) -> tuple[int, float, int, float, float]:
    """(entropy-coded bytes, summed squared error, samples, CPU seconds of the inverse steps,
    CPU seconds of the rest of the reconstruction) of one image at the open loop's step."""
    mse = (S2_PEAK / 10 ** (psnr / 20)) ** 2
    total_bytes, total_error, count, steps_seconds, rest_seconds = 0, 0.0, 0, 0.0, 0.0
    for tile in grid_tiles(image, TILE):
        analysed = Analysis(_Transform.fit(tile), tile, base_log2_step(mse), model)
        if steps is not None:
            analysed.subbands = [apply_steps(steps, bands, inverse=False) for bands in analysed.subbands]
        planes, offsets, q_steps = analysed.quantize(np.full((1, 1), MID_CODE, np.int64), None)
        start = time.process_time()
        decoded = [dequantize(p, q_steps, offsets[_component_group(c)]) for c, p in enumerate(planes)]
        middle = time.process_time()
        if steps is not None:
            decoded = [apply_steps(steps, bands, inverse=True) for bands in decoded]
        end = time.process_time()
        pixels = _to_dtype(analysed.transform.inverse(decoded, analysed.levels), tile.dtype)
        steps_seconds += end - middle
        rest_seconds += middle - start + time.process_time() - end
        total_bytes += len(model.encode(planes))
        total_error += float(((pixels.astype(np.float64) - tile) ** 2).sum())
        count += tile.size
    return total_bytes, total_error, count, steps_seconds, rest_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    info = machine()
    start = time.time()
    train_samples, val_samples = training_bands("train"), training_bands("validation")
    print(f"{len(train_samples)} training and {len(val_samples)} validation components", flush=True)
    steps, curve = train(train_samples, val_samples, args.iterations, args.seed)
    train_seconds = time.time() - start
    steps.double()   # measured in float64, as the codec's subbands
    parameters = sum(p.numel() for p in steps.parameters())

    model = codec_for_model(MODEL).model
    split = datasets.S2_10M
    images = [(rel, a.astype(split.dtype)) for rel, a in zip(split.validation, datasets.load_split(split, "validation"))]
    rows = {"9/7": [], "learned": []}
    for psnr in PSNRS:
        for name, variant in (("9/7", None), ("learned", steps)):
            per_image = [measure(variant, image, model, psnr) for _, image in images]
            rows[name].append(per_image)
        print(f"{psnr} dB: bytes 9/7 {sum(r[0] for r in rows['9/7'][-1])}, learned "
              f"{sum(r[0] for r in rows['learned'][-1])}", flush=True)

    def curve_of(name: str, index: int | None) -> tuple[list[float], list[float]]:
        rates, psnrs = [], []
        for point in rows[name]:
            picked = point if index is None else [point[index]]
            rates.append(sum(r[0] for r in picked))
            mse = sum(r[1] for r in picked) / sum(r[2] for r in picked)
            psnrs.append(10 * np.log10(S2_PEAK ** 2 / mse))
        return rates, psnrs

    def bd(index: int | None) -> float:
        return metrics.bd_rate(*curve_of("9/7", index), *curve_of("learned", index))

    pooled = bd(None)
    per_image = [{"image": rel, "bd_rate_percent": bd(i)} for i, (rel, _) in enumerate(images)]
    points = [{"target_psnr": p, **{name: {"bytes": curve_of(name, None)[0][k], "psnr": curve_of(name, None)[1][k]}
                                    for name in rows}} for k, p in enumerate(PSNRS)]
    data = {"machine": info, "iterations": args.iterations, "seed": args.seed, "parameters": parameters,
            "train_seconds": train_seconds, "curve": curve, "points": points, "pooled_bd_rate_percent": pooled,
            "per_image": per_image, "model": MODEL, "tile": TILE}
    command = command_line()
    md = [f"# Learned lifting on top of CDF 9/7 (the wavelet codec's ablation (d))", ""] + provenance_md(command, info)
    md += [__doc__.split("\n\n", 1)[1].strip(), "",
           f"{parameters} parameters in all, trained {args.iterations} iterations (batches of 8 crops' bands, "
           f"one level and steps drawn at random) in {train_seconds / 60:.1f} min on {args.threads} thread(s).", "",
           "## Training (loss: bits per coefficient summed over the 3 bands + the weighted decoder-side error; "
           "first 64 components of each part, 8 fixed steps)", ""]
    md += table(["iteration", "training crops", "validation crops"],
                [[c["iteration"], f"{c['train_loss']:.4f}", f"{c['validation_loss']:.4f}"] for c in curve])
    md += ["", "## Shipped codec with and without the learned steps (S2 10 m validation images, open-loop steps)", ""]
    md += table(["target dB", "9/7 bytes", "9/7 PSNR dB", "learned bytes", "learned PSNR dB"],
                [[p["target_psnr"], p["9/7"]["bytes"], f"{p['9/7']['psnr']:.3f}", p["learned"]["bytes"],
                  f"{p['learned']['psnr']:.3f}"] for p in points])
    md += ["", f"BD-rate of the learned steps against plain 9/7, pooled: **{pooled:+.2f} %** "
               f"(negative: fewer bytes at equal PSNR). Per image:", ""]
    md += table(["image", "BD-rate"], [[r["image"].split("/")[-1], f"{r['bd_rate_percent']:+.2f} %"] for r in per_image])
    steps_s = sum(r[3] for point in rows["learned"] for r in point)
    rest_s = sum(r[4] for point in rows["learned"] for r in point)
    data |= {"inverse_steps_cpu_seconds": steps_s, "rest_of_reconstruction_cpu_seconds": rest_s}
    verdict = "improve" if pooled < 0 else "do not improve"
    md += ["", f"The learned steps {verdict} the validation BD-rate in this measurement.", "",
           f"Cost at the decoder (and at each of the encoder's closed-loop passes, which reconstruct the tile): "
           f"the inverse steps took {steps_s:.1f} CPU s over all images and targets, against {rest_s:.1f} s for "
           f"dequantization, inverse 9/7 and KLT ({steps_s / max(rest_s, 1e-9):.1f}x), in torch float64 "
           f"on {args.threads} thread(s)."]
    write_outputs(RESULTS_DIR, "learned_lifting", md, data)
    print("\n".join(md))


if __name__ == "__main__":
    main()
