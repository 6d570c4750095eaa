"""The multirate hyperprior network and its exact integer hyper-synthesis."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from eoz.models.hyperprior import HyperpriorConfig, IntegerHyperSynthesis, ModulatedHyperprior

CONFIG = HyperpriorConfig(channels=8, latent_channels=8, hyper_channels=8)


def test_forward_shapes_rates_and_modulation():
    torch.manual_seed(0)
    model = ModulatedHyperprior(CONFIG)
    x = torch.randn(2, 4, 64, 64)
    out = model(x, torch.tensor([64.0, 65536.0]))
    assert out["recon"].shape == x.shape and out["bpp"].shape == (2,)
    assert (out["bpp"] > 0).all()
    gains = model.log_gain(torch.tensor([64.0, 1024.0, 65536.0]))
    assert gains.shape == (3, 8)
    assert (gains[1] > gains[0]).all() and (gains[2] > gains[1]).all()  # finer steps for larger lambda


def test_eval_pass_rounds_and_is_deterministic():
    torch.manual_seed(0)
    model = ModulatedHyperprior(CONFIG).eval()
    x = torch.randn(1, 4, 32, 32)
    a, b = model(x, torch.tensor([512.0])), model(x, torch.tensor([512.0]))
    torch.testing.assert_close(a["recon"], b["recon"], rtol=0, atol=0)
    torch.testing.assert_close(a["bpp"], b["bpp"], rtol=0, atol=0)


def _integer_model(seed=0) -> tuple[ModulatedHyperprior, IntegerHyperSynthesis]:
    torch.manual_seed(seed)
    model = ModulatedHyperprior(CONFIG)
    return model, IntegerHyperSynthesis.from_module(model.hyper_synthesis)


def test_integer_hyper_synthesis_tracks_the_float_one():
    model, integer = _integer_model()
    z = np.random.default_rng(0).integers(-6, 7, (8, 3, 5))
    mean, log_scale = integer(z)
    assert mean.dtype == np.int64 and mean.shape == (8, 12, 20)
    float_mean, float_log_scale = model.hyper_synthesis(torch.from_numpy(z).float()[None])
    unit = 2.0 ** IntegerHyperSynthesis.ACTIVATION_BITS
    np.testing.assert_allclose(mean / unit, float_mean[0].detach().numpy(), atol=5e-3)
    np.testing.assert_allclose(log_scale / unit, float_log_scale[0].detach().numpy(), atol=5e-3)


def test_integer_hyper_synthesis_survives_its_tensors():
    _, integer = _integer_model()
    back = IntegerHyperSynthesis.from_tensors(integer.to_tensors("h"), "h")
    z = np.random.default_rng(1).integers(-3, 4, (8, 2, 2))
    for a, b in zip(integer(z), back(z)):
        np.testing.assert_array_equal(a, b)


def test_oversized_weights_are_refused():
    with pytest.raises(ValueError, match="too large"):
        IntegerHyperSynthesis([np.full((2, 2, 3, 3), 1 << 20)], [np.zeros(2)])


_CHILD = """
import json, sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from eoz.models.hyperprior import HyperpriorConfig, IntegerHyperSynthesis, ModulatedHyperprior
torch.manual_seed(0)
model = ModulatedHyperprior(HyperpriorConfig(channels=8, latent_channels=8, hyper_channels=64))
z = np.random.default_rng(2).integers(-20, 21, (64, 16, 16))
mean, log_scale = IntegerHyperSynthesis.from_module(model.hyper_synthesis)(z)
print(json.dumps([int(mean.sum()), int((mean * np.arange(mean.size).reshape(mean.shape) % 1000003).sum()),
                  int(log_scale.sum()), int(np.abs(log_scale).max())]))
"""


def test_integer_hyper_synthesis_is_identical_with_one_and_two_threads():
    """Full-width layers (64 channels, 576-term sums) so BLAS really splits the work."""
    runs = [json.loads(subprocess.run([sys.executable, "-c", _CHILD, str(n)], capture_output=True,
                                      text=True, check=True).stdout) for n in (1, 2)]
    assert runs[0] == runs[1]
