"""What each model takes, which queue runs it, and refusals before anything is queued."""

from __future__ import annotations

import pytest

from eoz.errors import InputError, UnknownModelError
from eoz.raster import RasterMeta
from workers.models import catalogue, check_bands, codec_of, codec_params, queue_for


def meta(bands: int) -> RasterMeta:
    return RasterMeta(64, 64, bands, "uint16", [f"b{i}" for i in range(bands)], None, None, None)


def test_jpeg2000_takes_its_parameters(service_env):
    assert codec_params("jpeg2000", None, {"psnr": 42.0, "klt": True}) == {
        "quality": None, "lossless": False, "klt": True, "target_psnr": 42.0}
    assert codec_params("jpeg2000", None, {"lossless": True})["lossless"] is True
    with pytest.raises(InputError, match="needs one of psnr"):
        codec_params("jpeg2000", None, {"klt": True})


def test_vq_takes_a_rate_weight(service_env):
    assert codec_params("tiny-vq", None, {"rate_weight": 1.5}) == {"rate_weight": 1.5}
    assert codec_params("tiny-vq", None, {}) == {}


def test_hyperprior_takes_a_quality_target(service_env):
    target = codec_params("tiny-hp", None, {"psnr": 45.0, "block": 32})["target"]
    assert (target.psnr, target.block, target.mse) == (45.0, 32, 10000 ** 2 / 10 ** 4.5)
    assert codec_params("tiny-hp", None, {"lambda": 500.0})["target"].lmbda == 500.0
    with pytest.raises(InputError, match="exactly one"):
        codec_params("tiny-hp", None, {"psnr": 45.0, "mse": 9.0})
    with pytest.raises(InputError, match="block must be"):
        codec_params("tiny-hp", None, {"psnr": 45.0, "block": 48})


def test_a_target_psnr_is_at_the_peak_the_model_states(tmp_path, monkeypatch):
    from eoz.registry import ModelStore
    from tests.conftest import publish_tiny_hyperprior, publish_tiny_partition

    store = ModelStore(tmp_path / "store")
    publish_tiny_hyperprior(store)
    publish_tiny_partition(store, ["VV_dB", "VH_dB"], [(0, 2)], model_id="tiny-sar", dtype="float32", peak=50.0)
    monkeypatch.setenv("EOZ_MODEL_STORE", str(store.root))
    target = codec_params("tiny-sar", None, {"psnr": 35.0, "block": 16})["target"]
    assert (target.peak, target.block) == (50.0, 16) and target.mse == pytest.approx(50.0 ** 2 / 10 ** 3.5)
    assert codec_params("tiny-hp", None, {"psnr": 35.0})["target"].peak == 10000.0


@pytest.mark.parametrize("model, params, refused", [
    ("tiny-hp", {"psnr": 40.0, "klt": True}, "['klt']"),
    ("jpeg2000", {"quality": 40.0, "lambda": 0.01}, "['lambda']"),
    ("jpeg2000", {"psnr": 40.0, "mse": 3.0, "block": 64}, "['block', 'mse']"),
    ("tiny-vq", {"psnr": 40.0}, "['psnr']"),
    ("tiny-vq", {"rate_weight": 1.0, "block": 16}, "['block']"),
])
def test_parameters_a_model_does_not_take_are_refused(service_env, model, params, refused):
    with pytest.raises(InputError, match="does not take the quality parameter") as caught:
        codec_params(model, None, params)
    assert refused in str(caught.value)


def test_unknown_models(service_env):
    with pytest.raises(UnknownModelError, match="available: \\['tiny-hp', 'tiny-vq'\\]"):
        codec_params("no-such-model", None, {})
    with pytest.raises(UnknownModelError):
        codec_of("tiny-vq", "7")


def test_band_count_and_queues(service_env):
    check_bands("tiny-vq", None, meta(4))
    check_bands("jpeg2000", None, meta(13))
    with pytest.raises(InputError, match="expects 4 bands"):
        check_bands("tiny-vq", None, meta(3))
    assert queue_for(codec_of("tiny-vq")) == "gpu" and queue_for(codec_of("jpeg2000")) == "cpu"


def test_catalogue_lists_models_and_the_baseline(service_env):
    entries = {e["model_id"]: e for e in catalogue()}
    assert entries["tiny-vq"]["bands"] == ["B02", "B03", "B04", "B08"]
    assert entries["tiny-vq"]["parameters"] == ["rate_weight"] and len(entries["tiny-vq"]["weights_sha256"]) == 64
    assert entries["jpeg2000"]["parameters"] == ["psnr", "quality", "lossless", "klt"]
