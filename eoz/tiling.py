"""Scene tiling: the grid, padding tiles to a model's stride, and which tiles a window needs.

Tiles are independent units of the container (each has its own checksum and can be decoded
alone), so memory is bounded by the tile size and a window decode touches only its tiles.
Edge tiles are padded by mirroring to the model's stride and cropped back after decoding;
mirroring keeps edge statistics close to the interior so the padding costs few bits.
"""

from __future__ import annotations

import numpy as np

from eoz.container import Header
from eoz.errors import InputError


def grid_tiles(array: np.ndarray, size: int):
    """The (bands, <= size, <= size) tiles of an array in raster order, edge tiles smaller."""
    for r in range(0, array.shape[1], size):
        for c in range(0, array.shape[2], size):
            yield array[:, r:r + size, c:c + size]


def padded_shape(height: int, width: int, multiple: int) -> tuple[int, int]:
    """A tile's size once padded to multiples of the model's stride."""
    return height + -height % multiple, width + -width % multiple


def pad_to_multiple(tile: np.ndarray, multiple: int) -> np.ndarray:
    """Mirror-pad (bands, h, w) at the bottom and right to multiples of ``multiple``."""
    h, w = tile.shape[1:]
    ph, pw = (p - n for p, n in zip(padded_shape(h, w, multiple), (h, w)))
    return _mirror(tile, ph, pw) if ph or pw else tile


def _mirror(tile: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """Mirror padding that works for any pad size, even beyond the tile (1x1 tiles)."""
    out = tile
    while out.shape[1] < tile.shape[1] + ph or out.shape[2] < tile.shape[2] + pw:
        need_h = min(tile.shape[1] + ph - out.shape[1], out.shape[1])
        need_w = min(tile.shape[2] + pw - out.shape[2], out.shape[2])
        out = np.pad(out, ((0, 0), (0, need_h), (0, need_w)), mode="symmetric")
    return out[:, :tile.shape[1] + ph, :tile.shape[2] + pw]


def tiles_in_window(header: Header, col_off: int, row_off: int, width: int, height: int) -> list[int]:
    """Indices of the tiles that a window (in pixels) touches, after checking it fits."""
    if width <= 0 or height <= 0 or col_off < 0 or row_off < 0 \
            or col_off + width > header.width or row_off + height > header.height:
        raise InputError(f"window (col {col_off}, row {row_off}, {width}x{height}) is not inside "
                         f"the {header.width}x{header.height} image")
    t = header.tile_size
    rows = range(row_off // t, (row_off + height - 1) // t + 1)
    cols = range(col_off // t, (col_off + width - 1) // t + 1)
    return [r * header.tile_cols + c for r in rows for c in cols]
