"""The .eoz container: a JSON header, independently decodable tiles, and a tile table.

Layout of format version 1 (all integers little-endian)::

    magic b"\\x89EOZ\\r\\n\\x1a\\n" | u16 version | u16 flags | u32 header length N
    N bytes of JSON header (flag bit 0: zlib-deflated JSON) | u32 crc32(those N bytes)
    tile payloads, row-major over the tile grid
    tile table: per tile u64 absolute offset, u32 length, u32 crc32(payload)
    u32 crc32(table)
    trailer: u64 table offset | u32 tile count | b"EOZE"

The table sits at the end so a writer can stream tiles out one at a time (scenes larger
than memory, non-seekable outputs) and a reader can decode a window by reading only the
header, the trailer, the table and the tiles it needs. A header is stored deflated where
that is shorter: a hyperspectral chip's band names (EnMAP's "band 1 (418.24 Nanometers)",
224 of them) took 7 kB, 4 % of its lossless file, and a small chip's plain header (about 360
bytes, a third of it the model's hex pin) was 3 % of a 90 x 80 band's lossless file. Readers
from before the flag read only plain headers (files written before session 20 kept headers
under 1 kB plain). Every byte is
covered by a check (magic, version, known flags, crcs, end magic, offsets against sizes),
so a damaged byte anywhere is reported, and a file cut short anywhere reads as truncated
rather than as a smaller valid file. A damaged tile is reported on its own; the other tiles stay readable.

The parser checks every length against the file size before reading, and raises nothing
but ``ContainerError`` (or a subclass) for any input bytes. A reader also holds a file to
``eoz.limits.DecodeLimits`` (image, bands, tile size, overlap, samples and bytes per tile),
and takes tiles only as the writer lays them out: one after another in row-major order, so
no two table entries share bytes (a table of many entries pointing at one small tile would
otherwise decode to a huge image).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import numbers
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import numpy as np

from eoz.errors import ContainerError, CorruptTileError, InputError, TruncatedFileError
from eoz.limits import DecodeLimits
from eoz.raster import DTYPES, PER_DATASET, compact_crs, expand_crs

MAGIC = b"\x89EOZ\r\n\x1a\n"
END_MAGIC = b"EOZE"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 2**20
MAX_TILE_COUNT = 2**32 - 1  # the trailer stores the count as u32

_PREFIX = struct.Struct("<8sHHI")  # magic, version, flags, header length
HEADER_DEFLATED = 1                # the flag: the header's bytes are zlib-deflated JSON
_CRC = struct.Struct("<I")
_ENTRY = struct.Struct("<QII")  # offset, length, crc32
_TRAILER = struct.Struct("<QI4s")  # table offset, tile count, end magic
_MIN_FILE_SIZE = _PREFIX.size + _CRC.size + _CRC.size + _TRAILER.size

# JSON has no NaN or infinity; a float raster's nodata is often NaN.
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

Source = bytes | bytearray | memoryview | str | os.PathLike | BinaryIO


@dataclass(eq=False)
class Header:
    """Everything, besides the pinned model, needed to decode the tiles of one scene."""

    codec: str
    height: int
    width: int
    bands: list[str]
    dtype: str
    tile_size: int
    model_id: str | None = None
    model_version: str | None = None
    weights_sha256: str | None = None
    codebook_sha256: list[str] = field(default_factory=list)
    normalization: dict = field(default_factory=dict)
    crs: str | None = None
    transform: list[float] | None = None
    nodata: float | None = None
    quality: dict = field(default_factory=dict)
    codec_params: dict = field(default_factory=dict)
    overlap: int = 0   # pixels of context coded around each tile's own area, against seams
    metadata: dict = field(default_factory=dict)   # GDAL's beside the pixels (eoz.raster.gdal_metadata); not
                                                   # written where empty, so files without it keep their bytes

    @property
    def lossless(self) -> bool:
        """The codec recorded that the tiles reproduce the input bit for bit."""
        return self.quality.get("lossless") is True

    @property
    def tile_rows(self) -> int:
        return -(-self.height // self.tile_size)

    @property
    def tile_cols(self) -> int:
        return -(-self.width // self.tile_size)

    @property
    def tile_count(self) -> int:
        return self.tile_rows * self.tile_cols

    def tile_bounds(self, index: int) -> tuple[int, int, int, int]:
        """(row_off, col_off, height, width) of tile ``index``; edge tiles are smaller."""
        _check_index(index, self.tile_count)
        row, col = divmod(index, self.tile_cols)
        row_off, col_off = row * self.tile_size, col * self.tile_size
        return (
            row_off,
            col_off,
            min(self.tile_size, self.height - row_off),
            min(self.tile_size, self.width - col_off),
        )

    def coded_bounds(self, index: int) -> tuple[int, int, int, int]:
        """(row_off, col_off, height, width) of what tile ``index`` codes: its own area plus
        ``overlap`` pixels of its neighbours on each side, within the image."""
        row_off, col_off, h, w = self.tile_bounds(index)
        r0, c0 = max(0, row_off - self.overlap), max(0, col_off - self.overlap)
        r1, c1 = min(self.height, row_off + h + self.overlap), min(self.width, col_off + w + self.overlap)
        return r0, c0, r1 - r0, c1 - c0

    def to_dict(self) -> dict[str, Any]:
        """A deep copy as plain data; non-finite nodata becomes "nan"/"inf"/"-inf" for JSON."""
        d = dataclasses.asdict(self)
        if not d["metadata"]:
            del d["metadata"]
        nodata = d["nodata"]
        if isinstance(nodata, float) and not math.isfinite(nodata):
            d["nodata"] = "nan" if math.isnan(nodata) else ("inf" if nodata > 0 else "-inf")
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Header:
        """Check and normalise a dict as read from JSON; unknown keys are ignored."""
        if not isinstance(d, dict):
            raise ContainerError(f"header must be a JSON object, got {type(d).__name__}")
        header = cls(
            codec=_field(d, "codec", _str),
            height=_field(d, "height", _positive_int),
            width=_field(d, "width", _positive_int),
            bands=_field(d, "bands", _band_names),
            dtype=_field(d, "dtype", _dtype),
            tile_size=_field(d, "tile_size", _positive_int),
            model_id=_field(d, "model_id", _optional(_str), None),
            model_version=_field(d, "model_version", _optional(_str), None),
            weights_sha256=_field(d, "weights_sha256", _optional(_str), None),
            codebook_sha256=_field(d, "codebook_sha256", _str_list, []),
            normalization=_field(d, "normalization", _dict, {}),
            crs=_field(d, "crs", _optional(_str), None),
            transform=_field(d, "transform", _optional(_affine), None),
            nodata=_field(d, "nodata", _optional(_nodata), None),
            quality=_field(d, "quality", _dict, {}),
            codec_params=_field(d, "codec_params", _dict, {}),
            overlap=_field(d, "overlap", _nonnegative_int, 0),
            metadata=_field(d, "metadata", _metadata, {}),
        )
        for key in _PER_BAND & set(header.metadata):
            if len(header.metadata[key]) != len(header.bands):
                raise ContainerError(f"header field 'metadata' has {len(header.metadata[key])} {key} for "
                                     f"{len(header.bands)} bands")
        if header.tile_count > MAX_TILE_COUNT:
            raise ContainerError(
                f"a {header.height}x{header.width} image in {header.tile_size}-pixel tiles has "
                f"{header.tile_count} tiles, more than a container indexes ({MAX_TILE_COUNT})"
            )
        return header

    def __eq__(self, other: object) -> bool:
        # Compare the JSON form so a NaN nodata equals itself after a round trip.
        if not isinstance(other, Header):
            return NotImplemented
        return self.to_dict() == other.to_dict()


@dataclass(frozen=True)
class TileEntry:
    """Where one tile's payload lies in the file, and its checksum."""

    offset: int
    length: int
    crc32: int


class EozWriter:
    """Streams a container to a binary file object; it needs ``write`` only, never ``seek``.

    The file object must write everything it is given (any buffered file does); the writer
    does not close it. Tiles go out as they come, the table and trailer on ``close``.
    """

    def __init__(self, fileobj: BinaryIO, header: Header):
        header_bytes = _encode_header(header)
        flags = 0
        deflated = zlib.compress(header_bytes, 9)
        if len(deflated) < len(header_bytes):
            header_bytes, flags = deflated, HEADER_DEFLATED
        self._file = fileobj
        self._tile_count = header.tile_count
        self._entries: list[TileEntry] = []
        self._pos = 0
        self._closed = False
        self._write(_PREFIX.pack(MAGIC, FORMAT_VERSION, flags, len(header_bytes)))
        self._write(header_bytes)
        self._write(_CRC.pack(zlib.crc32(header_bytes)))

    def write_tile(self, payload: bytes) -> None:
        """Append the next tile in row-major order."""
        if self._closed:
            raise ContainerError("cannot write a tile: the writer is closed")
        if len(self._entries) >= self._tile_count:
            raise ContainerError(
                f"the header declares {self._tile_count} tiles; "
                f"tile {len(self._entries)} is one too many"
            )
        data = memoryview(payload).cast("B")
        if len(data) > 0xFFFFFFFF:
            raise ContainerError(
                f"tile {len(self._entries)} is {len(data)} bytes; a tile holds at most 4 GiB"
            )
        self._entries.append(TileEntry(self._pos, len(data), zlib.crc32(data)))
        self._write(data)

    def close(self) -> None:
        """Write the tile table and trailer; refuse if tiles are missing."""
        if self._closed:
            return
        if len(self._entries) != self._tile_count:
            raise ContainerError(
                f"the header declares {self._tile_count} tiles but only "
                f"{len(self._entries)} were written"
            )
        table_offset = self._pos
        table = b"".join(_ENTRY.pack(e.offset, e.length, e.crc32) for e in self._entries)
        self._write(table)
        self._write(_CRC.pack(zlib.crc32(table)))
        self._write(_TRAILER.pack(table_offset, self._tile_count, END_MAGIC))
        self._closed = True
        if hasattr(self._file, "flush"):
            self._file.flush()

    def __enter__(self) -> EozWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            # No trailer: a half-written file must read as truncated, never as valid.
            self._closed = True

    def _write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._pos += len(data)


class EozReader:
    """Random access to a container's tiles, each read and checked only when asked for.

    ``source`` is bytes-like, a path, or a seekable binary file object (not closed here).
    Opening reads the header, trailer and tile table and checks them against each other,
    against the file size and against ``limits``.
    """

    def __init__(self, source: Source, limits: DecodeLimits = DecodeLimits()):
        self._source = _open_source(source)
        self.limits = limits
        try:
            self.file_size = self._source.size
            self.header, payload_start = _parse_header(self._source)
            limits.check_header(self.header)
            self.entries = _parse_table(self._source, self.header, payload_start, limits)
        except BaseException:
            self._source.close()
            raise

    def read_tile(self, index: int) -> bytes:
        """The payload of tile ``index``; raises CorruptTileError if its crc32 does not match."""
        _check_index(index, len(self.entries))
        entry = self.entries[index]
        data = self._source.read_at(entry.offset, entry.length, f"tile {index}")
        crc = zlib.crc32(data)
        if crc != entry.crc32:
            row, col = divmod(index, self.header.tile_cols)
            raise CorruptTileError(
                index,
                f"tile {index} (row {row}, col {col}) is corrupt: "
                f"crc32 0x{crc:08x} != 0x{entry.crc32:08x} in the tile table",
            )
        return data

    def verify(self) -> list[int]:
        """Indices of the tiles that fail their checksum (or can no longer be read)."""
        bad = []
        for index in range(len(self.entries)):
            try:
                self.read_tile(index)
            except ContainerError:
                bad.append(index)
        return bad

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> EozReader:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def pack(header: Header, tiles: Iterable[bytes]) -> bytes:
    """A whole container in memory."""
    sink = io.BytesIO()
    with EozWriter(sink, header) as writer:
        for tile in tiles:
            writer.write_tile(tile)
    return sink.getvalue()


def read_header(source: Source) -> Header:
    """The header alone; table and trailer are not read, so a partly written file will do.
    Not held to DecodeLimits: it decodes nothing (EozReader, which does, checks them)."""
    src = _open_source(source)
    try:
        return _parse_header(src)[0]
    finally:
        src.close()


def _encode_header(header: Header) -> bytes:
    """The deterministic JSON bytes of a header, after checking it reads back."""
    canonical = Header.from_dict(header.to_dict())
    stored = {**canonical.to_dict(), "crs": compact_crs(canonical.crs)}
    try:
        text = json.dumps(
            stored,
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
            default=_numpy_to_json,
        )
    except (TypeError, ValueError) as exc:
        raise ContainerError(f"header cannot be written as JSON: {exc}") from exc
    data = text.encode("ascii")
    if len(data) > MAX_HEADER_BYTES:
        raise ContainerError(
            f"header is {len(data)} bytes as JSON; readers refuse more than {MAX_HEADER_BYTES}"
        )
    return data


def _parse_header(src: _Source) -> tuple[Header, int]:
    """The header and the offset where tile payloads start."""
    start = src.read_at(0, min(src.size, _PREFIX.size), "file start")
    if not MAGIC.startswith(start[: len(MAGIC)]):
        raise ContainerError(
            f"not an .eoz file (bad magic {start[: len(MAGIC)]!r}, expected {MAGIC!r})"
        )
    if len(start) < _PREFIX.size:
        raise TruncatedFileError(
            f"file is {src.size} bytes; an .eoz file is at least {_MIN_FILE_SIZE} bytes"
        )
    _, version, flags, header_length = _PREFIX.unpack(start)
    if version != FORMAT_VERSION:
        raise ContainerError(
            f"unsupported .eoz format version {version}; this eoz reads version "
            f"{FORMAT_VERSION} (a newer eoz may read it)"
        )
    if flags & ~HEADER_DEFLATED:
        raise ContainerError(f"unknown .eoz flags 0x{flags:04x}; format version 1 defines only "
                             f"0x{HEADER_DEFLATED:04x} (a newer eoz may read it)")
    if header_length > MAX_HEADER_BYTES:
        raise ContainerError(
            f"header length {header_length} bytes exceeds the limit of {MAX_HEADER_BYTES}"
        )
    header_end = _PREFIX.size + header_length
    if header_end + _CRC.size > src.size:
        raise TruncatedFileError(
            f"header of {header_length} bytes needs at least {header_end + _CRC.size} bytes; "
            f"file is {src.size} bytes"
        )
    header_bytes = src.read_at(_PREFIX.size, header_length + _CRC.size, "header")
    (stored_crc,) = _CRC.unpack(header_bytes[-_CRC.size :])
    header_bytes = header_bytes[: -_CRC.size]
    crc = zlib.crc32(header_bytes)
    if crc != stored_crc:
        raise ContainerError(f"header is corrupt: crc32 0x{crc:08x} != stored 0x{stored_crc:08x}")
    if flags & HEADER_DEFLATED:
        header_bytes = _inflate_header(header_bytes)
    try:
        d = json.loads(header_bytes.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ContainerError(f"header is not valid JSON: {exc}") from exc
    if isinstance(d, dict) and isinstance(d.get("crs"), str):
        try:
            d["crs"] = expand_crs(d["crs"])
        except InputError as e:
            raise ContainerError(str(e)) from None
    return Header.from_dict(d), header_end + _CRC.size


def _inflate_header(data: bytes) -> bytes:
    """A deflated header's JSON bytes, never more than MAX_HEADER_BYTES of them (a few bytes
    of deflate can stand for gigabytes)."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_HEADER_BYTES + 1)
    except zlib.error as exc:
        raise ContainerError(f"header is not valid deflate data: {exc}") from None
    if len(text) > MAX_HEADER_BYTES:
        raise ContainerError(f"header inflates to more than the limit of {MAX_HEADER_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ContainerError("header's deflate data is cut short or followed by other bytes")
    return text


def _parse_table(src: _Source, header: Header, payload_start: int, limits: DecodeLimits) -> list[TileEntry]:
    """The tile table, checked against the trailer, the header, the file size and the limits."""
    trailer_start = src.size - _TRAILER.size
    if trailer_start < payload_start + _CRC.size:
        raise TruncatedFileError(
            f"file ends {src.size} bytes in, before the tile table and trailer "
            f"(at least {payload_start + _CRC.size + _TRAILER.size} bytes expected)"
        )
    table_offset, count, end_magic = _TRAILER.unpack(
        src.read_at(trailer_start, _TRAILER.size, "trailer")
    )
    if end_magic != END_MAGIC:
        raise TruncatedFileError(
            f"no end marker {END_MAGIC!r} at the end of the {src.size}-byte file: it is "
            "truncated, still being written, or has bytes appended"
        )
    if count != header.tile_count:
        raise ContainerError(
            f"trailer counts {count} tiles but the header's {header.height}x{header.width} "
            f"image in {header.tile_size}-pixel tiles has {header.tile_count}"
        )
    if table_offset < payload_start:
        raise ContainerError(
            f"tile table offset {table_offset} lies inside the header (payloads start at "
            f"{payload_start})"
        )
    table_length = count * _ENTRY.size
    table_end = table_offset + table_length + _CRC.size
    if table_end > trailer_start:
        raise TruncatedFileError(
            f"tile table of {count} entries at offset {table_offset} needs a file of "
            f"{table_end + _TRAILER.size} bytes; file is {src.size} bytes"
        )
    if table_end < trailer_start:
        raise ContainerError(
            f"{trailer_start - table_end} unaccounted bytes between the tile table and the trailer"
        )
    raw = src.read_at(table_offset, table_length + _CRC.size, "tile table")
    table, (stored_crc,) = raw[:table_length], _CRC.unpack(raw[table_length:])
    crc = zlib.crc32(table)
    if crc != stored_crc:
        raise ContainerError(
            f"tile table is corrupt: crc32 0x{crc:08x} != stored 0x{stored_crc:08x}"
        )
    entries = [TileEntry(*fields) for fields in _ENTRY.iter_unpack(table)]
    end = payload_start
    for index, entry in enumerate(entries):
        if entry.offset < payload_start or entry.offset + entry.length > table_offset:
            raise ContainerError(
                f"tile {index} claims bytes [{entry.offset}, {entry.offset + entry.length}) "
                f"outside the payload area [{payload_start}, {table_offset})"
            )
        if entry.offset != end:
            raise ContainerError(
                f"tile {index} starts at byte {entry.offset}, not where "
                f"{f'tile {index - 1}' if index else 'the header'} ends ({end}): tiles follow "
                "one another in row-major order, none sharing bytes"
            )
        limits.check_entry(index, entry.length)
        end = entry.offset + entry.length
    if end != table_offset:
        raise ContainerError(
            f"{table_offset - end} unaccounted bytes between the last tile and the tile table"
        )
    return entries


class _Source(Protocol):
    size: int

    def read_at(self, offset: int, length: int, what: str) -> bytes: ...

    def close(self) -> None: ...


class _MemorySource:
    def __init__(self, data: bytes | bytearray | memoryview):
        self._view: memoryview | None = memoryview(data).cast("B")
        self.size = len(self._view)

    def read_at(self, offset: int, length: int, what: str) -> bytes:
        if self._view is None:
            raise ValueError("I/O operation on a closed EozReader")
        data = bytes(self._view[offset : offset + length])
        if len(data) != length:
            raise TruncatedFileError(
                f"{what} needs bytes up to {offset + length}; file has {self.size}"
            )
        return data

    def close(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None


class _FileSource:
    def __init__(self, fileobj: BinaryIO, owned: bool):
        self._file = fileobj
        self._owned = owned
        self._closed = False
        fileobj.seek(0, os.SEEK_END)
        self.size = fileobj.tell()

    def read_at(self, offset: int, length: int, what: str) -> bytes:
        if self._closed:
            raise ValueError("I/O operation on a closed EozReader")
        self._file.seek(offset)
        data = self._file.read(length)
        if len(data) != length:
            # Only when the file shrank after it was opened: sizes were checked up front.
            raise TruncatedFileError(
                f"{what} needs bytes up to {offset + length}; the file now ends at "
                f"{offset + len(data)}"
            )
        return data

    def close(self) -> None:
        if not self._closed and self._owned:
            self._file.close()
        self._closed = True


def _open_source(source: Source) -> _Source:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _MemorySource(source)
    if isinstance(source, (str, os.PathLike)):
        return _FileSource(open(source, "rb"), owned=True)
    if hasattr(source, "read") and hasattr(source, "seek"):
        if not source.seekable():
            raise ContainerError(
                "reading an .eoz needs a seekable file object; read a stream into bytes first"
            )
        return _FileSource(source, owned=False)
    raise TypeError(f"cannot read an .eoz from {type(source).__name__}")


def _check_index(index: int, count: int) -> None:
    if not 0 <= index < count:
        raise ContainerError(f"tile index {index} out of range: the container has {count} tiles")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON value")


def _numpy_to_json(value: Any) -> Any:
    """Let codec parameters hold numpy arrays and scalars; they read back as lists and numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


# Field checkers: each returns the normalised value or raises ValueError naming the problem.

_MISSING = object()


def _field(d: dict, name: str, check, default: Any = _MISSING) -> Any:
    if name not in d:
        if default is _MISSING:
            raise ContainerError(f"header field {name!r} is missing")
        return default
    try:
        return check(d[name])
    except ValueError as exc:
        raise ContainerError(f"header field {name!r} {exc}, got {d[name]!r:.200}") from None


def _optional(check):
    return lambda value: None if value is None else check(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError("must be a positive integer")
    return int(value)


def _nonnegative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError("must be a non-negative integer")
    return int(value)


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return list(value)


def _dtype(value: Any) -> str:
    if value not in DTYPES:
        raise ValueError(f"must be one of {list(DTYPES)}")
    return value


def _band_names(value: Any) -> list[str]:
    names = _str_list(value)
    if not names:
        raise ValueError("must name at least one band")
    return names


def _dict(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError("must be an object")
    return value


def _real(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError("must be a number")
    try:
        return float(value)
    except OverflowError:
        raise ValueError("is out of range for a float") from None


def _finite(value: Any) -> float:
    number = _real(value)
    if not math.isfinite(number):
        raise ValueError("must hold finite numbers")
    return number


def _tags(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("must map tag names to strings")
    return dict(value)


def _list_of(check):
    def checked(value: Any) -> list:
        if not isinstance(value, list):
            raise ValueError("must hold lists per band")
        return [check(v) for v in value]
    return checked


def _gcp(value: Any) -> list[float]:
    if not isinstance(value, list) or len(value) != 5:
        raise ValueError("must hold GCPs as [row, col, x, y, z]")
    return [_finite(v) for v in value]


def _rpcs(value: Any) -> dict[str, str]:
    from rasterio.rpc import RPC

    tags = _tags(value)
    try:
        RPC.from_gdal(tags)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"must hold GDAL's RPC tags ({type(e).__name__}: {e})") from None
    return tags


def _colour_entry(value: Any) -> list[int]:
    if not (isinstance(value, list) and len(value) == 5 and all(type(v) is int for v in value)
            and 0 <= value[0] < 2 ** 16 and all(0 <= v < 256 for v in value[1:])):
        raise ValueError("must hold colour map entries as [value, r, g, b, a]: a value of 0-65535, 0-255 each")
    return value


def _nbits(value: Any) -> int:
    if type(value) is not int or not 1 <= value <= 64:
        raise ValueError("must give the bits a sample is stored in, 1 to 64")
    return value


def _mask_kind(value: Any) -> str:
    if value != PER_DATASET:
        raise ValueError(f'must name the mask "{PER_DATASET}"')
    return value


def _domains(value: Any) -> dict[str, dict[str, str]]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise ValueError("must map metadata domain names to their tags")
    return {name: _tags(tags) for name, tags in value.items()}


_METADATA = {"tags": _tags, "band_tags": _list_of(_tags), "domains": _domains, "band_domains": _list_of(_domains),
             "scales": _list_of(_finite),
             "offsets": _list_of(_finite), "units": _list_of(_str), "gcps": _list_of(_gcp), "gcp_crs": _str,
             "rpcs": _rpcs, "colorinterp": _list_of(_str), "colormap": _list_of(_colour_entry),
             "mask": _mask_kind, "nbits": _nbits}
_PER_BAND = {"band_tags", "band_domains", "scales", "offsets", "units", "colorinterp"}


def _metadata(value: Any) -> dict:
    """GDAL's metadata (``eoz.raster.gdal_metadata``); keys a later build may add are ignored."""
    return {key: check(value[key]) for key, check in _METADATA.items() if key in _dict(value)}


def _affine(value: Any) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 6:
        raise ValueError("must be a list of 6 affine coefficients (a, b, c, d, e, f)")
    coefficients = [_real(v) for v in value]
    if not all(math.isfinite(c) for c in coefficients):
        raise ValueError("must hold 6 finite numbers")
    return coefficients


def _nodata(value: Any) -> float:
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    try:
        return _real(value)
    except ValueError:
        raise ValueError('must be a number, "nan", "inf" or "-inf"') from None
