"""The wavelet codec: spectral KLT + CDF 9/7 + dependent (trellis) quantization + a learned,
adaptive context model; fixed quality by a closed loop on per-block quantizer steps.

It starts where JPEG 2000 with a spectral KLT ends (the same transforms) and learns only
the entropy model, which 2 CPU cores fit from training rasters in minutes (see
eoz.subband_coder and eoz.train_wavelet). Any band count and dtype: integer outputs are
rounded and clipped to their dtype, floats (SAR in dB) kept as float32.

Quantization: subband b of a block with step code k has step
``2 ** (log2_base + (k - 96) / 32) / sqrt(gain_b)``, where gain_b is the energy of the
subband's synthesis basis, so each coefficient's error weighs the same in the image
(the MSE-optimal allocation at high rate). Detail subbands take the dependent quantizer of
eoz.subband_coder (levels chosen by a Viterbi search for the least error plus
RATE_WEIGHT x bits, with the model's own rates): about 5 % fewer bytes than a deadzone
scalar quantizer at equal PSNR. The LL band takes a deadzone scalar quantizer
(floor(|c| / step + ROUNDING)). The decoder puts each level at its bin's centroid,
measured by the encoder and sent per subband.

Tile payload (little endian): u8 format version, u8 levels, u8 block size (0 = one step for
the tile), u16 grid rows and cols, f32 log2 base step, u8 KLT flag; with the KLT, B f32
means and B x B f32 matrix (columns = eigenvectors), else B f32 means; the step codes (u8
per block), the centroid offsets (u8, 128 + 256 x the offset in steps, per component group
and subband), then the range-coded levels.
"""

from __future__ import annotations

import copy
import math
import struct

import numba
import numpy as np

from eoz import spectral, wavelet
from eoz.codecs.base import Codec, _to_dtype, model_pins
from eoz.errors import ContainerError, InputError
from eoz.quality import BLOCK_SIZES, QualityTarget, block_grid
from eoz.registry import ModelEntry
from eoz.subband_coder import MAX_MAGNITUDE, SubbandModel

LEVELS = 5
ROUNDING = 0.3              # deadzone: magnitudes below 0.7 steps quantize to zero
CODE_STEPS = 32             # step codes per octave: one code moves the MSE by about 0.19 dB
MID_CODE = 96               # codes span 3 octaves finer and 5 coarser than the base step
KLT_MAX_BANDS = 16          # above this the B x B matrix costs more than it saves per tile
AIM = 0.995                 # the block loop aims just under the target MSE
MAX_ROUNDS = 12
TOP_CODE = 255
DQ_OFFSET = 0.5             # octaves finer than a scalar quantizer's step for the same MSE
RATE_WEIGHT = 0.35          # dependent quantization: bits' weight against squared error in steps^2
MAX_LOG2_BASE = 128.0       # base steps of 2^-128..2^128: past every target the resolver accepts
_HEAD = struct.Struct("<BBBHHfB")
FORMAT = 1                  # payload format version: a decoder refuses others


def _component_group(c: int) -> int:
    return 0 if c == 0 else 1


class WaveletCodec(Codec):
    """Wavelet codec with a learned context model (model id ``wavelet-hyperprior``)."""

    codec_id = "wavelet"
    parallel_tiles = True   # numba loops and numpy release the GIL: threads scale (benchmarks/tile_threads.py)

    def __init__(self, entry: ModelEntry, target: QualityTarget | None = None):
        self.entry, self.target = entry, target
        self.model = SubbandModel.from_tensors(entry.load_weights())
        self.bands = entry.bands or None

    def with_target(self, target: QualityTarget | None) -> "WaveletCodec":
        """The same loaded model with another quality target (cheap: shares the tables)."""
        if target is not None and target.lmbda is not None:
            raise InputError("the wavelet codec takes a target PSNR or MSE, not a lambda")
        codec = copy.copy(self)
        codec.target = target
        return codec

    def header_fields(self) -> dict:
        return {**model_pins(self.entry), "quality": self.target.to_dict() if self.target else {}}

    # --- encoding -------------------------------------------------------------------------

    def encode_tile(self, tile: np.ndarray, valid: np.ndarray) -> bytes:
        return self.encode_with_report(tile, valid)[0]

    def encode_with_report(self, tile: np.ndarray, valid: np.ndarray) -> tuple[bytes, dict]:
        """Payload, and the step codes and block MSEs the closed loop settled on."""
        if self.target is None or self.target.mse is None:
            raise InputError("the wavelet codec needs a target: --psnr or --mse")
        analysed = Analysis(_Transform.fit(tile), tile, base_log2_step(self.target.mse), self.model)
        block = self.target.block
        if self.target.closed_loop:
            codes, mse = choose_codes(analysed, valid, block, self.target.mse)
        else:   # open loop: the step high-rate theory gives, nothing measured (fast, no guarantee)
            codes, mse = np.full(block_grid(tile.shape[1], tile.shape[2], block), MID_CODE, np.int64), None
        quantized = analysed.quantize(codes, block)
        return self._payload(analysed, codes, block, quantized), {"codes": codes, "mse": mse}

    def _payload(self, analysed: "Analysis", codes: np.ndarray, block: int | None, quantized) -> bytes:
        planes, offsets, _ = quantized
        t = analysed.transform
        head = _HEAD.pack(FORMAT, analysed.levels, block or 0, *codes.shape, analysed.log2_base, t.matrix is not None)
        spectral_side = t.means.astype("<f4").tobytes() + \
            (t.matrix.astype("<f4").tobytes() if t.matrix is not None else b"")
        return head + spectral_side + codes.astype(np.uint8).tobytes() + offsets.astype(np.uint8).tobytes() \
            + self.model.encode(planes)

    # --- decoding -------------------------------------------------------------------------

    def decode_tile(self, payload: bytes, bands: int, height: int, width: int) -> np.ndarray:
        try:
            version, levels, block, rows, cols, log2_base, has_klt = _HEAD.unpack_from(payload)
        except struct.error:
            raise ContainerError("wavelet tile head is unreadable") from None
        if version != FORMAT:
            raise ContainerError(f"wavelet tile format {version}; this build reads format {FORMAT}")
        block = block or None
        if (block is not None and block not in BLOCK_SIZES) or (rows, cols) != block_grid(height, width, block):
            raise ContainerError(f"wavelet tile has a {rows}x{cols} grid of {block or 'global'} blocks, "
                                 f"which does not fit a {width}x{height} tile")
        if levels != wavelet.max_levels(height, width, LEVELS) or not abs(log2_base) <= MAX_LOG2_BASE:
            raise ContainerError("wavelet tile has levels or a base step this decoder does not take")
        if has_klt not in (0, 1) or (has_klt and bands > KLT_MAX_BANDS):
            raise ContainerError(f"wavelet tile has KLT flag {has_klt} for {bands} bands; the encoder writes "
                                 f"a KLT only for up to {KLT_MAX_BANDS}")
        shapes = wavelet.flatten(wavelet.subband_shapes(height, width, levels))
        pos = _HEAD.size
        sizes = [4 * bands, 4 * bands * bands if has_klt else 0, rows * cols, 2 * len(shapes)]
        if len(payload) < pos + sum(sizes):
            raise ContainerError("wavelet tile ends inside its side information")
        fields = []
        for size in sizes:
            fields.append(payload[pos:pos + size])
            pos += size
        means = np.frombuffer(fields[0], "<f4").astype(np.float64)
        matrix = np.frombuffer(fields[1], "<f4").astype(np.float64).reshape(bands, bands) if has_klt else None
        if not np.isfinite(means).all() or (matrix is not None and not np.isfinite(matrix).all()):
            raise ContainerError("wavelet tile has non-finite spectral side information")
        codes = np.frombuffer(fields[2], np.uint8).reshape(rows, cols)
        offsets = np.frombuffer(fields[3], np.uint8).reshape(2, len(shapes))
        try:
            planes = self.model.decode(payload[pos:], shapes, bands)
        except ValueError as e:
            raise ContainerError(f"wavelet tile: {e}") from None
        transform = _Transform(means, matrix)
        steps = subband_steps(height, width, levels, log2_base, codes, block)
        return transform.inverse([dequantize(p, steps, offsets[_component_group(c)])
                                  for c, p in enumerate(planes)], levels)


class _Transform:
    """The spectral part: band means and, up to KLT_MAX_BANDS bands, the KLT matrix
    (float32, as stored), so encoder and decoder use the same numbers."""

    def __init__(self, means: np.ndarray, matrix: np.ndarray | None):
        self.means, self.matrix = means, matrix

    @classmethod
    def fit(cls, tile: np.ndarray) -> "_Transform":
        means, vectors = spectral.klt_basis(tile)
        matrix = vectors.astype(np.float32).astype(np.float64) if len(tile) <= KLT_MAX_BANDS else None
        return cls(means.astype(np.float32).astype(np.float64), matrix)

    def forward(self, tile: np.ndarray) -> np.ndarray:
        centred = tile.astype(np.float64) - self.means[:, None, None]
        return centred if self.matrix is None else _combine(self.matrix.T, centred)

    def inverse(self, planes: list[list[np.ndarray]], levels: int) -> np.ndarray:
        components = np.stack([wavelet.inverse(wavelet.nest(p)) for p in planes])
        pixels = components if self.matrix is None else _combine(self.matrix, components)
        return pixels + self.means[:, None, None]


def _exact(values: np.ndarray) -> np.ndarray:
    """float64 values rounded to float32, so that every machine computes the same steps."""
    return np.asarray(values, np.float32).astype(np.float64)


def _combine(matrix: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """matrix @ planes over the band axis, accumulated in a fixed order with elementwise
    operations (no BLAS, whose kernels round differently between machines)."""
    out = np.zeros((matrix.shape[0],) + planes.shape[1:])
    for row, weights in zip(out, matrix):
        for weight, plane in zip(weights, planes):
            row += weight * plane
    return out


def subband_steps(height: int, width: int, levels: int, log2_base: float, codes: np.ndarray,
                  block: int | None) -> list[np.ndarray]:
    """Per-coefficient quantizer steps of each subband (flat layout), from the block codes.

    A coefficient takes the finest step of the blocks its synthesis basis reaches (its own
    footprint widened by half a coefficient spacing each way, where most of the basis's
    energy lies), so a block's error is set by its own code, not by coarser neighbours, and the
    closed loop can always bring it to target.
    """
    gains = wavelet.flatten(wavelet.synthesis_gains(height, width, levels))
    shapes = wavelet.flatten(wavelet.subband_shapes(height, width, levels))
    # float32-rounded: pow and the gains' sums may differ in the last bit between machines
    block_steps = _exact(2.0 ** (log2_base + (codes.astype(np.float64) - MID_CODE) / CODE_STEPS))
    steps = []
    for k, (shape, gain) in enumerate(zip(shapes, gains)):
        # per block first: the division and the rounding are monotone, so they commute with the minimum
        subband_block_steps = _exact(block_steps / math.sqrt(float(np.float32(gain))))
        if block is None:
            steps.append(np.full(shape, subband_block_steps[0, 0]))
        else:
            scale = 1 << (levels if k == 0 else levels - (k - 1) // 3)   # pixels per coefficient
            steps.append(_reach_min(subband_block_steps, shape[0], shape[1], scale, block))
    return steps


def dequantize(plane: list[np.ndarray], steps: list[np.ndarray], offsets: np.ndarray) -> list[np.ndarray]:
    """Each nonzero level at its bin's centroid: (|level| + (offset - 128) / 256) steps, signed
    (np.sign(q) * (np.abs(q) + (offset - 128) / 256) * step, compiled: the same bits)."""
    out = []
    for q, s, o in zip(plane, steps, offsets):
        values = np.empty(q.shape)
        _dequantize(np.ascontiguousarray(q, np.int64), np.ascontiguousarray(s, np.float64),
                    (int(o) - 128) / 256.0, values)
        out.append(values)
    return out


# --- compiled loops of the encoder's passes and the decoder's dequantization ----------------------

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)


@_jit
def _reach(i, scale, block, blocks):
    """First and last of the blocks that coefficient i's basis reaches along one axis: pixels
    [(i - 1/2) scale, (i + 3/2) scale), clipped to the grid's blocks."""
    first = min(max((2 * i - 1) * scale // (2 * block), 0), blocks - 1)
    stop = min(max(((2 * i + 3) * scale - 2) // (2 * block), 0), blocks - 1)
    return first, stop


@_jit
def _reach_min(values, h, w, scale, block):
    """(h, w) minimum of a block grid's values over the blocks each coefficient's basis
    reaches (_reach along both axes): along columns, then along rows."""
    rows, cols = values.shape
    down = np.empty((h, cols))
    for i in range(h):
        first, stop = _reach(i, scale, block, rows)
        for c in range(cols):
            m = values[first, c]
            for r in range(first + 1, stop + 1):
                m = min(m, values[r, c])
            down[i, c] = m
    across = np.empty((w, 2), np.int64)
    for j in range(w):
        across[j, 0], across[j, 1] = _reach(j, scale, block, cols)
    out = np.empty((h, w))
    for i in range(h):
        for j in range(w):
            m = down[i, across[j, 0]]
            for c in range(across[j, 0] + 1, across[j, 1] + 1):
                m = min(m, down[i, c])
            out[i, j] = m
    return out


@_jit
def _dequantize(q, step, offset, out):
    h, w = q.shape
    for i in range(h):
        for j in range(w):
            v = q[i, j]
            sign = 1.0 if v > 0 else (-1.0 if v < 0 else 0.0)
            out[i, j] = sign * (abs(v) + offset) * step[i, j]


@_jit
def _deadzone(band, step, rounding, out):
    """deadzone_levels(band, step, rounding) into out; returns the residue sum of the nonzero
    levels (|band| / step - |level|) and their count, for the centroid offsets. Selects, not
    branches (zero or not is a coin toss at high rates): adding 0.0 leaves the sum as it was."""
    h, w = band.shape
    residue, count = 0.0, 0
    for i in range(h):
        for j in range(w):
            x = band[i, j]
            u = abs(x) / step[i, j]
            level = int(min(u, MAX_MAGNITUDE) + rounding)      # >= 0: truncation is the floor
            nonzero = level != 0
            residue += u - level if nonzero else 0.0
            count += nonzero
            out[i, j] = -level if x < 0 else level
    return residue, count


@_jit
def _residue(band, step, q):
    """Residue sum (|band| / step - |q|) over the nonzero levels q, and their count (selects,
    as in _deadzone)."""
    h, w = band.shape
    residue, count = 0.0, 0
    for i in range(h):
        for j in range(w):
            nonzero = q[i, j] != 0
            r = abs(band[i, j]) / step[i, j] - abs(q[i, j])
            residue += r if nonzero else 0.0
            count += nonzero
    return residue, count


@_jit
def _block_errors(components, matrix, means, tile, valid, block, rows, cols, integer, lo, hi):
    """Sums of squared error and of valid samples per block of what the decoder outputs from
    these components (the KLT matrix applied as _combine does, the means added, integers
    rounded and clipped as _to_dtype does) against the tile; block 0: one block."""
    bands, h, w = tile.shape
    ncomp = components.shape[0]
    sums = np.zeros((rows, cols))
    counts = np.zeros((rows, cols))
    has_matrix = matrix.shape[0] > 0
    width = block if block else w
    v = np.empty(w)
    for b in range(bands):
        mean = means[b]
        for i in range(h):
            r = i // block if block else 0
            if has_matrix:
                v[:] = 0.0
                for c in range(ncomp):
                    weight = matrix[b, c]
                    for j in range(w):
                        v[j] += weight * components[c, i, j]
            else:
                for j in range(w):
                    v[j] = components[b, i, j]
            for j in range(w):
                x = v[j] + mean
                if integer:
                    x = min(max(np.rint(x), lo), hi)
                e = x - tile[b, i, j]
                v[j] = e * e if valid[b, i, j] else 0.0
            for k in range(cols):
                total, n = 0.0, 0
                for j in range(k * width, min((k + 1) * width, w)):
                    total += v[j]
                    n += valid[b, i, j]
                sums[r, k] += total
                counts[r, k] += n
    return sums, counts


class Analysis:
    """A tile's subbands, ready to quantize at any step codes."""

    def __init__(self, transform: _Transform, tile: np.ndarray, log2_base: float, model: SubbandModel):
        self.transform, self.dtype, self.log2_base, self.model = transform, tile.dtype, log2_base, model
        self.tile = tile.astype(np.float64)
        self.height, self.width = tile.shape[1:]
        self.levels = wavelet.max_levels(self.height, self.width, LEVELS)
        self.subbands = [wavelet.flatten(wavelet.forward(c, LEVELS)) for c in transform.forward(tile)]
        self._last = None
        self._components = np.empty((len(self.subbands), self.height, self.width))   # block_mse's, every pass

    def quantize(self, codes: np.ndarray, block: int | None, dependent: bool = True):
        """Signed levels and the centroid offsets (2 component groups x subbands, in 1/256
        step, 128 = the level itself). ``dependent``: the model's dependent quantizer, as
        coded; otherwise a deadzone scalar quantizer at 2^DQ_OFFSET times the step, about as
        accurate and far cheaper: the closed loop's proxy. The last result is kept, as the
        closed loop asks again for the codes it settled on."""
        key = (codes.tobytes(), codes.shape, block, dependent)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        steps = subband_steps(self.height, self.width, self.levels, self.log2_base, codes, block)
        residues = np.zeros((len(self.subbands), len(steps), 2))
        if dependent:
            planes = self.model.quantize(self.subbands, steps, ROUNDING, RATE_WEIGHT)
            for c, (bands, plane) in enumerate(zip(self.subbands, planes)):
                for k, (b, s, q) in enumerate(zip(bands, steps, plane)):
                    residues[c, k] = _residue(b, s, q)
        else:
            steps = [s * 2 ** DQ_OFFSET for s in steps]   # noqa: the proxy's steps
            planes = []
            for c, bands in enumerate(self.subbands):
                plane = [np.empty(b.shape, np.int64) for b in bands]
                for k, (b, s) in enumerate(zip(bands, steps)):
                    residues[c, k] = _deadzone(b, s, ROUNDING, plane[k])
                planes.append(plane)
        offsets = np.full((2, len(steps)), 128, np.int64)
        for g in (0, 1):
            members = [c for c in range(len(planes)) if _component_group(c) == g]
            residue, count = residues[members, :, 0].sum(0), residues[members, :, 1].sum(0)
            some = count > 0
            offsets[g, some] = np.clip(np.rint(128 + 256 * residue[some] / count[some]), 0, 255)
        self._last = (key, (planes, offsets, steps))
        return planes, offsets, steps

    def reconstruct(self, codes: np.ndarray, block: int | None, dependent: bool = True) -> np.ndarray:
        """What the decoder outputs for these codes, as float64 (integers rounded and clipped)."""
        planes, offsets, steps = self.quantize(codes, block, dependent)
        pixels = self.transform.inverse([dequantize(p, steps, offsets[_component_group(c)])
                                         for c, p in enumerate(planes)], self.levels)
        return _to_dtype(pixels, self.dtype).astype(np.float64) if self.dtype.kind in "iu" else pixels

    def block_mse(self, codes: np.ndarray, valid: np.ndarray, block: int | None, dependent: bool = True) -> np.ndarray:
        """Mean squared error per block of what the decoder outputs for these codes (as
        block_means((reconstruct(...) - tile) ** 2, valid, block), in one compiled pass)."""
        planes, offsets, steps = self.quantize(codes, block, dependent)
        components = self._components
        for c, p in enumerate(planes):
            components[c] = wavelet.inverse(wavelet.nest(dequantize(p, steps, offsets[_component_group(c)])))
        t = self.transform
        rows, cols = block_grid(self.height, self.width, block)
        integer = self.dtype.kind in "iu"
        info = np.iinfo(self.dtype) if integer else None
        sums, counts = _block_errors(components, t.matrix if t.matrix is not None else np.zeros((0, 0)), t.means,
                                     self.tile, np.ascontiguousarray(valid, np.bool_), block or 0, rows, cols,
                                     integer, float(info.min) if integer else 0.0, float(info.max) if integer else 0.0)
        return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def base_log2_step(target_mse: float) -> float:
    """The step that high-rate theory (MSE = step^2 / 12) gives for the target, made finer
    for the dependent quantizer (each of its quantizers is twice as coarse), as stored
    (float32): block codes are relative to it."""
    return float(np.float32(0.5 * math.log2(12 * target_mse) - DQ_OFFSET))


def choose_codes(analysed: Analysis, valid: np.ndarray, block: int | None,
                 target_mse: float) -> tuple[np.ndarray, np.ndarray]:
    """Step codes, as coarse as they can be with every block's MSE at or under the target.

    Every pass is one reconstruction of the tile, exactly as the decoder makes it, either on
    the scalar proxy (Analysis.quantize with dependent=False: a deadzone quantizer, about a
    quarter of the dependent quantizer's cost) or with the dependent quantizer, as coded.
    The codes are first settled on the proxy; one coded pass then measures each block's ratio
    of its error to the proxy's, and the proxy settles again on the target divided by that
    ratio (the ratio moves by a few per cent over a few codes; the proxy carries how
    neighbouring blocks share coefficients). Coded passes finish from there: blocks over the
    target are lowered (with their neighbours just under it, which a repair beside them
    tends to push over); a global target is searched on the measured slope of its MSE. Where
    the median block still overshoots by more than SLACK_DB (blocks whose errors come from
    coefficients they share with their neighbours, at low rates), one round of the coded
    secant moves every block towards the target and repairs follow (the coded search of
    ``_choose_thorough`` from there took twice the coded passes at 40 dB for 0.4 % fewer
    bytes). 16 px blocks, where that overshoot is the rule, take that search from the start
    (the first format 1 encoder's: more coded passes, less overshoot).
    Typical counts: 3-5 proxy and 2-3 coded passes for a global target, 5 proxy and 3-5
    coded for 32 and 64 px blocks, where the first encoder took 0-20 proxy and 3-17 coded.
    """
    if block is not None and block < 32:
        return _choose_thorough(analysed, valid, block, target_mse)
    proxy = lambda c: analysed.block_mse(c, valid, block, False)    # noqa: E731
    coded = lambda c: analysed.block_mse(c, valid, block)           # noqa: E731
    codes = np.full(block_grid(analysed.height, analysed.width, block), MID_CODE, np.int64)
    codes, estimate = _secant(proxy, codes, AIM * target_mse, PROXY_ROUNDS)
    mse = coded(codes)
    seen = [(int(codes[0, 0]), float(mse[0, 0]))]
    if (np.abs(_codes_for(mse, AIM * target_mse)) >= 1).any():
        codes = _calibrated(proxy, codes, mse, estimate, AIM * (1 if block is None else CALIBRATED_AIM) * target_mse)
        mse = coded(codes)
        seen.append((int(codes[0, 0]), float(mse[0, 0])))
    if block is None:
        return _finish_one(coded, seen, target_mse)
    codes, mse = _finish(coded, codes, mse, target_mse, (), 0)
    # most blocks well under the target (blocks whose errors come from coefficients they share
    # with their neighbours, at low rates): one round of the coded secant, then repairs
    if np.median(10 * np.log10(target_mse / np.maximum(mse, 1e-300))) > SLACK_DB:
        codes, mse = _finish(coded, *_secant(coded, codes, AIM * target_mse, 1, mse), target_mse, (), 0)
    return codes, mse


def _choose_thorough(analysed: Analysis, valid: np.ndarray, block: int | None,
                     target_mse: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-block codes settled on the scalar proxy and calibrated by one coded pass (as in
    choose_codes), then the dependent quantizer, as coded, finishes the search from there in
    a few rounds (format 1's first encoder, calibrated: on the validation images at 40 dB
    with 16 px blocks, median overshoot 0.30 dB instead of 0.32 and 0.1 % fewer bytes, for
    5 % more coded passes)."""
    codes = np.full(block_grid(analysed.height, analysed.width, block), MID_CODE, np.int64)
    coded = lambda c: analysed.block_mse(c, valid, block)           # noqa: E731
    if block is not None:
        proxy = lambda c: analysed.block_mse(c, valid, block, False)    # noqa: E731
        codes, estimate = _settle(proxy, codes, target_mse, MAX_ROUNDS, (8, 4, 2, 1))
        codes = _calibrated(proxy, codes, coded(codes), estimate, AIM * CALIBRATED_AIM * target_mse)
    return _settle(coded, codes, target_mse, MAX_ROUNDS if block is None else 3,
                   (8, 4, 2, 1) if block is None else (2, 1))


def _calibrated(proxy, codes: np.ndarray, mse: np.ndarray, estimate: np.ndarray, aim: float) -> np.ndarray:
    """The proxy settled again on the aim divided by each block's measured ratio of its coded
    MSE to the proxy's estimate at the same codes."""
    ratio = np.where((estimate > 0) & (mse > 0), mse / np.maximum(estimate, 1e-300), 1.0)
    return _secant(proxy, codes, aim / ratio, PROXY_ROUNDS, estimate)[0]


PROXY_ROUNDS = 2            # secant rounds of each settle on the proxy
CALIBRATED_AIM = 0.98       # the calibrated proxy aims this far under the target: fewer coded repairs
REPAIR_AIM = 0.97           # a coded repair lowers a block to this fraction of the target, by its slope
FRAGILE = 0.97              # blocks above this fraction beside a repaired one go one code down with it
SLACK_DB = 0.28             # median overshoot past which one more coded secant round follows


def _codes_for(mse: np.ndarray, aim: np.ndarray) -> np.ndarray:
    """Code changes (fractional) that bring each block's MSE to its aim (MSE ~ step^2)."""
    return CODE_STEPS / 2 * np.log2(aim / np.maximum(mse, 1e-12))


def _finish_one(measure, seen: list, target_mse: float):
    """One block (a global target), from the coded measurements ``seen`` (code, MSE): the
    coarsest code found at or under the target, searched with the slope of log MSE against
    the code that the two nearest measurements give (16 codes per octave of MSE at high rate,
    less at low rates), lowering while over, then up while the slope says the next code may
    still meet the target (the first miss ends it)."""
    def slope(code):
        near = sorted(seen, key=lambda cm: abs(cm[0] - code))[:2]
        if len(near) < 2 or near[0][0] == near[1][0] or min(near[0][1], near[1][1]) <= 0:
            return 2 / CODE_STEPS
        (c0, m0), (c1, m1) = near
        return float(np.clip(math.log2(m1 / m0) / (c1 - c0), 0.25 / CODE_STEPS, 4 / CODE_STEPS))

    def measure_at(code):
        mse = measure(np.full((1, 1), code, np.int64))
        seen.append((code, float(mse[0, 0])))
        return mse

    code, mse_value = seen[-1]
    mse = np.full((1, 1), mse_value)
    while mse_value > target_mse:
        if code == 0:
            raise InputError(f"MSE {target_mse:g} is beyond the wavelet codec's finest step here "
                             f"(reached {mse_value:g}); ask for less, or lossless")
        code = max(code - max(math.ceil(math.log2(mse_value / (AIM * target_mse)) / slope(code)), 1), 0)
        mse = measure_at(code)
        mse_value = float(mse[0, 0])
    for _ in range(3):
        if code >= TOP_CODE:
            break
        up = min(max(math.floor(math.log2(target_mse / max(mse_value, 1e-300)) / slope(code)), 0), TOP_CODE - code)
        if up < 1:
            break
        trial = measure_at(code + up)
        if trial[0, 0] > target_mse:
            if up == 1:
                break
            continue            # the slope from the miss is steeper: a shorter step next
        code, mse, mse_value = code + up, trial, float(trial[0, 0])
    return np.full((1, 1), code, np.int64), mse


def _secant(measure, codes: np.ndarray, aim, rounds: int, mse: np.ndarray | None = None):
    """Rounds that move each block by the codes its MSE ratio to its aim asks for (MSE ~
    step^2: 16 codes per factor 2), until none moves (the proxy's settle)."""
    if mse is None:
        mse = measure(codes)
    for _ in range(rounds):
        new = np.clip(codes + np.rint(_codes_for(mse, aim)).astype(np.int64), 0, TOP_CODE)
        if (new == codes).all():
            break
        codes, mse = new, measure(new)
    return codes, mse


def _finish(measure, codes: np.ndarray, mse: np.ndarray, target_mse: float, raises: tuple, trials: int,
            hopeful: bool = False):
    """Repair rounds lower the codes of blocks over the target until none is (each by the
    codes its ratio asks for REPAIR_AIM, at least one; refused at code 0); then blocks with
    slack are raised by each of ``raises`` where the tile stays within target (slack: the
    raise would keep them under AIM x the target as MSE ~ step^2 has it, or under the target
    itself when ``hopeful``), a raise that pushes a block over being undone with its
    neighbours' (``trials`` tries each)."""
    while (over := mse > target_mse).any():
        if (codes[over] == 0).all():
            raise InputError(f"MSE {target_mse:g} is beyond the wavelet codec's finest step here "
                             f"(reached {mse.max():g}); ask for less, or lossless")
        lower = np.maximum(np.ceil(-_codes_for(mse, REPAIR_AIM * target_mse)), 1).astype(np.int64)
        # blocks just under the target beside a lowered one often go over with it: one code down too
        fragile = ~over & (mse > FRAGILE * target_mse) & _dilate(over)
        codes = np.where(over, np.maximum(codes - lower, 0), np.where(fragile, np.maximum(codes - 1, 0), codes))
        mse = measure(codes)
    return _raise(measure, codes, mse, target_mse, raises, 1 if hopeful else AIM, trials)


def _settle(measure, codes: np.ndarray, target_mse: float, rounds: int, raises: tuple, mse=None):
    """Secant rounds move each block by the codes its MSE ratio asks for (MSE ~ step^2: 16
    codes per factor 2), by half after the first rounds so neighbours that share
    coefficients settle; repair rounds lower the codes of blocks still over the target until
    none is (each by the codes its ratio asks, at least one; refused at code 0); last, blocks with slack are raised by each of ``raises``
    where the tile stays within target, a raise that pushes a block over being undone with
    its neighbours'."""
    if mse is None:
        mse = measure(codes)
    for round_ in range(rounds):
        wanted = CODE_STEPS / 2 * np.log2(AIM * target_mse / np.maximum(mse, 1e-12))
        new = np.clip(codes + np.rint(wanted if round_ < 3 else wanted / 2).astype(np.int64), 0, TOP_CODE)
        if (new == codes).all():
            break
        codes, mse = new, measure(new)
    while (over := mse > target_mse).any():
        if (codes[over] == 0).all():
            raise InputError(f"MSE {target_mse:g} is beyond the wavelet codec's finest step here "
                             f"(reached {mse.max():g}); ask for less, or lossless")
        # (blocks not over, perhaps at MSE 0, are left as they are; the floor keeps their log finite)
        lower = np.maximum(np.ceil(CODE_STEPS / 2 * np.log2(np.maximum(mse, 1e-12) / (AIM * target_mse))),
                           1).astype(np.int64)
        codes = np.where(over, np.maximum(codes - lower, 0), codes)
        mse = measure(codes)
    return _raise(measure, codes, mse, target_mse, raises, AIM, 3)


def _raise(measure, codes: np.ndarray, mse: np.ndarray, target_mse: float, raises: tuple, aim: float,
           trials: int):
    """Blocks with slack (the raise would keep them under aim x the target as MSE ~ step^2
    has it) are raised by each of ``raises`` where the tile stays within target, a raise
    that pushes a block over being undone with its neighbours' (``trials`` tries each)."""
    for step in raises:
        raised = (mse * 2 ** (step / (CODE_STEPS / 2)) <= aim * target_mse) & (codes < TOP_CODE)
        for _ in range(trials):
            if not raised.any():
                break
            trial = np.where(raised, np.minimum(codes + step, TOP_CODE), codes)
            trial_mse = measure(trial)
            over = trial_mse > target_mse
            if not over.any():
                codes, mse = trial, trial_mse
                break
            raised &= ~_dilate(over)
    return codes, mse


def _dilate(mask: np.ndarray) -> np.ndarray:
    """mask or any of its 8 neighbours."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    return np.logical_or.reduce([padded[1 + di:1 + di + h, 1 + dj:1 + dj + w]
                                 for di in (-1, 0, 1) for dj in (-1, 0, 1)])
