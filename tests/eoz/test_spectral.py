"""Spectral partition: intervals from band correlation, and the band-to-band prediction."""

from __future__ import annotations

import numpy as np
import pytest

from eoz import datasets, spectral


def _cube(groups: list[int], seed: int = 0, size: int = 48) -> np.ndarray:
    """Bands in groups, each group a noisy gain of its own smooth signal."""
    rng = np.random.default_rng(seed)
    bands = []
    for n in groups:
        signal = rng.normal(size=(size, size)).cumsum(0).cumsum(1)
        bands += [signal * (1 + 0.1 * i) + rng.normal(scale=0.01 * signal.std(), size=signal.shape)
                  for i in range(n)]
    return np.stack(bands)


def test_uncorrelated_groups_of_bands_become_intervals():
    corr, usable = spectral.band_correlation([_cube([10, 12, 9])], None)
    assert spectral.spectral_intervals(corr, usable) == [(0, 10), (10, 22), (22, 31)]


def test_a_short_run_of_bands_joins_its_neighbours():
    corr, usable = spectral.band_correlation([_cube([10, 3, 12])], None)
    assert spectral.spectral_intervals(corr, usable, min_bands=8) == [(0, 10), (10, 25)]
    corr, usable = spectral.band_correlation([_cube([10, 12, 3])], None)
    assert spectral.spectral_intervals(corr, usable, min_bands=8) == [(0, 10), (10, 25)]


def test_bands_without_valid_pixels_are_skipped_but_covered():
    cube = _cube([10, 10]).astype(np.float32)
    cube[4] = -1.0           # a bad band, all nodata
    corr, usable = spectral.band_correlation([cube], -1.0)
    assert not usable[4] and usable.sum() == 19
    assert spectral.spectral_intervals(corr, usable) == [(0, 10), (10, 20)]


def test_enmap_training_split_falls_into_a_few_physical_intervals(shared_data):
    split = datasets.ENMAP_HSI
    corr, usable = spectral.band_correlation(datasets.load_split(split, "train"), split.nodata)
    intervals = spectral.spectral_intervals(corr, usable)
    assert intervals[0][0] == 0 and intervals[-1][1] == 224
    assert all(a[1] == b[0] for a, b in zip(intervals, intervals[1:]))
    assert 3 <= len(intervals) <= 8
    assert (~usable).sum() == 6      # the six water-vapour bands EnMAP fills with nodata
    # within an interval, neighbouring usable bands are very alike
    for start, stop in intervals:
        idx = [b for b in range(start, stop) if usable[b]]
        assert min(corr[a, b] for a, b in zip(idx, idx[1:])) > 0.5


def test_prediction_recovers_a_linear_relation_and_rounds_for_integers():
    rng = np.random.default_rng(1)
    previous = rng.integers(100, 3000, (32, 32)).astype(np.float64)
    band = 0.8 * previous + 120
    valid = np.ones(band.shape, bool)
    gain, offset = spectral.fit_prediction(previous, band, valid)
    assert gain.dtype == np.float32 and gain == pytest.approx(0.8, rel=1e-5) and offset == pytest.approx(120, rel=1e-4)
    predicted = spectral.predict(previous, gain, offset)
    assert np.array_equal(predicted, np.rint(predicted)) and np.abs(predicted - band).max() <= 0.5 + 1e-3
    assert not np.array_equal(spectral.predict(previous, gain, offset, integer=False), predicted)


def test_prediction_from_a_flat_or_empty_band_is_the_mean():
    band = np.arange(16.0).reshape(4, 4)
    gain, offset = spectral.fit_prediction(np.full((4, 4), 7.0), band, np.ones((4, 4), bool))
    assert gain == 0 and offset == pytest.approx(band.mean())
    assert spectral.fit_prediction(band, band, np.zeros((4, 4), bool)) == (0, 0)


def test_predicted_training_images_are_residuals_far_smaller_than_the_bands(shared_data):
    bands = datasets.load_split(datasets.split_named("enmap-hsi:54-135"), "train")
    residuals = datasets.load_split(datasets.split_named("enmap-hsi:54-135:predicted"), "train")
    assert all(im.shape == (1, 32, 32) for im in bands + residuals)
    assert len(residuals) < len(bands)   # an interval's first band and bands after a bad one have no predecessor
    assert np.std([im.std() for im in residuals]) < 0.2 * np.mean([im.std() for im in bands])
    assert abs(np.mean([im.mean() for im in residuals])) < 5


def test_split_names_are_parsed_and_checked():
    assert datasets.split_named("enmap-hsi:0-43:predicted").interval == (0, 43)
    assert datasets.split_named("s2-10m") is datasets.S2_10M
    for bad in ("nope", "enmap-hsi:0-43:other", "s2-10m:1-2:predicted:x"):
        with pytest.raises(Exception, match="no data split"):
            datasets.split_named(bad)
