"""Checks on client files before any job is queued, so bad input fails fast with a 4xx.

Both checks read headers only. A GeoTIFF's pixel and band counts are compared with the
limits here, and again by the job before it reads a pixel (``read_raster`` with the same
limits); an .eoz's declared image size is limited too, since decoding writes that many
pixels (a decompression bomb runs the other way round).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from eoz.container import MAGIC, EozReader, Header
from eoz.errors import InputError, SampleTypeError
from eoz.raster import Limits, RasterMeta, read_meta
from eoz.tiling import tiles_in_window
from workers.errors import TooLargeError, UnsupportedMediaError

TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
log = logging.getLogger("eoz.validation")
_UNLIMITED = Limits(max_pixels=sys.maxsize, max_bands=sys.maxsize)


def _check_size(what: str, height: int, width: int, bands: int, limits: Limits) -> None:
    if height * width > limits.max_pixels or bands > limits.max_bands:
        raise TooLargeError(
            f"{what} is {height} x {width} = {height * width} pixels in {bands} bands; the limits "
            f"are {limits.max_pixels} pixels (EOZ_MAX_PIXELS) and {limits.max_bands} bands (EOZ_MAX_BANDS)")


def _starts_with(path: Path, signatures: tuple[bytes, ...]) -> bool:
    with open(path, "rb") as f:
        head = f.read(max(map(len, signatures)))
    return any(head.startswith(s) for s in signatures)


def inspect_geotiff(path: Path, limits: Limits) -> RasterMeta:
    """Meta of an uploaded GeoTIFF, opened with the GTiff driver only, within the limits."""
    if not _starts_with(path, TIFF_SIGNATURES):
        raise UnsupportedMediaError("the upload is not a GeoTIFF: it does not start with a TIFF signature")
    # read_meta reads tags, never pixels; its own limit check would not say which limit is hit.
    try:
        meta = read_meta(path, _UNLIMITED)
    except SampleTypeError as e:
        raise InputError(f"the upload {e.reason}") from None
    except InputError:  # GDAL's message names the scratch file: it stays in this host's log
        log.info("upload %s refused", path, exc_info=True)
        raise InputError("the upload is a TIFF that GDAL cannot read as a GeoTIFF (damaged or "
                         "incomplete tags)") from None
    _check_size("the raster", meta.height, meta.width, meta.count, limits)
    return meta


def inspect_eoz(path: Path, limits: Limits) -> Header:
    """Header of an uploaded .eoz after checking its structure (header, table, trailer)."""
    if not _starts_with(path, (MAGIC,)):
        raise UnsupportedMediaError("the upload is not an .eoz file: it does not start with the .eoz magic")
    with EozReader(path) as reader:
        header = reader.header
    _check_size("the encoded image", header.height, header.width, len(header.bands), limits)
    return header


def check_window(header: Header, window: tuple[int, int, int, int] | None) -> None:
    """Refuse a (col_off, row_off, width, height) window that is not inside the image."""
    if window is not None:
        tiles_in_window(header, *window)
