"""Codecs: one padded tile array in -> payload bytes out, and back; one module per codec.

base.py frames the payloads; factory.py builds a codec for a model or a file header and
checks its pins. The scene loop around them is eoz.scene, whose functions are also
importable from here.
"""

from eoz.codecs.base import DEFAULT_TILE_SIZE, Codec, fill_nodata
from eoz.codecs.factory import LEARNED_CODECS, codec_class, codec_for_header, codec_for_model
from eoz.codecs.jpeg2000 import JPEG2000Codec

_SCENE = ("header_meta", "encode_scene", "decode_scene", "compress_array", "decompress_array",
          "compress_file", "decompress_file")
# codec classes imported on first use (the network codecs bring torch): class name -> codec id
_CLASSES = {class_name: codec_id for codec_id, (_, class_name, _, _) in LEARNED_CODECS.items()}

__all__ = ["DEFAULT_TILE_SIZE", "LEARNED_CODECS", "Codec", "JPEG2000Codec", "codec_class", "codec_for_header",
           "codec_for_model", "fill_nodata", *_CLASSES, *_SCENE]


def __getattr__(name: str):
    """The scene loop's functions (eoz.scene imports this package) and the learned codecs'
    classes, looked up on first use."""
    if name in _SCENE:
        from eoz import scene
        return getattr(scene, name)
    if name in _CLASSES:
        return codec_class(_CLASSES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
