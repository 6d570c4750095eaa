"""Golden files: .eoz files written once (tests/data/golden/make.py) must decode to the same
pixels with every later build, on any machine and thread count. They need no ../shared
(only the check of lossless and bounded files against their source does)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eoz import metrics
from eoz.container import EozReader
from eoz.errors import ContainerError
from eoz.raster import read_raster
from eoz.scene import decompress_array
from tests.data.golden.make import derived, valid_pixels

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
CASES = json.loads((GOLDEN / "golden.json").read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_file_decodes_to_its_pixels(name):
    """And to its GDAL metadata and mask band, where the case records them (session 23 on)."""
    case = CASES[name]
    data = (GOLDEN / f"{name}.eoz").read_bytes()
    decoded, meta = decompress_array(data)
    assert list(decoded.shape) == case["shape"] and str(decoded.dtype) == case["dtype"]
    assert hashlib.sha256(decoded.tobytes()).hexdigest() == case["pixels_sha256"]
    if "metadata" in case:
        assert meta.metadata == case["metadata"]
    if "mask_sha256" in case:
        assert hashlib.sha256(valid_pixels(data).tobytes()).hexdigest() == case["mask_sha256"]


PINNED = {"wavelet-hyperprior": ("wavelet", "2"), "predictive": ("predictive", "1")}


def test_golden_files_pin_their_model_version():
    for name, case in CASES.items():
        with EozReader(GOLDEN / f"{name}.eoz") as reader:
            header = reader.header
        if case["model"] == "jpeg2000":
            assert header.codec == "jpeg2000" and header.lossless
        else:
            codec, version = PINNED[case["model"]]
            version = case.get("version", version)   # cases written after the first pin their own
            assert (header.codec, header.model_id, header.model_version) == (codec, case["model"], version)


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if "lossless" in c["params"] or
                                        "max_error" in c["params"]))
def test_lossless_and_bounded_golden_files_hold_against_their_source(name, shared_data):
    case = CASES[name]
    original, meta = read_raster(shared_data / case["source"], window=tuple(case["window"]))
    if "derived" in case:
        original = derived(case["derived"], original, meta)[0]
    decoded, _ = decompress_array((GOLDEN / f"{name}.eoz").read_bytes())
    bound = np.asarray(case["params"].get("max_error", [0.0]), np.float64)
    error = metrics.max_error_per_band(original, decoded)
    assert (np.asarray(error) <= bound).all()


def test_golden_files_decode_the_same_in_a_fresh_single_threaded_process():
    script = ("import hashlib, sys; from eoz.scene import decompress_array\n"
              "for path in sys.argv[1:]:\n"
              "    print(hashlib.sha256(decompress_array(open(path, 'rb').read())[0].tobytes()).hexdigest())\n")
    names = sorted(CASES)
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script, *[str(GOLDEN / f"{n}.eoz") for n in names]],
                         capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out == [CASES[n]["pixels_sha256"] for n in names]


def test_a_golden_file_with_one_flipped_bit_is_refused_not_misdecoded():
    data = bytearray((GOLDEN / "wavelet_s2_global_50db.eoz").read_bytes())
    data[-40] ^= 0x10
    with pytest.raises(ContainerError, match="(?i)crc"):
        decompress_array(bytes(data))
