"""Shared fixtures: real data paths and a tiny VQVAE-FPN published into a temporary store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.control import GroundControlPoint
from rasterio.rpc import RPC
from safetensors.numpy import save as save_safetensors

from eoz.datasets import data_dir
from eoz.entropy import IndexPrior
from eoz.models.vqvae_fpn import VQVAEFPN, VQVAEFPNConfig
from eoz.normalization import BandNormalizer
from eoz.registry import ModelStore

# real service parts (redis-server, the moto S3 server, worker processes) as fixtures
pytest_plugins = ["tests.workers.servers"]

S2_10M = "s2_sat_testdata/S2_L1C_10m_B02-B03-B04-B08_train_top75.tif"


def write_level1(path, array, georeferencing):
    """A Level-1 product's GeoTIFF, georeferenced by GCPs (as Sentinel-1's GRD) or RPCs (optical)."""
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[1], width=array.shape[2], count=len(array),
                       dtype=array.dtype, **georeferencing) as ds:
        ds.write(array)


LEVEL1_GCPS = [GroundControlPoint(row, col, 10 + col * 1e-3, 45 - row * 1e-3, 120.5) for row, col in
               ((0, 0), (0, 63), (47, 0), (47, 63), (20, 30))]
LEVEL1_RPCS = RPC(height_off=120, height_scale=500, lat_off=45, lat_scale=0.05, line_off=24, line_scale=24,
                  long_off=10, long_scale=0.07, samp_off=32, samp_scale=32,
                  line_num_coeff=[0.01 * i for i in range(20)], line_den_coeff=[1.0] + [0.0] * 19,
                  samp_num_coeff=[0.02 * i for i in range(20)], samp_den_coeff=[1.0] + [0.0] * 19)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_dir()
    if not (root / S2_10M).exists():
        pytest.skip(f"real data not found under {root}")
    return root


def publish_tiny_model(store: ModelStore, model_id: str = "tiny-vq", version: str = "1",
                       seed: int = 0):
    """An untrained but complete VQVAE-FPN entry: right format, fast, deterministic."""
    torch.manual_seed(seed)
    config = VQVAEFPNConfig(channels=[8, 16], codebook_sizes=[16, 32], embedding_dim=8, res_blocks=1)
    model = VQVAEFPN(config).eval()
    rng = np.random.default_rng(seed)
    maps = [[rng.integers(0, 16, (8, 8)), rng.integers(0, 32, (4, 4))] for _ in range(8)]
    prior = IndexPrior.fit(maps, config.codebook_sizes)
    normalizer = BandNormalizer(offset=[0.0] * 4, exponent=[0.5] * 4, mean=[40.0] * 4, std=[10.0] * 4)
    return _publish(store, model_id, version, "vqvae-fpn", model, prior.to_tensors(), normalizer,
                    codebook_sha256=[q.codebook_sha256() for q in model.quantizers])


def _publish(store: ModelStore, model_id: str, version: str, codec: str, model, coding_tensors: dict,
             normalizer: BandNormalizer, **manifest_extra):
    """A 4-band S2 test model: network weights plus what its codec codes with."""
    tensors = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
    tensors.update(coding_tensors)
    manifest = {"codec": codec, "description": "test model", "bands": ["B02", "B03", "B04", "B08"], "dtype": "uint16",
                "architecture": model.config.to_dict(), "normalization": normalizer.to_dict(), **manifest_extra}
    return store.publish(model_id, version, manifest, save_safetensors(tensors))


@pytest.fixture()
def tiny_store(tmp_path) -> ModelStore:
    store = ModelStore(tmp_path / "model_store")
    publish_tiny_model(store)
    return store


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Test models are tiny: extra torch threads only contend with each other and the OS."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def publish_tiny_hyperprior(store: ModelStore, model_id: str = "tiny-hp", version: str = "1", seed: int = 0):
    """An untrained but complete hyperprior entry, with the integer tables real exports carry."""
    from eoz.models.hyperprior import HyperpriorConfig, ModulatedHyperprior
    from eoz.train import hyperprior_coding_tensors

    torch.manual_seed(seed)
    config = HyperpriorConfig(channels=8, latent_channels=8, hyper_channels=8)
    model = ModulatedHyperprior(config).eval()
    normalizer = BandNormalizer(offset=[0.0] * 4, exponent=[1.0] * 4, mean=[1000.0] * 4, std=[1000.0] * 4)
    return _publish(store, model_id, version, "hyperprior", model, hyperprior_coding_tensors(model), normalizer,
                    quality_model={"a": 12.0, "b": -0.6, "c": 0.0, "d": 0.0})


@pytest.fixture()
def tiny_hyperprior_store(tmp_path) -> ModelStore:
    store = ModelStore(tmp_path / "model_store")
    publish_tiny_hyperprior(store)
    return store


def publish_tiny_partition(store: ModelStore, bands: list[str], intervals: list[tuple[int, int]],
                           model_id: str = "tiny-hsi", version: str = "1", dtype: str = "int16", **manifest_extra):
    """An untrained spectral-partition entry: two tiny single-channel hyperpriors per interval."""
    from eoz.models.hyperprior import HyperpriorConfig, ModulatedHyperprior
    from eoz.train import hyperprior_coding_tensors

    tensors, sections = {}, []
    for k, (start, stop) in enumerate(intervals):
        section = {"start": start, "stop": stop}
        for j, kind in enumerate(("independent", "predicted")):
            torch.manual_seed(2 * k + j)
            model = ModulatedHyperprior(HyperpriorConfig(in_channels=1, channels=8, latent_channels=8,
                                                         hyper_channels=8)).eval()
            sub = {f"model.{n}": v.numpy() for n, v in model.state_dict().items()}
            sub.update(hyperprior_coding_tensors(model))
            tensors.update({f"interval{k}.{kind}.{n}": v for n, v in sub.items()})
            mean = 1000.0 if kind == "independent" else 0.0
            section[kind] = {"architecture": model.config.to_dict(),
                             "normalization": BandNormalizer([0.0], [1.0], [mean], [1000.0]).to_dict(),
                             "quality_model": {"a": 12.0, "b": -0.6, "c": 0.0, "d": 0.0}}
        sections.append(section)
    manifest = {"codec": "spectral-partition", "description": "test model", "bands": list(bands),
                "dtype": dtype, "intervals": sections, **manifest_extra}
    return store.publish(model_id, version, manifest, save_safetensors(tensors))


def publish_tiny_wavelet(store: ModelStore, model_id: str = "tiny-wavelet"):
    """The wavelet codec with an untrained entropy model: any bands and dtype, real and fast."""
    from eoz.subband_coder import SubbandModel

    manifest = {"codec": "wavelet", "description": "test model", "bands": [], "dtype": None, "peak": 10000.0}
    return store.publish(model_id, "1", manifest, save_safetensors(SubbandModel.untrained().to_tensors()))


def publish_tiny_predictive(store: ModelStore, model_id: str = "tiny-predictive"):
    """The predictive codec with flat starting tables: the shipped format, untrained."""
    from eoz.codecs.predictive import DTYPES
    from eoz.predictive_coder import ROWS
    from eoz.subband_coder import TOKENS

    manifest = {"codec": "predictive", "description": "test model", "bands": [], "dtype": list(DTYPES)}
    return store.publish(model_id, "1", manifest, save_safetensors({"counts": np.ones((ROWS, TOKENS), np.int64)}))


@pytest.fixture(scope="session")
def codec_store(tmp_path_factory) -> ModelStore:
    """One model of every codec: tiny-vq, tiny-hp (4-band S2 uint16), tiny-sar (spectral
    partition, float32 VV/VH dB at peak 50), tiny-wavelet (any bands and dtype) and tiny-predictive
    (lossless and near-lossless, any bands)."""
    store = ModelStore(tmp_path_factory.mktemp("codec_store"))
    publish_tiny_model(store)
    publish_tiny_hyperprior(store)
    publish_tiny_partition(store, ["VV_dB", "VH_dB"], [(0, 2)], model_id="tiny-sar", dtype="float32", peak=50.0)
    publish_tiny_wavelet(store)
    publish_tiny_predictive(store)
    return store


@pytest.fixture()
def codec_env(codec_store, monkeypatch) -> ModelStore:
    monkeypatch.setenv("EOZ_MODEL_STORE", str(codec_store.root))
    return codec_store


# What each model of codec_store honours, written out here (not read from eoz.resolve) so
# that a change to the capability table shows up as a failing test; and a value per option.
_TARGET = {"psnr", "mse", "lambda", "block", "open_loop", "peak"}
HONOURED = {"jpeg2000": {"psnr", "quality", "lossless", "klt", "peak"}, "tiny-vq": {"rate_weight", "peak"},
            "tiny-hp": _TARGET, "tiny-sar": _TARGET | {"no_band_prediction"},
            "tiny-wavelet": _TARGET - {"lambda"}, "tiny-predictive": {"lossless", "max_error", "fast", "peak"}}
OPTION_VALUES = {"psnr": 40.0, "mse": 9.0, "lambda": 500.0, "block": 32, "peak": 255.0, "open_loop": True,
                 "quality": 40.0, "lossless": True, "klt": True, "rate_weight": 1.0, "no_band_prediction": True,
                 "max_error": [2.0], "fast": True}


def with_option(model: str, option: str) -> dict:
    """``option`` plus what the model needs besides (jpeg2000 a mode, fixed-quality codecs a target)."""
    if model == "jpeg2000":
        base = {} if option in ("psnr", "quality", "lossless") else {"quality": 40.0}
    elif "psnr" in HONOURED[model]:
        base = {} if option in ("psnr", "mse", "lambda") else {"psnr": 40.0}
    else:
        base = {}
    return {**base, option: OPTION_VALUES[option]}
