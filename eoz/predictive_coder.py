"""Predictive coding of integer bands with a hard per-sample error bound (lossless: bound 0).

As CCSDS 123.0-B-2, each sample is predicted from causal neighbours in its own band and
from the same place in a previously coded (reference) band, and the residual is quantized
in the loop with bins 2N+1 wide, so every reconstructed sample is within N of the original
by construction. The prediction is a blend of eight simple predictors (four spatial: W,
N, W+N-NW, NE; four spectral: each of those plus the reference band's local difference,
scaled by a per-band gain), each weighted by the inverse square of its recent error on
the causal neighbours: the predictor that worked here just now gets the say. A per-
context bias correction (as JPEG-LS's) removes what the blend gets wrong on average.

Format 2 adds a ninth candidate to the blend in bands large enough to pay for it: one
least-squares predictor per band, fitted by the encoder on the tile and sent as integer
weights: the ten causal neighbours of the sample in its own band, and a 3 x 3 window
(centred on the sample: those bands are decoded whole) of up to MAX_REFS reference bands'
values and of their coded residuals, plus a constant. The reference part is one exact
integer plane per band (``reference_part``); only the ten causal taps run in the
sequential loop. Where the blend's one spectral gain per band is too coarse (Sentinel-2
20 m's six correlated bands, Landsat), a sample's neighbours in several bands, and where
they were mispredicted, carry what the blend cannot see; where one global fit is wrong
(bands upsampled from coarser grids, whose exact repeats the W and N predictors catch),
the blend weighs it down by its recent errors, as any other candidate.

Format 3 adds copy flags. Rasters resampled by nearest neighbour (reprojected products,
bands upsampled from a coarser grid) repeat samples: a column every few, on a slant from
row to row, or every other sample. Where a sample's neighbourhood shows such a repeat (the
sample above repeats its west neighbour, or the reference band repeats here: ``_copy_kind``),
one adaptive binary flag says whether the sample is its W (or N) neighbour, within the
bound; a repeat then costs a fraction of a bit instead of a residual. A flag is coded only
where its row's odds pay for it: a row whose flags rarely hit (natural images, where a
sample equals its neighbour by chance) stops coding them, and keeps learning from the
decoded samples whether it should start again; where residuals are cheap (low error
levels) or bins are wide (near-lossless), a miss wastes more and a hit saves less, so the
odds must be better; near-lossless, none is coded where the source is in the prediction's
own bin (a zero residual says it). A copy decodes to its source, within the bound of the
sample.

Format 4 adds a learned correction of the prediction, in every band: a network of
LEARN_HIDDEN ReLUs on the sample's causal taps and its neighbours' residuals, the reference
band's window and residuals, and the blend's candidates, all in units of the local error
scale, trained by the loop itself as the tile is coded (one gradient step per sample, on
what the prediction left, the weights carried from band to band): it starts at nothing and
learns what the linear candidates and the blend miss in this tile, with no side information
and no trained weights to ship. In bands too small for the least-squares candidate it
stands in for it. Its arithmetic is fixed point, so encoder and decoder learn the same
weights on every machine. Format 5 adds a linear path beside its hidden units: weights on
the same inputs, learned at a rate 2^6 times slower, for what is linear and lasting in the
tile's local corrections (the hidden units chase what is nonlinear and recent).

The quantized residual is coded with the wavelet codec's range coder and token scheme
(``eoz.subband_coder``): its magnitude with an adaptive table chosen by the local error
level (errors of the final prediction around the sample, and at the same place in the
reference band), its sign raw. Format 8 chooses the table by the prediction's value too:
a sensor's noise grows with its signal (photon noise; speckle in proportion to it), so the
value tells the residual's spread where the recent errors are few or mixed. Format 9 codes
with adaptive binary odds what earlier formats code raw: a magnitude's first low bit (below
its token), per token and error level, as within a token's range the smaller magnitudes are
the likelier, the more so the narrower the spread; and the sign, per token and class of the
prediction's value, as speckle is skewed (below the local mean, small residuals outnumber
large ones); and it codes nothing for nodata samples (the decoder has the tile's nodata mask
first): a scene's nodata border costs its mask alone, where filled it cost the jumps into and
out of the fill. Format 10's skipped samples take their neighbours' recent errors (format 9's
took none), so a row entering the data from nodata meets the data's error level. The tables
start at counts learned on training rasters of every sensor (``eoz.train_predictive``;
format 8's at the same counts in every class of the value) and adapt within each tile.

Everything is integer arithmetic in one compiled sequential loop shared by encoder and
decoder, so both see the same predictions bit for bit on every machine. The loop inlines
the range coder of ``eoz.subband_coder``; numba's cache keys on this file only, which is
safe because that coder is frozen by the golden files (changing it changes the format).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.core.cpu import CPUTargetOptions

from eoz.subband_coder import _CACHE_SIZE, _LOW, _POS, _RANGE, DIRECT, WEIGHT_BITS, _bit_length, _log_class, \
    _narrow, _token, _update, _widen, decode_adaptive, decode_bits, encode_adaptive, encode_bits

jit = numba.njit(cache=True, nogil=True, boundscheck=False)
# per-sample helpers are inlined by numba itself, into a loop compiled without reference counting:
# a compiled helper counts references to the arrays it is passed, atomically, on every call
inline = numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
# numba's private option to compile without reference counting; where a numba lacks it, the
# same loop compiles with counting: slower, the same bits
_WITHOUT_REFERENCE_COUNTING = {"_nrt": False} if hasattr(CPUTargetOptions, "_nrt") else {}

SPATIAL = 4
LMS_BITS = 16
LMS_RATE = 1
PREDICTORS = 2 * SPATIAL      # spatial, and spectral
FINAL = PREDICTORS + 1        # the error ring of the final prediction (format 2's least-squares
                              # candidate comes after the others, at most at index PREDICTORS)
SCRATCH = 7                   # the loop's small work vectors (rows, neighbours x 2, candidates, errors, LMS, taps)
RING_PAD = 2                  # the error rings' zero columns before the band (W and WW of column 0)
CLASSES = 24                  # error-level classes of the magnitude tables
ROWS = 2 * CLASSES            # x 2: with or without a reference band
VALUE_CLASSES = 32            # format 8: the tables' rows again per half octave of the prediction (2^15 and up: one),
VALUE_CLASS_SAMPLES = 1 << 12  # in bands this large (too few samples to learn each class's spread: EnMAP +0.2 %)
PROBABILITY_BITS = 22         # format 9's odds of a bit: P(0) in 1/2^22 (range x P(0) stays under 2^54),
BIT_ONE = 1 << PROBABILITY_BITS
BIT_MARGIN = 1 << 10          # ... kept this far from 0 and 1,
RATE_BITS = 16                # ... moved by rates in 1/2^16,
BIT_RATE_AFTER = 1 << 10      # ... learned as a frequency (at rate 1/(n + 2)) up to this many bits, then at this rate
COPY_KINDS = 8                # format 3's copy flags: (W, N) x evidence (own, reference, both, one off)
COPY_ROWS = 4 * COPY_KINDS    # x (without, with a reference band) x (costly, cheap residuals)
CHEAP_CLASSES = 8             # error-level classes where a residual costs about 4 bits or less
COPY_ODDS = 8                 # a flag is coded where its row has seen a copy at least once in this many;
NEAR_LOSSLESS_COPY_ODDS = 4   # more often near-lossless,
CHEAP_COPY_ODDS = 2           # and where residuals are cheap (a miss wastes more there, a hit saves less)
GAIN_BITS = 8                 # the spectral gain is fixed point with this many fraction bits
_BIAS_LIMIT = 256             # a bias context's count is halved past this
ESCAPE = 1 << 24              # magnitudes from here on: this token, then the excess in raw bits
ESCAPE_BITS = 40              # residuals of samples up to 32 bits (float32 bit patterns span 2^33)
ESCAPE_TOKEN = DIRECT + 2 * (24 - 3)   # the token of ESCAPE = 2^24; larger tokens never occur
# the most bytes a sample can take: a copy flag and a token (adaptive tables: at most 16 bits
# each, their totals stay under 2^16), a first low bit and a sign (odds kept 2^-12 from
# certainty: 12 bits each), ESCAPE_BITS raw (or 22 low bits below ESCAPE) and a nodata offset of
# up to 33 bits (a bound below 2^32); 117 bits and the range coder's rounding (under 0.01 a symbol)
WORST_SAMPLE_BYTES = 16
LOW_BIT_ROWS = (ESCAPE_TOKEN - DIRECT) * CLASSES   # format 9's odds of a first low bit: per token with low bits,
SIGN_TOKENS = 32                                  # and error level; then of a sign: per token (the last for all
BIT_ROWS = LOW_BIT_ROWS + SIGN_TOKENS * VALUE_CLASSES   # from there) and class of the prediction
# the rates 1/(n + 2) as a table: no division per bit
_BIT_RATES = np.array([(1 << RATE_BITS) // (n + 2) for n in range(BIT_RATE_AFTER - 1)], np.int64)
# format 2's least-squares predictor: causal taps in the own band, windows in reference bands
OWN_TAPS = np.array([(0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0), (-1, -2), (-2, -1), (-2, 1), (-1, 2)])
WINDOW = np.array([(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)])
MAX_REFS = 3
LS_FRAC = 14                  # fraction bits of the least-squares weights
LS_WEIGHT_LIMIT = 1 << 20     # |weight| < 64: with samples below 2^33, every sum stays under 2^63
# format 4's learned correction: a small network, trained as the tile is coded, on the local error scale
LEARN_HIDDEN = 4
LEARN_OWN = 16                # inputs: the ten causal taps less the prediction, six neighbours' residuals,
LEARN_REFERENCE = 2 * 9       # the reference's 3 x 3 differences from its centre and its residuals there,
LEARN_INPUTS = LEARN_OWN + LEARN_REFERENCE + FINAL + 1   # the candidates less the prediction, and 1
LEARN_FRAC = 8                # inputs, hidden units, target: this many fraction bits of the local error scale
LEARN_WEIGHT_FRAC = 16        # weights' fraction bits
LEARN_RATE_SHIFT = 8          # the learning rate, 2^-8
LINEAR_RATE_SHIFT = 14        # format 5's linear path: 2^-14
LEARN_CLIP = 8 << LEARN_FRAC  # inputs and output clipped to 8 local error scales
LEARN_WEIGHT_LIMIT = 1 << 24  # |weight| < 256
LEARN_SCALE_LIMIT = 1 << 30   # no correction where the local errors are larger (products stay under 2^63)


def _initial_learned_weights() -> np.ndarray:
    """The learned correction's first-layer weights at the start of every tile: fixed
    pseudo-random values (an integer hash, the same on every machine) of variance 1/inputs;
    the output weights start at zero, so the correction starts at nothing."""
    unit, tap = np.meshgrid(np.arange(LEARN_HIDDEN, dtype=np.uint64), np.arange(LEARN_INPUTS, dtype=np.uint64),
                            indexing="ij")
    hashed = ((unit * np.uint64(7919) + tap * np.uint64(104729) + np.uint64(12345)) * np.uint64(2654435761)) \
        % np.uint64(1 << 32)
    return ((hashed.astype(np.int64) - (1 << 31)) * math.isqrt(3 * (1 << 32) // LEARN_INPUTS)) >> 31


LEARN_INITIAL = _initial_learned_weights()


def new_learned() -> tuple[np.ndarray, np.ndarray]:
    """The learned correction's state at the start of a tile: its first-layer weights, and its
    output weights, inputs, hidden units and linear path's weights (rows of one array)."""
    return LEARN_INITIAL.copy(), np.zeros((4, LEARN_INPUTS), np.int64)


@inline
def _neighbours(r, i, j, out):
    """W, N, NW, NE, WW, NN of (i, j) in the decoded band r, replicated at the edges."""
    w = r.shape[1]
    west = r[i, j - 1] if j > 0 else (r[i - 1, j] if i > 0 else 0)
    north = r[i - 1, j] if i > 0 else west
    out[0] = west
    out[1] = north
    out[2] = r[i - 1, j - 1] if i > 0 and j > 0 else north
    out[3] = r[i - 1, j + 1] if i > 0 and j + 1 < w else north
    out[4] = r[i, j - 2] if j > 1 else west
    out[5] = r[i - 2, j] if i > 1 else north


@inline
def causal_taps(r, i, j, start, out):
    """The OWN_TAPS neighbours of (i, j) in the band r as decoded so far; a tap outside the
    band or not yet decoded takes W (N in the first column, ``start`` at the first sample)."""
    w = r.shape[1]
    if i >= 2 and 2 <= j < w - 2:   # inside: every tap is in the band and decoded
        for k in range(OWN_TAPS.shape[0]):
            out[k] = r[i + OWN_TAPS[k, 0], j + OWN_TAPS[k, 1]]
        return
    fallback = r[i, j - 1] if j > 0 else (r[i - 1, j] if i > 0 else start)
    for k in range(OWN_TAPS.shape[0]):
        ii, jj = i + OWN_TAPS[k, 0], min(max(j + OWN_TAPS[k, 1], 0), w - 1)
        out[k] = fallback if ii < 0 or (ii == i and jj >= j) else r[ii, jj]


@jit
def own_features(x, start, rows, cols, out):
    """causal_taps of every (rows[n], cols[n]) of x into out (n x taps, any number type): the
    least-squares fit's own-band features."""
    taps = np.empty(OWN_TAPS.shape[0], np.int64)
    for n in range(rows.shape[0]):
        causal_taps(x, rows[n], cols[n], start, taps)
        for k in range(taps.shape[0]):
            out[n, k] = taps[k]


@inline
def _plane(coded, refs, n):
    """Plane n of what a band's least-squares predictor reads of its references (coded: the
    tile's bands, each decoded values, absolute errors, residuals): the references' decoded
    values, then their residuals."""
    r = refs.shape[0]
    return coded[refs[n % r], 0 if n < r else 2]


@jit
def window_features(coded, refs, rows, cols, out):
    """The WINDOW taps of every reference plane (``_plane``) at every (rows[s], cols[s]) into
    out (s x taps, any number type): the least-squares fit's reference features, plane by plane."""
    for n in range(2 * refs.shape[0]):
        plane = _plane(coded, refs, n)
        h, w = plane.shape
        for s in range(rows.shape[0]):
            for k in range(WINDOW.shape[0]):
                out[s, n * WINDOW.shape[0] + k] = plane[min(max(rows[s] + WINDOW[k, 0], 0), h - 1),
                                                        min(max(cols[s] + WINDOW[k, 1], 0), w - 1)]


@jit
def reference_part(weights, constant, coded, refs, h, w):
    """constant + the weighted WINDOW taps of every reference plane (``_plane``; edges
    replicated), exactly, in LS_FRAC fraction bits, per sample: the least-squares prediction
    less its causal taps (h x w, the band's shape: with no references, the constant). Row by
    row, a window's row of three taps at a time, so the inner sums run over contiguous columns
    and vectorize (a pass per tap did not: eight times slower, 7 % of a Landsat tile's coding)."""
    out = np.full((h, w), constant, np.int64)
    for i in range(h):
        row = out[i]
        for n in range(2 * refs.shape[0]):
            plane = _plane(coded, refs, n)
            for di in range(3):   # WINDOW's rows: its taps (di - 1, -1), (di - 1, 0), (di - 1, 1)
                k = n * WINDOW.shape[0] + 3 * di
                west, centre, east = weights[k], weights[k + 1], weights[k + 2]
                source = plane[min(max(i + di - 1, 0), h - 1)]
                if w == 1:
                    row[0] += (west + centre + east) * source[0]
                    continue
                row[0] += (west + centre) * source[0] + east * source[1]
                for j in range(1, w - 1):
                    row[j] += west * source[j - 1] + centre * source[j] + east * source[j + 1]
                row[w - 1] += west * source[w - 2] + (centre + east) * source[w - 1]
    return out


@inline
def _spatial(nb, k) -> int:
    """Spatial predictor k from W, N, NW, NE, WW, NN."""
    if k == 0:
        return nb[0]
    if k == 1:
        return nb[1]
    if k == 2:
        return nb[0] + nb[1] - nb[2]
    if k == 3:
        return nb[3]
    return nb[0] + nb[3] - nb[1]


@inline
def _candidates(nb, rnb, ref_value, gain, has_ref, out):
    """The spatial predictions, then (with a reference band) each plus the reference's
    own error of the same predictor, times the gain: the spectral ones."""
    for k in range(SPATIAL):
        out[k] = _spatial(nb, k)
        if has_ref:
            out[SPATIAL + k] = out[k] + ((gain * (ref_value - _spatial(rnb, k)) + (1 << (GAIN_BITS - 1)))
                                         >> GAIN_BITS)


@jit
def _rows_above(err, rings, rows, i, w, above):
    """For row i, each ring's weighted errors from the rows above at every column: N (x2),
    NW, NE (columns clamped to the band) and NN; 0 before the band starts. The rings hold
    column j at j + RING_PAD. The columns inside are summed apart from the two at the edges,
    without clamping, on rows taken as views: that loop vectorizes (indexed through ``rows``
    and clamped, it ran a scalar step per column, 5 % of a band's coding)."""
    above[:, :] = 0
    if i == 0:
        return
    has_north_north = 1 if i > 1 else 0
    for k in rings:
        north, north_north, out = err[k, rows[1], RING_PAD:], err[k, rows[2], RING_PAD:], above[k]
        for j in range(1, w - 1):
            out[j] = _above(north, north_north, has_north_north, j, j - 1, j + 1)
        for j in (0, w - 1):
            out[j] = _above(north, north_north, has_north_north, j, max(j - 1, 0), min(j + 1, w - 1))


@inline
def _above(north, north_north, has_north_north, j, west, east):
    """_rows_above's sum at column j, with NW and NE at columns west and east."""
    return 2 * north[j] + north[west] + north[east] + has_north_north * north_north[j]


@inline
def _recent_error(err, above, k, row, j):
    """Weighted errors of ring k around (row, j): W (x2), WW (the ring's zero padding before
    the band), and what ``_rows_above`` summed."""
    return above[k, j] + 2 * err[k, row, j + RING_PAD - 1] + err[k, row, j + RING_PAD - 2]


@inline
def _copy_kind(rec, nb, ref, has_ref, i, j, tolerance) -> int:
    """What says (i, j) may repeat a neighbour, or -1: nothing. Resampled rasters repeat
    samples (nearest-neighbour resampling to another grid repeats a column every few, on a
    slant from row to row; an upsampled band repeats every other sample): where the sample
    above repeats its west neighbour (own evidence), or the reference band repeats here, or
    both, the sample is likely W (kinds 0-2); failing that, the same turned a quarter, N
    (4-6); failing both, the repeat one column (row) off, as on a slant (3, 7). Near-
    lossless, the sample above and the reference repeat within ``tolerance`` (twice the
    bound: two decoded copies of one value are that close); a copy decodes to its source
    exactly, so runs of copies keep their evidence."""
    if i == 0 or j == 0:
        return -1
    west = (abs(nb[1] - nb[2]) <= tolerance) + 2 * (has_ref and abs(ref[0, i, j] - ref[0, i, j - 1]) <= tolerance)
    if west:
        return west - 1
    north = (abs(nb[0] - nb[2]) <= tolerance) + 2 * (has_ref and abs(ref[0, i, j] - ref[0, i - 1, j]) <= tolerance)
    if north:
        return 3 + north
    if (j > 1 and nb[2] == rec[i - 1, j - 2]) or (j + 1 < rec.shape[1] and nb[3] == nb[1]):
        return 3
    if i > 1 and nb[2] == rec[i - 2, j - 1]:
        return 7
    return -1


@inline
def _scaled(d, inv) -> int:
    """d in LEARN_FRAC fraction bits of the local error scale (inv: 2^24 / the scale), clipped."""
    return min(max((d * inv) >> 16, -LEARN_CLIP), LEARN_CLIP)


@inline
def _round_shift(v, s) -> int:
    """v / 2^s rounded half away from zero: unbiased, so learned weights do not drift by rounding."""
    r = (abs(v) + (1 << (s - 1))) >> s
    return r if v >= 0 else -r


@inline
def _learned_inputs(taps, residual, ref, has_ref, p, i, j, inv, inputs, pred, n_pred):
    """The learned correction's inputs at (i, j), away from the band's edges: the causal taps
    less the prediction, the residuals of W, N, NW, NE, WW and NN, the reference band's 3 x 3
    window less its centre and its residuals there (decoded whole), the blend's n_pred
    candidates less the prediction, and 1; in units of the local error scale."""
    for k in range(OWN_TAPS.shape[0]):
        inputs[k] = taps[k] - p
    for k in range(LEARN_OWN - OWN_TAPS.shape[0]):
        inputs[OWN_TAPS.shape[0] + k] = residual[i + OWN_TAPS[k, 0], j + OWN_TAPS[k, 1]]
    for k in range(WINDOW.shape[0]):
        n = LEARN_OWN + 2 * k
        inputs[n], inputs[n + 1] = 0, 0
        if has_ref:
            inputs[n] = ref[0, i + WINDOW[k, 0], j + WINDOW[k, 1]] - ref[0, i, j]
            inputs[n + 1] = ref[2, i + WINDOW[k, 0], j + WINDOW[k, 1]]
    for k in range(FINAL):
        inputs[LEARN_OWN + LEARN_REFERENCE + k] = pred[k] - p if k < n_pred else 0
    for a in range(inputs.shape[0] - 1):   # scaled in one pass, which compiles to vector instructions
        inputs[a] = _scaled(inputs[a], inv)
    inputs[LEARN_INPUTS - 1] = 1 << LEARN_FRAC


@inline
def _learned_output(first, second, linear_weights, inputs, hidden) -> int:
    """The network (one hidden layer of ReLUs, and the linear path: zero weights before format
    5) on its inputs, in LEARN_FRAC + LEARN_WEIGHT_FRAC fraction bits of the local error
    scale, clipped; hidden keeps the units' values."""
    y = 0
    for u in range(LEARN_HIDDEN):
        z = 0
        for a in range(inputs.shape[0]):   # a run-time count: LLVM vectorizes these sums, and unrolls
                                           # them into scalar products with the constant LEARN_INPUTS
            z += first[u, a] * inputs[a]
        hidden[u] = max(z, 0) >> LEARN_WEIGHT_FRAC
        y += second[u] * hidden[u]
    for a in range(inputs.shape[0]):
        y += linear_weights[a] * inputs[a]
    return min(max(y, -LEARN_CLIP << LEARN_WEIGHT_FRAC), LEARN_CLIP << LEARN_WEIGHT_FRAC)


@inline
def _learn(first, second, linear_weights, inputs, hidden, y, target, linear_path):
    """One gradient step on the Huber loss (quadratic within one local error scale) of target
    (LEARN_FRAC fraction bits) less the output y; the linear path's too with linear_path."""
    g = min(max(target - (y >> LEARN_WEIGHT_FRAC), -(1 << LEARN_FRAC)), 1 << LEARN_FRAC)
    for u in range(LEARN_HIDDEN):
        if hidden[u] > 0:
            gu = _round_shift(g * second[u], LEARN_WEIGHT_FRAC)
            for a in range(LEARN_INPUTS):
                first[u, a] = min(max(first[u, a] + _round_shift(gu * inputs[a], LEARN_RATE_SHIFT),
                                      -LEARN_WEIGHT_LIMIT), LEARN_WEIGHT_LIMIT)
        second[u] = min(max(second[u] + _round_shift(g * hidden[u], LEARN_RATE_SHIFT), -LEARN_WEIGHT_LIMIT),
                        LEARN_WEIGHT_LIMIT)
    if linear_path:
        for a in range(LEARN_INPUTS):
            linear_weights[a] = min(max(linear_weights[a] + _round_shift(g * inputs[a], LINEAR_RATE_SHIFT),
                                        -LEARN_WEIGHT_LIMIT), LEARN_WEIGHT_LIMIT)


@inline
def _value_class(p) -> int:
    """Format 8's class of a prediction: 0 up to 0, then two per octave (the tables' rows are
    chosen by it too)."""
    if p <= 0:
        return 0
    b = _bit_length(p)
    return min(2 * b - 1 + ((p >> (b - 2)) & 1 if b >= 2 else 0), VALUE_CLASSES - 1)


def new_bit_odds() -> np.ndarray:
    """Format 9's odds of a magnitude's first low bit and of a sign at the start of a tile
    (BIT_ROWS x (P(0), bits seen)): even, and learned from the first bit on (learned starting
    odds saved under 0.01 %)."""
    odds = np.zeros((BIT_ROWS, 2), np.int64)
    odds[:, 0] = BIT_ONE // 2
    return odds


@inline
def _learn_bit(odds, row, bit):
    """Move P(0) towards the bit by 1/(n + 2) (n: bits seen), which counts the first ones as a
    frequency would, then by 1/BIT_RATE_AFTER, which follows a tile's drift."""
    n = odds[row, 1]
    rate = _BIT_RATES[n] if n < _BIT_RATES.shape[0] else (1 << RATE_BITS) // BIT_RATE_AFTER
    p = odds[row, 0]
    p = p - ((p * rate) >> RATE_BITS) if bit else p + (((BIT_ONE - p) * rate) >> RATE_BITS)
    odds[row, 0] = min(max(p, BIT_MARGIN), BIT_ONE - BIT_MARGIN)
    odds[row, 1] = n + 1 if n < BIT_RATE_AFTER else n


@inline
def _encode_bit(state, buf, odds, row, bit):
    """One bit with the adaptive odds of odds[row]: a multiply where a table's symbol takes a
    division (the range coder's interval split at P(0), as LZMA's bits)."""
    r = (state[_RANGE] * odds[row, 0]) >> PROBABILITY_BITS
    if bit:
        _narrow(state, buf, 1, r, state[_RANGE] - r)
    else:
        _narrow(state, buf, r, 0, 1)
    _learn_bit(odds, row, bit)


@inline
def _decode_bit(state, buf, odds, row) -> int:
    r = (state[_RANGE] * odds[row, 0]) >> PROBABILITY_BITS
    bit = 1 if state[_LOW] >= r else 0
    if bit:
        _widen(state, buf, 1, r, state[_RANGE] - r)
    else:
        _widen(state, buf, r, 0, 1)
    _learn_bit(odds, row, bit)
    return bit


@inline
def _encode_residual(state, buf, table, row, q, counts, count_row, odds, level, value_class):
    """q's magnitude token with table row ``row`` (tallied in counts[count_row] where counts
    is not empty), then its low bits (or, past ESCAPE, its excess) and its sign. Before format
    9 (odds empty) they are raw, in one equiprobable run; format 9 codes the first low bit
    with the adaptive odds of its token and error level (within a token's range the smaller
    magnitudes are the likelier, the more so the narrower the spread) and the sign with those
    of its token and the prediction's value class (speckle is skewed: below the mean, small
    residuals outnumber large ones)."""
    m = abs(q)
    if m >= ESCAPE:
        token, value, bits = ESCAPE_TOKEN, m - ESCAPE, ESCAPE_BITS
    else:
        token, bits = _token(m)
        value = m & ((1 << bits) - 1)
    if counts.shape[0] > 0:
        counts[count_row, token] += 1
    encode_adaptive(state, buf, table, row, token)
    if m == 0:
        return
    if odds.shape[0] == 0:
        encode_bits(state, buf, (value << 1) | (q < 0), bits + 1)
        return
    if DIRECT <= token < ESCAPE_TOKEN:
        bits -= 1
        _encode_bit(state, buf, odds, (token - DIRECT) * CLASSES + level, value >> bits)
    encode_bits(state, buf, value, bits)   # the low ``bits`` bits of value
    _encode_bit(state, buf, odds, LOW_BIT_ROWS + min(token, SIGN_TOKENS - 1) * VALUE_CLASSES + value_class, q < 0)


@inline
def _decode_residual(state, buf, table, row, odds, level, value_class) -> int:
    token = decode_adaptive(state, buf, table, row)
    if token == 0:
        return 0
    if token < DIRECT:
        m, bits = token, 0
    elif token == ESCAPE_TOKEN:
        m, bits = ESCAPE, ESCAPE_BITS
    else:
        e = (token - DIRECT) // 2 + 3
        m, bits = (2 | ((token - DIRECT) & 1)) << (e - 1), e - 1
    if odds.shape[0] == 0:
        value = decode_bits(state, buf, bits + 1)
        m += value >> 1
        return -m if value & 1 else m
    if DIRECT <= token < ESCAPE_TOKEN:
        bits -= 1
        m += _decode_bit(state, buf, odds, (token - DIRECT) * CLASSES + level) << bits
    m += decode_bits(state, buf, bits)
    negative = _decode_bit(state, buf, odds, LOW_BIT_ROWS + min(token, SIGN_TOKENS - 1) * VALUE_CLASSES + value_class)
    return -m if negative else m


@jit
def code_band(x, ref, has_ref, gain, own_weights, ref_part, bound, lo, hi, avoid, has_avoid, skip, carry, table,
              odds, state, buf, decoding, counts, copies, learn, linear_path, learned, out):
    """Code (encoder) or decode (decoder) one band in raster order, into out (3, h, w): the
    decoded band, its absolute errors of prediction, and its residuals v - p (format 2's
    bands that take it as a reference read them).

    x: the band (encoder; ignored when decoding); ref: the reference band's out, read only
    when has_ref; own_weights: format 2's
    least-squares weights of the causal taps, with ref_part the rest of its prediction per
    sample (both in LS_FRAC fraction bits): the blend's ninth candidate, or empty: none
    (format 1, and small bands); bound: the error bound
    N (0 = lossless); lo, hi: the value range decoded samples are clamped to; avoid: a value
    no decoded sample may take unless the original has it (nodata: a sample rounded onto it
    gets its exact offset coded); skip: format 9's nodata samples (h x w, true: not coded, they
    decode to their prediction), or empty: none; carry: format 10's skipped samples take their
    neighbours' recent errors (format 9's: zero, so a sample entering the data from nodata met
    an error level of zero). table: the magnitudes' adaptive tables, ROWS rows, or
    ROWS x VALUE_CLASSES (format 8: again per class of the prediction, ``_value_class``, in
    bands of VALUE_CLASS_SAMPLES or more; smaller ones take the first ROWS); odds: format 9's
    odds of a magnitude's first low bit and of a sign (``new_bit_odds``), or empty: raw. copies:
    format 3's copy flags' adaptive tables (COPY_ROWS x 3), or empty: none (formats 1, 2).
    learn: format 4's learned correction of the prediction, its state (``new_learned``) in
    learned, carried from band to band of a tile; linear_path: with format 5's linear path.

    True, or (encoder) False where buf had no room for a row at WORST_SAMPLE_BYTES a sample:
    the band stopped before that row (the buffer is never written past its end).
    """
    w = x.shape[1]
    n_pred = (PREDICTORS if has_ref else SPATIAL) + (own_weights.shape[0] > 0)
    return _code_samples(x, ref, has_ref, gain, own_weights, ref_part, bound, lo, hi, avoid, has_avoid, skip, carry,
                         table, odds, state, buf, decoding, counts, copies, learn, linear_path, out[0], out[1], out[2],
                         np.append(np.arange(n_pred), FINAL),
                         np.zeros((FINAL + 1, 3, w + RING_PAD), np.int64), np.zeros((FINAL + 1, w), np.int64),
                         np.zeros((2, ROWS), np.int64), np.zeros((SCRATCH, OWN_TAPS.shape[0]), np.int64), learned[0],
                         learned[1])


@numba.njit(cache=True, nogil=True, boundscheck=False, **_WITHOUT_REFERENCE_COUNTING)
def _code_samples(x, ref, has_ref, gain, own_weights, ref_part, bound, lo, hi, avoid, has_avoid, skip, carry, table,
                  odds, state, buf, decoding, counts, copies, learn, linear_path, rec, final_err, residual, rings, errs,
                  above, bias, scratch, first, learned):
    """code_band's loop, into rec, final_err and residual, on work arrays it is given zeroed:
    the error rings of the last 3 rows (errs), their sums from the rows above (above), the
    bias sums and counts (bias), SCRATCH vectors, and the learned correction's first-layer
    weights (first) and its output weights, inputs, hidden units and linear path (learned);
    code_band's answer. Compiled without numba's reference counting: every array it reads is
    its caller's, and counting them (atomically, at each helper and each branch) took half the
    loop's time."""
    h, w = x.shape
    step = 2 * bound + 1
    rows, nb, rnb, pred, recent, lms, taps = scratch[0, :3], scratch[1, :6], scratch[2, :6], scratch[3, :FINAL], \
        scratch[4, :FINAL], scratch[5, :FINAL], scratch[6]
    bias_sum, bias_count = bias[0], bias[1]
    bias_count[:] = 1
    second, inputs, hidden = learned[0, :LEARN_HIDDEN], learned[1], learned[2, :LEARN_HIDDEN]
    linear_weights = learned[3]
    least_squares = own_weights.shape[0] > 0
    n_base = PREDICTORS if has_ref else SPATIAL
    n_pred = n_base + least_squares
    start = ref[0, 0, 0] if has_ref else (lo + hi) >> 1
    offset_bits = _bit_length(2 * bound)
    copy_flags = copies.shape[0] > 0
    value_classes = table.shape[0] > ROWS and h * w >= VALUE_CLASS_SAMPLES   # format 8's tables, in a band this large
    has_skip = skip.shape[0] > 0
    ref_values = ref[0]   # one view for the band
    copy_odds = COPY_ODDS if bound == 0 else NEAR_LOSSLESS_COPY_ODDS
    for i in range(h):
        if not decoding and state[_POS] + state[_CACHE_SIZE] + (w + 1) * WORST_SAMPLE_BYTES > buf.shape[0]:
            return False   # a row could overrun the buffer: the caller codes again with a larger one
        rows[0], rows[1], rows[2] = i % 3, (i + 2) % 3, (i + 1) % 3
        _rows_above(errs, rings, rows, i, w, above)
        for j in range(w):
            if i == 0 and j == 0:
                nb[:] = start
            else:
                _neighbours(rec, i, j, nb)
            ref_value = 0
            if has_ref:
                _neighbours(ref_values, i, j, rnb)
                ref_value = ref_values[i, j]
            _candidates(nb, rnb, ref_value, gain, has_ref, pred)
            if least_squares or learn:
                causal_taps(rec, i, j, start, taps)
            if least_squares:
                acc = ref_part[i, j]
                for k in range(taps.shape[0]):
                    acc += own_weights[k] * taps[k]
                pred[n_base] = (acc + (1 << (LS_FRAC - 1))) >> LS_FRAC
            # blend: weights (1 + least recent error)^2 / (1 + recent error)^2, in 1/2^24
            least = -1
            for k in range(n_pred):
                recent[k] = _recent_error(errs, above, k, rows[0], j)
                if least < 0 or recent[k] < least:
                    least = recent[k]
            num = 0
            den = 0
            for k in range(n_pred):
                wk = ((1 + least) << 12) // (1 + recent[k])
                wk *= wk
                num += wk * pred[k]
                den += wk
            blended = (2 * num + den) // (2 * den)
            corr = 0
            for k in range(n_pred):
                corr += lms[k] * (pred[k] - blended)
            blended += corr >> LMS_BITS
            final_recent = _recent_error(errs, above, FINAL, rows[0], j)
            level = final_recent + least + (2 * ref[1, i, j] if has_ref else 0)
            row = _log_class((level << WEIGHT_BITS) // (16 * step), CLASSES) + (CLASSES if has_ref else 0)
            p = blended + (2 * bias_sum[row] + bias_count[row]) // (2 * bias_count[row])
            p = min(max(p, lo), hi)
            if has_skip and skip[i, j]:   # nodata: nothing coded, nothing learned; the prediction stands in
                rec[i, j] = p
                residual[i, j] = 0
                final_err[i, j] = abs(p - blended)
                if carry:   # the errors around, averaged (weights of 8): the data's level carries on
                    errs[FINAL, rows[0], j + RING_PAD] = final_recent >> 3
                    for k in range(n_pred):
                        errs[k, rows[0], j + RING_PAD] = recent[k] >> 3
                else:
                    errs[FINAL, rows[0], j + RING_PAD] = 0
                    for k in range(n_pred):
                        errs[k, rows[0], j + RING_PAD] = abs(p - pred[k])
                continue
            # the value's class before the learned correction: a half octave hardly moves, and
            # the decoder knows its table sooner
            value_class = _value_class(p) if value_classes else 0
            table_row = row + ROWS * value_class
            uncorrected, inv, y = p, 0, 0
            learning = learn and i >= 2 and i + 1 < h and 2 <= j < w - 2   # away from the band's edges
            if learning:   # 6 x the local error scale
                scale = 6 + abs(residual[i, j - 1]) + abs(residual[i - 1, j]) + abs(residual[i - 1, j - 1]) \
                    + abs(residual[i - 1, j + 1]) + abs(residual[i, j - 2]) + abs(residual[i - 2, j])
                learning = scale < LEARN_SCALE_LIMIT
            if learning:
                inv = (6 << 24) // scale
                _learned_inputs(taps, residual, ref, has_ref, p, i, j, inv, inputs, pred, n_pred)
                y = _learned_output(first, second, linear_weights, inputs, hidden)
                p = min(max(p + (y * scale + (3 << 24)) // (6 << 24), lo), hi)
            kind = _copy_kind(rec, nb, ref, has_ref, i, j, 2 * bound) if copy_flags else -1
            copy_row, copied, flagged, source = -1, False, False, 0
            if kind >= 0:
                source = nb[0] if kind < COPY_KINDS // 2 else nb[1]
                if bound == 0 or abs(source - p) > bound:   # a source in p's own bin: a zero residual says it
                    cheap = row % CLASSES < CHEAP_CLASSES
                    copy_row = 2 * kind + has_ref + (COPY_ROWS // 2 if cheap else 0)
                    flagged = copies[copy_row, 1] * (CHEAP_COPY_ODDS if cheap else copy_odds) >= copies[copy_row, 2]
            if flagged:
                if decoding:
                    copied = decode_adaptive(state, buf, copies, copy_row) == 1
                else:
                    copied = abs(x[i, j] - source) <= bound and (not has_avoid or source != avoid or x[i, j] == source)
                    encode_adaptive(state, buf, copies, copy_row, 1 if copied else 0)
            if copied:
                v = source
            else:
                if decoding:
                    q = _decode_residual(state, buf, table, table_row, odds, row % CLASSES, value_class)
                else:
                    e = x[i, j] - p
                    if bound == 0:   # lossless: no bins (and no integer division per sample)
                        q = e
                    else:
                        q = (abs(e) + bound) // step
                        q = -q if e < 0 else q
                    _encode_residual(state, buf, table, table_row, q, counts, row, odds, row % CLASSES,
                                     value_class)
                v = min(max(p + q * step, lo), hi)
                if has_avoid and v == avoid:
                    if decoding:
                        v += decode_bits(state, buf, offset_bits) - bound
                    else:
                        encode_bits(state, buf, x[i, j] - v + bound, offset_bits)
                        v = x[i, j]
            if copy_row >= 0 and not flagged:   # the row's odds still learn what a flag would have said
                _update(copies, copy_row, 1 if abs(v - source) <= bound else 0)
            rec[i, j] = v
            residual[i, j] = v - p
            final_err[i, j] = abs(v - blended)
            errs[FINAL, rows[0], j + RING_PAD] = abs(v - p)
            for k in range(n_pred):
                errs[k, rows[0], j + RING_PAD] = abs(v - pred[k])
            if copied:   # the bias and the corrections learn from the residuals coded, not from copies
                continue
            if learning:
                _learn(first, second, linear_weights, inputs, hidden, y, _scaled(v - uncorrected, inv), linear_path)
            bias_sum[row] += v - blended
            sv = 1 if v > p else (-1 if v < p else 0)
            if sv != 0:
                for k in range(n_pred):
                    d = pred[k] - blended
                    lms[k] += LMS_RATE * sv * (1 if d > 0 else (-1 if d < 0 else 0))
                    lms[k] = min(max(lms[k], -(1 << LMS_BITS)), 1 << LMS_BITS)
            bias_count[row] += 1
            if bias_count[row] > _BIAS_LIMIT:
                bias_sum[row] = bias_sum[row] // 2
                bias_count[row] = (bias_count[row] + 1) // 2
    return True
