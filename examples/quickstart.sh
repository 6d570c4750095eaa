#!/usr/bin/env bash
# The README's "CLI quick start", line for line below the first blank line (tests/test_quickstart.py
# checks that they match and runs it without ../shared; .ci/run runs it in a fresh clone).
# Run it from the repository root: it reads only the bundled samples in examples/data/.
set -euo pipefail

S2=examples/data/s2_10m_B02-B03-B04-B08.tif     # bundled: Sentinel-2 L1C 10 m, B02 B03 B04 B08, uint16
OUT=$(mktemp -d)                                # a scratch folder: nothing is written into the repository
eoz models                                             # models in model_store, and jpeg2000
eoz compress $S2 $OUT/vq.eoz --model vqvae-fpn-s2-10m  # GeoTIFF -> .eoz
eoz info $OUT/vq.eoz                                   # header, pins, tile table (JSON)
eoz decompress $OUT/vq.eoz $OUT/vq.tif                 # -> GeoTIFF, georeferencing and tags kept
eoz decompress $OUT/vq.eoz $OUT/part.tif --window 64 32 128 96 --cog   # COL ROW WIDTH HEIGHT: decodes only the tiles it touches
eoz eval $S2 --model wavelet-hyperprior --psnr 45      # size, ratio, bpp, PSNR/SSIM per band, seconds
eoz eval $S2 --model jpeg2000 --psnr 45 --klt          # the baseline at the same target PSNR
eoz compress $S2 $OUT/wb.eoz --model wavelet-hyperprior --psnr 45 --block 32   # every 32 px block >= 45 dB
eoz compress $S2 $OUT/auto.eoz                              # --model auto, the default: picks from the bands and dtype, says which
eoz compress $S2 $OUT/archive.eoz --lossless                # auto picks the predictive model: bit exact, sha256 per tile
eoz verify $OUT/archive.eoz $S2                             # exit 0: every sample exact (or within --max-error), same georeferencing
eoz compress $S2 $OUT/bounded.eoz --model predictive --max-error 4   # no sample off by more than 4 DN
eoz features $S2 $OUT/latents.tif --model vqvae-fpn-s2-10m  # top-level latents as a georeferenced GeoTIFF
HSI=examples/data/enmap_hsi_224band.tif         # bundled: EnMAP, 224 bands, int16
eoz compress $HSI $OUT/hsi.eoz --model auto --psnr 45       # every band >= 45 dB
S1=examples/data/s1_db_VV-VH.tif                # bundled: Sentinel-1 VV and VH in dB, float32
eoz eval $S1 --model hyperprior-s1-db --psnr 35 --block 16  # dB domain, peak 50: RMSE <= 0.9 dB per block
L8=examples/data/landsat8_30m_10band.tif        # bundled: Landsat 8, 10 bands, uint16
eoz compress $L8 $OUT/l8.eoz --model auto --max-error 8     # a sensor without a model of its own
