"""One resolver: every option against every codec, auto's choice, bands, dtype, peak and queue."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from eoz.codecs import LEARNED_CODECS
from eoz.errors import InputError, UnknownModelError
from eoz.raster import RasterMeta
from eoz.registry import ModelStore
from eoz.resolve import (BOUNDS, CAPABILITIES, DEFAULT_QUALITY, FAST_SPEEDUP, OPTIONS, check_cpu_work,
                         cpu_seconds, default_quality, psnr_peak, resolve)
from tests.conftest import HONOURED, OPTION_VALUES, with_option

S2_BANDS = ["B02", "B03", "B04", "B08"]


def meta(bands: list[str] = S2_BANDS, dtype: str = "uint16") -> RasterMeta:
    return RasterMeta(64, 64, len(bands), dtype, bands, None, None, None)


def _seen(resolved, option: str):
    """The value of ``option`` as it reaches the codec (or the peak)."""
    kwargs = resolved.codec_kwargs
    target = kwargs.get("target")
    return {"psnr": target.psnr if target else kwargs.get("target_psnr"), "mse": target and target.mse,
            "lambda": target and target.lmbda, "block": target and target.block, "peak": resolved.peak,
            "open_loop": target and not target.closed_loop, "quality": kwargs.get("quality"),
            "lossless": kwargs.get("lossless"), "klt": kwargs.get("klt"), "rate_weight": kwargs.get("rate_weight"),
            "no_band_prediction": kwargs.get("predict_bands") is False,
            "max_error": kwargs.get("max_error"), "fast": kwargs.get("fast")}[option]


def test_every_codec_this_build_runs_has_a_row():
    assert set(LEARNED_CODECS) | {"jpeg2000", "wavelet"} <= set(CAPABILITIES)
    assert set(CAPABILITIES["wavelet"].options) == {"psnr", "mse", "block", "open_loop"}


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("model", sorted(HONOURED))
def test_every_option_against_every_codec(codec_env, model, option):
    """Honoured: it reaches the codec. Not honoured: refused, naming it and the models that take it."""
    if option in HONOURED[model]:
        assert _seen(resolve(model, None, with_option(model, option)), option) == OPTION_VALUES[option]
        return
    with pytest.raises(InputError) as caught:
        resolve(model, None, with_option(model, option))
    message = str(caught.value)
    assert f"cannot honour {option} (--{option.replace('_', '-')})" in message
    named = message.split("(models: ")[1]
    for other, honours in HONOURED.items():
        assert (other in named) == (option in honours), (other, message)


def test_codec_arguments(codec_env):
    assert resolve("jpeg2000", None, {"psnr": 42.0, "klt": True}).codec_kwargs == {
        "quality": None, "lossless": False, "klt": True, "target_psnr": 42.0, "peak": 10000.0}
    assert resolve("tiny-vq").codec_kwargs == {}
    target = resolve("tiny-hp", None, {"psnr": 45.0, "block": 32}).codec_kwargs["target"]
    assert (target.psnr, target.block, target.mse, target.closed_loop) == (45.0, 32, 10000 ** 2 / 10 ** 4.5, True)
    partition = resolve("tiny-sar", None, {"mse": 0.5}).codec_kwargs
    assert partition["predict_bands"] is True and partition["target"].mse == 0.5
    wavelet = resolve("tiny-wavelet", None, {"psnr": 40.0, "open_loop": True}).codec_kwargs
    assert set(wavelet) == {"target"} and wavelet["target"].closed_loop is False


@pytest.mark.parametrize("options, needle", [
    ({}, "needs one of psnr (--psnr), quality (--quality) or lossless (--lossless)"),
    ({"klt": True}, "needs one of psnr"),
    ({"psnr": 40.0, "quality": 40.0}, "not psnr (--psnr) and quality (--quality)"),
    ({"quality": 40.0, "lossless": True}, "not quality (--quality) and lossless (--lossless)"),
    ({"lossless": True, "klt": True}, "cannot honour klt (--klt) with lossless (--lossless)"),
])
def test_jpeg2000_takes_one_mode(codec_env, options, needle):
    with pytest.raises(InputError, match=re.escape(needle)):
        resolve("jpeg2000", None, options)


def test_quality_targets_are_checked(codec_env):
    with pytest.raises(InputError, match="exactly one"):
        resolve("tiny-hp", None, {"psnr": 45.0, "mse": 9.0})
    with pytest.raises(InputError, match="exactly one"):
        resolve("tiny-wavelet")
    with pytest.raises(InputError, match="block must be"):
        resolve("tiny-hp", None, {"psnr": 45.0, "block": 48})


def test_the_peak_is_stated_once(codec_env):
    assert resolve("tiny-sar", None, {"psnr": 35.0}).codec_kwargs["target"].peak == 50.0   # the model's
    assert resolve("tiny-sar", None, {"psnr": 35.0, "peak": 60.0}).peak == 60.0            # the user's
    uint8 = resolve("jpeg2000", None, {"psnr": 35.0}, meta(dtype="uint8"))
    assert uint8.peak == 255.0 and uint8.codec_kwargs["peak"] == 255.0
    assert resolve("tiny-hp", None, {"psnr": 35.0}, meta()).peak == 10000.0
    assert (psnr_peak("uint16"), psnr_peak("uint8"), psnr_peak(None, 50)) == (10000.0, 255.0, 50.0)
    with pytest.raises(InputError, match="peak"):
        psnr_peak("uint16", -1.0)


def test_a_psnr_target_on_floats_needs_a_peak_stated_for_floats(codec_env):
    """Reflectance or dB at Sentinel-2's peak of 10000 would allow an error larger than the data
    (a float32 reflectance crop at 45 dB decoded 2000 off): a float raster's PSNR target needs the
    user's peak, or the peak of a model trained on that dtype."""
    floats = meta(dtype="float32")
    for model, options in (("tiny-wavelet", {"psnr": 45.0}), ("auto", {}), ("auto", {"psnr": 45.0})):
        with pytest.raises(InputError, match="float32 raster has no natural PSNR peak.*state peak.*or give mse"):
            resolve(model, None, options, floats)
    assert resolve("tiny-wavelet", None, {"psnr": 45.0, "peak": 1.0}, floats).codec_kwargs["target"].peak == 1.0
    assert resolve("tiny-wavelet", None, {"mse": 1e-4}, meta(dtype="float64")).model_id == "tiny-wavelet"
    assert resolve("tiny-wavelet", None, {"psnr": 45.0}, meta()).peak == 10000.0              # uint16 DN
    assert resolve("tiny-sar", None, {"psnr": 35.0}, meta(["VV_dB", "VH_dB"], "float32")).peak == 50.0
    # auto, asked a PSNR without a peak, takes the model that states one for dB over the wavelet model
    picked = resolve("auto", None, {"psnr": 35.0}, meta(["VV_dB", "VH_dB"], "float32"))
    assert (picked.model_id, picked.peak) == ("tiny-sar", 50.0) and "no None" not in picked.reason
    stated = resolve("auto", None, {"psnr": 35.0, "peak": 50.0}, meta(["VV_dB", "VH_dB"], "float32"))
    assert stated.codec_id == "wavelet"


def test_bands_and_dtype_an_empty_list_or_null_meaning_any(codec_env):
    with pytest.raises(InputError, match="expects 4 bands"):
        resolve("tiny-vq", None, {}, meta(S2_BANDS[:3]))
    with pytest.raises(InputError, match="trained on uint16 rasters .*; the raster is float32"):
        resolve("tiny-hp", None, {"psnr": 40.0}, meta(dtype="float32"))
    for raster in (meta([f"b{i}" for i in range(13)], "float32"), meta(["x"], "uint8")):
        assert resolve("tiny-wavelet", None, {"psnr": 40.0, "peak": 255.0}, raster).codec_id == "wavelet"
    assert resolve("jpeg2000", None, {"lossless": True}, meta(["x"], "uint8")).codec_id == "jpeg2000"


def test_queues_and_versions(codec_env):
    queues = {m: resolve(m, None, with_option(m, "peak")).queue for m in HONOURED}
    assert queues == {"jpeg2000": "cpu", "tiny-vq": "gpu", "tiny-hp": "gpu", "tiny-sar": "gpu",
                      "tiny-wavelet": "cpu", "tiny-predictive": "cpu"}
    assert resolve("tiny-vq").version == "1" and resolve("jpeg2000", None, {"lossless": True}).version is None
    with pytest.raises(InputError, match="takes no version"):
        resolve("jpeg2000", "1", {"lossless": True})
    with pytest.raises(UnknownModelError, match="no version '7'"):
        resolve("tiny-vq", "7")
    with pytest.raises(InputError, match="unknown option"):
        resolve("tiny-vq", None, {"colour": "blue"})


def test_auto_keeps_its_choices_without_a_lossless_option(codec_env):
    picked = resolve("auto", None, {}, meta())
    assert picked.model_id == "tiny-vq" and "tiny-vq version 1: its bands match" in picked.reason
    # a PSNR or MSE target: the wavelet model (any raster); a lambda: the hyperprior
    assert resolve("auto", None, {"psnr": 40.0}, meta()).model_id == "tiny-wavelet"
    assert resolve("auto", None, {"mse": 900.0}, meta(["VV_dB", "VH_dB"], "float32")).model_id == "tiny-wavelet"
    assert resolve("auto", None, {"lambda": 1000.0}, meta()).model_id == "tiny-hp"
    assert resolve("auto", None, {"lambda": 1000.0}, meta(["VV_dB", "VH_dB"], "float32")).model_id == "tiny-sar"
    assert resolve("auto", None, {"rate_weight": 1.0}, meta()).model_id == "tiny-vq"


def test_auto_chooses_among_the_models_that_honour_every_option(codec_env):
    lossless = resolve("auto", None, {"lossless": True}, meta())
    assert (lossless.model_id, lossless.codec_kwargs["lossless"], lossless.queue) == ("tiny-predictive", True, "cpu")
    bounded = resolve("auto", None, {"max_error": [2.0]}, meta(["VV_dB", "VH_dB"], "float32"))
    assert (bounded.model_id, bounded.codec_kwargs["max_error"]) == ("tiny-predictive", [2.0])
    fast = resolve("auto", None, {"fast": True}, meta())   # fast alone: the predictive model, lossless
    assert (fast.model_id, fast.codec_kwargs) == ("tiny-predictive", {"lossless": None, "max_error": None,
                                                                      "fast": True})
    with pytest.raises(InputError, match=r"cannot honour fast \(--fast\), which codec predictive takes"):
        resolve("jpeg2000", None, {"lossless": True, "fast": True}, meta())
    with pytest.raises(InputError, match="max_error must be"):
        resolve("auto", None, {"max_error": [float("inf")]}, meta())
    with pytest.raises(InputError, match=r"between 0 and 2147483648, not \[-1.0\]"):   # the exact limit, readably
        resolve("auto", None, {"max_error": [-1.0]}, meta())
    assert resolve("auto", None, {"quality": 40.0, "klt": True}, meta()).model_id == "jpeg2000"
    with pytest.raises(UnknownModelError, match="no model fits"):   # no spectral-partition model takes S2
        resolve("auto", None, {"psnr": 40.0, "no_band_prediction": True}, meta())
    with pytest.raises(InputError, match="no codec honours rate_weight, lossless"):
        resolve("auto", None, {"rate_weight": 1.0, "lossless": True}, meta())
    with pytest.raises(InputError, match="takes no version"):
        resolve("auto", "1", {}, meta())


def test_auto_falls_back_to_jpeg2000_for_lossless_when_no_model_fits(tmp_path, monkeypatch):
    from tests.conftest import publish_tiny_model

    publish_tiny_model(ModelStore(tmp_path))
    monkeypatch.setenv("EOZ_MODEL_STORE", str(tmp_path))
    lossless = resolve("auto", None, {"lossless": True}, meta())
    assert lossless.model_id == "jpeg2000" and "no model in the store fits" in lossless.reason
    assert resolve("auto", None, {"lossless": True}, meta(["x"], "uint8")).model_id == "jpeg2000"
    # and for a lossy request too: at the target, or with none at JPEG 2000's default
    assert resolve("auto", None, {"psnr": 45.0}, meta(LANDSAT)).codec_kwargs["target_psnr"] == 45.0
    picked = resolve("auto", None, {}, meta(LANDSAT))
    assert picked.model_id == "jpeg2000" and picked.codec_kwargs["target_psnr"] == DEFAULT_QUALITY["jpeg2000"]["psnr"]
    assert picked.defaults == {"psnr": 50.0} and "default --psnr 50 at peak 10000" in picked.reason


LANDSAT = [f"B{i}" for i in range(1, 11)]


def test_auto_without_a_target_takes_the_picked_model_s_default_operating_point(codec_env):
    """A fixed-quality model needs a target; auto with none uses the model's default and says which."""
    sar = resolve("auto", None, {}, meta(["VV_dB", "VH_dB"], "float32"))
    target = sar.codec_kwargs["target"]
    assert sar.model_id == "tiny-sar" and (target.psnr, target.peak) == (45.0, 50.0)
    assert sar.defaults == {"psnr": 45.0} == DEFAULT_QUALITY["spectral-partition"]
    assert sar.reason.endswith("no quality target given: its default --psnr 45 at peak 50")
    assert "no vqvae-fpn model takes a 2-band float32 raster" in sar.reason
    # the peak alone is no target
    assert resolve("auto", None, {"peak": 60.0}, meta(["VV_dB", "VH_dB"], "float32")).defaults == {"psnr": 45.0}
    # a model that names none: nothing is added, and a target given is kept
    assert resolve("auto", None, {}, meta()).defaults == {}
    assert resolve("auto", None, {"psnr": 40.0}, meta(["VV_dB", "VH_dB"], "float32")).defaults == {}
    # a named model is not guessed for: it needs its target
    with pytest.raises(InputError, match="exactly one"):
        resolve("tiny-sar", None, {}, meta(["VV_dB", "VH_dB"], "float32"))


def test_auto_falls_back_to_the_any_raster_wavelet_model_without_options(codec_env):
    """10-band Landsat, 13-band L1C: no VQ or band-fitted model; the wavelet model at its default,
    not the predictive one (which codes lossless unless asked for a bound)."""
    for bands in (LANDSAT, [f"B{i:02d}" for i in range(1, 14)]):
        picked = resolve("auto", None, {}, meta(bands))
        assert (picked.model_id, picked.codec_kwargs["target"].psnr) == ("tiny-wavelet", 50.0)
        assert f"no vqvae-fpn model takes a {len(bands)}-band uint16 raster" in picked.reason
        assert "it takes any band count and dtype; no quality target given: its default --psnr 50" in picked.reason


def test_a_manifest_states_its_own_default(tmp_path, monkeypatch):
    from eoz.subband_coder import SubbandModel
    from tests.conftest import save_safetensors

    store = ModelStore(tmp_path)
    store.publish("w", "1", {"codec": "wavelet", "description": "", "bands": [], "dtype": None,
                             "default_quality": {"mse": 400.0}}, save_safetensors(SubbandModel.untrained().to_tensors()))
    monkeypatch.setenv("EOZ_MODEL_STORE", str(tmp_path))
    picked = resolve("auto", None, {}, meta(LANDSAT))
    assert picked.codec_kwargs["target"].mse == 400.0 and "its default --mse 400" in picked.reason
    assert default_quality(store.get("w")) == {"mse": 400.0}


def test_no_fitting_model_for_an_option_is_one_short_line(codec_env):
    """The refusal names the option and what takes the raster, never every model's band list."""
    with pytest.raises(UnknownModelError) as caught:
        resolve("auto", None, {"lambda": 1000.0}, meta(LANDSAT))
    message = str(caught.value)
    assert message == ("no model fits a 10-band uint16 raster and honours lambda (--lambda); models that take "
                       "the raster: jpeg2000, tiny-predictive, tiny-wavelet")


def test_auto_without_the_raster_waits_for_it(codec_env):
    """An S3 source is read by the job: the request is checked now, the pick made there."""
    deferred = resolve("auto", None, {"lossless": True})
    assert (deferred.model_id, deferred.version, deferred.queue) == ("auto", None, "cpu")
    assert resolve("auto", None, {"quality": 40.0}).queue == "cpu"  # jpeg2000 alone
    assert resolve("auto", None, {"psnr": 40.0}).queue == "gpu"     # a hyperprior may fit
    with pytest.raises(InputError, match="no codec honours rate_weight, lossless"):
        resolve("auto", None, {"rate_weight": 1.0, "lossless": True})
    with pytest.raises(InputError, match="psnr must lie"):
        resolve("auto", None, {"psnr": 400.0})
    with pytest.raises(InputError, match="picked from the raster"):
        deferred.codec()


def test_a_caller_can_limit_the_codecs(codec_env):
    with pytest.raises(InputError, match="needs a model of codec vqvae-fpn"):
        resolve("tiny-hp", None, {}, meta(), codecs=("vqvae-fpn",))
    assert resolve("auto", None, {}, meta(), codecs=("vqvae-fpn",)).model_id == "tiny-vq"


def test_resolving_needs_no_torch(codec_env):
    """The API checks requests with it; loading a network to do so would be a waste."""
    code = ("import sys; from eoz.resolve import resolve; "
            "resolve('tiny-hp', None, {'psnr': 40.0, 'block': 32}); resolve('tiny-sar', None, {'mse': 1.0}); "
            "resolve('jpeg2000', None, {'lossless': True}); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())


def test_a_dtype_the_model_was_not_trained_for_names_what_takes_what(codec_env):
    """The refusal says which dtypes the model takes and which models take this raster instead."""
    with pytest.raises(InputError) as caught:
        resolve("tiny-vq", None, {}, meta(dtype="float32"))
    message = str(caught.value)
    assert "trained on uint16" in message and "float32" in message
    takers = message.split("models that take it: ")[1]
    assert "tiny-wavelet" in takers and "tiny-vq" not in takers and "jpeg2000" not in takers
    with pytest.raises(InputError) as caught:
        resolve("tiny-hp", None, {"psnr": 40.0}, meta(dtype="uint8"))
    assert "jpeg2000" in str(caught.value).split("models that take it: ")[1]


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint32"])
def test_jpeg2000_refuses_what_openjpeg_cannot_code(codec_env, dtype):
    """OpenJPEG codes 8 and 16 bit integers here (eoz/jpeg2000.py); the rest fails up front, not in the job."""
    with pytest.raises(InputError, match="takes uint8, int8, uint16, int16") as caught:
        resolve("jpeg2000", None, {"quality": 40.0}, meta(dtype=dtype))
    assert "tiny-wavelet" in str(caught.value)
    for fine in ("uint8", "int8", "uint16", "int16"):
        assert resolve("jpeg2000", None, {"quality": 40.0}, meta(dtype=fine)).codec_id == "jpeg2000"


@pytest.mark.parametrize("model, options, needle", [
    ("jpeg2000", {"quality": math.inf}, "quality"), ("jpeg2000", {"quality": 1e308}, "quality"),
    ("jpeg2000", {"quality": 1e-300}, "quality"), ("jpeg2000", {"quality": math.nan}, "quality"),
    ("jpeg2000", {"psnr": 200.0}, "psnr"), ("jpeg2000", {"psnr": math.inf}, "psnr"),
    ("tiny-hp", {"psnr": -3.0}, "psnr"), ("tiny-wavelet", {"psnr": 300.0, "block": 32}, "psnr"),
    ("tiny-wavelet", {"mse": 0.0}, "mse"), ("tiny-wavelet", {"mse": -1.0}, "mse"),
    ("tiny-wavelet", {"mse": math.inf}, "mse"), ("tiny-wavelet", {"mse": math.nan}, "mse"),
    ("tiny-hp", {"mse": 1e-300, "block": 16}, "mse"), ("tiny-hp", {"mse": 1e308}, "mse"),
    ("tiny-hp", {"lambda": math.inf}, "lambda"), ("tiny-vq", {"rate_weight": math.inf}, "rate_weight"),
    ("tiny-vq", {"rate_weight": -1.0}, "rate_weight"), ("jpeg2000", {"quality": 40.0, "peak": math.inf}, "peak"),
    ("jpeg2000", {"quality": 40.0, "peak": 0.0}, "peak"),
])
def test_absurd_quality_targets_are_refused_up_front(codec_env, model, options, needle):
    """Not queued to fail in the job: the bounds are checked when the request is resolved."""
    with pytest.raises(InputError, match=needle):
        resolve(model, None, options)


def test_the_bounds_are_stated_once_and_hold_at_their_edges(codec_env):
    low, high = BOUNDS["psnr"]
    assert resolve("tiny-hp", None, {"psnr": high}).codec_kwargs["target"].psnr == high
    assert resolve("jpeg2000", None, {"psnr": low}).codec_kwargs["target_psnr"] == low
    assert resolve("jpeg2000", None, {"quality": BOUNDS["quality"][1]}).codec_kwargs["quality"] == BOUNDS["quality"][1]
    # an MSE is held to the PSNR range at the peak: 10000^2 / 10^(150/10) = 1e-7
    assert resolve("tiny-hp", None, {"mse": 1e-7}).codec_kwargs["target"].mse == 1e-7
    with pytest.raises(InputError, match=r"between 1e-07 and"):
        resolve("tiny-hp", None, {"mse": 0.9e-7})


def test_work_a_cpu_cannot_finish_in_time_is_refused(codec_env):
    """Pixels x bands over the codec's measured CPU speed, against the configured limit."""
    big = RasterMeta(20000, 20000, 4, "uint16", S2_BANDS, None, None, None)
    with pytest.raises(InputError, match=r"about \d+ s on CPU .* limit is 300 s \(EOZ_MAX_CPU_SECONDS\)"):
        check_cpu_work(resolve("tiny-vq", None, {}, big), big, 300)   # about 530 s at 3.0 Msamples/s
    check_cpu_work(resolve("tiny-vq", None, {}, meta()), meta(), 900)
    check_cpu_work(resolve("jpeg2000", None, {"quality": 40.0}, big), big, 900)   # OpenJPEG is fast enough
    assert cpu_seconds(resolve("tiny-hp", None, {"psnr": 40.0}, big), big) is None  # not measured: not bounded
    default, fast = (cpu_seconds(resolve("tiny-predictive", None, options, big), big)
                     for options in ({"lossless": True}, {"lossless": True, "fast": True}))
    assert fast == pytest.approx(default / FAST_SPEEDUP)   # --fast: a bound at its own measured speed


def test_the_cli_refuses_them_with_exit_2(codec_env, tmp_path, capsys):
    from eoz.cli import main
    from eoz.raster import write_raster

    def small(dtype: str) -> RasterMeta:
        return RasterMeta(16, 16, 4, dtype, S2_BANDS, None, None, None)
    path = tmp_path / "float.tif"
    write_raster(path, np.zeros((4, 16, 16), np.float32), small("float32"))
    assert main(["compress", str(path), str(tmp_path / "x.eoz"), "--model", "tiny-vq"]) == 2
    assert "models that take it" in capsys.readouterr().err
    raster = tmp_path / "u8.tif"
    write_raster(raster, np.zeros((4, 16, 16), np.uint8), small("uint8"))
    assert main(["compress", str(raster), str(tmp_path / "y.eoz"), "--model", "jpeg2000", "--quality", "inf"]) == 2
    assert "quality" in capsys.readouterr().err
