"""Building codecs: for a model id and its parameters, or for a file's header.

A file is decoded only by the model it pins: a stream whose pinned weights (and, for VQ
models, codebooks) differ from those of the model offered is refused. Learned models load
once per process.
"""

from __future__ import annotations

from functools import lru_cache

from eoz.codecs.base import Codec
from eoz.codecs.hyperprior import HyperpriorCodec
from eoz.codecs.jpeg2000 import JPEG2000Codec
from eoz.codecs.partition import SpectralPartitionCodec
from eoz.codecs.predictive import PredictiveCodec
from eoz.codecs.vqvae_fpn import VQVAECodec
from eoz.codecs.wavelet import WaveletCodec
from eoz.container import Header
from eoz.errors import ContainerError, InputError, ModelMismatchError
from eoz.registry import ModelStore

LEARNED_CODECS = {c.codec_id: c for c in (VQVAECodec, HyperpriorCodec, SpectralPartitionCodec, WaveletCodec,
                                           PredictiveCodec)}
# The parameters codec_for_model takes for each learned codec, and the method that gives
# them to the model's loaded codec (a parameter not given is passed as None).
LEARNED_CODEC_PARAMETERS = {
    VQVAECodec.codec_id: (VQVAECodec.with_rate_weight, ("rate_weight",)),
    HyperpriorCodec.codec_id: (HyperpriorCodec.with_target, ("target",)),
    SpectralPartitionCodec.codec_id: (SpectralPartitionCodec.with_options, ("target", "predict_bands")),
    WaveletCodec.codec_id: (WaveletCodec.with_target, ("target",)),
    PredictiveCodec.codec_id: (PredictiveCodec.with_bound, ("lossless", "max_error")),
}


@lru_cache(maxsize=8)
def _learned_codec(root: str, model_id: str, version: str) -> Codec:
    """Models load once per process: workers keep them between jobs."""
    entry = ModelStore(root).get(model_id, version)
    return LEARNED_CODECS[entry.codec](entry)


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
    configure, allowed = LEARNED_CODEC_PARAMETERS[entry.codec]
    if set(params) - set(allowed):
        raise InputError(f"{model_id} takes {sorted(allowed)}, got {sorted(params)}")
    codec = _learned_codec(str(store.root), entry.model_id, entry.version)
    return configure(codec, **{name: params.get(name) for name in allowed})


def _pins(codec_id: str, weights_sha256, codebook_sha256) -> tuple:
    """What must match between a file and the model that decodes it."""
    return (weights_sha256, list(codebook_sha256)) if codec_id == VQVAECodec.codec_id else (weights_sha256,)


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
