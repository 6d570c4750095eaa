"""Compress and decompress in memory and measure the result (`eoz eval`, benchmarks, manifests).

Figures follow DESIGN.md's Metrics section: compression ratio against the raw array bytes,
bits per pixel per band from the whole file (header included), PSNR at a stated peak, SSIM
per band on original units.
"""

from __future__ import annotations

import time

import numpy as np

from eoz import metrics
from eoz.codecs import Codec, VQVAECodec
from eoz.container import EozReader
from eoz.raster import RasterMeta
from eoz.registry import ModelStore
from eoz.resolve import S2_PEAK
from eoz.scene import compress_array, decompress_array
from eoz.tiling import padded_shape


def evaluate(array: np.ndarray, meta: RasterMeta, codec: Codec, tile_size: int | None = None,
             peak: float = S2_PEAK, store: ModelStore | None = None, overlap: int | None = None) -> dict:
    """Measure one codec on one image; ``store`` is where the decoder finds the pinned model."""
    start = time.perf_counter()
    data = compress_array(array, meta, codec, tile_size, overlap)
    encoded = time.perf_counter()
    recon, _ = decompress_array(data, store=store)
    decoded = time.perf_counter()
    bands, h, w = array.shape
    ssim_bands = metrics.ssim_per_band(array, recon)
    result = {
        "codec": codec.codec_id,
        "shape": [bands, h, w],
        "dtype": str(array.dtype),
        "bytes": len(data),
        "raw_bytes": array.nbytes,
        "compression_ratio": metrics.compression_ratio(h, w, bands, array.itemsize, len(data)),
        "bpp_per_band": metrics.bits_per_pixel_per_band(len(data), h, w, bands),
        "peak": peak,
        "psnr": metrics.psnr(array, recon, peak),
        "psnr_per_band": [metrics.psnr(array[b], recon[b], peak) for b in range(bands)],
        "ssim": float(np.mean(ssim_bands)),
        "ssim_per_band": ssim_bands,
        "max_error_per_band": metrics.max_error_per_band(array, recon),
        "encode_seconds": encoded - start,
        "decode_seconds": decoded - encoded,
    }
    if isinstance(codec, VQVAECodec):
        result.update(index_sizes(data, codec))
    return result


def index_sizes(data: bytes, codec: VQVAECodec) -> dict:
    """Entropy-coded index bytes against fixed-length w*h*log2(K)/8 bytes per level."""
    with EozReader(data) as reader:
        header = reader.header
        coded = sum(e.length for e in reader.entries)
        fixed = 0.0
        for index in range(header.tile_count):
            _, _, h, w = header.coded_bounds(index)
            fixed += codec.prior.fixed_length_bytes(
                codec.level_shapes(*padded_shape(h, w, codec.stride)))
    overhead = len(data) - coded
    raw = header.height * header.width * len(header.bands) * np.dtype(header.dtype).itemsize
    return {"index_bytes_entropy_coded": coded, "index_bytes_fixed_length": round(fixed),
            "compression_ratio_fixed_length": raw / (overhead + fixed)}
