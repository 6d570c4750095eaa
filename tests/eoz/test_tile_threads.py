"""Tiles coded on threads (``threads``): the same bytes and samples as one at a time, in order,
with the same errors, and the process's BLAS setting left as it was."""

from __future__ import annotations

import os

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from eoz.codecs import codec_for_model
from eoz.codecs.jpeg2000 import JPEG2000Codec
from eoz.container import EozReader
from eoz.errors import ContainerError, InputError
from eoz.quality import QualityTarget
from eoz.raster import RasterMeta, read_raster
from eoz.scene import compress_array, compress_file, decode_scene, decompress_array, tile_threads
from tests.conftest import S2_10M

TILE = 128


@pytest.fixture(scope="module")
def scene(shared_data):
    """A 4-band S2 crop of 3 x 5 tiles (the last row and column partial), a corner of it nodata."""
    array, _ = read_raster(shared_data / S2_10M)
    array = np.ascontiguousarray(array[:, 200:500, 300:900])
    array[:, :40, :70] = 0
    meta = RasterMeta(height=300, width=600, count=4, dtype="uint16", band_names=["B02", "B03", "B04", "B08"],
                      crs=None, transform=None, nodata=0)
    return array, meta


CODECS = {
    "predictive lossless": lambda: codec_for_model("predictive", lossless=True),
    "predictive max error per band": lambda: codec_for_model("predictive", max_error=[0, 1, 4, 9]),
    "wavelet 45 dB per 32 px block": lambda: codec_for_model("wavelet-hyperprior",
                                                             target=QualityTarget(psnr=45, block=32)),
    "jpeg2000 lossless": lambda: JPEG2000Codec(lossless=True),
}


@pytest.mark.parametrize("name", CODECS)
def test_threads_write_and_read_what_one_thread_does(scene, name):
    array, meta = scene
    codec = CODECS[name]()
    serial = compress_array(array, meta, codec, TILE)
    done: list[tuple[int, int]] = []
    assert compress_array(array, meta, codec, TILE, progress=lambda *d: done.append(d), threads=3) == serial
    assert done == [(n, 15) for n in range(1, 16)]
    decoded, _ = decompress_array(serial)
    threaded, _ = decompress_array(serial, threads=3)
    np.testing.assert_array_equal(threaded, decoded)
    window = (100, 50, 300, 200)   # six tiles, none whole
    np.testing.assert_array_equal(decompress_array(serial, window, threads=2)[0],
                                  decoded[:, 50:250, 100:400])


def test_a_corrupt_tile_fails_a_threaded_decode_where_it_fails_one_thread(scene):
    """The tiles before it come out first, then the same error."""
    array, meta = scene
    data = bytearray(compress_array(array, meta, codec_for_model("predictive", lossless=True), TILE))
    with EozReader(bytes(data)) as reader:
        offset = reader.entries[7].offset
    data[offset + 40] ^= 0xFF
    outcomes = []
    for threads in (1, 3):
        pieces = []
        with EozReader(bytes(data)) as reader, pytest.raises(ContainerError) as caught:
            for piece, col, row in decode_scene(reader, threads=threads):
                pieces.append((piece, col, row))
        outcomes.append((len(pieces), str(caught.value)))
    assert outcomes[0] == outcomes[1] and outcomes[0][0] == 7 and "tile 7" in outcomes[0][1]


def test_a_tile_that_fails_on_a_thread_fails_the_file_and_leaves_none(scene, tmp_path, monkeypatch):
    """The error reaches the caller as it is, and no .eoz (nor its .part) is left."""
    from eoz.raster import write_raster

    array, meta = scene
    src = tmp_path / "scene.tif"
    write_raster(src, array, meta)
    codec = codec_for_model("predictive", lossless=True)
    encode_tile = type(codec).encode_tile

    def failing(self, tile, valid):
        if tile[0, 0, 0] == array[0, 128, 256]:   # the tile at row 1, column 2
            raise InputError("this tile cannot be coded")
        return encode_tile(self, tile, valid)

    monkeypatch.setattr(type(codec), "encode_tile", failing)
    with pytest.raises(InputError, match="this tile cannot be coded"):
        compress_file(src, tmp_path / "out.eoz", codec, TILE, threads=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_blas_is_held_to_one_thread_only_while_tiles_code(scene):
    array, meta = scene
    before = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
    data = compress_array(array, meta, codec_for_model("predictive", max_error=2), TILE, threads=4)
    decompress_array(data, threads=4)
    assert [(i["internal_api"], i["num_threads"]) for i in threadpool_info()] == before


def test_how_many_tiles_code_at_once(scene):
    predictive = codec_for_model("predictive", lossless=True)
    assert tile_threads(predictive, 1) == 1 and tile_threads(predictive, 5) == 5
    assert tile_threads(predictive, 0) == (os.cpu_count() or 1)
    network = codec_for_model("vqvae-fpn-s2-10m")   # torch's own threads fill the cores
    assert not network.parallel_tiles and tile_threads(network, 4) == 1
    with pytest.raises(InputError, match="threads must be 0"):
        tile_threads(predictive, -1)
