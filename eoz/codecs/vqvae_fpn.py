"""The VQVAE-FPN codec: vector-quantized index maps, entropy coded with integer tables."""

from __future__ import annotations

import copy

import numpy as np
import torch

from eoz.codecs.base import Codec, model_pins
from eoz.entropy import IndexPrior
from eoz.errors import InputError
from eoz.models import network_state
from eoz.models.vqvae_fpn import VQVAEFPN, VQVAEFPNConfig
from eoz.normalization import BandNormalizer
from eoz.registry import ModelEntry

GPU_TILE_BATCH = 8   # 512 px tiles per network call on a GPU (about 70 MB of input)


class VQVAECodec(Codec):
    """VQVAE-FPN: one entropy-coded index map per level, decoded with the pinned codebooks.

    The network runs on CUDA when present, there on GPU_TILE_BATCH tiles at a time;
    entropy coding always runs on the CPU with integer tables, so a file encoded on a GPU
    decodes to the same indices anywhere.
    """

    codec_id = "vqvae-fpn"
    overlap = 8   # removes the tile seams (border error 1.5x the interior without it, 0.9x with)

    def __init__(self, entry: ModelEntry):
        self.entry = entry
        self.rate_weight = 0.0
        tensors = entry.load_weights()
        self.config = VQVAEFPNConfig(**entry.manifest["architecture"])
        self.model = VQVAEFPN(self.config).eval()
        self.model.load_state_dict(network_state(tensors))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # channels-last convolutions: about 15 % faster on the CPU, the same indices
        self.model.to(self.device, memory_format=torch.channels_last)
        self.batch_tiles = GPU_TILE_BATCH if self.device.type == "cuda" else 1
        self.prior = IndexPrior.from_tensors(tensors)
        self.normalizer = BandNormalizer.from_dict(entry.manifest["normalization"])
        self.stride = self.config.factor
        self.bands = entry.bands
        self.codebook_sha256 = [q.codebook_sha256() for q in self.model.quantizers]

    def with_rate_weight(self, rate_weight: float | None) -> "VQVAECodec":
        """The same loaded model choosing codes by distance + rate_weight x bits (0: nearest code).

        Encoder-only: files decode with any build. Larger weights give smaller files at
        some loss of quality, so one VQ model covers a range of rates.
        """
        if rate_weight is not None and not (0 <= rate_weight <= 100):
            raise InputError(f"rate weight must lie in [0, 100], not {rate_weight}")
        codec = copy.copy(self)
        codec.rate_weight = rate_weight or 0.0
        return codec

    def header_fields(self) -> dict:
        return {**model_pins(self.entry), "codebook_sha256": self.codebook_sha256,
                "normalization": self.normalizer.to_dict(),
                "quality": {"rate_weight": self.rate_weight} if self.rate_weight else {}}

    def level_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        return [(height // self.config.level_factor(l), width // self.config.level_factor(l))
                for l in range(self.config.levels)]

    def index_maps(self, tiles: np.ndarray) -> list[list[np.ndarray]]:
        """Index maps of each tile of a (B, bands, h, w) stack, in one network call."""
        with torch.inference_mode():
            x = torch.from_numpy(np.stack([self.normalizer.forward(t.astype(np.float64)) for t in tiles]))
            x = x.to(self.device).contiguous(memory_format=torch.channels_last)
            if self.rate_weight:   # the prior prices the codes; one tile's distances on the host at a time
                distances = self.model.distances(x)
                return [self.prior.choose([d[k].cpu().numpy() for d in distances], self.rate_weight)
                        for k in range(len(tiles))]
            maps = [i.cpu().numpy() for i in self.model.encode(x)]
        return [[m[k] for m in maps] for k in range(len(tiles))]

    def encode_tile(self, tile: np.ndarray, valid: np.ndarray) -> bytes:
        return self.prior.encode(self.index_maps(tile[None])[0])

    def encode_tiles(self, tiles: list[tuple[np.ndarray, np.ndarray]]) -> list[bytes]:
        """Tiles of the same shape go through the network together (edge tiles may differ)."""
        by_shape: dict[tuple, list[int]] = {}
        for k, (tile, _) in enumerate(tiles):
            by_shape.setdefault(tile.shape, []).append(k)
        out: list[bytes] = [b""] * len(tiles)
        for group in by_shape.values():
            for k, maps in zip(group, self.index_maps(np.stack([tiles[k][0] for k in group]))):
                out[k] = self.prior.encode(maps)
        return out

    def decode_tile(self, payload: bytes, bands: int, height: int, width: int) -> np.ndarray:
        maps = self.prior.decode(payload, self.level_shapes(height, width))
        with torch.inference_mode():
            y = self.model.decode([torch.from_numpy(m)[None].to(self.device) for m in maps])[0].cpu().numpy()
        return self.normalizer.inverse(y)
