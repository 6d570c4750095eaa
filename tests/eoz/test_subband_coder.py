"""SubbandModel: exact round trips of quantized wavelet planes, tensors, tallies, damaged
streams, and the same planes decoded in another process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from eoz import wavelet
from eoz.subband_coder import GROUPS, LL_CLASSES, N_WEIGHTS, ROWS, TOKENS, SubbandModel, group_of

REPO = Path(__file__).resolve().parents[2]


def _shapes(height: int, width: int, levels: int) -> list:
    return wavelet.flatten(wavelet.subband_shapes(height, width, levels))


def _planes(shapes, components: int, seed: int, scale: float = 4.0, huge: int = 0,
            zero_fraction: float = 0.5) -> list[list[np.ndarray]]:
    """Laplacian-like subbands, coarser ones larger, with a few values of up to ``huge``
    magnitude (either sign) sprinkled in, quantized at unit steps by the model's own
    quantizer (detail levels must follow its dependent quantizer's states); LL offsets as
    real LL bands have."""
    rng = np.random.default_rng(seed)
    subbands = []
    for _ in range(components):
        bands = []
        for k, shape in enumerate(shapes):
            mag = rng.exponential(scale * (2 if k == 0 else 1) * (1 + (len(shapes) - k) // 3), shape)
            mag[rng.random(shape) < zero_fraction] = 0
            if huge:
                spots = rng.random(shape) < 0.02
                mag[spots] = rng.integers(huge // 2, huge + 1, int(spots.sum()))
            bands.append(np.where(rng.random(shape) < 0.5, -1, 1) * mag)
        subbands.append(bands)
    planes = SubbandModel.untrained().quantize(subbands, [np.ones(s) for s in shapes], 0.3, 0.35)
    for plane in planes:
        plane[0] += int(rng.integers(-5000, 5000))
    return planes


def _assert_planes_equal(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert len(g) == len(e)
        for a, b in zip(g, e):
            assert a.shape == b.shape and a.dtype == np.int64
            np.testing.assert_array_equal(a, b)


def _trained_like_model(seed: int = 0) -> SubbandModel:
    """Non-uniform starting counts and weights, as a trained model has."""
    rng = np.random.default_rng(seed)
    weights = rng.integers(0, 400, (GROUPS, N_WEIGHTS))
    counts = 1 + (rng.integers(0, 60, (GROUPS, ROWS, TOKENS)) * np.exp(-np.arange(TOKENS) / 6)).astype(np.int64)
    lowpass = 1 + rng.integers(0, 40, (LL_CLASSES, TOKENS))
    return SubbandModel(weights, counts, lowpass)


GEOMETRIES = [(64, 64, 5), (37, 53, 3), (100, 77, 5), (2, 3, 5), (1, 9, 5), (1, 1, 0), (16, 16, 0), (9, 128, 2)]


@pytest.mark.parametrize("components", [1, 2, 4])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_round_trip(geometry, components):
    shapes = _shapes(*geometry)
    planes = _planes(shapes, components, seed=sum(geometry) + components)
    model = SubbandModel.untrained()
    data = model.encode(planes)
    _assert_planes_equal(model.decode(data, shapes, components), planes)


@pytest.mark.parametrize("huge", [2 ** 20, 2 ** 29, 2 ** 30 - 1])
def test_round_trip_of_large_and_negative_magnitudes(huge):
    shapes = _shapes(48, 40, 4)
    planes = _planes(shapes, 3, seed=huge % 1000, huge=huge)
    planes[0][0][0, 0] = -huge                        # extremes right where prediction starts
    # detail levels must follow the quantizer's states: their extremes come from the sprinkle
    assert max(np.abs(b).max() for p in planes for b in p[1:]) >= huge // 2
    assert max(np.abs(b).max() for p in planes for b in p) >= huge
    model = SubbandModel.untrained()
    _assert_planes_equal(model.decode(model.encode(planes), shapes, 3), planes)


def test_round_trip_of_all_zero_and_constant_planes_is_tiny():
    shapes = _shapes(128, 128, 5)
    zeros = [[np.zeros(s, np.int64) for s in shapes] for _ in range(3)]
    model = SubbandModel.untrained()
    data = model.encode(zeros)
    assert len(data) < 200                            # 3 x 16384 coefficients
    _assert_planes_equal(model.decode(data, shapes, 3), zeros)
    constant = [[np.full(s, 700 if k == 0 else 0, np.int64) for k, s in enumerate(shapes)]]
    _assert_planes_equal(model.decode(model.encode(constant), shapes, 1), constant)


def test_sparser_planes_code_smaller():
    shapes = _shapes(128, 128, 5)
    model = SubbandModel.untrained()
    sizes = [len(model.encode(_planes(shapes, 2, seed=1, zero_fraction=z))) for z in (0.2, 0.6, 0.95)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_trained_like_model_round_trips_and_codes_differently():
    shapes = _shapes(64, 72, 5)
    planes = _planes(shapes, 3, seed=9)
    model = _trained_like_model()
    data = model.encode(planes)
    _assert_planes_equal(model.decode(data, shapes, 3), planes)
    assert data != SubbandModel.untrained().encode(planes)


@given(h=st.integers(1, 40), w=st.integers(1, 40), levels=st.integers(0, 6), components=st.integers(1, 4),
       seed=st.integers(0, 2 ** 32 - 1), scale=st.floats(0.1, 300.0))
@settings(max_examples=30, deadline=None)
def test_round_trip_property(h, w, levels, components, seed, scale):
    shapes = _shapes(h, w, levels)
    planes = _planes(shapes, components, seed, scale=scale, huge=2 ** 29 if seed % 5 == 0 else 0)
    model = SubbandModel.untrained()
    _assert_planes_equal(model.decode(model.encode(planes), shapes, components), planes)


def test_encoding_is_deterministic_and_leaves_planes_alone():
    shapes = _shapes(50, 60, 4)
    planes = _planes(shapes, 2, seed=3)
    copies = [[b.copy() for b in p] for p in planes]
    model = SubbandModel.untrained()
    assert model.encode(planes) == model.encode(planes)
    _assert_planes_equal(planes, copies)


# --- tensors and tallies --------------------------------------------------------------------

def test_tensors_round_trip():
    model = _trained_like_model(seed=4)
    tensors = load_safetensors(save_safetensors(model.to_tensors()))
    assert set(tensors) == {"subband.weights", "subband.counts", "subband.lowpass_counts"}
    back = SubbandModel.from_tensors(tensors)
    np.testing.assert_array_equal(back.weights, model.weights)
    np.testing.assert_array_equal(back.counts, model.counts)
    np.testing.assert_array_equal(back.lowpass_counts, model.lowpass_counts)
    planes = _planes(_shapes(40, 40, 3), 2, seed=5)
    assert back.encode(planes) == model.encode(planes)


def test_wrong_tensor_shapes_are_refused():
    good = SubbandModel.untrained().to_tensors()
    for name, bad in [("subband.weights", np.zeros((GROUPS, N_WEIGHTS + 1), np.int64)),
                      ("subband.counts", np.ones((GROUPS, ROWS - 1, TOKENS), np.int32)),
                      ("subband.lowpass_counts", np.ones((LL_CLASSES, TOKENS + 1), np.int32))]:
        with pytest.raises(ValueError):
            SubbandModel.from_tensors({**good, name: bad})


@pytest.mark.parametrize("geometry,components", [((64, 64, 5), 1), ((37, 53, 3), 3), ((100, 77, 5), 4),
                                                 ((16, 16, 0), 2)])
def test_tally_counts_every_coefficient_once_in_its_group(geometry, components):
    shapes = _shapes(*geometry)
    planes = _planes(shapes, components, seed=11)
    counts, lowpass = SubbandModel.untrained().tally(planes)
    assert counts.shape == (GROUPS, ROWS, TOKENS) and lowpass.shape == (LL_CLASSES, TOKENS)
    assert lowpass.sum() == components * shapes[0][0] * shapes[0][1]
    levels = (len(shapes) - 1) // 3
    expected = np.zeros(GROUPS, np.int64)
    for c in range(components):
        for k in range(1, len(shapes)):
            level = levels - (k - 1) // 3                     # 1 = finest
            orientation = (k - 1) % 3                         # HL, LH, HH
            group = 4 * (min(level, 3) - 1) + 2 * (orientation == 2) + (c > 0)
            expected[group] += shapes[k][0] * shapes[k][1]
    np.testing.assert_array_equal(counts.sum(axis=(1, 2)), expected)
    # tokens: all-zero planes tally only token 0
    zeros = [[np.zeros(s, np.int64) for s in shapes] for _ in range(components)]
    counts, lowpass = SubbandModel.untrained().tally(zeros)
    assert counts[:, :, 1:].sum() == 0 and lowpass[:, 1:].sum() == 0
    assert counts.sum() + lowpass.sum() == components * sum(h * w for h, w in shapes)


def test_groups_split_levels_orientations_and_components():
    """Level 1, 2, 3+ x (HL and LH together, HH) x (first component, later ones): 12 groups."""
    assert GROUPS == 12
    assert [group_of(1, o, 0) for o in range(3)] == [0, 0, 2]
    assert [group_of(1, o, 1) for o in range(3)] == [1, 1, 3]
    assert [group_of(2, o, 5) for o in range(3)] == [5, 5, 7]
    assert {group_of(level, o, c) for level in (3, 4, 9) for o in range(3) for c in (0, 1, 2)} == {8, 9, 10, 11}
    # every group is used by a 5-level, 2-component tile
    counts, _ = SubbandModel.untrained().tally(_planes(_shapes(64, 64, 5), 2, seed=1))
    assert (counts.sum(axis=(1, 2)) > 0).all()


def test_tally_tokens_follow_magnitudes():
    shapes = [(1, 4)]
    planes = [[np.array([[0, 3, 8, -12]], np.int64)]]          # LL residuals 0, 3, 5, -20
    _, lowpass = SubbandModel.untrained().tally(planes)
    tokens = np.nonzero(lowpass.sum(0))[0].tolist()
    # 0 and 3 and 5 are direct tokens; 20 = 0b10100: octave 4, next bit 0 -> 8 + 2 * (4 - 3) + 0
    assert tokens == [0, 3, 5, 10] and lowpass.sum() == 4
    assert SubbandModel.untrained().decode(SubbandModel.untrained().encode(planes), shapes, 1)[0][0].tolist() \
        == [[0, 3, 8, -12]]


# --- damaged streams ------------------------------------------------------------------------

def test_truncated_streams_raise_or_decode_wrong_planes():
    shapes = _shapes(64, 48, 4)
    planes = _planes(shapes, 3, seed=12)
    model = SubbandModel.untrained()
    data = model.encode(planes)
    for keep in [0, 1, 5, 10, len(data) // 4, len(data) // 2, len(data) - 10, len(data) - 1]:
        try:
            got = model.decode(data[:keep], shapes, 3)
        except ValueError:
            continue
        assert any(not np.array_equal(a, b) for g, e in zip(got, planes) for a, b in zip(g, e)), keep


def test_every_truncation_is_refused():
    """The stream ends exactly where its symbols do: any cut is a ValueError."""
    shapes = _shapes(24, 20, 3)
    planes = _planes(shapes, 2, seed=13)
    model = SubbandModel.untrained()
    data = model.encode(planes)
    for keep in range(len(data)):
        with pytest.raises(ValueError):
            model.decode(data[:keep], shapes, 2)


def test_corrupted_streams_never_crash():
    shapes = _shapes(40, 40, 3)
    planes = _planes(shapes, 2, seed=14)
    model = SubbandModel.untrained()
    data = bytearray(model.encode(planes))
    rng = np.random.default_rng(15)
    for trial in range(15):
        bad = bytearray(data)
        for pos in rng.integers(0, len(bad), 1 + trial % 3):
            bad[pos] ^= int(rng.integers(1, 256))
        try:
            got = model.decode(bytes(bad), shapes, 2)
        except ValueError:
            continue
        assert all(np.abs(b).max() < 2 ** 33 for g in got for b in g)
    for junk in (b"\xff" * 300, bytes(rng.integers(0, 256, 2000, dtype=np.uint8))):
        try:
            model.decode(junk, shapes, 2)
        except ValueError:
            pass


# --- exactness across processes -------------------------------------------------------------

_DECODE_ELSEWHERE = textwrap.dedent("""
    import sys
    import numpy as np
    from eoz.subband_coder import SubbandModel
    src = np.load(sys.argv[1], allow_pickle=False)
    shapes = [tuple(s) for s in src["shapes"]]
    components = int(src["components"])
    model = SubbandModel.from_tensors({k: src[k] for k in ("subband.weights", "subband.counts",
                                                            "subband.lowpass_counts")})
    planes = model.decode(src["data"].tobytes(), shapes, components)
    flat = {f"p{c}_{k}": b for c, p in enumerate(planes) for k, b in enumerate(p)}
    np.savez(sys.argv[2], reencoded=np.frombuffer(model.encode(planes), np.uint8), **flat)
""")


@pytest.mark.parametrize("threads", [None, "1"])
def test_planes_decode_identically_in_a_fresh_process(tmp_path, threads):
    shapes = _shapes(96, 80, 5)
    planes = _planes(shapes, 3, seed=16, huge=2 ** 29)
    model = _trained_like_model(seed=17)
    data = model.encode(planes)
    src, dst = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(src, data=np.frombuffer(data, np.uint8), shapes=np.array(shapes), components=3,
             **model.to_tensors())
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    if threads:
        env["NUMBA_NUM_THREADS"] = threads
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", _DECODE_ELSEWHERE, str(src), str(dst)], check=True, env=env,
                   timeout=300, cwd=tmp_path)
    out = np.load(dst)
    got = [[out[f"p{c}_{k}"] for k in range(len(shapes))] for c in range(3)]
    _assert_planes_equal(got, planes)
    assert out["reencoded"].tobytes() == data


# --- the fast paths against the reference loops ---------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_fast_paths_code_as_the_reference_loops(seed):
    """encode()/decode() run encode_detail/decode_detail and inter_class_plane; _run (code_detail,
    inter_features + inter_classes) is the reference: the same bytes, the same classes."""
    from eoz import subband_coder as sc

    shapes = _shapes(97 + seed, 80 - seed, 5)
    planes = _planes(shapes, 3, seed=seed, huge=2 ** 29 if seed % 2 else 0)
    model = _trained_like_model(seed=seed) if seed % 2 else SubbandModel.untrained()
    buf, state = sc._stream_buffer(planes), sc.encoder_state()
    model._run(planes, state, buf, False, None)
    data = model.encode(planes)
    assert buf[:sc.finish(state, buf)].tobytes() == data
    _assert_planes_equal(model.decode(data, shapes, 3), planes)
    for c in range(3):
        for k in range(1, len(shapes)):
            previous = planes[c - 1] if c else None
            np.testing.assert_array_equal(
                sc.inter_of(planes[c], k, previous, model.weights[seed]),
                sc.inter_classes(sc.inter_features(planes[c], k, previous), model.weights[seed]))


def test_class_table_is_the_log_class():
    from eoz import subband_coder as sc

    for a in list(range(-3, 5000)) + [2 ** 14 - 1, 2 ** 14, 2 ** 15 - 1, 2 ** 15, 2 ** 15 + 1, 2 ** 40]:
        for classes in (sc.SPATIAL_CLASSES, sc.INTER_CLASSES, sc.LL_CLASSES):
            assert sc._class_of(a, classes) == sc._log_class(a, classes)
