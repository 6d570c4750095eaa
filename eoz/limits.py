"""DecodeLimits: how much one .eoz file may make a decoder allocate, checked before it does.

A file is untrusted input whose few bytes can describe a huge image, tile or side stream, so
the reader checks the header and tile table against these limits when it opens a file
(``DecodeLimits.check_header``, ``check_entry``), and each payload parser keeps within the
tile that the checked header implies: side streams inflate no further than the tile's shape
allows (``inflate``), a JPEG 2000 codestream must match its tile before OpenJPEG runs, and
every decoded tile must have its tile's shape. Anything beyond them is a ``DecodeLimitError``,
a ``ContainerError``, never a ``MemoryError``.

The defaults take 512 px tiles (the default) of up to 30 bands, 1024 px tiles of up to
7 bands (with VQVAE-FPN's 8 px overlap; 8 without) and many-band rasters in smaller tiles
(224-band EnMAP: up to 193 px; the EnMAP tiles in shared/data are 32 px). The
memory of decoding one tile grows with its samples (bands x coded pixels): measured with
tracemalloc on 4-band uint16 tiles, about 10 bytes per sample for JPEG 2000 (OpenJPEG's own
buffers come on top, bounded by the same SIZ check), 45 for the wavelet codec and 80 for
the hyperprior (plus its network's activations), so ``max_tile_samples`` = 2^23 holds one
tile to about 85 MB in JPEG 2000 and 380 MB in the wavelet codec. ``encode_scene`` refuses
to write a file beyond the default limits, so eoz never writes a file it refuses to read.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from eoz.errors import ContainerError, DecodeLimitError


@dataclass(frozen=True)
class DecodeLimits:
    """Largest file a decoder accepts; each refusal names the field that would admit it."""

    max_pixels: int = 2**31                 # image height x width (a Sentinel-2 tile is 1.2e8)
    max_bands: int = 4095                   # JPEG 2000's most components; any codec of ours fits
    max_tile_size: int = 4096               # tile edge in pixels (the API's largest)
    max_overlap: int = 256                  # context pixels around a tile (VQVAE-FPN codes 8)
    max_tile_samples: int = 2**23           # bands x coded pixels of one tile: the memory it costs
    max_tile_bytes: int = 128 * 2**20       # one tile's payload

    def check_header(self, header) -> None:
        """Refuse an image, tile grid or band count beyond the limits (an eoz.container.Header)."""
        pixels = header.height * header.width
        if pixels > self.max_pixels:
            raise DecodeLimitError(f"the image is {header.height} x {header.width} = {pixels} pixels; "
                                   f"the decode limit is {self.max_pixels} (max_pixels)")
        if len(header.bands) > self.max_bands:
            raise DecodeLimitError(f"the image has {len(header.bands)} bands; the decode limit is "
                                   f"{self.max_bands} (max_bands)")
        if header.tile_size > self.max_tile_size:
            raise DecodeLimitError(f"tile size {header.tile_size} exceeds the decode limit of "
                                   f"{self.max_tile_size} pixels (max_tile_size)")
        if header.overlap > self.max_overlap:
            raise DecodeLimitError(f"overlap {header.overlap} exceeds the decode limit of "
                                   f"{self.max_overlap} pixels (max_overlap)")
        # tile 0 codes the most pixels: a full tile (or the whole image) plus overlap on one side
        _, _, height, width = header.coded_bounds(0)
        samples = len(header.bands) * height * width
        if samples > self.max_tile_samples:
            raise DecodeLimitError(f"a tile codes {len(header.bands)} bands x {height} x {width} = {samples} "
                                   f"samples; the decode limit is {self.max_tile_samples} (max_tile_samples): "
                                   "use smaller tiles")

    def tile_size_for(self, bands: int, overlap: int, preferred: int, multiple: int = 64) -> int:
        """The largest tile edge up to ``preferred``, a multiple of ``multiple``, whose tiles
        (with overlap on both sides) stay within max_tile_samples: many-band rasters (EnMAP's
        224 bands) take smaller tiles than the default instead of a file no reader accepts."""
        edge = preferred
        while edge > multiple and bands * (edge + 2 * overlap) ** 2 > self.max_tile_samples:
            edge -= multiple
        return edge

    def check_entry(self, index: int, length: int) -> None:
        if length > self.max_tile_bytes:
            raise DecodeLimitError(f"tile {index} is {length} bytes; the decode limit is "
                                   f"{self.max_tile_bytes} (max_tile_bytes)")


def inflate(data: bytes, max_length: int, what: str) -> bytes:
    """A whole zlib stream, refused once it inflates past ``max_length`` bytes (before it has)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_length)
        # output stopped at the cap: one byte more decides whether the stream had more to give
        if not inflater.eof and inflater.unconsumed_tail and inflater.decompress(inflater.unconsumed_tail, 1):
            raise DecodeLimitError(f"{what} inflates to more than {max_length} bytes")
    except zlib.error as e:
        raise ContainerError(f"{what} is not a zlib stream: {e}") from None
    if not inflater.eof:
        raise ContainerError(f"{what} is truncated")
    if inflater.unused_data:
        raise ContainerError(f"{what} has data after its zlib stream")
    return out
