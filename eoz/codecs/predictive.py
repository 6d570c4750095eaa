"""The predictive codec: lossless, or near-lossless with a hard bound on every sample's error.

Integer rasters are coded as they are. A float32 or float64 raster is coded losslessly
through its bit patterns (less the trailing zero bits every valid sample shares, mapped to
integers in the floats' order, so neighbouring values stay close and NaN keeps its exact bits;
float64's in two planes a band, the top 32 bits and the rest), or with a bound e on a grid of
step 2e (each value to its nearest grid point, the grid's integers coded losslessly; the
step is shrunk until the values decode within e, rounding to the dtype included; bounds that
differ by band share a finer grid, each band's integers coded within its own bound). A bound so
fine that the grid's integers would reach 2^32 (finer than the floats' own spacing) is met
exactly by the bit patterns instead: the loop's sums are exact for samples under 2^33 only.

Each band of a tile is predicted from its own causal neighbours and from reference bands
coded before it: up to MAX_REFS earlier bands whose horizontal gradients correlate best
with its own, best first; the blend's spectral predictors take the first, with the
least-squares gain between the gradients. In bands of at least LEAST_SQUARES_SAMPLES, the
encoder also fits the band's least-squares predictor on the tile and sends its integer
weights (``eoz.predictive_coder``, format 2); a smaller band with a reference takes them where
it has WEIGHT_SAMPLES samples or more a weight (ten causal taps, eighteen a reference and a
constant: their varints cost about 20 bits each, which correlated references repay on fewer
samples), and otherwise never sends them. Format 3 adds the copy flags of resampled rasters'
repeated samples (same head, in the residual stream); format 4 the learned correction of the
prediction (same head and stream, the decoder learns it as it decodes); format 5 a linear path beside
the correction's hidden units (same stream) and the band order: the
encoder codes a tile's bands first to last or last to first, whichever costs less on a
strip across the tile (a linear predictor of a blurred or noisy band from a sharp one does
better than the reverse: Landsat's and Sentinel-1's bands pay coded backwards, about 1 %);
format 6 the same in compact band records (a hyperspectral chip of 224 bands spent 2-3 % of
its bytes on format 5's fixed-size records, a Landsat tile 0.3 % on its least-squares
weights); format 7 is format 6 whose order byte is a flags byte, bit 1 set where the tile
codes without the learned correction; format 8 (same head and records) chooses the
residuals' tables by the prediction's value too (a sensor's noise grows with its signal:
``eoz.predictive_coder``); format 9 (same head and records) codes nothing for nodata samples
(the decoder is given the tile's nodata mask: ``skips_nodata``), and a magnitude's first low
bit and its sign with adaptive odds where earlier formats code them raw; format 10 (this
build's, the same bytes where a tile has no nodata) lets a skipped sample take its
neighbours' recent errors, where format 9 gave it none (a row entering the data from a
rotated frame's nodata corner met an error level of zero). A tile that would code larger than
its samples' bits (noise that no prediction shrinks) is stored instead, as format 11. A
lossless tile of at most ``palette_coder.MAX_PALETTE`` values (class maps, bit flags) is also
coded as which neighbour each sample equals (``eoz.palette_coder``), as format 12, and kept
where that is smaller.
Lossless tiles carry a sha256 of the samples they code; the decoder checks it and refuses a
tile that differs. ``fast`` writes tiles without the learned correction and the band-order
trial, about twice the speed of encoding and decoding for a few per cent more bytes
(``benchmarks/results/lossless.md``).

Tile payload (little endian): u8 format version, u8 sample kind (0 integer, 1 float32
bits, 2 float32 grid; from format 10: 3 float64 bits, 4 float64 grid, 5 and 6 float32 and
float64 integers n / d, coded as n), f64 grid step (kinds 2 and 4; kinds 1 and 3: the trailing
zero bits shifted out, kind 1's 0 before session 22; kinds 5 and 6: d), i64 lowest and highest
sample, u8 flags (bit 0: the band order, 0 first to last, 1 last to first; from format 7,
bit 1: without the learned correction; the other bits 0), then per band (kind 3: per plane, the bands' high words,
then their low words) in that order a record: u8 flags
(bits 0-1 the reference count R, bit 2 the least-squares flag, bit 3 set when the band's
bound differs from the band before's, or from 0 for the first; the other bits 0), with
references the gain (1/256) less 256 as a zigzag varint (LEB128), with bit 3 the bound as a
varint, R varints of each reference's distance back less one (the band before: 0;
positions in that order), and with the flag the weights (the ten causal taps, then per
reference its 3 x 3 values and its 3 x 3 residuals) and the constant, in LS_FRAC fraction
bits, as zigzag varints; the 32-byte sha256 when the tile is lossless (every bound 0, not a
grid); then the range-coded residuals (and format 3's copy flags). Format 11 (``STORED``):
the same u8 version, u8 kind, f64 step and i64 lowest and highest sample, then the 32-byte
sha256 of the samples it decodes to, then every sample less the lowest in the bits the
highest less the lowest takes, packed least significant bit first, bands in order. Format 12
(``PALETTE``): the same head, then the palette as varints (its size, its first value less the
lowest sample, each next value's gap less one), the 32-byte sha256, then the range-coded palette
indices (per plane, in raster order; nodata samples not coded). Formats
1 to 9 are
still decoded: format 9 is format 10 with a skipped sample's errors zero, format 8 is
format 9 with the low bits and the sign raw (and nodata coded, as its band's mean), format 7 is format
8 with the residuals' tables of earlier formats, format 6 is format 7 whose flags byte has
bit 0 alone, format 5 is format 6 with fixed records (u8
R, u8 least-squares flag, i16 gain, u32 bound, R u16 reference positions, then the i32
weights and the i64 constant), format 4 is format 5 without the order byte (first to
last), format 3 is format 4 without the learned correction, format 2 is format 3 without
copy flags; format 1 had per band u16 reference (0 = none, else its index + 1), i16 gain,
u32 bound, and no least-squares predictor.
"""

from __future__ import annotations

import copy
import hashlib
import struct

import numpy as np
from threadpoolctl import ThreadpoolController

from eoz import palette_coder
from eoz import predictive_coder as pc
from eoz.codecs.base import Codec, model_pins
from eoz.errors import ContainerError, InputError
from eoz.raster import RasterMeta
from eoz.registry import ModelEntry
from eoz.subband_coder import TOKENS, decoder_state, encoder_state, finish, new_tables, overrun

FORMAT = 10
STORED = 11                   # the format of a tile whose samples are stored bit-packed, where coding would be larger
PALETTE = 12                  # the format of a categorical tile: palette indices coded by their neighbours'
REVERSED, UNLEARNED = 1, 2    # the flags byte's bits (format 5 and 6: REVERSED alone)
INTEGER, FLOAT_BITS, FLOAT_GRID, DOUBLE_BITS, DOUBLE_GRID, FLOAT_SCALED, DOUBLE_SCALED = range(7)   # sample kinds
KINDS = (INTEGER, FLOAT_BITS, FLOAT_GRID, DOUBLE_BITS, DOUBLE_GRID, FLOAT_SCALED, DOUBLE_SCALED)
GRIDS = (FLOAT_GRID, DOUBLE_GRID)
SCALED = (FLOAT_SCALED, DOUBLE_SCALED)
DIVISORS = (1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0)   # of floats that are integers so divided
_SCALED_LIMIT = 1 << 31       # ... integers below this magnitude,
_FLOAT32_WHOLE = 1 << 24      # float32 whole numbers near-losslessly below this: it holds every integer up to
                              # here (a decoded integer beyond, within the bound, could round out of it)
_SCALED_PROBE = 4096          # the divisors are tried on this many samples first (and a palette)
_FINE_GRID = 9                # bounds that differ by band: grid steps in the smallest bound's bins (odd)
_GRID_LIMIT = 1 << 32         # a float grid's integers stay below this (the loop's sums are exact for samples under
                              # 2^33); a bound finer than that is finer than the floats' own spacing: bits, exactly
_HEAD = struct.Struct("<BBdqq")
_BAND_V1 = struct.Struct("<HhI")
_BAND = struct.Struct("<BBhI")   # formats 2 to 5
_GAIN_UNIT = 1 << pc.GAIN_BITS   # format 6 codes a gain as its difference from 1
_MAX_BOUND = (1 << 32) - 1
_STORED_SPAN = 1 << 34        # a stored tile's samples span less (every kind's integers are under 2^33)
_VARINT_GROUPS = 10           # seven bits each: a varint of up to 2^64
_CONSTANT_LIMIT = 1 << 60     # with LS_WEIGHT_LIMIT, keeps a prediction's sum under 2^62
_FIT_SAMPLES = 1 << 12        # the least-squares fit reads about this many samples of a band (more: 0.02 % fewer bytes)
_QUICK_FIT_SAMPLES = 1 << 10  # ... in the band-order trial, with no refits
_REWEIGHTS = 2                # refits of the least-squares predictor towards the least absolute error (a third:
                              # 0.00-0.06 % fewer bytes for 5 % of a Landsat encode)
LEAST_SQUARES_SAMPLES = 1 << 15   # bands this large always take it: the weights (about 2 kbit) pay
WEIGHT_SAMPLES = 150          # smaller bands with a reference take them from this many samples a weight (chosen on
                              # training chips of 64-180 px: within 0.2 % of coding each band with and without them,
                              # which took half the encode of a 120 px chip)
QUICK_WEIGHT_SAMPLES = 1 << 12   # the band-order trial's strips take them from this size up
ORDER_TRIAL_SHARE = 32        # the encoder tries both band orders on a strip of this share of a tile's rows,
ORDER_TRIAL_MIN_ROWS = 16     # ... at least this many (8 misjudged a Sentinel-1 tile),
ORDER_TRIAL_BANDS = 16        # ... and in a tile of more bands, as many samples as that of this many bands (a
                              # hyperspectral cube's 192 px tiles of 224 bands: 8-15 % less encode, +0.04 % bytes),
ORDER_TRIAL_FLOOR = 4         # but this many rows at least,
ORDER_TRIAL_MIN_HEIGHT = 8 * ORDER_TRIAL_MIN_ROWS   # in tiles this high or more (a quarter more encode at most),
ORDER_TRIAL_MIN_COLS = 256    # ... and the middle half of its columns, at least this many (128 misjudged S2 20 m
                              # tiles; all of them: 5 % more of a Landsat encode, within 0.02 % of the bytes)
SAMPLE_BYTES = 5              # the encoder's buffer a sample (lossless Sentinel-2 takes under 1; full-range
                              # noise up to pc.WORST_SAMPLE_BYTES, where the tile is coded again)
MIN_CORRELATION = 0.2        # a band predicts from another only above this gradient correlation
_BLAS = ThreadpoolController()   # what the encoder holds to one thread around its small least-squares products
_GRID_SHRINK = 1 - 2 ** -20  # the float grid's step shrinks by this where a value is out of bound,
_GRID_SHRINKS = 16            # ... at most this many times (``_grid``)
INTEGER_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32")
DTYPES = INTEGER_DTYPES + ("float32", "float64")


class PredictiveCodec(Codec):
    """CCSDS 123-style predictive coder with learned starting tables (model ``predictive``)."""

    codec_id = "predictive"
    skips_nodata = True     # format 9 codes nothing for nodata samples
    bounds_every_sample = True
    parallel_tiles = True   # the loop and the fits release the GIL: threads scale (benchmarks/tile_threads.py)

    def __init__(self, entry: ModelEntry, max_error: list[float] | None = None, nodata: float | None = None):
        self.entry, self.max_error, self.nodata, self.fast = entry, max_error, nodata, False
        tensors = entry.load_weights()
        self.initial = np.ascontiguousarray(tensors["counts"], np.int64)
        if self.initial.shape != (pc.ROWS, TOKENS):
            raise ContainerError(f"predictive model {entry.model_id} has tables {self.initial.shape}, "
                                 f"this build codes with {(pc.ROWS, TOKENS)}")
        self.classed = np.tile(self.initial, (pc.VALUE_CLASSES, 1))   # format 8's: per class of the value

    def with_bound(self, lossless: bool | None, max_error: list[float] | float | None,
                   fast: bool | None = None) -> "PredictiveCodec":
        """The same tables with an error bound: one for every band, or one per band; neither
        given means lossless (the codec's default, and all a decoder needs). ``fast``: tiles
        without the learned correction and the band-order trial, for about twice the speed."""
        if lossless and max_error is not None:
            raise InputError("the predictive codec takes one of lossless or max_error, not both")
        codec = copy.copy(self)
        codec.fast = bool(fast)
        codec.max_error = None if max_error is None else [float(e) for e in np.atleast_1d(max_error)]
        if codec.max_error is not None and not all(np.isfinite(e) and e >= 0 for e in codec.max_error):
            raise InputError(f"max_error must be finite and >= 0, not {max_error}")
        return codec

    def for_raster(self, meta: RasterMeta) -> "PredictiveCodec":
        if meta.dtype not in DTYPES:
            raise InputError(f"the predictive codec codes {', '.join(DTYPES)} rasters, not {meta.dtype}")
        if self.max_error is not None and len(self.max_error) not in (1, meta.count):
            raise InputError(f"max_error has {len(self.max_error)} values; give one, or one per band "
                             f"({meta.count})")
        codec = copy.copy(self)
        codec.nodata = meta.nodata
        return codec

    @property
    def lossless(self) -> bool:
        return self.max_error is None or not any(self.max_error)

    @property
    def codes_nan(self) -> bool:
        """Lossless codes floats as bit patterns: a NaN keeps its bits with no nodata declared."""
        return self.lossless

    def header_fields(self) -> dict:
        quality = {"lossless": True} if self.lossless else \
            {"max_error": self.max_error}
        return {**model_pins(self.entry), "quality": quality}

    def _tables(self, version: int) -> tuple[np.ndarray, np.ndarray]:
        """The residuals' adaptive tables at the start of a tile of this format: the magnitudes',
        and the odds of their first low bits and signs (before format 9, none: raw bits)."""
        return new_tables(self.classed if version >= 8 else self.initial), \
            pc.new_bit_odds() if version >= 9 else _NO_ODDS

    def _bounds(self, bands: int) -> list[float]:
        errors = self.max_error or [0.0]
        return list(errors) * bands if len(errors) == 1 else list(errors)

    # --- encoding -------------------------------------------------------------------------

    def encode_tile(self, tile: np.ndarray, valid: np.ndarray | None) -> bytes:
        """valid: the tile's nodata mask inverted (``skips_nodata``), or None: all valid."""
        return self.encode_counted(tile, _NO_COUNTS, _skipped(valid))

    def encode_counted(self, tile: np.ndarray, counts: np.ndarray, skip: np.ndarray | None = None) -> bytes:
        """The payload; a non-empty ``counts`` (rows x tokens) tallies the tokens coded (training);
        ``skip``: the nodata samples, not coded (they decode to their predictions)."""
        bounds = self._bounds(tile.shape[0])
        kind, step, samples, int_bounds = _to_integers(tile, bounds, skip)
        lo, hi = int(samples.min()), int(samples.max())
        avoid = _avoided(self.nodata, kind, step)
        digest = _digest(tile, skip) if kind not in GRIDS and not any(int_bounds) else b""
        skipped = _NO_SKIP_TILE if skip is None else _planes_of(skip, kind)   # in the planes coded

        tallied = counts.copy()
        with _BLAS.limit(limits=1, user_api="blas"):   # small products: more threads only spin (a third more CPU)
            try:
                reverse, records, stream = self._order_and_code(samples, int_bounds, skipped, lo, hi, avoid, counts,
                                                                SAMPLE_BYTES)
            except _BufferFull:   # samples that code to more than SAMPLE_BYTES each (full-range noise): again,
                counts[...] = tallied   # with room for the worst a sample can take
                reverse, records, stream = self._order_and_code(samples, int_bounds, skipped, lo, hi, avoid, counts,
                                                                pc.WORST_SAMPLE_BYTES)
        head = _HEAD.pack(FORMAT, kind, step, lo, hi) + bytes([reverse | (UNLEARNED if self.fast else 0)])
        coded_size = len(head) + len(records) + len(digest) + len(stream)
        categorical = _palette(samples, skipped) if digest and not counts.size else None
        if categorical is not None:   # few values: coded as which neighbour each equals, where that is smaller
            payload = _palette_tile(samples, skipped, categorical, kind, step, lo, hi, digest)
            if len(payload) < min(coded_size, _stored_size(samples.size, lo, hi)):
                return payload
        if _stored_size(samples.size, lo, hi) < coded_size:   # noise that no prediction shrinks
            # a lossless tile decodes to what the encoder was given: its digest is the one computed
            return _stored(samples, kind, step, lo, hi, digest or _digest(_from_integers(samples, kind, step), skip))
        return head + records + digest + stream

    def _order_and_code(self, samples: np.ndarray, int_bounds: list[int], skip: np.ndarray, lo: int, hi: int,
                        avoid: int | None, counts: np.ndarray, sample_bytes: int) -> tuple[bool, bytes, bytes]:
        """(whether the bands are coded last to first, their records, the stream): the cheaper
        order on the tile's middle rows and columns (unless ``fast``, or the tile is low or one band),
        then the tile."""
        reverse, height = False, samples.shape[1]
        if not self.fast and samples.shape[0] > 1 and height >= ORDER_TRIAL_MIN_HEIGHT:
            bands = samples.shape[0]
            least = max(ORDER_TRIAL_FLOOR, -(-ORDER_TRIAL_MIN_ROWS * min(bands, ORDER_TRIAL_BANDS) // bands))
            rows = max(least, height // ORDER_TRIAL_SHARE)
            cols = min(samples.shape[2], max(ORDER_TRIAL_MIN_COLS, samples.shape[2] // 2))
            middle = (slice(None), slice((height - rows) // 2, (height - rows) // 2 + rows),
                      slice((samples.shape[2] - cols) // 2, (samples.shape[2] - cols) // 2 + cols))
            strip, strip_skip = samples[middle], skip[middle]
            natural, backwards = (sum(map(len, self._code_bands(s, b, k, lo, hi, avoid, _NO_COUNTS, True,
                                                                sample_bytes)))
                                  for s, b, k in ((strip, int_bounds, strip_skip),
                                                  (strip[::-1], int_bounds[::-1], strip_skip[::-1])))
            reverse = backwards < natural
        order = slice(None, None, -1) if reverse else slice(None)
        return reverse, *self._code_bands(samples[order], int_bounds[order], skip[order], lo, hi, avoid, counts, False,
                                          sample_bytes)

    def _code_bands(self, samples: np.ndarray, int_bounds: list[int], skip: np.ndarray, lo: int, hi: int,
                    avoid: int | None, counts: np.ndarray, quick: bool, sample_bytes: int) -> tuple[bytes, bytes]:
        """The band records and the range-coded stream of the bands, in the order given (skip:
        their nodata samples, or empty), in a buffer of ``sample_bytes`` a sample (``_BufferFull``
        where the bands need more);
        ``quick`` (the band-order trial's estimate): bands from QUICK_WEIGHT_SAMPLES up take the
        least-squares weights, fitted on fewer samples and without refits, and
        no band takes the learned correction where they do (it moves both orders alike: on
        every split's tiles the trial chose the same order without it but in close calls;
        Landsat's encode, 5 % faster); in smaller strips it stands in for them (it reads the
        reference band's window too)."""
        (table, odds), copies = self._tables(FORMAT), new_tables(_COPY_COUNTS)
        size = samples.shape[1] * samples.shape[2]
        unlearned = self.fast or (quick and size >= QUICK_WEIGHT_SAMPLES)   # fast: never the learned correction
        learned = None if unlearned else pc.new_learned()
        # and a row at the worst: the loop stops where the next row might not fit
        buffer = np.zeros(samples.size * sample_bytes + (samples.shape[2] + 1) * pc.WORST_SAMPLE_BYTES + 1024, np.uint8)
        state = encoder_state()
        coded = np.empty((samples.shape[0], 3, *samples.shape[1:]), np.int64)   # what code_band gives each band
        records = []

        fit = (_QUICK_FIT_SAMPLES, 0) if quick else (_FIT_SAMPLES, _REWEIGHTS)
        for b, (refs, gain) in enumerate(_reference_sets(samples)):
            least_squares = size >= QUICK_WEIGHT_SAMPLES if quick else \
                size >= LEAST_SQUARES_SAMPLES or (len(refs) > 0 and size >= WEIGHT_SAMPLES * (_weights(len(refs)) + 1))
            weights, constant = _fit(samples[b], _start(coded, refs, lo, hi), coded, refs, *fit,
                                     _band_skip(skip, b)) if least_squares else (None, 0)
            _code(samples[b], coded, b, refs, gain, weights, constant, int_bounds[b], lo, hi, avoid, skip,
                  FORMAT >= 10, table, odds, copies, learned, True, state, buffer, False, counts)
            record = _compact_record(b, refs, least_squares, gain, int_bounds[b], int_bounds[b - 1] if b else 0)
            records.append(record + (_zigzag_varints(np.append(weights, constant)) if least_squares else b""))
        n = finish(state, buffer)
        return b"".join(records), buffer[:n].tobytes()

    # --- decoding -------------------------------------------------------------------------

    def decode_tile(self, payload: bytes, bands: int, height: int, width: int,
                    valid: np.ndarray | None = None) -> np.ndarray:
        """valid: the tile's nodata mask inverted, as the encoder was given it (format 9 codes
        nothing for nodata samples), or None: all valid."""
        if len(payload) < _HEAD.size:
            raise ContainerError("predictive tile head is truncated")
        version, kind, step, lo, hi = _HEAD.unpack_from(payload)
        if not 1 <= version <= PALETTE:
            raise ContainerError(f"predictive tile format {version}; this build reads formats 1 to {PALETTE}")
        if kind not in KINDS or (kind in GRIDS + SCALED and not step > 0) or (kind >= DOUBLE_BITS and version < 10) \
                or not np.isfinite(step):
            raise ContainerError("predictive tile head is inconsistent")
        planes = bands * (2 if kind == DOUBLE_BITS else 1)
        if version in (STORED, PALETTE) and not 0 <= hi - lo < _STORED_SPAN:
            raise ContainerError("predictive tile head is inconsistent")
        if version == STORED:
            return _unstored(payload, kind, step, lo, hi, (planes, height, width), _skipped(valid))
        if version == PALETTE:
            return _unpalette(payload, kind, step, lo, hi, (planes, height, width), _skipped(valid))
        (flags,) = _unpack("<B", payload, _HEAD.size) if version >= 5 else (0,)
        if lo > hi or flags & ~(REVERSED | (UNLEARNED if version >= 7 else 0)):
            raise ContainerError("predictive tile head is inconsistent")
        reverse = flags & REVERSED
        records_at = _HEAD.size + (version >= 5)   # after the flags byte
        plans, head_size = _band_plans_v1(payload, planes, records_at) if version == 1 else \
            _band_plans(payload, planes, records_at, compact=version >= 6)
        lossless = kind not in GRIDS and not any(plan[4] for plan in plans)
        digest = payload[head_size:head_size + 32] if lossless else b""
        if len(digest) < 32 * lossless:
            raise ContainerError("predictive tile head is truncated")
        stream = np.frombuffer(payload, np.uint8, offset=head_size + len(digest)).copy()
        state = decoder_state(stream)
        table, odds = self._tables(version)
        copies = new_tables(_COPY_COUNTS) if version >= 3 else _NO_COPIES
        learned = pc.new_learned() if version >= 4 and not flags & UNLEARNED else None
        avoid = _avoided(self.nodata, kind, step)
        skip = _skipped(valid) if version >= 9 else None
        coded_skip = _NO_SKIP_TILE if skip is None else _planes_of(skip, kind)[::-1 if reverse else 1]
        coded = np.empty((planes, 3, height, width), np.int64)
        blank = np.zeros((height, width), np.int64)
        for b, (refs, gain, weights, constant, bound) in enumerate(plans):
            _code(blank, coded, b, refs, gain, weights, constant, bound, lo, hi, avoid, coded_skip, version >= 10,
                  table, odds, copies, learned, version >= 5, state, stream, True, _NO_COUNTS)
        if overrun(state, stream):
            raise ContainerError("predictive tile stream is truncated")
        samples = coded[::-1 if reverse else 1, 0]
        if skip is not None:   # nodata samples decode to their predictions: zero, as the digest has them (in
            samples = np.where(_planes_of(skip, kind), 0, samples)   # float64's words, maybe past their widths)
        tile = _from_integers(samples, kind, step)
        if lossless and _digest(tile, skip) != digest:
            raise ContainerError("lossless check failed: the tile decodes to other samples than were coded")
        return tile


def _stored_size(samples: int, lo: int, hi: int) -> int:
    """The bytes of a stored tile of this many samples from lo to hi."""
    return _HEAD.size + 32 + -(-samples * (hi - lo).bit_length() // 8)


def _stored(samples: np.ndarray, kind: int, step: float, lo: int, hi: int, digest: bytes) -> bytes:
    """A tile as format STORED: the head (its kind, step and range), ``digest``: the sha256 of the
    samples it decodes to (nodata as zeros: ``_digest``), and each sample less lo in the bits that
    hi - lo takes, packed least significant first, in band order. Full-range 32-bit noise
    coded to 28 % more than its raw bytes (a residual past ESCAPE costs its raw bits and a
    token); stored, an integer or lossless float tile takes at most 59 bytes more than its raw
    samples."""
    bits = (hi - lo).bit_length()
    offsets = (samples.ravel() - lo).astype(np.uint64)
    planes = np.empty((offsets.size, bits), np.uint8)
    for b in range(bits):
        planes[:, b] = (offsets >> np.uint64(b)) & np.uint64(1)
    return _HEAD.pack(STORED, kind, step, lo, hi) + digest + np.packbits(planes, bitorder="little").tobytes()


def _unstored(payload: bytes, kind: int, step: float, lo: int, hi: int, shape: tuple[int, int, int],
              skip: np.ndarray | None) -> np.ndarray:
    """The tile a format STORED payload holds (its range checked by the caller), its sha256 checked."""
    bits, n = (hi - lo).bit_length(), int(np.prod(shape))
    if len(payload) != _stored_size(n, lo, hi):
        raise ContainerError(f"stored predictive tile has {len(payload)} bytes, its head says "
                             f"{_stored_size(n, lo, hi)}")
    packed = np.frombuffer(payload, np.uint8, offset=_HEAD.size + 32)
    planes = np.unpackbits(packed, count=n * bits, bitorder="little").reshape(n, bits)
    offsets = np.zeros(n, np.uint64)
    for b in range(bits):
        offsets |= planes[:, b].astype(np.uint64) << np.uint64(b)
    if bits and offsets.max() > hi - lo:
        raise ContainerError("stored predictive tile holds samples above its range")
    tile = _from_integers((offsets.astype(np.int64) + lo).reshape(shape), kind, step)
    if _digest(tile, skip) != payload[_HEAD.size:_HEAD.size + 32]:
        raise ContainerError("lossless check failed: the stored tile holds other samples than were written")
    return tile


def _palette(samples: np.ndarray, skip: np.ndarray) -> np.ndarray | None:
    """The sorted distinct values of a tile's coded samples (its nodata samples left out: ``skip``,
    or empty), where there are at most palette_coder.MAX_PALETTE of them; else None. A probe of
    the samples answers most tiles (natural images have more values in a few thousand samples)."""
    valid = samples if not skip.size else samples[~skip]
    probe = valid.ravel()[::max(1, valid.size // _SCALED_PROBE)]
    if np.unique(probe).size > palette_coder.MAX_PALETTE:
        return None
    palette = np.unique(valid)
    return palette if 0 < palette.size <= palette_coder.MAX_PALETTE else None


def _palette_tile(samples: np.ndarray, skip: np.ndarray, palette: np.ndarray, kind: int, step: float, lo: int,
                  hi: int, digest: bytes) -> bytes:
    """A lossless tile as format PALETTE: the head, the palette's size and values (the first less
    lo, then each gap less one, as varints), ``digest``, and each sample's palette index coded by
    ``eoz.palette_coder`` (nodata samples not coded)."""
    idx = np.searchsorted(palette, samples).clip(0, palette.size - 1)
    match, escape = palette_coder.new_palette_tables(palette.size)
    buffer = np.zeros(samples.size * 5 + 1024, np.uint8)   # a sample takes two symbols of 16 bits at most
    state = encoder_state()
    palette_coder.code_palette(idx, skip, bool(skip.size), match, escape, state, buffer, False)
    n = finish(state, buffer)
    values = b"".join(map(_varint, [palette.size, int(palette[0]) - lo, *(np.diff(palette) - 1).tolist()]))
    return _HEAD.pack(PALETTE, kind, step, lo, hi) + values + digest + buffer[:n].tobytes()


def _unpalette(payload: bytes, kind: int, step: float, lo: int, hi: int, shape: tuple[int, int, int],
               skip: np.ndarray | None) -> np.ndarray:
    """The tile a format PALETTE payload holds (its range checked by the caller), its sha256 checked."""
    size, pos = _read_varint(payload, _HEAD.size, palette_coder.MAX_PALETTE)
    if size < 1:
        raise ContainerError("predictive palette tile has no values")
    steps = []
    for _ in range(size):
        value, pos = _read_varint(payload, pos, hi - lo)
        steps.append(value + bool(steps))   # the first value less lo, then each gap less one
    palette = lo + np.cumsum(np.array(steps, np.int64))
    if palette[-1] > hi:
        raise ContainerError("predictive palette tile holds values above its range")
    digest = payload[pos:pos + 32]
    if len(digest) < 32:
        raise ContainerError("predictive tile head is truncated")
    stream = np.frombuffer(payload, np.uint8, offset=pos + 32).copy()
    state = decoder_state(stream)
    idx = np.zeros(shape, np.int64)
    match, escape = palette_coder.new_palette_tables(size)
    planes_skip = _NO_SKIP_TILE if skip is None else _planes_of(skip, kind)
    palette_coder.code_palette(idx, planes_skip, skip is not None, match, escape, state, stream, True)
    if overrun(state, stream):
        raise ContainerError("predictive tile stream is truncated")
    samples = palette[idx]
    if skip is not None:   # as the digest has them
        samples = np.where(planes_skip, 0, samples)
    tile = _from_integers(samples, kind, step)
    if _digest(tile, skip) != digest:
        raise ContainerError("lossless check failed: the tile decodes to other samples than were coded")
    return tile


def _code(x, coded, b, refs, gain, weights, constant, bound, lo, hi, avoid, skip, carry, table, odds, copies,
          learned, linear_path, state, buffer, decoding, counts) -> None:
    """Band b through the compiled loop, into coded[b] (decoded, absolute errors, residuals);
    ``gain`` for the blend's spectral predictors (from refs[0]), ``weights`` None: no
    least-squares candidate (it reads the references' values and residuals in ``coded``);
    ``skip`` the tile's nodata samples in coding order (format 9: not coded), or empty, and
    ``carry`` whether they take their neighbours' recent errors (format 10);
    ``table`` and ``odds`` the residuals' adaptive tables (``PredictiveCodec._tables``);
    ``copies`` the copy flags' tables (format 3), or empty; ``learned`` format 4's learned
    correction (``pc.new_learned``, carried through a tile's bands), or None: none;
    ``linear_path``: with format 5's linear path beside its hidden units."""
    if weights is None:
        own, part = _NO_WEIGHTS, _NO_PART
    else:
        own = weights[:len(pc.OWN_TAPS)]
        part = pc.reference_part(weights[len(pc.OWN_TAPS):], constant, coded, np.asarray(refs, np.int64), *x.shape)
    if not pc.code_band(x, coded[refs[0]] if refs else _NO_REFERENCE, bool(refs), gain, own, part, bound, lo, hi,
                        avoid if avoid is not None else 0, avoid is not None, _band_skip(skip, b), carry, table, odds,
                        state, buffer, decoding, counts, copies, learned is not None, linear_path,
                        learned or _NO_LEARNED, coded[b]):
        raise _BufferFull(f"band {b} outgrew the encoder's buffer of {len(buffer)} bytes")


def _compact_record(b: int, refs: list[int], least_squares: bool, gain: int, bound: int, previous_bound: int) -> bytes:
    """Band b's record in format 6, before its least-squares weights (zigzag varints too): a
    flags byte, then varints of what differs from the usual (a gain of 1, the band before's
    bound, references just before the band)."""
    new_bound = bound != previous_bound
    out = bytearray([len(refs) | least_squares << 2 | new_bound << 3])
    if refs:
        out += _varint(_zigzag(gain - _GAIN_UNIT))
    if new_bound:
        out += _varint(bound)
    for ref in refs:
        out += _varint(b - 1 - ref)
    return bytes(out)


def _zigzag(v: int) -> int:
    """Signed to unsigned, small magnitudes to small numbers: 0, -1, 1, -2... -> 0, 1, 2, 3..."""
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(z: int) -> int:
    return z >> 1 if z % 2 == 0 else -(z + 1 >> 1)


def _varint(v: int) -> bytes:
    """LEB128: seven bits a byte, low first, the high bit set on all but the last."""
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _zigzag_varints(values: np.ndarray) -> bytes:
    """``b"".join(_varint(_zigzag(v)) for v in values)`` for int64 values under 2^62 in
    magnitude, without a Python step per value: a band's weights are up to 65 of them, and the
    band-order trial writes every band's record twice."""
    zigzag = np.where(values >= 0, 2 * values, -2 * values - 1).astype(np.uint64)
    groups = zigzag[:, None] >> (np.uint64(7) * np.arange(_VARINT_GROUPS, dtype=np.uint64))
    count = np.maximum(1, (groups > 0).sum(1))   # the groups up to the highest non-zero one
    used = np.arange(_VARINT_GROUPS) < count[:, None]
    more = np.arange(_VARINT_GROUPS) < count[:, None] - 1
    return ((groups & np.uint64(0x7F)) | (more * np.uint64(0x80))).astype(np.uint8)[used].tobytes()


def _read_varint(payload: bytes, pos: int, limit: int) -> tuple[int, int]:
    """(value, position after it) of the varint at pos; a value above ``limit`` or a varint
    cut off by the end of the payload is a corrupt head."""
    value, shift = 0, 0
    while True:
        if pos >= len(payload):
            raise ContainerError("predictive tile head is truncated")
        byte = payload[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if value > limit or shift > 63:   # past the limit, or padded with empty bytes
            raise ContainerError("a predictive tile's band record is out of range")
        if byte < 0x80:
            return value, pos
        shift += 7


def _compact_fields(payload: bytes, pos: int, b: int, previous_bound: int) -> tuple[int, int, int, int, list[int], int]:
    """Format 6's record of band b at pos: (reference count, least-squares flag, gain, bound,
    references, position after them)."""
    (flags,) = _unpack("<B", payload, pos)
    pos += 1
    if flags >> 4:
        raise ContainerError(f"a predictive tile's band record has unknown flags {flags:#x}")
    n_refs, least_squares = flags & 3, flags >> 2 & 1
    gain, bound = 0, previous_bound
    if n_refs:
        zigzag, pos = _read_varint(payload, pos, 2 * _GAIN_UNIT + (1 << 16))
        gain = _GAIN_UNIT + _unzigzag(zigzag)
    if flags >> 3 & 1:
        bound, pos = _read_varint(payload, pos, _MAX_BOUND)
    refs = []
    for _ in range(n_refs):
        distance, pos = _read_varint(payload, pos, _MAX_BOUND)
        refs.append(b - 1 - distance)
    if not -(1 << 15) <= gain < 1 << 15:
        raise ContainerError("a predictive tile's band record is out of range")
    return n_refs, least_squares, gain, bound, refs, pos


def _band_plans(payload: bytes, bands: int, pos: int, compact: bool) -> tuple[list[tuple], int]:
    """Format 2's band records (``compact``: format 6's) from ``pos`` on: ([references], gain,
    weights or None, constant, bound) each, and where they end."""
    plans = []
    bound = 0
    for b in range(bands):
        if compact:
            n_refs, least_squares, gain, bound, refs, pos = _compact_fields(payload, pos, b, bound)
        else:
            n_refs, least_squares, gain, bound = _unpack(_BAND.format, payload, pos)
            pos += _BAND.size
            if n_refs > pc.MAX_REFS or least_squares > 1:
                raise ContainerError(f"a predictive tile's band has {n_refs} references (at most {pc.MAX_REFS}) "
                                     f"and least-squares flag {least_squares}")
            refs = list(_unpack(f"<{n_refs}H", payload, pos))
            pos += 2 * n_refs
        if any(not 0 <= ref < b for ref in refs):
            raise ContainerError("a predictive tile's band refers to a band not yet decoded")
        weights, constant = None, 0
        if least_squares:
            n_weights = _weights(n_refs)
            if compact:
                values = []
                for limit in [pc.LS_WEIGHT_LIMIT] * n_weights + [_CONSTANT_LIMIT]:
                    zigzag, pos = _read_varint(payload, pos, 2 * limit)
                    values.append(_unzigzag(zigzag))
                weights, constant = np.array(values[:-1], np.int64), values[-1]
            else:
                weights = np.array(_unpack(f"<{n_weights}i", payload, pos), np.int64)
                (constant,) = _unpack("<q", payload, pos + 4 * n_weights)
                pos += 4 * n_weights + 8
            if np.abs(weights).max(initial=0) >= pc.LS_WEIGHT_LIMIT or abs(constant) >= _CONSTANT_LIMIT:
                raise ContainerError("a predictive tile's band has predictor weights out of range")
        plans.append((refs, gain, weights, constant, bound))
    return plans, pos


def _unpack(fmt: str, payload: bytes, pos: int) -> tuple:
    try:
        return struct.unpack_from(fmt, payload, pos)
    except struct.error:
        raise ContainerError("predictive tile head is truncated") from None


def _band_plans_v1(payload: bytes, bands: int, pos: int) -> tuple[list[tuple], int]:
    """Format 1's band records, as _band_plans gives them (no weights: the blend)."""
    head_size = pos + bands * _BAND_V1.size
    if len(payload) < head_size:
        raise ContainerError("predictive tile head is truncated")
    records = [_BAND_V1.unpack_from(payload, pos + b * _BAND_V1.size) for b in range(bands)]
    if any(ref > b for b, (ref, _, _) in enumerate(records)):
        raise ContainerError("a predictive tile's band refers to a band not yet decoded")
    return [([ref - 1] if ref else [], gain, None, 0, bound) for ref, gain, bound in records], head_size


class _BufferFull(RuntimeError):
    """The encoder's buffer could not take the next row at the worst a sample can take."""


_NO_COUNTS = np.zeros((0, TOKENS), np.int64)
_NO_COPIES = np.zeros((0, 3), np.int64)
_NO_SKIP = np.zeros((0, 0), bool)
_NO_SKIP_TILE = np.zeros((0, 0, 0), bool)
_NO_ODDS = np.zeros((0, 2), np.int64)   # before format 9: a magnitude's low bits and sign raw
_COPY_COUNTS = np.full((pc.COPY_ROWS, 2), 4)   # (no copy, copy): even odds, learned within a few samples
_NO_WEIGHTS = np.zeros(0, np.int64)
_NO_PART = np.zeros((1, 1), np.int64)
_NO_REFERENCE = np.zeros((3, 1, 1), np.int64)   # never read: a band without a reference
_NO_LEARNED = pc.new_learned()   # never read: formats 1 to 3 code without the learned correction


def _band_skip(skip: np.ndarray, b: int) -> np.ndarray:
    """Band b's plane of a tile's nodata samples, or empty where the tile has none."""
    return skip[b] if skip.size else _NO_SKIP


def _weights(n_refs: int) -> int:
    """How many least-squares weights a band with n_refs references has (besides the constant):
    its causal taps, and each reference's 3 x 3 window of values and of residuals."""
    return len(pc.OWN_TAPS) + 2 * n_refs * len(pc.WINDOW)


def _start(coded: np.ndarray, refs: list[int], lo: int, hi: int) -> int:
    """The value the compiled loop gives the taps of a band's first sample (as code_band sets it)."""
    return int(coded[refs[0], 0, 0, 0]) if refs else (lo + hi) >> 1


def _reference_sets(samples: np.ndarray) -> list[tuple[list[int], int]]:
    """Per band: (up to MAX_REFS earlier bands whose horizontal gradients correlate with its
    own above MIN_CORRELATION, best first; the fixed-point least-squares gain of its
    gradients on the first one's, or 0). Measured on every 4th row: enough to rank them, a
    fraction of the memory for hundreds of bands."""
    gradients = np.diff(samples[:, ::4].astype(np.float64), axis=2).reshape(samples.shape[0], -1)
    gram = gradients @ gradients.T
    energy = np.diag(gram)
    out = []
    for band in range(samples.shape[0]):
        norms = np.sqrt(energy[band] * energy[:band])
        correlation = np.divide(gram[band, :band], norms, out=np.zeros(band), where=norms > 0)
        ranked = np.argsort(-correlation, kind="stable")[:pc.MAX_REFS]
        refs = [int(r) for r in ranked if correlation[r] > MIN_CORRELATION]
        gain = round(gram[band, refs[0]] / energy[refs[0]] * (1 << pc.GAIN_BITS)) if refs else 0
        out.append((refs, int(np.clip(gain, -(1 << 15), (1 << 15) - 1))))
    return out


def _fit(band: np.ndarray, start: int, coded: np.ndarray, refs: list[int], samples: int,
         reweights: int, skip: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Integer weights (LS_FRAC fraction bits: causal taps, then the window of each of the
    references' planes in ``coded``, values then residuals) and
    constant predicting the band, fitted on an even grid of about ``samples`` of its samples towards
    the least absolute error: a residual's code grows with the log of its size, not its square,
    so a plain least-squares fit gives the few large residuals of bright or textured areas the
    say; each of ``reweights`` refits weighs a sample by the inverse of its last error (iteratively
    reweighted least squares). One matrix holds the centred features, a column of ones (the
    constant, free of the ridge) and the centred target, so each fit is one symmetric product
    of it, rows scaled by the weights' roots; a small ridge keeps collinear taps (flat areas,
    duplicated bands) bounded. ``skip``: nodata samples (filled, never coded), left out of
    the fit where enough others are left."""
    h, w = band.shape
    stride = max(1, int(np.ceil(np.sqrt(h * w / samples))))
    rows, cols = np.meshgrid(np.arange(0, h, stride), np.arange(0, w, stride), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    taps = len(pc.OWN_TAPS)
    m = _weights(len(refs))
    if skip is not None and skip.size:
        keep = ~skip[rows, cols]
        if keep.sum() > 2 * m:
            rows, cols = rows[keep], cols[keep]
    design = np.empty((len(rows), m + 2))   # filled in place, and scaled into one other array: at these
                                            # sizes fresh arrays cost more in page faults than the products
    pc.own_features(band, start, rows, cols, design[:, :taps])
    pc.window_features(coded, np.asarray(refs, np.int64), rows, cols, design[:, taps:m])
    design[:, m] = 1.0
    design[:, m + 1] = band[rows, cols]
    means = design.mean(0)
    design[:, :m] -= means[:m]
    design[:, m + 1] -= means[m + 1]
    root, scaled = np.ones(len(rows)), np.empty_like(design)
    for refit in range(reweights + 1):
        if refit:
            error = np.abs(design[:, m + 1] - design[:, :m + 1] @ solution)
            root = 1 / np.sqrt(error + max(np.median(error) / 2, 1))
        np.multiply(design, root[:, None], out=scaled)
        gram = scaled.T @ scaled
        normal = gram[:m + 1, :m + 1]
        # the ridge scales with the gram of the features centred on their weighted means
        centred_trace = np.trace(normal[:m, :m]) - normal[:m, m] @ normal[:m, m] / normal[m, m]
        ridge = 1e-6 * centred_trace / m + 1e-9
        solution = np.linalg.solve(normal + np.diag(np.r_[np.full(m, ridge), 0.0]), gram[:m + 1, m + 1])
    scale = 1 << pc.LS_FRAC
    limit = pc.LS_WEIGHT_LIMIT - 1
    weights = np.clip(np.rint(solution[:m] * scale), -limit, limit).astype(np.int64)
    constant = np.rint((means[m + 1] + solution[m] - means[:m] @ (weights / scale)) * scale)
    return weights, int(np.clip(constant, -_CONSTANT_LIMIT + 1, _CONSTANT_LIMIT - 1))


def _ordered(bits: np.ndarray, width: int) -> np.ndarray:
    """float32 or float64 bit patterns (width 32 or 64; signed integers) -> integers in the
    floats' order, as int64 (and back: it is its own inverse on the negative half)."""
    wide = bits.astype(np.int64)
    return np.where(wide < 0, -(wide & ((1 << (width - 1)) - 1)) - 1, wide)


def _planes_of(per_band: np.ndarray, kind: int) -> np.ndarray:
    """A per-band array (the nodata samples) for the planes coded: float64 bits are coded as two
    planes a band (``_to_integers``), each band's high words, then its low words."""
    return np.concatenate([per_band, per_band]) if kind == DOUBLE_BITS else per_band


def _to_integers(tile: np.ndarray, bounds: list[float],
                 skip: np.ndarray | None = None) -> tuple[int, float, np.ndarray, list[int]]:
    """(sample kind, grid step, the integers coded, integer bound per plane) of a tile (skip:
    its nodata samples, or None). Floats whose valid samples are integers divided by one of
    DIVISORS (``_scaled_integers``): as those integers, losslessly; whole numbers also with whole
    bounds. Other floats
    losslessly: their bit patterns in the floats' order (float64's in two planes a band:
    ``_double_planes``).
    With a bound e: a grid of step 2e (``_grid``: every value decodes within e, rounding to the
    dtype included; bounds that differ by band, ``_fine_grid``), unless its integers reach
    _GRID_LIMIT: a bound finer than the floats' own spacing, met exactly by their bits."""
    if tile.dtype.kind in "iu":
        if any(b != int(b) for b in bounds):
            raise InputError(f"max_error for {tile.dtype} samples must be whole numbers, not {bounds}")
        return INTEGER, 0.0, tile.astype(np.int64), [int(b) for b in bounds]
    if tile.dtype not in (np.float32, np.float64):
        raise InputError(f"the predictive codec codes {', '.join(DTYPES)} samples, not {tile.dtype}")
    double = tile.dtype == np.float64
    lossless = not any(bounds)
    scaled = _scaled_integers(tile, skip, DIVISORS if lossless else DIVISORS[:1])
    if scaled is not None and all(b == int(b) for b in bounds) \
            and (double or lossless or np.abs(scaled[1]).max(initial=0) < _FLOAT32_WHOLE):
        return DOUBLE_SCALED if double else FLOAT_SCALED, scaled[0], scaled[1], [int(b) for b in bounds]
    if any(bounds):
        if not np.isfinite(tile).all():
            raise InputError("near-lossless float rasters must be finite (declare NaN as nodata)")
        if not all(bounds):
            raise InputError(f"a {tile.dtype} raster's bands are all lossless or all bounded, not {bounds}")
        found = _grid(tile, bounds[0]) if len(set(bounds)) == 1 else _fine_grid(tile, bounds)
        if found is not None:
            return DOUBLE_GRID if double else FLOAT_GRID, *found
    if not double:
        zeros, ordered = _float_bits(tile, skip)
        return FLOAT_BITS, float(zeros), ordered, [0] * len(bounds)
    zeros, planes = _double_planes(tile if skip is None else np.where(skip, 0.0, tile))
    return DOUBLE_BITS, float(zeros), planes, [0] * (2 * len(bounds))


def _grid(tile: np.ndarray, bound: float) -> tuple[float, np.ndarray, list[int]] | None:
    """(step, integers, integer bound per band: 0) of a grid whose points, rounded to the tile's
    dtype, are all within bound of its samples: step 2 x bound, shrunk by _GRID_SHRINK up to
    _GRID_SHRINKS times (rounding pushes a few samples out), then at once by what the rounding
    can take at the largest magnitude (where the bound is near the floats' own spacing, the
    shrinks alone took 3000 to 250000 tries, each a pass over the tile); None where its integers
    would reach _GRID_LIMIT or no step is left."""
    values = tile.astype(np.float64)
    step = 2 * bound
    for attempt in range(_GRID_SHRINKS + 1):
        if attempt == _GRID_SHRINKS:
            largest = np.abs(values).max(initial=0) + bound
            step = 2 * bound - 4 * float(np.spacing(np.array(largest, tile.dtype)))
        if not step > 0:
            return None
        grid = np.rint(values / step)
        if np.abs(grid).max(initial=0) >= _GRID_LIMIT:
            return None
        if (np.abs((grid * step).astype(tile.dtype).astype(np.float64) - values) <= bound).all():
            return step, grid.astype(np.int64), [0] * len(tile)
        step *= _GRID_SHRINK
    return None


def _fine_grid(tile: np.ndarray, bounds: list[float]) -> tuple[float, np.ndarray, list[int]] | None:
    """(step, integers, integer bound per band) for bounds that differ by band: one grid, its step
    a _FINE_GRID-th of the smallest bound's bins (2 e), and each band's integers coded within the
    most whole steps its own bound leaves. A band's error is then at most N s + s / 2 for the grid
    and N steps, plus the floats' spacing u at its largest value for rounding to the dtype, so
    N = floor((e - u) / s - 1/2), and s is taken so that the smallest bound's band gets
    (_FINE_GRID - 1) / 2: its bins fit its bound, the others' lose under a ninth of the smallest
    bin (a coarse step of 2 x the smallest bound, N whole, left up to a third of a bin unused).
    None where its integers would reach _GRID_LIMIT or a bound is finer than the floats' spacing."""
    values = tile.astype(np.float64)
    spacing = [float(np.spacing(np.array(np.abs(band).max(initial=0) + bound, tile.dtype)))
               for band, bound in zip(values, bounds)]
    smallest = int(np.argmin(bounds))
    step = (bounds[smallest] - spacing[smallest]) / (_FINE_GRID / 2)
    if not step > 0:
        return None
    grid = np.rint(values / step)
    if np.abs(grid).max(initial=0) >= _GRID_LIMIT:
        return None
    steps = [np.floor((bound - u) / step - 0.5) for bound, u in zip(bounds, spacing)]
    if min(steps) < 0:
        return None
    return step, grid.astype(np.int64), [int(min(n, _MAX_BOUND)) for n in steps]


def _scaled_integers(tile: np.ndarray, skip: np.ndarray | None,
                     divisors: tuple[float, ...]) -> tuple[float, np.ndarray] | None:
    """(d, integers n) of a float tile whose valid samples are each exactly n / d (computed in
    float64, then rounded to the tile's dtype) for the first such d of divisors, |n| under
    _SCALED_LIMIT (nodata as 0: never coded); else None. Digital numbers written as floats
    (d = 1), and reflectances written as digital numbers / 10000: coded as those integers, they
    take the integer raster's bytes, where their bit patterns took 2.5 times that. A -0 is no
    integer's quotient, so it keeps the bit patterns."""
    values = tile if skip is None else np.where(skip, np.zeros((), tile.dtype), tile)
    probe = values.ravel()[::max(1, values.size // _SCALED_PROBE)]
    for divisor in divisors:
        if _quotients(probe, divisor) is not None:   # the probe passes: the whole tile, or none
            integers = _quotients(values, divisor)
            return None if integers is None else (divisor, integers)
    return None


def _quotients(values: np.ndarray, divisor: float) -> np.ndarray | None:
    """The integers n with (n / divisor) rounded to the values' dtype equal to each value, bit for
    bit, or None."""
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = values.astype(np.float64) * divisor
        if not (np.abs(scaled) < _SCALED_LIMIT).all():
            return None
        integers = np.rint(scaled).astype(np.int64)
    exact = (integers / divisor).astype(values.dtype)
    bits = np.dtype(f"int{8 * values.dtype.itemsize}")
    return integers if np.array_equal(exact.view(bits), values.view(bits)) else None


def _trailing_zeros(bits: np.ndarray) -> int:
    """The trailing zero bits that these signed bit patterns all share (one less than their
    width where every one is zero)."""
    width = 8 * bits.dtype.itemsize
    common = int(np.bitwise_or.reduce(bits.view(f"uint{width}"), axis=None))
    return min((common & -common).bit_length() - 1, width - 1) if common else width - 1


def _float_bits(tile: np.ndarray, skip: np.ndarray | None) -> tuple[int, np.ndarray]:
    """(z, integers) of a float32 tile: its bit patterns less the z trailing zero bits its valid
    samples all share, in the floats' order. Half floats are the case: a GeoTIFF of 16-bit floats
    reads as float32 with 13 zero bits, which coded raw cost 13 bits a sample (2.4x the file;
    bfloat16's, 16). Nodata samples are not counted (never coded, they may lose bits)."""
    bits = tile.view(np.int32)
    zeros = _trailing_zeros(bits if skip is None else bits[~skip])
    return zeros, _ordered(bits.astype(np.int64) >> zeros, 32 - zeros)


def _shift(zeros: float, width: int) -> int:
    """A float bits tile's shift (its head's step field), checked."""
    if zeros != int(zeros) or not 0 <= zeros < width:
        raise ContainerError("predictive float tile head is inconsistent")
    return int(zeros)


def _double_planes(tile: np.ndarray) -> tuple[int, np.ndarray]:
    """(z, planes) of a float64 tile (its nodata samples zero: never coded, and their fill would
    have no trailing zeros): its bit patterns less the z trailing zero bits all of them
    share (29 or more where the values came from float32, more from small integers), in the
    floats' order, then split into two planes a band: the top 32 bits (sign, exponent and the
    top of the mantissa: they predict as the values do) and the rest (the mantissa's end,
    noise-like; none where 32 bits are left), centred on zero: both planes then span 2^32 at
    most, so a stored tile (format 11) takes 32 bits a plane's sample."""
    bits = tile.view(np.int64)
    zeros = _trailing_zeros(bits)
    width = 64 - zeros
    ordered = _ordered(bits >> zeros, width)
    low = max(width - 32, 0)
    return zeros, np.concatenate([ordered >> low, (ordered & ((1 << low) - 1)) - _centre(low)])


def _centre(bits: int) -> int:
    return (1 << bits) >> 1


def _double_values(planes: np.ndarray, zeros: float) -> np.ndarray:
    """The float64 tile of ``_double_planes``'s planes and shift."""
    zeros = _shift(zeros, 64)
    width = 64 - zeros
    low = max(width - 32, 0)
    high_words, low_words = np.split(planes, 2)
    low_words = low_words + _centre(low)
    if high_words.min() < -(1 << (width - low - 1)) or high_words.max() >= 1 << (width - low - 1) \
            or low_words.min() < 0 or low_words.max() >= 1 << low:
        raise ContainerError("predictive float64 tile holds words outside their widths")
    return (_ordered((high_words << low) | low_words, width) << zeros).view(np.float64)


def _from_integers(samples: np.ndarray, kind: int, step: float) -> np.ndarray:
    """The tile of the integers coded (``_to_integers``'s inverse)."""
    if kind == INTEGER:
        return samples
    if kind in SCALED:
        return (samples / step).astype(np.float32 if kind == FLOAT_SCALED else np.float64)
    if kind in GRIDS:
        return (samples * step).astype(np.float32 if kind == FLOAT_GRID else np.float64)
    if kind == FLOAT_BITS:
        zeros = _shift(step, 32)
        width = 32 - zeros
        if samples.min() < -(1 << (width - 1)) or samples.max() >= 1 << (width - 1):
            raise ContainerError("predictive float tile holds values outside float32")
        return (_ordered(samples, width) << zeros).astype(np.int32).view(np.float32)
    return _double_values(samples, step)


def _avoided(nodata: float | None, kind: int, step: float) -> int | None:
    """The coded integer a valid sample must not decode to (it would read as nodata), if any."""
    if nodata is None or np.isnan(nodata) or kind in (FLOAT_BITS, DOUBLE_BITS):
        return None
    if kind in GRIDS:
        value = nodata / step
        return int(value) if value == int(value) else None
    return int(nodata) if nodata == int(nodata) else None


def _canonical(tile: np.ndarray) -> np.ndarray:
    """What a lossless tile's sha256 covers: its samples, little endian, integers as int64,
    floats in their dtype (one conversion: a 224-band tile's copies took a tenth of its encode)."""
    dtype = np.dtype("<i8") if tile.dtype.kind in "iu" else tile.dtype.newbyteorder("<")
    return np.ascontiguousarray(tile, dtype=dtype)


def _digest(tile: np.ndarray, skip: np.ndarray | None = None) -> bytes:
    """The sha256 of a lossless tile's samples, nodata samples (format 9's ``skip``) as zeros:
    the encoder is given them filled, the decoder gives them as predicted."""
    if skip is not None:
        tile = np.where(skip, np.zeros((), tile.dtype), tile)
    return hashlib.sha256(_canonical(tile)).digest()


def _skipped(valid: np.ndarray | None) -> np.ndarray | None:
    """The samples format 9 skips (nodata), or None where every sample is valid."""
    return None if valid is None or valid.all() else ~np.asarray(valid, bool)
