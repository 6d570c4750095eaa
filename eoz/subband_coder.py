"""Context-adaptive coding of quantized wavelet subbands (the wavelet codec's entropy model).

Each coefficient's magnitude is coded as a token (0..7 directly; above, its octave and the
bit below the top one, the remaining low bits raw) with an adaptive frequency table chosen
by two context classes:

- *spatial*: a weighted sum of the magnitudes of its decoded neighbours (W, N, NW, NE, WW,
  NN) in the same subband, formed in the sequential loop;
- *inter*: a weighted sum of its parent (same orientation, one level coarser), of the
  same subband of the previous spectral component around the same place (a 3x3 sum, as
  that component is fully decoded), and of its siblings (the subbands of the same level
  coded before it, at the same place): all decoded before the subband starts, so this
  class is computed for the whole subband at once.

Detail subbands are quantized with *dependent quantization* (trellis-coded, as VVC's):
each coefficient's level is a multiple of the step taken from one of two quantizers, Q0
(even levels) or Q1 (zero and odd levels), chosen by a 4-state machine driven by the
parity of the previous coded index; the encoder picks the whole path with a Viterbi search
(``dependent_levels``) for the least distortion plus rate, the decoder only follows the
states. The two quantizers share the union's fine spacing, so for the same rate the error
is smaller than one scalar quantizer's (the trellis's granular gain). The coded symbol is
the index within the state's quantizer, and the quantizer is part of its table's context.

Each weighted sum goes through a logarithmic quantizer (two classes per octave). The
weights and the tables' starting counts are the learned part (fitted on training rasters
by ``eoz.train_wavelet``); the tables then adapt to the tile being coded, which is what
carries the model to scenes and sensors it never saw. Signs are coded raw. The LL band is
coded as the residual of a median edge predictor (as LOCO-I's), with its own table chosen
by the local gradient.

The range coder is the classic carry-propagating one (as LZMA's): 64-bit ``low``, 32-bit
``range`` renormalized a byte at a time, pending 0xFF bytes counted until a carry
resolves; its state lives in a small int64 array, ``[low, range, cache, cache_size, pos]``
(decoder: ``[code, range, -, -, pos]``). Adaptive tables are one row of frequencies per
context with the row's total last; each coded symbol adds INCREMENT to its frequency and a
row whose total passes LIMIT is halved.

Why our own coder: each coefficient's context depends on the coefficients decoded just
before it, so decoding is one sequential loop, compiled with numba (a Python call per
symbol would be 100x too slow). Everything that decides a symbol is integer arithmetic,
so a stream decodes the same on every machine. All compiled code lives in this one module
because numba's on-disk cache is invalidated per source file: a cached loop must never
outlive a change to the coder it inlines.
"""

from __future__ import annotations

import numba
import numpy as np

jit = numba.njit(cache=True, nogil=True, boundscheck=False)
# the range coder's per-symbol steps are inlined by numba itself: a compiled call counts
# references to the arrays it is passed, atomically, before and after (the predictive loop,
# compiled without reference counting, spent half its time there)
inline = numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
# next state of the dependent quantizer, by the parity of the coded index; state >> 1 is its quantizer
TRANSITIONS = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], np.int64)

DIRECT = 8                 # magnitudes below this are their own token
MAX_OCTAVE = 30            # magnitudes below 2**31
MAX_MAGNITUDE = (1 << 30) - 1   # the quantizer clips larger ones
TOKENS = DIRECT + 2 * (MAX_OCTAVE - 2)
SPATIAL_CLASSES = 20
INTER_CLASSES = 8
_BITS_OF_BYTE = np.array([v.bit_length() for v in range(256)], np.int64)
# the token of every magnitude below 4096 (its octave e >= 3 and the bit below the top one)
_TOKEN_OF = np.array([m if m < DIRECT else DIRECT + 2 * (m.bit_length() - 4) + ((m >> (m.bit_length() - 2)) & 1)
                      for m in range(4096)], np.int64)
ROWS = SPATIAL_CLASSES * INTER_CLASSES * 2      # x 2: the quantizer (Q0, Q1) of the state
LL_CLASSES = 16
WEIGHT_BITS = 8            # weights are fixed point with this many fraction bits
N_WEIGHTS = 8              # W+N, NW+NE, WW+NN, parent, previous component, its 3x3 sum, sibling, bias



# --- range coder ---------------------------------------------------------------------------

TOP = 1 << 24
INCREMENT = 24
LIMIT = 1 << 16
_LOW, _RANGE, _CACHE, _CACHE_SIZE, _POS = 0, 1, 2, 3, 4

@jit
def encoder_state() -> np.ndarray:
    state = np.zeros(5, np.int64)
    state[_RANGE] = 0xFFFFFFFF
    state[_CACHE_SIZE] = 1
    return state


@inline
def _shift_low(state, out):
    low = state[_LOW]
    if low < 0xFF000000 or low >= (1 << 32):
        carry = low >> 32
        temp = state[_CACHE]
        while True:
            out[state[_POS]] = (temp + carry) & 0xFF
            state[_POS] += 1
            temp = 0xFF
            state[_CACHE_SIZE] -= 1
            if state[_CACHE_SIZE] == 0:
                break
        state[_CACHE] = (low >> 24) & 0xFF
    state[_CACHE_SIZE] += 1
    state[_LOW] = (low & 0x00FFFFFF) << 8


@inline
def encode(state, out, cum, freq, total):
    """Code the interval [cum, cum + freq) of total (total < 2^16)."""
    _narrow(state, out, state[_RANGE] // total, cum, freq)


@inline
def _narrow(state, out, r, cum, freq):
    """The encoder's step, given r = range // total."""
    state[_LOW] += r * cum
    state[_RANGE] = r * freq
    while state[_RANGE] < TOP:
        state[_RANGE] <<= 8
        _shift_low(state, out)


@inline
def encode_bits(state, out, value, bits):
    """Code ``bits`` raw bits of value (equiprobable), 16 at a time (total 2^n: a shift)."""
    while bits > 0:
        n = min(bits, 16)
        bits -= n
        _narrow(state, out, state[_RANGE] >> n, (value >> bits) & ((1 << n) - 1), 1)


@jit
def finish(state, out) -> int:
    """Flush; returns the number of bytes written."""
    for _ in range(5):
        _shift_low(state, out)
    return state[_POS]


@inline
def _next_byte(state, data) -> int:
    pos = state[_POS]
    state[_POS] = pos + 1
    return data[pos] if pos < data.shape[0] else 0


@jit
def decoder_state(data) -> np.ndarray:
    state = np.zeros(5, np.int64)
    state[_RANGE] = 0xFFFFFFFF
    for _ in range(5):
        state[_LOW] = ((state[_LOW] << 8) | _next_byte(state, data)) & 0xFFFFFFFF
    return state


@jit
def decode_target(state, total) -> int:
    """The cumulative count the next symbol's interval holds; then call ``consume``."""
    return _target(state, state[_RANGE] // total, total)


@inline
def _target(state, r, total) -> int:
    v = state[_LOW] // r
    return v if v < total else total - 1


@jit
def consume(state, data, cum, freq, total):
    _widen(state, data, state[_RANGE] // total, cum, freq)


@inline
def _widen(state, data, r, cum, freq):
    """The decoder's step, given r = range // total."""
    state[_LOW] -= r * cum
    state[_RANGE] = r * freq
    while state[_RANGE] < TOP:
        state[_RANGE] <<= 8
        state[_LOW] = ((state[_LOW] << 8) | _next_byte(state, data)) & 0xFFFFFFFF


@inline
def decode_bits(state, data, bits) -> int:
    value = 0
    while bits > 0:
        n = min(bits, 16)
        bits -= n
        r = state[_RANGE] >> n
        v = _target(state, r, 1 << n)
        _widen(state, data, r, v, 1)
        value = (value << n) | v
    return value


@jit
def overrun(state, data) -> bool:
    """True when the decoder read past the end of the stream (truncated or corrupt)."""
    return state[_POS] > data.shape[0]


@inline
def encode_adaptive(state, out, table, row, symbol):
    """Code symbol with the adaptive frequencies of table[row], then update them."""
    n = table.shape[1] - 1
    cum = 0
    for s in range(symbol):
        cum += table[row, s]
    encode(state, out, cum, table[row, symbol], table[row, n])
    _update(table, row, symbol)


@inline
def decode_adaptive(state, data, table, row) -> int:
    n = table.shape[1] - 1
    r = state[_RANGE] // table[row, n]
    target = _target(state, r, table[row, n])
    cum = 0
    symbol = 0
    while symbol < n - 1 and cum + table[row, symbol] <= target:
        cum += table[row, symbol]
        symbol += 1
    _widen(state, data, r, cum, table[row, symbol])
    _update(table, row, symbol)
    return symbol


@inline
def _update(table, row, symbol):
    """Count symbol in table[row] (its last entry is the total), halving past LIMIT. Indexed
    in place, never through a row view: a view is a reference-counted array, and its atomic
    counting took most of the predictive loop's time."""
    n = table.shape[1] - 1
    table[row, symbol] += INCREMENT
    table[row, n] += INCREMENT
    if table[row, n] > LIMIT:
        total = 0
        for s in range(n):
            table[row, s] = (table[row, s] + 1) >> 1
            total += table[row, s]
        table[row, n] = total


def new_tables(initial: np.ndarray) -> np.ndarray:
    """Adaptive tables (rows x (symbols + 1)) from initial counts (rows x symbols, each >= 1)."""
    initial = np.asarray(initial, np.int64)
    if (initial < 1).any() or (initial.sum(1) >= LIMIT).any():
        raise ValueError("initial counts must be >= 1 and total below the limit")
    return np.concatenate([initial, initial.sum(1, keepdims=True)], axis=1)


# --- subband contexts ------------------------------------------------------------------------

@jit
def _bit_length(v) -> int:
    n = 0
    while v >= 256:
        v >>= 8
        n += 8
    return n + _BITS_OF_BYTE[v]


@jit
def _log_class(a, classes) -> int:
    """0 for 0, then two classes per octave of a fixed-point activity, from 1/4 up."""
    if a <= 0:
        return 0
    b = _bit_length(a)
    half = (a >> (b - 2)) & 1 if b >= 2 else 0
    c = 2 * b - 1 + half - 2 * (WEIGHT_BITS - 2)   # class 1 holds activities up to 1/4
    if c < 1:
        return 1
    return c if c < classes else classes - 1


@jit
def _token(m):
    """(token, raw low bits) of magnitude m."""
    if m < DIRECT:
        return m, 0
    if m < _TOKEN_OF.shape[0]:
        return _TOKEN_OF[m], _TOKEN_OF[m] // 2 - DIRECT // 2 + 2
    e = _bit_length(m) - 1
    return DIRECT + 2 * (e - 3) + ((m >> (e - 1)) & 1), e - 1


@jit
def _code_magnitude(state, buf, table, row, m, decoding, counts) -> int:
    """Code magnitude m (encoder) or decode it (decoder) with table row ``row``; an
    encoder given a non-empty ``counts`` (rows x tokens) tallies the tokens it codes."""
    if not decoding:
        token, raw = _token(m)
        if counts.shape[0] > 0:
            counts[row, token] += 1
        encode_adaptive(state, buf, table, row, token)
        if raw:
            encode_bits(state, buf, m & ((1 << raw) - 1), raw)
        return m
    token = decode_adaptive(state, buf, table, row)
    if token < DIRECT:
        return token
    e = (token - DIRECT) // 2 + 3
    top = (2 | ((token - DIRECT) & 1)) << (e - 1)
    return top | decode_bits(state, buf, e - 1)


@jit
def _code_sign(state, buf, v, decoding) -> int:
    """v with its sign coded (encoder) or |v| signed from the stream (decoder)."""
    if v == 0:
        return 0
    if not decoding:
        encode_bits(state, buf, 1 if v < 0 else 0, 1)
        return v
    return -v if decode_bits(state, buf, 1) else v


@jit
def _log_classes(values, classes):
    """_log_class of every value of an int64 array."""
    out = np.empty(values.shape, np.int64)
    flat, flat_out = values.ravel(), out.ravel()
    for n in range(flat.shape[0]):
        flat_out[n] = _log_class(flat[n], classes)
    return out


@jit
def _spatial_activity(q, i, j, weights) -> int:
    """Weighted magnitudes of the decoded neighbours W, N (weights[0]), NW, NE ([1]), WW, NN ([2])."""
    h, w = q.shape
    a = 0
    if j > 0:
        a += weights[0] * abs(q[i, j - 1])
        if j > 1:
            a += weights[2] * abs(q[i, j - 2])
    if i > 0:
        a += weights[0] * abs(q[i - 1, j])
        if j > 0:
            a += weights[1] * abs(q[i - 1, j - 1])
        if j + 1 < w:
            a += weights[1] * abs(q[i - 1, j + 1])
        if i > 1:
            a += weights[2] * abs(q[i - 2, j])
    return a


@jit
def code_detail(q, inter, table, weights, state, buf, decoding, counts):
    """One detail subband of signed levels in raster order; decoding fills q in place.
    ``inter`` holds each coefficient's inter class (from what was decoded before the
    subband). The dependent quantizer's state starts at 0 and runs along the raster."""
    h, w = q.shape
    dq = 0
    for i in range(h):
        for j in range(w):
            quantizer = dq >> 1
            row = (_log_class(_spatial_activity(q, i, j, weights), SPATIAL_CLASSES) * INTER_CLASSES
                   + inter[i, j]) * 2 + quantizer
            if decoding:
                index = _code_magnitude(state, buf, table, row, 0, True, counts)
                level = 2 * index - 1 if quantizer and index else 2 * index
                q[i, j] = _code_sign(state, buf, level, True)
            else:
                level = abs(q[i, j])
                if level and (level & 1) != quantizer:
                    raise ValueError("a level the dependent quantizer's state does not allow")
                index = (level + quantizer) >> 1
                _code_magnitude(state, buf, table, row, index, False, counts)
                _code_sign(state, buf, q[i, j], False)
            dq = TRANSITIONS[dq, index & 1]


@jit
def _candidate(x, quantizer, choice) -> int:
    """Level ``choice`` (0: zero, 1: the quantizer's largest level <= x, 2: the next) for x."""
    if choice == 0:
        return 0
    below = 2 * int(x // 2) if quantizer == 0 else max(2 * int((x - 1) // 2) + 1, 1)
    return below + 2 * (choice - 1)


@jit
def dependent_levels(u, preliminary, inter, weights, bits, kappa):
    """Viterbi search of the dependent quantizer's levels (magnitudes) for one subband.

    u: |coefficient| / step; preliminary: nearest levels, for the contexts of the rate
    estimate; bits: estimated bits of each token per table row; kappa: bits' weight against
    squared error in steps^2. Minimizes sum (u - level)^2 + kappa * bits along the raster.
    Back pointers are one byte per coefficient and state: previous state x 4 + choice.
    """
    h, w = u.shape
    back = np.zeros((h * w, 4), np.int8)
    cost = np.full(4, np.inf)
    cost[0] = 0.0
    new = np.empty(4)
    for i in range(h):
        for j in range(w):
            x = u[i, j]
            base = (_log_class(_spatial_activity(preliminary, i, j, weights), SPATIAL_CLASSES) * INTER_CLASSES
                    + inter[i, j]) * 2
            new[:] = np.inf
            for s in range(4):
                if cost[s] == np.inf:
                    continue
                quantizer = s >> 1
                for choice in range(3):
                    level = _candidate(x, quantizer, choice)
                    if choice == 1 and level == 0:
                        continue
                    index = (level + quantizer) >> 1
                    token, raw = _token(index)
                    c = cost[s] + (x - level) ** 2 + kappa * (bits[base + quantizer, token] + raw + (index > 0))
                    nxt = TRANSITIONS[s, index & 1]
                    if c < new[nxt]:
                        new[nxt] = c
                        back[i * w + j, nxt] = s * 4 + choice
            cost[:] = new
    out = np.empty(h * w, np.int64)
    s = int(np.argmin(cost))
    for idx in range(h * w - 1, -1, -1):
        b = back[idx, s]
        s = b >> 2
        out[idx] = _candidate(u.ravel()[idx], s >> 1, b & 3)
    return out.reshape(h, w)


@jit
def code_lowpass(q, table, state, buf, decoding, counts):
    """The LL band: median-edge prediction residuals, table chosen by the local gradient."""
    h, w = q.shape
    for i in range(h):
        for j in range(w):
            west = q[i, j - 1] if j > 0 else (q[i - 1, j] if i > 0 else 0)
            north = q[i - 1, j] if i > 0 else west
            nw = q[i - 1, j - 1] if i > 0 and j > 0 else north
            if nw >= max(west, north):
                pred = min(west, north)
            elif nw <= min(west, north):
                pred = max(west, north)
            else:
                pred = west + north - nw
            grad = abs(west - nw) + abs(north - nw)
            row = _log_class(grad << WEIGHT_BITS, LL_CLASSES)
            r = q[i, j] - pred
            m = _code_magnitude(state, buf, table, row, abs(r), decoding, counts)
            r = _code_sign(state, buf, m if decoding else r, decoding)
            q[i, j] = pred + r


# --- the fast paths: whole subbands with the coder's state in locals ---------------------------
#
# The same symbols as code_detail / inter_features + inter_classes (which stay the reference,
# and what tally() runs), computed without per-symbol array views or state arrays: what
# encode() and decode() run. tests/eoz/test_subband_coder.py checks the two agree.

CLASS_LIMIT = 1 << 15      # _log_class(a, SPATIAL_CLASSES) is SPATIAL_CLASSES - 1 from here up
_CLASS_OF = np.array([0] + [min(max(2 * a.bit_length() - 1 + ((a >> (a.bit_length() - 2)) & 1 if a >= 2 else 0)
                                    - 2 * (WEIGHT_BITS - 2), 1), SPATIAL_CLASSES - 1)
                            for a in range(1, CLASS_LIMIT)], np.int64)


@jit
def _class_of(a, classes) -> int:
    """_log_class(a, classes) for classes <= SPATIAL_CLASSES, by table."""
    if a <= 0:
        return 0
    c = _CLASS_OF[a] if a < CLASS_LIMIT else SPATIAL_CLASSES - 1
    return c if c < classes else classes - 1


@jit
def inter_class_plane(h, w, parent, previous, sibling_a, sibling_b, weights):
    """inter_classes(inter_features(...), weights) of an (h, w) subband in one pass: absent
    parts are (0, 0) arrays. Siblings and the parent are read clipped to their shapes."""
    out = np.empty((h, w), np.int64)
    wp, wc, ws, wsib, bias = weights[3], weights[4], weights[5], weights[6], weights[7]
    hp, wpp = parent.shape
    ha, wa = sibling_a.shape
    hb, wb = sibling_b.shape
    act = np.full((h, w), bias, np.int64)
    if hp > 0:
        for i in range(h):
            ip = min(i >> 1, hp - 1)
            for j in range(w):
                act[i, j] += wp * abs(parent[ip, min(j >> 1, wpp - 1)])
    if previous.shape[0] > 0:
        # the 3x3 sum of |previous| (zero outside): column sums of three rows, then three columns
        pad = np.zeros((h + 2, w + 2), np.int64)
        for i in range(h):
            for j in range(w):
                pad[i + 1, j + 1] = abs(previous[i, j])
        rows3 = np.empty((h, w + 2), np.int64)
        for i in range(h):
            for j in range(w + 2):
                rows3[i, j] = pad[i, j] + pad[i + 1, j] + pad[i + 2, j]
        for i in range(h):
            for j in range(w):
                act[i, j] += wc * pad[i + 1, j + 1] + ws * (rows3[i, j] + rows3[i, j + 1] + rows3[i, j + 2])
    if ha > 0 or hb > 0:
        for i in range(h):
            for j in range(w):
                sib = 0
                if ha > 0:
                    sib += abs(sibling_a[min(i, ha - 1), min(j, wa - 1)])
                if hb > 0:
                    sib += abs(sibling_b[min(i, hb - 1), min(j, wb - 1)])
                act[i, j] += wsib * sib
    for i in range(h):
        for j in range(w):
            out[i, j] = _class_of(act[i, j], INTER_CLASSES)
    return out


@jit
def _renorm_encoder(low, rng, cache, cache_size, pos, out):
    while rng < TOP:
        rng <<= 8
        if low < 0xFF000000 or low >= (1 << 32):
            carry = low >> 32
            temp = cache
            while True:
                out[pos] = (temp + carry) & 0xFF
                pos += 1
                temp = 0xFF
                cache_size -= 1
                if cache_size == 0:
                    break
            cache = (low >> 24) & 0xFF
        cache_size += 1
        low = (low & 0x00FFFFFF) << 8
    return low, rng, cache, cache_size, pos


@jit
def _renorm_decoder(code, rng, pos, data):
    n = data.shape[0]
    while rng < TOP:
        rng <<= 8
        byte = data[pos] if pos < n else 0
        pos += 1
        code = ((code << 8) | byte) & 0xFFFFFFFF
    return code, rng, pos


@jit
def _row_base(mag, i, j, w0, w1, w2, inter) -> int:
    """Table row (for quantizer 0; + 1 for quantizer 1) of the detail coefficient (i, j) from
    the magnitudes decoded before it, ``mag`` holding them padded by 2 rows and columns, and
    its inter class: what _spatial_activity and code_detail compute, for the fast paths."""
    pi, pj = i + 2, j + 2
    a = (w0 * (mag[pi, pj - 1] + mag[pi - 1, pj]) + w1 * (mag[pi - 1, pj - 1] + mag[pi - 1, pj + 1])
         + w2 * (mag[pi, pj - 2] + mag[pi - 2, pj]))
    return (_class_of(a, SPATIAL_CLASSES) * INTER_CLASSES + inter) * 2


@jit
def encode_detail(q, inter, table, weights, state, out):
    """code_detail's encoder, the state kept in locals."""
    h, w = q.shape
    n = table.shape[1] - 1
    mag = np.zeros((h + 2, w + 3), np.int64)
    w0, w1, w2 = weights[0], weights[1], weights[2]
    low, rng, cache, cache_size, pos = state[_LOW], state[_RANGE], state[_CACHE], state[_CACHE_SIZE], state[_POS]
    dq = 0
    for i in range(h):
        for j in range(w):
            quantizer = dq >> 1
            row = _row_base(mag, i, j, w0, w1, w2, inter[i, j]) + quantizer
            v = q[i, j]
            level = abs(v)
            mag[i + 2, j + 2] = level
            if level and (level & 1) != quantizer:
                raise ValueError("a level the dependent quantizer's state does not allow")
            index = (level + quantizer) >> 1
            token, raw = _token(index)
            cum = 0
            for s in range(token):
                cum += table[row, s]
            r = rng // table[row, n]
            low += r * cum
            rng = r * table[row, token]
            low, rng, cache, cache_size, pos = _renorm_encoder(low, rng, cache, cache_size, pos, out)
            _update(table, row, token)
            bits = raw
            while bits > 0:
                m = min(bits, 16)
                bits -= m
                rng >>= m
                low += rng * ((index >> bits) & ((1 << m) - 1))
                low, rng, cache, cache_size, pos = _renorm_encoder(low, rng, cache, cache_size, pos, out)
            if level:
                rng >>= 1
                if v < 0:
                    low += rng
                low, rng, cache, cache_size, pos = _renorm_encoder(low, rng, cache, cache_size, pos, out)
            dq = TRANSITIONS[dq, index & 1]
    state[_LOW], state[_RANGE], state[_CACHE], state[_CACHE_SIZE], state[_POS] = low, rng, cache, cache_size, pos


@jit
def decode_detail(q, inter, table, weights, state, data):
    """code_detail's decoder, the state kept in locals; fills q."""
    h, w = q.shape
    n = table.shape[1] - 1
    mag = np.zeros((h + 2, w + 3), np.int64)
    w0, w1, w2 = weights[0], weights[1], weights[2]
    code, rng, pos = state[_LOW], state[_RANGE], state[_POS]
    dq = 0
    for i in range(h):
        for j in range(w):
            quantizer = dq >> 1
            row = _row_base(mag, i, j, w0, w1, w2, inter[i, j]) + quantizer
            total = table[row, n]
            r = rng // total
            target = code // r
            if target >= total:
                target = total - 1
            cum = 0
            token = 0
            while token < n - 1 and cum + table[row, token] <= target:
                cum += table[row, token]
                token += 1
            code -= r * cum
            rng = r * table[row, token]
            code, rng, pos = _renorm_decoder(code, rng, pos, data)
            _update(table, row, token)
            if token < DIRECT:
                index = token
            else:
                e = (token - DIRECT) // 2 + 3
                index = (2 | ((token - DIRECT) & 1)) << (e - 1)
                bits = e - 1
                value = 0
                while bits > 0:
                    m = min(bits, 16)
                    bits -= m
                    rng >>= m
                    t = code // rng
                    if t >= (1 << m):
                        t = (1 << m) - 1
                    code -= rng * t
                    code, rng, pos = _renorm_decoder(code, rng, pos, data)
                    value = (value << m) | t
                index |= value
            level = 2 * index - 1 if quantizer and index else 2 * index
            mag[i + 2, j + 2] = level
            if level:
                rng >>= 1
                if code >= rng:
                    code -= rng
                    level = -level
                code, rng, pos = _renorm_decoder(code, rng, pos, data)
            q[i, j] = level
            dq = TRANSITIONS[dq, index & 1]
    state[_LOW], state[_RANGE], state[_POS] = code, rng, pos


@jit
def _pick(best, arg, c, code):
    """(c, code) when c < best, else (best, arg): the first of equal costs stays."""
    if c < best:
        return c, code
    return best, arg


@jit
def _way(x, level, index, row, bits, kappa):
    """(squared error, weighted bits) of coding x as a nonzero level of this index with table row ``row``."""
    if index < DIRECT:
        token, raw = index, 0
    else:
        token, raw = _token(index)
    d = x - level
    return d * d, kappa * (bits[row, token] + raw + 1)


@jit
def _ways(x, below, quantizer, row, bits, kappa):
    """The two nonzero choices of one quantizer for x >= 2 (levels below, choice 1, and below
    + 2, choice 2, both nonzero): (distortion, rate, choice) of the one of even index, then
    of the one of odd index."""
    index = (below + quantizer) >> 1
    d1, r1 = _way(x, below, index, row, bits, kappa)
    d2, r2 = _way(x, below + 2, index + 1, row, bits, kappa)
    if index & 1:
        return d2, r2, 2, d1, r1, 1
    return d1, r1, 1, d2, r2, 2


@jit
def dependent_quantize(band, step, inter, weights, bits, kappa):
    """Signed levels of one detail subband: dependent_levels of u = min(|band| / step,
    MAX_MAGNITUDE) with rint(u) as the preliminary levels, signed as the band (a 0 may take
    level 1). The same search, costs and ties as dependent_levels, unrolled: each next state
    has three ways in (from the two states of one quantizer), compared in dependent_levels'
    order (previous state, then choice), so the same path wins."""
    h, w = band.shape
    u = np.empty((h, w))
    mag = np.zeros((h + 2, w + 3), np.int64)
    for i in range(h):
        for j in range(w):
            x = min(abs(band[i, j]) / step[i, j], MAX_MAGNITUDE)
            u[i, j] = x
            mag[i + 2, j + 2] = int(np.rint(x))
    w0, w1, w2 = weights[0], weights[1], weights[2]
    back = np.zeros((h * w, 4), np.int8)
    inf = np.inf
    c0, c1, c2, c3 = 0.0, inf, inf, inf
    for i in range(h):
        for j in range(w):
            x = u[i, j]
            base = _row_base(mag, i, j, w0, w1, w2, inter[i, j])
            zd = x * x
            zr0 = kappa * (bits[base, 0] + 0 + 0)
            zr1 = kappa * (bits[base + 1, 0] + 0 + 0)
            if x < 2.0:
                # most coefficients: _candidate's levels are 0 and 2 (Q0, no way at choice 1), 1 and 3 (Q1)
                ed0, er0, ec0 = inf, 0.0, 0
                od0, or0 = _way(x, 2, 1, base, bits, kappa)
                od1, or1 = _way(x, 1, 1, base + 1, bits, kappa)
                ed1, er1 = _way(x, 3, 2, base + 1, bits, kappa)
                oc0, oc1, ec1 = 2, 1, 2
            else:
                # _candidate's levels below x: floor(x / 2) and floor((x - 1) / 2), by truncation as x >= 2
                ed0, er0, ec0, od0, or0, oc0 = _ways(x, 2 * int(x * 0.5), 0, base, bits, kappa)
                ed1, er1, ec1, od1, or1, oc1 = _ways(x, 2 * int((x - 1.0) * 0.5) + 1, 1, base + 1, bits, kappa)
            # Q0 states 0, 1 lead to 0 (even from 0, odd from 1) and 2 (odd from 0, even from 1)
            n0, b0 = _pick(inf, 0, c0 + zd + zr0, 0)
            n0, b0 = _pick(n0, b0, c0 + ed0 + er0, ec0)
            n0, b0 = _pick(n0, b0, c1 + od0 + or0, 4 + oc0)
            n2, b2 = _pick(inf, 0, c0 + od0 + or0, oc0)
            n2, b2 = _pick(n2, b2, c1 + zd + zr0, 4)
            n2, b2 = _pick(n2, b2, c1 + ed0 + er0, 4 + ec0)
            # Q1 states 2, 3 lead to 1 (even from 2, odd from 3) and 3 (odd from 2, even from 3)
            n1, b1 = _pick(inf, 0, c2 + zd + zr1, 8)
            n1, b1 = _pick(n1, b1, c2 + ed1 + er1, 8 + ec1)
            n1, b1 = _pick(n1, b1, c3 + od1 + or1, 12 + oc1)
            n3, b3 = _pick(inf, 0, c2 + od1 + or1, 8 + oc1)
            n3, b3 = _pick(n3, b3, c3 + zd + zr1, 12)
            n3, b3 = _pick(n3, b3, c3 + ed1 + er1, 12 + ec1)
            at = i * w + j
            back[at, 0], back[at, 1], back[at, 2], back[at, 3] = b0, b1, b2, b3
            c0, c1, c2, c3 = n0, n1, n2, n3
    cost = np.array([c0, c1, c2, c3])
    out = np.empty((h, w), np.int64)
    s = int(np.argmin(cost))
    for i in range(h - 1, -1, -1):
        for j in range(w - 1, -1, -1):
            b = back[i * w + j, s]
            s = b >> 2
            level = _candidate(u[i, j], s >> 1, b & 3)
            out[i, j] = -level if band[i, j] < 0 else level
    return out


GROUPS = 12    # tables and weights: level (1, 2, 3+) x orientation (HL/LH, HH) x component (first, later)
EMPTY = np.zeros((0, 0), np.int64)


def _at(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """values at the given row and column indices, clipped to its shape."""
    return values[np.ix_(np.minimum(rows, values.shape[0] - 1), np.minimum(cols, values.shape[1] - 1))]


def inter_features(plane: list[np.ndarray], k: int, previous: list[np.ndarray] | None) -> np.ndarray:
    """(4, h, w) int64 inter features of subband k (flat layout): parent, previous component,
    its 3x3 sum, siblings (the same level's subbands coded before it); 0 where absent."""
    h, w = plane[k].shape
    rows, cols = np.arange(h), np.arange(w)
    f = np.zeros((4, h, w), np.int64)
    if k > 3:
        f[0] = _at(np.abs(plane[k - 3]), rows >> 1, cols >> 1)
    if previous is not None:
        f[1] = np.abs(previous[k])
        padded = np.pad(f[1], 1)
        f[2] = sum(padded[1 + di:1 + di + h, 1 + dj:1 + dj + w] for di in (-1, 0, 1) for dj in (-1, 0, 1))
    first = 1 + 3 * ((k - 1) // 3)
    for sibling in plane[first:k]:
        f[3] += _at(np.abs(sibling), rows, cols)
    return f


def inter_of(plane: list[np.ndarray], k: int, previous: list[np.ndarray] | None, weights: np.ndarray,
             shape: tuple | None = None) -> np.ndarray:
    """inter_classes(inter_features(plane, k, previous), weights), in one compiled pass
    (``shape``: subband k's, when plane[k] is not there yet)."""
    h, w = shape if shape is not None else plane[k].shape
    first = 1 + 3 * ((k - 1) // 3)
    siblings = plane[first:k] + [EMPTY] * (2 - (k - first))
    return inter_class_plane(h, w, plane[k - 3] if k > 3 else EMPTY,
                             previous[k] if previous is not None else EMPTY, siblings[0], siblings[1], weights)


def inter_classes(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Inter class of every coefficient from its inter features and a group's weights."""
    activity = weights[-1] + np.tensordot(weights[3:-1], features, axes=1)
    return _log_classes(np.ascontiguousarray(activity, np.int64), INTER_CLASSES)


def group_of(level: int, orientation: int, component: int) -> int:
    """Table group of a detail subband: level 1 is the finest, orientation 0..2 = HL, LH, HH."""
    return (min(level, 3) - 1) * 4 + (orientation == 2) * 2 + (component > 0)


def subband_group(k: int, levels: int, component: int) -> int:
    """group_of for subband k of eoz.wavelet's flat layout of ``levels`` levels."""
    return group_of(levels - (k - 1) // 3, (k - 1) % 3, component)


def deadzone_levels(values: np.ndarray, step, rounding: float) -> np.ndarray:
    """Signed levels of a deadzone scalar quantizer: magnitude floor(|x| / step + rounding)."""
    return (np.sign(values) * np.floor(np.minimum(np.abs(values) / step, MAX_MAGNITUDE) + rounding)).astype(np.int64)


def _stream_buffer(planes: list[list[np.ndarray]]) -> np.ndarray:
    """Room for the coded planes: at most 8 bytes a coefficient."""
    return np.zeros(8 * sum(b.size for plane in planes for b in plane) + 64, np.uint8)


class SubbandModel:
    """The learned entropy model: per group the context weights (GROUPS x N_WEIGHTS, fixed
    point) and the tables' starting counts (GROUPS x ROWS x TOKENS), and the LL table's.

    ``planes[c]`` is component c's quantized subbands in eoz.wavelet's flat layout (LL, then
    HL, LH, HH from the coarsest level). Components are coded in order, each subband after
    its parent, so both contexts are decoded before they are needed.
    """

    def __init__(self, weights: np.ndarray, counts: np.ndarray, lowpass_counts: np.ndarray):
        self.weights = np.ascontiguousarray(weights, np.int64)
        self.counts = np.ascontiguousarray(counts, np.int64)
        self.lowpass_counts = np.ascontiguousarray(lowpass_counts, np.int64)
        if self.weights.shape != (GROUPS, N_WEIGHTS) or self.counts.shape != (GROUPS, ROWS, TOKENS) \
                or self.lowpass_counts.shape != (LL_CLASSES, TOKENS):
            raise ValueError("subband model tensors have the wrong shapes")
        # the encoder's rate estimate: bits of each token under the starting counts
        self.bits = -np.log2(self.counts / self.counts.sum(-1, keepdims=True))

    @classmethod
    def untrained(cls) -> "SubbandModel":
        weights = np.zeros((GROUPS, N_WEIGHTS), np.int64)
        weights[:, :5] = [256, 128, 64, 256, 256]   # W+N, NW+NE, WW+NN, parent, previous component
        return cls(weights, np.ones((GROUPS, ROWS, TOKENS), np.int64), np.ones((LL_CLASSES, TOKENS), np.int64))

    def to_tensors(self) -> dict[str, np.ndarray]:
        return {"subband.weights": self.weights, "subband.counts": self.counts.astype(np.int32),
                "subband.lowpass_counts": self.lowpass_counts.astype(np.int32)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> "SubbandModel":
        return cls(tensors["subband.weights"], tensors["subband.counts"], tensors["subband.lowpass_counts"])

    def quantize(self, subbands: list[list[np.ndarray]], steps: list[np.ndarray], rounding: float,
                 kappa: float) -> list[list[np.ndarray]]:
        """Signed levels of every component's subbands (flat layout; steps per subband): LL by
        a deadzone scalar quantizer (magnitude floor(|x| / step + rounding)), the details by
        dependent quantization with this model's rates, in coding order, so that each
        subband's inter contexts are the final levels of those coded before it."""
        planes = []
        levels = (len(subbands[0]) - 1) // 3
        for c, bands in enumerate(subbands):
            plane = [deadzone_levels(bands[0], steps[0], rounding)]
            for k in range(1, len(bands)):
                g = subband_group(k, levels, c)
                plane.append(EMPTY)   # inter_of reads the subbands before k only
                inter = inter_of(plane, k, planes[c - 1] if c > 0 else None, self.weights[g], bands[k].shape)
                plane[k] = dependent_quantize(np.ascontiguousarray(bands[k], np.float64),
                                              np.ascontiguousarray(steps[k], np.float64), inter,
                                              self.weights[g], self.bits[g], float(kappa))
            planes.append(plane)
        return planes

    def encode(self, planes: list[list[np.ndarray]]) -> bytes:
        buf = _stream_buffer(planes)
        state = encoder_state()
        self._run_fast(planes, state, buf, False)
        return buf[:finish(state, buf)].tobytes()

    def decode(self, data: bytes, shapes: list, components: int) -> list[list[np.ndarray]]:
        """Planes of the given subband shapes (eoz.wavelet's flat layout); ValueError when
        the stream ends before its symbols do."""
        planes = [[np.zeros(s, np.int64) for s in shapes] for _ in range(components)]
        buf = np.frombuffer(data, np.uint8).copy()   # writable: the loop is compiled for both directions
        state = decoder_state(buf)
        self._run_fast(planes, state, buf, True)
        if overrun(state, buf):
            raise ValueError("the coefficient stream ends before its last symbol")
        return planes

    def tally(self, planes: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Token counts per table row as this model codes the planes (for training)."""
        counts, lowpass = np.zeros_like(self.counts), np.zeros_like(self.lowpass_counts)
        self._run(planes, encoder_state(), _stream_buffer(planes), False, (counts, lowpass))
        return counts, lowpass

    def _run_fast(self, planes, state, buf, decoding: bool) -> None:
        """What _run does without tallies, through the fast paths."""
        tables = [new_tables(c) for c in self.counts]
        lowpass = new_tables(self.lowpass_counts)
        levels = (len(planes[0]) - 1) // 3
        for c, plane in enumerate(planes):
            code_lowpass(plane[0], lowpass, state, buf, decoding, EMPTY)
            for k in range(1, len(plane)):
                g = subband_group(k, levels, c)
                inter = inter_of(plane, k, planes[c - 1] if c > 0 else None, self.weights[g])
                (decode_detail if decoding else encode_detail)(plane[k], inter, tables[g], self.weights[g], state, buf)

    def _run(self, planes, state, buf, decoding: bool, tallies) -> None:
        tables = [new_tables(c) for c in self.counts]
        lowpass = new_tables(self.lowpass_counts)
        levels = (len(planes[0]) - 1) // 3
        for c, plane in enumerate(planes):
            code_lowpass(plane[0], lowpass, state, buf, decoding, tallies[1] if tallies else EMPTY)
            for k in range(1, len(plane)):
                g = subband_group(k, levels, c)
                inter = inter_classes(inter_features(plane, k, planes[c - 1] if c > 0 else None), self.weights[g])
                code_detail(plane[k], inter, tables[g], self.weights[g], state, buf, decoding,
                            tallies[0][g] if tallies else EMPTY)
