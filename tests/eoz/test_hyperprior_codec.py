"""The hyperprior codec in the tile loop: payload, lambdas, errors, pins, exact cross-thread decoding."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from eoz.codecs import codec_for_model
from eoz.container import EozReader
from eoz.errors import ContainerError, InputError, ModelMismatchError
from eoz.quality import QualityTarget, block_grid, block_means, code_of_log2_lambda
from eoz.raster import read_raster
from eoz.registry import ModelStore
from eoz.scene import compress_array, decompress_array
from tests.conftest import S2_10M, publish_tiny_hyperprior


@pytest.fixture()
def patch(shared_data):
    return read_raster(shared_data / S2_10M, window=(400, 200, 150, 100))


def _codec(store, **target):
    return codec_for_model("tiny-hp", store=store, target=QualityTarget(**target))


def test_round_trip_keeps_shape_dtype_and_is_deterministic(patch, tiny_hyperprior_store):
    array, meta = patch
    codec = _codec(tiny_hyperprior_store, lmbda=2048.0, block=32)
    data = compress_array(array, meta, codec, tile_size=64)
    assert data == compress_array(array, meta, codec, tile_size=64)
    out, out_meta = decompress_array(data, store=tiny_hyperprior_store)
    assert out.shape == array.shape and out.dtype == array.dtype
    with EozReader(data) as reader:
        assert reader.header.codec == "hyperprior"
        assert reader.header.quality == {"lmbda": 2048.0, "block": 32, "peak": 10000.0, "closed_loop": True}


def test_each_tile_carries_its_block_lambda_codes(patch, tiny_hyperprior_store):
    array, meta = patch
    codec = _codec(tiny_hyperprior_store, mse=1e4, block=16)
    tile = array[:, :64, :64]
    payload, report = codec.encode_with_report(tile, np.ones(tile.shape, bool))
    block, rows, cols, n = struct.unpack_from("<BHHI", payload)
    assert (block, rows, cols) == (16, *block_grid(64, 64, 16))
    side = np.frombuffer(zlib.decompress(payload[9:9 + n]), np.uint8)
    np.testing.assert_array_equal(side[:rows * cols].reshape(rows, cols), report["codes"])
    refined = side[rows * cols:2 * rows * cols] > 0
    assert refined.sum() == report["refined_blocks"]
    basis_bytes = 4 * 4 * 4 if refined.any() else 0           # float32 4 x 4 spectral rotation
    assert side.size == 2 * rows * cols + refined.sum() * 4 + basis_bytes
    fixed = _codec(tiny_hyperprior_store, lmbda=300.0).encode_with_report(tile, np.ones(tile.shape, bool))[1]
    assert fixed["codes"].shape == (1, 1) and fixed["codes"][0, 0] == code_of_log2_lambda(np.log2(300.0))


@pytest.mark.parametrize("block", [16, 64, None])
def test_every_block_meets_a_target_beyond_the_base_layer(patch, tiny_hyperprior_store, block):
    """An untrained base cannot reach 45 dB anywhere: the residual layer must, block by block."""
    array, meta = patch
    target = QualityTarget(psnr=45.0, block=block)
    data = compress_array(array, meta, codec_for_model("tiny-hp", store=tiny_hyperprior_store, target=target),
                          tile_size=64)
    out, _ = decompress_array(data, store=tiny_hyperprior_store)
    err = (out.astype(np.float64) - array) ** 2
    mse = block_means(err, np.ones(err.shape, bool), block or 64)
    assert (mse <= target.mse).all()
    assert 10 * np.log10(1e8 / mse.mean()) < 45 + 1.5          # met, without coding it losslessly
    assert len(data) < array.nbytes / 2


def test_padding_and_nodata_do_not_count_towards_block_quality(tiny_hyperprior_store):
    codec = _codec(tiny_hyperprior_store, lmbda=1000.0)
    tile = np.full((4, 32, 32), 1000, np.uint16)
    valid = np.zeros(tile.shape, bool)
    valid[:, :8, :8] = True
    mse = codec.block_mse(tile, valid, 16, np.zeros((2, 2), np.uint8))
    assert mse[0, 1] == mse[1, 0] == mse[1, 1] == 0.0 and mse[0, 0] > 0


def test_a_target_is_required_and_vq_models_take_no_target(tiny_hyperprior_store, tiny_store):
    array = np.zeros((4, 32, 32), np.uint16)
    codec = codec_for_model("tiny-hp", store=tiny_hyperprior_store)
    with pytest.raises(InputError, match="target"):
        codec.encode_tile(array, np.ones(array.shape, bool))
    with pytest.raises(InputError, match="rate_weight"):
        codec_for_model("tiny-vq", store=tiny_store, target=QualityTarget(psnr=40))


def test_truncated_or_garbled_tiles_give_clear_errors(patch, tiny_hyperprior_store):
    array, meta = patch
    codec = _codec(tiny_hyperprior_store, lmbda=4096.0, block=16)
    tile = array[:, :64, :64]
    payload = codec.encode_tile(tile, np.ones(tile.shape, bool))
    for bad in (payload[:5], payload[:-4], payload[:-3], payload[:20]):
        with pytest.raises(ContainerError):
            codec.decode_tile(bad, 4, 64, 64)
    with pytest.raises(ContainerError, match="does not fit"):
        codec.decode_tile(payload, 4, 96, 64)


def test_decoding_with_other_weights_is_refused(tmp_path, patch, tiny_hyperprior_store):
    array, meta = patch
    data = compress_array(array, meta, _codec(tiny_hyperprior_store, lmbda=1000.0), tile_size=64)
    other = ModelStore(tmp_path / "other")
    publish_tiny_hyperprior(other, seed=1)           # same id and version, different weights
    with pytest.raises(ModelMismatchError, match="tiny-hp version 1"):
        decompress_array(data, store=other)


_CHILD = """
import sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from eoz.codecs import codec_for_model
from eoz.quality import QualityTarget
from eoz.raster import read_raster
from eoz.scene import compress_array, decompress_array
if sys.argv[2] == "encode":
    array, meta = read_raster(sys.argv[3], window=(400, 200, 150, 100))
    codec = codec_for_model(sys.argv[5], target=QualityTarget(psnr=30.0, block=16))
    data = compress_array(array, meta, codec, tile_size=64)
    open(sys.argv[4], "wb").write(data)
    np.save(sys.argv[6], decompress_array(data)[0])   # decoded by the encoding process too
else:
    np.save(sys.argv[4], decompress_array(open(sys.argv[3], "rb").read())[0])
"""


def _child(threads: int, *args: str, store) -> None:
    env = dict(os.environ, EOZ_MODEL_STORE=str(store.root))
    subprocess.run([sys.executable, "-c", _CHILD, str(threads), *args], check=True, env=env,
                   capture_output=True)


def test_encode_and_decode_with_different_thread_counts(tmp_path, shared_data, tiny_hyperprior_store):
    """Encoded with 1 thread, decoded with 2, and the reverse: the range decoder stays in step
    (it would fail or produce garbage otherwise) and both machines see the same image."""
    decoded = {}
    for enc, dec in ((1, 2), (2, 1)):
        stream, same, other = (tmp_path / f"enc{enc}.eoz", tmp_path / f"enc{enc}-dec{enc}.npy",
                               tmp_path / f"enc{enc}-dec{dec}.npy")
        _child(enc, "encode", str(shared_data / S2_10M), str(stream), "tiny-hp", str(same),
               store=tiny_hyperprior_store)
        _child(dec, "decode", str(stream), str(other), store=tiny_hyperprior_store)
        decoded[enc, enc], decoded[enc, dec] = (np.load(p).astype(np.int64) for p in (same, other))
    for enc in (1, 2):
        assert np.abs(decoded[enc, 1] - decoded[enc, 2]).max() <= 1


def test_spectral_basis_is_orthonormal_and_decorrelates(patch):
    from eoz.residual import spectral_basis

    array, _ = patch
    residual = array.astype(np.float64) - array.mean(axis=(1, 2), keepdims=True)
    basis = spectral_basis(residual, np.ones(array.shape, bool)).astype(np.float64)
    np.testing.assert_allclose(basis @ basis.T, np.eye(4), atol=1e-6)
    components = np.einsum("kb,bhw->khw", basis, residual).reshape(4, -1)
    covariance = np.cov(components)
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 1e-3 * covariance.max()
    assert np.all(np.diff(np.diag(covariance)) <= 0)           # strongest first


def test_block_errors_are_measured_in_signed_arithmetic(tiny_hyperprior_store):
    """uint16 reconstructions below the original must not wrap around when subtracted."""
    codec = _codec(tiny_hyperprior_store, lmbda=1000.0)
    tile = np.full((4, 32, 32), 60000, np.uint16)      # far above what the untrained model outputs
    mse = codec.block_mse(tile, np.ones(tile.shape, bool), None, np.zeros((1, 1), np.uint8))
    recon = codec.decode_tile(codec.encode_tile(tile, np.ones(tile.shape, bool)), 4, 32, 32)
    expected = np.mean((np.clip(np.rint(recon), 0, 65535) - 60000.0) ** 2)
    assert mse[0, 0] == pytest.approx(expected, rel=1e-3)   # wrapped uint16 would be ~100x off
