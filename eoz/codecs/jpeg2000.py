"""The JPEG 2000 codec: the classical baseline (OpenJPEG through eoz.jpeg2000) per tile."""

from __future__ import annotations

import json
import struct

import numpy as np

from eoz import jpeg2000
from eoz.codecs.base import Codec
from eoz.errors import ContainerError, DecodeLimitError, InputError


class JPEG2000Codec(Codec):
    """OpenJPEG JPEG 2000 per tile; optional per-tile spectral KLT; lossless or lossy."""

    codec_id = "jpeg2000"
    parallel_tiles = True   # OpenJPEG (one thread a tile) releases the GIL

    def __init__(self, quality: float | None = None, lossless: bool = False, klt: bool = False,
                 target_psnr: float | None = None, peak: float = 10000.0):
        if not lossless and quality is None and target_psnr is None:
            raise InputError("jpeg2000 needs quality, target_psnr or lossless")
        self.quality, self.lossless, self.klt = quality, lossless, klt
        self.bounds_every_sample = lossless
        self.target_psnr, self.peak = target_psnr, peak

    def header_fields(self) -> dict:
        return {"quality": {k: v for k, v in (("quality", self.quality), ("lossless", self.lossless),
                                               ("klt", self.klt), ("target_psnr", self.target_psnr),
                                               ("peak", self.peak)) if v not in (None, False)}}

    def encode_tile(self, tile: np.ndarray, valid: np.ndarray) -> bytes:
        if self.lossless:
            stream, params = jpeg2000.encode(tile, lossless=True)
        elif self.target_psnr is not None:
            stream, params = jpeg2000.encode_to_psnr(tile, self.target_psnr, self.peak, klt=self.klt, valid=valid)
        else:
            stream, params = jpeg2000.encode(tile, quality=self.quality, klt=self.klt)
        head = json.dumps(params, separators=(",", ":")).encode()
        return struct.pack("<I", len(head)) + head + stream

    def decode_tile(self, payload: bytes, bands: int, height: int, width: int) -> np.ndarray:
        try:
            (n,) = struct.unpack_from("<I", payload)
        except struct.error as e:
            raise ContainerError(f"jpeg2000 tile parameters are unreadable: {e}") from None
        if n > _params_bound(bands):
            raise DecodeLimitError(f"jpeg2000 tile parameters of {n} bytes; those of a {bands}-band tile "
                                   f"take at most {_params_bound(bands)}")
        try:
            params = json.loads(payload[4:4 + n])
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ContainerError(f"jpeg2000 tile parameters are unreadable: {e}") from None
        shape = params.get("shape") if isinstance(params, dict) else None
        if shape != [bands, height, width]:
            raise ContainerError(f"jpeg2000 tile parameters name shape {shape} for a tile of {(bands, height, width)}")
        return jpeg2000.decode(payload[4 + n:], params)


def _params_bound(bands: int) -> int:
    """Most bytes the compact JSON params of a tile take: a KLT's means and matrix of
    float32 values (at most 15 characters each with their comma), and a few fixed fields."""
    return 1024 + 16 * bands * (bands + 1)
