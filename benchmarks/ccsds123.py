"""CCSDS 123.0-B-2, the space agencies' standard for multispectral and hyperspectral images, as
a baseline for ``lossless.py``: our own implementation of the standard's predictor and of its
sample-adaptive entropy coder, encoder and decoder, so every figure comes from a bitstream that
was decoded and checked.

What is implemented (Blue Book 123.0-B-2, section 4 and the sample-adaptive coder of section
5): full prediction mode (the N, W and NW local differences beside the central differences of
up to P earlier bands), wide neighbour-oriented local sums, default weight initialization
(7/8, then each previous band an eighth of the next), the weight-update schedule (nu_min,
nu_max, t_inc), an absolute error limit m per sample (m = 0: lossless) with sample
representatives equal to the clipped bin centres (resolution, damping and offset 0), the
mapped quantizer indices, and length-limited Golomb power-of-two codes chosen by a per-band
accumulator. Bands are coded one after the other (BSQ), which the sample-adaptive coder makes
equivalent in size to any interleaving. Not implemented: the hybrid entropy coder (it gains at
low entropies, below about 1 bit a sample), relative error limits, narrow local sums, periodic
error-limit updates. The register size is 64 bits, so no wrap-around ever occurs. Sizes are
the bitstream's bytes, without the standard's header (about 20 bytes an image).

The parameters are the standard's usual ones (weight resolution 19, nu_min -1, nu_max 3,
t_inc 2^6, gamma_0 1, U_max 18); ``P_CHOICES`` and ``GAMMA_STAR_CHOICES`` are tried on each
image and the smallest stream kept, a choice the baseline's own encoder could make.
"""

from __future__ import annotations

import itertools

import numba
import numpy as np

OMEGA = 19                   # weight resolution
NU_MIN, NU_MAX = -1, 3       # weight-update scaling exponent's initial and final parameters
T_INC_LOG = 6                # its change interval, 2^6 samples
GAMMA_0 = 1                  # the counter's initial value, 2^1
ACCUMULATOR_K = 5            # the accumulator's initialization constant
U_MAX = 18                   # unary length limit of the Golomb power-of-two codes
P_CHOICES = (3, 15)          # earlier bands used for prediction (capped at the band count less one)
GAMMA_STAR_CHOICES = (6, 9)  # rescaling counter size

jit = numba.njit(cache=True, nogil=True)


def dynamic_range(array: np.ndarray) -> tuple[int, bool]:
    """(D, signed): the fewest bits that hold the image's samples, as the standard's D."""
    lo, hi = int(array.min()), int(array.max())
    signed = lo < 0
    bits = 2
    while (signed and not -(1 << (bits - 1)) <= lo <= hi < (1 << (bits - 1))) or \
            (not signed and hi >= (1 << bits)):
        bits += 1
    return bits, signed


@jit
def _put(buf, pos, value, bits):
    """Write the low ``bits`` bits of value, most significant first; returns the new bit position."""
    for i in range(bits - 1, -1, -1):
        if (value >> i) & 1:
            buf[pos >> 3] |= np.uint8(0x80 >> (pos & 7))
        pos += 1
    return pos


@jit
def _get(buf, pos, bits):
    """(value, new bit position) of the next ``bits`` bits; past the end, zeros."""
    value = 0
    for _ in range(bits):
        byte = pos >> 3
        bit = (buf[byte] >> (7 - (pos & 7))) & 1 if byte < buf.shape[0] else 0
        value = (value << 1) | bit
        pos += 1
    return value, pos


@jit
def _code(x, buf, decoding, depth, signed, prediction_bands, max_error, gamma_star):
    """Code (or decode from buf) the image x (bands, rows, columns); returns (the decoded image,
    the bits written or read)."""
    nz, ny, nx = x.shape
    s_min = -(1 << (depth - 1)) if signed else 0
    s_max = (1 << (depth - 1)) - 1 if signed else (1 << depth) - 1
    s_mid = 0 if signed else 1 << (depth - 1)
    w_min, w_max = -(1 << (OMEGA + 2)), (1 << (OMEGA + 2)) - 1
    rec = np.zeros((nz, ny, nx), np.int64)
    central = np.zeros((nz, ny, nx), np.int64)
    n_weights = 3 + prediction_bands
    weights = np.zeros(n_weights, np.int64)
    diffs = np.zeros(n_weights, np.int64)
    pos = 0
    k_limit = max(depth - 2, 2)
    for z in range(nz):
        r = rec[z]
        bands_used = min(z, prediction_bands)
        weights[:] = 0
        if bands_used:
            weights[3] = (7 << OMEGA) >> 3
            for p in range(1, bands_used):
                weights[3 + p] = weights[2 + p] >> 3
        counter = 1 << GAMMA_0
        accumulator = ((3 * (1 << (ACCUMULATOR_K + 6)) - 49) * counter) >> 7
        for y in range(ny):
            for xx in range(nx):
                t = y * nx + xx
                # local sum (wide, neighbour-oriented) and local differences
                sigma = 0
                if y > 0 and 0 < xx < nx - 1:
                    sigma = r[y, xx - 1] + r[y - 1, xx - 1] + r[y - 1, xx] + r[y - 1, xx + 1]
                elif y == 0 and xx > 0:
                    sigma = 4 * r[y, xx - 1]
                elif y > 0 and xx == 0:
                    sigma = 2 * (r[y - 1, xx] + r[y - 1, min(xx + 1, nx - 1)])
                elif y > 0:
                    sigma = r[y, xx - 1] + r[y - 1, xx - 1] + 2 * r[y - 1, xx]
                diffs[:3] = 0
                if y > 0:
                    diffs[0] = 4 * r[y - 1, xx] - sigma
                    diffs[1] = 4 * (r[y, xx - 1] if xx > 0 else r[y - 1, xx]) - sigma
                    diffs[2] = 4 * (r[y - 1, xx - 1] if xx > 0 else r[y - 1, xx]) - sigma
                for p in range(bands_used):
                    diffs[3 + p] = central[z - 1 - p, y, xx]
                predicted_diff = 0
                for i in range(3 + bands_used):
                    predicted_diff += weights[i] * diffs[i]
                high = predicted_diff + ((sigma - 4 * s_mid) << OMEGA) + (s_mid << (OMEGA + 2)) + (1 << (OMEGA + 1))
                high = min(max(high, s_min << (OMEGA + 2)), (s_max << (OMEGA + 2)) + (1 << (OMEGA + 1)))
                if t > 0:
                    double = high >> (OMEGA + 1)
                elif bands_used == 0:
                    double = 2 * s_mid
                else:
                    double = 2 * rec[z - 1, 0, 0]
                predicted = double >> 1
                m = max_error if t > 0 else 0
                step = 2 * m + 1
                low_room = (predicted - s_min + m) // step
                high_room = (s_max - predicted + m) // step
                theta = min(low_room, high_room)
                flip = double & 1   # (-1)^double: which sign the even mapped indices take
                k = 0               # the Golomb code's index, from the band's accumulator (t > 0)
                if t > 0 and 2 * counter <= accumulator + ((49 * counter) >> 7):
                    while k < k_limit and counter << (k + 1) <= accumulator + ((49 * counter) >> 7):
                        k += 1
                # the mapped quantizer index: coded, or decoded
                if decoding:
                    if t == 0:
                        delta, pos = _get(buf, pos, depth)
                    else:
                        u = 0
                        bit = 0
                        while u < U_MAX:
                            bit, pos = _get(buf, pos, 1)
                            if bit:
                                break
                            u += 1
                        if u == U_MAX:
                            delta, pos = _get(buf, pos, depth)
                        else:
                            low_bits, pos = _get(buf, pos, k)
                            delta = (u << k) | low_bits
                    if delta > 2 * theta:
                        q = delta - theta if low_room <= high_room else theta - delta
                    else:
                        magnitude = (delta + 1) >> 1
                        positive = (delta % 2 == 0) == (flip == 0)
                        q = magnitude if positive else -magnitude
                else:
                    residual = x[z, y, xx] - predicted
                    q = (abs(residual) + m) // step
                    q = -q if residual < 0 else q
                    if abs(q) > theta:
                        delta = abs(q) + theta
                    elif 0 <= (-q if flip else q) <= theta:
                        delta = 2 * abs(q)
                    else:
                        delta = 2 * abs(q) - 1
                    if t == 0:
                        pos = _put(buf, pos, delta, depth)
                    else:
                        u = delta >> k
                        if u < U_MAX:
                            pos = _put(buf, pos, 1, u + 1)
                            pos = _put(buf, pos, delta, k)
                        else:
                            pos = _put(buf, pos, 0, U_MAX)
                            pos = _put(buf, pos, delta, depth)
                if t > 0:
                    if counter < (1 << gamma_star) - 1:
                        accumulator += delta
                        counter += 1
                    else:
                        accumulator = (accumulator + delta + 1) >> 1
                        counter = (counter + 1) >> 1
                centre = min(max(predicted + q * step, s_min), s_max)
                r[y, xx] = centre
                central[z, y, xx] = 4 * centre - sigma
                if t > 0:   # the weights learn from the double-resolution prediction error
                    error = 2 * centre - double
                    rho = min(max(NU_MIN + ((t - nx) >> T_INC_LOG), NU_MIN), NU_MAX) + depth - OMEGA
                    sign = 1 if error >= 0 else -1
                    for i in range(3 + bands_used):
                        v = sign * diffs[i]
                        v = v >> rho if rho > 0 else v << -rho
                        weights[i] = min(max(weights[i] + ((v + 1) >> 1), w_min), w_max)
    return rec, pos


def encode(array: np.ndarray, max_error: int, prediction_bands: int, gamma_star: int) -> bytes:
    depth, signed = dynamic_range(array)
    samples = array.astype(np.int64)
    buf = np.zeros(samples.size * (depth + U_MAX + 2) // 8 + 16, np.uint8)
    _, bits = _code(samples, buf, False, depth, signed, min(prediction_bands, array.shape[0] - 1), max_error,
                    gamma_star)
    return buf[:(bits + 7) // 8].tobytes()


def decode(stream: bytes, shape: tuple[int, int, int], depth: int, signed: bool, max_error: int,
           prediction_bands: int, gamma_star: int) -> np.ndarray:
    buf = np.frombuffer(stream, np.uint8).copy()   # writable: one compiled loop codes and decodes
    rec, _ = _code(np.zeros(shape, np.int64), buf, True, depth, signed, min(prediction_bands, shape[0] - 1),
                   max_error, gamma_star)
    return rec


def best_encoding(array: np.ndarray, max_error: int = 0) -> tuple[bytes, dict]:
    """The smallest stream over P_CHOICES x GAMMA_STAR_CHOICES, and the options that made it
    (what ``decode`` needs besides the shape)."""
    depth, signed = dynamic_range(array)
    best = None
    for p, gamma_star in itertools.product(sorted({min(p, array.shape[0] - 1) for p in P_CHOICES}),
                                           GAMMA_STAR_CHOICES):
        stream = encode(array, max_error, p, gamma_star)
        if best is None or len(stream) < len(best[0]):
            best = stream, {"depth": depth, "signed": signed, "max_error": max_error, "prediction_bands": p,
                            "gamma_star": gamma_star}
    return best
