"""CDF 9/7 lifting DWT: perfect reconstruction at any size and level count, layout, gains."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eoz import wavelet

SHAPES = [(1, 1), (1, 17), (23, 1), (2, 2), (2, 3), (3, 2), (3, 3), (5, 7), (16, 16), (17, 33),
          (64, 48), (63, 37), (100, 77), (128, 1), (1, 128), (31, 2), (256, 255)]
LEVELS = [0, 1, 3, 5, 7]


def _plane(shape, seed=0, scale=1000.0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, scale, shape) + scale


def _assert_reconstructs(x: np.ndarray, levels: int) -> None:
    back = wavelet.inverse(wavelet.forward(x, levels))
    assert back.shape == x.shape
    scale = max(np.abs(x).max(), 1.0)
    assert np.abs(back - x).max() < 1e-9 * scale


def _shapes_of(subbands) -> list:
    return [subbands[0].shape] + [tuple(b.shape for b in level) for level in subbands[1:]]


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("shape", SHAPES)
def test_perfect_reconstruction(shape, levels):
    _assert_reconstructs(_plane(shape), levels)


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_layout_matches_subband_shapes(shape, levels):
    subbands = wavelet.forward(_plane(shape), levels)
    applied = wavelet.max_levels(*shape, levels)
    assert len(subbands) == 1 + applied
    assert _shapes_of(subbands) == wavelet.subband_shapes(*shape, levels)
    # every coefficient of the plane lands in exactly one subband
    assert sum(b.size for b in wavelet.flatten(subbands)) == shape[0] * shape[1]


@given(h=st.integers(1, 70), w=st.integers(1, 70), levels=st.integers(0, 8), seed=st.integers(0, 2 ** 32 - 1),
       log_scale=st.integers(-3, 9))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_perfect_reconstruction_property(h, w, levels, seed, log_scale):
    x = _plane((h, w), seed, 10.0 ** log_scale)
    _assert_reconstructs(x, levels)
    assert _shapes_of(wavelet.forward(x, levels)) == wavelet.subband_shapes(h, w, levels)


@given(h=st.integers(1, 40), w=st.integers(1, 40), levels=st.integers(0, 6),
       a=st.floats(-100, 100), b=st.floats(-100, 100), seed=st.integers(0, 2 ** 32 - 1))
@settings(max_examples=40, deadline=None)
def test_linearity(h, w, levels, a, b, seed):
    x, y = _plane((h, w), seed), _plane((h, w), seed + 1)
    combined = wavelet.flatten(wavelet.forward(a * x + b * y, levels))
    separate = [a * u + b * v for u, v in zip(wavelet.flatten(wavelet.forward(x, levels)),
                                               wavelet.flatten(wavelet.forward(y, levels)))]
    scale = (abs(a) + abs(b) + 1) * 2000.0 * 2 ** wavelet.max_levels(h, w, levels)
    for u, v in zip(combined, separate):
        assert np.abs(u - v).max(initial=0) < 1e-9 * scale


def test_max_levels_stops_before_a_side_drops_below_two():
    assert wavelet.max_levels(512, 512, 5) == 5
    assert wavelet.max_levels(512, 512, 20) == 9
    assert wavelet.max_levels(100, 77, 5) == 5
    assert wavelet.max_levels(31, 512, 5) == 4
    assert wavelet.max_levels(2, 3, 5) == 1
    assert wavelet.max_levels(1, 300, 5) == 0
    assert wavelet.max_levels(300, 1, 5) == 0
    assert wavelet.max_levels(64, 64, 0) == 0


def test_subband_shapes_of_an_odd_plane():
    # low-pass halves round up, high-pass down; HL is high along rows (axis 0), LH along columns
    assert wavelet.subband_shapes(5, 7, 1) == [(3, 4), ((2, 4), (3, 3), (2, 3))]
    assert wavelet.subband_shapes(5, 7, 2) == [(2, 2), ((1, 2), (2, 2), (1, 2)), ((2, 4), (3, 3), (2, 3))]
    assert wavelet.subband_shapes(1, 9, 3) == [(1, 9)]


def test_flatten_and_nest_are_inverse():
    subbands = wavelet.forward(_plane((40, 30)), 3)
    flat = wavelet.flatten(subbands)
    assert len(flat) == 1 + 3 * 3
    assert flat[0] is subbands[0] and flat[1] is subbands[1][0] and flat[-1] is subbands[-1][2]
    nested = wavelet.nest(flat)
    assert len(nested) == len(subbands)
    assert all(tuple(n) == tuple(s) for n, s in zip(nested[1:], subbands[1:]))
    np.testing.assert_array_equal(wavelet.inverse(nested), wavelet.inverse(subbands))


def test_constant_plane_has_no_detail_and_ll_gain_two_per_level():
    """The 9/7 high-pass kills constants; with the sqrt(2)/K scaling the low-pass DC gain is sqrt(2)."""
    for shape, levels in [((64, 48), 3), ((37, 21), 4), ((2, 3), 1)]:
        subbands = wavelet.forward(np.full(shape, 3.0), levels)
        applied = wavelet.max_levels(*shape, levels)
        np.testing.assert_allclose(subbands[0], 3.0 * 2 ** applied, rtol=1e-12)
        for level in subbands[1:]:
            for band in level:
                assert np.abs(band).max(initial=0) < 1e-12


@pytest.mark.parametrize("shape", [(64, 48), (63, 37), (5, 9), (2, 3), (3, 2)])
def test_one_level_equals_the_reference_cdf97(shape):
    """One level equals PyWavelets' bior4.4 (CDF 9/7) with whole-sample symmetric extension
    ('reflect'), up to its padding of 2 samples, the high-pass sign and our scaling (which
    matches PyWavelets' normalization)."""
    pywt = pytest.importorskip("pywt")
    x = _plane(shape, seed=3, scale=1.0)
    ll, (hl, lh, hh) = wavelet.forward(x, 1)
    ca, (ch, cv, cd) = pywt.dwt2(x, "bior4.4", mode="reflect")
    for ours, ref, sign in ((ll, ca, 1), (hl, ch, -1), (lh, cv, -1), (hh, cd, 1)):
        part = ref[2:2 + ours.shape[0], 2:2 + ours.shape[1]]
        assert part.shape == ours.shape
        np.testing.assert_allclose(sign * part, ours, atol=1e-10)


def test_levels_recurse_on_the_low_pass():
    x = _plane((96, 80), seed=5)
    one = wavelet.forward(x, 1)
    three = wavelet.forward(x, 3)
    inner = wavelet.forward(one[0], 2)
    np.testing.assert_allclose(three[0], inner[0], atol=1e-9)
    for a, b in zip(three[1:3], inner[1:]):
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, atol=1e-9)
    for u, v in zip(three[3], one[1]):
        np.testing.assert_array_equal(u, v)


def test_synthesis_gains_are_near_unit_energy():
    gains = wavelet.synthesis_gains(512, 512, 5)
    flat = wavelet.flatten(gains)
    assert len(flat) == 1 + 3 * 5
    assert all(abs(g - 1.0) < 0.3 for g in flat), flat
    # HL and LH are transposes of each other on a square plane
    for hl, lh, _ in gains[1:]:
        assert hl == pytest.approx(lh, rel=1e-9)


def test_synthesis_gain_is_the_energy_of_a_unit_coefficient():
    h, w, levels = 40, 36, 3
    gains = wavelet.flatten(wavelet.synthesis_gains(h, w, levels))
    shapes = wavelet.flatten(wavelet.subband_shapes(h, w, levels))
    for k in (0, 1, 5, 9):
        bands = [np.zeros(s) for s in shapes]
        bands[k][shapes[k][0] // 2, shapes[k][1] // 2] = 2.0          # energy scales with the square
        image = wavelet.inverse(wavelet.nest(bands))
        assert (image ** 2).sum() == pytest.approx(4.0 * gains[k], rel=1e-9)


def test_transform_is_near_energy_preserving():
    x = np.random.default_rng(7).normal(size=(256, 256))
    energy = sum((b ** 2).sum() for b in wavelet.flatten(wavelet.forward(x, 5)))
    assert energy / (x ** 2).sum() == pytest.approx(1.0, abs=0.15)


def test_forward_does_not_modify_its_input_and_takes_integers():
    x = (np.arange(35 * 19).reshape(35, 19) % 251).astype(np.uint16)
    copy = x.copy()
    back = wavelet.inverse(wavelet.forward(x, 4))
    np.testing.assert_array_equal(x, copy)
    assert back.dtype == np.float64
    assert np.abs(back - x).max() < 1e-9 * 250


@pytest.mark.parametrize("shape", [(2, 2), (3, 5), (5, 3), (7, 2), (2, 9), (31, 64), (97, 33), (64, 64)])
def test_compiled_lifting_gives_the_reference_bits(shape):
    """forward/inverse run compiled lifting kernels: bit for bit the numpy reference's output
    (decoded pixels of archived files depend on it)."""
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(0, 1000, shape) * rng.random(shape) ** 3
    ll, details = wavelet._analyse_2d(x)
    ref_ll, ref_details = wavelet._analyse_2d_reference(x)
    np.testing.assert_array_equal(ll, ref_ll)
    for a, b in zip(details, ref_details):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(wavelet._synthesise_2d(ll, details), wavelet._synthesise_2d_reference(ll, details))
