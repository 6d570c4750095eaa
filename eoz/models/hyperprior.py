"""Multirate mean-scale hyperprior (Ballé et al. 2018) with a lambda-driven latent modulation.

One model covers the whole rate range. A small network maps log(lambda) to a positive gain
per latent channel; the encoder multiplies the latent by it before rounding and the decoder
divides by it after, so lambda sets the quantization step of every channel (Yang et al.'s
modulated autoencoders, as used by Mijares i Verdú et al. for fixed-quality coding). The
gain map can differ per block: that is how per-block lambdas reach the latent.

The hyper-analysis sees the unmodulated latent, so the side information z and the
hyper-synthesis output (mean and log-scale of each latent before modulation) do not depend
on lambda; a symbol's scale is that scale times its gain. During training the hyper-synthesis
runs in float; for coding it runs as :class:`IntegerHyperSynthesis`, whose output is exact on
every machine (see there).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from eoz.models.entropy_models import EntropyBottleneck, GaussianConditional
from eoz.models.layers import GDN
from eoz.quality import LAMBDA_MAX_LOG2, LAMBDA_MIN_LOG2


@dataclass
class HyperpriorConfig:
    in_channels: int = 4
    channels: int = 64          # N: analysis/synthesis width
    latent_channels: int = 128  # M: latent depth, at 1/8 of the input resolution
    hyper_channels: int = 64

    latent_factor: ClassVar[int] = 8   # three stride-2 analysis stages
    factor: ClassVar[int] = 32         # input sizes must be multiples of this: 4x more for z

    def to_dict(self) -> dict:
        return asdict(self)


def lambda_position(lmbda: torch.Tensor) -> torch.Tensor:
    """log2(lambda) mapped to [-1, 1] over the trained range: the modulation network's input."""
    mid = (LAMBDA_MIN_LOG2 + LAMBDA_MAX_LOG2) / 2
    return (torch.log2(lmbda) - mid) / ((LAMBDA_MAX_LOG2 - LAMBDA_MIN_LOG2) / 2)


def _conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def _deconv(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


class HyperSynthesis(nn.Module):
    """z -> (mean, log scale) of every latent; nearest upsampling and 3x3 convs with ReLU.

    Only these operations are used so that the integer version can reproduce them exactly.
    """

    def __init__(self, hyper: int, latent: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(hyper, hyper, 3, padding=1),
                                    nn.Conv2d(hyper, hyper, 3, padding=1),
                                    nn.Conv2d(hyper, 2 * latent, 3, padding=1)])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = z
        for i, conv in enumerate(self.convs):
            if i:
                x = F.interpolate(F.relu(x), scale_factor=2, mode="nearest")
            x = conv(x)
        mean, log_scale = x.chunk(2, dim=1)
        return mean, log_scale


class ModulatedHyperprior(nn.Module):
    def __init__(self, config: HyperpriorConfig):
        super().__init__()
        self.config = c = config
        n, m, h = c.channels, c.latent_channels, c.hyper_channels
        self.analysis = nn.Sequential(_conv(c.in_channels, n), GDN(n), _conv(n, n), GDN(n), _conv(n, m))
        self.synthesis = nn.Sequential(_deconv(m, n), GDN(n, inverse=True), _deconv(n, n),
                                       GDN(n, inverse=True), _deconv(n, c.in_channels))
        self.hyper_analysis = nn.Sequential(_conv(m, h, 3, 1), nn.ReLU(), _conv(h, h), nn.ReLU(), _conv(h, h))
        self.hyper_synthesis = HyperSynthesis(h, m)
        self.modulation = nn.Sequential(nn.Linear(1, 64), nn.ReLU(), nn.Linear(64, m))
        nn.init.zeros_(self.modulation[2].weight)   # start from the high-rate law, gain ~ sqrt(lambda)
        nn.init.zeros_(self.modulation[2].bias)
        self.entropy_bottleneck = EntropyBottleneck(h)
        self.gaussian = GaussianConditional()

    def log_gain(self, lmbda: torch.Tensor) -> torch.Tensor:
        """(..., ) lambdas -> (..., M) natural-log gains per latent channel.

        At high rate the MSE-optimal step shrinks as 1/sqrt(lambda); the network learns the
        per-channel departure from that law.
        """
        position = lambda_position(lmbda)[..., None]
        half_range = (LAMBDA_MAX_LOG2 - LAMBDA_MIN_LOG2) / 2 * math.log(2)
        return 0.5 * half_range * position + self.modulation(position)

    def gain_map(self, lmbda_map: torch.Tensor) -> torch.Tensor:
        """(B, h, w) lambdas at latent resolution -> (B, M, h, w) gains."""
        return torch.exp(self.log_gain(lmbda_map)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, lmbda: torch.Tensor) -> dict:
        """Training (uniform noise) or evaluation (rounding) pass; one lambda per batch item.

        Returns the reconstruction and each item's rate in bits per pixel (all bands).
        """
        y = self.analysis(x)
        z = self.hyper_analysis(y)
        z_hat, z_likelihood = self.entropy_bottleneck(z)
        mean, log_scale = self.hyper_synthesis(z_hat)
        log_gain = self.log_gain(lmbda)[:, :, None, None]
        gain = torch.exp(log_gain)
        residual = (y - mean) * gain
        if self.training:
            residual_hat = residual + torch.empty_like(residual).uniform_(-0.5, 0.5)
        else:
            residual_hat = torch.round(residual)
        y_likelihood = self.gaussian.likelihood(residual_hat, torch.exp(log_scale + log_gain))
        recon = self.synthesis(residual_hat / gain + mean)
        bits = -(torch.log2(y_likelihood).sum((1, 2, 3)) + torch.log2(z_likelihood).sum((1, 2, 3)))
        return {"recon": recon, "bpp": bits / (x.shape[2] * x.shape[3])}


class IntegerHyperSynthesis:
    """The hyper-synthesis in fixed point, exact on every machine.

    A symbol's distribution must be the same when decoding as when encoding, or the range
    decoder goes astray; float networks differ in their last bits between CPUs, GPUs and
    thread counts (summation order, fused multiply-adds, kernel choice). So the coder never
    uses the float hyper-synthesis. Its weights are rounded to multiples of 2^-WEIGHT_BITS,
    activations are integers in units of 2^-ACTIVATION_BITS, and each 3x3 convolution is an
    im2col matrix product in float64 on integer values: every partial sum is an integer
    below 2^53, so it is exact whatever the order or hardware. Rescaling is a floor
    division by a power of two, ReLU and nearest upsampling are exact. The output (mean and
    log-scale, in 2^-ACTIVATION_BITS units) then picks a scale table entry by integer
    comparison with stored thresholds.
    """

    WEIGHT_BITS = 14
    ACTIVATION_BITS = 12
    ACTIVATION_LIMIT = 1 << 24

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray]):
        limit = 1 << 17   # |w| < 8; with activations below 2^24 and 9*C < 2^10 terms, sums stay below 2^51
        if any(np.abs(w).max() >= limit for w in weights):
            raise ValueError("hyper-synthesis weights are too large for exact fixed point")
        self.weights = [torch.from_numpy(w.astype(np.float64)).reshape(len(w), -1) for w in weights]
        self.biases = [torch.from_numpy(b.astype(np.float64))[:, None] for b in biases]

    @classmethod
    def from_module(cls, module: HyperSynthesis) -> "IntegerHyperSynthesis":
        scale = 2.0 ** cls.WEIGHT_BITS
        weights = [np.rint(c.weight.detach().double().numpy() * scale).astype(np.int64) for c in module.convs]
        biases = [np.rint(c.bias.detach().double().numpy() * scale * 2.0 ** cls.ACTIVATION_BITS).astype(np.int64)
                  for c in module.convs]
        return cls(weights, biases)

    def to_tensors(self, prefix: str) -> dict[str, np.ndarray]:
        out = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"{prefix}.{i}.weight"] = w.numpy().astype(np.int32)
            out[f"{prefix}.{i}.bias"] = b[:, 0].numpy().astype(np.int64)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str) -> "IntegerHyperSynthesis":
        n = sum(1 for k in tensors if k.startswith(prefix + ".") and k.endswith(".weight"))
        return cls([tensors[f"{prefix}.{i}.weight"] for i in range(n)],
                   [tensors[f"{prefix}.{i}.bias"] for i in range(n)])

    def __call__(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C, h, w) integer z -> (M, 4h, 4w) int64 mean and log-scale in 2^-ACTIVATION_BITS units."""
        x = torch.from_numpy(z.astype(np.float64))[None] * 2.0 ** self.ACTIVATION_BITS
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if i:
                x = F.interpolate(torch.clamp(x, min=0), scale_factor=2, mode="nearest")
            h, wd = x.shape[2:]
            columns = F.unfold(x, 3, padding=1)[0]            # (C*9, h*w), integers
            acc = torch.matmul(w, columns) + b                 # exact: integers below 2^53
            x = torch.floor(acc / 2.0 ** self.WEIGHT_BITS).clamp(-self.ACTIVATION_LIMIT, self.ACTIVATION_LIMIT)
            x = x.reshape(1, -1, h, wd)
        mean, log_scale = x[0].numpy().astype(np.int64).reshape(2, -1, *x.shape[2:])
        return mean, log_scale
