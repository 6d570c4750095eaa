"""The .eoz container: round trips, streaming, partial reads, and every kind of damage."""

from __future__ import annotations

import io
import json
import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eoz.container import (
    FORMAT_VERSION,
    MAGIC,
    EozReader,
    EozWriter,
    Header,
    TileEntry,
    pack,
    read_header,
)
from eoz.errors import ContainerError, CorruptTileError, TruncatedFileError


def make_header(**overrides) -> Header:
    fields = dict(
        codec="vqvae-fpn",
        height=300,
        width=520,
        bands=["B02", "B03", "B04", "B08"],
        dtype="uint16",
        tile_size=256,  # 2 x 3 tiles, the edge ones smaller
        model_id="s2-vqvae",
        model_version="1.2.0",
        weights_sha256="ab" * 32,
        codebook_sha256=["cd" * 32, "ef" * 32],
        normalization={"mean": [0.1, 0.2, 0.3, 0.4], "std": [1.0, 1.0, 1.0, 2.0]},
        crs='PROJCS["WGS 84 / UTM zone 32N",GEOGCS["WGS 84"]]',
        transform=[10.0, 0.0, 399960.0, 0.0, -10.0, 5200020.0],
        nodata=0.0,
        quality={"target_psnr": 42.5, "lambdas": [0.01, 0.02, 0.01, 0.03, 0.02, 0.01]},
        codec_params={"klt": [[1.0, 0.0], [0.0, 1.0]], "levels": 2},
    )
    fields.update(overrides)
    return Header(**fields)


TILES = [b"first tile", b"", b"\x00" * 1000, b"x", bytes(range(256)), b"last"]
CHIP = {"normalization": {}, "height": 32, "width": 48, "tile_size": 16}   # a hyperspectral chip: 2 x 3 tiles


def layout(data: bytes) -> dict[str, int]:
    """Offsets of the container's parts, worked out from the bytes alone."""
    (header_length,) = struct.unpack_from("<I", data, 12)
    table_offset, count, _ = struct.unpack_from("<QI4s", data, len(data) - 16)
    return {
        "header": 16,
        "header_crc": 16 + header_length,
        "payloads": 20 + header_length,
        "table": table_offset,
        "table_crc": table_offset + 16 * count,
        "trailer": len(data) - 16,
    }


class CountingFile(io.BytesIO):
    """Records how many bytes are read, to show that a reader reads only what it needs."""

    bytes_read = 0

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read += len(data)
        return data


class WriteOnlyStream(io.RawIOBase):
    """A pipe-like output: no seek, no tell."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def writable(self):
        return True

    def write(self, data):
        self.chunks.append(bytes(data))
        return len(data)


def read_everything(source) -> tuple[Header, list[bytes]]:
    with EozReader(source) as reader:
        return reader.header, [reader.read_tile(i) for i in range(len(reader.entries))]


# --- header and tile grid ----------------------------------------------------------------


@pytest.mark.parametrize(
    "height, width, tile_size, rows, cols",
    [(1, 1, 256, 1, 1), (121, 999, 256, 1, 4), (512, 512, 256, 2, 2), (513, 257, 256, 3, 2)],
)
def test_tile_grid(height, width, tile_size, rows, cols):
    header = make_header(height=height, width=width, tile_size=tile_size)
    assert (header.tile_rows, header.tile_cols, header.tile_count) == (rows, cols, rows * cols)
    covered = np.zeros((height, width), dtype=int)
    for index in range(header.tile_count):
        r, c, h, w = header.tile_bounds(index)
        assert 0 < h <= tile_size and 0 < w <= tile_size
        covered[r : r + h, c : c + w] += 1
    assert (covered == 1).all()


def test_tile_bounds_of_edge_tiles():
    header = make_header(height=121, width=999, tile_size=256)
    assert header.tile_bounds(0) == (0, 0, 121, 256)
    assert header.tile_bounds(3) == (0, 768, 121, 231)
    assert make_header(height=1, width=1).tile_bounds(0) == (0, 0, 1, 1)
    with pytest.raises(ContainerError, match="out of range"):
        header.tile_bounds(4)
    with pytest.raises(ContainerError, match="out of range"):
        header.tile_bounds(-1)


def test_header_dict_round_trip_with_nan_nodata():
    header = make_header(dtype="float32", nodata=math.nan)
    d = header.to_dict()
    assert d["nodata"] == "nan"
    json.dumps(d, allow_nan=False)  # JSON-ready as is
    back = Header.from_dict(d)
    assert math.isnan(back.nodata)
    assert back == header


@pytest.mark.parametrize("nodata", [math.inf, -math.inf, -9999.0, None])
def test_header_dict_round_trip_other_nodata(nodata):
    header = make_header(dtype="float32", nodata=nodata)
    assert Header.from_dict(json.loads(json.dumps(header.to_dict()))) == header


def test_from_dict_ignores_unknown_keys_and_fills_defaults():
    d = {
        "codec": "jpeg2000",
        "height": 10,
        "width": 20,
        "bands": ["red"],
        "dtype": "uint8",
        "tile_size": 8,
        "added_in_a_later_minor_version": {"x": 1},
    }
    header = Header.from_dict(d)
    assert header.codec == "jpeg2000" and header.tile_count == 6
    assert header.model_id is None and header.codebook_sha256 == [] and header.quality == {}


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("codec", None, "'codec' must be a string"),
        ("height", "300", "'height' must be a positive integer"),
        ("height", True, "'height' must be a positive integer"),
        ("width", 0, "'width' must be a positive integer"),
        ("tile_size", -256, "'tile_size' must be a positive integer"),
        ("bands", "B02", "'bands' must be a list of strings"),
        ("bands", [], "'bands' must name at least one band"),
        ("codebook_sha256", [1], "'codebook_sha256' must be a list of strings"),
        ("transform", [1.0, 2.0], "'transform' must be a list of 6"),
        ("transform", [1, 2, 3, 4, 5, "6"], "'transform' must be a number"),
        ("nodata", "missing", "'nodata' must be a number"),
        ("quality", [], "'quality' must be an object"),
        ("dtype", "complex64", "'dtype' must be one of"),
        ("dtype", ["uint16"], "'dtype' must be one of"),
        ("metadata", [], "'metadata' must be an object"),
        ("metadata", {"tags": {"DATE": 2017}}, "'metadata' must map tag names to strings"),
        ("metadata", {"band_tags": {"B02": {}}}, "'metadata' must hold lists per band"),
        ("metadata", {"scales": [1, 1, 1, "x"]}, "'metadata' must be a number"),
        ("metadata", {"offsets": [0, 0, 0, 1e400]}, "'metadata' must be a number|'metadata' must hold finite"),
        ("metadata", {"units": ["m"]}, "'metadata' has 1 units for 4 bands"),
        ("metadata", {"gcps": [[0, 0, 10, 45]]}, r"'metadata' must hold GCPs as \[row, col, x, y, z\]"),
        ("metadata", {"gcps": [[0, 0, 10, 45, None]]}, "'metadata' must be a number"),
        ("metadata", {"rpcs": {"LINE_OFF": "24"}}, "'metadata' must hold GDAL's RPC tags"),
        ("metadata", {"colorinterp": ["red", "green", "blue", 4]}, "'metadata' must be a string"),
        ("metadata", {"colorinterp": ["red", "green", "blue"]}, "'metadata' has 3 colorinterp for 4 bands"),
        ("metadata", {"colormap": [[1, 255, 0, 0]]}, r"'metadata' must hold colour map entries as \[value, r"),
        ("metadata", {"colormap": [[1, 256, 0, 0, 255]]}, "'metadata' must hold colour map entries"),
        ("metadata", {"colormap": [[1, True, 0, 0, 255]]}, "'metadata' must hold colour map entries"),
        ("metadata", {"nbits": 0}, "'metadata' must give the bits a sample is stored in"),
        ("metadata", {"nbits": 12.0}, "'metadata' must give the bits a sample is stored in"),
        ("metadata", {"domains": {"IMAGERY": {"CLOUDCOVER": 3.5}}}, "'metadata' must map tag names to strings"),
        ("metadata", {"domains": {"": {"A": "1"}}}, "'metadata' must map metadata domain names to their tags"),
        ("metadata", {"band_domains": [{"S": {"W": "560"}}]}, "'metadata' has 1 band_domains for 4 bands"),
    ],
)
def test_from_dict_names_ill_typed_field(key, value, message):
    d = make_header().to_dict()
    d[key] = value
    with pytest.raises(ContainerError, match=message):
        Header.from_dict(d)


METADATA = {"tags": {"ACQUISITION_TIME": "2017-06-17T11:33:21Z", "AREA_OR_POINT": "Point"},
            "band_tags": [{}, {"WAVELENGTH_NM": "560"}, {}, {}], "scales": [1e-4, 1e-4, 2e-4, 1.0],
            "offsets": [-0.1, -0.1, 0.0, 0.0], "units": ["reflectance", "", "", ""],
            "colorinterp": ["blue", "green", "red", "undefined"], "colormap": [[3, 250, 230, 160, 255]],
            "domains": {"IMAGERY": {"CLOUDCOVER": "3.5"}}, "band_domains": [{}, {}, {"SPECTRAL": {"W": "665"}}, {}]}


def test_gdal_metadata_reads_back_and_is_not_written_where_there_is_none():
    """Files without metadata keep their bytes (and builds before it read them); keys of a later
    build inside it are ignored, as the header's own."""
    assert read_header(pack(make_header(metadata=METADATA), TILES)).metadata == METADATA
    assert "metadata" not in make_header().to_dict()
    assert pack(make_header(metadata={}), TILES) == pack(make_header(), TILES)
    later = {**make_header(metadata=METADATA).to_dict()}
    later["metadata"] = {**METADATA, "rpc": {"LINE_OFF": "1"}}
    assert Header.from_dict(later).metadata == METADATA


def test_from_dict_names_missing_field():
    d = make_header().to_dict()
    del d["dtype"]
    with pytest.raises(ContainerError, match="'dtype' is missing"):
        Header.from_dict(d)
    with pytest.raises(ContainerError, match="must be a JSON object"):
        Header.from_dict([1, 2])


def test_from_dict_refuses_more_tiles_than_a_table_holds():
    with pytest.raises(ContainerError, match="more than a container indexes"):
        Header.from_dict(make_header(height=100_000, width=100_000, tile_size=1).to_dict())


# --- writing and reading -----------------------------------------------------------------


def test_round_trip_keeps_every_header_field_and_tile():
    header = make_header(dtype="float32", nodata=math.nan)
    data = pack(header, TILES)
    back, tiles = read_everything(data)
    assert back == header
    assert math.isnan(back.nodata)
    assert back.crs == header.crs and back.transform == header.transform
    assert back.codec_params == header.codec_params
    assert tiles == TILES
    assert read_header(data) == header


def test_bytes_are_deterministic_and_canonical():
    assert pack(make_header(), TILES) == pack(make_header(), TILES)
    # Integers where floats are expected are normalised, so they give the same bytes.
    assert pack(make_header(transform=[10, 0, 399960, 0, -10, 5200020], nodata=0), TILES) == pack(
        make_header(), TILES
    )


def test_header_is_sorted_compact_json():
    data = pack(make_header(), TILES)
    (flags, header_length) = struct.unpack_from("<HI", data, 10)
    stored = data[16 : 16 + header_length]
    text = (zlib.decompress(stored) if flags else stored).decode("utf-8")
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_fixed_layout():
    data = pack(make_header(), TILES)
    assert data[:8] == MAGIC
    assert struct.unpack_from("<HH", data, 8) == (FORMAT_VERSION, 1)   # a deflated header
    assert data[-4:] == b"EOZE"
    parts = layout(data)
    header_bytes = data[parts["header"] : parts["header_crc"]]
    assert struct.unpack_from("<I", data, parts["header_crc"])[0] == zlib.crc32(header_bytes)
    with EozReader(data) as reader:
        assert reader.file_size == len(data)
        offset = parts["payloads"]
        for entry, tile in zip(reader.entries, TILES):
            assert entry == TileEntry(offset, len(tile), zlib.crc32(tile))
            offset += len(tile)
        assert offset == parts["table"]


def test_numpy_values_in_header_are_written_as_plain_json():
    klt = np.eye(3, dtype=np.float32)
    header = make_header(height=np.int64(300), codec_params={"klt": klt, "scale": np.float64(2.5)})
    back = read_header(pack(header, TILES))
    assert back.height == 300
    assert back.codec_params == {"klt": klt.tolist(), "scale": 2.5}


def test_writer_refuses_header_that_would_not_read_back():
    with pytest.raises(ContainerError, match="'tile_size' must be a positive integer"):
        EozWriter(io.BytesIO(), make_header(tile_size=0))
    with pytest.raises(ContainerError, match="cannot be written as JSON"):
        EozWriter(io.BytesIO(), make_header(quality={"target": math.nan}))
    with pytest.raises(ContainerError, match="cannot be written as JSON"):
        EozWriter(io.BytesIO(), make_header(codec_params={"f": object()}))


def test_streaming_writer_needs_no_seek():
    stream = WriteOnlyStream()
    with EozWriter(stream, make_header()) as writer:
        for tile in TILES:
            writer.write_tile(tile)
    assert b"".join(stream.chunks) == pack(make_header(), TILES)


def test_writer_accepts_bytes_like_payloads():
    tiles = [bytearray(b"ab"), memoryview(b"cd"), np.arange(3, dtype=np.uint16), b"", b"e", b"f"]
    _, back = read_everything(pack(make_header(), tiles))
    assert back[2] == np.arange(3, dtype=np.uint16).tobytes()
    assert back[:2] == [b"ab", b"cd"]


def test_read_from_path_bytes_and_file_object(tmp_path):
    data = pack(make_header(), TILES)
    path = tmp_path / "scene.eoz"
    path.write_bytes(data)
    for source in (data, bytearray(data), memoryview(data), path, str(path)):
        assert read_everything(source)[1] == TILES
    with open(path, "rb") as f:
        assert read_everything(f)[1] == TILES
        assert not f.closed  # the caller's file stays the caller's
    assert read_header(path) == make_header()


def test_reader_refuses_non_seekable_stream_and_odd_sources():
    with pytest.raises(ContainerError, match="seekable"):
        EozReader(WriteOnlyStream())
    with pytest.raises(TypeError):
        EozReader(42)


def test_read_tile_reads_only_that_tile():
    data = pack(make_header(), TILES)
    parts = layout(data)
    f = CountingFile(data)
    with EozReader(f) as reader:
        opened = f.bytes_read
        # header (prefix, JSON, crc) + trailer + table and its crc; no payload byte
        assert opened == parts["payloads"] + 16 + (parts["trailer"] - parts["table"])
        assert reader.read_tile(4) == TILES[4]
        assert f.bytes_read - opened == len(TILES[4])


def test_read_header_reads_only_the_header():
    data = pack(make_header(), TILES)
    f = CountingFile(data)
    assert read_header(f) == make_header()
    assert f.bytes_read == layout(data)["payloads"]


def test_read_header_of_a_file_still_being_written():
    stream = io.BytesIO()
    writer = EozWriter(stream, make_header())
    writer.write_tile(b"one")
    assert read_header(stream.getvalue()) == make_header()


def test_read_tile_index_out_of_range():
    with EozReader(pack(make_header(), TILES)) as reader:
        with pytest.raises(ContainerError, match="tile index 6 out of range: the container has 6"):
            reader.read_tile(6)
        with pytest.raises(ContainerError, match="out of range"):
            reader.read_tile(-1)


def test_closed_reader_refuses_reads(tmp_path):
    path = tmp_path / "scene.eoz"
    path.write_bytes(pack(make_header(), TILES))
    for source in (path.read_bytes(), path):
        reader = EozReader(source)
        reader.close()
        with pytest.raises(ValueError, match="closed"):
            reader.read_tile(0)


# --- writer misuse -----------------------------------------------------------------------


def test_writer_closed_early_refuses_and_leaves_a_truncated_file():
    stream = io.BytesIO()
    with pytest.raises(ContainerError, match="declares 6 tiles but only 2 were written"):
        with EozWriter(stream, make_header()) as writer:
            writer.write_tile(b"a")
            writer.write_tile(b"b")
    with pytest.raises(TruncatedFileError):
        EozReader(stream.getvalue())


def test_writer_refuses_too_many_tiles():
    writer = EozWriter(io.BytesIO(), make_header())
    for tile in TILES:
        writer.write_tile(tile)
    with pytest.raises(ContainerError, match="declares 6 tiles; tile 6 is one too many"):
        writer.write_tile(b"extra")
    writer.close()
    writer.close()  # closing twice is harmless
    with pytest.raises(ContainerError, match="closed"):
        writer.write_tile(b"late")


@pytest.mark.parametrize("tiles_before_error", [0, 3, len(TILES)])
def test_exception_inside_writer_leaves_a_truncated_file(tiles_before_error):
    stream = io.BytesIO()
    with pytest.raises(RuntimeError, match="encoder crashed"):
        with EozWriter(stream, make_header()) as writer:
            for tile in TILES[:tiles_before_error]:
                writer.write_tile(tile)
            raise RuntimeError("encoder crashed")
    with pytest.raises(TruncatedFileError):
        EozReader(stream.getvalue())
    assert read_header(stream.getvalue()) == make_header()


# --- damage ------------------------------------------------------------------------------


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x40]) + data[offset + 1 :]


def test_bad_magic():
    data = pack(make_header(), TILES)
    with pytest.raises(ContainerError, match="not an .eoz file \\(bad magic"):
        EozReader(b"II*\x00" + data[4:])  # a TIFF
    with pytest.raises(ContainerError, match="bad magic"):
        read_header(b"GIF89a")
    with pytest.raises(ContainerError, match="bad magic"):
        EozReader(b"PK")  # shorter than the magic, and not a start of it


def test_future_version_names_both_versions():
    data = bytearray(pack(make_header(), TILES))
    struct.pack_into("<H", data, 8, 2)
    with pytest.raises(ContainerError, match="version 2.*reads version 1"):
        EozReader(bytes(data))


def test_unknown_flags_are_refused():
    data = bytearray(pack(make_header(), TILES))
    struct.pack_into("<H", data, 10, 4)
    with pytest.raises(ContainerError, match="flags 0x0004; format version 1 defines only 0x0001"):
        EozReader(bytes(data))


ENMAP_NAMES = [f"band {i} ({400 + 5.631 * i:.3f} Nanometers)" for i in range(1, 225)]   # as EnMAP's GeoTIFFs


def _with_header(data: bytes, header_bytes: bytes, flags: int) -> bytes:
    """data with its header replaced (crc and offsets made right): a crafted file."""
    parts = layout(data)
    body = data[parts["payloads"]:parts["table"]]
    table = data[parts["table"]:parts["trailer"]]
    start = 20 + len(header_bytes)
    shift = start - parts["payloads"]
    offsets = [struct.unpack_from("<QII", table, 16 * i) for i in range((len(table) - 4) // 16)]
    entries = b"".join(struct.pack("<QII", o + shift, n, c) for o, n, c in offsets)
    trailer = struct.pack("<QI4s", parts["table"] + shift, len(offsets), b"EOZE")
    return (MAGIC + struct.pack("<HHI", FORMAT_VERSION, flags, len(header_bytes)) + header_bytes
            + struct.pack("<I", zlib.crc32(header_bytes)) + body + entries + struct.pack("<I", zlib.crc32(entries))
            + trailer)


def test_a_header_is_stored_deflated_where_that_is_shorter_and_reads_back():
    """224 band names with their wavelengths: 7 kB of JSON, stored in a quarter of that; a
    one-band chip's header, about a third shorter."""
    header = make_header(**{**CHIP, "bands": ENMAP_NAMES})
    data = pack(header, TILES)
    assert struct.unpack_from("<H", data, 10) == (1,)
    (stored,) = struct.unpack_from("<I", data, 12)
    plain = len(json.dumps(header.to_dict()))
    assert plain > 6000 and stored < plain / 3
    with EozReader(data) as reader:
        assert reader.header == header
        assert [reader.read_tile(i) for i in range(len(TILES))] == TILES
    header = make_header()
    data = pack(header, TILES)
    assert struct.unpack_from("<H", data, 10) == (1,)
    assert struct.unpack_from("<I", data, 12)[0] < 0.8 * len(json.dumps(header.to_dict()))
    with EozReader(data) as reader:
        assert reader.header == header


@pytest.mark.parametrize("header_bytes, message", [
    (b"not deflate at all", "not valid deflate data"),
    (zlib.compress(b'{"codec":')[:-6], "cut short"),
    (zlib.compress(b"{}") + b"extra", "followed by other bytes"),
])
def test_a_bad_deflated_header_is_a_container_error(header_bytes, message):
    data = _with_header(pack(make_header(**{**CHIP, "bands": ENMAP_NAMES}), TILES), header_bytes, 1)
    with pytest.raises(ContainerError, match=message):
        EozReader(data)


def test_a_deflated_header_that_inflates_past_the_limit_is_refused(monkeypatch):
    """A few kB of deflate can stand for gigabytes: inflating stops at the limit."""
    import eoz.container as container

    monkeypatch.setattr(container, "MAX_HEADER_BYTES", 100_000)
    bomb = zlib.compress(b" " * 1_000_000, 9)
    data = _with_header(pack(make_header(**{**CHIP, "bands": ENMAP_NAMES}), TILES), bomb, 1)
    with pytest.raises(ContainerError, match="inflates to more than the limit of 100000"):
        EozReader(data)


def test_oversized_header_length_is_refused_before_reading():
    data = bytearray(pack(make_header(), TILES))
    struct.pack_into("<I", data, 12, 2**32 - 1)
    with pytest.raises(ContainerError, match="exceeds the limit"):
        EozReader(bytes(data))


@pytest.mark.parametrize("source", [b"", MAGIC[:3], MAGIC, MAGIC + b"\x01\x00"])
def test_short_files_are_truncated(source):
    with pytest.raises(TruncatedFileError, match="at least 40 bytes"):
        EozReader(source)


def test_every_cut_reads_as_truncated_or_damaged():
    data = pack(make_header(height=40, width=40, tile_size=16), [b"t%d" % i for i in range(9)])
    for cut in range(len(data)):
        with pytest.raises(ContainerError):
            EozReader(data[:cut])


def test_cut_messages_give_expected_and_actual_sizes():
    data = pack(make_header(), TILES)
    parts = layout(data)
    expected = f"at least {parts['payloads']} bytes; file is 100 bytes"
    with pytest.raises(TruncatedFileError, match=expected):
        EozReader(data[:100])
    with pytest.raises(TruncatedFileError, match="no end marker"):
        EozReader(data[:-1])
    with pytest.raises(TruncatedFileError, match="no end marker"):
        EozReader(data + b"\x00")


def test_flipped_byte_in_header():
    data = pack(make_header(), TILES)
    with pytest.raises(ContainerError, match="header is corrupt: crc32"):
        EozReader(flip(data, layout(data)["header"] + 5))
    with pytest.raises(ContainerError, match="header is corrupt"):
        read_header(flip(data, layout(data)["header_crc"]))


def test_flipped_byte_in_table():
    data = pack(make_header(), TILES)
    with pytest.raises(ContainerError, match="tile table is corrupt: crc32"):
        EozReader(flip(data, layout(data)["table"] + 3))
    with pytest.raises(ContainerError, match="tile table is corrupt"):
        EozReader(flip(data, layout(data)["table_crc"]))


def with_table_offset(data: bytes, table_offset: int) -> bytes:
    damaged = bytearray(data)
    struct.pack_into("<Q", damaged, layout(data)["trailer"], table_offset)
    return bytes(damaged)


def test_damaged_trailer():
    data = pack(make_header(), TILES)
    parts = layout(data)
    with pytest.raises(TruncatedFileError, match="needs a file of"):
        EozReader(with_table_offset(data, parts["table"] + 16))
    with pytest.raises(TruncatedFileError, match="needs a file of"):
        EozReader(with_table_offset(data, 2**64 - 1))
    with pytest.raises(ContainerError, match="lies inside the header"):
        EozReader(with_table_offset(data, 3))
    with pytest.raises(ContainerError, match="1 unaccounted bytes"):
        EozReader(with_table_offset(data, parts["table"] - 1))
    with pytest.raises(ContainerError, match="trailer counts 16390 tiles but .* has 6"):
        EozReader(flip(data, parts["trailer"] + 9))
    with pytest.raises(TruncatedFileError, match="no end marker"):
        EozReader(flip(data, parts["trailer"] + 12))


def test_table_entry_outside_payload_area_is_refused():
    data = bytearray(pack(make_header(), TILES))
    parts = layout(bytes(data))
    entry = parts["table"] + 16 * 5
    struct.pack_into("<QII", data, entry, parts["table"] - 2, 4, zlib.crc32(b"last"))
    table = bytes(data[parts["table"] : parts["table_crc"]])
    struct.pack_into("<I", data, parts["table_crc"], zlib.crc32(table))
    with pytest.raises(ContainerError, match="tile 5 claims bytes .* outside the payload area"):
        EozReader(bytes(data))


def test_corrupt_tile_is_reported_alone():
    header = make_header()
    data = pack(header, TILES)
    damaged = flip(data, layout(data)["payloads"] + len(TILES[0]) + 10)  # inside tile 2
    with EozReader(damaged) as reader:
        message = r"tile 2 \(row 0, col 2\) is corrupt: crc32 0x[0-9a-f]{8} != 0x"
        with pytest.raises(CorruptTileError, match=message) as info:
            reader.read_tile(2)
        assert info.value.index == 2
        assert [reader.read_tile(i) for i in (0, 1, 3, 4, 5)] == [TILES[i] for i in (0, 1, 3, 4, 5)]
        assert reader.verify() == [2]
    with EozReader(data) as reader:
        assert reader.verify() == []


def test_every_single_byte_flip_is_detected():
    data = pack(make_header(height=40, width=40, tile_size=16), [b"t%d" % i for i in range(9)])
    for offset in range(len(data)):
        try:
            with EozReader(flip(data, offset)) as reader:
                assert reader.verify(), f"flip at byte {offset} went unnoticed"
        except ContainerError:
            pass


# --- fuzzing -----------------------------------------------------------------------------

SMALL = pack(
    make_header(height=40, width=40, tile_size=16), [b"tile-%d" % i * i for i in range(9)]
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def open_and_read_all(data: bytes) -> None:
    """Only success or a ContainerError may come out, whatever the bytes."""
    try:
        with EozReader(data) as reader:
            reader.verify()
            for index in range(len(reader.entries)):
                try:
                    reader.read_tile(index)
                except CorruptTileError as exc:
                    assert exc.index == index
    except ContainerError:
        pass
    try:
        read_header(data)
    except ContainerError:
        pass


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(data):
    open_and_read_all(data)


@FUZZ
@given(st.binary(max_size=256))
def test_fuzz_bytes_after_a_valid_prefix(tail):
    open_and_read_all(MAGIC + struct.pack("<HHI", 1, 0, len(tail) // 2) + tail)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(SMALL) - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, len(SMALL)),
)
def test_fuzz_mutated_and_truncated_files(mutations, length):
    data = bytearray(SMALL)
    for offset, value in mutations:
        data[offset] = value
    open_and_read_all(bytes(data[:length]))


def with_header_bytes(header_bytes: bytes) -> bytes:
    """SMALL's tail behind another header that passes its crc, to reach the JSON checks."""
    tail = SMALL[layout(SMALL)["payloads"] :]
    prefix = MAGIC + struct.pack("<HHI", 1, 0, len(header_bytes))
    return prefix + header_bytes + struct.pack("<I", zlib.crc32(header_bytes)) + tail


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=8,
)


@FUZZ
@given(st.sampled_from(sorted({*make_header().to_dict(), "metadata"})), JSON_VALUES)
def test_fuzz_header_fields(key, value):
    d = make_header().to_dict()
    d[key] = value
    open_and_read_all(with_header_bytes(json.dumps(d).encode()))


@FUZZ
@given(st.sampled_from(["tags", "band_tags", "scales", "offsets", "units"]), JSON_VALUES)
def test_fuzz_metadata_fields(key, value):
    d = make_header(metadata=METADATA).to_dict()
    d["metadata"][key] = value
    open_and_read_all(with_header_bytes(json.dumps(d).encode()))


@FUZZ
@given(st.binary(max_size=128))
def test_fuzz_header_bytes_with_valid_crc(header_bytes):
    open_and_read_all(with_header_bytes(header_bytes))


@pytest.mark.parametrize(
    "text", ["[" * 100_000, '{"height": 1' + "0" * 5000 + "}", '{"nodata": NaN}', "\xff"]
)
def test_hostile_header_json_is_a_container_error(text):
    with pytest.raises(ContainerError, match="header is not valid JSON"):
        read_header(with_header_bytes(text.encode("latin-1")))


def test_tiles_must_follow_one_another_in_the_table():
    """Entries sharing bytes (a table pointing many tiles at one) or leaving gaps are refused."""
    data = bytearray(pack(make_header(), TILES))
    parts = layout(bytes(data))
    third = parts["table"] + 16 * 3
    struct.pack_into("<QII", data, third, parts["payloads"], len(TILES[0]), zlib.crc32(TILES[0]))
    table = bytes(data[parts["table"] : parts["table_crc"]])
    struct.pack_into("<I", data, parts["table_crc"], zlib.crc32(table))
    with pytest.raises(ContainerError, match=r"tile 3 starts at byte \d+, not where tile 2 ends"):
        EozReader(bytes(data))
