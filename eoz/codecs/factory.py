"""Building codecs: for a model id and its parameters, or for a file's header.

A file is decoded only by the model it pins: a stream whose pinned weights (and, for VQ
models, codebooks) differ from those of the model offered is refused. Learned models load
once per process, and a codec's module only when it is first used: the network codecs
import torch, which the wavelet, predictive and JPEG 2000 paths never need (a second and
more off every CLI call).
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from eoz.codecs.base import Codec
from eoz.codecs.jpeg2000 import JPEG2000Codec
from eoz.container import Header
from eoz.errors import ContainerError, InputError, ModelMismatchError
from eoz.registry import ModelStore

# codec id -> (module of eoz.codecs, class, the method that gives the loaded codec its
# parameters, the parameters codec_for_model takes; one not given is passed as None)
LEARNED_CODECS = {
    "vqvae-fpn": ("vqvae_fpn", "VQVAECodec", "with_rate_weight", ("rate_weight",)),
    "hyperprior": ("hyperprior", "HyperpriorCodec", "with_target", ("target",)),
    "spectral-partition": ("partition", "SpectralPartitionCodec", "with_options", ("target", "predict_bands")),
    "wavelet": ("wavelet", "WaveletCodec", "with_target", ("target",)),
    "predictive": ("predictive", "PredictiveCodec", "with_bound", ("lossless", "max_error", "fast")),
}


def codec_class(codec_id: str) -> type[Codec]:
    module, name, _, _ = LEARNED_CODECS[codec_id]
    return getattr(importlib.import_module(f"eoz.codecs.{module}"), name)


@lru_cache(maxsize=8)
def _learned_codec(root: str, model_id: str, version: str) -> Codec:
    """Models load once per process: workers keep them between jobs."""
    entry = ModelStore(root).get(model_id, version)
    return codec_class(entry.codec)(entry)


def codec_for_model(model_id: str, version: str | None = None, store: ModelStore | None = None,
                    **params) -> Codec:
    """The codec for a model id; ``jpeg2000`` is the classical baseline.

    Parameters: jpeg2000 takes its own (quality, lossless, klt, target_psnr); the
    hyperprior takes ``target`` (a QualityTarget); a VQ model takes ``rate_weight``.
    """
    if model_id == JPEG2000Codec.codec_id:
        return JPEG2000Codec(**params)
    store = store or ModelStore()
    entry = store.get(model_id, version)
    if entry.codec not in LEARNED_CODECS:
        raise InputError(f"{model_id} uses codec {entry.codec!r}, which this build cannot run")
    _, _, configure, allowed = LEARNED_CODECS[entry.codec]
    if set(params) - set(allowed):
        raise InputError(f"{model_id} takes {sorted(allowed)}, got {sorted(params)}")
    codec = _learned_codec(str(store.root), entry.model_id, entry.version)
    return getattr(codec, configure)(**{name: params.get(name) for name in allowed})


def _pins(codec_id: str, weights_sha256, codebook_sha256) -> tuple:
    """What must match between a file and the model that decodes it."""
    return (weights_sha256, list(codebook_sha256)) if codec_id == "vqvae-fpn" else (weights_sha256,)


def codec_for_header(header: Header, store: ModelStore | None = None) -> Codec:
    """The codec that decodes a file, after checking the store's model matches its pins."""
    if header.codec == JPEG2000Codec.codec_id:
        return JPEG2000Codec(lossless=True)   # decoding needs no encoder settings
    if header.codec not in LEARNED_CODECS:
        raise ContainerError(f"unknown codec {header.codec!r} in the file header")
    codec = codec_for_model(header.model_id, header.model_version, store)
    if codec.codec_id != header.codec:
        raise ModelMismatchError(f"the file was encoded with the {header.codec} codec; the store's "
                                 f"{header.model_id} is a {codec.codec_id} model")
    offered_codebooks = getattr(codec, "codebook_sha256", [])
    if _pins(header.codec, header.weights_sha256, header.codebook_sha256) != \
            _pins(header.codec, codec.entry.weights_sha256, offered_codebooks):
        raise ModelMismatchError(
            f"the file was encoded with {header.model_id} version {header.model_version} "
            f"(weights {str(header.weights_sha256)[:12]}, codebooks "
            f"{[c[:12] for c in header.codebook_sha256]}); the store's {codec.entry.model_id} "
            f"version {codec.entry.version} has weights {codec.entry.weights_sha256[:12]}, codebooks "
            f"{[c[:12] for c in offered_codebooks]}: refusing to decode with other weights")
    return codec
