"""Compress and decompress in memory and measure the result (`eoz eval`, benchmarks, manifests).

Figures follow DESIGN.md's Metrics section: compression ratio against the raw array bytes,
bits per pixel per band from the whole file (header included), PSNR at a stated peak, SSIM
per band on original units.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from eoz import metrics
from eoz.codecs import Codec
from eoz.container import EozReader, Header
from eoz.raster import Limits, RasterMeta, RasterReader
from eoz.registry import ModelStore
from eoz.resolve import S2_PEAK
from eoz.scene import Progress, compress_array, decode_scene, decompress_array
from eoz.tiling import padded_shape


def size_figures(height: int, width: int, bands: int, dtype: str, size: int) -> dict:
    """Ratio against the raw array bytes and bits per sample (per pixel per band), file bytes included."""
    itemsize = np.dtype(dtype).itemsize
    return {"raw_bytes": height * width * bands * itemsize,
            "compression_ratio": metrics.compression_ratio(height, width, bands, itemsize, size),
            "bpp_per_band": metrics.bits_per_pixel_per_band(size, height, width, bands)}


def stated_quality(header: Header) -> dict:
    """What a file's quality is known to be without decoding it, from what its encoder held to:
    exact, a bound on every sample, or a PSNR (MSE) that every block or tile reached (closed
    loop; JPEG 2000's target search measures each tile). Empty where only a decode would tell
    (VQ, a fixed lambda or quality level, open loop)."""
    q = header.quality
    if header.lossless:
        return {"exact": True}
    if "max_error" in q:
        return {"max_error_per_band": list(q["max_error"]) * (len(header.bands) if len(q["max_error"]) == 1 else 1)}
    per = f"block of {q['block']} px" if q.get("block") else "tile"
    if "target_psnr" in q:
        return {"psnr_at_least": q["target_psnr"], "psnr_peak": q["peak"], "per": per}
    if q.get("closed_loop") and "mse" in q:
        held = {"psnr_at_least": q["psnr"]} if "psnr" in q else {"mse_at_most": q["mse"]}
        return {**held, "psnr_peak": q["peak"], "per": per}
    return {}


def measure_file(eoz_path: str | Path, tif_path: str | Path, peak: float, limits: Limits = Limits(),
                 store: ModelStore | None = None, progress: Progress | None = None,
                 threads: int = 1) -> dict:
    """MSE and PSNR (at ``peak``) of an .eoz against its original GeoTIFF, decoded tile by
    tile (bounded memory; ``threads``: as ``decode_scene``); PSNR None when exact. Where the
    original has a mask band, over the pixels it calls valid."""
    squared, count = 0.0, 0
    with EozReader(eoz_path) as reader, RasterReader(tif_path, limits) as original_reader:
        for piece, col, row in decode_scene(reader, store=store, progress=progress, threads=threads):
            window = (col, row, piece.shape[2], piece.shape[1])
            original = original_reader.read(window)[0]
            if "mask" in original_reader.meta.metadata:
                valid = original_reader.read_valid(window)
                original, piece = original[:, valid], piece[:, valid]
            piece_squared, piece_count = metrics.squared_errors(original, piece)
            squared += piece_squared
            count += piece_count
    mse = squared / count if count else 0.0
    return {"mse": mse, "psnr": metrics.psnr_of_mse(mse, peak) if mse > 0 else None, "psnr_peak": peak}


def evaluate(array: np.ndarray, meta: RasterMeta, codec: Codec, tile_size: int | None = None,
             peak: float = S2_PEAK, store: ModelStore | None = None, overlap: int | None = None,
             progress: Progress | None = None, threads: int = 1, valid: np.ndarray | None = None) -> dict:
    """Measure one codec on one image; ``store`` is where the decoder finds the pinned model.
    ``progress`` counts each tile twice, encoded then decoded; ``threads`` code tiles at once
    (the same bytes; the seconds are wall time); ``valid``: the image's mask band, where its
    meta names one: PSNR and errors are measured on the pixels it calls valid (SSIM, a windowed
    measure, on the whole image)."""
    encoding = progress and (lambda done, total: progress(done, 2 * total))
    decoding = progress and (lambda done, total: progress(total + done, 2 * total))
    start = time.perf_counter()
    data = compress_array(array, meta, codec, tile_size, overlap, encoding, threads, valid)
    encoded = time.perf_counter()
    recon, _ = decompress_array(data, store=store, progress=decoding, threads=threads)
    decoded = time.perf_counter()
    bands, h, w = array.shape
    ssim_bands = metrics.ssim_per_band(array, recon)
    measured, measured_recon = (array, recon) if valid is None else (array[:, valid], recon[:, valid])
    result = {
        "codec": codec.codec_id,
        "shape": [bands, h, w],
        "dtype": str(array.dtype),
        "bytes": len(data),
        **size_figures(h, w, bands, str(array.dtype), len(data)),
        "peak": peak,
        "psnr": metrics.psnr(measured, measured_recon, peak),
        "psnr_per_band": [metrics.psnr(measured[b], measured_recon[b], peak) for b in range(bands)],
        "ssim": float(np.mean(ssim_bands)),
        "ssim_per_band": ssim_bands,
        "max_error_per_band": metrics.max_error_per_band(measured, measured_recon),
        "encode_seconds": encoded - start,
        "decode_seconds": decoded - encoded,
    }
    if codec.codec_id == "vqvae-fpn":
        result.update(index_sizes(data, codec))
    return result


def index_sizes(data: bytes, codec: "VQVAECodec") -> dict:
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
