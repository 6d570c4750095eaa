"""`eoz verify`: does a .eoz decode to its original raster, exactly or within its stated bound?

Archives check a file against the scene it replaces before deleting the scene. The check
decodes tile by tile beside a windowed read of the original (memory bounded by the tile)
and reports the largest error of each band; lossless tiles are also checked against their
own sha256 while they decode (eoz.codecs.predictive), so a damaged file fails either way.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from eoz import metrics
from eoz.container import EozReader
from eoz.errors import InputError
from eoz.evaluation import stated_quality
from eoz.raster import RasterMeta, RasterReader
from eoz.registry import ModelStore
from eoz.scene import decode_scene, decode_valid, header_meta


def verify(eoz_path: str | Path, original_path: str | Path, store: ModelStore | None = None,
           threads: int = 1) -> dict:
    """{"verified", "exact", "max_error_per_band", "bound_per_band", "description_differs"}: verified
    when every sample is exact (lossless files and files with no bound) or within the file's
    max_error, and the file describes the raster as the original does (``description_differs``
    names what it does not: its CRS, geotransform, nodata, band names, a GDAL metadata field such
    as its tags or GCPs (which files written before session 22 dropped; its colours and mask band,
    before session 23), or its mask band's pixels); ``threads`` tiles decode at once (as
    ``decode_scene``)."""
    with EozReader(eoz_path) as reader, RasterReader(original_path) as original:
        header, meta = reader.header, original.meta
        if (meta.count, meta.height, meta.width) != (len(header.bands), header.height, header.width):
            raise InputError(f"the original is {meta.count} x {meta.height} x {meta.width}, the file codes "
                             f"{len(header.bands)} x {header.height} x {header.width}")
        worst = np.zeros(meta.count)
        for piece, col, row in decode_scene(reader, store=store, threads=threads):
            source = original.read((col, row, piece.shape[2], piece.shape[1]))[0]
            worst = np.maximum(worst, metrics.max_error_per_band(source, piece))
        differs = _description_differences(replace(header_meta(header), metadata=header.metadata), meta)
        if "mask" in header.metadata and "mask" in meta.metadata and not all(
                (valid == original.read_valid((col, row, valid.shape[1], valid.shape[0]))).all()
                for valid, col, row in decode_valid(reader)):
            differs.append("mask pixels")
    bound = stated_quality(header).get("max_error_per_band", [0.0] * meta.count)
    return {"verified": bool((worst <= np.asarray(bound)).all()) and not differs, "exact": bool((worst == 0).all()),
            "lossless_file": header.lossless,
            "max_error_per_band": worst.tolist(), "bound_per_band": bound, "description_differs": differs}


def _description_differences(decoded: RasterMeta, original: RasterMeta) -> list[str]:
    """The names of what the decoded raster's description does not share with the original's."""
    differ = [name for name in ("crs", "transform", "band_names") if getattr(decoded, name) != getattr(original, name)]
    if not (decoded.nodata == original.nodata or (decoded.nodata is not None and original.nodata is not None
                                                  and np.isnan(decoded.nodata) and np.isnan(original.nodata))):
        differ.append("nodata")
    keys = sorted(set(decoded.metadata) | set(original.metadata))
    return differ + [key for key in keys if decoded.metadata.get(key) != original.metadata.get(key)]
