"""The spectral-partition codec: many bands, one single-band hyperprior per spectral interval."""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass

import numpy as np

from eoz import spectral
from eoz.codecs.base import Codec, _to_dtype, model_pins
from eoz.codecs.hyperprior import HyperpriorCodec
from eoz.container import DTYPES
from eoz.errors import ContainerError, InputError
from eoz.models.hyperprior import HyperpriorConfig
from eoz.quality import QualityTarget
from eoz.raster import RasterMeta
from eoz.registry import ModelEntry


@dataclass(frozen=True)
class SubModel:
    """One network of a multi-network model: its manifest section and its own tensors."""
    model_id: str
    version: str
    weights_sha256: str
    manifest: dict
    tensors: dict
    bands: tuple = ()

    def load_weights(self) -> dict:
        return self.tensors


_EMPTY, _INDEPENDENT, _PREDICTED = 0, 1, 2   # how a band is coded in a spectral-partition tile


class SpectralPartitionCodec(Codec):
    """Many-band rasters coded band by band with one single-channel hyperprior per spectral
    interval (see eoz.spectral); each band after an interval's first is, by default, coded
    as the residual of its prediction from the previous decoded band, with a second model
    trained on such residuals.

    Tile payload: the dtype's name (u8 length + ascii; numpy's ``dtype.str``, which must be
    the file's dtype: it sets how decoded bands are rounded), then per band one mode byte
    (0: no valid pixel, 1: coded on its own, 2: predicted, followed by float32 gain and
    offset), a u32 length and that band's hyperprior payload. The quality target holds for
    every band, so it holds for the tile. The prediction uses the decoded band as the
    decoder outputs it; the entropy-coded symbols are bit-exact anywhere, the float
    synthesis agrees between machines to rounding.
    """

    codec_id = "spectral-partition"
    dtype: np.dtype | None = None   # the dtype tiles must name (the raster's: for_raster); None: any a file may have

    def __init__(self, entry: ModelEntry, target: QualityTarget | None = None, predict_bands: bool = True):
        self.entry, self.target, self.predict_bands = entry, target, predict_bands
        tensors = entry.load_weights()
        shared = {n: v for n, v in tensors.items() if not n.startswith("interval")}   # tables of every sub-model
        self.intervals = [(iv["start"], iv["stop"]) for iv in entry.manifest["intervals"]]
        self.interval_starts = {start for start, _ in self.intervals}
        self.models = []
        for k, interval in enumerate(entry.manifest["intervals"]):
            pair = []
            for kind in ("independent", "predicted"):
                prefix = f"interval{k}.{kind}."
                sub = SubModel(entry.model_id, entry.version, entry.weights_sha256, interval[kind],
                               {**shared, **{n[len(prefix):]: v for n, v in tensors.items() if n.startswith(prefix)}})
                pair.append(HyperpriorCodec(sub))
            self.models.append(pair)
        self.interval_of = np.concatenate([np.full(b - a, k) for k, (a, b) in enumerate(self.intervals)])
        self.stride = HyperpriorConfig.factor
        self.bands = entry.bands

    def with_options(self, target: QualityTarget | None, predict_bands: bool | None = None) -> "SpectralPartitionCodec":
        """The same loaded models with another target, and with or without band prediction."""
        codec = copy.copy(self)
        codec.target = target
        codec.predict_bands = self.predict_bands if predict_bands is None else predict_bands
        codec.models = [[m.with_target(target) for m in pair] for pair in self.models]
        return codec

    def header_fields(self) -> dict:
        quality = {**(self.target.to_dict() if self.target else {}), "band_prediction": self.predict_bands}
        return {**model_pins(self.entry), "quality": quality}

    def for_raster(self, meta: RasterMeta) -> "SpectralPartitionCodec":
        """Decoding holds each tile's dtype to the raster's (the file header's)."""
        codec = copy.copy(self)
        codec.dtype = np.dtype(meta.dtype)
        return codec

    def _payload_dtype(self, name: bytes) -> np.dtype:
        """The dtype a tile names, if it is the one it may name."""
        allowed = [self.dtype] if self.dtype is not None else [np.dtype(d) for d in DTYPES]
        for dtype in allowed:
            if name == dtype.str.encode():
                return dtype
        raise ContainerError(f"spectral-partition tile names dtype {name[:16]!r}; the file's is "
                             f"{self.dtype.str if self.dtype is not None else 'one of ' + str(list(DTYPES))}")

    def _band_codec(self, band: int, predicted: bool) -> HyperpriorCodec:
        return self.models[self.interval_of[band]][int(predicted)]

    def _predicted(self, band: int, previous: np.ndarray | None) -> bool:
        return previous is not None and band not in self.interval_starts

    def encode_tile(self, tile: np.ndarray, valid: np.ndarray) -> bytes:
        if self.target is None:
            raise InputError("the spectral-partition model needs a target: --psnr, --mse or --lambda")
        dtype = tile.dtype
        integer = dtype.kind in "iu"
        parts, previous = [struct.pack("<B", len(dtype.str)) + dtype.str.encode()], None
        for b, (band, band_valid) in enumerate(zip(tile, valid)):
            if not band_valid.any():
                parts.append(struct.pack("<B", _EMPTY))
                previous = None
                continue
            predicted = self.predict_bands and self._predicted(b, previous)
            prediction = 0.0
            if predicted:
                gain, offset = spectral.fit_prediction(previous, band, band_valid)
                prediction = spectral.predict(previous, gain, offset, integer)
                source = band.astype(np.float64) - prediction
                source = source.astype(np.int64) if integer else source
                parts.append(struct.pack("<Bff", _PREDICTED, gain, offset))
            else:
                source = band
                parts.append(struct.pack("<B", _INDEPENDENT))
            codec = self._band_codec(b, predicted)
            payload = codec.encode_tile(source[None], band_valid[None])
            parts.append(struct.pack("<I", len(payload)) + payload)
            decoded = codec.decode_tile(payload, 1, *band.shape)[0]
            previous = _to_dtype(prediction + decoded, dtype).astype(np.float64)
        return b"".join(parts)

    def decode_tile(self, payload: bytes, bands: int, height: int, width: int) -> np.ndarray:
        if not payload:
            raise ContainerError("spectral-partition tile is empty")
        n = payload[0]
        dtype = self._payload_dtype(payload[1:1 + n])
        out, pos, previous = np.zeros((bands, height, width)), 1 + n, None
        for b in range(bands):
            try:
                mode = payload[pos]
                if mode == _PREDICTED:
                    _, gain, offset = struct.unpack_from("<Bff", payload, pos)
                    pos += 9
                elif mode in (_INDEPENDENT, _EMPTY):
                    pos += 1
                else:
                    raise ContainerError(f"band {b} has unknown coding mode {mode}")
                if mode == _EMPTY:
                    previous = None
                    continue
                (length,) = struct.unpack_from("<I", payload, pos)
            except (IndexError, struct.error):
                raise ContainerError(f"spectral-partition tile ends inside band {b}'s head") from None
            band_payload = payload[pos + 4:pos + 4 + length]
            pos += 4 + length
            if len(band_payload) != length:
                raise ContainerError(f"spectral-partition tile ends inside band {b}")
            predicted = mode == _PREDICTED
            if predicted and previous is None:
                raise ContainerError(f"band {b} is predicted from a band that was not coded")
            prediction = spectral.predict(previous, gain, offset, dtype.kind in "iu") if predicted else 0.0
            decoded = self._band_codec(b, predicted).decode_tile(band_payload, 1, height, width)[0]
            previous = out[b] = _to_dtype(prediction + decoded, dtype).astype(np.float64)
        if pos != len(payload):
            raise ContainerError("spectral-partition tile has data after its last band")
        return out
