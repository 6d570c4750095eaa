"""Fixed-quality control: a target PSNR/MSE per block (or per tile) -> 8-bit lambda codes.

Lambdas are coded in 8 bits, log-uniform over the hyperprior's trained range, and travel
with each tile (the header, written before any tile, carries the target and block size).

Choosing them is open loop first: a quality model fitted on training blocks,
log MSE = a + b*t + c*v + d*t*v with t = log2(lambda) and v = log of the block's
high-frequency energy, is inverted per block (the same role as Mijares i Verdú et al.'s
MSE(lambda) model, in a form that fits our blocks' spread). Open-loop predictions scatter
by a few dB per block, so the encoder then closes the loop on the actual reconstruction:
one two-sided secant step per block towards the target, then secant steps on the blocks
that still miss, only raising their lambdas, until every block meets its target or sits
at the top code. Every round is one synthesis pass over the tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from eoz.errors import InputError

# lambda range 64 .. 65536 (loss = bpp + lambda * MSE) that the hyperprior is trained over and
# the 8-bit codes span; defined here, not in the model, so that checking a target needs no torch
LAMBDA_MIN_LOG2, LAMBDA_MAX_LOG2 = 6.0, 16.0

TOP_CODE = 255
CODE_STEP_LOG2 = (LAMBDA_MAX_LOG2 - LAMBDA_MIN_LOG2) / TOP_CODE
BLOCK_SIZES = (16, 32, 64)
AIM = 0.99            # the closed loop aims 0.04 dB above the target, so one step usually lands
MAX_ROUNDS = 12


def lambda_of_code(code) -> np.ndarray:
    return 2.0 ** (LAMBDA_MIN_LOG2 + CODE_STEP_LOG2 * np.asarray(code, np.float64))


def code_of_log2_lambda(t, rounding=np.rint) -> np.ndarray:
    """Nearest (or, with rounding=np.ceil, next higher) 8-bit code of log2(lambda)."""
    return np.clip(rounding((np.asarray(t, np.float64) - LAMBDA_MIN_LOG2) / CODE_STEP_LOG2), 0, TOP_CODE).astype(np.uint8)


def psnr_to_mse(psnr: float, peak: float) -> float:
    return peak ** 2 / 10 ** (psnr / 10)


@dataclass
class QualityTarget:
    """What the user asked for: a target MSE (from --psnr or --mse) per block, or a fixed lambda."""

    mse: float | None = None
    psnr: float | None = None
    lmbda: float | None = None
    block: int | None = None       # block edge in pixels; None = one lambda per tile
    peak: float = 10000.0
    closed_loop: bool = True

    def __post_init__(self):
        given = [v is not None for v in (self.mse, self.psnr, self.lmbda)]
        if sum(given) != 1:
            raise InputError("give exactly one of a target PSNR, a target MSE or a lambda")
        if self.block is not None and self.block not in BLOCK_SIZES:
            raise InputError(f"block must be one of {BLOCK_SIZES} pixels or global, not {self.block}")
        if self.psnr is not None:
            self.mse = psnr_to_mse(self.psnr, self.peak)
        if self.mse is not None and not (self.mse > 0 and math.isfinite(self.mse)):
            raise InputError(f"target MSE must be a positive number, not {self.mse}")
        if self.lmbda is not None and not 2 ** LAMBDA_MIN_LOG2 <= self.lmbda <= 2 ** LAMBDA_MAX_LOG2:
            raise InputError(f"lambda must lie in [{2 ** LAMBDA_MIN_LOG2:g}, {2 ** LAMBDA_MAX_LOG2:g}]")

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def block_grid(height: int, width: int, block: int | None) -> tuple[int, int]:
    if block is None:
        return 1, 1
    return -(-height // block), -(-width // block)


def expand_blocks(grid: np.ndarray, cell: int | None, shape: tuple[int, int]) -> np.ndarray:
    """Per-position map of a block grid: each block covers cell x cell positions (None: all)."""
    if cell is None:
        return np.full(shape, grid[0, 0], grid.dtype)
    return np.repeat(np.repeat(grid, cell, 0), cell, 1)[:shape[0], :shape[1]]


def block_sums(values: np.ndarray, weights: np.ndarray, block: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sums of (bands, h, w) values over each block of the grid, and the weights' sums."""
    _, h, w = values.shape
    rows, cols = block_grid(h, w, block)
    b_h, b_w = (h, w) if block is None else (block, block)
    pad = ((0, 0), (0, rows * b_h - h), (0, cols * b_w - w))
    sums = np.pad(values * weights, pad).reshape(-1, rows, b_h, cols, b_w).sum(axis=(0, 2, 4))
    counts = np.pad(weights.astype(np.float64), pad).reshape(-1, rows, b_h, cols, b_w).sum(axis=(0, 2, 4))
    return sums, counts


def block_means(values: np.ndarray, weights: np.ndarray, block: int | None) -> np.ndarray:
    """Weighted mean of (bands, h, w) values over each block of the grid; 0 where no weight."""
    sums, counts = block_sums(values, weights, block)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def activity(tile: np.ndarray, valid: np.ndarray, block: int | None) -> np.ndarray:
    """Log of the mean squared horizontal and vertical differences per block: how hard it is to code."""
    x = tile.astype(np.float64)
    energy = np.zeros_like(x)
    energy[:, :, 1:] += np.diff(x, axis=2) ** 2
    energy[:, 1:, :] += np.diff(x, axis=1) ** 2
    return np.log(block_means(energy, valid, block) + 1.0)


@dataclass
class QualityModel:
    """log MSE = a + b*t + c*v + d*t*v (t = log2 lambda, v = block activity), fitted by least squares."""

    a: float
    b: float
    c: float
    d: float

    @classmethod
    def fit(cls, log2_lambda: np.ndarray, activity_: np.ndarray, mse: np.ndarray) -> "QualityModel":
        keep = mse > 0
        t, v = log2_lambda[keep], activity_[keep]
        design = np.stack([np.ones_like(t), t, v, t * v], axis=1)
        coef, *_ = np.linalg.lstsq(design, np.log(mse[keep]), rcond=None)
        return cls(*map(float, coef))

    def slope(self, activity_: np.ndarray) -> np.ndarray:
        """d log(MSE) / d log2(lambda) per block; always negative (at least -0.05)."""
        return np.minimum(self.b + self.d * activity_, -0.05)

    def log2_lambda_for(self, mse: float, activity_: np.ndarray) -> np.ndarray:
        return (math.log(mse) - self.a - self.c * activity_) / self.slope(activity_)

    def to_dict(self) -> dict:
        return asdict(self)


def choose_codes(measure: Callable[[np.ndarray], np.ndarray], target_mse: float,
                 activity_: np.ndarray, model: QualityModel, closed_loop: bool = True,
                 unreachable: np.ndarray | None = None) -> dict:
    """Per-block lambda codes meeting target_mse, given measure(codes) -> per-block MSE.

    ``unreachable`` marks blocks known to miss the target even at the top code: they stay
    there and cost the loop nothing. Returns the final codes and block MSEs, the open-loop
    ones for comparison, and the number of synthesis rounds used.
    """
    codes = code_of_log2_lambda(model.log2_lambda_for(target_mse, activity_), np.ceil)
    if unreachable is not None:
        codes[unreachable] = TOP_CODE
    mse = measure(codes)
    report = {"open_loop_codes": codes.copy(), "open_loop_mse": mse.copy(), "rounds": 1}
    aim = math.log(target_mse * AIM)
    slope = model.slope(activity_)
    previous = None
    for round_ in range(MAX_ROUNDS if closed_loop else 0):
        miss = mse > target_mse
        if round_ > 0 and not (miss & (codes < TOP_CODE)).any():
            break
        log_mse = np.log(np.maximum(mse, 1e-12))
        if previous is not None:  # secant slope where the last step moved the code
            moved = previous[0] != codes
            measured = (log_mse - previous[1]) / np.where(moved, (codes.astype(np.float64) - previous[0]) * CODE_STEP_LOG2, 1)
            slope = np.where(moved & (measured < -0.05), measured, slope)
        t = LAMBDA_MIN_LOG2 + CODE_STEP_LOG2 * codes.astype(np.float64)
        wanted = code_of_log2_lambda(t + (aim - log_mse) / slope, np.ceil)
        previous = (codes.copy(), log_mse)
        if unreachable is not None:
            wanted[unreachable] = TOP_CODE
        if round_ == 0:   # first correction: both ways, to cut overshoot as well as misses
            codes = wanted
        else:             # then only raise the blocks that miss, at least one code
            raise_to = np.maximum(wanted, np.minimum(codes.astype(np.int64) + 1, TOP_CODE)).astype(np.uint8)
            codes = np.where(miss, raise_to, codes)
        mse = measure(codes)
        report["rounds"] += 1
    report.update(codes=codes, mse=mse)
    return report
