"""Does a spectral KLT in front of the VQ encoder help? An A/B from scratch.

Issue 14 asks for a KLT (or an orthogonal 1x1 layer) before the encoder, so the codebooks
spend no capacity on band correlation. The encoder's first convolution is already a learned
linear map of the bands, so a fixed KLT changes only how the input is scaled and rotated; a
warm start from a published model cannot show its effect (the rotation folds into that first
layer), so two runs of the 2x recipe start from scratch with the same seed, crops and steps:

- plain: the recipe as published;
- klt: the normalized bands rotated onto the training pixels' principal components and
  whitened (each component divided by its standard deviation) before the encoder, and the
  decoder's output mapped back by the inverse.

Runs live in --runs (resumed if there; a finished run is only read), and the report gives the
validation PSNR (fixed validation crops, eoz.train.validate) at each validation step.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import eoz.train as training
from common import RESULTS_DIR, command_line, machine, provenance_md, table, write_outputs
from eoz import datasets
from eoz.models.vqvae_fpn import VQVAEFPN


def whitening_klt(cfg: training.TrainConfig) -> tuple[torch.Tensor, np.ndarray]:
    """The whitening KLT of the normalized training pixels, and their covariance's eigenvalues."""
    arrays = datasets.load_split(datasets.split_named(cfg.split), "train")
    normalizer = training._normalizer_for(cfg, arrays)   # the run's own (same seed, same pixels)
    pixels = np.concatenate([normalizer.forward(a).reshape(a.shape[0], -1) for a in arrays], axis=1)
    eigenvalues, vectors = np.linalg.eigh(np.cov(pixels))
    return torch.tensor((vectors / np.sqrt(eigenvalues)).T, dtype=torch.float32), eigenvalues[::-1]


def with_front(matrix: torch.Tensor) -> type[VQVAEFPN]:
    inverse = torch.linalg.inv(matrix)

    class SpectralFront(VQVAEFPN):
        def _pyramid(self, x):
            return super()._pyramid(torch.einsum("ij,bjhw->bihw", matrix, x))

        def _decode(self, quantized):
            return torch.einsum("ij,bjhw->bihw", inverse, super()._decode(quantized))

    return SpectralFront


def run(cfg: training.TrainConfig, run_dir: Path, front: torch.Tensor | None = None) -> list[dict]:
    """Train (or read) one run, with ``front`` (a matrix) before the encoder when given."""
    family = training.FAMILIES["vqvae-fpn"]
    if front is not None:
        training.FAMILIES["vqvae-fpn"] = (with_front(front), family[1])
    try:
        training.train(run_dir, cfg)
    finally:
        training.FAMILIES["vqvae-fpn"] = family
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{"step": line["step"], "val_psnr": line["val_psnr"]} for line in lines if "val_psnr" in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--runs", type=Path, default=Path("runs/spectral-front"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="vq_spectral_front")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = replace(training.recipe("vqvae-fpn-s2-10m", "s2-10m", "vqvae-fpn"), steps=args.steps, warmup=200,
                  validate_every=500, checkpoint_every=500)
    matrix, eigenvalues = whitening_klt(cfg)
    curves = {"plain": run(cfg, args.runs / "plain"), "klt": run(cfg, args.runs / "klt", matrix)}
    info, command = machine(), command_line()
    md = ["# VQVAE-FPN with and without a spectral KLT front end (from scratch)", ""]
    md += provenance_md(command, info)
    md += [f"The 2x recipe (`vqvae-fpn-s2-10m`: codebooks {cfg.model.codebook_sizes}), {args.steps} steps, batch "
           f"{cfg.batch_size} of {cfg.crop} px crops, warm-up {cfg.warmup}, the same seed for both. Eigenvalues of "
           f"the normalized bands' covariance: {', '.join(f'{v:.3f}' for v in eigenvalues)}. Validation PSNR "
           "(dB, peak 10000) on the fixed validation crops, nearest codes:", ""]
    rows = [[p["step"], f"{p['val_psnr']:.3f}", f"{k['val_psnr']:.3f}", f"{k['val_psnr'] - p['val_psnr']:+.3f}"]
            for p, k in zip(curves["plain"], curves["klt"])]
    md += table(["step", "plain", "KLT front end", "difference"], rows)
    write_outputs(RESULTS_DIR, args.name, md, {"machine": info, "command": command, "steps": args.steps,
                                                 "eigenvalues": eigenvalues.tolist(), "curves": curves})


if __name__ == "__main__":
    main()
