"""Residual refinement: the guarantee for blocks the learned base cannot bring to target.

The hyperprior's closed loop raises a block's lambda until the block meets its target;
a block still short at the top lambda (targets above what the model reconstructs, such
as 55 dB) gets a second layer: its residual against the decoded base, quantized
uniformly with a step chosen per block after a spectral rotation (a KLT per tile), and
range coded with a discretized Gaussian whose scale is sent per block and component. A step at or below one digital number makes integer
data lossless, so some step always meets the target and the search ends. The base lambda
of such blocks is chosen by the codec for the fewest bits of both layers.

Side information per block: one step code (0 = no residual), and for refined blocks one
scale index per component; per tile with any refined block, the float32 basis. Steps are powers of 2^(1/16) (0.38 dB of MSE apart, which bounds
the overshoot): step = 2^((code - 65) / 16), from 1/16 (code 1) to about 3800; scale
indices point into the shared Gaussian tables.
"""

from __future__ import annotations

import numpy as np

from eoz.models.entropy_models import SymbolTables, scale_table
from eoz.quality import AIM, block_grid, block_means, block_sums, expand_blocks

_STEPS_PER_OCTAVE = 16
_UNIT_CODE = 65         # step 1


def step_of_code(code) -> np.ndarray:
    return 2.0 ** ((np.asarray(code, np.float64) - _UNIT_CODE) / _STEPS_PER_OCTAVE)


def _code_of_step(step) -> np.ndarray:
    return np.clip(np.floor(np.log2(step) * _STEPS_PER_OCTAVE) + _UNIT_CODE, 1, 255).astype(np.uint8)


def _step_map(codes: np.ndarray, block: int | None, shape) -> np.ndarray:
    return step_of_code(expand_blocks(codes, block, shape[1:]))[None]


def spectral_basis(residual: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(bands, bands) orthonormal KLT of the residual's bands, strongest component first.

    The base misses the same edges in every band, so its error is spectrally correlated;
    rotating it into uncorrelated components before quantizing leaves less to code (an
    orthonormal rotation keeps the squared error). Rounded to float32, as the file stores it.
    """
    samples = residual[:, valid.all(axis=0)].reshape(len(residual), -1)
    if samples.shape[1] < 2 or len(residual) == 1:
        return np.eye(len(residual), dtype=np.float32)
    eigenvalues, vectors = np.linalg.eigh(np.cov(samples))
    return vectors[:, np.argsort(eigenvalues)[::-1]].T.astype(np.float32)


def reconstruct(base: np.ndarray, symbols: np.ndarray, codes: np.ndarray, block: int | None,
                basis: np.ndarray) -> np.ndarray:
    """Base plus the dequantized residual, rotated back to bands (zero where a block has none)."""
    return base + np.einsum("kb,khw->bhw", basis.astype(np.float64), symbols * _step_map(codes, block, base.shape))


def _quantize(tile: np.ndarray, base: np.ndarray, codes: np.ndarray, block: int | None,
              basis: np.ndarray) -> np.ndarray:
    refined = expand_blocks(codes, block, tile.shape[1:])[None] > 0
    components = np.einsum("kb,bhw->khw", basis.astype(np.float64), tile - base)
    return np.where(refined, np.rint(components / _step_map(codes, block, tile.shape)), 0).astype(np.int64)


def choose_steps(tile: np.ndarray, base: np.ndarray, valid: np.ndarray, block: int | None, target_mse: float,
                 finish) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step codes (0 = none) so that every block meets target_mse, the symbols, and the basis.

    Each block short of the target starts from the step a uniform quantizer would need
    (MSE = step^2 / 12), then the coarsest step that still meets the target is searched:
    up while met (a peaked residual quantizes better than that), down while not. ``finish``
    maps a reconstruction to what the decoder outputs (rounding and clipping to the dtype),
    so the target is checked on the real output.
    """
    tile = tile.astype(np.float64)
    basis = spectral_basis(tile - base, valid)

    def block_mse(codes):
        symbols = _quantize(tile, base, codes, block, basis)
        recon = finish(reconstruct(base, symbols, codes, block, basis))
        return block_means((recon - tile) ** 2, valid, block), symbols

    codes = np.zeros(block_grid(*tile.shape[1:], block), np.uint8)
    mse, _ = block_mse(codes)
    refined = mse > target_mse
    codes[refined] = _code_of_step(np.sqrt(12 * target_mse * AIM))
    mse, symbols = block_mse(codes)
    growing = refined & (mse <= target_mse)
    while growing.any():
        trial = np.where(growing, np.minimum(codes.astype(np.int64) + 1, 255), codes).astype(np.uint8)
        trial_mse, trial_symbols = block_mse(trial)
        growing = growing & (trial_mse <= target_mse) & (trial > codes)
        # blocks quantize independently: the accepted ones take the trial's figures as they are
        codes = np.where(growing, trial, codes)
        mse = np.where(growing, trial_mse, mse)
        symbols = np.where(expand_blocks(growing, block, tile.shape[1:])[None], trial_symbols, symbols)
    while True:
        still = (mse > target_mse) & (codes > 1)
        if not still.any():
            return codes, symbols, basis
        codes[still] -= 1
        mse, symbols = block_mse(codes)


def scale_indices(symbols: np.ndarray, codes: np.ndarray, block: int | None) -> np.ndarray:
    """(refined blocks, bands) index of the table nearest each block-band's RMS symbol."""
    bands = symbols.shape[0]
    rms = np.sqrt(np.stack([block_means(symbols[b:b + 1].astype(np.float64) ** 2,
                                        np.ones((1, *symbols.shape[1:]), bool), block) for b in range(bands)]))
    log_scales = np.log(scale_table())
    nearest = np.abs(np.log(np.maximum(rms, 1e-3))[..., None] - log_scales).argmin(-1)
    return nearest[:, codes > 0].T.astype(np.uint8)


def _table_ids(codes: np.ndarray, scales: np.ndarray, block: int | None, shape) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of refined samples (band, row, col order) and each one's table."""
    per_block = np.zeros((shape[0],) + codes.shape, np.int64)
    per_block[:, codes > 0] = scales.T
    ids = np.stack([expand_blocks(per_block[b], block, shape[1:]) for b in range(shape[0])])
    refined = np.broadcast_to(expand_blocks(codes, block, shape[1:])[None] > 0, shape)
    where = np.flatnonzero(refined)
    return where, ids.ravel()[where]


def block_bits(tables: SymbolTables, symbols: np.ndarray, codes: np.ndarray, scales: np.ndarray,
               block: int | None) -> np.ndarray:
    """Bits the residual layer spends in each block, side information included."""
    where, ids = _table_ids(codes, scales, block, symbols.shape)
    per_sample = np.zeros(symbols.size)
    per_sample[where] = tables.bits(symbols.ravel()[where], ids)
    sums, _ = block_sums(per_sample.reshape(symbols.shape), np.ones(symbols.shape, bool), block)
    return sums + 8 * (1 + symbols.shape[0] * (codes > 0))


def encode(coder, tables: SymbolTables, symbols: np.ndarray, codes: np.ndarray, scales: np.ndarray,
           block: int | None) -> None:
    where, ids = _table_ids(codes, scales, block, symbols.shape)
    tables.encode(coder, symbols.ravel()[where], ids)


def decode(coder, tables: SymbolTables, codes: np.ndarray, scales: np.ndarray, block: int | None,
           shape: tuple[int, int, int]) -> np.ndarray:
    where, ids = _table_ids(codes, scales, block, shape)
    symbols = np.zeros(int(np.prod(shape)), np.int64)
    symbols[where] = tables.decode(coder, ids)
    return symbols.reshape(shape)
