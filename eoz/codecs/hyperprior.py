"""The hyperprior codec: a multirate mean-scale hyperprior, lambdas chosen per block for a quality target."""

from __future__ import annotations

import copy
import math
import struct
import zlib

import constriction
import numpy as np
import torch

from eoz import residual
from eoz.codecs.base import Codec, _to_dtype, model_pins
from eoz.errors import ContainerError, InputError
from eoz.limits import inflate
from eoz.models import network_state
from eoz.models.entropy_models import SYMBOL_LIMIT, SymbolTables
from eoz.models.hyperprior import HyperpriorConfig, IntegerHyperSynthesis, ModulatedHyperprior
from eoz.normalization import BandNormalizer
from eoz.quality import (BLOCK_SIZES, QualityModel, QualityTarget, activity, block_grid, block_means,
                         block_sums, choose_codes, code_of_log2_lambda, expand_blocks, TOP_CODE)
from eoz.registry import ModelEntry

_FIXED_ONE = float(1 << IntegerHyperSynthesis.ACTIVATION_BITS)
REFINE_BASE_CODES = (0, 64, 160)   # base lambdas tried under a residual layer


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
        model.load_state_dict(network_state(tensors))
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
        return {**model_pins(self.entry), "normalization": self.normalizer.to_dict(),
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
        except struct.error as e:
            raise ContainerError(f"hyperprior tile head is unreadable: {e}") from None
        block = block or None
        if (block is not None and block not in BLOCK_SIZES) or (rows, cols) != block_grid(height, width, block):
            raise ContainerError(f"hyperprior tile has a {rows}x{cols} lambda grid of {block or 'global'} "
                                 f"blocks, which does not fit a {width}x{height} tile")
        # at most: codes and steps per block, a scale per band of each block, a float32 basis
        side_bound = rows * cols * (2 + bands) + 4 * bands * bands
        side = np.frombuffer(inflate(payload[9:9 + n], side_bound, "hyperprior tile side information"), np.uint8)
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
