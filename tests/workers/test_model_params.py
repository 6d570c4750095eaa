"""The model catalogue the service lists: what each model takes and which queue runs it.

The options themselves are resolved by eoz.resolve (tests/eoz/test_resolve.py).
"""

from __future__ import annotations

import pytest

from eoz.errors import UnknownModelError
from eoz.resolve import resolve
from workers.models import catalogue


def test_unknown_models(service_env):
    with pytest.raises(UnknownModelError, match=r"available: \['tiny-hp', 'tiny-predictive', 'tiny-vq', 'tiny-wavelet'\]"):
        resolve("no-such-model")


def test_catalogue_lists_models_and_the_baseline(service_env):
    entries = {e["model_id"]: e for e in catalogue()}
    assert entries["tiny-vq"]["bands"] == ["B02", "B03", "B04", "B08"]
    assert entries["tiny-vq"]["parameters"] == ["rate_weight"] and len(entries["tiny-vq"]["weights_sha256"]) == 64
    assert entries["tiny-hp"]["parameters"] == ["psnr", "mse", "lambda", "block", "open_loop"]
    assert entries["jpeg2000"]["parameters"] == ["psnr", "quality", "lossless", "klt"]
    assert (entries["tiny-vq"]["queue"], entries["tiny-hp"]["queue"], entries["jpeg2000"]["queue"]) == (
        "gpu", "gpu", "cpu")
