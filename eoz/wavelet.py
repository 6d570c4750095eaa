"""CDF 9/7 lifting wavelet (JPEG 2000's irreversible transform), multi-level and 2-D.

Our own lifting implementation, vectorized over rows or columns, with whole-sample
symmetric extension at the borders, so any size (odd ones too) transforms and inverts
exactly (to float rounding). Where JPEG 2000 scales low-pass by 1/K and high-pass by K/2,
we scale by sqrt(2)/K and K/sqrt(2), so that each subband's synthesis basis has about unit
energy (``synthesis_gains`` gives the exact figure per subband, for step weighting).

Layout: ``forward`` returns ``[LL_L, (HL_L, LH_L, HH_L), ..., (HL_1, LH_1, HH_1)]`` for one
2-D plane, coarsest first. HL is high-pass along columns (vertical detail), LH along rows.
"""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np

ALPHA = -1.586134342059924
BETA = -0.052980118572961
GAMMA = 0.882911075530934
DELTA = 0.443506852043971
K = 1.230174104914001
LOW_SCALE, HIGH_SCALE = np.sqrt(2) / K, K / np.sqrt(2)   # near-orthonormal: unit-energy bases

Subbands = list   # [LL, (HL, LH, HH) per level, coarsest first]


def _next_even(s: np.ndarray, n_odd: int) -> np.ndarray:
    """For each odd sample 2i+1, the even sample 2i+2 (mirrored at the end)."""
    if s.shape[0] > n_odd:
        return s[1:n_odd + 1]
    return np.concatenate([s[1:], s[-1:]], axis=0)


def _previous_odd(d: np.ndarray, n_even: int) -> np.ndarray:
    """For each even sample 2i, the odd sample 2i-1 (mirrored at the start and end)."""
    prev = np.concatenate([d[:1], d[:-1]], axis=0)
    if n_even > d.shape[0]:
        prev = np.concatenate([prev, d[-1:]], axis=0)
    return prev


def _own_odd(d: np.ndarray, n_even: int) -> np.ndarray:
    """For each even sample 2i, the odd sample 2i+1 (mirrored at the end)."""
    return d if n_even == d.shape[0] else np.concatenate([d, d[-1:]], axis=0)


def _analyse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One level along axis 0: (low, high)."""
    if x.shape[0] < 2:
        return x.astype(np.float64), np.zeros((0,) + x.shape[1:])
    s, d = x[0::2].astype(np.float64), x[1::2].astype(np.float64)
    ns, nd = s.shape[0], d.shape[0]
    d = d + ALPHA * (s[:nd] + _next_even(s, nd))
    s = s + BETA * (_previous_odd(d, ns) + _own_odd(d, ns))
    d = d + GAMMA * (s[:nd] + _next_even(s, nd))
    s = s + DELTA * (_previous_odd(d, ns) + _own_odd(d, ns))
    return s * LOW_SCALE, d * HIGH_SCALE


def _synthesise(s: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Inverse of _analyse."""
    if d.shape[0] == 0:
        return s.copy()
    s, d = s / LOW_SCALE, d / HIGH_SCALE
    ns, nd = s.shape[0], d.shape[0]
    s = s - DELTA * (_previous_odd(d, ns) + _own_odd(d, ns))
    d = d - GAMMA * (s[:nd] + _next_even(s, nd))
    s = s - BETA * (_previous_odd(d, ns) + _own_odd(d, ns))
    d = d - ALPHA * (s[:nd] + _next_even(s, nd))
    out = np.empty((ns + nd,) + s.shape[1:])
    out[0::2], out[1::2] = s, d
    return out


def _analyse_2d(x: np.ndarray):
    low, high = _analyse_fast(x, True)          # along rows (axis 0): vertical filtering
    ll, lh = _analyse_fast(low, False)          # then along columns
    hl, hh = _analyse_fast(high, False)
    return ll, (hl, lh, hh)


def _synthesise_2d(ll: np.ndarray, details) -> np.ndarray:
    hl, lh, hh = details
    low = _synthesise_fast(ll, lh, False)
    high = _synthesise_fast(hl, hh, False)
    return _synthesise_fast(low, high, True)


def _analyse_2d_reference(x: np.ndarray):
    """_analyse_2d through the numpy lifting (the reference the compiled one is tested against)."""
    low, high = _analyse(x)
    ll, lh = (a.T for a in _analyse(low.T))
    hl, hh = (a.T for a in _analyse(high.T))
    return ll, (hl, lh, hh)


def _synthesise_2d_reference(ll: np.ndarray, details) -> np.ndarray:
    hl, lh, hh = details
    low = _synthesise(ll.T, lh.T).T
    high = _synthesise(hl.T, hh.T).T
    return _synthesise(low, high)


# --- compiled lifting: the same operations on every sample, in the same order, as _analyse and
# _synthesise (no reassociation, no fused multiply-add: numba's default), so the same bits; what
# forward and inverse run. tests/eoz/test_wavelet.py checks them against the numpy reference.

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)
_LOW_SCALE, _HIGH_SCALE = float(LOW_SCALE), float(HIGH_SCALE)


@_jit
def _lift_forward(x, low, high, along_rows):
    """_analyse of x (n >= 2 samples along the lifting axis) into low and high, in place of
    their contents: along axis 0 when along_rows, else along axis 1 (arrays as x's)."""
    if along_rows:
        n, m = x.shape
    else:
        m, n = x.shape
    ns, nd = (n + 1) // 2, n // 2
    if along_rows:
        for i in range(ns):
            for c in range(m):
                low[i, c] = x[2 * i, c]
        for i in range(nd):
            for c in range(m):
                high[i, c] = x[2 * i + 1, c]
        for i in range(nd):
            b = min(i + 1, ns - 1)
            for c in range(m):
                high[i, c] = high[i, c] + ALPHA * (low[i, c] + low[b, c])
        for i in range(ns):
            a, b = max(i - 1, 0), min(i, nd - 1)
            for c in range(m):
                low[i, c] = low[i, c] + BETA * (high[a, c] + high[b, c])
        for i in range(nd):
            b = min(i + 1, ns - 1)
            for c in range(m):
                high[i, c] = high[i, c] + GAMMA * (low[i, c] + low[b, c])
        for i in range(ns):
            a, b = max(i - 1, 0), min(i, nd - 1)
            for c in range(m):
                low[i, c] = (low[i, c] + DELTA * (high[a, c] + high[b, c])) * _LOW_SCALE
        for i in range(nd):
            for c in range(m):
                high[i, c] = high[i, c] * _HIGH_SCALE
    else:
        for r in range(m):
            lo, hi, row = low[r], high[r], x[r]
            for i in range(ns):
                lo[i] = row[2 * i]
            for i in range(nd):
                hi[i] = row[2 * i + 1]
            for i in range(nd):
                hi[i] = hi[i] + ALPHA * (lo[i] + lo[min(i + 1, ns - 1)])
            for i in range(ns):
                lo[i] = lo[i] + BETA * (hi[max(i - 1, 0)] + hi[min(i, nd - 1)])
            for i in range(nd):
                hi[i] = hi[i] + GAMMA * (lo[i] + lo[min(i + 1, ns - 1)])
            for i in range(ns):
                lo[i] = (lo[i] + DELTA * (hi[max(i - 1, 0)] + hi[min(i, nd - 1)])) * _LOW_SCALE
            for i in range(nd):
                hi[i] = hi[i] * _HIGH_SCALE


@_jit
def _lift_inverse(low, high, out, along_rows):
    """_synthesise of low and high (nd >= 1) into out: along axis 0 when along_rows, else axis 1.
    Along rows the lifting runs in out itself (s in its even rows, d in its odd ones): no
    temporaries the size of the plane."""
    if along_rows:
        ns, m = low.shape
        nd = high.shape[0]
        for i in range(ns):
            for c in range(m):
                out[2 * i, c] = low[i, c] / _LOW_SCALE
        for i in range(nd):
            for c in range(m):
                out[2 * i + 1, c] = high[i, c] / _HIGH_SCALE
        for i in range(ns):
            a, b = 2 * max(i - 1, 0) + 1, 2 * min(i, nd - 1) + 1
            for c in range(m):
                out[2 * i, c] = out[2 * i, c] - DELTA * (out[a, c] + out[b, c])
        for i in range(nd):
            b = 2 * min(i + 1, ns - 1)
            for c in range(m):
                out[2 * i + 1, c] = out[2 * i + 1, c] - GAMMA * (out[2 * i, c] + out[b, c])
        for i in range(ns):
            a, b = 2 * max(i - 1, 0) + 1, 2 * min(i, nd - 1) + 1
            for c in range(m):
                out[2 * i, c] = out[2 * i, c] - BETA * (out[a, c] + out[b, c])
        for i in range(nd):
            b = 2 * min(i + 1, ns - 1)
            for c in range(m):
                out[2 * i + 1, c] = out[2 * i + 1, c] - ALPHA * (out[2 * i, c] + out[b, c])
    else:
        m, ns = low.shape
        nd = high.shape[1]
        s = np.empty(ns)
        d = np.empty(nd)
        for r in range(m):
            lo, hi, row = low[r], high[r], out[r]
            for i in range(ns):
                s[i] = lo[i] / _LOW_SCALE
            for i in range(nd):
                d[i] = hi[i] / _HIGH_SCALE
            for i in range(ns):
                s[i] = s[i] - DELTA * (d[max(i - 1, 0)] + d[min(i, nd - 1)])
            for i in range(nd):
                d[i] = d[i] - GAMMA * (s[i] + s[min(i + 1, ns - 1)])
            for i in range(ns):
                s[i] = s[i] - BETA * (d[max(i - 1, 0)] + d[min(i, nd - 1)])
            for i in range(nd):
                row[2 * i + 1] = d[i] - ALPHA * (s[i] + s[min(i + 1, ns - 1)])
            for i in range(ns):
                row[2 * i] = s[i]


def _analyse_fast(x: np.ndarray, along_rows: bool) -> tuple[np.ndarray, np.ndarray]:
    """_analyse along axis 0 (along_rows) or 1 of a 2-D float64 array, compiled."""
    n = x.shape[0 if along_rows else 1]
    if n < 2:
        empty = (0, x.shape[1]) if along_rows else (x.shape[0], 0)
        return x.astype(np.float64), np.zeros(empty)
    ns, nd = (n + 1) // 2, n // 2
    shape = (lambda k: (k, x.shape[1])) if along_rows else (lambda k: (x.shape[0], k))
    low, high = np.empty(shape(ns)), np.empty(shape(nd))
    _lift_forward(np.ascontiguousarray(x, np.float64), low, high, along_rows)
    return low, high


def _synthesise_fast(low: np.ndarray, high: np.ndarray, along_rows: bool) -> np.ndarray:
    """_synthesise along axis 0 (along_rows) or 1, compiled."""
    nd = high.shape[0 if along_rows else 1]
    if nd == 0:
        return np.array(low, np.float64)
    n = low.shape[0 if along_rows else 1] + nd
    out = np.empty((n, low.shape[1]) if along_rows else (low.shape[0], n))
    _lift_inverse(np.ascontiguousarray(low, np.float64), np.ascontiguousarray(high, np.float64), out, along_rows)
    return out


def max_levels(height: int, width: int, levels: int) -> int:
    """Levels actually applied: stop before a dimension would drop below 2 samples."""
    n = 0
    while n < levels and min(height, width) >= 2 ** (n + 1):
        n += 1
    return n


def forward(plane: np.ndarray, levels: int) -> Subbands:
    """2-D CDF 9/7 of one plane: [LL, (HL, LH, HH) coarsest, ..., finest]."""
    details = []
    ll = np.asarray(plane, np.float64)
    for _ in range(max_levels(*plane.shape, levels)):
        ll, d = _analyse_2d(ll)
        details.append(d)
    return [ll] + details[::-1]


def inverse(subbands: Subbands) -> np.ndarray:
    """Inverse of forward."""
    ll = subbands[0]
    for details in subbands[1:]:
        ll = _synthesise_2d(ll, details)
    return ll


def subband_shapes(height: int, width: int, levels: int) -> list:
    """Shapes in forward's layout: [LL shape, (HL, LH, HH shapes) coarsest first]."""
    shapes = []
    h, w = height, width
    for _ in range(max_levels(height, width, levels)):
        hl, hh_ = (h + 1) // 2, h // 2
        wl, wh = (w + 1) // 2, w // 2
        shapes.append(((hh_, wl), (hl, wh), (hh_, wh)))
        h, w = hl, wl
    return [(h, w)] + shapes[::-1]


@lru_cache(maxsize=64)
def synthesis_gains(height: int, width: int, levels: int) -> tuple:
    """Energy of each subband's synthesis basis (squared error in the image per unit squared
    error in a coefficient), measured at the subband's centre: [LL, (HL, LH, HH), ...]."""
    zero = [np.zeros(s) for s in _flat_shapes(height, width, levels)]
    gains = []
    for k, shape in enumerate(_flat_shapes(height, width, levels)):
        bands = [z.copy() for z in zero]
        bands[k][shape[0] // 2, shape[1] // 2] = 1.0
        gains.append(float((inverse(nest(bands)) ** 2).sum()))
    return tuple(nest(gains))


def _flat_shapes(height: int, width: int, levels: int) -> list:
    nested = subband_shapes(height, width, levels)
    return [nested[0]] + [s for level in nested[1:] for s in level]


def flatten(subbands: Subbands) -> list:
    """[LL, HL, LH, HH, HL, ...]: forward's layout as one list."""
    return [subbands[0]] + [b for level in subbands[1:] for b in level]


def nest(flat: list) -> Subbands:
    """Inverse of flatten."""
    return [flat[0]] + [tuple(flat[i:i + 3]) for i in range(1, len(flat), 3)]

