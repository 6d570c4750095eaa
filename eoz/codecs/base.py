"""What every codec shares: the Codec interface and the framing of its tile payloads.

A codec turns one padded, nodata-filled tile (bands, h, w) of float64 values in original
units into bytes and back. Everything else about a tile is shared here: nodata masks,
padding to the codec's stride, and dtype casting.

Tile payload framing: one flag byte; when bit 0 is set a nodata mask follows
(u32 length + zlib of the bit-packed mask of the coded window); when bit 1 is set, the
raster's own mask of valid pixels (GDAL's per-dataset mask band) of the tile's own area, framed
alike; then the codec's own bytes. The nodata mask comes first so that a codec can skip nodata
samples (``skips_nodata``: the predictive codec codes nothing there), the decoder handing it
the mask it read. Under the pixel mask a codec that bounds every sample (lossless, or a max
error) keeps the pixels' values, as GDAL keeps them; the others code them as nodata (filled,
left out of their quality target: the values are invalid by the mask's definition), which
their decoders need not know.

Decoding holds a payload to the tile its (limit-checked) header gives it: no other flag
bits, a nodata mask only where the file declares nodata, a pixel mask in every tile exactly
where the file declares one, each inflating to exactly its bits, and a codec output of exactly
the tile's padded shape.
"""

from __future__ import annotations

import math
import struct
import zlib
from abc import ABC, abstractmethod

import numpy as np

from eoz.container import Header
from eoz.errors import ContainerError, InputError, ModelMismatchError
from eoz.limits import inflate
from eoz.raster import RasterMeta
from eoz.tiling import pad_to_multiple, padded_shape

DEFAULT_TILE_SIZE = 512
_HAS_MASK = 1
_HAS_PIXEL_MASK = 2   # the raster's mask band (``"mask"`` in its GDAL metadata)
_LENGTH = struct.Struct("<I")


class Codec(ABC):
    codec_id: str
    stride: int = 1          # tiles are padded to multiples of this
    batch_tiles: int = 1     # tiles encode_scene hands to encode_tiles at once
    parallel_tiles: bool = False   # tiles may code on threads at once (thread safe; the work frees the GIL)
    overlap: int = 0         # default context pixels coded around each tile (see encode_scene)
    skips_nodata = False     # True: valid is the nodata mask inverted, given to encode_tile and decode_tile both
    codes_nan = False        # True: NaN samples are coded as they are (no nodata need be declared for them)
    bounds_every_sample = False   # True: exact, or within a bound, on every sample (pixels under a mask band too)
    bands: list[str] | None = None   # the bands a model expects, in order; None = any

    @abstractmethod
    def header_fields(self) -> dict:
        """Header fields this codec fills (model pins, normalization, parameters)."""

    @abstractmethod
    def encode_tile(self, tile: np.ndarray, valid: np.ndarray) -> bytes:
        """(bands, h, w) in the raster's dtype, nodata filled, h and w multiples of stride.

        valid marks the samples that are part of the image (not padding, not nodata):
        quality targets are measured on those only.
        """

    def encode_tiles(self, tiles: list[tuple[np.ndarray, np.ndarray]]) -> list[bytes]:
        """encode_tile over (tile, valid) pairs; a codec whose network batches overrides it."""
        return [self.encode_tile(tile, valid) for tile, valid in tiles]

    @abstractmethod
    def decode_tile(self, payload: bytes, bands: int, height: int, width: int) -> np.ndarray:
        """Inverse of encode_tile for a tile of that padded shape, in original units (any dtype)."""

    def for_raster(self, meta: RasterMeta) -> "Codec":
        """The codec set up for one raster, encoding or decoding it (most need nothing of it)."""
        return self

    def check_input(self, meta: RasterMeta) -> None:
        if self.bands is not None and meta.count != len(self.bands):
            raise InputError(f"{self.codec_id} model expects {len(self.bands)} bands "
                             f"{self.bands}, the raster has {meta.count} {meta.band_names}")



def model_pins(entry) -> dict:
    """The header fields that pin a file to the exact model version that decodes it."""
    return {"model_id": entry.model_id, "model_version": entry.version, "weights_sha256": entry.weights_sha256}


def _nodata_mask(tile: np.ndarray, nodata: float | None, codes_nan: bool = False,
                 masked: np.ndarray | None = None) -> np.ndarray | None:
    """``masked``: pixels the raster's mask band calls invalid, where NaN is no more than a value."""
    if nodata is None:
        valid = tile if masked is None else tile[:, ~masked]
        if not codes_nan and tile.dtype.kind == "f" and np.isnan(valid).any():
            raise InputError("the raster has NaN pixels but declares no nodata value: declare NaN as its "
                             "nodata value, or code it losslessly with the predictive model, which keeps NaN")
        return None
    mask = np.isnan(tile) if np.isnan(nodata) else tile == nodata
    return mask if mask.any() else None


def _filled(tile: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Nodata pixels replaced by their band's mean over the tile's valid pixels (their median
    where float64 values near its largest overflow the mean)."""
    tile = tile.copy()
    for band, band_mask in zip(tile, mask):
        valid = band[~band_mask].astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            mean = valid.mean() if valid.size else 0.0
        band[band_mask] = mean if np.isfinite(mean) else np.median(valid)
    return tile


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def fill_nodata(tile: np.ndarray, nodata: float | None, codes_nan: bool = False,
                masked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The tile with nodata pixels, and those under ``masked`` (pixels the raster's mask band
    calls invalid), filled with the band means of the valid ones; and the nodata mask.
    ``codes_nan``: NaN samples of a raster that declares no nodata stay as they are (the codec
    codes them), where other codecs refuse them unless masked."""
    mask = _nodata_mask(tile, nodata, codes_nan, masked)
    invalid = _invalid(mask, masked, tile.shape)
    return (tile, None) if invalid is None else (_filled(tile, invalid), mask)


def _invalid(mask: np.ndarray | None, masked: np.ndarray | None, shape: tuple) -> np.ndarray | None:
    """The samples that are nodata (``mask``) or under the mask band's invalid pixels (``masked``)."""
    return mask if masked is None else np.broadcast_to(masked, shape) | (False if mask is None else mask)


def prepare_tile(codec: Codec, tile: np.ndarray, nodata: float | None,
                 kept: tuple[slice, slice] | None = None,
                 valid_pixels: np.ndarray | None = None) -> tuple[bytes, np.ndarray, np.ndarray]:
    """The payload prefix (nodata mask, and the raster's mask band of the kept area where it has
    one), and the padded tile and valid mask the codec codes, of one coded window; ``kept`` is the
    part the decoder keeps (the rest is overlap), ``valid_pixels`` the mask band over the window."""
    # pixels the mask band calls invalid are nodata to a codec with a quality target
    masked = None if valid_pixels is None or codec.bounds_every_sample or valid_pixels.all() else ~valid_pixels
    tile, mask = fill_nodata(tile, nodata, codec.codes_nan, masked)
    own = None if valid_pixels is None else valid_pixels if kept is None else valid_pixels[kept]
    flags, prefix = 0, b""
    for flag, bits in ((_HAS_MASK, mask), (_HAS_PIXEL_MASK, own)):
        if bits is not None:
            packed = zlib.compress(np.packbits(bits).tobytes(), 9)
            flags, prefix = flags | flag, prefix + _LENGTH.pack(len(packed)) + packed
    mask = _invalid(mask, masked, tile.shape)
    valid = np.ones(tile.shape, bool) if mask is None else ~mask
    if kept is not None and not codec.skips_nodata:   # what the decoder knows: the mask alone
        valid &= np.pad(np.ones((1, kept[0].stop - kept[0].start, kept[1].stop - kept[1].start), bool),
                        [(0, 0), (kept[0].start, tile.shape[1] - kept[0].stop),
                         (kept[1].start, tile.shape[2] - kept[1].stop)])
    padded = pad_to_multiple(tile, codec.stride)
    valid = np.pad(valid, [(0, 0)] + [(0, p - n) for p, n in zip(padded.shape[1:], tile.shape[1:])])
    return bytes([flags]) + prefix, padded, valid


def _split_masks(payload: bytes, header: Header, index: int) -> tuple[np.ndarray | None, np.ndarray | None, bytes]:
    """The tile's nodata mask of its coded window (None when it has none), the raster's mask of
    valid pixels of its own area (None where the file has none), and the codec's bytes after them."""
    if not payload:
        raise ContainerError(f"tile {index} is empty")
    flags, pos = payload[0], 1
    if flags & ~(_HAS_MASK | _HAS_PIXEL_MASK):
        raise ContainerError(f"tile {index} has unknown flags 0x{flags & ~(_HAS_MASK | _HAS_PIXEL_MASK):02x}")
    if flags & _HAS_MASK and header.nodata is None:
        raise ContainerError(f"tile {index} carries a nodata mask but the file declares no nodata value")
    if bool(flags & _HAS_PIXEL_MASK) != ("mask" in header.metadata):
        raise ContainerError(f"tile {index} {'carries' if flags & _HAS_PIXEL_MASK else 'lacks'} a mask of valid "
                             f"pixels, and the file declares {'one' if 'mask' in header.metadata else 'none'}")
    _, _, coded_h, coded_w = header.coded_bounds(index)
    _, _, h, w = header.tile_bounds(index)
    masks = []
    for flag, shape, what in ((_HAS_MASK, (len(header.bands), coded_h, coded_w), "nodata mask"),
                              (_HAS_PIXEL_MASK, (h, w), "mask of valid pixels")):
        if not flags & flag:
            masks.append(None)
            continue
        if len(payload) < pos + _LENGTH.size:
            raise ContainerError(f"tile {index} ends inside its {what}'s length")
        (n,) = _LENGTH.unpack_from(payload, pos)
        size = math.prod(shape)
        bits = inflate(payload[pos + _LENGTH.size:pos + _LENGTH.size + n], -(-size // 8), f"tile {index}'s {what}")
        if len(bits) != -(-size // 8):
            raise ContainerError(f"tile {index}'s {what} holds {8 * len(bits)} bits for {size} samples")
        masks.append(np.unpackbits(np.frombuffer(bits, np.uint8), count=size).reshape(shape).astype(bool))
        pos += _LENGTH.size + n
    return masks[0], masks[1], payload[pos:]


def tile_valid_pixels(payload: bytes, header: Header, index: int) -> np.ndarray:
    """The raster's mask of valid pixels over tile ``index``'s own area (a file that declares one)."""
    return _split_masks(payload, header, index)[1]


def decode_tile_payload(codec: Codec, payload: bytes, header: Header, index: int) -> np.ndarray:
    """One tile, cropped to its own place in the image and cast to the original dtype."""
    row_off, col_off, h, w = header.tile_bounds(index)
    r0, c0, coded_h, coded_w = header.coded_bounds(index)
    bands, dtype = len(header.bands), np.dtype(header.dtype)
    mask, _, body = _split_masks(payload, header, index)
    shape = (bands, *padded_shape(coded_h, coded_w, codec.stride))
    try:
        values = codec.decode_tile(body, *shape, valid=None if mask is None else ~mask) if codec.skips_nodata \
            else codec.decode_tile(body, *shape)
    except (ContainerError, ModelMismatchError):
        raise
    except Exception as e:  # a payload that passed its crc but that the codec cannot read
        raise ContainerError(f"tile {index} cannot be decoded: {e}") from e
    if values.shape != shape:
        raise ContainerError(f"tile {index} decodes to shape {values.shape}, not its {shape}")
    own = (slice(None), slice(row_off - r0, row_off - r0 + h), slice(col_off - c0, col_off - c0 + w))
    out = _to_dtype(values[:, :coded_h, :coded_w][own], dtype)
    if mask is not None:
        mask = mask[own]
        if dtype.kind in "iu":
            # a valid pixel rounded onto the nodata value would read as missing
            out[(out == header.nodata) & ~mask] += 1 if header.nodata < np.iinfo(dtype).max else -1
        out[mask] = header.nodata
    return out
