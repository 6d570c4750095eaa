"""The scene loop: tiles through a codec into the .eoz container, and back.

Tiling and the header fields are done here; the codec codes each tile (eoz.codecs).
Scenes go through ``read_window`` callbacks and an incremental writer, so memory is
bounded by the tile size, not the scene.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from eoz.codecs.base import DEFAULT_TILE_SIZE, Codec, decode_tile_payload, prepare_tile
from eoz.codecs.factory import codec_for_header
from eoz.container import EozReader, EozWriter, Header
from eoz.errors import DecodeLimitError, InputError
from eoz.limits import DecodeLimits
from eoz.raster import RasterMeta, RasterReader, RasterWriter, window_transform
from eoz.registry import ModelStore
from eoz.tiling import tiles_in_window

# A progress callback: (tiles done, tiles in all), called after each tile. The CLI's bars
# (eoz.progress) and the service's job progress (workers.context) both take it.
Progress = Callable[[int, int], None]


def header_meta(header: Header, window: tuple[int, int, int, int] | None = None) -> RasterMeta:
    """RasterMeta of the decoded image, or of a (col_off, row_off, width, height) window of it."""
    col_off, row_off, width, height = window or (0, 0, header.width, header.height)
    return RasterMeta(height=height, width=width, count=len(header.bands), dtype=header.dtype,
                      band_names=list(header.bands), crs=header.crs,
                      transform=window_transform(header.transform, col_off, row_off),
                      nodata=header.nodata)


def tile_size_for(meta: RasterMeta, codec: Codec, overlap: int | None = None) -> int:
    """The default tile edge: DEFAULT_TILE_SIZE, smaller where many bands would make a tile
    larger than the default DecodeLimits take."""
    return DecodeLimits().tile_size_for(meta.count, codec.overlap if overlap is None else overlap,
                                        DEFAULT_TILE_SIZE)


def encode_scene(read_window: Callable[[int, int, int, int], np.ndarray], meta: RasterMeta,
                 codec: Codec, out: BinaryIO, tile_size: int | None = None,
                 overlap: int | None = None, progress: Progress | None = None) -> Header:
    """Encode tile by tile; read_window(col_off, row_off, width, height) gives each tile.

    Each tile codes its own area plus ``overlap`` pixels of context on every side (the
    codec's default when None) and the decoder keeps only its own area: pixels at a tile's
    edge are then coded with real neighbours rather than padding, so no seams show, at the
    cost of coding the overlap twice. Tiles stay independent, so windows decode alone.
    Tiles reach the codec ``codec.batch_tiles`` at a time, so memory holds that many tiles.
    A file that readers would refuse by the default DecodeLimits is refused here, up front.
    """
    codec.check_input(meta)
    codec = codec.for_raster(meta)
    tile_size = tile_size or tile_size_for(meta, codec, overlap)
    if tile_size % codec.stride:
        raise InputError(f"tile size {tile_size} is not a multiple of the model's stride {codec.stride}")
    header = Header(codec=codec.codec_id, height=meta.height, width=meta.width,
                    bands=list(meta.band_names), dtype=meta.dtype, tile_size=tile_size,
                    crs=meta.crs, transform=meta.transform, nodata=meta.nodata,
                    overlap=codec.overlap if overlap is None else overlap, **codec.header_fields())
    try:
        DecodeLimits().check_header(header)
    except DecodeLimitError as e:
        raise InputError(f"the file would not decode: {e}") from None
    with EozWriter(out, header) as writer:
        pending = []
        for index in range(header.tile_count):
            row_off, col_off, h, w = header.tile_bounds(index)
            r0, c0, coded_h, coded_w = header.coded_bounds(index)
            kept = (slice(row_off - r0, row_off - r0 + h), slice(col_off - c0, col_off - c0 + w))
            pending.append(prepare_tile(codec, read_window(c0, r0, coded_w, coded_h), meta.nodata, kept))
            if len(pending) == codec.batch_tiles or index == header.tile_count - 1:
                bodies = codec.encode_tiles([(padded, valid) for _, padded, valid in pending])
                for done, ((prefix, _, _), body) in enumerate(zip(pending, bodies), start=index + 2 - len(pending)):
                    writer.write_tile(prefix + body)
                    if progress:
                        progress(done, header.tile_count)
                pending = []
    return header


def decode_scene(reader: EozReader, window: tuple[int, int, int, int] | None = None,
                 store: ModelStore | None = None, progress: Progress | None = None):
    """Yield (array, col_off, row_off) pieces of the window (or the image), tile by tile.

    Only the tiles the window touches are read and decoded; offsets are relative to the window.
    ``progress`` hears of each tile decoded, before its piece is yielded.
    """
    header = reader.header
    codec = codec_for_header(header, store).for_raster(header_meta(header))
    col0, row0, width, height = window or (0, 0, header.width, header.height)
    indices = tiles_in_window(header, col0, row0, width, height)
    for done, index in enumerate(indices, start=1):
        t_row, t_col, h, w = header.tile_bounds(index)
        tile = decode_tile_payload(codec, reader.read_tile(index), header, index)
        r0, c0 = max(row0, t_row), max(col0, t_col)
        r1, c1 = min(row0 + height, t_row + h), min(col0 + width, t_col + w)
        if progress:
            progress(done, len(indices))
        yield tile[:, r0 - t_row:r1 - t_row, c0 - t_col:c1 - t_col], c0 - col0, r0 - row0


def compress_array(array: np.ndarray, meta: RasterMeta, codec: Codec, tile_size: int | None = None,
                   overlap: int | None = None, progress: Progress | None = None) -> bytes:
    if array.shape != (meta.count, meta.height, meta.width):
        raise InputError(f"array shape {array.shape} does not match its meta")
    out = io.BytesIO()
    encode_scene(lambda c, r, w, h: array[:, r:r + h, c:c + w], meta, codec, out, tile_size, overlap, progress)
    return out.getvalue()


def decompress_array(source, window=None, store: ModelStore | None = None,
                     progress: Progress | None = None) -> tuple[np.ndarray, RasterMeta]:
    with EozReader(source) as reader:
        meta = header_meta(reader.header, window)
        out = np.empty((meta.count, meta.height, meta.width), dtype=meta.dtype)
        for piece, col, row in decode_scene(reader, window, store, progress):
            out[:, row:row + piece.shape[1], col:col + piece.shape[2]] = piece
    return out, meta


def compress_file(in_path: str | Path, out_path: str | Path, codec: Codec, tile_size: int | None = None,
                  overlap: int | None = None, progress: Progress | None = None) -> Header:
    """GeoTIFF -> .eoz, reading one tile window at a time; no partial file on failure."""
    out_path = Path(out_path)
    part = out_path.with_name(out_path.name + ".part")
    try:
        with RasterReader(in_path) as reader, open(part, "wb") as out:
            header = encode_scene(lambda c, r, w, h: reader.read((c, r, w, h))[0],
                                  reader.meta, codec, out, tile_size, overlap, progress)
        part.replace(out_path)
    finally:
        part.unlink(missing_ok=True)
    return header


def decompress_file(in_path: str | Path, out_path: str | Path, window=None, cog: bool = False,
                    store: ModelStore | None = None, progress: Progress | None = None) -> RasterMeta:
    """.eoz -> GeoTIFF/COG, written tile by tile."""
    with EozReader(in_path) as reader:
        meta = header_meta(reader.header, window)
        with RasterWriter(out_path, meta, cog=cog) as writer:
            for piece, col, row in decode_scene(reader, window, store, progress):
                writer.write(piece, col, row)
    return meta
