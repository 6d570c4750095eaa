"""The job functions run directly in a context: results, measurements, reruns, model archive."""

from __future__ import annotations


import numpy as np
import pytest
import rasterio

from eoz.scene import decompress_array
from eoz.errors import InputError
from eoz.raster import read_raster, write_raster
from eoz.registry import ModelStore
from workers import context, jobs
from workers.errors import SourceNotAllowedError
from workers.keys import upload_key
from workers.settings import Settings
from workers.store import FilesystemStore
from tests.workers.servers import scene_psnr


@pytest.fixture()
def job_env(service_env, tmp_path):
    settings = Settings()
    store = FilesystemStore(tmp_path / "store")
    progress: list[float] = []
    return settings, store, progress


def run(job_env, function, *args, **kwargs):
    settings, store, progress = job_env
    with context.running(context.JobContext(settings, store, progress.append)):
        return function(*args, **kwargs)


def test_compress_measures_what_it_stored(job_env, scene):
    path, array, meta = scene
    _, store, progress = job_env
    store.put_file(upload_key("a" * 32, ".tif"), path)
    result = run(job_env, jobs.compress, "a" * 32, upload_key("a" * 32, ".tif"), "jpeg2000",
                 params={"psnr": 45.0}, tile_size=64)
    assert result["key"] == f"results/{'a' * 32}/output.eoz"
    assert result["bytes"] == store.size(result["key"])
    assert result["input_bytes"] == path.stat().st_size
    local = job_env[0].data_dir / "out.eoz"
    store.get_file(result["key"], local)
    recon, _ = decompress_array(local.read_bytes())
    assert result["psnr"] == pytest.approx(scene_psnr(array, recon))
    assert result["psnr"] >= 45.0 and result["psnr_peak"] == 10000.0
    assert result["compression_ratio"] == pytest.approx(array.nbytes / result["bytes"])
    assert result["tiles"] == 4 and result["bands"] == meta.band_names
    assert progress == sorted(progress) and 0 <= progress[0] and progress[-1] <= 1


def test_a_rerun_leaves_exactly_one_result(job_env, scene):
    path, _, _ = scene
    _, store, _ = job_env
    job_id = "b" * 32
    store.put_file(upload_key(job_id, ".tif"), path)
    first = run(job_env, jobs.compress, job_id, upload_key(job_id, ".tif"), "jpeg2000", params={"quality": 40.0})
    second = run(job_env, jobs.compress, job_id, upload_key(job_id, ".tif"), "jpeg2000", params={"quality": 40.0})
    assert first["key"] == second["key"]
    assert store.keys("results/") == [first["key"]]
    assert store.keys("tmp/") == []
    assert not any(job_env[0].scratch_dir.iterdir())  # scratch folders are removed


def test_lossless_reports_an_exact_reconstruction(job_env, scene):
    path, _, _ = scene
    job_env[1].put_file("uploads/x/input.tif", path)
    result = run(job_env, jobs.compress, "c" * 32, "uploads/x/input.tif", "jpeg2000", params={"lossless": True})
    assert result["mse"] == 0 and result["psnr"] is None


def test_model_versions_are_archived_and_decode_after_the_store_moved_on(job_env, scene, monkeypatch, tmp_path):
    path, array, meta = scene
    settings, store, _ = job_env
    store.put_file("uploads/d/input.tif", path)
    result = run(job_env, jobs.compress, "d" * 32, "uploads/d/input.tif", "tiny-vq", tile_size=64)
    sha = result["weights_sha256"]
    assert store.keys(f"models/{sha}/") == [f"models/{sha}/manifest.json", f"models/{sha}/weights.safetensors"]

    monkeypatch.setenv("EOZ_MODEL_STORE", str(tmp_path / "a-newer-empty-model-store"))
    decoded = run(job_env, jobs.decompress, "e" * 32, result["key"], window=[16, 8, 100, 90])
    out = tmp_path / "decoded.tif"
    store.get_file(decoded["key"], out)
    window, _ = read_raster(out)
    assert window.shape == (4, 90, 100)
    assert (settings.model_cache_dir / sha).is_dir()

    encoded = tmp_path / "scene.eoz"
    store.get_file(result["key"], encoded)
    full, _ = decompress_array(encoded.read_bytes(), store=ModelStore(settings.model_cache_dir / sha))
    np.testing.assert_array_equal(window, full[:, 8:98, 16:116])


def test_decompress_writes_a_georeferenced_cog_window(job_env, scene, tmp_path):
    path, array, meta = scene
    _, store, _ = job_env
    store.put_file("uploads/f/input.tif", path)
    encoded = run(job_env, jobs.compress, "f" * 32, "uploads/f/input.tif", "jpeg2000", params={"lossless": True})
    result = run(job_env, jobs.decompress, "g" * 32, encoded["key"], format="cog", window=[10, 20, 64, 32])
    out = tmp_path / "window.tif"
    store.get_file(result["key"], out)
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        np.testing.assert_array_equal(ds.read(), array[:, 20:52, 10:74])  # lossless
        a, b, c, d, e, f = meta.transform
        assert list(ds.transform)[:6] == pytest.approx([a, b, c + 10 * a, d, e, f + 20 * e])
        assert ds.crs.to_wkt() == meta.crs


def test_eoz_tile_threads_codes_a_jobs_tiles_at_once_to_the_same_bytes(job_env, scene, monkeypatch, tmp_path):
    path, array, _ = scene
    _, store, _ = job_env
    store.put_file("uploads/t/input.tif", path)
    monkeypatch.setenv("EOZ_TILE_THREADS", "3")
    threaded = (Settings(), store, [])
    assert threaded[0].tile_threads == 3
    keys = [run(env, jobs.compress, job_id * 32, "uploads/t/input.tif", "jpeg2000", params={"lossless": True},
                tile_size=64)["key"] for env, job_id in ((job_env, "s"), (threaded, "t"))]
    files = [tmp_path / "serial.eoz", tmp_path / "threaded.eoz"]
    for key, local in zip(keys, files):
        store.get_file(key, local)
    assert files[0].read_bytes() == files[1].read_bytes()
    result = run(threaded, jobs.decompress, "u" * 32, keys[1])
    store.get_file(result["key"], tmp_path / "back.tif")
    with rasterio.open(tmp_path / "back.tif") as ds:
        np.testing.assert_array_equal(ds.read(), array)
    monkeypatch.setenv("EOZ_TILE_THREADS", "-1")
    with pytest.raises(ValueError, match="tile_threads"):
        Settings()


def test_jobs_recheck_their_inputs(job_env, scene, monkeypatch):
    path, _, _ = scene
    job_env[1].put_file("uploads/h/input.tif", path)
    with pytest.raises(SourceNotAllowedError):
        run(job_env, jobs.compress, "h" * 32, "incoming/x.tif", "jpeg2000", source_bucket="other",
            params={"quality": 40.0})
    monkeypatch.setenv("EOZ_MAX_PIXELS", "1000")  # the API checked with other limits
    small = (Settings(), job_env[1], job_env[2])
    with pytest.raises(InputError, match="too large"):
        run(small, jobs.compress, "h" * 32, "uploads/h/input.tif", "jpeg2000", params={"quality": 40.0})
    with pytest.raises(InputError, match="format must be one of"):
        run(job_env, jobs.decompress, "i" * 32, "uploads/h/input.tif", format="png")


def test_the_report_is_at_the_peak_the_target_was_set_at(job_env, scene, tmp_path):
    """Bytes: 255 for the target and the report alike (the target once sat at 10000, the report at 255)."""
    _, array, meta = scene
    path = tmp_path / "bytes.tif"
    meta.dtype = "uint8"
    write_raster(path, np.clip(array / 16, 0, 255).astype(np.uint8), meta)
    job_env[1].put_file("uploads/j/input.tif", path)
    result = run(job_env, jobs.compress, "j" * 32, "uploads/j/input.tif", "jpeg2000", params={"psnr": 40.0},
                 tile_size=64)
    assert result["psnr_peak"] == 255.0 and result["psnr"] >= 40.0


def test_jobs_refuse_what_the_model_cannot_honour_or_take(job_env, scene, tmp_path):
    """An S3 source meets the resolver only in its job: the same refusals as the API's."""
    _, array, meta = scene
    job_env[1].put_file("uploads/k/input.tif", scene[0])
    with pytest.raises(InputError, match="cannot honour lossless"):
        run(job_env, jobs.compress, "k" * 32, "uploads/k/input.tif", "tiny-vq", params={"lossless": True})
    path = tmp_path / "float.tif"
    meta.dtype = "float32"
    write_raster(path, array.astype(np.float32) / 10000, meta)
    job_env[1].put_file("uploads/l/input.tif", path)
    with pytest.raises(InputError, match="trained on uint16"):
        run(job_env, jobs.compress, "l" * 32, "uploads/l/input.tif", "tiny-hp", params={"psnr": 40.0})
