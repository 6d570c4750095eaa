"""Building blocks shared by the learned codecs."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class ResidualBlock(nn.Module):
    """3x3 -> 1x1 bottleneck residual block, as in VQ-VAE-2's encoder and decoder."""

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or channels // 2
        self.body = nn.Sequential(
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class VectorQuantizer(nn.Module):
    """Codebook with exponential-moving-average updates and dead-code restarts.

    EMA updates (van den Oord et al. 2017, appendix) train the codebook without a codebook
    loss; codes whose running usage falls below ``restart_threshold`` are moved onto random
    encoder outputs of the current batch, so the whole codebook stays in use and the index
    entropy the entropy coder sees is spread over real choices. Gradients pass the
    quantization straight through.
    """

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99,
                 restart_threshold: float = 0.05, eps: float = 1e-5):
        super().__init__()
        self.num_codes = num_codes
        self.dim = dim
        self.decay = decay
        self.restart_threshold = restart_threshold
        self.eps = eps
        embedding = torch.randn(num_codes, dim) * 0.1
        self.register_buffer("embedding", embedding)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embedding_sum", embedding.clone())

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """(B, H, W, K): each vector of z (B, D, H, W) against every code, squared distance
        less |z|^2 (the same for every code of a vector, so the ranking is unchanged)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)
        # |e|^2 - 2 z.e in one fused product
        distances = torch.addmm(self.embedding.pow(2).sum(1)[None, :], flat, self.embedding.t(), alpha=-2)
        return distances.view(z.shape[0], z.shape[2], z.shape[3], -1)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index map (B, H, W) of the nearest code of each vector of z (B, D, H, W)."""
        return self.distances(z).argmin(-1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, D, H, W) for an index map (B, H, W)."""
        return F.embedding(indices, self.embedding).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize z; returns (straight-through quantized z, indices, commitment loss)."""
        indices = self.nearest(z)
        quantized = self.lookup(indices)
        if self.training:
            self._update(z.detach(), indices)
        commitment = F.mse_loss(z, quantized.detach())
        quantized = z + (quantized - z).detach()
        return quantized, indices, commitment

    @torch.no_grad()
    def _update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)
        onehot = F.one_hot(indices.reshape(-1), self.num_codes).type(flat.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
        self.embedding.copy_(self.embedding_sum / smoothed[:, None])
        dead = self.cluster_size < self.restart_threshold
        n_dead = int(dead.sum())
        if n_dead:
            picks = flat[torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)]
            self.embedding[dead] = picks
            self.embedding_sum[dead] = picks
            self.cluster_size[dead] = 1.0

    def codebook_sha256(self) -> str:
        """Content hash of the codebook as stored (float32, little-endian, row-major)."""
        data = self.embedding.detach().cpu().to(torch.float32).numpy().astype("<f4")
        return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016); inverse=True gives IGDN.

    y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2). beta and gamma are kept positive by
    storing their square roots (bounded away from zero for beta), the usual reparametrization.
    """

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta_root = nn.Parameter(torch.ones(channels))
        self.gamma_root = nn.Parameter(torch.eye(channels) * math.sqrt(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta_root.clamp(min=1e-3) ** 2
        gamma = self.gamma_root ** 2
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)
