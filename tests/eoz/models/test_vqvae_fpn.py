"""VQVAE-FPN: index map shapes per level, encode/decode against forward, config checks."""

from __future__ import annotations

import pytest
import torch

from eoz.models.vqvae_fpn import VQVAEFPN, VQVAEFPNConfig

SIZES = {1: [16], 2: [16, 8], 3: [16, 8, 4]}
CHANNELS = {1: [8], 2: [8, 8], 3: [8, 8, 8]}


def _model(levels: int, first_factor: int, seed: int = 0) -> VQVAEFPN:
    torch.manual_seed(seed)
    config = VQVAEFPNConfig(channels=CHANNELS[levels], codebook_sizes=SIZES[levels],
                            embedding_dim=4, res_blocks=1, first_factor=first_factor)
    return VQVAEFPN(config).eval()


@pytest.mark.parametrize("first_factor", [2, 4])
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_index_map_shapes_per_level(levels, first_factor):
    model = _model(levels, first_factor)
    config = model.config
    assert config.factor == first_factor * 2 ** (levels - 1)
    h, w = 2 * config.factor, 3 * config.factor  # non-square
    x = torch.randn(2, 4, h, w)
    with torch.no_grad():
        maps = model.encode(x)
    assert len(maps) == levels
    for level, m in enumerate(maps):
        f = first_factor * 2 ** level
        assert config.level_factor(level) == f
        assert m.shape == (2, h // f, w // f) and m.dtype == torch.int64
        assert 0 <= int(m.min()) and int(m.max()) < SIZES[levels][level]
    assert maps[-1].shape[1:] == (2, 3)
    with torch.no_grad():
        recon, commitment, indices = model(x)
        top = model.top_latents(x)
        raw = model.top_latents(x, quantized=False)
    assert recon.shape == x.shape
    assert [i.shape for i in indices] == [m.shape for m in maps]
    assert top.shape == raw.shape == (2, 4, 2, 3)  # (B, embedding_dim, H/factor, W/factor)
    assert commitment.ndim == 0 and float(commitment) > 0


@pytest.mark.parametrize("levels, first_factor", [(2, 2), (3, 4), (1, 4)])
def test_encode_decode_equals_forward_in_eval_mode(levels, first_factor):
    model = _model(levels, first_factor, seed=3)
    x = torch.randn(1, 4, 32, 48)
    before = [q.embedding.clone() for q in model.quantizers]
    with torch.no_grad():
        recon, _, indices = model(x)
        maps = model.encode(x)
        decoded = model.decode(maps)
    for a, b in zip(indices, maps):
        assert torch.equal(a, b)
    torch.testing.assert_close(decoded, recon, rtol=1e-5, atol=1e-5)
    # eval-mode forward never updates the codebooks
    assert all(torch.equal(q.embedding, e) for q, e in zip(model.quantizers, before))
    # decode depends on every level's indices
    for level in range(levels):
        changed = [m.clone() for m in maps]
        changed[level] = (changed[level] + 1) % SIZES[levels][level]
        with torch.no_grad():
            assert not torch.allclose(model.decode(changed), decoded)


def test_top_latents_are_the_top_codebooks_vectors():
    model = _model(2, 2, seed=1)
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        top = model.top_latents(x)
        raw = model.top_latents(x, quantized=False)
        top_map = model.encode(x)[-1]
    torch.testing.assert_close(top, model.quantizers[-1].lookup(top_map))
    assert not torch.allclose(top, raw)
    assert torch.equal(model.quantizers[-1].nearest(raw), top_map)


def test_lower_levels_see_the_level_above():
    """FPN lateral: the bottom index map depends on the top encoder, not only its own."""
    model = _model(2, 2, seed=2)
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        before = model.encode(x)[0]
        model.encoders[1][0].weight.mul_(5.0)  # only the top encoder changes
        after = model.encode(x)[0]
    assert not torch.equal(before, after)


def test_training_forward_gives_gradients_to_the_encoder():
    model = _model(2, 2).train()
    x = torch.randn(2, 4, 16, 16)
    recon, commitment, _ = model(x)
    (torch.nn.functional.mse_loss(recon, x) + 0.25 * commitment).backward()
    assert model.stem[0].weight.grad is not None
    assert model.stem[0].weight.grad.abs().sum() > 0
    assert model.encoders[1][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"channels": [8, 8, 8, 8], "codebook_sizes": [4, 4, 4, 4]}, "1 to 3 levels"),
    ({"channels": [], "codebook_sizes": []}, "1 to 3 levels"),
    ({"channels": [8, 8], "codebook_sizes": [4]}, "one codebook size per level"),
    ({"channels": [8], "codebook_sizes": [4], "first_factor": 3}, "first_factor must be 2 or 4"),
    ({"channels": [8], "codebook_sizes": [4], "first_factor": 8}, "first_factor must be 2 or 4"),
    ({"channels": [8], "codebook_sizes": [4], "first_factor": 1}, "first_factor must be 2 or 4"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VQVAEFPNConfig(**kwargs)


def test_config_dict_round_trip():
    config = VQVAEFPNConfig(channels=[8, 16], codebook_sizes=[16, 32], embedding_dim=8,
                            res_blocks=1, first_factor=4)
    d = config.to_dict()
    assert d == {"in_channels": 4, "channels": [8, 16], "codebook_sizes": [16, 32],
                 "embedding_dim": 8, "res_blocks": 1, "first_factor": 4}
    assert VQVAEFPNConfig(**d) == config
    assert config.factor == 8 and config.levels == 2
