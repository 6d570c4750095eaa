"""VectorQuantizer: nearest codes, straight-through gradients, EMA updates, restarts, hashes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from eoz.models.layers import ResidualBlock, VectorQuantizer


def _quantizer(num_codes=8, dim=4, seed=0, **kw) -> VectorQuantizer:
    torch.manual_seed(seed)
    return VectorQuantizer(num_codes, dim, **kw)


def test_nearest_matches_brute_force_and_lookup_returns_those_codes():
    vq = _quantizer(16, 3)
    z = torch.randn(2, 3, 5, 7) * 0.2
    idx = vq.nearest(z)
    assert idx.shape == (2, 5, 7)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    expected = torch.cdist(flat, vq.embedding).argmin(1).view(2, 5, 7)
    assert torch.equal(idx, expected)
    codes = vq.lookup(idx)
    assert codes.shape == z.shape
    assert torch.equal(codes[1, :, 4, 6], vq.embedding[idx[1, 4, 6]])


def test_straight_through_gradient_reaches_the_input():
    vq = _quantizer().eval()
    z = (torch.randn(1, 4, 3, 3) * 0.3).requires_grad_()
    weights = torch.randn(1, 4, 3, 3)
    quantized, idx, commitment = vq(z)
    # forward value is the code, not z ...
    torch.testing.assert_close(quantized.detach(), vq.lookup(idx))
    assert not torch.allclose(quantized.detach(), z.detach())
    # ... but the gradient of anything of it flows to z unchanged (identity Jacobian)
    (quantized * weights).sum().backward()
    torch.testing.assert_close(z.grad, weights)
    # the commitment loss pulls z towards its code
    z.grad = None
    commitment.backward()
    torch.testing.assert_close(z.grad, 2 * (z.detach() - vq.lookup(idx)) / z.numel())


def test_eval_mode_does_not_touch_the_codebook():
    vq = _quantizer().eval()
    before = vq.embedding.clone()
    vq(torch.randn(2, 4, 4, 4))
    assert torch.equal(vq.embedding, before)


def test_ema_update_moves_used_codes_toward_their_data():
    vq = _quantizer(4, 2, decay=0.9)
    vq.embedding.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]]))
    vq.embedding_sum.copy_(vq.embedding)
    target = torch.tensor([1.0, 1.0])  # all data near (1, 1): closest to code 0
    z = target[None, :, None, None] + 0.01 * torch.randn(4, 2, 3, 3)
    distances = []
    for _ in range(20):
        _, idx, _ = vq(z)
        assert (idx == 0).all()
        distances.append(float((vq.embedding[0] - target).norm()))
    assert distances[0] < 2 ** 0.5  # the first update already moved it
    assert all(b < a for a, b in zip(distances, distances[1:]))
    assert distances[-1] < 0.1
    # codes that saw no data stay where they were (no restart yet at this usage level)
    torch.testing.assert_close(vq.embedding[1], torch.tensor([5.0, 5.0]), rtol=0, atol=1e-3)


def test_dead_codes_are_restarted_onto_data_points():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 3, decay=0.5)
    far = torch.full((16, 3), 100.0)
    far[0] = 0.0  # only code 0 is anywhere near the data
    vq.embedding.copy_(far)
    vq.embedding_sum.copy_(far)
    data = torch.randn(64, 3)  # a fixed pool of data vectors
    used, restart_step = set(), None
    for step in range(30):
        z = data[torch.randperm(64)[:32]].t().reshape(1, 3, 4, 8)
        _, idx, _ = vq(z)
        used |= set(idx.unique().tolist())
        if restart_step is None and (vq.embedding[1:].abs().amax(1) < 50).any():
            restart_step = step
            # the restart copies data vectors of that batch exactly onto the dead codes
            batch = z.permute(0, 2, 3, 1).reshape(-1, 3)
            assert (vq.embedding[1:].abs().amax(1) < 50).all()  # all dead codes at once
            for code in vq.embedding[1:]:
                assert (batch == code).all(1).any()
    # usage decays below the 0.05 threshold after 5 updates at decay 0.5
    assert restart_step == 4
    # every code now sits among the data, none is left at 100, and all get used
    assert vq.embedding.abs().max() < 10
    assert used == set(range(16)), sorted(used)


def test_no_restart_while_codes_are_in_use():
    torch.manual_seed(1)
    vq = VectorQuantizer(4, 2, decay=0.5)
    codes = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0]])
    vq.embedding.copy_(codes)
    vq.embedding_sum.copy_(codes)
    z = codes.repeat(8, 1).t().reshape(1, 2, 4, 8)  # every code used, data exactly on codes
    for _ in range(10):
        vq(z)
    torch.testing.assert_close(vq.embedding, codes, rtol=0, atol=1e-4)


def test_codebook_sha256_is_the_hash_of_float32_little_endian_codes():
    vq = _quantizer(8, 4)
    first = vq.codebook_sha256()
    assert first == vq.codebook_sha256()
    expected = hashlib.sha256(vq.embedding.numpy().astype("<f4").tobytes()).hexdigest()
    assert first == expected
    same = _quantizer(8, 4)
    assert same.codebook_sha256() == first  # same values, another module
    vq.eval()(torch.randn(1, 4, 2, 2))
    assert vq.codebook_sha256() == first  # inference does not change it
    vq.embedding[3, 1] += 1e-6
    changed = vq.codebook_sha256()
    assert changed != first
    vq.embedding[3, 1] -= 1e-6
    # training steps change the codebook, and its hash
    vq.embedding.copy_(same.embedding)
    assert vq.codebook_sha256() == first
    vq.train()(torch.randn(1, 4, 2, 2))
    assert vq.codebook_sha256() != first


def test_codebook_survives_a_state_dict_round_trip():
    vq = _quantizer(8, 4)
    vq(torch.randn(2, 4, 3, 3))  # one training update
    other = _quantizer(8, 4, seed=5)
    assert other.codebook_sha256() != vq.codebook_sha256()
    other.load_state_dict(vq.state_dict())
    assert other.codebook_sha256() == vq.codebook_sha256()
    assert np.array_equal(other.cluster_size.numpy(), vq.cluster_size.numpy())


def test_residual_block_keeps_shape_and_adds_its_input():
    block = ResidualBlock(6)
    x = torch.randn(1, 6, 5, 4)
    torch.nn.init.zeros_(block.body[-1].weight)
    torch.nn.init.zeros_(block.body[-1].bias)
    torch.testing.assert_close(block(x), x)  # zero body: identity
    torch.nn.init.normal_(block.body[-1].weight)
    out = block(x)
    assert out.shape == x.shape and not torch.allclose(out, x)


def test_distances_rank_codes_and_a_cost_per_code_steers_the_choice_to_cheaper_codes():
    from eoz.models.layers import VectorQuantizer

    vq = VectorQuantizer(2, 1)
    vq.embedding.copy_(torch.tensor([[0.0], [1.0]]))
    z = torch.tensor([0.6]).view(1, 1, 1, 1)               # nearer code 1 (0.16 vs 0.36)
    assert vq.nearest(z).item() == 1
    distances = vq.distances(z)[0, 0, 0]                   # |z|^2 left out: the same for every code
    assert (distances[0] - distances[1]).item() == pytest.approx(0.36 - 0.16)
    assert (distances + torch.tensor([0.0, 0.3])).argmin().item() == 0   # 0.36 < 0.16 + 0.3
