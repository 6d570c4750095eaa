"""Training: the learning-rate schedule, and a real tiny run on real patches that resumes."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from eoz import datasets
from eoz.errors import InputError
from eoz.models.vqvae_fpn import VQVAEFPNConfig
from eoz.normalization import BandNormalizer
from eoz.train import TrainConfig, brighten, learning_rate, original_units, snapshot, train

TRAIN_PATCH = "bigearthnet_s2_tiny/S2A_MSIL2A_20170617T113321_36_85_10m_B02-B03-B04-B08.tif"
# validation crops are 128 px, larger than a 120 px BigEarthNet patch: use a small OSCD city
VALIDATION = "oscd_s2_l1c/montpellier/montpellier_imgs_1_10m_B02-B03-B04-B08.tif"


def test_learning_rate_warm_up_and_cosine_end_points():
    cfg = TrainConfig(steps=1000, warmup=100, lr=1e-3, min_lr_fraction=0.05)
    assert learning_rate(cfg, 0) == pytest.approx(1e-5)
    assert learning_rate(cfg, 49) == pytest.approx(5e-4)
    assert learning_rate(cfg, 99) == pytest.approx(1e-3)       # end of warm-up: the peak
    assert learning_rate(cfg, 100) == pytest.approx(1e-3)      # start of the cosine: the peak
    assert learning_rate(cfg, 550) == pytest.approx(1e-3 * (0.05 + 0.95 / 2))  # half way
    assert learning_rate(cfg, 1000) == pytest.approx(5e-5)     # the floor at the last step
    assert learning_rate(cfg, 5000) == pytest.approx(5e-5)     # and stays there
    rates = [learning_rate(cfg, s) for s in range(1001)]
    assert all(b > a for a, b in zip(rates[:99], rates[1:100]))
    assert all(b <= a for a, b in zip(rates[100:], rates[101:]))
    assert min(rates[100:]) == pytest.approx(5e-5) and max(rates) == pytest.approx(1e-3)


def test_learning_rate_without_warm_up_starts_at_the_peak():
    cfg = TrainConfig(steps=10, warmup=0, lr=2e-4, min_lr_fraction=0.1)
    assert learning_rate(cfg, 0) == pytest.approx(2e-4)
    assert learning_rate(cfg, 5) == pytest.approx(2e-4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))))
    assert learning_rate(cfg, 10) == pytest.approx(2e-5)


def test_config_survives_json():
    cfg = TrainConfig(steps=7, crop=32, model=VQVAEFPNConfig(channels=[8, 16], codebook_sizes=[16, 16],
                                                             embedding_dim=8, first_factor=4))
    back = TrainConfig.from_dict(json.loads(json.dumps(asdict(cfg))))
    assert back == cfg and isinstance(back.model, VQVAEFPNConfig)


@pytest.fixture()
def tiny_split(shared_data, monkeypatch):
    split = datasets.Split(name="tiny-test", bands=datasets.S2_10M_BANDS,
                           train=(TRAIN_PATCH,), validation=(VALIDATION,))
    monkeypatch.setitem(datasets.SPLITS, split.name, split)
    return split


def _config(steps: int) -> TrainConfig:
    return TrainConfig(model_id="tiny-test", split="tiny-test", steps=steps, batch_size=2, crop=32,
                       checkpoint_every=2, log_every=2, validate_every=2, seed=3,
                       model=VQVAEFPNConfig(channels=[8, 16], codebook_sizes=[16, 16],
                                            embedding_dim=8, res_blocks=1))


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _state(run_dir):
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)


def test_training_resumes_where_it_stopped(tmp_path, tiny_split):
    run_dir = tmp_path / "run"
    checkpoint = train(run_dir, _config(4))
    assert checkpoint == run_dir / "checkpoint.pt"
    first = _log(run_dir)
    assert [line["step"] for line in first] == [2, 4]
    assert all("val_psnr" in line and math.isfinite(line["val_psnr"]) for line in first)
    assert all(line["codes_in_batch"][0] >= 1 for line in first)
    state = _state(run_dir)
    assert state["step"] == 4
    assert state["config"]["steps"] == 4 and state["config"]["model"]["channels"] == [8, 16]
    normalizer = state["normalizer"]
    assert all(0.25 <= p <= 1.0 for p in normalizer["exponent"])

    # the run keeps its config.json: extend it there and start the same command again
    config = json.loads((run_dir / "config.json").read_text())
    assert config["steps"] == 4
    config["steps"] = 6
    (run_dir / "config.json").write_text(json.dumps(config))
    train(run_dir, _config(999))  # a config passed again is ignored for an existing run
    steps = [line["step"] for line in _log(run_dir)]
    assert steps == [2, 4, 6]  # continues after 4, no step repeated
    assert _log(run_dir)[:2] == first
    resumed = _state(run_dir)
    assert resumed["step"] == 6
    assert resumed["normalizer"] == normalizer  # fitted once, carried by the checkpoint

    # resuming is exact: the same 6 steps in one go give the same weights and log
    straight_dir = tmp_path / "straight"
    train(straight_dir, _config(6))
    straight = _state(straight_dir)
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=key)
    drop = ("seconds",)
    assert [{k: v for k, v in line.items() if k not in drop} for line in _log(straight_dir)] == \
        [{k: v for k, v in line.items() if k not in drop} for line in _log(run_dir)]


def test_warm_start_begins_from_the_published_weights_and_normalizer(tmp_path, tiny_split, tiny_store, monkeypatch):
    monkeypatch.setenv("EOZ_MODEL_STORE", str(tiny_store.root))
    entry = tiny_store.get("tiny-vq", "1")
    published = entry.load_weights()
    cfg = replace(_config(2), lr=0.0, init_from="tiny-vq/1",
                  model=VQVAEFPNConfig(**entry.manifest["architecture"]))
    state = _state(train(tmp_path / "run", cfg).parent)
    assert state["normalizer"] == entry.manifest["normalization"]
    layers = [key for key in state["model"] if "quantizers" not in key]   # codebooks move by EMA and restarts
    assert len(layers) > 10
    for key in layers:   # lr 0: the layers are the published ones
        np.testing.assert_array_equal(state["model"][key].numpy(), published[f"model.{key}"], err_msg=key)
    assert json.loads((tmp_path / "run" / "warm_start.json").read_text())["new"] == []

    # another architecture keeps its own layers where they differ (here the top codebook)
    wider = VQVAEFPNConfig(**{**entry.manifest["architecture"], "codebook_sizes": [16, 64]})
    train(tmp_path / "wider", replace(cfg, model=wider))
    report = json.loads((tmp_path / "wider" / "warm_start.json").read_text())
    assert report["from"] == "tiny-vq/1"
    assert report["new"] == ["quantizers.1.cluster_size", "quantizers.1.embedding", "quantizers.1.embedding_sum"]
    with pytest.raises(InputError, match="shares no layer"):
        train(tmp_path / "other", replace(cfg, model=VQVAEFPNConfig(in_channels=2, channels=[4], codebook_sizes=[8],
                                                                   embedding_dim=4, res_blocks=1)))


def test_a_run_goes_on_from_another_run_under_an_ssim_loss(tmp_path, tiny_split):
    first = tmp_path / "mse"
    train(first, _config(2))
    cfg = replace(_config(2), lr=0.0, init_from=str(first), ssim_weight=1.0)
    state = _state(train(tmp_path / "ssim", cfg).parent)
    source = _state(first)
    assert state["normalizer"] == source["normalizer"]
    for key, value in source["model"].items():
        if "quantizers" not in key:   # lr 0: the layers are the first run's (codebooks move by EMA)
            torch.testing.assert_close(state["model"][key], value, rtol=0, atol=0, msg=key)
    report = json.loads((tmp_path / "ssim" / "warm_start.json").read_text())
    assert report["from"] == str(first) and report["from_step"] == 2 and report["new"] == []
    assert report["from_command"].startswith("eoz train tiny-test --run-dir mse --steps 2")
    assert all(0.0 < line["ssim"] <= 1.0 for line in _log(tmp_path / "ssim"))


def test_original_units_in_torch_is_the_normalizers_inverse():
    normalizer = BandNormalizer(offset=[1.0, 0.0], exponent=[0.5, 1.0], mean=[40.0, -12.0], std=[10.0, 3.0])
    y = np.random.default_rng(0).normal(0, 1, (3, 2, 5, 4))
    expected = np.stack([normalizer.inverse(c) for c in y])
    np.testing.assert_allclose(original_units(normalizer, torch.from_numpy(y)).numpy(), expected, rtol=1e-12)


def test_brightness_scales_each_crop_by_one_factor_in_original_units():
    normalizer = BandNormalizer(offset=[0.0, 5.0], exponent=[0.5, 1.0], mean=[40.0, 900.0], std=[10.0, 300.0])
    original = np.random.default_rng(0).uniform(100, 5000, (6, 2, 4, 4))
    batch = np.stack([normalizer.forward(c) for c in original])
    np.testing.assert_array_equal(brighten(batch, normalizer, 0.0, np.random.default_rng(1)), batch)
    bright = brighten(batch, normalizer, 0.4, np.random.default_rng(1))
    factors = np.stack([normalizer.inverse(c) for c in bright]) / original
    per_crop = factors[:, 0, 0, 0]
    np.testing.assert_allclose(factors, per_crop[:, None, None, None] * np.ones_like(factors), rtol=1e-5)
    assert np.all((per_crop >= math.exp(-0.4) - 1e-6) & (per_crop <= math.exp(0.4) + 1e-6))
    assert per_crop.std() > 0.05


def test_snapshot_drops_the_optimizer_and_resumes(tmp_path, tiny_split):
    run_dir = train(tmp_path / "run", _config(2)).parent
    snap = snapshot(run_dir, tmp_path / "snap")
    state = _state(snap)
    assert "optimizer" not in state and state["step"] == 2
    assert (snap / "checkpoint.pt").stat().st_size < (run_dir / "checkpoint.pt").stat().st_size
    assert (snap / "log.jsonl").read_text() == (run_dir / "log.jsonl").read_text()
    config = json.loads((snap / "config.json").read_text())
    config["steps"] = 4
    (snap / "config.json").write_text(json.dumps(config))
    train(snap)
    assert _state(snap)["step"] == 4 and [line["step"] for line in _log(snap)] == [2, 4]
    resumed = _state(snap)["model"]
    assert any(not torch.equal(resumed[key], value) for key, value in state["model"].items())   # it trained on


def test_finished_run_started_again_does_nothing(tmp_path, tiny_split):
    run_dir = tmp_path / "run"
    train(run_dir, _config(2))
    before = (run_dir / "checkpoint.pt").read_bytes()
    log_before = (run_dir / "log.jsonl").read_text()
    train(run_dir)
    assert (run_dir / "log.jsonl").read_text() == log_before
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert not list(run_dir.glob("*.tmp"))


def test_fixed_crops_are_deterministic_and_inside(shared_data):
    array = datasets.load_bands(shared_data / VALIDATION, datasets.S2_10M_BANDS)
    assert array.shape == (4, 426, 451) and array.dtype == np.float32
    crops = datasets.fixed_crops([array, array[:, :200, :300]], 128)
    assert crops.shape == (4, 4, 128, 128)
    np.testing.assert_array_equal(crops, datasets.fixed_crops([array, array[:, :200, :300]], 128))
    # every crop is a real window of its source
    r, c = (426 - 128) * 1 // 3, (451 - 128) * 2 // 3
    np.testing.assert_array_equal(crops[0], array[:, r:r + 128, c:c + 128])


def test_fixed_crops_refuse_arrays_smaller_than_the_crop(shared_data):
    small = datasets.load_bands(shared_data / TRAIN_PATCH, datasets.S2_10M_BANDS)
    assert small.shape == (4, 120, 120)
    with pytest.raises(InputError):
        datasets.fixed_crops([small], 128, per_array=1)


def test_load_bands_picks_bands_by_name_and_refuses_missing_ones(shared_data):
    path = shared_data / TRAIN_PATCH
    b08_b02 = datasets.load_bands(path, ("B08", "B02"))
    full = datasets.load_bands(path, datasets.S2_10M_BANDS)
    np.testing.assert_array_equal(b08_b02, full[[3, 0]])
    with pytest.raises(InputError, match="B11"):
        datasets.load_bands(path, ("B02", "B11"))


def test_hyperprior_run_trains_resumes_and_exports_with_its_quality_model(tmp_path, tiny_split, monkeypatch):
    from eoz.cli import main
    from eoz.models.hyperprior import HyperpriorConfig
    from eoz.registry import ModelStore
    from eoz.train import VALIDATION_CODES, export

    cfg = TrainConfig(model_id="tiny-hp", split="tiny-test", codec="hyperprior", steps=2, batch_size=2, crop=64,
                      checkpoint_every=2, log_every=2, validate_every=2, seed=1,
                      model=HyperpriorConfig(channels=8, latent_channels=8, hyper_channels=8))
    assert TrainConfig.from_dict(json.loads(json.dumps(asdict(cfg)))) == cfg
    run_dir = tmp_path / "run"
    train(run_dir, cfg)
    (line,) = _log(run_dir)
    assert line["bpp"] > 0 and len(line["val_psnr"]) == len(line["val_bpp"]) == 4
    state = _state(run_dir)
    assert state["normalizer"]["exponent"] == [1.0] * 4            # linear: MSE stays proportional
    assert len(set(state["normalizer"]["std"])) == 1

    store = ModelStore(tmp_path / "store")
    manifest = export(run_dir, "1", store)
    assert manifest["codec"] == "hyperprior" and set(manifest["quality_model"]) == set("abcd")
    assert all(math.isfinite(v) for v in manifest["quality_model"].values())
    ratios = [manifest["validation"][f"mean @ lambda code {c}"]["compression_ratio"] for c in VALIDATION_CODES]
    assert len(ratios) == 5 and all(r > 1 for r in ratios)
    assert store.get("tiny-hp").manifest["quality_model"] == manifest["quality_model"]

    # the published model serves the CLI's quality options
    monkeypatch.setenv("EOZ_MODEL_STORE", str(store.root))
    src = datasets.data_dir() / VALIDATION
    assert main(["compress", str(src), str(tmp_path / "x.eoz"), "--model", "tiny-hp", "--lambda", "500",
                 "--block", "64"]) == 0
    assert main(["decompress", str(tmp_path / "x.eoz"), str(tmp_path / "x.tif")]) == 0
    assert main(["compress", str(src), str(tmp_path / "y.eoz"), "--model", "tiny-hp"]) == 2   # no target


@pytest.mark.parametrize("kind", ["grid", "grid-lowrank"])
def test_vq_run_exports_with_a_grid_prior_that_codes_its_validation(tmp_path, tiny_split, kind):
    from eoz.entropy import GRID_KIND, LOW_RANK_KIND, PRIOR_KIND
    from eoz.registry import ModelStore
    from eoz.train import export

    run_dir = train(tmp_path / "run", replace(_config(2), index_prior=kind)).parent
    store = ModelStore(tmp_path / "store")
    manifest = export(run_dir, "1", store)
    assert manifest["codec"] == "vqvae-fpn" and len(manifest["codebook_sha256"]) == 2
    marker = GRID_KIND if kind == "grid" else LOW_RANK_KIND
    assert list(store.get("tiny-test", "1").load_weights()[PRIOR_KIND]) == [marker]
    (figures,) = manifest["validation"]["files"].values()   # measured through the real codec
    # an untrained model's indices are near uniform: at worst a tile falls back to fixed length
    assert figures["compression_ratio"] > 0.99 * figures["compression_ratio_fixed_length"] > 1


def test_sar_backscatter_in_db_keeps_its_sign_through_normalization(shared_data):
    """dB values are mostly negative: a linear normalizer and the float split must not clip them."""
    from eoz.normalization import BandNormalizer
    from eoz.train import _psnr

    split = datasets.S1_DB
    crops = datasets.fixed_crops(datasets.load_split(split, "validation"), split.validation_crop)
    assert crops.dtype == np.float32 and (crops < 0).mean() > 0.9
    normalizer = BandNormalizer.fit_linear(crops.transpose(1, 0, 2, 3).reshape(2, -1))
    normalized = np.stack([normalizer.forward(c) for c in crops])
    assert abs(normalized.mean()) < 0.1
    assert np.allclose(normalizer.inverse(normalized[0]), crops[0], atol=1e-4)
    assert _psnr(normalizer, normalized, crops, split) > 90


def test_partition_run_fixes_its_intervals_trains_every_sub_model_and_exports(tmp_path, shared_data, monkeypatch):
    from eoz import train_partition as tp
    from eoz.codecs import codec_for_model
    from eoz.models.hyperprior import HyperpriorConfig
    from eoz.registry import ModelStore

    tiles = [f"enmap_potsdam_hsi_tiles/enmap_potsdam_tile_{t}.tif" for t in ("96_0", "96_32", "160_64")]
    split = replace(datasets.ENMAP_HSI, name="tiny-hsi", train=tuple(tiles[:2]), validation=(tiles[2],))
    monkeypatch.setitem(datasets.SPLITS, split.name, split)
    monkeypatch.setattr(tp, "VALIDATION_PSNRS", (40.0,))
    cfg = TrainConfig(model_id="tiny-hsi", split="tiny-hsi", codec="hyperprior", steps=2, batch_size=2, crop=32,
                      checkpoint_every=2, log_every=2, validate_every=2,
                      model=HyperpriorConfig(in_channels=1, channels=8, latent_channels=8, hyper_channels=8))
    run_dir = tmp_path / "run"
    tp.train_partition(run_dir, cfg)
    intervals = json.loads((run_dir / "intervals.json").read_text())
    assert intervals[0][0] == 0 and intervals[-1][1] == 224 and len(intervals) >= 3
    subs = tp.sub_runs(run_dir, "tiny-hsi")
    assert len(subs) == 2 * len(intervals) and all(_state(d)["step"] == 2 for _, _, d, _ in subs)

    store = ModelStore(tmp_path / "store")
    manifest = tp.export_partition(run_dir, "1", store)
    assert [(s["start"], s["stop"]) for s in manifest["intervals"]] == [tuple(i) for i in intervals]
    assert manifest["intervals"][0]["predicted"]["normalization"]["mean"][0] == pytest.approx(0, abs=20)
    assert len(manifest["bands"]) == 224 and manifest["dtype"] == "int16"
    assert {"mean @ 40 dB", "mean @ 40 dB predicted"} <= set(manifest["validation"])
    assert all(v["psnr"] >= 40 for k, v in manifest["validation"]["files"].items())
    codec = codec_for_model("tiny-hsi", store=store)
    assert len(codec.models) == len(intervals)
