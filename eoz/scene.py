"""The scene loop: tiles through a codec into the .eoz container, and back.

Tiling and the header fields are done here; the codec codes each tile (eoz.codecs).
Scenes go through ``read_window`` callbacks and an incremental writer, so memory is
bounded by the tile size, not the scene. Tiles are independent, so a codec whose tile work
releases the GIL (``Codec.parallel_tiles``) codes several at once on threads (``threads``),
in order, the same bytes as one at a time.
"""

from __future__ import annotations

import io
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
from threadpoolctl import threadpool_limits

from eoz.codecs.base import DEFAULT_TILE_SIZE, Codec, decode_tile_payload, prepare_tile, tile_valid_pixels
from eoz.codecs.factory import codec_for_header
from eoz.container import EozReader, EozWriter, Header
from eoz.errors import DecodeLimitError, InputError
from eoz.limits import DecodeLimits
from eoz.raster import RasterMeta, RasterReader, RasterWriter, window_metadata, window_transform
from eoz.registry import ModelStore
from eoz.tiling import tiles_in_window

# A progress callback: (tiles done, tiles in all), called after each tile. The CLI's bars
# (eoz.progress) and the service's job progress (workers.context) both take it.
Progress = Callable[[int, int], None]


def header_meta(header: Header, window: tuple[int, int, int, int] | None = None) -> RasterMeta:
    """RasterMeta of the decoded image, or of a (col_off, row_off, width, height) window of it.
    A lossy file's decoded samples need not fit the original's narrower storage (GDAL's NBITS),
    so its metadata leaves that out."""
    col_off, row_off, width, height = window or (0, 0, header.width, header.height)
    metadata = window_metadata(header.metadata, col_off, row_off)
    if "nbits" in metadata and not header.lossless:
        metadata = {key: value for key, value in metadata.items() if key != "nbits"}
    return RasterMeta(height=height, width=width, count=len(header.bands), dtype=header.dtype,
                      band_names=list(header.bands), crs=header.crs,
                      transform=window_transform(header.transform, col_off, row_off),
                      nodata=header.nodata, metadata=metadata)


def tile_size_for(meta: RasterMeta, codec: Codec, overlap: int | None = None) -> int:
    """The default tile edge: DEFAULT_TILE_SIZE, smaller where many bands would make a tile
    larger than the default DecodeLimits take."""
    return DecodeLimits().tile_size_for(meta.count, codec.overlap if overlap is None else overlap,
                                        DEFAULT_TILE_SIZE)


def tile_threads(codec: Codec, threads: int) -> int:
    """How many tiles code at once: ``threads`` (0: one per CPU core) where the codec's tile
    work releases the GIL, else one (a network's own threads already fill the cores)."""
    if threads < 0:
        raise InputError(f"threads must be 0 (one per CPU core) or more, got {threads}")
    if not codec.parallel_tiles:
        return 1
    return threads or os.cpu_count() or 1


@contextmanager
def _tile_pool(workers: int):
    """Threads for tiles coded at once (None: one tile at a time), BLAS held to one thread
    meanwhile: the tiles fill the cores, and a codec's own BLAS limit, set and restored by
    several tiles' threads at once, would otherwise leave the process at another setting."""
    if workers == 1:
        yield None
        return
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers, "eoz-tile") as pool:
        yield pool


def _in_order(pool: ThreadPoolExecutor | None, jobs: Iterator[Callable], workers: int) -> Iterator:
    """The jobs' results in their order, ``workers`` of them running at once (inline without a
    pool). A job is taken from ``jobs`` (which reads its input) only when there is room; where
    taking one fails, the results before it still come first, as they would one at a time."""
    if pool is None:
        yield from (job() for job in jobs)
        return
    running: deque = deque()
    jobs = iter(jobs)
    while True:
        try:
            job = next(jobs)
        except StopIteration:
            break
        except Exception:
            while running:
                yield running.popleft().result()
            raise
        running.append(pool.submit(job))
        if len(running) == workers:
            yield running.popleft().result()
    while running:
        yield running.popleft().result()


def _encode_batch(codec: Codec, batch: list[tuple[bytes, np.ndarray, np.ndarray]]) -> list[bytes]:
    bodies = codec.encode_tiles([(padded, valid) for _, padded, valid in batch])
    return [prefix + body for (prefix, _, _), body in zip(batch, bodies)]


def encode_scene(read_window: Callable[[int, int, int, int], np.ndarray], meta: RasterMeta,
                 codec: Codec, out: BinaryIO, tile_size: int | None = None,
                 overlap: int | None = None, progress: Progress | None = None,
                 threads: int = 1, read_valid: Callable[[tuple[int, int, int, int]], np.ndarray] | None = None
                 ) -> Header:
    """Encode tile by tile; read_window(col_off, row_off, width, height) gives each tile, and
    ``read_valid((col_off, row_off, width, height))`` its mask of valid pixels where the raster
    has a mask band (``"mask"`` in its GDAL metadata; ``RasterReader.read_valid``).

    Each tile codes its own area plus ``overlap`` pixels of context on every side (the
    codec's default when None) and the decoder keeps only its own area: pixels at a tile's
    edge are then coded with real neighbours rather than padding, so no seams show, at the
    cost of coding the overlap twice. Tiles stay independent, so windows decode alone.
    Tiles reach the codec ``codec.batch_tiles`` at a time, or ``tile_threads`` tiles code at
    once, so memory holds that many tiles. A file that readers would refuse by the default
    DecodeLimits is refused here, up front.
    """
    codec.check_input(meta)
    codec = codec.for_raster(meta)
    tile_size = tile_size or tile_size_for(meta, codec, overlap)
    if tile_size % codec.stride:
        raise InputError(f"tile size {tile_size} is not a multiple of the model's stride {codec.stride}")
    header = Header(codec=codec.codec_id, height=meta.height, width=meta.width,
                    bands=list(meta.band_names), dtype=meta.dtype, tile_size=tile_size,
                    crs=meta.crs, transform=meta.transform, nodata=meta.nodata, metadata=meta.metadata,
                    overlap=codec.overlap if overlap is None else overlap, **codec.header_fields())
    try:
        DecodeLimits().check_header(header)
    except DecodeLimitError as e:
        raise InputError(f"the file would not decode: {e}") from None
    if "mask" in meta.metadata and read_valid is None:
        raise InputError("the raster has a mask band: give read_valid, which reads it")
    workers = tile_threads(codec, threads)

    def batches() -> Iterator[Callable]:
        """One job per codec.batch_tiles tiles, read (here, in order) as the job is taken."""
        pending = []
        for index in range(header.tile_count):
            row_off, col_off, h, w = header.tile_bounds(index)
            r0, c0, coded_h, coded_w = header.coded_bounds(index)
            kept = (slice(row_off - r0, row_off - r0 + h), slice(col_off - c0, col_off - c0 + w))
            valid = read_valid((c0, r0, coded_w, coded_h)) if "mask" in meta.metadata else None
            pending.append(prepare_tile(codec, read_window(c0, r0, coded_w, coded_h), meta.nodata, kept, valid))
            if len(pending) == codec.batch_tiles or index == header.tile_count - 1:
                yield partial(_encode_batch, codec, pending)
                pending = []

    with EozWriter(out, header) as writer, _tile_pool(workers) as pool:
        done = 0
        for payloads in _in_order(pool, batches(), workers):
            for payload in payloads:
                writer.write_tile(payload)
                done += 1
                if progress:
                    progress(done, header.tile_count)
    return header


def decode_scene(reader: EozReader, window: tuple[int, int, int, int] | None = None,
                 store: ModelStore | None = None, progress: Progress | None = None,
                 threads: int = 1):
    """Yield (array, col_off, row_off) pieces of the window (or the image), tile by tile.

    Only the tiles the window touches are read and decoded; offsets are relative to the window.
    ``progress`` hears of each tile decoded, before its piece is yielded. With ``threads``
    (``tile_threads``), tiles decode that many at once, still yielded in order.
    """
    header = reader.header
    codec = codec_for_header(header, store).for_raster(header_meta(header))
    col0, row0, width, height = window or (0, 0, header.width, header.height)
    indices = tiles_in_window(header, col0, row0, width, height)
    workers = tile_threads(codec, threads)
    jobs = (partial(decode_tile_payload, codec, reader.read_tile(index), header, index) for index in indices)
    with _tile_pool(workers) as pool:
        for done, (index, tile) in enumerate(zip(indices, _in_order(pool, jobs, workers)), start=1):
            t_row, t_col, h, w = header.tile_bounds(index)
            r0, c0 = max(row0, t_row), max(col0, t_col)
            r1, c1 = min(row0 + height, t_row + h), min(col0 + width, t_col + w)
            if progress:
                progress(done, len(indices))
            yield tile[:, r0 - t_row:r1 - t_row, c0 - t_col:c1 - t_col], c0 - col0, r0 - row0


def decode_valid(reader: EozReader, window: tuple[int, int, int, int] | None = None) -> Iterator:
    """Yield (valid, col_off, row_off) pieces of the raster's mask band over the window (or the
    image), tile by tile, as ``decode_scene`` yields pixels (a file whose header names a mask)."""
    header = reader.header
    col0, row0, width, height = window or (0, 0, header.width, header.height)
    for index in tiles_in_window(header, col0, row0, width, height):
        t_row, t_col, h, w = header.tile_bounds(index)
        r0, c0 = max(row0, t_row), max(col0, t_col)
        r1, c1 = min(row0 + height, t_row + h), min(col0 + width, t_col + w)
        valid = tile_valid_pixels(reader.read_tile(index), header, index)
        yield valid[r0 - t_row:r1 - t_row, c0 - t_col:c1 - t_col], c0 - col0, r0 - row0


def valid_array(reader: EozReader, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The raster's mask band over the window (or the image) as one (rows, cols) array, True
    where valid (``decode_valid``'s pieces put together)."""
    _, _, width, height = window or (0, 0, reader.header.width, reader.header.height)
    valid = np.empty((height, width), bool)
    for piece, col, row in decode_valid(reader, window):
        valid[row:row + piece.shape[0], col:col + piece.shape[1]] = piece
    return valid


def write_decoded(reader: EozReader, writer: RasterWriter, window: tuple[int, int, int, int] | None = None,
                  store: ModelStore | None = None, progress: Progress | None = None, threads: int = 1) -> None:
    """Decode the window (or the image) into ``writer``: its pixels (``decode_scene``), then its
    mask band where the file has one."""
    for piece, col, row in decode_scene(reader, window, store, progress, threads):
        writer.write(piece, col, row)
    if "mask" in reader.header.metadata:
        for valid, col, row in decode_valid(reader, window):
            writer.write_valid(valid, col, row)


def compress_array(array: np.ndarray, meta: RasterMeta, codec: Codec, tile_size: int | None = None,
                   overlap: int | None = None, progress: Progress | None = None,
                   threads: int = 1, valid: np.ndarray | None = None) -> bytes:
    """The .eoz of an array; ``valid`` the raster's mask band (rows, cols), where its meta names one."""
    if array.shape != (meta.count, meta.height, meta.width):
        raise InputError(f"array shape {array.shape} does not match its meta")
    out = io.BytesIO()
    encode_scene(lambda c, r, w, h: array[:, r:r + h, c:c + w], meta, codec, out, tile_size, overlap, progress,
                 threads, None if valid is None else lambda window: valid[window[1]:window[1] + window[3],
                                                                          window[0]:window[0] + window[2]])
    return out.getvalue()


def decompress_array(source, window=None, store: ModelStore | None = None,
                     progress: Progress | None = None, threads: int = 1) -> tuple[np.ndarray, RasterMeta]:
    with EozReader(source) as reader:
        meta = header_meta(reader.header, window)
        out = np.empty((meta.count, meta.height, meta.width), dtype=meta.dtype)
        for piece, col, row in decode_scene(reader, window, store, progress, threads):
            out[:, row:row + piece.shape[1], col:col + piece.shape[2]] = piece
    return out, meta


def compress_file(in_path: str | Path, out_path: str | Path, codec: Codec, tile_size: int | None = None,
                  overlap: int | None = None, progress: Progress | None = None,
                  threads: int = 1) -> Header:
    """GeoTIFF -> .eoz, reading one tile window at a time; no partial file on failure."""
    out_path = Path(out_path)
    part = out_path.with_name(out_path.name + ".part")
    try:
        with RasterReader(in_path) as reader, open(part, "wb") as out:
            header = encode_scene(lambda c, r, w, h: reader.read((c, r, w, h))[0],
                                  reader.meta, codec, out, tile_size, overlap, progress, threads, reader.read_valid)
        part.replace(out_path)
    finally:
        part.unlink(missing_ok=True)
    return header


def decompress_file(in_path: str | Path, out_path: str | Path, window=None, cog: bool = False,
                    store: ModelStore | None = None, progress: Progress | None = None,
                    threads: int = 1) -> RasterMeta:
    """.eoz -> GeoTIFF/COG, written tile by tile."""
    with EozReader(in_path) as reader:
        meta = header_meta(reader.header, window)
        with RasterWriter(out_path, meta, cog=cog) as writer:
            write_decoded(reader, writer, window, store, progress, threads)
    return meta
