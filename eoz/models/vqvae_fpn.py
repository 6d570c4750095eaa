"""Hierarchical VQ-VAE with feature-pyramid conditioning (VQ-VAE-2 style, as in CORSA).

Levels are numbered from the bottom (finest) one, level 0 at ``first_factor`` times
downsampling and each further level 2x coarser. Quantization runs top-down: the top level
quantizes its own features; every lower level first adds the *non-quantized* map of the
level above, upsampled (the feature-pyramid lateral), then a 3x3 convolution projects to
the embedding dimension and its codebook quantizes. The decoder sees every quantized level
upsampled to the bottom resolution. A file therefore holds one index map per level.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from eoz.models.layers import ResidualBlock, VectorQuantizer


@dataclass
class VQVAEFPNConfig:
    in_channels: int = 4
    channels: list[int] = field(default_factory=lambda: [64, 128])  # feature depth, bottom level first
    codebook_sizes: list[int] = field(default_factory=lambda: [512, 512])
    embedding_dim: int = 64
    res_blocks: int = 2
    first_factor: int = 2  # downsampling of level 0 against the input: 2 or 4

    def __post_init__(self):
        if not 1 <= len(self.channels) <= 3 or len(self.codebook_sizes) != len(self.channels):
            raise ValueError("1 to 3 levels, one codebook size per level")
        if self.first_factor not in (2, 4):
            raise ValueError("first_factor must be 2 or 4")

    @property
    def levels(self) -> int:
        return len(self.channels)

    @property
    def factor(self) -> int:
        """Input sizes must be multiples of this (the top level's downsampling)."""
        return self.first_factor * 2 ** (self.levels - 1)

    def level_factor(self, level: int) -> int:
        return self.first_factor * 2 ** level

    def to_dict(self) -> dict:
        return asdict(self)


def _down(cin: int, cout: int) -> nn.Module:
    return nn.Conv2d(cin, cout, 4, stride=2, padding=1)


def _up(cin: int, cout: int) -> nn.Module:
    return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)


class VQVAEFPN(nn.Module):
    def __init__(self, config: VQVAEFPNConfig):
        super().__init__()
        self.config = config
        c, d = config.channels, config.embedding_dim
        stem = [nn.Conv2d(config.in_channels, c[0], 3, padding=1)]
        if config.first_factor == 4:
            stem += [nn.LeakyReLU(0.1), _down(c[0], c[0])]
        self.stem = nn.Sequential(*stem)
        self.encoders = nn.ModuleList()
        for level in range(config.levels):
            cin = c[level - 1] if level else c[0]
            self.encoders.append(nn.Sequential(
                _down(cin, c[level]),
                *[ResidualBlock(c[level]) for _ in range(config.res_blocks)],
                nn.LeakyReLU(0.1),
            ))
        # lateral[l] maps level l+1's pyramid map onto level l's channels
        self.laterals = nn.ModuleList(nn.Conv2d(c[level + 1], c[level], 1)
                                      for level in range(config.levels - 1))
        self.pre_quant = nn.ModuleList(nn.Conv2d(c[level], d, 3, padding=1)
                                       for level in range(config.levels))
        self.quantizers = nn.ModuleList(VectorQuantizer(k, d) for k in config.codebook_sizes)
        # level l's quantized map goes up l times by 2 to the bottom resolution
        self.upsamplers = nn.ModuleList(
            nn.Sequential(*[m for _ in range(level) for m in (_up(d, d), nn.LeakyReLU(0.1))])
            for level in range(config.levels))
        dec = [nn.Conv2d(d * config.levels, c[0], 3, padding=1),
               *[ResidualBlock(c[0]) for _ in range(config.res_blocks)],
               nn.LeakyReLU(0.1)]
        width = c[0]
        for _ in range(int(math.log2(config.first_factor))):
            dec += [_up(width, width // 2), nn.LeakyReLU(0.1)]
            width //= 2
        dec.append(nn.Conv2d(width, config.in_channels, 3, padding=1))
        self.decoder = nn.Sequential(*dec)

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Non-quantized pre-quantization maps of every level, bottom first."""
        features, h = [], self.stem(x)
        for encoder in self.encoders:
            h = encoder(h)
            features.append(h)
        top = self.config.levels - 1
        maps = [None] * self.config.levels
        pyramid = features[top]
        maps[top] = self.pre_quant[top](pyramid)
        for level in range(top - 1, -1, -1):
            lateral = F.interpolate(self.laterals[level](pyramid), scale_factor=2, mode="nearest")
            pyramid = features[level] + lateral
            maps[level] = self.pre_quant[level](pyramid)
        return maps

    def forward(self, x: torch.Tensor):
        """Returns (reconstruction, summed commitment loss, index maps bottom first)."""
        quantized, indices, commitment = [], [], 0.0
        for level, z in enumerate(self._pyramid(x)):
            q, idx, loss = self.quantizers[level](z)
            quantized.append(q)
            indices.append(idx)
            commitment = commitment + loss
        return self._decode(quantized), commitment, indices

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Index maps (B, H/f_l, W/f_l) of the nearest codes, bottom level first."""
        return [q.nearest(z) for q, z in zip(self.quantizers, self._pyramid(x))]

    def distances(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each level's (B, H, W, K) distances to every code (VectorQuantizer.distances), bottom first."""
        return [q.distances(z) for q, z in zip(self.quantizers, self._pyramid(x))]

    def decode(self, indices: list[torch.Tensor]) -> torch.Tensor:
        return self._decode([q.lookup(idx) for q, idx in zip(self.quantizers, indices)])

    def top_latents(self, x: torch.Tensor, quantized: bool = True) -> torch.Tensor:
        """Top-level embedding map (B, D, H/f, W/f), for classifiers working on compressed data."""
        z = self._pyramid(x)[-1]
        return self.quantizers[-1].lookup(self.quantizers[-1].nearest(z)) if quantized else z

    def _decode(self, quantized: list[torch.Tensor]) -> torch.Tensor:
        ups = [up(q) for up, q in zip(self.upsamplers, quantized)]
        return self.decoder(torch.cat(ups, dim=1))
