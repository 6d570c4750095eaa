"""The Python API: ``eoz.compress``, ``eoz.decompress`` and ``eoz.open``, for scripts.

Archive systems script in Python, not in a shell. These calls are the CLI's ``compress`` and
``decompress`` with the same options and the same resolver (``eoz.resolve.resolve``), so a
script and the command line pick the same model and refuse the same requests, plus a reader
in rasterio's style whose ``read(window=...)`` decodes only the tiles the window touches.
Nothing heavy is imported here: the codecs (and torch, for the learned ones) load on the
first call, so ``import eoz`` stays cheap for scripts that only inspect files.
"""

from __future__ import annotations

import builtins
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eoz.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    from rasterio.enums import ColorInterp

    from eoz.container import Header
    from eoz.raster import RasterMeta

__all__ = ["Compressed", "EozDataset", "compress", "decompress", "open"]

PathLike = str | os.PathLike
Window = tuple[int, int, int, int]   # (col_off, row_off, width, height), or a rasterio Window
_WINDOW_FIELDS = ("col_off", "row_off", "width", "height")


@dataclass(frozen=True)
class Compressed:
    """What ``compress`` wrote: the file, its size and ratio, and the model that coded it."""

    path: Path
    bytes: int
    ratio: float                # raw sample bytes / file bytes
    model_id: str               # the model, or the codec for jpeg2000
    model_version: str | None
    tiles: int
    lossless: bool              # decodes bit for bit
    picked: str | None = None   # model="auto": which model it picked, and why


def compress(src: PathLike, dst: PathLike, model: str = "auto", *, version: str | None = None,
             psnr: float | None = None, mse: float | None = None, lmbda: float | None = None,
             block: int | None = None, peak: float | None = None, open_loop: bool = False,
             lossless: bool = False, max_error: float | list[float] | None = None, fast: bool = False,
             quality: float | None = None, klt: bool = False, rate_weight: float | None = None,
             no_band_prediction: bool = False, tile_size: int | None = None,
             overlap: int | None = None, threads: int = 1) -> Compressed:
    """Compress the GeoTIFF ``src`` into the .eoz file ``dst``, as ``eoz compress`` does.

    ``model``: a model id from ``eoz models``, ``"jpeg2000"`` or ``"auto"`` (picked from the
    raster's bands and dtype among the models that honour every option given; the pick is in
    ``Compressed.picked``). The options are the CLI's flags (``lmbda`` is ``--lambda``;
    ``block`` is 16, 32, 64 or None for one target per tile). An option the model cannot
    honour raises :class:`eoz.InputError` naming the models that take it; it is never dropped.
    ``threads``: tiles coded at once (0: one per CPU core), the same bytes. Nothing appears at
    ``dst`` unless the whole file was written.
    """
    from eoz.evaluation import size_figures
    from eoz.raster import read_meta
    from eoz.resolve import resolve
    from eoz.scene import compress_file

    options = {"psnr": psnr, "mse": mse, "lambda": lmbda, "block": block, "peak": peak, "open_loop": open_loop,
               "quality": quality, "lossless": lossless, "klt": klt, "rate_weight": rate_weight,
               "no_band_prediction": no_band_prediction, "max_error": max_error, "fast": fast}
    resolved = resolve(model, version, options, read_meta(src))
    header = compress_file(src, dst, resolved.codec(), tile_size=tile_size, overlap=overlap, threads=threads)
    size = Path(dst).stat().st_size
    ratio = size_figures(header.height, header.width, len(header.bands), header.dtype, size)["compression_ratio"]
    return Compressed(path=Path(dst), bytes=size, ratio=ratio, model_id=header.model_id or header.codec,
                      model_version=header.model_version, tiles=header.tile_count, lossless=header.lossless,
                      picked=resolved.reason)


def decompress(src: PathLike, dst: PathLike, window: Window | None = None, cog: bool = False,
               threads: int = 1) -> dict:
    """Decode the .eoz file ``src`` (or a window of it) into the GeoTIFF ``dst``, georeferenced;
    ``cog=True`` writes a Cloud-Optimized GeoTIFF; ``threads`` tiles decode at once (0: one per
    CPU core). Returns the written raster's profile."""
    from eoz.scene import decompress_file

    return profile(decompress_file(src, dst, _window(window), cog, threads=threads))


def open(path: PathLike) -> EozDataset:   # shadows the builtin inside eoz, as rasterio.open does
    """Open a .eoz file for reading: ``with eoz.open(path) as ds: ds.read(window=...)``."""
    return EozDataset(path)


class EozDataset:
    """An open .eoz file, read as a rasterio dataset is: ``profile``, ``descriptions`` and
    ``read(window=...)``, which decodes only the tiles the window touches.

    ``header`` is the container header (model, pins, quality settings, tile grid); ``meta``
    the decoded raster's :class:`eoz.raster.RasterMeta`. Opening reads the header and the
    tile table only.
    """

    def __init__(self, path: PathLike):
        from eoz.container import EozReader
        from eoz.scene import header_meta

        self.name = os.fspath(path)
        self._file = builtins.open(path, "rb")
        try:
            with EozReader(self._file) as reader:   # the file object stays open for read()
                self.header: Header = reader.header
        except BaseException:
            self._file.close()
            raise
        self.meta: RasterMeta = header_meta(self.header)
        self.profile = profile(self.meta)

    @property
    def descriptions(self) -> tuple[str, ...]:
        """Band names, as rasterio's ``descriptions``."""
        return tuple(self.meta.band_names)

    def tags(self, bidx: int = 0, ns: str | None = None) -> dict[str, str]:
        """The source GeoTIFF's tags, of the dataset (0) or of band ``bidx`` (from 1), in the default
        domain or metadata domain ``ns``, as rasterio's ``tags``: RPC gives the RPCs, a band's
        IMAGE_STRUCTURE its NBITS, where the decoded GeoTIFF has them."""
        if bidx and not 1 <= bidx <= self.meta.count:
            raise IndexError(f"band index {bidx} out of range (1 to {self.meta.count})")
        metadata = self.meta.metadata
        if ns == "RPC" and bidx == 0:
            return dict(metadata.get("rpcs", {}))
        if ns == "IMAGE_STRUCTURE" and bidx:
            return {"NBITS": str(metadata["nbits"])} if "nbits" in metadata else {}
        if ns:
            domains = metadata.get("domains", {}) if bidx == 0 else self._band_metadata("band_domains")[bidx - 1]
            return dict(domains.get(ns, {}))
        return dict(metadata.get("tags", {}) if bidx == 0 else self._band_metadata("band_tags")[bidx - 1])

    @property
    def scales(self) -> tuple[float, ...]:
        """Each band's scale, as rasterio's: a value means value x scale + offset."""
        return tuple(self._band_metadata("scales"))

    @property
    def offsets(self) -> tuple[float, ...]:
        return tuple(self._band_metadata("offsets"))

    @property
    def units(self) -> tuple[str | None, ...]:
        """Each band's unit, None where it has none (as rasterio's)."""
        return tuple(unit or None for unit in self._band_metadata("units"))

    def _band_metadata(self, key: str) -> list:
        from eoz.raster import band_metadata

        return band_metadata(self.meta.metadata, key, self.meta.count)

    @property
    def colorinterp(self) -> tuple[ColorInterp, ...]:
        """How viewers show each band, as rasterio's ``colorinterp``."""
        from eoz.raster import colour_interpretations

        return tuple(colour_interpretations(self.meta.metadata, self.meta.count, self.meta.dtype))

    def colormap(self, bidx: int) -> dict[int, tuple[int, int, int, int]]:
        """Band ``bidx``'s colour map as rasterio's ``colormap`` (only band 1 can have one; a
        TIFF's names every value of the dtype: those the source did not name are black)."""
        import numpy as np

        from eoz.raster import BLACK

        if "colormap" not in self.meta.metadata or bidx != 1:
            raise ValueError(f"band {bidx} has no colour map")
        named = {value: tuple(rgba) for value, *rgba in self.meta.metadata["colormap"]}
        return {value: named.get(value, BLACK) for value in range(2 ** (8 * np.dtype(self.meta.dtype).itemsize))}

    @property
    def closed(self) -> bool:
        return self._file.closed

    def read(self, window: Window | None = None) -> np.ndarray:
        """All bands as (bands, height, width) in the file's dtype, of the whole raster or of a
        ``(col_off, row_off, width, height)`` window (or a rasterio ``Window``) in whole pixels."""
        from eoz.scene import decompress_array

        if self.closed:
            raise ValueError(f"{self.name} is closed")
        array, _ = decompress_array(self._file, _window(window))
        return array

    def dataset_mask(self, window: Window | None = None) -> np.ndarray:
        """uint8, 255 where a pixel is valid and 0 where not, as rasterio's ``dataset_mask``: the
        raster's mask band where the file keeps one (read without decoding a pixel), else valid
        where any band is not nodata (which decodes the window)."""
        import numpy as np

        from eoz.container import EozReader
        from eoz.scene import valid_array

        box = _window(window)
        if "mask" not in self.meta.metadata:
            pixels, nodata = self.read(box), self.meta.nodata
            missing = np.zeros(pixels.shape, bool) if nodata is None else \
                np.isnan(pixels) if np.isnan(nodata) else pixels == nodata
            return np.where(missing.all(axis=0), 0, 255).astype(np.uint8)
        if self.closed:
            raise ValueError(f"{self.name} is closed")
        with EozReader(self._file) as reader:
            return np.where(valid_array(reader, box), 255, 0).astype(np.uint8)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EozDataset:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{state} EozDataset {self.name!r} {self.meta.count}x{self.meta.height}x{self.meta.width} " \
               f"{self.meta.dtype} {self.header.model_id or self.header.codec}>"


def profile(meta: RasterMeta) -> dict:
    """A rasterio-style profile (no driver or creation options): what ``rasterio.open(path, "w",
    driver="GTiff", **profile)`` needs to write the same grid."""
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    return {"dtype": meta.dtype, "count": meta.count, "width": meta.width, "height": meta.height,
            "crs": CRS.from_wkt(meta.crs) if meta.crs else None,
            "transform": Affine(*meta.transform) if meta.transform else None, "nodata": meta.nodata}


def _window(window: Window | None) -> Window | None:
    """A (col_off, row_off, width, height) tuple of whole pixels from a tuple or a rasterio Window."""
    if window is None:
        return None
    values = [getattr(window, f) for f in _WINDOW_FIELDS] if hasattr(window, "col_off") else list(window)
    if len(values) != 4 or not all(isinstance(v, numbers.Real) and float(v).is_integer() for v in values):
        raise InputError(f"window must be (col_off, row_off, width, height) in whole pixels, not {window!r}")
    return tuple(int(v) for v in values)
