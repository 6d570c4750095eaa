"""Codec objects (array in -> .eoz bytes out, and back) and the tile loop around them.

A codec turns one padded, nodata-filled tile (bands, h, w) of float64 values in original
units into bytes and back. Everything else is shared here: tiling, nodata masks, dtype
casting, header fields, and refusing a stream whose pinned model differs from the one
offered. Scenes go through ``read_window`` callbacks and an incremental writer, so memory
is bounded by the tile size, not the scene.

Tile payload framing: one flag byte; when bit 0 is set a nodata mask follows
(u32 length + zlib of the bit-packed mask); then the codec's own bytes.
"""

from __future__ import annotations

import copy
import io
import json
import math
import struct
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import constriction
import numpy as np
import torch

from eoz import jpeg2000, residual, spectral
from eoz.container import EozReader, EozWriter, Header
from eoz.entropy import IndexPrior
from eoz.errors import ContainerError, InputError, ModelMismatchError
from eoz.models.entropy_models import SYMBOL_LIMIT, SymbolTables
from eoz.models.hyperprior import HyperpriorConfig, IntegerHyperSynthesis, ModulatedHyperprior
from eoz.models.vqvae_fpn import VQVAEFPN, VQVAEFPNConfig
from eoz.normalization import BandNormalizer
from eoz.quality import (BLOCK_SIZES, QualityModel, QualityTarget, activity, block_grid, block_means,
                         block_sums, choose_codes, code_of_log2_lambda, expand_blocks, TOP_CODE)
from eoz.raster import RasterMeta, RasterReader, RasterWriter, window_transform
from eoz.registry import ModelEntry, ModelStore
from eoz.tiling import pad_to_multiple, padded_shape, tiles_in_window

DEFAULT_TILE_SIZE = 512
GPU_TILE_BATCH = 8   # 512 px tiles per network call on a GPU (about 70 MB of input)
_FIXED_ONE = float(1 << IntegerHyperSynthesis.ACTIVATION_BITS)
REFINE_BASE_CODES = (0, 64, 160)   # base lambdas tried under a residual layer
_HAS_MASK = 1


class Codec(ABC):
    codec_id: str
    stride: int = 1          # tiles are padded to multiples of this
    batch_tiles: int = 1     # tiles encode_scene hands to encode_tiles at once
    overlap: int = 0         # default context pixels coded around each tile (see encode_scene)
    bands: list[str] | None = None   # the bands a model expects, in order; None = any

    @abstractmethod
    def header_fields(self) -> dict:
        """Header fields this codec fills (model pins, normalization, parameters)."""

    @abstractmethod
    def encode_tile(self, tile: np.ndarray, valid: np.ndarray) -> bytes:
        """(bands, h, w) in the raster's dtype, nodata filled, h and w multiples of stride.

        valid marks the samples that are part of the image (not padding, not nodata):
        quality targets are measured on those only.
        """

    def encode_tiles(self, tiles: list[tuple[np.ndarray, np.ndarray]]) -> list[bytes]:
        """encode_tile over (tile, valid) pairs; a codec whose network batches overrides it."""
        return [self.encode_tile(tile, valid) for tile, valid in tiles]

    @abstractmethod
    def decode_tile(self, payload: bytes, bands: int, height: int, width: int) -> np.ndarray:
        """Inverse of encode_tile for a tile of that padded shape, in original units (any dtype)."""

    def check_input(self, meta: RasterMeta) -> None:
        if self.bands is not None and meta.count != len(self.bands):
            raise InputError(f"{self.codec_id} model expects {len(self.bands)} bands "
                             f"{self.bands}, the raster has {meta.count} {meta.band_names}")


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
        state = {k[len("model."):]: torch.from_numpy(v.copy()) for k, v in tensors.items()
                 if k.startswith("model.")}
        self.model.load_state_dict(state)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.batch_tiles = GPU_TILE_BATCH if self.device.type == "cuda" else 1
        self.prior = IndexPrior.from_tensors(tensors)
        self.normalizer = BandNormalizer.from_dict(entry.manifest["normalization"])
        self.stride = self.config.factor
        self.bands = entry.bands
        self.codebook_sha256 = [q.codebook_sha256() for q in self.model.quantizers]
        self.code_bits = [torch.from_numpy(b).float().to(self.device) for b in self.prior.code_bits()]

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
        return {"model_id": self.entry.model_id, "model_version": self.entry.version,
                "weights_sha256": self.entry.weights_sha256,
                "codebook_sha256": self.codebook_sha256,
                "normalization": self.normalizer.to_dict(),
                "quality": {"rate_weight": self.rate_weight} if self.rate_weight else {}}

    def level_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        return [(height // self.config.level_factor(l), width // self.config.level_factor(l))
                for l in range(self.config.levels)]

    def index_maps(self, tiles: np.ndarray) -> list[list[np.ndarray]]:
        """Index maps of each tile of a (B, bands, h, w) stack, in one network call."""
        with torch.no_grad():
            x = torch.from_numpy(np.stack([self.normalizer.forward(t.astype(np.float64)) for t in tiles]))
            costs = [self.rate_weight * b for b in self.code_bits] if self.rate_weight else None
            maps = [i.cpu().numpy() for i in self.model.encode(x.to(self.device), costs)]
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
        with torch.no_grad():
            y = self.model.decode([torch.from_numpy(m)[None].to(self.device) for m in maps])[0].cpu().numpy()
        return self.normalizer.inverse(y)


class JPEG2000Codec(Codec):
    """OpenJPEG JPEG 2000 per tile; optional per-tile spectral KLT; lossless or lossy."""

    codec_id = "jpeg2000"

    def __init__(self, quality: float | None = None, lossless: bool = False, klt: bool = False,
                 target_psnr: float | None = None, peak: float = 10000.0):
        if not lossless and quality is None and target_psnr is None:
            raise InputError("jpeg2000 needs quality, target_psnr or lossless")
        self.quality, self.lossless, self.klt = quality, lossless, klt
        self.target_psnr, self.peak = target_psnr, peak

    def header_fields(self) -> dict:
        return {"quality": {k: v for k, v in (("quality", self.quality), ("lossless", self.lossless),
                                               ("klt", self.klt), ("target_psnr", self.target_psnr),
                                               ("peak", self.peak)) if v not in (None, False)}}

    def encode_tile(self, tile: np.ndarray, valid: np.ndarray) -> bytes:
        if self.lossless:
            stream, params = jpeg2000.encode(tile, lossless=True)
        elif self.target_psnr is not None:
            stream, params = jpeg2000.encode_to_psnr(tile, self.target_psnr, self.peak, klt=self.klt)
        else:
            stream, params = jpeg2000.encode(tile, quality=self.quality, klt=self.klt)
        head = json.dumps(params, separators=(",", ":")).encode()
        return struct.pack("<I", len(head)) + head + stream

    def decode_tile(self, payload: bytes, bands: int, height: int, width: int) -> np.ndarray:
        try:
            (n,) = struct.unpack_from("<I", payload)
            params = json.loads(payload[4:4 + n])
        except (struct.error, ValueError) as e:
            raise ContainerError(f"jpeg2000 tile parameters are unreadable: {e}") from None
        return jpeg2000.decode(payload[4 + n:], params)


class HyperpriorCodec(Codec):
    """Multirate mean-scale hyperprior with per-block lambdas chosen for a quality target.

    Tile payload: u8 block size (0 = one lambda for the tile), u16 grid rows and columns,
    u32 length + zlib of the 8-bit lambda codes, then one range-coder stream: z with the
    factorized tables, then the latent residuals with the Gaussian table their integer
    hyper-synthesis output and lambda select. Only the analysis and synthesis transforms
    run in float (on CUDA when present); nothing that decides a symbol's table does.
    """

    codec_id = "hyperprior"
    # no overlap by default: quality blocks then sit on the image's own grid, and each
    # block's target bounds the error at tile borders as everywhere else

    def __init__(self, entry: ModelEntry, target: QualityTarget | None = None):
        self.entry, self.target = entry, target
        tensors = entry.load_weights()
        self.config = HyperpriorConfig(**entry.manifest["architecture"])
        model = ModulatedHyperprior(self.config).eval()
        model.load_state_dict({k[len("model."):]: torch.from_numpy(v.copy()) for k, v in tensors.items()
                               if k.startswith("model.")})
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device)
        self.hyper_synthesis = IntegerHyperSynthesis.from_tensors(tensors, "hyper_synthesis_int")
        self.z_tables = SymbolTables.from_tensors(tensors, "z_tables")
        self.y_tables = SymbolTables.from_tensors(tensors, "y_tables")
        self.thresholds = tensors["y_tables.thresholds"].astype(np.int64)
        self.log_gain = tensors["log_gain"].astype(np.int64)   # (256 codes, M), fixed point
        self.normalizer = BandNormalizer.from_dict(entry.manifest["normalization"])
        self.quality_model = QualityModel(**entry.manifest["quality_model"])
        self.stride = self.config.factor
        self.bands = entry.bands

    def with_target(self, target: QualityTarget | None) -> "HyperpriorCodec":
        """The same loaded model with another quality target (cheap: shares the weights)."""
        codec = copy.copy(self)
        codec.target = target
        return codec

    def header_fields(self) -> dict:
        return {"model_id": self.entry.model_id, "model_version": self.entry.version,
                "weights_sha256": self.entry.weights_sha256,
                "normalization": self.normalizer.to_dict(),
                "quality": self.target.to_dict() if self.target else {}}

    def _analyse(self, tile: np.ndarray):
        """Latent y (float64), side information z (ints), and the exact mean and log-scale."""
        with torch.no_grad():
            x = torch.from_numpy(self.normalizer.forward(tile))[None].to(self.device)
            y = self.model.analysis(x)
            z = torch.round(self.model.hyper_analysis(y))
        z = np.clip(z[0].cpu().numpy().astype(np.int64), -SYMBOL_LIMIT, SYMBOL_LIMIT)
        mean, log_scale = self.hyper_synthesis(z)
        return y[0].cpu().numpy().astype(np.float64), z, mean / _FIXED_ONE, log_scale

    def _log_gain(self, codes: np.ndarray, block: int | None, shape: tuple[int, int]) -> np.ndarray:
        """(M, h, w) fixed-point log gains of the latent, each from its block's lambda code."""
        cell = None if block is None else block // self.config.latent_factor
        return self.log_gain[expand_blocks(codes, cell, shape).astype(np.int64)].transpose(2, 0, 1)

    def _synthesize(self, symbols: np.ndarray, gain: np.ndarray, mean: np.ndarray) -> np.ndarray:
        y_hat = torch.from_numpy((symbols / gain + mean).astype(np.float32))[None].to(self.device)
        with torch.no_grad():
            return self.normalizer.inverse(self.model.synthesis(y_hat)[0].cpu().numpy())

    def _quantize(self, analysed, codes: np.ndarray, block: int | None):
        y, _, mean, _ = analysed
        log_gain = self._log_gain(codes, block, y.shape[1:])
        gain = np.exp(log_gain / _FIXED_ONE)
        return np.clip(np.rint((y - mean) * gain), -SYMBOL_LIMIT, SYMBOL_LIMIT), gain, log_gain

    def _base(self, tile: np.ndarray, analysed, codes: np.ndarray, block: int | None) -> np.ndarray:
        symbols, gain, _ = self._quantize(analysed, codes, block)
        return self._synthesize(symbols, gain, analysed[2])

    @staticmethod
    def _finish(recon: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """What the decoder outputs (integer data rounded and clipped to its dtype), as float64
        so that errors against the original are never computed in unsigned arithmetic."""
        return _to_dtype(recon, dtype).astype(np.float64) if dtype.kind in "iu" else recon

    def block_mse(self, tile: np.ndarray, valid: np.ndarray, block: int | None, codes: np.ndarray,
                  analysed=None) -> np.ndarray:
        """Per-block MSE (original units, valid samples) of the base layer coded with these lambda codes."""
        recon = self._finish(self._base(tile, analysed or self._analyse(tile), codes, block), tile.dtype)
        return block_means((recon - tile) ** 2, valid, block)

    def _base_bits(self, analysed, codes: np.ndarray, block: int | None) -> np.ndarray:
        """Bits of each block's latent symbols (the side information z is the same for any lambda)."""
        symbols, _, log_gain = self._quantize(analysed, codes, block)
        table_ids = np.searchsorted(self.thresholds, analysed[3] + log_gain, side="right")
        bits = self.y_tables.bits(symbols.astype(np.int64).ravel(), table_ids.ravel()).reshape(symbols.shape)
        cell = None if block is None else block // self.config.latent_factor
        return block_sums(bits.sum(0, keepdims=True), np.ones((1, *bits.shape[1:]), bool), cell)[0]

    def _refine(self, tile: np.ndarray, valid: np.ndarray, analysed, codes: np.ndarray, short: np.ndarray,
                block: int | None):
        """Residual layer for the ``short`` blocks, still short of the target at the top lambda.

        Their base lambda is then chosen again, from a few candidates, for the fewest bits of
        base plus residual: a base that cannot reach the target anyway is cheapest kept
        coarse, since the residual coder gains 6 dB per bit wherever the base stops.
        Returns codes, the residual's step codes, symbols and basis, and the block MSEs of the output.
        """
        target = self.target.mse
        finish = lambda r: self._finish(r, tile.dtype)
        best = None
        for base_code in REFINE_BASE_CODES:
            trial = np.where(short, base_code, codes).astype(np.uint8)
            base = self._base(tile, analysed, trial, block)
            steps, symbols, basis = residual.choose_steps(tile, base, valid, block, target, finish)
            scales = residual.scale_indices(symbols, steps, block)
            bits = self._base_bits(analysed, trial, block).sum() + \
                residual.block_bits(self.y_tables, symbols, steps, scales, block).sum()
            if best is None or bits < best[0]:
                best = (bits, trial, steps, symbols, basis, base)
        _, codes, steps, symbols, basis, base = best
        recon = finish(residual.reconstruct(base, symbols, steps, block, basis))
        return codes, steps, symbols, basis, block_means((recon - tile) ** 2, valid, block)

    def encode_with_report(self, tile: np.ndarray, valid: np.ndarray) -> tuple[bytes, dict]:
        """Payload and how it was chosen: lambda codes, block MSEs, open-loop figures, refined blocks."""
        if self.target is None:
            raise InputError("the hyperprior needs a target: --psnr, --mse or --lambda")
        analysed = self._analyse(tile)
        block = self.target.block
        rows, cols = block_grid(tile.shape[1], tile.shape[2], block)
        if self.target.lmbda is not None:
            codes = np.full((rows, cols), code_of_log2_lambda(math.log2(self.target.lmbda)), np.uint8)
            report = {"codes": codes}
        else:
            measure = lambda c: self.block_mse(tile, valid, block, c, analysed)
            # blocks the model cannot bring to target at all go straight to the residual layer
            unreachable = measure(np.full((rows, cols), TOP_CODE, np.uint8)) > self.target.mse \
                if self.target.closed_loop else None
            report = choose_codes(measure, self.target.mse, activity(tile, valid, block), self.quality_model,
                                  self.target.closed_loop, unreachable)
            codes = report["codes"]
        steps = np.zeros_like(codes)
        residual_symbols, basis = np.zeros(tile.shape, np.int64), np.zeros((0, 0), np.float32)
        short = report["mse"] > self.target.mse if self.target.mse is not None else None  # closed loop's last measure
        if self.target.closed_loop and short is not None and short.any():
            codes, steps, residual_symbols, basis, report["mse"] = self._refine(tile, valid, analysed, codes,
                                                                                short, block)
            report["codes"] = codes
        _, z, _, log_scale = analysed
        symbols, _, log_gain = self._quantize(analysed, codes, block)
        report["refined_blocks"] = int((steps > 0).sum())
        scales = residual.scale_indices(residual_symbols, steps, block)
        encoder = constriction.stream.queue.RangeEncoder()
        self.z_tables.encode(encoder, z.ravel(), np.repeat(np.arange(len(z)), z[0].size))
        self.y_tables.encode(encoder, symbols.astype(np.int64).ravel(),
                             np.searchsorted(self.thresholds, log_scale + log_gain, side="right").ravel())
        residual.encode(encoder, self.y_tables, residual_symbols, steps, scales, block)
        # the basis travels only with refined blocks (a re-chosen base can leave none)
        side = zlib.compress(codes.astype(np.uint8).tobytes() + steps.tobytes() + scales.tobytes()
                             + (basis.astype("<f4").tobytes() if steps.any() else b""), 9)
        head = struct.pack("<BHHI", block or 0, rows, cols, len(side))
        return head + side + encoder.get_compressed().astype("<u4").tobytes(), report

    def encode_tile(self, tile: np.ndarray, valid: np.ndarray) -> bytes:
        return self.encode_with_report(tile, valid)[0]

    def decode_tile(self, payload: bytes, bands: int, height: int, width: int) -> np.ndarray:
        try:
            block, rows, cols, n = struct.unpack_from("<BHHI", payload)
            side = np.frombuffer(zlib.decompress(payload[9:9 + n]), np.uint8)
        except (struct.error, zlib.error) as e:
            raise ContainerError(f"hyperprior tile head is unreadable: {e}") from None
        block = block or None
        if (block is not None and block not in BLOCK_SIZES) or (rows, cols) != block_grid(height, width, block):
            raise ContainerError(f"hyperprior tile has a {rows}x{cols} lambda grid of {block or 'global'} "
                                 f"blocks, which does not fit a {width}x{height} tile")
        codes, steps = side[:rows * cols].reshape(rows, cols), side[rows * cols:2 * rows * cols].reshape(rows, cols)
        refined = int((steps > 0).sum())
        scales = side[2 * rows * cols:2 * rows * cols + refined * bands]
        basis = side[2 * rows * cols + refined * bands:].view("<f4").astype(np.float32) if refined else None
        if steps.size != rows * cols or scales.size != refined * bands or \
                (refined and basis.size != bands * bands) or (not refined and side.size != 2 * rows * cols):
            raise ContainerError("hyperprior tile side information has the wrong length")
        words = payload[9 + n:]
        if len(words) % 4 or not words:
            raise ContainerError(f"hyperprior stream of {len(words)} bytes is empty or not whole words")
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(words, "<u4").astype(np.uint32))
        latent = (height // self.config.latent_factor, width // self.config.latent_factor)
        z_shape = (self.config.hyper_channels, height // self.stride, width // self.stride)
        z = self.z_tables.decode(decoder, np.repeat(np.arange(z_shape[0]), z_shape[1] * z_shape[2]))
        mean, log_scale = self.hyper_synthesis(z.reshape(z_shape))
        log_gain = self._log_gain(codes, block, latent)
        table_ids = np.searchsorted(self.thresholds, log_scale + log_gain, side="right")
        symbols = self.y_tables.decode(decoder, table_ids.ravel()).reshape(table_ids.shape)
        residual_symbols = residual.decode(decoder, self.y_tables, steps, scales.reshape(-1, bands), block,
                                           (bands, height, width))
        if not decoder.maybe_exhausted():
            raise ContainerError("hyperprior stream does not end where its symbols do: truncated or extra data")
        base = self._synthesize(symbols, np.exp(log_gain / _FIXED_ONE), mean / _FIXED_ONE)
        if not refined:
            return base
        return residual.reconstruct(base, residual_symbols, steps, block, basis.reshape(bands, bands))


@dataclass(frozen=True)
class SubModel:
    """One network of a multi-network model: its manifest section and its own tensors."""
    model_id: str
    version: str
    weights_sha256: str
    manifest: dict
    tensors: dict
    bands: tuple = ()

    def load_weights(self) -> dict:
        return self.tensors


_EMPTY, _INDEPENDENT, _PREDICTED = 0, 1, 2   # how a band is coded in a spectral-partition tile


class SpectralPartitionCodec(Codec):
    """Many-band rasters coded band by band with one single-channel hyperprior per spectral
    interval (see eoz.spectral); each band after an interval's first is, by default, coded
    as the residual of its prediction from the previous decoded band, with a second model
    trained on such residuals.

    Tile payload: the dtype's name (u8 length + ascii), then per band one mode byte
    (0: no valid pixel, 1: coded on its own, 2: predicted, followed by float32 gain and
    offset), a u32 length and that band's hyperprior payload. The quality target holds for
    every band, so it holds for the tile. The prediction uses the decoded band as the
    decoder outputs it; the entropy-coded symbols are bit-exact anywhere, the float
    synthesis agrees between machines to rounding.
    """

    codec_id = "spectral-partition"

    def __init__(self, entry: ModelEntry, target: QualityTarget | None = None, predict_bands: bool = True):
        self.entry, self.target, self.predict_bands = entry, target, predict_bands
        tensors = entry.load_weights()
        shared = {n: v for n, v in tensors.items() if not n.startswith("interval")}   # tables of every sub-model
        self.intervals = [(iv["start"], iv["stop"]) for iv in entry.manifest["intervals"]]
        self.interval_starts = {start for start, _ in self.intervals}
        self.models = []
        for k, interval in enumerate(entry.manifest["intervals"]):
            pair = []
            for kind in ("independent", "predicted"):
                prefix = f"interval{k}.{kind}."
                sub = SubModel(entry.model_id, entry.version, entry.weights_sha256, interval[kind],
                               {**shared, **{n[len(prefix):]: v for n, v in tensors.items() if n.startswith(prefix)}})
                pair.append(HyperpriorCodec(sub))
            self.models.append(pair)
        self.interval_of = np.concatenate([np.full(b - a, k) for k, (a, b) in enumerate(self.intervals)])
        self.stride = HyperpriorConfig.factor
        self.bands = entry.bands

    def with_options(self, target: QualityTarget | None, predict_bands: bool | None = None) -> "SpectralPartitionCodec":
        """The same loaded models with another target, and with or without band prediction."""
        codec = copy.copy(self)
        codec.target = target
        codec.predict_bands = self.predict_bands if predict_bands is None else predict_bands
        codec.models = [[m.with_target(target) for m in pair] for pair in self.models]
        return codec

    def header_fields(self) -> dict:
        quality = {**(self.target.to_dict() if self.target else {}), "band_prediction": self.predict_bands}
        return {"model_id": self.entry.model_id, "model_version": self.entry.version,
                "weights_sha256": self.entry.weights_sha256, "quality": quality}

    def _band_codec(self, band: int, predicted: bool) -> HyperpriorCodec:
        return self.models[self.interval_of[band]][int(predicted)]

    def _predicted(self, band: int, previous: np.ndarray | None) -> bool:
        return previous is not None and band not in self.interval_starts

    def encode_tile(self, tile: np.ndarray, valid: np.ndarray) -> bytes:
        if self.target is None:
            raise InputError("the spectral-partition model needs a target: --psnr, --mse or --lambda")
        dtype = tile.dtype
        integer = dtype.kind in "iu"
        parts, previous = [struct.pack("<B", len(dtype.str)) + dtype.str.encode()], None
        for b, (band, band_valid) in enumerate(zip(tile, valid)):
            if not band_valid.any():
                parts.append(struct.pack("<B", _EMPTY))
                previous = None
                continue
            predicted = self.predict_bands and self._predicted(b, previous)
            prediction = 0.0
            if predicted:
                gain, offset = spectral.fit_prediction(previous, band, band_valid)
                prediction = spectral.predict(previous, gain, offset, integer)
                source = band.astype(np.float64) - prediction
                source = source.astype(np.int64) if integer else source
                parts.append(struct.pack("<Bff", _PREDICTED, gain, offset))
            else:
                source = band
                parts.append(struct.pack("<B", _INDEPENDENT))
            codec = self._band_codec(b, predicted)
            payload = codec.encode_tile(source[None], band_valid[None])
            parts.append(struct.pack("<I", len(payload)) + payload)
            decoded = codec.decode_tile(payload, 1, *band.shape)[0]
            previous = _to_dtype(prediction + decoded, dtype).astype(np.float64)
        return b"".join(parts)

    def decode_tile(self, payload: bytes, bands: int, height: int, width: int) -> np.ndarray:
        try:
            n = payload[0]
            dtype = np.dtype(payload[1:1 + n].decode("ascii"))
        except (IndexError, UnicodeDecodeError, TypeError) as e:
            raise ContainerError(f"spectral-partition tile head is unreadable: {e}") from None
        out, pos, previous = np.zeros((bands, height, width)), 1 + n, None
        for b in range(bands):
            try:
                mode = payload[pos]
                if mode == _PREDICTED:
                    _, gain, offset = struct.unpack_from("<Bff", payload, pos)
                    pos += 9
                elif mode in (_INDEPENDENT, _EMPTY):
                    pos += 1
                else:
                    raise ContainerError(f"band {b} has unknown coding mode {mode}")
                if mode == _EMPTY:
                    previous = None
                    continue
                (length,) = struct.unpack_from("<I", payload, pos)
            except (IndexError, struct.error):
                raise ContainerError(f"spectral-partition tile ends inside band {b}'s head") from None
            band_payload = payload[pos + 4:pos + 4 + length]
            pos += 4 + length
            if len(band_payload) != length:
                raise ContainerError(f"spectral-partition tile ends inside band {b}")
            predicted = mode == _PREDICTED
            if predicted and previous is None:
                raise ContainerError(f"band {b} is predicted from a band that was not coded")
            prediction = spectral.predict(previous, gain, offset, dtype.kind in "iu") if predicted else 0.0
            decoded = self._band_codec(b, predicted).decode_tile(band_payload, 1, height, width)[0]
            previous = out[b] = _to_dtype(prediction + decoded, dtype).astype(np.float64)
        if pos != len(payload):
            raise ContainerError("spectral-partition tile has data after its last band")
        return out


LEARNED_CODECS = {c.codec_id: c for c in (VQVAECodec, HyperpriorCodec, SpectralPartitionCodec)}


@lru_cache(maxsize=8)
def _learned_codec(root: str, model_id: str, version: str) -> Codec:
    """Models load once per process: workers keep them between jobs."""
    entry = ModelStore(root).get(model_id, version)
    return LEARNED_CODECS[entry.codec](entry)


def codec_for_model(model_id: str, version: str | None = None, store: ModelStore | None = None,
                    **params) -> Codec:
    """The codec for a model id; ``jpeg2000`` is the classical baseline.

    Parameters: jpeg2000 takes its own (quality, lossless, klt, target_psnr); the
    hyperprior takes ``target`` (a QualityTarget); a VQ model takes ``rate_weight``.
    """
    if model_id == JPEG2000Codec.codec_id:
        return JPEG2000Codec(**params)
    store = store or ModelStore()
    entry = store.get(model_id, version)
    if entry.codec not in LEARNED_CODECS:
        raise InputError(f"{model_id} uses codec {entry.codec!r}, which this build cannot run")
    allowed = {HyperpriorCodec.codec_id: {"target"}, SpectralPartitionCodec.codec_id: {"target", "predict_bands"},
               VQVAECodec.codec_id: {"rate_weight"}}[entry.codec]
    if set(params) - allowed:
        raise InputError(f"{model_id} takes {sorted(allowed)}, got {sorted(params)}")
    codec = _learned_codec(str(store.root), entry.model_id, entry.version)
    if entry.codec == HyperpriorCodec.codec_id:
        return codec.with_target(params.get("target"))
    if entry.codec == SpectralPartitionCodec.codec_id:
        return codec.with_options(params.get("target"), params.get("predict_bands"))
    return codec.with_rate_weight(params.get("rate_weight"))


def _pins(codec_id: str, weights_sha256, codebook_sha256) -> tuple:
    """What must match between a file and the model that decodes it."""
    return (weights_sha256, list(codebook_sha256)) if codec_id == VQVAECodec.codec_id else (weights_sha256,)


def codec_for_header(header: Header, store: ModelStore | None = None) -> Codec:
    """The codec that decodes a file, after checking the store's model matches its pins."""
    if header.codec == JPEG2000Codec.codec_id:
        return JPEG2000Codec(lossless=True)   # decoding needs no encoder settings
    if header.codec not in LEARNED_CODECS:
        raise ContainerError(f"unknown codec {header.codec!r} in the file header")
    codec = codec_for_model(header.model_id, header.model_version, store)
    if codec.codec_id != header.codec:
        raise ModelMismatchError(f"the file was encoded with the {header.codec} codec; the store's "
                                 f"{header.model_id} is a {codec.codec_id} model")
    offered_codebooks = getattr(codec, "codebook_sha256", [])
    if _pins(header.codec, header.weights_sha256, header.codebook_sha256) != \
            _pins(header.codec, codec.entry.weights_sha256, offered_codebooks):
        raise ModelMismatchError(
            f"the file was encoded with {header.model_id} version {header.model_version} "
            f"(weights {str(header.weights_sha256)[:12]}, codebooks "
            f"{[c[:12] for c in header.codebook_sha256]}); the store's {codec.entry.model_id} "
            f"version {codec.entry.version} has weights {codec.entry.weights_sha256[:12]}, codebooks "
            f"{[c[:12] for c in offered_codebooks]}: refusing to decode with other weights")
    return codec


def _nodata_mask(tile: np.ndarray, nodata: float | None) -> np.ndarray | None:
    if nodata is None:
        if tile.dtype.kind == "f" and np.isnan(tile).any():
            raise InputError("the raster has NaN pixels but declares no nodata value")
        return None
    mask = np.isnan(tile) if np.isnan(nodata) else tile == nodata
    return mask if mask.any() else None


def _filled(tile: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Nodata pixels replaced by their band's mean over the tile's valid pixels."""
    tile = tile.copy()
    for band, band_mask in zip(tile, mask):
        valid = band[~band_mask]
        band[band_mask] = valid.astype(np.float64).mean() if valid.size else 0
    return tile


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def fill_nodata(tile: np.ndarray, nodata: float | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The tile with nodata pixels filled (band means of the valid ones), and the nodata mask."""
    mask = _nodata_mask(tile, nodata)
    return (tile, None) if mask is None else (_filled(tile, mask), mask)


def prepare_tile(codec: Codec, tile: np.ndarray, nodata: float | None,
                 kept: tuple[slice, slice] | None = None) -> tuple[bytes, np.ndarray, np.ndarray]:
    """The payload prefix (nodata mask), and the padded tile and valid mask the codec codes,
    of one coded window; ``kept`` is the part the decoder keeps (the rest is overlap)."""
    tile, mask = fill_nodata(tile, nodata)
    prefix = b"\x00"
    if mask is not None:
        packed = zlib.compress(np.packbits(mask).tobytes(), 9)
        prefix = bytes([_HAS_MASK]) + struct.pack("<I", len(packed)) + packed
    valid = np.ones(tile.shape, bool) if mask is None else ~mask
    if kept is not None:
        valid &= np.pad(np.ones((1, kept[0].stop - kept[0].start, kept[1].stop - kept[1].start), bool),
                        [(0, 0), (kept[0].start, tile.shape[1] - kept[0].stop),
                         (kept[1].start, tile.shape[2] - kept[1].stop)])
    padded = pad_to_multiple(tile, codec.stride)
    valid = np.pad(valid, [(0, 0)] + [(0, p - n) for p, n in zip(padded.shape[1:], tile.shape[1:])])
    return prefix, padded, valid


def decode_tile_payload(codec: Codec, payload: bytes, header: Header, index: int) -> np.ndarray:
    """One tile, cropped to its own place in the image and cast to the original dtype."""
    row_off, col_off, h, w = header.tile_bounds(index)
    r0, c0, coded_h, coded_w = header.coded_bounds(index)
    bands, dtype = len(header.bands), np.dtype(header.dtype)
    try:
        mask, body = None, payload[1:]
        if payload[0] & _HAS_MASK:
            (n,) = struct.unpack_from("<I", payload, 1)
            size = bands * coded_h * coded_w
            bits = np.frombuffer(zlib.decompress(payload[5:5 + n], bufsize=size // 8 + 1), np.uint8)
            mask = np.unpackbits(bits, count=size).reshape(bands, coded_h, coded_w).astype(bool)
            body = payload[5 + n:]
        values = codec.decode_tile(body, bands, *padded_shape(coded_h, coded_w, codec.stride))
    except (ContainerError, ModelMismatchError):
        raise
    except Exception as e:  # a payload that passed its crc but that the codec cannot read
        raise ContainerError(f"tile {index} cannot be decoded: {e}") from e
    own = (slice(None), slice(row_off - r0, row_off - r0 + h), slice(col_off - c0, col_off - c0 + w))
    out = _to_dtype(values[:, :coded_h, :coded_w][own], dtype)
    if mask is not None:
        mask = mask[own]
        if dtype.kind in "iu":
            # a valid pixel rounded onto the nodata value would read as missing
            out[(out == header.nodata) & ~mask] += 1 if header.nodata < np.iinfo(dtype).max else -1
        out[mask] = header.nodata
    return out


def header_meta(header: Header, window: tuple[int, int, int, int] | None = None) -> RasterMeta:
    """RasterMeta of the decoded image, or of a (col_off, row_off, width, height) window of it."""
    col_off, row_off, width, height = window or (0, 0, header.width, header.height)
    return RasterMeta(height=height, width=width, count=len(header.bands), dtype=header.dtype,
                      band_names=list(header.bands), crs=header.crs,
                      transform=window_transform(header.transform, col_off, row_off),
                      nodata=header.nodata)


def encode_scene(read_window: Callable[[int, int, int, int], np.ndarray], meta: RasterMeta,
                 codec: Codec, out: BinaryIO, tile_size: int = DEFAULT_TILE_SIZE,
                 overlap: int | None = None) -> Header:
    """Encode tile by tile; read_window(col_off, row_off, width, height) gives each tile.

    Each tile codes its own area plus ``overlap`` pixels of context on every side (the
    codec's default when None) and the decoder keeps only its own area: pixels at a tile's
    edge are then coded with real neighbours rather than padding, so no seams show, at the
    cost of coding the overlap twice. Tiles stay independent, so windows decode alone.
    Tiles reach the codec ``codec.batch_tiles`` at a time, so memory holds that many tiles.
    """
    codec.check_input(meta)
    if tile_size % codec.stride:
        raise InputError(f"tile size {tile_size} is not a multiple of the model's stride {codec.stride}")
    header = Header(codec=codec.codec_id, height=meta.height, width=meta.width,
                    bands=list(meta.band_names), dtype=meta.dtype, tile_size=tile_size,
                    crs=meta.crs, transform=meta.transform, nodata=meta.nodata,
                    overlap=codec.overlap if overlap is None else overlap, **codec.header_fields())
    with EozWriter(out, header) as writer:
        pending = []
        for index in range(header.tile_count):
            row_off, col_off, h, w = header.tile_bounds(index)
            r0, c0, coded_h, coded_w = header.coded_bounds(index)
            kept = (slice(row_off - r0, row_off - r0 + h), slice(col_off - c0, col_off - c0 + w))
            pending.append(prepare_tile(codec, read_window(c0, r0, coded_w, coded_h), meta.nodata, kept))
            if len(pending) == codec.batch_tiles or index == header.tile_count - 1:
                bodies = codec.encode_tiles([(padded, valid) for _, padded, valid in pending])
                for (prefix, _, _), body in zip(pending, bodies):
                    writer.write_tile(prefix + body)
                pending = []
    return header


def decode_scene(reader: EozReader, window: tuple[int, int, int, int] | None = None,
                 store: ModelStore | None = None):
    """Yield (array, col_off, row_off) pieces of the window (or the image), tile by tile.

    Only the tiles the window touches are read and decoded; offsets are relative to the window.
    """
    header = reader.header
    codec = codec_for_header(header, store)
    col0, row0, width, height = window or (0, 0, header.width, header.height)
    for index in tiles_in_window(header, col0, row0, width, height):
        t_row, t_col, h, w = header.tile_bounds(index)
        tile = decode_tile_payload(codec, reader.read_tile(index), header, index)
        r0, c0 = max(row0, t_row), max(col0, t_col)
        r1, c1 = min(row0 + height, t_row + h), min(col0 + width, t_col + w)
        yield tile[:, r0 - t_row:r1 - t_row, c0 - t_col:c1 - t_col], c0 - col0, r0 - row0


def compress_array(array: np.ndarray, meta: RasterMeta, codec: Codec,
                   tile_size: int = DEFAULT_TILE_SIZE, overlap: int | None = None) -> bytes:
    if array.shape != (meta.count, meta.height, meta.width):
        raise InputError(f"array shape {array.shape} does not match its meta")
    out = io.BytesIO()
    encode_scene(lambda c, r, w, h: array[:, r:r + h, c:c + w], meta, codec, out, tile_size, overlap)
    return out.getvalue()


def decompress_array(source, window=None, store: ModelStore | None = None) -> tuple[np.ndarray, RasterMeta]:
    with EozReader(source) as reader:
        meta = header_meta(reader.header, window)
        out = np.empty((meta.count, meta.height, meta.width), dtype=meta.dtype)
        for piece, col, row in decode_scene(reader, window, store):
            out[:, row:row + piece.shape[1], col:col + piece.shape[2]] = piece
    return out, meta


def compress_file(in_path: str | Path, out_path: str | Path, codec: Codec,
                  tile_size: int = DEFAULT_TILE_SIZE, overlap: int | None = None) -> Header:
    """GeoTIFF -> .eoz, reading one tile window at a time; no partial file on failure."""
    out_path = Path(out_path)
    part = out_path.with_name(out_path.name + ".part")
    try:
        with RasterReader(in_path) as reader, open(part, "wb") as out:
            header = encode_scene(lambda c, r, w, h: reader.read((c, r, w, h))[0],
                                  reader.meta, codec, out, tile_size, overlap)
        part.replace(out_path)
    finally:
        part.unlink(missing_ok=True)
    return header


def decompress_file(in_path: str | Path, out_path: str | Path, window=None, cog: bool = False,
                    store: ModelStore | None = None) -> RasterMeta:
    """.eoz -> GeoTIFF/COG, written tile by tile."""
    with EozReader(in_path) as reader:
        meta = header_meta(reader.header, window)
        with RasterWriter(out_path, meta, cog=cog) as writer:
            for piece, col, row in decode_scene(reader, window, store):
                writer.write(piece, col, row)
    return meta
