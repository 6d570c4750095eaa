"""Mirror padding to a model's stride, and which tiles a pixel window touches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eoz.container import Header
from eoz.errors import EozError, InputError
from eoz.tiling import pad_to_multiple, tiles_in_window


def _reflect(i: int, n: int) -> int:
    """Index of the source pixel that symmetric (edge-repeating) mirroring puts at i."""
    i %= 2 * n
    return i if i < n else 2 * n - 1 - i


@pytest.mark.parametrize("multiple", [2, 4, 8])
def test_pad_to_multiple_for_every_small_size(multiple):
    rng = np.random.default_rng(multiple)
    for h in range(1, 10):
        for w in range(1, 14):
            tile = rng.integers(0, 60000, (3, h, w), dtype=np.uint16)
            out = pad_to_multiple(tile, multiple)
            H, W = -(-h // multiple) * multiple, -(-w // multiple) * multiple
            assert out.shape == (3, H, W), (h, w)
            assert out.dtype == tile.dtype
            np.testing.assert_array_equal(out[:, :h, :w], tile)
            rows = [_reflect(i, h) for i in range(H)]
            cols = [_reflect(j, w) for j in range(W)]
            np.testing.assert_array_equal(out, tile[:, rows][:, :, cols], err_msg=f"{h}x{w}")


def test_pad_mirrors_about_the_edge_without_repeating_far_pixels():
    tile = np.arange(1, 6, dtype=np.int32).reshape(1, 1, 5)  # 1 2 3 4 5
    out = pad_to_multiple(tile, 8)
    assert out[0, 0].tolist() == [1, 2, 3, 4, 5, 5, 4, 3]
    assert pad_to_multiple(tile[:, :, :1], 4)[0, 0].tolist() == [1, 1, 1, 1]
    tall = np.arange(3, dtype=np.float32).reshape(1, 3, 1)
    assert pad_to_multiple(tall, 8)[0, :, 0].tolist() == [0, 1, 2, 2, 1, 0, 0, 1]


def test_tile_already_a_multiple_is_unchanged():
    tile = np.arange(2 * 8 * 16, dtype=np.float64).reshape(2, 8, 16)
    out = pad_to_multiple(tile, 8)
    assert out.shape == tile.shape
    np.testing.assert_array_equal(out, tile)


def _header(height, width, tile_size):
    return Header(codec="jpeg2000", height=height, width=width, bands=["B02"], dtype="uint16",
                  tile_size=tile_size)


def _touched(header, col, row, width, height):
    """Brute force: every tile whose bounds intersect the window."""
    found = []
    for index in range(header.tile_count):
        r0, c0, h, w = header.tile_bounds(index)
        if r0 < row + height and row < r0 + h and c0 < col + width and col < c0 + w:
            found.append(index)
    return found


@pytest.mark.parametrize("window, expected", [
    ((0, 0, 100, 70), list(range(12))),   # whole image: 3 tile rows x 4 tile columns
    ((0, 0, 32, 32), [0]),               # exactly the first tile
    ((31, 31, 1, 1), [0]),               # last pixel of tile 0
    ((32, 32, 1, 1), [5]),               # first pixel of tile 5
    ((31, 31, 2, 2), [0, 1, 4, 5]),      # straddles a tile corner
    ((96, 64, 4, 6), [11]),              # the small bottom-right edge tile
    ((99, 69, 1, 1), [11]),              # last pixel of the image
    ((0, 40, 100, 1), [4, 5, 6, 7]),     # one full row
    ((64, 0, 1, 70), [2, 6, 10]),        # one full column
])
def test_tiles_in_window_at_borders(window, expected):
    header = _header(70, 100, 32)
    assert tiles_in_window(header, *window) == expected
    assert expected == _touched(header, *window)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), height=st.integers(1, 90), width=st.integers(1, 90),
       tile_size=st.sampled_from([1, 7, 16, 32, 512]))
def test_tiles_in_window_matches_brute_force(data, height, width, tile_size):
    header = _header(height, width, tile_size)
    row = data.draw(st.integers(0, height - 1))
    col = data.draw(st.integers(0, width - 1))
    h = data.draw(st.integers(1, height - row))
    w = data.draw(st.integers(1, width - col))
    assert tiles_in_window(header, col, row, w, h) == _touched(header, col, row, w, h)


@pytest.mark.parametrize("window", [
    (-1, 0, 10, 10), (0, -1, 10, 10), (0, 0, 0, 10), (0, 0, 10, 0), (0, 0, -5, 10),
    (91, 0, 10, 10), (0, 61, 10, 10), (0, 0, 101, 70), (0, 0, 100, 71), (100, 0, 1, 1),
    (0, 70, 1, 1), (500, 500, 1, 1),
])
def test_windows_outside_the_image_are_refused(window):
    with pytest.raises(InputError, match="not inside the 100x70 image"):
        tiles_in_window(_header(70, 100, 32), *window)
    with pytest.raises(EozError):
        tiles_in_window(_header(70, 100, 32), *window)
