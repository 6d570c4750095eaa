"""Hostile .eoz files (issue 12, items 1-4): each is built with the container's own writer plus
byte surgery, and each must be refused as a container error before it costs memory."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib

import numpy as np
import pytest

from eoz.codecs import JPEG2000Codec
from eoz.codecs.base import decode_tile_payload
from eoz.container import EozReader, Header, pack
from eoz.errors import ContainerError, InputError
from eoz.limits import DecodeLimitError, DecodeLimits, inflate
from eoz.raster import RasterMeta
from eoz.scene import compress_array, decompress_array, header_meta

RNG = np.random.default_rng(12)


def scene(height=256, width=256, bands=4, nodata=None) -> tuple[np.ndarray, RasterMeta]:
    """Smooth uint16 bands (JPEG 2000 codes them to a few KB), with a nodata corner if asked."""
    y, x = np.mgrid[:height, :width]
    array = np.stack([(1000 + 300 * b + 5 * y + 3 * x + RNG.integers(0, 8, (height, width)))
                      for b in range(bands)]).astype(np.uint16)
    if nodata is not None:
        array[:, :17, :23] = nodata
    meta = RasterMeta(height=height, width=width, count=bands, dtype="uint16",
                      band_names=[f"b{b}" for b in range(bands)], crs=None, transform=None, nodata=nodata)
    return array, meta


def j2k_file(tile_size=256, **kw) -> bytes:
    array, meta = scene(**kw)
    return compress_array(array, meta, JPEG2000Codec(lossless=True), tile_size)


def unpack(data: bytes) -> tuple[Header, list[bytes]]:
    with EozReader(data) as reader:
        return reader.header, [reader.read_tile(i) for i in range(len(reader.entries))]


def repack(data: bytes, edit_tile=None, **header_changes) -> bytes:
    """The file rewritten by our writer: header fields changed, each tile passed through edit_tile."""
    header, tiles = unpack(data)
    header = Header.from_dict({**header.to_dict(), **header_changes})
    return pack(header, [edit_tile(t) if edit_tile else t for t in tiles])


def j2k_parts(tile: bytes) -> tuple[bytes, dict, bytes]:
    """(flag and mask prefix, params, codestream) of an unmasked JPEG 2000 tile payload."""
    (n,) = struct.unpack_from("<I", tile, 1)
    return tile[:1], json.loads(tile[5:5 + n]), tile[5 + n:]


def j2k_tile(prefix: bytes, params: dict, codestream: bytes) -> bytes:
    head = json.dumps(params).encode()
    return prefix + struct.pack("<I", len(head)) + head + codestream


def with_siz(codestream: bytes, width: int, height: int) -> bytes:
    """The codestream with its SIZ marker's image and tile size changed (one tile, as ours)."""
    assert codestream[:4] == b"\xff\x4f\xff\x51"
    out = bytearray(codestream)
    struct.pack_into(">II", out, 8, width, height)        # Xsiz, Ysiz
    struct.pack_into(">II", out, 24, width, height)       # XTsiz, YTsiz
    return bytes(out)


# --- item 1: a JPEG 2000 codestream larger than its tile -----------------------------------

def test_codestream_declaring_60000_pixels_square_is_refused_before_openjpeg_runs(tmp_path):
    """Run in a child whose address space is capped 1.5 GB above what it holds after imports:
    OpenJPEG decoding the 60000 x 60000 image would need some 14 GB per band."""
    data = j2k_file(bands=1)
    prefix, params, codestream = j2k_parts(unpack(data)[1][0])
    path = tmp_path / "siz.eoz"
    path.write_bytes(repack(data, lambda t: j2k_tile(prefix, params, with_siz(codestream, 60000, 60000))))
    script = textwrap.dedent("""
        import resource, sys
        from eoz.scene import decompress_array
        vm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize')) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 1_500_000_000, resource.RLIM_INFINITY))
        try:
            decompress_array(open(sys.argv[1], 'rb').read())
        except BaseException as e:
            print(type(e).__name__, e)
    """)
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                         timeout=120).stdout
    assert out.startswith("ContainerError") and "SIZ" in out and "60000" in out, out


def test_codestream_a_little_larger_than_its_params_is_refused_by_its_siz_marker():
    data = j2k_file(bands=3)
    prefix, params, codestream = j2k_parts(unpack(data)[1][0])
    hostile = repack(data, lambda t: j2k_tile(prefix, params, with_siz(codestream, 300, 256)))
    with pytest.raises(ContainerError, match="SIZ"):
        decompress_array(hostile)


def test_params_naming_another_shape_than_the_tile_are_refused():
    """A 256 x 256 codestream and params in a 512 x 512 tile would decode to a mostly empty image."""
    data = j2k_file(bands=2)
    header, tiles = unpack(data)
    big = Header.from_dict({**header.to_dict(), "height": 512, "width": 512, "tile_size": 512})
    with pytest.raises(ContainerError, match=r"\[2, 256, 256\].*\(2, 512, 512\)"):
        decompress_array(pack(big, tiles))


# --- item 2: zlib side information, tile size, overlap, the partition's dtype ----------------

def zlib_bomb(size: int) -> bytes:
    return zlib.compress(bytes(size), 9)


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(ContainerError, match="inflates to more than"):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_nodata_mask_that_inflates_past_its_tile_is_refused_in_bounded_memory():
    data = j2k_file(bands=4, nodata=0)
    header, tiles = unpack(data)
    assert tiles[0][0] & 1, "the scene's nodata corner gives the tile a mask"
    (n,) = struct.unpack_from("<I", tiles[0], 1)
    bomb = zlib_bomb(64 * 2**20)
    hostile = pack(header, [tiles[0][:1] + struct.pack("<I", len(bomb)) + bomb + tiles[0][5 + n:]])
    assert peak_bytes(lambda: decompress_array(hostile)) < 8 * 2**20


def test_inflate_takes_a_stream_of_exactly_its_cap_and_refuses_one_byte_more():
    assert inflate(zlib.compress(b"x" * 1000), 1000, "side") == b"x" * 1000
    with pytest.raises(DecodeLimitError, match="side inflates to more than 999 bytes"):
        inflate(zlib.compress(b"x" * 1000), 999, "side")
    with pytest.raises(ContainerError, match="side is truncated"):
        inflate(zlib.compress(b"x" * 1000)[:-3], 1000, "side")
    with pytest.raises(ContainerError, match="side is not a zlib stream"):
        inflate(b"not zlib", 1000, "side")
    with pytest.raises(ContainerError, match="side has data after its zlib stream"):
        inflate(zlib.compress(b"x") + b"tail", 1000, "side")


def test_hyperprior_side_information_bomb_is_refused_in_bounded_memory(tiny_hyperprior_store):
    from eoz.codecs import codec_for_model
    from eoz.quality import QualityTarget

    codec = codec_for_model("tiny-hp", store=tiny_hyperprior_store, target=QualityTarget(psnr=40, block=32))
    array, meta = scene(64, 64)
    data = compress_array(array, meta, codec, tile_size=64)
    header, tiles = unpack(data)
    body = tiles[0][1:]
    block, rows, cols, n = struct.unpack_from("<BHHI", body)
    bomb = zlib_bomb(64 * 2**20)
    hostile = tiles[0][:1] + struct.pack("<BHHI", block, rows, cols, len(bomb)) + bomb + body[9 + n:]
    assert peak_bytes(lambda: decode_tile_payload(codec, hostile, header, 0)) < 8 * 2**20


@pytest.mark.parametrize("changes, needle", [
    ({"height": 20000, "width": 20000, "tile_size": 20000}, "tile size 20000"),
    ({"overlap": 1000}, "overlap 1000"),
    ({"height": 70000, "width": 70000, "tile_size": 4096}, "70000 x 70000"),
])
def test_headers_beyond_the_default_limits_are_refused_on_opening(changes, needle):
    """A 20000 px tile around one 256 px codestream 'finished' as a mostly empty image."""
    header, tiles = unpack(j2k_file(bands=1))
    header = Header.from_dict({**header.to_dict(), **changes})
    with pytest.raises(DecodeLimitError, match=needle):
        EozReader(pack(header, tiles * header.tile_count))


def test_limits_bound_bands_and_samples_per_tile_and_can_be_raised():
    data = j2k_file(bands=4, tile_size=128)   # 4 tiles of 4 x 128 x 128
    with pytest.raises(DecodeLimitError, match="4 bands"):
        EozReader(data, DecodeLimits(max_bands=3))
    with pytest.raises(DecodeLimitError, match="65536 samples"):
        EozReader(data, DecodeLimits(max_tile_samples=65535))
    with pytest.raises(DecodeLimitError, match="tile size 128"):
        EozReader(data, DecodeLimits(max_tile_size=127))
    with pytest.raises(DecodeLimitError, match="65536 pixels"):
        EozReader(data, DecodeLimits(max_pixels=65535))
    EozReader(data, DecodeLimits(max_bands=4, max_tile_samples=65536, max_tile_size=128, max_pixels=65536)).close()


def test_a_tile_longer_than_the_byte_limit_is_refused_on_opening():
    data = j2k_file(bands=1, tile_size=128)
    longest = max(e.length for e in EozReader(data).entries)
    with pytest.raises(DecodeLimitError, match=f"tile \\d is {longest} bytes"):
        EozReader(data, DecodeLimits(max_tile_bytes=longest - 1))


def test_partition_payload_naming_another_dtype_than_the_header_is_refused(tmp_path):
    from tests.conftest import publish_tiny_partition
    from eoz.codecs import codec_for_model
    from eoz.quality import QualityTarget
    from eoz.registry import ModelStore

    store = ModelStore(tmp_path / "store")
    publish_tiny_partition(store, ["b0", "b1", "b2"], [(0, 3)])
    codec = codec_for_model("tiny-hsi", store=store, target=QualityTarget(psnr=40))
    array = (RNG.integers(0, 50, (3, 32, 32)) + 900).astype(np.int16)
    meta = RasterMeta(height=32, width=32, count=3, dtype="int16", band_names=["b0", "b1", "b2"],
                      crs=None, transform=None, nodata=None)
    header, tiles = unpack(compress_array(array, meta, codec, tile_size=32))
    assert tiles[0][1:2 + tiles[0][1]] == b"\x03<i2"
    codec = codec.for_raster(header_meta(header))   # as decode_scene does
    decode_tile_payload(codec, tiles[0], header, 0)
    for name in (b"<f8", b"(99999999,)f8"):
        hostile = tiles[0][:1] + bytes([len(name)]) + name + tiles[0][5:]
        with pytest.raises(ContainerError, match="dtype"):
            decode_tile_payload(codec, hostile, header, 0)


# --- item 3: a tile table that points many entries at one tile -----------------------------

def test_tile_table_whose_entries_all_point_at_one_tile_is_refused():
    data = bytearray(j2k_file(bands=1, height=512, width=512, tile_size=128))   # 16 tiles
    table_offset, count, _ = struct.unpack_from("<QI4s", data, len(data) - 16)
    first = data[table_offset:table_offset + 16]
    for k in range(count):
        data[table_offset + 16 * k:table_offset + 16 * (k + 1)] = first
    struct.pack_into("<I", data, table_offset + 16 * count, zlib.crc32(data[table_offset:table_offset + 16 * count]))
    with pytest.raises(ContainerError, match="tile 1 starts at byte"):
        EozReader(bytes(data))


# --- item 4: errors that were not container errors -----------------------------------------

def test_mask_flag_in_a_file_without_nodata_is_a_container_error():
    masked = j2k_file(bands=2, nodata=0)
    with pytest.raises(ContainerError, match="nodata mask but the file declares no nodata"):
        decompress_array(repack(masked, nodata=None))


def test_unknown_tile_flags_are_a_container_error():
    data = j2k_file(bands=1)
    with pytest.raises(ContainerError, match="unknown flags 0x80"):
        decompress_array(repack(data, lambda t: bytes([t[0] | 0x80]) + t[1:]))


@pytest.mark.parametrize("dtype", ["c8", "foo", "V3", "(4,)u2", "f2"])
def test_a_header_naming_a_dtype_we_never_write_is_a_container_error(dtype):
    """The header's JSON edited and stored plain (as files before session 20 kept short headers)."""
    from tests.eoz.test_container import _with_header

    data = j2k_file(bands=1)
    (flags, length) = struct.unpack_from("<HI", data, 10)
    assert flags == 1
    text = zlib.decompress(data[16:16 + length])
    edited = text.replace(b'"dtype":"uint16"', b'"dtype":"%s"' % dtype.encode())
    assert edited != text
    decompress_array(_with_header(data, text, 0))   # the plain header as written reads
    with pytest.raises(ContainerError, match="dtype"):
        decompress_array(_with_header(data, edited, 0))


# --- where decoding is offered: the CLI and the service -------------------------------------

def test_cli_decompress_of_a_hostile_file_exits_2_with_one_line(tmp_path, capsys):
    from eoz.cli import main

    path = tmp_path / "bomb.eoz"
    path.write_bytes(repack(j2k_file(bands=2, nodata=0), nodata=None))
    assert main(["decompress", str(path), str(tmp_path / "out.tif")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eoz decompress: error: ") and err.count("\n") == 1
    assert "nodata mask but the file declares no nodata" in err and not (tmp_path / "out.tif").exists()


@pytest.fixture()
def client(service_env):
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app()) as client:
        yield client


def post_eoz(client, data: bytes):
    return client.post("/v1/decompress", files={"file": ("x.eoz", data, "application/octet-stream")})


def test_api_answers_422_for_a_file_beyond_the_limits(client):
    header, tiles = unpack(j2k_file(bands=1))
    hostile = pack(Header.from_dict({**header.to_dict(), "overlap": 1000}), tiles)
    answer = post_eoz(client, hostile)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert "overlap 1000" in answer.json()["detail"]


def test_api_job_of_a_hostile_tile_fails_with_the_reason(client):
    from tests.workers.servers import wait_for_job

    hostile = repack(j2k_file(bands=2, nodata=0), nodata=None)
    answer = post_eoz(client, hostile)
    assert answer.status_code == 202, answer.text
    job = wait_for_job(client, answer.json()["status_url"])
    assert job["status"] == "failed"
    assert "nodata mask but the file declares no nodata" in json.dumps(job)


def test_a_file_the_default_limits_refuse_is_not_written():
    array, meta = scene(64, 64, bands=4)
    with pytest.raises(InputError, match="would not decode: overlap 300"):
        compress_array(array, meta, JPEG2000Codec(lossless=True), 64, overlap=300)


def test_many_bands_take_a_smaller_default_tile_that_decodes():
    """224 EnMAP bands at the 512 px default would make tiles no reader accepts."""
    array, meta = scene(260, 230, bands=224)
    data = compress_array(array, meta, JPEG2000Codec(lossless=True))
    header = EozReader(data).header
    assert header.tile_size == DecodeLimits().tile_size_for(224, 0, 512) == 192
    np.testing.assert_array_equal(decompress_array(data)[0], array)
    assert DecodeLimits().tile_size_for(4, 8, 512) == 512
