"""GeoTIFF/COG in and out for the codec, georeferencing kept exactly.

This module is the gate uploaded files pass through, so every open is defensive:

* only local regular files reach GDAL (no ``/vsi...`` paths, no URLs, no FIFOs or devices),
  and GDAL gets an absolute ``pathlib.Path``, which neither rasterio nor GDAL parse for
  special syntax (``zip://``, ``GTIFF_DIR:``);
* only the GTiff driver may open them, so a VRT, PNG, HDF or text file is refused;
* GDAL looks for no side-car file (``.aux.xml``, ``.ovr``, ``.msk``, world files), so a file
  can neither pull in other files nor be changed by files planted next to it. Network
  settings are not needed: nothing that GDAL opens here can name a URL;
* the size is checked against :class:`Limits` before any pixel is read;
* every rasterio/GDAL failure while opening or reading becomes an :class:`InputError`.

Writing produces tiled, DEFLATE-compressed GeoTIFFs (predictor 2 for integers, 3 for
floats), or Cloud-Optimized GeoTIFFs. Output appears at the target path only once complete:
data goes to a hidden temporary next to it, which is renamed (or converted to COG) on close.
"""

from __future__ import annotations

import operator
import os
import pathlib
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio._err import CPLE_BaseError
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader, DatasetWriter
from rasterio.rpc import RPC
from rasterio.transform import Affine
from rasterio.windows import Window

from eoz.errors import InputError, SampleTypeError

# the sample types eoz reads and writes (those of rasterio's GeoTIFFs that the codecs take)
DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")

__all__ = ["Limits", "RasterMeta", "RasterWriter", "read_meta", "read_raster", "write_raster"]

_GDAL_ENV = {
    # Treat the file's folder as empty: GDAL then probes no side-car file at all.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # Neither read nor write .aux.xml files; everything we write lives inside the TIFF.
    "GDAL_PAM_ENABLED": "NO",
    # GDAL's block cache defaults to 5 % of RAM; tiles stream through once, so a small
    # cache bounds memory by the tile size, not the machine (megabytes).
    "GDAL_CACHEMAX": 256,
    # A raster's mask band is written inside the TIFF, not as a side-car .msk file.
    "GDAL_TIFF_INTERNAL_MASK": True,
}
PER_DATASET = "per_dataset"   # ``gdal_metadata``'s "mask": the raster has a mask band of its own
# What rasterio raises for a file GDAL cannot make sense of (CRSError: unusable GeoKeys).
_GDAL_ERRORS = (RasterioError, CPLE_BaseError, CRSError)
_BLOCK = 256
_COG_OPTIONS = {
    "COMPRESS": "DEFLATE",
    "PREDICTOR": "YES",  # the COG driver picks 2 for integers, 3 for floats
    "BIGTIFF": "IF_SAFER",
    "RESAMPLING": "AVERAGE",  # overviews: averages respect nodata and never overshoot
    "NUM_THREADS": "ALL_CPUS",
}


@dataclass
class RasterMeta:
    """What the codec needs to know about a raster, and what a writer needs to recreate it."""

    height: int
    width: int
    count: int
    dtype: str
    band_names: list[str]
    crs: str | None
    transform: list[float] | None
    nodata: float | None
    # GDAL's metadata beside the pixels, as ``gdal_metadata`` reads it: what the pixels mean
    # (scales, offsets, units) and the product's own tags (acquisition time, processing level)
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """Largest raster accepted; checked before any pixel is read, so no header exhausts memory."""

    max_pixels: int = 20_000 * 20_000
    max_bands: int = 512


def read_meta(path: str | os.PathLike[str], limits: Limits = Limits()) -> RasterMeta:
    """Describe a GeoTIFF without reading its pixels."""
    with _open(path, limits) as ds:
        return _meta(ds)


class RasterReader:
    """An open GeoTIFF read window by window: scenes stream through without reopening per tile."""

    def __init__(self, path: str | os.PathLike[str], limits: Limits = Limits()):
        self.path = path
        self._context = _open(path, limits)
        self._ds = self._context.__enter__()
        self.meta = _meta(self._ds)

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)

    def read(self, window: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, RasterMeta]:
        """All bands, or a ``(col_off, row_off, width, height)`` window, as (bands, rows, cols),
        with the meta of what was returned (for a window, its shape and transform)."""
        meta, rio_window = self.meta, None
        if window is not None:
            col_off, row_off, width, height = _check_window(window, meta)
            meta = replace(meta, height=height, width=width,
                           transform=window_transform(meta.transform, col_off, row_off),
                           metadata=window_metadata(meta.metadata, col_off, row_off))
            rio_window = Window(col_off, row_off, width, height)
        try:
            return self._ds.read(window=rio_window), meta
        except _GDAL_ERRORS as e:
            raise InputError(f"{self.path}: cannot read pixels: {_gdal_message(e)}") from e

    def read_valid(self, window: tuple[int, int, int, int]) -> np.ndarray:
        """The raster's mask band over a ``(col_off, row_off, width, height)`` window: True where a
        pixel is valid (a raster whose ``gdal_metadata`` names a ``mask``)."""
        col_off, row_off, width, height = _check_window(window, self.meta)
        try:
            return self._ds.read_masks(1, window=Window(col_off, row_off, width, height)) > 0
        except _GDAL_ERRORS as e:
            raise InputError(f"{self.path}: cannot read its mask: {_gdal_message(e)}") from e


def read_raster(
    path: str | os.PathLike[str],
    window: tuple[int, int, int, int] | None = None,
    limits: Limits = Limits(),
) -> tuple[np.ndarray, RasterMeta]:
    """Read all bands, or a ``(col_off, row_off, width, height)`` window, as (bands, rows, cols).

    The returned meta describes the returned array: for a window, its shape and the window's
    transform, so ``write_raster(out, *read_raster(src, window))`` writes a georeferenced crop.
    """
    with RasterReader(path, limits) as reader:
        return reader.read(window)


class RasterWriter:
    """Write a raster window by window, so scenes larger than memory can be produced.

    Use as a context manager. Nothing appears at ``path`` until :meth:`close` succeeds; if the
    ``with`` block raises, the temporary is removed and ``path`` is left as it was.
    With ``cog=True`` the finished tiled GeoTIFF is converted by GDAL's COG driver, which
    adds overviews when the raster is larger than one COG block (512 px).
    """

    def __init__(self, path: str | os.PathLike[str], meta: RasterMeta, cog: bool = False):
        if len(meta.band_names) != meta.count:
            raise InputError(f"{len(meta.band_names)} band names for {meta.count} bands")
        self.path = pathlib.Path(path).absolute()
        self.meta = meta
        self.cog = cog
        self._tmp = self._sibling("tmp")
        with rasterio.Env(**_GDAL_ENV), warnings.catch_warnings():
            # Without a transform rasterio warns; leaving the file ungeoreferenced is intended.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._ds = rasterio.open(self._tmp, "w", **_profile(meta))
            try:
                self._ds.descriptions = tuple(meta.band_names)
                _restore_metadata(self._ds, meta.metadata)
            except BaseException:
                self._discard()
                raise

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._discard()

    def write(self, array: np.ndarray, col_off: int, row_off: int) -> None:
        """Write a ``(bands, h, w)`` array with its top-left pixel at ``(col_off, row_off)``."""
        if array.ndim != 3 or array.shape[0] != self.meta.count:
            raise InputError(f"expected {self.meta.count} bands, got shape {array.shape}")
        if array.dtype != np.dtype(self.meta.dtype):
            # No silent casting: it would wrap or round values of the reconstruction.
            raise InputError(f"expected dtype {self.meta.dtype}, got {array.dtype}")
        _, height, width = array.shape
        _check_window((col_off, row_off, width, height), self.meta)
        with rasterio.Env(**_GDAL_ENV):
            self._ds.write(array, window=Window(col_off, row_off, width, height))

    def write_valid(self, valid: np.ndarray, col_off: int, row_off: int) -> None:
        """Write the raster's mask band over an ``(h, w)`` window (True: a valid pixel), for a meta
        whose ``gdal_metadata`` names a ``mask``."""
        if "mask" not in self.meta.metadata:
            raise InputError("the raster has no mask band to write")
        height, width = valid.shape
        _check_window((col_off, row_off, width, height), self.meta)
        with rasterio.Env(**_GDAL_ENV):
            self._ds.write_mask(np.where(valid, 255, 0).astype(np.uint8),
                                window=Window(col_off, row_off, width, height))

    def close(self) -> None:
        """Finish the file and move it (or its COG conversion) to the target path."""
        if self._ds.closed:
            return
        try:
            with rasterio.Env(**_GDAL_ENV):
                self._ds.close()
                if self.cog:
                    part = self._sibling("cog")
                    try:
                        options = {**_COG_OPTIONS, **_narrow_options(self.meta, cog=True),
                                   **_domain_options(self.meta)}
                        rasterio.shutil.copy(self._tmp, part, driver="COG", **options)
                        os.replace(part, self.path)
                    finally:
                        part.unlink(missing_ok=True)
                else:
                    os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)

    def _discard(self) -> None:
        with rasterio.Env(**_GDAL_ENV):
            self._ds.close()
        self._tmp.unlink(missing_ok=True)

    def _sibling(self, tag: str) -> pathlib.Path:
        """A hidden, unique name in the target's folder, so the rename stays on one filesystem."""
        return self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.{tag}.tif")


def write_raster(
    path: str | os.PathLike[str], array: np.ndarray, meta: RasterMeta, cog: bool = False
) -> None:
    """Write a whole ``(bands, rows, cols)`` array as a GeoTIFF or COG."""
    if array.shape != (meta.count, meta.height, meta.width):
        raise InputError(
            f"array shape {array.shape} does not match meta {(meta.count, meta.height, meta.width)}"
        )
    with RasterWriter(path, meta, cog=cog) as writer:
        writer.write(array, 0, 0)


@contextmanager
def _open(path: str | os.PathLike[str], limits: Limits) -> Iterator[DatasetReader]:
    """Open a local GeoTIFF defensively (see the module docstring) and check its size.

    The GDAL settings stay in force while the dataset is open: overviews and masks are
    looked up lazily, after the open.
    """
    text = os.fspath(path)
    if text.startswith("/vsi") or "://" in text:
        raise InputError(f"{text} is not a GeoTIFF on the local file system")
    local = pathlib.Path(text).absolute()
    if not local.is_file():
        raise InputError(f"{text} is not a GeoTIFF: no such regular file")
    with rasterio.Env(**_GDAL_ENV):
        try:
            with warnings.catch_warnings():
                # An ungeoreferenced file is fine: its meta says transform=None instead.
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                ds = rasterio.open(local, driver="GTiff")
        except _GDAL_ERRORS as e:
            message = _gdal_message(e)
            raise InputError(f"{text} is not a GeoTIFF or cannot be opened: {message}") from e
        with ds:
            pixels = ds.height * ds.width
            if pixels > limits.max_pixels or ds.count > limits.max_bands:
                raise InputError(
                    f"{text} is too large: {ds.height} x {ds.width} = {pixels} pixels "
                    f"in {ds.count} bands "
                    f"(limits: {limits.max_pixels} pixels, {limits.max_bands} bands)"
                )
            _check_dtype(text, ds.dtypes[0])
            yield ds


def _meta(ds: DatasetReader) -> RasterMeta:
    try:
        crs = ds.crs.to_wkt() if ds.crs else None
    except _GDAL_ERRORS as e:
        raise InputError(f"{ds.name}: unusable CRS: {_gdal_message(e)}") from e
    transform = list(ds.transform)[:6]
    if crs is None and ds.transform == Affine.identity():
        transform = None
    return RasterMeta(
        height=ds.height,
        width=ds.width,
        count=ds.count,
        dtype=ds.dtypes[0],
        band_names=[name or f"band{i}" for i, name in enumerate(ds.descriptions, start=1)],
        crs=crs,
        transform=transform,
        nodata=ds.nodata,
        metadata=gdal_metadata(ds),
    )


def gdal_metadata(ds: DatasetReader) -> dict:
    """The metadata GDAL keeps beside a raster's pixels that a writer restores, where it differs
    from GDAL's defaults: ``tags`` (the dataset's, default domain), ``band_tags`` (each band's,
    less the STATISTICS_ of the original pixels, which GDAL recomputes and a lossy
    reconstruction would contradict), ``scales``, ``offsets`` and ``units`` per band. An archive
    that keeps the pixels bit for bit must keep what they mean too: DN = value x scale + offset.
    And the georeferencing of a Level-1 product that has no geotransform: ``gcps`` ([row, col,
    x, y, z] each, as Sentinel-1's GRD measurements carry them) with ``gcp_crs``, and ``rpcs``
    (GDAL's RPC tags, as optical Level-1 products carry them). And how viewers show the bands:
    ``colorinterp`` (a name of rasterio's ``ColorInterp`` a band, where not what GDAL gives a new
    GeoTIFF: an RGB-NIR uint8 scene's NIR would turn into transparency, a gray one into RGB) and
    ``colormap`` (band 1's, as class maps carry: [value, r, g, b, a] each, but
    the black ones, which a TIFF's full table holds for every value not named). And ``mask``
    (``PER_DATASET``) where the raster has a mask band of its own, which says which pixels are
    valid instead of a nodata value (as COGs made with GDAL often do); its pixels are read by
    ``RasterReader.read_valid`` and written by ``RasterWriter.write_valid``. And ``nbits`` where
    the samples are stored narrower than their dtype (GDAL's NBITS: 12-bit integers, bit masks,
    16-bit floats read as float32), which a writer restores (only for values that fit it:
    ``scene.header_meta`` leaves it out of a lossy file's). And the tags of GDAL's other metadata
    domains, ``domains`` ({domain: tags}) and ``band_domains`` (each band's), as a satellite's
    product carries them (IMAGERY: acquisition time, cloud cover; IMD: a vendor's sun and view
    angles); not those GDAL writes itself or that are kept above (``_OWN_DOMAINS``), nor XML
    domains (one document each, which rasterio's tags cannot write back)."""
    metadata: dict[str, Any] = {**_geolocation(ds), **_colours(ds)}
    if all(flags == [MaskFlags.per_dataset] for flags in ds.mask_flag_enums):
        metadata["mask"] = PER_DATASET
    structure = ds.tags(1, ns="IMAGE_STRUCTURE")
    if "NBITS" in structure:
        metadata["nbits"] = int(structure["NBITS"])
    tags = {k: v for k, v in ds.tags().items() if (k, v) != ("AREA_OR_POINT", "Area")}   # Area: the default
    band_tags = [{k: v for k, v in ds.tags(b).items() if not k.startswith("STATISTICS_")} for b in ds.indexes]
    units = [unit or "" for unit in ds.units]
    if tags:
        metadata["tags"] = tags
    domains = _domains(ds)
    if domains:
        metadata["domains"] = domains
    for key, value in (("band_tags", band_tags), ("band_domains", [_domains(ds, b) for b in ds.indexes]),
                       ("scales", [_finite_or(s, 1.0) for s in ds.scales]),
                       ("offsets", [_finite_or(o, 0.0) for o in ds.offsets]), ("units", units)):
        if value != band_metadata({}, key, ds.count):
            metadata[key] = value
    return metadata


_BAND_DEFAULTS = {"band_tags": {}, "band_domains": {}, "scales": 1.0, "offsets": 0.0, "units": ""}   # GDAL's
# Metadata domains GDAL fills itself (the file's layout, derived views) or kept as their own fields.
_OWN_DOMAINS = {"IMAGE_STRUCTURE", "DERIVED_SUBDATASETS", "RPC"}


def _domains(ds: DatasetReader, bidx: int = 0) -> dict[str, dict[str, str]]:
    """The dataset's (0) or band ``bidx``'s tags in metadata domains other than the default."""
    names = [ns for ns in ds.tag_namespaces(bidx) if ns and ns not in _OWN_DOMAINS and not ns.startswith("xml:")]
    return {ns: tags for ns in names if (tags := ds.tags(bidx, ns=ns))}


def band_metadata(metadata: dict, key: str, count: int) -> list:
    """A per-band field of ``gdal_metadata`` (band_tags, scales, offsets or units), GDAL's default
    for every band where the raster had none."""
    return metadata.get(key, [_BAND_DEFAULTS[key]] * count)


def _geolocation(ds: DatasetReader) -> dict[str, Any]:
    """``gdal_metadata``'s GCPs and RPCs, where the raster has them."""
    found: dict[str, Any] = {}
    gcps, gcp_crs = ds.gcps
    if gcps:
        found["gcps"] = [[float(g.row), float(g.col), float(g.x), float(g.y), float(g.z or 0.0)] for g in gcps]
        if gcp_crs is not None:
            found["gcp_crs"] = gcp_crs.to_wkt()
    if ds.rpcs is not None:
        found["rpcs"] = ds.rpcs.to_gdal()
    return found


BLACK = (0, 0, 0, 255)   # a TIFF colour map's entry for values it does not name


def _colours(ds: DatasetReader) -> dict[str, Any]:
    """``gdal_metadata``'s colour interpretation and colour map, where the raster has them."""
    found: dict[str, Any] = {}
    names = [interpretation.name for interpretation in ds.colorinterp]
    if names != default_colorinterp(ds.count, ds.dtypes[0]):
        found["colorinterp"] = names
    try:
        colormap = ds.colormap(1)
    except ValueError:   # rasterio's word for "band 1 has none"
        colormap = None
    if colormap:   # a TIFF's holds every value of the dtype, the unnamed ones black
        found["colormap"] = [[value, *map(int, rgba)] for value, rgba in sorted(colormap.items()) if rgba != BLACK]
    return found


def default_colorinterp(count: int, dtype: str) -> list[str]:
    """What ``gdal_metadata`` leaves out, as GDAL gives a new GeoTIFF (``RasterWriter``'s): red,
    green, blue (and alpha) for 3-4 band uint8, else gray, then undefined. Files written before
    session 23 kept no colours, so their rasters decode as they did."""
    if dtype == "uint8" and count in (3, 4):
        return ["red", "green", "blue", "alpha"][:count]
    return ["gray"] + ["undefined"] * (count - 1)


def colour_interpretations(metadata: dict, count: int, dtype: str) -> list[ColorInterp]:
    """``gdal_metadata``'s colour interpretations; a name this build's rasterio does not know (a
    later GDAL's, such as GDAL 3.10's "nir") reads as undefined, not as a damaged file."""
    names = metadata.get("colorinterp", default_colorinterp(count, dtype))
    return [ColorInterp.__members__.get(name, ColorInterp.undefined) for name in names]


def window_metadata(metadata: dict, col_off: int, row_off: int) -> dict:
    """``gdal_metadata`` of a window whose top-left pixel is (col_off, row_off) of the raster:
    its GCPs' and RPCs' image coordinates move with it (as ``window_transform``'s origin)."""
    if not (col_off or row_off) or not {"gcps", "rpcs"} & set(metadata):
        return metadata
    moved = dict(metadata)
    if "gcps" in metadata:
        moved["gcps"] = [[row - row_off, col - col_off, *rest] for row, col, *rest in metadata["gcps"]]
    if "rpcs" in metadata:
        rpcs = RPC.from_gdal(metadata["rpcs"])
        rpcs.line_off -= row_off
        rpcs.samp_off -= col_off
        moved["rpcs"] = rpcs.to_gdal()
    return moved


def coarse_georeferencing(metadata: dict, factor: int) -> dict:
    """The GCPs (with their CRS) and RPCs of ``gdal_metadata`` for a raster whose pixel (row,
    col) covers pixels factor * row ... and factor * col ... of this one (the top-level latents
    of ``eoz features``): a Level-1 scene's latents keep their place on the ground, as a
    geotransform's scaled by the factor. GCPs are in GDAL's pixel coordinates (0 at the top-left
    corner), scaled as they are; RPC coordinates put 0 at the first pixel's centre."""
    coarse = {key: metadata[key] for key in ("gcps", "gcp_crs") if key in metadata}
    if "gcps" in metadata:
        coarse["gcps"] = [[row / factor, col / factor, *rest] for row, col, *rest in metadata["gcps"]]
    if "rpcs" in metadata:
        rpcs = RPC.from_gdal(metadata["rpcs"])
        rpcs.line_off, rpcs.line_scale = (rpcs.line_off - (factor - 1) / 2) / factor, rpcs.line_scale / factor
        rpcs.samp_off, rpcs.samp_scale = (rpcs.samp_off - (factor - 1) / 2) / factor, rpcs.samp_scale / factor
        coarse["rpcs"] = rpcs.to_gdal()
    return coarse


def _finite_or(value: float | None, default: float) -> float:
    """A band's scale or offset; GDAL's default where it has none usable."""
    return float(value) if value is not None and np.isfinite(value) else default


def _restore_metadata(ds: DatasetWriter, metadata: dict) -> None:
    """Write ``gdal_metadata``'s fields. A tag named ``bidx`` or ``ns`` cannot pass through
    rasterio's ``update_tags`` (they are its own arguments) and is left out."""
    def usable(tags: dict) -> dict:
        return {k: v for k, v in tags.items() if k not in ("bidx", "ns")}

    if metadata.get("tags"):
        ds.update_tags(**usable(metadata["tags"]))
    for band, tags in enumerate(metadata.get("band_tags", []), start=1):
        if tags:
            ds.update_tags(band, **usable(tags))
    for bidx, domains in [(0, metadata.get("domains", {}))] + list(enumerate(metadata.get("band_domains", []), 1)):
        for ns, tags in domains.items():
            ds.update_tags(bidx, ns=ns, **usable(tags))
    for key in ("scales", "offsets", "units"):
        if key in metadata:
            setattr(ds, key, tuple(metadata[key]))
    if "gcps" in metadata:
        try:
            crs = CRS.from_wkt(metadata["gcp_crs"]) if "gcp_crs" in metadata else None
        except _GDAL_ERRORS as e:
            raise InputError(f"unusable CRS of the GCPs: {_gdal_message(e)}") from e
        ds.gcps = ([GroundControlPoint(row, col, x, y, z, id=str(i)) for i, (row, col, x, y, z)
                    in enumerate(metadata["gcps"], start=1)], crs)
    if "rpcs" in metadata:
        ds.rpcs = RPC.from_gdal(metadata["rpcs"])
    if "colormap" in metadata:   # before the interpretation: a palette band needs its map
        ds.write_colormap(1, {0: BLACK} | {value: tuple(rgba) for value, *rgba in metadata["colormap"]})
    if "colorinterp" in metadata:
        ds.colorinterp = colour_interpretations(metadata, ds.count, ds.dtypes[0])


def _check_dtype(name: str, dtype: str) -> None:
    """Refuse, as the file is opened, a sample type no codec takes (64-bit integers, complex
    SAR), with what to do instead; a codec would otherwise be chosen and fail at the header."""
    if dtype in DTYPES:
        return
    hint = "code its I and Q as two bands, or its amplitude or intensity" if dtype.startswith("complex") else \
        "convert it to a 32-bit type where its values fit"
    raise SampleTypeError(name, f"has {dtype} samples; eoz codes {', '.join(DTYPES)} rasters ({hint})")


def compact_crs(wkt: str | None) -> str | None:
    """"EPSG:<code>" for a WKT that this code rebuilds exactly, else the WKT itself: the form a
    .eoz header stores (a UTM WKT is about 600 bytes, a real cost on small rasters)."""
    if wkt is None:
        return None
    try:
        code = CRS.from_wkt(wkt).to_epsg()
        if code is not None and CRS.from_epsg(code).to_wkt() == wkt:
            return f"EPSG:{code}"
    except _GDAL_ERRORS:
        pass
    return wkt


def expand_crs(text: str | None) -> str | None:
    """The WKT of a header's CRS (inverse of compact_crs)."""
    if text is None or not text.startswith("EPSG:"):
        return text
    try:
        return CRS.from_user_input(text).to_wkt()
    except _GDAL_ERRORS as e:
        raise InputError(f"unknown CRS {text!r} in the header: {_gdal_message(e)}") from e


def _profile(meta: RasterMeta) -> dict[str, Any]:
    """Creation profile for the tiled GeoTIFF; crs and transform only when the meta has them."""
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": meta.height,
        "width": meta.width,
        "count": meta.count,
        "dtype": meta.dtype,
        "nodata": meta.nodata,
        "tiled": True,
        "blockxsize": _BLOCK,
        "blockysize": _BLOCK,
        "compress": "deflate",
        "predictor": 3 if np.issubdtype(np.dtype(meta.dtype), np.floating) else 2,
        "interleave": "pixel",
        "bigtiff": "if_safer",
    }
    profile.update(_narrow_options(meta, cog=False))
    if "mask" not in meta.metadata:   # with a mask band, GDAL 3.10's compression threads now and then log
        profile["num_threads"] = "all_cpus"   # 'ERROR 1: Bad value 3 for "ExtraSamples" tag' on a block
    if meta.crs is not None:
        profile["crs"] = CRS.from_wkt(meta.crs)
    if meta.transform is not None:
        profile["transform"] = Affine(*meta.transform)
    return profile


def _narrow_options(meta: RasterMeta, cog: bool) -> dict[str, Any]:
    """The creation options that store samples in ``gdal_metadata``'s nbits, where it names them
    (no predictor for widths other than whole bytes, which GDAL's predictors refuse)."""
    if "nbits" not in meta.metadata:
        return {}
    nbits = meta.metadata["nbits"]
    whole = nbits in (8, 16, 32, 64)
    return {"NBITS": nbits, **({} if whole else {"PREDICTOR": "NO"})} if cog else \
        {"nbits": nbits, **({} if whole else {"predictor": 1})}


def _domain_options(meta: RasterMeta) -> dict[str, str]:
    """The COG driver's option that copies every metadata domain, where ``gdal_metadata`` has
    domains: by default it copies only the default domain's tags. GDAL 3.10 then drops the
    bands' default-domain tags, so a raster with both keeps its band tags, not its domains."""
    metadata = meta.metadata
    domains = metadata.get("domains") or any(metadata.get("band_domains", []))
    return {"COPY_SRC_MDD": "YES"} if domains and not any(metadata.get("band_tags", [])) else {}


def _check_window(window: tuple[int, int, int, int], meta: RasterMeta) -> tuple[int, int, int, int]:
    try:
        col_off, row_off, width, height = (operator.index(v) for v in window)
    except (TypeError, ValueError) as e:
        raise InputError(
            f"window must be 4 integers (col_off, row_off, width, height), got {window!r}"
        ) from e
    if (
        col_off < 0
        or row_off < 0
        or width < 1
        or height < 1
        or col_off + width > meta.width
        or row_off + height > meta.height
    ):
        raise InputError(
            f"window (col_off={col_off}, row_off={row_off}, width={width}, height={height}) "
            f"is not inside the {meta.width} x {meta.height} raster"
        )
    return col_off, row_off, width, height


def window_transform(transform: list[float] | None, col_off: int, row_off: int) -> list[float] | None:
    """Geotransform of a window whose top-left pixel is (col_off, row_off) of the raster."""
    if transform is None:
        return None
    return list(Affine(*transform) @ Affine.translation(col_off, row_off))[:6]


def _gdal_message(e: BaseException) -> str:
    """rasterio often says 'see previous exception'; the GDAL message is in the cause."""
    return f"{e} ({e.__cause__})" if e.__cause__ else str(e)
