"""Fixed-quality control: targets, 8-bit lambda codes, the quality model and the closed loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eoz.errors import InputError
from eoz.quality import (CODE_STEP_LOG2, TOP_CODE, QualityModel, QualityTarget, block_grid, block_means,
                         choose_codes, code_of_log2_lambda, lambda_of_code, psnr_to_mse)


def test_targets_take_exactly_one_goal_and_convert_psnr():
    t = QualityTarget(psnr=40, block=32)
    assert t.mse == pytest.approx(psnr_to_mse(40, 10000)) == pytest.approx(10000.0)
    assert t.to_dict() == {"mse": t.mse, "psnr": 40, "block": 32, "peak": 10000.0, "closed_loop": True}
    for bad in ({}, {"psnr": 40, "mse": 3.0}, {"psnr": 40, "block": 48}, {"mse": -1.0},
                {"mse": float("nan")}, {"lmbda": 10.0}, {"lmbda": 1e6}):
        with pytest.raises(InputError):
            QualityTarget(**bad)


def test_lambda_codes_survive_the_8_bit_round_trip():
    codes = np.arange(TOP_CODE + 1)
    back = code_of_log2_lambda(np.log2(lambda_of_code(codes)))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, codes)
    # any lambda lands on a code within half a step (1.4 % in lambda)
    lam = np.exp(np.random.default_rng(0).uniform(np.log(64), np.log(65536), 1000))
    err = np.abs(np.log2(lambda_of_code(code_of_log2_lambda(np.log2(lam)))) - np.log2(lam))
    assert err.max() <= CODE_STEP_LOG2 / 2 + 1e-12
    assert code_of_log2_lambda(3.0) == 0 and code_of_log2_lambda(30.0) == TOP_CODE


def test_block_means_weigh_only_valid_samples():
    values = np.arange(2 * 5 * 6, dtype=np.float64).reshape(2, 5, 6)
    weights = np.ones(values.shape, bool)
    weights[:, 4, :] = False                 # last row is padding
    means = block_means(values, weights, 4)
    assert means.shape == block_grid(5, 6, 4) == (2, 2)
    assert means[0, 0] == pytest.approx(values[:, :4, :4].mean())
    assert means[1, 0] == 0.0                # no valid sample in the block
    assert block_means(values, weights, None)[0, 0] == pytest.approx(values[:, :4].mean())


def test_quality_model_fit_recovers_coefficients_and_inverts():
    rng = np.random.default_rng(1)
    t = rng.uniform(6, 16, 400)
    v = rng.uniform(2, 12, 400)
    truth = QualityModel(a=9.0, b=-0.55, c=0.8, d=-0.02)
    mse = np.exp(truth.a + truth.b * t + truth.c * v + truth.d * t * v)
    fitted = QualityModel.fit(t, v, mse)
    for name in "abcd":
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), abs=1e-6)
    t_for = fitted.log2_lambda_for(50.0, v[:10])
    predicted = fitted.a + fitted.b * t_for + fitted.c * v[:10] + fitted.d * t_for * v[:10]
    np.testing.assert_allclose(predicted, math.log(50.0))


def _blocks_world(seed: int, shape=(6, 7)):
    """A stand-in for a tile: block MSE falls with its own lambda and a little with its neighbours'.

    Each block's true offset differs from the quality model's by up to +-3 dB, as real blocks do.
    """
    rng = np.random.default_rng(seed)
    offset = rng.uniform(-0.7, 0.7, shape)
    model = QualityModel(a=8.0, b=-0.6, c=0.0, d=0.0)

    def measure(codes):
        t = 6 + CODE_STEP_LOG2 * codes.astype(np.float64)
        padded = np.pad(t, 1, mode="edge")
        neighbours = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) / 4
        return np.exp(model.a + offset - 0.5 * t - 0.1 * neighbours)

    return measure, model


@pytest.mark.parametrize("seed", range(5))
def test_closed_loop_meets_every_block_with_little_overshoot(seed):
    measure, model = _blocks_world(seed)
    target = 20.0
    report = choose_codes(measure, target, np.zeros((6, 7)), model)
    assert (report["mse"] <= target).all()
    overshoot_db = 10 * np.log10(target / report["mse"])
    assert overshoot_db.mean() < 0.3
    assert (report["open_loop_mse"] > target).any()          # the open loop alone misses some
    assert report["rounds"] <= 13
    np.testing.assert_array_equal(report["mse"], measure(report["codes"]))


def test_open_loop_only_when_asked():
    measure, model = _blocks_world(0)
    report = choose_codes(measure, 20.0, np.zeros((6, 7)), model, closed_loop=False)
    assert report["rounds"] == 1
    np.testing.assert_array_equal(report["codes"], report["open_loop_codes"])


def test_unreachable_target_stops_at_the_top_code():
    measure, model = _blocks_world(0)
    report = choose_codes(measure, 1e-9, np.zeros((6, 7)), model)
    assert (report["codes"] == TOP_CODE).all() and (report["mse"] > 1e-9).all()


def test_unreachable_blocks_wait_at_the_top_code_without_rounds():
    measure, model = _blocks_world(1)
    unreachable = np.zeros((6, 7), bool)
    unreachable[2:4, 3:5] = True
    report = choose_codes(measure, 20.0, np.zeros((6, 7)), model, unreachable=unreachable)
    assert (report["codes"][unreachable] == TOP_CODE).all()
    assert (report["mse"][~unreachable] <= 20.0).all()
