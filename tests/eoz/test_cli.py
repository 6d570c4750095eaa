"""The `eoz` command line on real GeoTIFF crops: compress, info, decompress, eval, models, errors."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
import rasterio

from eoz.cli import main
from eoz.container import EozReader
from eoz.raster import read_raster, write_raster
from tests.conftest import HONOURED, OPTION_VALUES, S2_10M, with_option

EVAL_KEYS = {"bytes", "compression_ratio", "bpp_per_band", "psnr", "ssim", "ssim_per_band",
             "encode_seconds", "decode_seconds"}
VQ_EVAL_KEYS = {"index_bytes_entropy_coded", "index_bytes_fixed_length"}


def _strict_json(text: str):
    """Parse as RFC 8259 JSON: no NaN or Infinity literals."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def run(capsys, *args) -> tuple[int, object, str]:
    """Run `eoz ARGS`; returns (exit code, parsed stdout JSON or None, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def _assert_clean_error(code, out, err, command, *needles):
    assert code == 2
    assert out is None
    assert err.endswith("\n") and err.count("\n") == 1, err  # one line
    assert err.startswith(f"eoz {command}: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.fixture()
def store_env(tiny_store, monkeypatch):
    monkeypatch.setenv("EOZ_MODEL_STORE", str(tiny_store.root))
    return tiny_store


@pytest.fixture()
def scene(tmp_path, shared_data):
    """A real 4-band Sentinel-2 crop (100 x 70) written as a GeoTIFF."""
    array, meta = read_raster(shared_data / S2_10M, window=(500, 400, 100, 70))
    path = tmp_path / "scene.tif"
    write_raster(path, array, meta)
    return path, array, meta


def test_compress_info_decompress_with_window_and_cog(capsys, store_env, scene, tmp_path):
    src, array, meta = scene
    eoz_path = tmp_path / "scene.eoz"
    code, out, err = run(capsys, "compress", src, eoz_path, "--model", "tiny-vq", "--tile-size", 32)
    assert code == 0 and err == ""
    size = eoz_path.stat().st_size
    assert out == {"output": str(eoz_path), "bytes": size, "raw_bytes": array.nbytes,
                   "compression_ratio": pytest.approx(array.nbytes / size),
                   "bpp_per_band": pytest.approx(8 * size / array.size), "tiles": 12,
                   "model_id": "tiny-vq", "model_version": "1", "lossless": False,
                   "quality": {"measured": None, "note": "not measured: --measure decodes the file once to measure it"}}

    code, info, _ = run(capsys, "info", eoz_path)
    assert code == 0
    assert info["format_version"] == 1 and info["file_bytes"] == eoz_path.stat().st_size
    assert info["lossless"] is False
    header = info["header"]
    assert (header["height"], header["width"], header["tile_size"]) == (70, 100, 32)
    assert header["bands"] == ["B02", "B03", "B04", "B08"] and header["dtype"] == "uint16"
    assert header["model_id"] == "tiny-vq" and header["model_version"] == "1"
    assert header["weights_sha256"] == store_env.get("tiny-vq").weights_sha256
    assert header["transform"] == pytest.approx(meta.transform)
    tiles = info["tiles"]
    assert (tiles["count"], tiles["rows"], tiles["cols"]) == (12, 3, 4)
    assert tiles["corrupt"] == []
    assert 0 < tiles["min_bytes"] <= tiles["max_bytes"] < tiles["payload_bytes"] < info["file_bytes"]

    full = tmp_path / "full.tif"
    code, out, _ = run(capsys, "decompress", eoz_path, full)
    assert code == 0
    assert out == {"output": str(full), "width": 100, "height": 70,
                   "bands": ["B02", "B03", "B04", "B08"], "cog": False}
    recon, recon_meta = read_raster(full)
    assert recon.shape == array.shape and recon.dtype == np.uint16
    assert recon_meta == meta

    part = tmp_path / "part.tif"
    code, out, _ = run(capsys, "decompress", eoz_path, part, "--window", 10, 20, 40, 30, "--cog")
    assert code == 0 and out["cog"] is True and (out["width"], out["height"]) == (40, 30)
    window, window_meta = read_raster(part)
    np.testing.assert_array_equal(window, recon[:, 20:50, 10:50])
    a, _, x0, _, e, y0 = meta.transform
    assert window_meta.transform[2] == x0 + 10 * a and window_meta.transform[5] == y0 + 20 * e
    with rasterio.open(part) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    with rasterio.open(full) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG"


def test_info_reports_a_corrupt_tile_without_failing(capsys, store_env, scene, tmp_path):
    src, _, _ = scene
    eoz_path = tmp_path / "scene.eoz"
    assert run(capsys, "compress", src, eoz_path, "--model", "tiny-vq", "--tile-size", 32)[0] == 0
    data = bytearray(eoz_path.read_bytes())
    with EozReader(bytes(data)) as reader:
        entry = reader.entries[5]
    data[entry.offset + entry.length // 2] ^= 0xFF
    eoz_path.write_bytes(bytes(data))
    code, info, _ = run(capsys, "info", eoz_path)
    assert code == 0 and info["tiles"]["corrupt"] == [5]
    code, out, err = run(capsys, "decompress", eoz_path, tmp_path / "out.tif")
    _assert_clean_error(code, out, err, "decompress", "tile 5", "corrupt")
    assert not (tmp_path / "out.tif").exists()


def test_eval_prints_the_documented_keys_consistent_with_compress(capsys, store_env, scene, tmp_path):
    src, array, _ = scene
    code, result, err = run(capsys, "eval", src, "--model", "tiny-vq", "--tile-size", 32, "--overlap", 0)
    assert code == 0 and err == ""
    assert EVAL_KEYS | VQ_EVAL_KEYS <= set(result)
    bands, h, w = array.shape
    assert result["compression_ratio"] == pytest.approx(array.nbytes / result["bytes"])
    assert result["bpp_per_band"] == pytest.approx(8 * result["bytes"] / (h * w * bands))
    assert len(result["ssim_per_band"]) == 4
    assert result["ssim"] == pytest.approx(np.mean(result["ssim_per_band"]))
    assert result["encode_seconds"] > 0 and result["decode_seconds"] > 0
    assert 0 < result["index_bytes_entropy_coded"] < result["bytes"]
    # tiny-vq: stride 4, levels at 1/2 (16 codes, 4 bits) and 1/4 (32 codes, 5 bits). Tiles of
    # 100x70 in 32s: 6 full (168 B), 2 of 32x4 (21 B), 3 of 8x32 (42 B, 6 rows padded to 8),
    # 1 of 8x4 (5.25 B)
    assert result["index_bytes_fixed_length"] == round(6 * 168 + 2 * 21 + 3 * 42 + 5.25)

    # eval measures what compress writes, and its PSNR is that of the decompressed file
    eoz_path = tmp_path / "scene.eoz"
    run(capsys, "compress", src, eoz_path, "--model", "tiny-vq", "--tile-size", 32, "--overlap", 0)
    assert result["bytes"] == eoz_path.stat().st_size
    run(capsys, "decompress", eoz_path, tmp_path / "back.tif")
    recon, _ = read_raster(tmp_path / "back.tif")
    mse = np.mean((recon.astype(np.float64) - array) ** 2)
    assert result["psnr"] == pytest.approx(10 * math.log10(10000.0 ** 2 / mse))


def test_default_overlap_codes_context_around_each_tile(capsys, store_env, scene, tmp_path):
    src, array, _ = scene
    _, plain, _ = run(capsys, "eval", src, "--model", "tiny-vq", "--tile-size", 32, "--overlap", 0)
    _, overlapped, _ = run(capsys, "eval", src, "--model", "tiny-vq", "--tile-size", 32)
    assert overlapped["index_bytes_fixed_length"] > plain["index_bytes_fixed_length"]
    run(capsys, "compress", src, tmp_path / "x.eoz", "--model", "tiny-vq", "--tile-size", 32)
    _, info, _ = run(capsys, "info", tmp_path / "x.eoz")
    assert info["header"]["overlap"] == 8
    run(capsys, "decompress", tmp_path / "x.eoz", tmp_path / "x.tif", "--window", 20, 10, 40, 30)
    window, _ = read_raster(tmp_path / "x.tif")
    run(capsys, "decompress", tmp_path / "x.eoz", tmp_path / "full.tif")
    np.testing.assert_array_equal(window, read_raster(tmp_path / "full.tif")[0][:, 10:40, 20:60])


def test_eval_of_jpeg2000_has_no_index_keys(capsys, scene):
    src, _, _ = scene
    code, result, _ = run(capsys, "eval", src, "--model", "jpeg2000", "--quality", 40, "--tile-size", 64)
    assert code == 0
    assert EVAL_KEYS <= set(result) and not VQ_EVAL_KEYS & set(result)
    assert result["codec"] == "jpeg2000" and math.isfinite(result["psnr"])


def test_eval_output_is_strict_json_for_a_lossless_codec(capsys, scene):
    src, _, _ = scene
    assert main(["eval", str(src), "--model", "jpeg2000", "--lossless", "--tile-size", "64"]) == 0
    result = _strict_json(capsys.readouterr().out)
    assert result["bytes"] > 0


def test_jpeg2000_lossless_round_trip_is_bit_exact(capsys, scene, tmp_path):
    src, array, meta = scene
    eoz_path = tmp_path / "lossless.eoz"
    code, out, _ = run(capsys, "compress", src, eoz_path, "--model", "jpeg2000", "--lossless",
                       "--tile-size", 64)
    assert code == 0 and out["model_id"] == "jpeg2000" and out["tiles"] == 4
    code, info, _ = run(capsys, "info", eoz_path)
    assert info["header"]["codec"] == "jpeg2000" and info["header"]["quality"]["lossless"] is True
    assert run(capsys, "decompress", eoz_path, tmp_path / "back.tif")[0] == 0
    back, back_meta = read_raster(tmp_path / "back.tif")
    np.testing.assert_array_equal(back, array)
    assert back_meta == meta


def _flags(options: dict) -> list:
    """Options as `eoz` flags: --name-with-dashes, and a value unless it is a flag."""
    return [a for name, value in options.items()
            for a in [f"--{name.replace('_', '-')}"] + ([] if value is True else value if isinstance(value, list)
                                                          else [value])]


REFUSED = [(model, option) for model in sorted(HONOURED) for option in OPTION_VALUES
           if option not in HONOURED[model]]


@pytest.mark.parametrize("command", ["compress", "eval"])
@pytest.mark.parametrize("model, option", REFUSED)
def test_an_option_the_model_cannot_honour_is_refused(capsys, codec_env, scene, tmp_path, command, model, option):
    src, _, _ = scene
    out_path = [tmp_path / "x.eoz"] if command == "compress" else []
    code, out, err = run(capsys, command, src, *out_path, "--model", model, *_flags(with_option(model, option)))
    flag = f"--{option.replace('_', '-')}"
    _assert_clean_error(code, out, err, command, f"cannot honour {option} ({flag})", "models: ")
    assert not (tmp_path / "x.eoz").exists()


def test_auto_with_lossless_picks_the_predictive_model_and_verify_proves_it(capsys, codec_env, scene, tmp_path):
    """The auto pick for a 4-band S2 raster is a VQ model; with --lossless it is the predictive one."""
    src, array, meta = scene
    eoz_path = tmp_path / "auto.eoz"
    code, out, err = run(capsys, "compress", src, eoz_path, "--model", "auto", "--lossless", "--tile-size", 64)
    assert code == 0 and out["model_id"] == "tiny-predictive" and out["lossless"] is True
    assert err == f"eoz: --model auto picked {out['picked']}\n"
    code, info, _ = run(capsys, "info", eoz_path)
    assert info["lossless"] is True and info["header"]["quality"]["lossless"] is True
    code, report, _ = run(capsys, "verify", eoz_path, src)
    assert code == 0 and report["verified"] and report["exact"] and report["max_error_per_band"] == [0.0] * 4
    assert run(capsys, "decompress", eoz_path, tmp_path / "back.tif")[0] == 0
    back, back_meta = read_raster(tmp_path / "back.tif")
    np.testing.assert_array_equal(back, array)
    assert back_meta == meta
    code, out, _ = run(capsys, "compress", src, tmp_path / "vq.eoz", "--model", "auto", "--tile-size", 64)
    assert code == 0 and out["model_id"] == "tiny-vq" and out["lossless"] is False
    code, out, err = run(capsys, "compress", src, tmp_path / "default.eoz", "--lossless", "--tile-size", 64)
    assert code == 0 and out["model_id"] == "tiny-predictive", "without --model, auto picks"
    assert err == f"eoz: --model auto picked {out['picked']}\n"


def test_threads_write_the_same_file_and_decode_the_same_raster(capsys, codec_env, scene, tmp_path):
    src, array, meta = scene
    files = []
    for threads in (1, 3):
        files.append(tmp_path / f"t{threads}.eoz")
        code, out, _ = run(capsys, "compress", src, files[-1], "--max-error", 2, "--tile-size", 64,
                           "--threads", threads, "--measure")
        assert code == 0 and out["tiles"] == 4 and out["quality"]["measured"]["mse"] > 0
    assert files[0].read_bytes() == files[1].read_bytes()
    assert run(capsys, "decompress", files[1], tmp_path / "back.tif", "--threads", 0)[0] == 0
    code, report, _ = run(capsys, "verify", files[1], src, "--threads", 2)
    assert code == 0 and report["verified"] and report["bound_per_band"] == [2] * 4
    back, back_meta = read_raster(tmp_path / "back.tif")
    assert back_meta == meta and np.abs(back.astype(int) - array).max() <= 2
    evaluated = [run(capsys, "eval", src, "--max-error", 2, "--tile-size", 64, "--threads", threads)[1]
                 for threads in (1, 3)]
    assert [e["bytes"] for e in evaluated] == [files[0].stat().st_size] * 2
    assert evaluated[0]["psnr"] == evaluated[1]["psnr"] and max(evaluated[1]["max_error_per_band"]) <= 2
    with pytest.raises(SystemExit) as done:
        main(["decompress", str(files[1]), str(tmp_path / "x.tif"), "--threads", "-1"])
    assert done.value.code == 2 and not (tmp_path / "x.tif").exists()
    assert "argument --threads: 0 (one per CPU core) or more, not -1" in capsys.readouterr().err


def test_max_error_holds_per_band_and_verify_fails_on_another_original(capsys, codec_env, scene, tmp_path):
    src, array, meta = scene
    eoz_path = tmp_path / "bounded.eoz"
    code, out, _ = run(capsys, "compress", src, eoz_path, "--model", "auto", "--max-error", 0, 2, 8, 30,
                       "--tile-size", 64)
    assert code == 0 and out["model_id"] == "tiny-predictive" and out["lossless"] is False
    code, report, _ = run(capsys, "verify", eoz_path, src)
    assert code == 0 and report["verified"] and not report["exact"]
    assert report["bound_per_band"] == [0, 2, 8, 30]
    assert all(e <= b for e, b in zip(report["max_error_per_band"], [0, 2, 8, 30]))
    assert report["max_error_per_band"][3] > 2
    code, result, _ = run(capsys, "eval", src, "--model", "tiny-predictive", "--max-error", 4, "--tile-size", 64)
    assert code == 0 and max(result["max_error_per_band"]) <= 4
    other = tmp_path / "other.tif"
    write_raster(other, (array + 50).astype(array.dtype), meta)
    code, report, _ = run(capsys, "verify", eoz_path, other)
    assert code == 1 and report["verified"] is False and min(report["max_error_per_band"]) >= 20
    assert report["description_differs"] == []
    described = dataclasses.replace(meta, nodata=7.0, metadata={"tags": {"PROCESSING_LEVEL": "L1C"}, "scales": [2.0] * 4})
    write_raster(other, array, described)   # the same pixels, described otherwise: not what the file gives back
    code, report, _ = run(capsys, "verify", eoz_path, other)
    assert code == 1 and report["verified"] is False and report["description_differs"] == ["nodata", "scales", "tags"]
    code, out, err = run(capsys, "compress", src, tmp_path / "x.eoz", "--model", "tiny-predictive",
                         "--max-error", 1.5)
    _assert_clean_error(code, out, err, "compress", "whole numbers")


def test_options_reach_the_codec_and_its_header(capsys, codec_env, scene, tmp_path):
    src, _, _ = scene
    for model, options, quality in (
            ("tiny-hp", {"psnr": 40.0, "block": 32, "open_loop": True, "peak": 20000.0},
             {"psnr": 40.0, "block": 32, "closed_loop": False, "peak": 20000.0}),
            ("jpeg2000", {"psnr": 45.0, "klt": True, "peak": 20000.0},
             {"target_psnr": 45.0, "klt": True, "peak": 20000.0})):
        eoz_path = tmp_path / f"{model}.eoz"
        code, _, _ = run(capsys, "compress", src, eoz_path, "--model", model, *_flags(options), "--tile-size", 64)
        assert code == 0
        header = run(capsys, "info", eoz_path)[1]["header"]
        assert quality.items() <= header["quality"].items(), header["quality"]


def test_fast_picks_the_predictive_model_and_writes_tiles_without_the_learned_correction(
        capsys, codec_env, scene, tmp_path, monkeypatch):
    """--fast alone: auto takes the predictive model, lossless, without the learned correction
    (the tile's flags byte says so); --max-error bounds it."""
    from eoz.codecs.predictive import FORMAT, UNLEARNED, PredictiveCodec

    src, array, _ = scene
    formats, decode_tile = set(), PredictiveCodec.decode_tile
    monkeypatch.setattr(PredictiveCodec, "decode_tile", lambda self, payload, *shape, valid=None:
                        formats.add((payload[0], payload[26])) or decode_tile(self, payload, *shape, valid=valid))
    for flags, bound in ((["--fast"], 0), (["--fast", "--max-error", "5"], 5)):
        out = tmp_path / f"fast{bound}.eoz"
        code, result, _ = run(capsys, "compress", src, out, *flags, "--tile-size", 64)
        assert code == 0 and result["model_id"] == "tiny-predictive" and result["lossless"] == (bound == 0)
        assert run(capsys, "decompress", out, tmp_path / f"fast{bound}.tif")[0] == 0
        assert formats == {(FORMAT, UNLEARNED)}
        decoded, _ = read_raster(tmp_path / f"fast{bound}.tif")
        assert np.abs(decoded.astype(np.int64) - array.astype(np.int64)).max() <= bound


def test_models_lists_the_store_and_jpeg2000(capsys, store_env):
    code, models, _ = run(capsys, "models", "--json")
    assert code == 0
    assert [m["model_id"] for m in models] == ["tiny-vq", "jpeg2000"]
    tiny = models[0]
    assert tiny["version"] == "1" and tiny["codec"] == "vqvae-fpn"
    assert tiny["weights_sha256"] == store_env.get("tiny-vq").weights_sha256
    assert tiny["bands"] == ["B02", "B03", "B04", "B08"]
    assert models[1]["codec"] == "jpeg2000"


def test_unknown_model_is_a_clean_error(capsys, store_env, scene, tmp_path):
    src, _, _ = scene
    code, out, err = run(capsys, "compress", src, tmp_path / "x.eoz", "--model", "nope")
    _assert_clean_error(code, out, err, "compress", "no model 'nope'", "tiny-vq")
    code, out, err = run(capsys, "compress", src, tmp_path / "x.eoz", "--model", "tiny-vq",
                         "--version", "7")
    _assert_clean_error(code, out, err, "compress", "no version '7'")
    code, out, err = run(capsys, "eval", src, "--model", "nope")
    _assert_clean_error(code, out, err, "eval", "no model 'nope'")
    assert not (tmp_path / "x.eoz").exists()


def test_non_geotiff_input_is_a_clean_error(capsys, store_env, tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster\n")
    code, out, err = run(capsys, "compress", text, tmp_path / "x.eoz", "--model", "tiny-vq")
    _assert_clean_error(code, out, err, "compress", "GeoTIFF")
    png = tmp_path / "image.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(png, "w", driver="PNG", width=8, height=8, count=1, dtype="uint8") as ds:
            ds.write(np.zeros((1, 8, 8), np.uint8))
    code, out, err = run(capsys, "compress", png, tmp_path / "x.eoz", "--model", "jpeg2000", "--lossless")
    _assert_clean_error(code, out, err, "compress", "GeoTIFF")
    assert not (tmp_path / "x.eoz").exists()


def test_corrupt_or_foreign_eoz_is_a_clean_error(capsys, store_env, scene, tmp_path):
    src, _, _ = scene
    junk = tmp_path / "junk.eoz"
    junk.write_bytes(b"GIF89a" + bytes(100))
    for command in ("info", "decompress"):
        extra = [tmp_path / "out.tif"] if command == "decompress" else []
        code, out, err = run(capsys, command, junk, *extra)
        _assert_clean_error(code, out, err, command)
    # a real file cut short
    good = tmp_path / "good.eoz"
    run(capsys, "compress", src, good, "--model", "jpeg2000", "--quality", 40, "--tile-size", 64)
    cut = tmp_path / "cut.eoz"
    cut.write_bytes(good.read_bytes()[:-20])
    code, out, err = run(capsys, "decompress", cut, tmp_path / "out.tif")
    _assert_clean_error(code, out, err, "decompress")
    assert not (tmp_path / "out.tif").exists()


def test_missing_files_are_a_clean_error(capsys, store_env, tmp_path):
    code, out, err = run(capsys, "compress", tmp_path / "missing.tif", tmp_path / "x.eoz",
                         "--model", "tiny-vq")
    _assert_clean_error(code, out, err, "compress", "missing.tif")
    code, out, err = run(capsys, "decompress", tmp_path / "missing.eoz", tmp_path / "x.tif")
    _assert_clean_error(code, out, err, "decompress", "missing.eoz")
    code, out, err = run(capsys, "info", tmp_path / "missing.eoz")
    _assert_clean_error(code, out, err, "info", "missing.eoz")


def test_bad_options_are_clean_errors(capsys, store_env, scene, tmp_path):
    src, _, _ = scene
    code, out, err = run(capsys, "compress", src, tmp_path / "x.eoz", "--model", "jpeg2000")
    _assert_clean_error(code, out, err, "compress", "quality")
    code, out, err = run(capsys, "compress", src, tmp_path / "x.eoz", "--model", "tiny-vq",
                         "--tile-size", 30)
    _assert_clean_error(code, out, err, "compress", "stride")
    eoz_path = tmp_path / "ok.eoz"
    run(capsys, "compress", src, eoz_path, "--model", "jpeg2000", "--lossless", "--tile-size", 64)
    code, out, err = run(capsys, "decompress", eoz_path, tmp_path / "w.tif", "--window", 90, 0, 20, 10)
    _assert_clean_error(code, out, err, "decompress", "not inside")
    code, out, err = run(capsys, "train", "no-such-model")
    _assert_clean_error(code, out, err, "train", "no training recipe")


def test_output_folder_missing_is_a_clean_error(capsys, scene, tmp_path):
    src, _, _ = scene
    eoz_path = tmp_path / "ok.eoz"
    run(capsys, "compress", src, eoz_path, "--model", "jpeg2000", "--lossless", "--tile-size", 64)
    code, out, err = run(capsys, "decompress", eoz_path, tmp_path / "no" / "such" / "out.tif")
    _assert_clean_error(code, out, err, "decompress")
