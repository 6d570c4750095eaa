"""Codec objects (array in -> .eoz bytes out, and back) and the tile loop around them.

A codec turns one padded, nodata-filled tile (bands, h, w) of float64 values in original
units into bytes and back. Everything else is shared here: tiling, nodata masks, dtype
casting, header fields, and refusing a stream whose pinned model differs from the one
offered. Scenes go through ``read_window`` callbacks and an incremental writer, so memory
is bounded by the tile size, not the scene.

Tile payload framing: one flag byte; when bit 0 is set a nodata mask follows
(u32 length + zlib of the bit-packed mask); then the codec's own bytes.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from eoz import jpeg2000
from eoz.container import EozReader, EozWriter, Header
from eoz.entropy import IndexPrior
from eoz.errors import ContainerError, InputError, ModelMismatchError
from eoz.models.vqvae_fpn import VQVAEFPN, VQVAEFPNConfig
from eoz.normalization import BandNormalizer
from eoz.raster import RasterMeta, RasterWriter, read_meta, read_raster, window_transform
from eoz.registry import ModelEntry, ModelStore
from eoz.tiling import pad_to_multiple, padded_shape, tiles_in_window

DEFAULT_TILE_SIZE = 512
_HAS_MASK = 1


class Codec(ABC):
    codec_id: str
    stride: int = 1          # tiles are padded to multiples of this
    bands: list[str] | None = None   # the bands a model expects, in order; None = any

    @abstractmethod
    def header_fields(self) -> dict:
        """Header fields this codec fills (model pins, normalization, parameters)."""

    @abstractmethod
    def encode_tile(self, tile: np.ndarray) -> bytes:
        """(bands, h, w) in the raster's dtype, nodata filled, h and w multiples of stride."""

    @abstractmethod
    def decode_tile(self, payload: bytes, bands: int, height: int, width: int) -> np.ndarray:
        """Inverse of encode_tile for a tile of that padded shape, in original units (any dtype)."""

    def check_input(self, meta: RasterMeta) -> None:
        if self.bands is not None and meta.count != len(self.bands):
            raise InputError(f"{self.codec_id} model expects {len(self.bands)} bands "
                             f"{self.bands}, the raster has {meta.count} {meta.band_names}")


class VQVAECodec(Codec):
    """VQVAE-FPN: one entropy-coded index map per level, decoded with the pinned codebooks.

    The network runs on CUDA when present; entropy coding always runs on the CPU with
    integer tables, so a file encoded on a GPU decodes to the same indices anywhere.
    """

    codec_id = "vqvae-fpn"

    def __init__(self, entry: ModelEntry):
        self.entry = entry
        tensors = entry.load_weights()
        self.config = VQVAEFPNConfig(**entry.manifest["architecture"])
        self.model = VQVAEFPN(self.config).eval()
        state = {k[len("model."):]: torch.from_numpy(v.copy()) for k, v in tensors.items()
                 if k.startswith("model.")}
        self.model.load_state_dict(state)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.prior = IndexPrior.from_tensors(tensors)
        self.normalizer = BandNormalizer.from_dict(entry.manifest["normalization"])
        self.stride = self.config.factor
        self.bands = entry.bands
        self.codebook_sha256 = [q.codebook_sha256() for q in self.model.quantizers]

    def header_fields(self) -> dict:
        return {"model_id": self.entry.model_id, "model_version": self.entry.version,
                "weights_sha256": self.entry.weights_sha256,
                "codebook_sha256": self.codebook_sha256,
                "normalization": self.normalizer.to_dict()}

    def level_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        return [(height // self.config.level_factor(l), width // self.config.level_factor(l))
                for l in range(self.config.levels)]

    def index_maps(self, tile: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            x = torch.from_numpy(self.normalizer.forward(tile.astype(np.float64)))[None].to(self.device)
            return [i[0].cpu().numpy() for i in self.model.encode(x)]

    def encode_tile(self, tile: np.ndarray) -> bytes:
        return self.prior.encode(self.index_maps(tile))

    def decode_tile(self, payload: bytes, bands: int, height: int, width: int) -> np.ndarray:
        maps = self.prior.decode(payload, self.level_shapes(height, width))
        with torch.no_grad():
            y = self.model.decode([torch.from_numpy(m)[None].to(self.device) for m in maps])[0].cpu().numpy()
        return self.normalizer.inverse(y)


class JPEG2000Codec(Codec):
    """OpenJPEG JPEG 2000 per tile; optional per-tile spectral KLT; lossless or lossy."""

    codec_id = "jpeg2000"

    def __init__(self, quality: float | None = None, lossless: bool = False, klt: bool = False,
                 target_psnr: float | None = None, peak: float = 10000.0):
        if not lossless and quality is None and target_psnr is None:
            raise InputError("jpeg2000 needs quality, target_psnr or lossless")
        self.quality, self.lossless, self.klt = quality, lossless, klt
        self.target_psnr, self.peak = target_psnr, peak

    def header_fields(self) -> dict:
        return {"quality": {k: v for k, v in (("quality", self.quality), ("lossless", self.lossless),
                                               ("klt", self.klt), ("target_psnr", self.target_psnr),
                                               ("peak", self.peak)) if v not in (None, False)}}

    def encode_tile(self, tile: np.ndarray) -> bytes:
        if self.lossless:
            stream, params = jpeg2000.encode(tile, lossless=True)
        elif self.target_psnr is not None:
            stream, params = jpeg2000.encode_to_psnr(tile, self.target_psnr, self.peak, klt=self.klt)
        else:
            stream, params = jpeg2000.encode(tile, quality=self.quality, klt=self.klt)
        head = json.dumps(params, separators=(",", ":")).encode()
        return struct.pack("<I", len(head)) + head + stream

    def decode_tile(self, payload: bytes, bands: int, height: int, width: int) -> np.ndarray:
        try:
            (n,) = struct.unpack_from("<I", payload)
            params = json.loads(payload[4:4 + n])
        except (struct.error, ValueError) as e:
            raise ContainerError(f"jpeg2000 tile parameters are unreadable: {e}") from None
        return jpeg2000.decode(payload[4 + n:], params)


@lru_cache(maxsize=8)
def _vq_codec(root: str, model_id: str, version: str) -> VQVAECodec:
    """Models load once per process: workers keep them between jobs."""
    return VQVAECodec(ModelStore(root).get(model_id, version))


def codec_for_model(model_id: str, version: str | None = None, store: ModelStore | None = None,
                    **params) -> Codec:
    """The codec for a model id; ``jpeg2000`` is the classical baseline and takes params."""
    if model_id == JPEG2000Codec.codec_id:
        return JPEG2000Codec(**params)
    if params:
        raise InputError(f"{model_id} takes no parameters, got {sorted(params)}")
    store = store or ModelStore()
    entry = store.get(model_id, version)
    if entry.codec != VQVAECodec.codec_id:
        raise InputError(f"{model_id} uses codec {entry.codec!r}, which this build cannot run")
    return _vq_codec(str(store.root), entry.model_id, entry.version)


def codec_for_header(header: Header, store: ModelStore | None = None) -> Codec:
    """The codec that decodes a file, after checking the store's model matches its pins."""
    if header.codec == JPEG2000Codec.codec_id:
        return JPEG2000Codec(lossless=True)   # decoding needs no encoder settings
    if header.codec != VQVAECodec.codec_id:
        raise ContainerError(f"unknown codec {header.codec!r} in the file header")
    codec = codec_for_model(header.model_id, header.model_version, store)
    pinned = (header.weights_sha256, header.codebook_sha256)
    offered = (codec.entry.weights_sha256, codec.codebook_sha256)
    if pinned != offered:
        raise ModelMismatchError(
            f"the file was encoded with {header.model_id} version {header.model_version} "
            f"(weights {str(header.weights_sha256)[:12]}, codebooks "
            f"{[c[:12] for c in header.codebook_sha256]}); the store's {codec.entry.model_id} "
            f"version {codec.entry.version} has weights {codec.entry.weights_sha256[:12]}, codebooks "
            f"{[c[:12] for c in codec.codebook_sha256]}: refusing to decode with other weights")
    return codec


def _nodata_mask(tile: np.ndarray, nodata: float | None) -> np.ndarray | None:
    if nodata is None:
        if tile.dtype.kind == "f" and np.isnan(tile).any():
            raise InputError("the raster has NaN pixels but declares no nodata value")
        return None
    mask = np.isnan(tile) if np.isnan(nodata) else tile == nodata
    return mask if mask.any() else None


def _filled(tile: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Nodata pixels replaced by their band's mean over the tile's valid pixels."""
    tile = tile.copy()
    for band, band_mask in zip(tile, mask):
        valid = band[~band_mask]
        band[band_mask] = valid.astype(np.float64).mean() if valid.size else 0
    return tile


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def encode_tile_payload(codec: Codec, tile: np.ndarray, nodata: float | None) -> bytes:
    mask = _nodata_mask(tile, nodata)
    prefix = b"\x00"
    if mask is not None:
        tile = _filled(tile, mask)
        packed = zlib.compress(np.packbits(mask).tobytes(), 9)
        prefix = bytes([_HAS_MASK]) + struct.pack("<I", len(packed)) + packed
    return prefix + codec.encode_tile(pad_to_multiple(tile, codec.stride))


def decode_tile_payload(codec: Codec, payload: bytes, header: Header, index: int) -> np.ndarray:
    """One tile, cropped to its place in the image and cast to the original dtype."""
    _, _, h, w = header.tile_bounds(index)
    bands, dtype = len(header.bands), np.dtype(header.dtype)
    try:
        mask, body = None, payload[1:]
        if payload[0] & _HAS_MASK:
            (n,) = struct.unpack_from("<I", payload, 1)
            bits = np.frombuffer(zlib.decompress(payload[5:5 + n], bufsize=bands * h * w // 8 + 1), np.uint8)
            mask = np.unpackbits(bits, count=bands * h * w).reshape(bands, h, w).astype(bool)
            body = payload[5 + n:]
        values = codec.decode_tile(body, bands, *padded_shape(h, w, codec.stride))[:, :h, :w]
    except (ContainerError, ModelMismatchError):
        raise
    except Exception as e:  # a payload that passed its crc but that the codec cannot read
        raise ContainerError(f"tile {index} cannot be decoded: {e}") from e
    out = _to_dtype(values, dtype)
    if mask is not None:
        if dtype.kind in "iu":
            # a valid pixel rounded onto the nodata value would read as missing
            out[(out == header.nodata) & ~mask] += 1 if header.nodata < np.iinfo(dtype).max else -1
        out[mask] = header.nodata
    return out


def header_meta(header: Header, window: tuple[int, int, int, int] | None = None) -> RasterMeta:
    """RasterMeta of the decoded image, or of a (col_off, row_off, width, height) window of it."""
    col_off, row_off, width, height = window or (0, 0, header.width, header.height)
    return RasterMeta(height=height, width=width, count=len(header.bands), dtype=header.dtype,
                      band_names=list(header.bands), crs=header.crs,
                      transform=window_transform(header.transform, col_off, row_off),
                      nodata=header.nodata)


def encode_scene(read_window: Callable[[int, int, int, int], np.ndarray], meta: RasterMeta,
                 codec: Codec, out: BinaryIO, tile_size: int = DEFAULT_TILE_SIZE) -> Header:
    """Encode tile by tile; read_window(col_off, row_off, width, height) gives each tile."""
    codec.check_input(meta)
    if tile_size % codec.stride:
        raise InputError(f"tile size {tile_size} is not a multiple of the model's stride {codec.stride}")
    header = Header(codec=codec.codec_id, height=meta.height, width=meta.width,
                    bands=list(meta.band_names), dtype=meta.dtype, tile_size=tile_size,
                    crs=meta.crs, transform=meta.transform, nodata=meta.nodata,
                    **codec.header_fields())
    with EozWriter(out, header) as writer:
        for index in range(header.tile_count):
            row_off, col_off, h, w = header.tile_bounds(index)
            writer.write_tile(encode_tile_payload(codec, read_window(col_off, row_off, w, h), meta.nodata))
    return header


def decode_scene(reader: EozReader, window: tuple[int, int, int, int] | None = None,
                 store: ModelStore | None = None):
    """Yield (array, col_off, row_off) pieces of the window (or the image), tile by tile.

    Only the tiles the window touches are read and decoded; offsets are relative to the window.
    """
    header = reader.header
    codec = codec_for_header(header, store)
    col0, row0, width, height = window or (0, 0, header.width, header.height)
    for index in tiles_in_window(header, col0, row0, width, height):
        t_row, t_col, h, w = header.tile_bounds(index)
        tile = decode_tile_payload(codec, reader.read_tile(index), header, index)
        r0, c0 = max(row0, t_row), max(col0, t_col)
        r1, c1 = min(row0 + height, t_row + h), min(col0 + width, t_col + w)
        yield tile[:, r0 - t_row:r1 - t_row, c0 - t_col:c1 - t_col], c0 - col0, r0 - row0


def compress_array(array: np.ndarray, meta: RasterMeta, codec: Codec,
                   tile_size: int = DEFAULT_TILE_SIZE) -> bytes:
    if array.shape != (meta.count, meta.height, meta.width):
        raise InputError(f"array shape {array.shape} does not match its meta")
    out = io.BytesIO()
    encode_scene(lambda c, r, w, h: array[:, r:r + h, c:c + w], meta, codec, out, tile_size)
    return out.getvalue()


def decompress_array(source, window=None, store: ModelStore | None = None) -> tuple[np.ndarray, RasterMeta]:
    with EozReader(source) as reader:
        meta = header_meta(reader.header, window)
        out = np.empty((meta.count, meta.height, meta.width), dtype=meta.dtype)
        for piece, col, row in decode_scene(reader, window, store):
            out[:, row:row + piece.shape[1], col:col + piece.shape[2]] = piece
    return out, meta


def compress_file(in_path: str | Path, out_path: str | Path, codec: Codec,
                  tile_size: int = DEFAULT_TILE_SIZE) -> Header:
    """GeoTIFF -> .eoz, reading one tile window at a time; no partial file on failure."""
    meta = read_meta(in_path)
    out_path = Path(out_path)
    part = out_path.with_name(out_path.name + ".part")
    try:
        with open(part, "wb") as out:
            header = encode_scene(lambda c, r, w, h: read_raster(in_path, (c, r, w, h))[0],
                                  meta, codec, out, tile_size)
        part.replace(out_path)
    finally:
        part.unlink(missing_ok=True)
    return header


def decompress_file(in_path: str | Path, out_path: str | Path, window=None, cog: bool = False,
                    store: ModelStore | None = None) -> RasterMeta:
    """.eoz -> GeoTIFF/COG, written tile by tile."""
    with EozReader(in_path) as reader:
        meta = header_meta(reader.header, window)
        with RasterWriter(out_path, meta, cog=cog) as writer:
            for piece, col, row in decode_scene(reader, window, store):
                writer.write(piece, col, row)
    return meta
