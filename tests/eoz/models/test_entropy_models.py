"""Entropy bottleneck, Gaussian conditional and the integer-table range coding they share."""

from __future__ import annotations

import math

import constriction
import numpy as np
import pytest
import torch

from eoz.errors import ContainerError
from eoz.models.entropy_models import (SCALE_LEVELS, SYMBOL_LIMIT, EntropyBottleneck, GaussianConditional,
                                       SymbolTables, scale_table, scale_thresholds)
from eoz.models.layers import GDN


def _round_trip(tables: SymbolTables, symbols: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, int]:
    encoder = constriction.stream.queue.RangeEncoder()
    tables.encode(encoder, symbols, ids)
    words = encoder.get_compressed()
    decoder = constriction.stream.queue.RangeDecoder(words)
    out = tables.decode(decoder, ids)
    assert decoder.maybe_exhausted()
    return out, words.nbytes


def test_gaussian_tables_code_any_value_including_far_outliers():
    tables = GaussianConditional.tables()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(tables), 5000)
    symbols = np.rint(rng.normal(0, scale_table()[ids])).astype(np.int64)
    symbols[:5] = [SYMBOL_LIMIT, -SYMBOL_LIMIT, 4000, -77, 0]     # outside small tables: overflow bins
    ids[:5] = 0
    out, _ = _round_trip(tables, symbols, ids)
    np.testing.assert_array_equal(out, symbols)


def test_symbols_beyond_the_limit_are_clipped_not_wrapped():
    tables = GaussianConditional.tables()
    out, _ = _round_trip(tables, np.array([10 ** 6, -10 ** 6]), np.array([3, 3]))
    np.testing.assert_array_equal(out, [SYMBOL_LIMIT, -SYMBOL_LIMIT])


def test_coded_size_follows_the_scale():
    """Small-scale symbols cost about their entropy; the right table matters."""
    tables = GaussianConditional.tables()
    rng = np.random.default_rng(1)
    k = SCALE_LEVELS // 2
    sigma = scale_table()[k]
    symbols = np.rint(rng.normal(0, sigma, 20000)).astype(np.int64)
    _, right = _round_trip(tables, symbols, np.full(symbols.size, k))
    _, wrong = _round_trip(tables, symbols, np.full(symbols.size, SCALE_LEVELS - 1))
    entropy_bits = symbols.size * (0.5 * math.log2(2 * math.pi * math.e * sigma ** 2))
    assert right * 8 == pytest.approx(entropy_bits, rel=0.03)
    assert wrong > right * 1.3


def test_thresholds_pick_the_nearest_scale():
    unit = 4096.0
    thresholds = scale_thresholds(unit)
    assert thresholds.shape == (SCALE_LEVELS - 1,) and np.all(np.diff(thresholds) > 0)
    log_scales = np.log(scale_table())
    picked = np.searchsorted(thresholds, np.rint(log_scales * unit).astype(np.int64), side="right")
    np.testing.assert_array_equal(picked, np.arange(SCALE_LEVELS))


def test_decoding_with_an_unknown_table_is_refused():
    tables = GaussianConditional.tables()
    decoder = constriction.stream.queue.RangeDecoder(np.array([1, 2], np.uint32))
    with pytest.raises(ContainerError, match="table"):
        tables.decode(decoder, np.array([len(tables)]))


def test_bottleneck_likelihoods_form_a_distribution_and_tables_match_them():
    torch.manual_seed(0)
    bottleneck = EntropyBottleneck(3).eval()
    support = torch.arange(-400, 401, dtype=torch.float32)
    z = support.repeat(3, 1)[None, :, :, None]          # (1, 3, 801, 1)
    _, likelihood = bottleneck(z)
    assert likelihood.detach().sum(dim=2).squeeze().numpy() == pytest.approx([1, 1, 1], abs=1e-3)
    tables = bottleneck.tables(radius=8)
    assert len(tables) == 3 and (tables.radius == 8).all()
    symbols = np.array([0, 1, -3, 50, -9])
    out, _ = _round_trip(tables, symbols, np.array([0, 1, 2, 0, 1]))
    np.testing.assert_array_equal(out, symbols)


def test_bottleneck_adds_noise_in_training_and_rounds_in_eval():
    bottleneck = EntropyBottleneck(2)
    z = torch.full((1, 2, 4, 4), 0.3)
    noisy, _ = bottleneck.train()(z)
    assert not torch.equal(noisy, torch.round(noisy))
    rounded, _ = bottleneck.eval()(z)
    assert torch.equal(rounded, torch.zeros_like(z))


def test_gdn_normalizes_and_igdn_undoes_it_for_diagonal_gamma():
    x = torch.randn(2, 4, 5, 5)
    gdn, igdn = GDN(4), GDN(4, inverse=True)
    y = gdn(x)
    assert y.shape == x.shape and (y.abs() <= x.abs() + 1e-6).all()
    # with a diagonal gamma, IGDN(GDN(x)) is close to x where x**2 is small against beta
    small = x * 0.01
    torch.testing.assert_close(igdn(gdn(small)), small, rtol=1e-3, atol=1e-6)


def test_estimated_bits_match_the_coded_size():
    tables = GaussianConditional.tables()
    rng = np.random.default_rng(3)
    ids = rng.integers(0, len(tables), 4000)
    symbols = np.rint(rng.normal(0, scale_table()[ids])).astype(np.int64)
    symbols[:3] = [9000, -9000, 5000]
    _, nbytes = _round_trip(tables, symbols, ids)
    assert tables.bits(symbols, ids).sum() == pytest.approx(nbytes * 8, rel=0.01)
