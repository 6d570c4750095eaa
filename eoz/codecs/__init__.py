"""Codecs: one padded tile array in -> payload bytes out, and back; one module per codec.

base.py frames the payloads; factory.py builds a codec for a model or a file header and
checks its pins. The scene loop around them is eoz.scene, whose functions are also
importable from here.
"""

from eoz.codecs.base import DEFAULT_TILE_SIZE, Codec, fill_nodata
from eoz.codecs.factory import LEARNED_CODECS, codec_for_header, codec_for_model
from eoz.codecs.hyperprior import HyperpriorCodec
from eoz.codecs.jpeg2000 import JPEG2000Codec
from eoz.codecs.partition import SpectralPartitionCodec, SubModel
from eoz.codecs.vqvae_fpn import VQVAECodec
from eoz.codecs.wavelet import WaveletCodec

_SCENE = ("header_meta", "encode_scene", "decode_scene", "compress_array", "decompress_array",
          "compress_file", "decompress_file")

__all__ = ["DEFAULT_TILE_SIZE", "LEARNED_CODECS", "Codec", "HyperpriorCodec", "JPEG2000Codec",
           "SpectralPartitionCodec", "SubModel", "VQVAECodec", "WaveletCodec", "codec_for_header", "codec_for_model",
           "fill_nodata", *_SCENE]


def __getattr__(name: str):
    """The scene loop's functions, looked up on first use (eoz.scene imports this package)."""
    if name in _SCENE:
        from eoz import scene
        return getattr(scene, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
