"""Top-level VQVAE-FPN latents as a georeferenced raster (`eoz features`, POST /v1/features).

The top level of the pyramid is a compact description of the scene (one D-dimensional
vector per f x f pixels) that classifiers can use without decoding the image: land cover
from the latents of an archive, change detection between passes. The raster keeps the
scene's CRS, with the geotransform scaled by f (or a Level-1 scene's GCPs or RPCs), so latents
overlay the imagery. It is written tile by tile, so a scene larger than memory streams through.
Pixels that are nodata, or invalid by the raster's mask band, are filled as the codecs fill them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from rasterio.transform import Affine

from eoz.codecs import DEFAULT_TILE_SIZE, VQVAECodec, fill_nodata
from eoz.errors import InputError
from eoz.raster import Limits, RasterMeta, RasterReader, RasterWriter, coarse_georeferencing
from eoz.scene import Progress
from eoz.tiling import pad_to_multiple


def feature_meta(meta: RasterMeta, factor: int, channels: int) -> RasterMeta:
    transform = None if meta.transform is None else list(Affine(*meta.transform) @ Affine.scale(factor))[:6]
    return RasterMeta(height=math.ceil(meta.height / factor), width=math.ceil(meta.width / factor),
                      count=channels, dtype="float32", band_names=[f"latent_{i}" for i in range(channels)],
                      crs=meta.crs, transform=transform, nodata=None,
                      metadata=coarse_georeferencing(meta.metadata, factor))


def extract_features(in_path: str | Path, out_path: str | Path, codec: VQVAECodec, quantized: bool = True,
                     tile_size: int = DEFAULT_TILE_SIZE, limits: Limits = Limits(),
                     progress: Progress | None = None) -> RasterMeta:
    """Write the top-level latents of the GeoTIFF at in_path (quantized: the codebook vectors);
    ``progress`` hears of each tile written."""
    if not isinstance(codec, VQVAECodec):
        raise InputError("features come from the top level of a VQVAE-FPN model")
    factor = codec.config.factor
    if tile_size % factor:
        raise InputError(f"tile size {tile_size} is not a multiple of the model's stride {factor}")
    with RasterReader(in_path, limits) as reader:
        codec.check_input(reader.meta)
        out_meta = feature_meta(reader.meta, factor, codec.config.embedding_dim)
        _write_features(reader, out_path, out_meta, codec, quantized, tile_size, progress)
    return out_meta


def _write_features(reader: RasterReader, out_path, out_meta: RasterMeta, codec: VQVAECodec, quantized: bool,
                    tile_size: int, progress: Progress | None) -> None:
    meta, factor = reader.meta, codec.config.factor
    corners = [(row, col) for row in range(0, meta.height, tile_size) for col in range(0, meta.width, tile_size)]
    with RasterWriter(out_path, out_meta) as writer:
        for done, (row, col) in enumerate(corners, start=1):
            w, h = min(tile_size, meta.width - col), min(tile_size, meta.height - row)
            valid = reader.read_valid((col, row, w, h)) if "mask" in meta.metadata else None
            masked = None if valid is None or valid.all() else ~valid
            tile, _ = fill_nodata(reader.read((col, row, w, h))[0], meta.nodata, masked=masked)
            x = torch.from_numpy(codec.normalizer.forward(pad_to_multiple(tile, factor)))[None]
            with torch.no_grad():
                latents = codec.model.top_latents(x.to(codec.device), quantized)[0].cpu().numpy()
            writer.write(latents[:, :math.ceil(h / factor), :math.ceil(w / factor)].astype(np.float32),
                         col // factor, row // factor)
            if progress:
                progress(done, len(corners))
