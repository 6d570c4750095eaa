"""The numba range coder (in eoz.subband_coder, with the loops that inline it): round trips of
adaptive symbols and raw bits, truncation, determinism, and coding efficiency against the
ideal adaptive code length."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eoz import subband_coder as rc


# --- compiled helpers: the coder's functions are called from njit code, as the codec does ----

@numba.njit(cache=False)
def _encode_stream(rows, symbols, raw_values, raw_bits, table, out):
    """Each step: one adaptive symbol of table[rows[i]], then raw_bits[i] raw bits."""
    state = rc.encoder_state()
    for i in range(symbols.shape[0]):
        rc.encode_adaptive(state, out, table, rows[i], symbols[i])
        if raw_bits[i] > 0:
            rc.encode_bits(state, out, raw_values[i], raw_bits[i])
    return rc.finish(state, out)


@numba.njit(cache=False)
def _decode_stream(rows, raw_bits, table, data):
    """Inverse of _encode_stream: (symbols, raw values, overrun)."""
    n = rows.shape[0]
    symbols = np.zeros(n, np.int64)
    values = np.zeros(n, np.int64)
    state = rc.decoder_state(data)
    for i in range(n):
        symbols[i] = rc.decode_adaptive(state, data, table, rows[i])
        if raw_bits[i] > 0:
            values[i] = rc.decode_bits(state, data, raw_bits[i])
    return symbols, values, rc.overrun(state, data)


@numba.njit(cache=False)
def _encode_fixed(cums, freqs, totals, out):
    state = rc.encoder_state()
    for i in range(cums.shape[0]):
        rc.encode(state, out, cums[i], freqs[i], totals[i])
    return rc.finish(state, out)


@numba.njit(cache=False)
def _decode_fixed(cums, freqs, totals, data):
    """Decodes with the known intervals; returns the targets it saw and the overrun flag."""
    targets = np.zeros(cums.shape[0], np.int64)
    state = rc.decoder_state(data)
    for i in range(cums.shape[0]):
        targets[i] = rc.decode_target(state, totals[i])
        rc.consume(state, data, cums[i], freqs[i], totals[i])
    return targets, rc.overrun(state, data)


@numba.njit(cache=False)
def _ideal_adaptive_bits(rows, symbols, table):
    """Ideal code length (bits) of the symbols under the same adaptive model: -log2 of each
    symbol's probability at the time it is coded, with the tables updated as the coder does.
    The update is written out here (not rc's) so that both the coder and the model are checked."""
    bits = 0.0
    n = table.shape[1] - 1
    for i in range(symbols.shape[0]):
        freqs = table[rows[i]]
        s = symbols[i]
        bits -= math.log2(freqs[s] / freqs[n])
        freqs[s] += rc.INCREMENT
        freqs[n] += rc.INCREMENT
        if freqs[n] > rc.LIMIT:
            total = 0
            for k in range(n):
                freqs[k] = (freqs[k] + 1) >> 1
                total += freqs[k]
            freqs[n] = total
    return bits


def _buffer(n_symbols: int, raw_bits: np.ndarray | None = None) -> np.ndarray:
    extra = 0 if raw_bits is None else int(raw_bits.sum()) // 8
    return np.zeros(4 * n_symbols + extra + 64, np.uint8)


def _stream(n: int, n_rows: int, n_symbols: int, seed: int, skew: float | None, max_raw_bits: int):
    """Rows, symbols (geometric-ish when skew is given, else uniform), raw values and bit counts."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n_rows, n).astype(np.int64)
    if skew is None:
        symbols = rng.integers(0, n_symbols, n)
    else:
        symbols = np.minimum(rng.geometric(skew, n) - 1, n_symbols - 1)
    raw_bits = rng.integers(0, max_raw_bits + 1, n).astype(np.int64) if max_raw_bits else np.zeros(n, np.int64)
    raw_values = np.array([int(rng.integers(0, 1 << int(b))) if b else 0 for b in raw_bits], np.int64)
    return rows, symbols.astype(np.int64), raw_values, raw_bits


def _round_trip(rows, symbols, raw_values, raw_bits, initial):
    out = _buffer(len(symbols), raw_bits)
    n = _encode_stream(rows, symbols, raw_values, raw_bits, rc.new_tables(initial), out)
    data = out[:n].copy()
    got_symbols, got_values, overrun = _decode_stream(rows, raw_bits, rc.new_tables(initial), data)
    return data, got_symbols, got_values, overrun


# --- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize("skew", [None, 0.5, 0.9, 0.995])
@pytest.mark.parametrize("max_raw_bits", [0, 5, 16, 40])
def test_adaptive_symbols_and_raw_bits_round_trip(skew, max_raw_bits):
    rows, symbols, raw_values, raw_bits = _stream(20000, 6, 24, seed=1, skew=skew, max_raw_bits=max_raw_bits)
    data, got, values, overrun = _round_trip(rows, symbols, raw_values, raw_bits, np.ones((6, 24), np.int64))
    np.testing.assert_array_equal(got, symbols)
    np.testing.assert_array_equal(values, raw_values)
    assert not overrun


@given(n=st.integers(0, 400), n_rows=st.integers(1, 5), n_symbols=st.integers(2, 70),
       seed=st.integers(0, 2 ** 32 - 1), skew=st.one_of(st.none(), st.floats(0.05, 0.999)),
       max_raw_bits=st.integers(0, 48), initial_max=st.integers(1, 200))
@settings(max_examples=60, deadline=None)
def test_round_trip_property(n, n_rows, n_symbols, seed, skew, max_raw_bits, initial_max):
    rows, symbols, raw_values, raw_bits = _stream(n, n_rows, n_symbols, seed, skew, max_raw_bits)
    initial = np.random.default_rng(seed).integers(1, initial_max + 1, (n_rows, n_symbols))
    data, got, values, overrun = _round_trip(rows, symbols, raw_values, raw_bits, initial)
    np.testing.assert_array_equal(got, symbols)
    np.testing.assert_array_equal(values, raw_values)
    assert not overrun


def test_empty_stream_round_trips():
    empty = np.zeros(0, np.int64)
    data, got, values, overrun = _round_trip(empty, empty, empty, empty, np.ones((1, 3), np.int64))
    assert len(data) <= 5 and got.size == 0 and not overrun


def test_long_runs_of_ones_propagate_carries():
    """Raw all-ones values and the most probable symbol over and over make long 0xFF runs,
    which only the carry logic resolves."""
    n = 30000
    rows = np.zeros(n, np.int64)
    symbols = np.where(np.arange(n) % 997 == 0, 1, 0).astype(np.int64)
    raw_bits = np.where(np.arange(n) % 3 == 0, 48, 0).astype(np.int64)
    raw_values = np.where(raw_bits > 0, (1 << 48) - 1, 0).astype(np.int64)
    data, got, values, overrun = _round_trip(rows, symbols, raw_values, raw_bits, np.ones((1, 2), np.int64))
    assert b"\xff\xff\xff" in data.tobytes()
    np.testing.assert_array_equal(got, symbols)
    np.testing.assert_array_equal(values, raw_values)
    assert not overrun


@pytest.mark.parametrize("total", [2, 3, 255, 4096, 65535, 65536])
def test_fixed_intervals_round_trip_up_to_the_largest_total(total):
    rng = np.random.default_rng(total)
    n = 5000
    totals = np.full(n, total, np.int64)
    # intervals of every width, including the single-count ones at both ends of the range
    cums = rng.integers(0, total, n).astype(np.int64)
    cums[:3] = [0, total - 1, total // 2]
    freqs = np.array([int(rng.integers(1, total - c + 1)) for c in cums], np.int64)
    freqs[:2] = [1, 1]
    out = np.zeros(4 * n + 64, np.uint8)
    data = out[:_encode_fixed(cums, freqs, totals, out)].copy()
    targets, overrun = _decode_fixed(cums, freqs, totals, data)
    assert ((targets >= cums) & (targets < cums + freqs)).all()
    assert not overrun


def test_adaptive_tables_halve_at_the_limit_and_stay_consistent():
    initial = np.full((2, 5), rc.LIMIT // 5 - 1, np.int64)           # just under the limit
    table = rc.new_tables(initial)
    state, out = rc.encoder_state(), np.zeros(1 << 18, np.uint8)
    totals = []
    for i in range(20000):
        rc.encode_adaptive(state, out, table, i % 2, 3 if i % 7 else 0)
        totals.append(table[i % 2, -1])
        assert table[i % 2, -1] == table[i % 2, :-1].sum()
        assert table[i % 2, -1] <= rc.LIMIT and table[i % 2, :-1].min() >= 1
    assert min(totals) < rc.LIMIT // 2 + rc.INCREMENT + 5            # a halving happened
    assert max(totals) > rc.LIMIT - rc.INCREMENT                     # ... only once the total passed the limit
    assert table[0, 3] > 10 * table[0, 1]                            # the frequent symbol dominates


def test_tables_adapt_to_the_tile():
    """Skewed statistics in one row, uniform in another: the adaptive row codes in far fewer bits."""
    n = 20000
    rng = np.random.default_rng(2)
    rows = np.zeros(n, np.int64)
    skewed = np.where(rng.random(n) < 0.97, 4, rng.integers(0, 16, n)).astype(np.int64)
    out = _buffer(n)
    zeros = np.zeros(n, np.int64)
    size = _encode_stream(rows, skewed, zeros, zeros, rc.new_tables(np.ones((1, 16), np.int64)), out)
    assert 8 * size < 0.35 * n                      # vs 4 bits per symbol without adaptation


def test_new_tables_checks_initial_counts():
    table = rc.new_tables([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(table, [[1, 2, 3, 6], [4, 5, 6, 15]])
    assert table.dtype == np.int64
    with pytest.raises(ValueError):
        rc.new_tables([[0, 2, 3]])
    with pytest.raises(ValueError):
        rc.new_tables([[rc.LIMIT - 1, 1]])
    assert rc.new_tables([[rc.LIMIT - 2, 1]])[0, -1] == rc.LIMIT - 1


# --- damage ---------------------------------------------------------------------------------

def test_truncated_streams_are_flagged_and_never_crash():
    rows, symbols, raw_values, raw_bits = _stream(3000, 4, 20, seed=3, skew=0.6, max_raw_bits=12)
    initial = np.ones((4, 20), np.int64)
    data, *_ = _round_trip(rows, symbols, raw_values, raw_bits, initial)
    assert len(data) > 100
    for keep in [0, 1, 4, 5, 6, len(data) // 3, len(data) // 2, len(data) - 6, len(data) - 2, len(data) - 1]:
        got, values, overrun = _decode_stream(rows, raw_bits, rc.new_tables(initial), data[:keep].copy())
        assert overrun or not (np.array_equal(got, symbols) and np.array_equal(values, raw_values)), keep
        assert ((got >= 0) & (got < 20)).all()


def test_every_truncation_reads_past_the_end():
    """The decoder reads exactly the bytes the encoder wrote: cutting any byte is an overrun."""
    rows, symbols, raw_values, raw_bits = _stream(500, 2, 10, seed=4, skew=0.3, max_raw_bits=8)
    initial = np.ones((2, 10), np.int64)
    data, got, values, overrun = _round_trip(rows, symbols, raw_values, raw_bits, initial)
    assert not overrun
    for keep in range(len(data)):
        assert _decode_stream(rows, raw_bits, rc.new_tables(initial), data[:keep].copy())[2], keep


def test_corrupted_streams_decode_without_crashing():
    rows, symbols, raw_values, raw_bits = _stream(4000, 3, 30, seed=5, skew=0.4, max_raw_bits=20)
    initial = np.ones((3, 30), np.int64)
    data, *_ = _round_trip(rows, symbols, raw_values, raw_bits, initial)
    rng = np.random.default_rng(6)
    differing = 0
    for trial in range(20):
        bad = data.copy()
        where = rng.integers(0, len(bad), 1 + trial % 4)
        bad[where] ^= rng.integers(1, 256, len(where)).astype(np.uint8)
        got, values, _ = _decode_stream(rows, raw_bits, rc.new_tables(initial), bad)
        assert ((got >= 0) & (got < 30)).all()
        assert ((values >= 0) & (values < (1 << raw_bits))).all()
        differing += not np.array_equal(got, symbols)
    assert differing >= 18
    garbage = rng.integers(0, 256, 777).astype(np.uint8)
    got, values, overrun = _decode_stream(rows, raw_bits, rc.new_tables(initial), garbage)
    assert overrun and ((got >= 0) & (got < 30)).all()


# --- determinism and efficiency -------------------------------------------------------------

def test_encoding_is_deterministic():
    rows, symbols, raw_values, raw_bits = _stream(10000, 5, 40, seed=7, skew=0.2, max_raw_bits=30)
    initial = np.arange(1, 201).reshape(5, 40) % 13 + 1
    first = _round_trip(rows, symbols, raw_values, raw_bits, initial)[0]
    second = _round_trip(rows, symbols, raw_values, raw_bits, initial)[0]
    assert first.tobytes() == second.tobytes()
    # the tables passed in are the only state: a dirty output buffer does not matter
    out = np.full(_buffer(len(symbols), raw_bits).shape, 0xAB, np.uint8)
    n = _encode_stream(rows, symbols, raw_values, raw_bits, rc.new_tables(initial), out)
    assert out[:n].tobytes() == first.tobytes()


@pytest.mark.parametrize("skew", [0.15, 0.6, 0.95])
def test_coded_size_is_within_one_percent_of_the_ideal_adaptive_length(skew):
    n, n_rows, n_symbols = 300_000, 4, 32
    rows, symbols, _, _ = _stream(n, n_rows, n_symbols, seed=8, skew=skew, max_raw_bits=0)
    initial = np.ones((n_rows, n_symbols), np.int64)
    ideal = _ideal_adaptive_bits(rows, symbols, rc.new_tables(initial))
    zeros = np.zeros(n, np.int64)
    out = _buffer(n)
    size_bits = 8 * _encode_stream(rows, symbols, zeros, zeros, rc.new_tables(initial), out)
    assert ideal > 10_000
    assert size_bits <= 1.01 * ideal + 64
    assert size_bits >= ideal - 64                   # no coder beats the model's own code length
