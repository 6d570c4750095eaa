"""The transform candidate of issue 13, measured beside the predictive codec in lossless.py.

Reversible all the way: each band minus an integer-gain prediction from its reference band
(the predictive codec's choice of reference and gain, so the two designs see the same
spectral decorrelation), then the reversible 5/3 integer wavelet (JPEG 2000's lossless
filter, our own lifting) on every component, checked to invert exactly on every tile.
The integer subbands are coded with the range coder and token scheme the other codecs
use (``eoz.subband_coder``): each coefficient's magnitude token with an adaptive table
chosen by its subband's level and the activity of its decoded neighbours, its parent
(same orientation, one level coarser) and the same coefficient of the previous component
— the wavelet codec's contexts without its dependent quantizer, whose parity rule admits
no exact integers. The size is the range coder's real output; the candidate has no decoder.

It is a benchmark candidate, not a shipped codec: the predictive design measured better
(benchmarks/results/lossless.md), so only that one has a file format.
"""

from __future__ import annotations

import numba
import numpy as np

from eoz.codecs.predictive import _reference_sets
from eoz.predictive_coder import GAIN_BITS
from eoz.predictive_coder import _encode_residual
from eoz.subband_coder import TOKENS, WEIGHT_BITS, _log_class, encoder_state, finish, new_tables
from eoz.wavelet import max_levels

LEVELS = 5
SIDE_BYTES_PER_BAND = 3   # a reference index and a 16-bit gain, as the predictive codec stores them
CLASSES = 24              # activity classes per subband level

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)


@_jit
def _code_subband(q, parent, previous, group, table, state, buf):
    """Code one subband (raster order) with rows group x CLASSES by neighbour, parent and
    previous-component activity; LL (group 0) codes its MED prediction residual instead."""
    h, w = q.shape
    no_counts, no_odds = np.zeros((0, 0), np.int64), np.zeros((0, 2), np.int64)   # no tallies; low bits, sign raw
    for i in range(h):
        for j in range(w):
            west = q[i, j - 1] if j > 0 else (q[i - 1, j] if i > 0 else 0)
            north = q[i - 1, j] if i > 0 else west
            nw = q[i - 1, j - 1] if i > 0 and j > 0 else north
            ne = q[i - 1, j + 1] if i > 0 and j + 1 < w else north
            if group == 0:
                pred = min(west, north) if nw >= max(west, north) else (
                    max(west, north) if nw <= min(west, north) else west + north - nw)
                a = abs(west - nw) + abs(north - nw) + abs(north - ne)
                v = q[i, j] - pred
            else:
                a = 2 * (abs(west) + abs(north)) + abs(nw) + abs(ne)
                if parent.shape[0] > 0:
                    a += 2 * abs(parent[min(i // 2, parent.shape[0] - 1), min(j // 2, parent.shape[1] - 1)])
                v = q[i, j]
            if previous.shape[0] > 0:
                a += abs(previous[i, j])
            row = group * CLASSES + _log_class((a << WEIGHT_BITS) // 8, CLASSES)
            _encode_residual(state, buf, table, row, v, no_counts, 0, no_odds, 0, 0)


def _encode(planes: list[list[np.ndarray]], levels: int) -> int:
    """Bytes of the range-coded planes (components x flat subbands)."""
    table = new_tables(np.ones(((levels + 1) * CLASSES, TOKENS), np.int64))
    buf = np.zeros(8 * sum(b.size for plane in planes for b in plane) + 64, np.uint8)
    state = encoder_state()
    none = np.zeros((0, 0), np.int64)
    for c, plane in enumerate(planes):
        for k, band in enumerate(plane):
            level = 0 if k == 0 else (k - 1) // 3 + 1                 # 1: coarsest details
            parent = plane[k - 3] if k > 3 else none
            previous = planes[c - 1][k] if c > 0 else none
            _code_subband(band, parent, previous, level, table, state, buf)
    return finish(state, buf)


def _lift(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One reversible 5/3 step along axis 0 (symmetric extension): (low, high)."""
    even, odd = x[0::2], x[1::2]
    right = np.concatenate([even[1:len(odd) + 1], even[-1:]])[:len(odd)]   # x[2k+2], mirrored at the end
    high = odd - ((even[:len(odd)] + right) >> 1)
    if len(high) == 0:
        return even.copy(), high
    left = np.concatenate([high[:1], high])[:len(even)]                     # d[k-1], mirrored at the start
    here = np.concatenate([high, high[-1:]])[:len(even)]                    # d[k], mirrored at the end
    return even + ((left + here + 2) >> 2), high


def _unlift(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    if len(high) == 0:
        return low.copy()
    left = np.concatenate([high[:1], high])[:len(low)]
    here = np.concatenate([high, high[-1:]])[:len(low)]
    even = low - ((left + here + 2) >> 2)
    right = np.concatenate([even[1:len(high) + 1], even[-1:]])[:len(high)]
    odd = high + ((even[:len(high)] + right) >> 1)
    out = np.empty((len(low) + len(high),) + low.shape[1:], low.dtype)
    out[0::2], out[1::2] = even, odd
    return out


def forward(plane: np.ndarray, levels: int) -> list[np.ndarray]:
    """Flat subbands [LL, HL, LH, HH (coarsest level) ..., HL, LH, HH (finest)], as eoz.wavelet lays them out."""
    details, ll = [], plane.astype(np.int64)
    for _ in range(levels):
        low, high = _lift(ll)                       # along axis 0: vertical filtering
        ll, lh = (a.T for a in _lift(low.T))
        hl, hh = (a.T for a in _lift(high.T))
        details.append((hl, lh, hh))
    return [ll] + [band for level in reversed(details) for band in level]


def inverse(flat: list[np.ndarray]) -> np.ndarray:
    ll = flat[0]
    for k in range(1, len(flat), 3):
        hl, lh, hh = flat[k:k + 3]
        low = _unlift(ll.T, lh.T).T
        high = _unlift(hl.T, hh.T).T
        ll = _unlift(low, high)
    return ll


def _spectral(samples: np.ndarray, refs) -> np.ndarray:
    """Each band minus round(gain x its reference band); reversible given the references."""
    out = samples.copy()
    for b, (ref, gain) in enumerate(refs):
        if ref >= 0:
            out[b] -= (gain * samples[ref] + (1 << (GAIN_BITS - 1))) >> GAIN_BITS
    return out


def _unspectral(residuals: np.ndarray, refs) -> np.ndarray:
    out = residuals.copy()
    for b, (ref, gain) in enumerate(refs):   # references come earlier in the order
        if ref >= 0:
            out[b] += (gain * out[ref] + (1 << (GAIN_BITS - 1))) >> GAIN_BITS
    return out


def _references(samples: np.ndarray) -> list[tuple[int, int]]:
    """Per band: (its best reference band as the predictive codec ranks them, or -1; the gain)."""
    return [(refs[0] if refs else -1, gain) for refs, gain in _reference_sets(samples)]


def coded_bytes(tile: np.ndarray) -> int:
    """Bytes of one tile (integer samples, bands first) coded losslessly by this design;
    raises AssertionError if the transform does not invert to the tile."""
    samples = tile.astype(np.int64)
    refs = _references(samples)
    levels = max_levels(samples.shape[1], samples.shape[2], LEVELS)
    planes = [forward(band, levels) for band in _spectral(samples, refs)]
    back = _unspectral(np.stack([inverse(p) for p in planes]), refs)
    assert np.array_equal(back, samples), "the transform candidate does not invert to the original"
    return _encode(planes, levels) + SIDE_BYTES_PER_BAND * samples.shape[0]
