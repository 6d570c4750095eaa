"""IndexPrior: range-coded index maps round trip, cost what their statistics say, and stay stable."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from eoz.entropy import FIXED_MARKER, PRIOR_KIND, IndexPrior, LevelModel, _low_rank
from eoz.errors import ContainerError


def _random_maps(rng, top_shape, sizes):
    """Uniform index maps, bottom level first; level l is 2**(levels-1-l) times the top."""
    levels = len(sizes)
    h, w = top_shape
    return [rng.integers(0, sizes[l], (h * 2 ** (levels - 1 - l), w * 2 ** (levels - 1 - l)))
            for l in range(levels)]


def _prior(sizes, seed=0, images=6, top_shape=(4, 4), kind="checkerboard"):
    return _fitted(tuple(sizes), seed, images, top_shape, kind)


@functools.lru_cache(maxsize=None)
def _fitted(sizes, seed, images, top_shape, kind):
    """Priors are only read by encode/decode, so tests share them."""
    rng = np.random.default_rng(seed)
    return IndexPrior.fit([_random_maps(rng, top_shape, sizes) for _ in range(images)], list(sizes),
                          kind=kind, steps=40 if kind != "checkerboard" else None)


KINDS = pytest.mark.parametrize("kind", ["checkerboard", "grid", "grid-lowrank"])


def _shapes(maps):
    return [m.shape for m in maps]


def _assert_maps_equal(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("sizes", [[8], [8, 16], [4, 8, 16]], ids=["1-level", "2-levels", "3-levels"])
@pytest.mark.parametrize("top_shape", [(1, 1), (7, 5), (3, 8)])
@KINDS
def test_round_trip_for_each_number_of_levels(sizes, top_shape, kind):
    prior = _prior(sizes, kind=kind)
    maps = _random_maps(np.random.default_rng(42), top_shape, sizes)
    data = prior.encode(maps)
    assert len(data) <= len(prior._fixed_length(maps))   # never more than the fixed-length indices
    _assert_maps_equal(prior.decode(data, _shapes(maps)), maps)


@KINDS
def test_round_trip_with_bottom_2x2_under_top_1x1_and_odd_bottom_sizes(kind):
    prior = _prior([8, 16], kind=kind)
    rng = np.random.default_rng(3)
    for bottom, top in [((2, 2), (1, 1)), ((13, 9), (7, 5)), ((1, 1), (1, 1)), ((1, 6), (1, 3))]:
        maps = [rng.integers(0, 8, bottom), rng.integers(0, 16, top)]
        _assert_maps_equal(prior.decode(prior.encode(maps), [bottom, top]), maps)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), th=st.integers(1, 6), tw=st.integers(1, 6),
       levels=st.integers(1, 3), kind=st.sampled_from(["checkerboard", "grid"]))
def test_round_trip_property(seed, th, tw, levels, kind):
    sizes = [5, 7, 3][:levels]
    prior = _prior(sizes, seed=1, images=2, kind=kind)
    maps = _random_maps(np.random.default_rng(seed), (th, tw), sizes)
    _assert_maps_equal(prior.decode(prior.encode(maps), _shapes(maps)), maps)


@KINDS
def test_round_trip_beyond_one_batch_chunk(kind):
    """A bottom level of 18200 symbols is longer than one batched coder call (8-16 k symbols)."""
    prior = _prior([16, 16], kind=kind)
    maps = _random_maps(np.random.default_rng(5), (70, 65), [16, 16])
    assert maps[0].size > 16384
    _assert_maps_equal(prior.decode(prior.encode(maps), _shapes(maps)), maps)


@KINDS
def test_codes_never_seen_in_training_still_encode(kind):
    sizes = [16, 32]
    rng = np.random.default_rng(0)
    # training only ever uses codes 0..3 at the bottom and 0..1 at the top, and is large
    # enough that the smoothed probability of an unseen code rounds to 0 in 2**20: only the
    # floor of 1 keeps it codable
    train = [[rng.integers(0, 4, (64, 64)), rng.integers(0, 2, (32, 32))] for _ in range(10)]
    prior = IndexPrior.fit(train, sizes, kind=kind, steps=60)
    # an unseen top code (31) above unseen bottom codes (15): a context never counted
    maps = [np.full((8, 8), 15), np.full((4, 4), 31)]
    maps[0][0, 0] = 0
    maps[0][5, 2] = 9
    data = prior.encode(maps)
    _assert_maps_equal(prior.decode(data, [(8, 8), (4, 4)]), maps)
    # unlikely codes cost more than likely ones, but stay finite
    seen = [np.zeros((8, 8), np.int64), np.zeros((4, 4), np.int64)]
    assert len(prior.encode(seen)) < len(data)


def test_skewed_source_codes_below_fixed_length_and_near_conditional_entropy():
    """A child that mostly repeats a function of its parent costs about H(child | parent, pos)."""
    k_top, k_bottom = 4, 16
    rng = np.random.default_rng(11)
    top_p = np.array([0.55, 0.25, 0.15, 0.05])

    def sample(shape):
        top = rng.choice(k_top, size=shape, p=top_p)
        h, w = shape
        parent = np.repeat(np.repeat(top, 2, 0), 2, 1)
        pos = (np.arange(2 * h)[:, None] % 2) * 2 + np.arange(2 * w)[None, :] % 2
        favourite = (parent * 4 + pos) % k_bottom
        noise = rng.integers(0, k_bottom, (2 * h, 2 * w))
        bottom = np.where(rng.random((2 * h, 2 * w)) < 0.8, favourite, noise)
        return [bottom, top]

    prior = IndexPrior.fit([sample((32, 32)) for _ in range(60)], [k_bottom, k_top])
    maps = sample((48, 48))
    data = prior.encode(maps)
    _assert_maps_equal(prior.decode(data, _shapes(maps)), maps)

    # empirical entropy of the test maps under their own statistics
    def entropy(symbols):
        _, counts = np.unique(symbols, return_counts=True)
        p = counts / counts.sum()
        return -float((counts * np.log2(p)).sum())

    bottom, top = maps
    h, w = bottom.shape
    parent = np.repeat(np.repeat(top, 2, 0), 2, 1)
    pos = (np.arange(h)[:, None] % 2) * 2 + np.arange(w)[None, :] % 2
    ctx = (parent * 4 + pos).ravel()
    conditional_bits = sum(entropy(bottom.ravel()[ctx == c]) for c in np.unique(ctx))
    bound_bytes = (entropy(top.ravel()) + conditional_bits) / 8

    fixed = prior.fixed_length_bytes(_shapes(maps))
    assert fixed == pytest.approx((96 * 96 * 4 + 48 * 48 * 2) / 8)
    assert len(data) < 0.5 * fixed
    # the model is fitted on other samples of the same source: within 10% of the empirical
    # entropy (which is itself an optimistic bound), never far below it. Coding each level
    # with its marginal alone would cost about 2.3 times the bound here.
    assert 0.97 * bound_bytes < len(data) < 1.10 * bound_bytes + 16


@KINDS
def test_tensors_round_trip_gives_identical_bytes(tmp_path, kind):
    prior = _prior([8, 16, 32], seed=2, kind=kind)
    tensors = prior.to_tensors()
    assert tensors and all(k.startswith("prior.") for k in tensors)
    # tables are integers, so every machine computes the same probabilities
    assert all(np.issubdtype(v.dtype, np.integer) for v in tensors.values())
    # through a real safetensors file, as a model_store entry holds it
    path = tmp_path / "prior.safetensors"
    path.write_bytes(save_safetensors({**tensors, "model.other": np.zeros(3, np.float32)}))
    loaded = IndexPrior.from_tensors(load_safetensors(path.read_bytes()))
    again = loaded.to_tensors()
    assert loaded.kind == kind and (PRIOR_KIND in tensors) == (kind != "checkerboard")
    assert set(again) == set(tensors)
    for key, value in tensors.items():
        assert again[key].dtype == value.dtype
        np.testing.assert_array_equal(again[key], value)
    maps = _random_maps(np.random.default_rng(9), (5, 3), [8, 16, 32])
    data = prior.encode(maps)
    assert loaded.encode(maps) == data
    _assert_maps_equal(loaded.decode(data, _shapes(maps)), maps)


@KINDS
def test_same_maps_same_bytes_and_fit_is_deterministic(kind):
    sizes = [8, 16]
    train = [_random_maps(np.random.default_rng(s), (4, 4), sizes) for s in range(4)]
    a, b = (IndexPrior.fit(train, sizes, kind=kind, steps=40) for _ in range(2))  # two separate fits
    maps = _random_maps(np.random.default_rng(1), (6, 6), sizes)
    assert a.encode(maps) == a.encode(maps) == b.encode(maps)
    other = [m.copy() for m in maps]
    other[0][3, 3] = (other[0][3, 3] + 1) % 8
    assert a.encode(other) != a.encode(maps)


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_stream_length_not_a_multiple_of_4_is_a_container_error(cut):
    """Cut or lengthened: no coded stream (4 bytes a word), nor a fixed-length payload's size."""
    prior = _prior([8, 16])
    maps = _random_maps(np.random.default_rng(0), (4, 4), [8, 16])
    data = prior.encode(maps)
    with pytest.raises(ContainerError, match="multiple of 4|does not fit"):
        prior.decode(data[:-cut], _shapes(maps))
    with pytest.raises(ValueError):  # ContainerError is also a ValueError
        prior.decode(data + b"\x00" * cut, _shapes(maps))


@pytest.mark.parametrize("words", [1, "all"])
def test_stream_truncated_by_whole_words_is_a_container_error(words):
    prior = _prior([8, 16])
    maps = _random_maps(np.random.default_rng(0), (8, 8), [8, 16])
    data = prior.encode(maps)
    assert len(data) >= 8
    cut = b"" if words == "all" else data[:-4 * words]
    with pytest.raises(ContainerError):
        prior.decode(cut, _shapes(maps))


def test_fixed_length_bytes_uses_each_levels_codebook():
    prior = _prior([8, 32])
    assert prior.fixed_length_bytes([(4, 6), (2, 3)]) == pytest.approx(
        (24 * math.log2(8) + 6 * math.log2(32)) / 8)


def test_the_probability_table_is_the_same_integers_on_every_machine():
    """Every coded VQ index depends on these integers: decimal arithmetic, pinned here."""
    import hashlib

    from eoz.entropy import _EXP

    assert _EXP[0] == 2 ** 24 and _EXP.min() == 1 and (np.diff(_EXP) <= 0).all()
    assert hashlib.sha256(_EXP.astype("<i8").tobytes()).hexdigest() == \
        "784a201ddcca65d2b24a06b2b6c007ff5bdf62904611083fa1511604effd3018"


@KINDS
def test_a_tile_the_context_model_predicts_badly_falls_back_to_fixed_length_indices(kind):
    """Trained on maps that repeat their parent, the model pays more than log2 K for noise."""
    rng = np.random.default_rng(5)
    skewed = [[np.repeat(np.repeat(top, 2, 0), 2, 1) % 16, top]
              for top in (rng.integers(0, 4, (16, 16)) for _ in range(20))]
    prior = IndexPrior.fit(skewed, [16, 8], kind=kind, steps=60)
    noise = [rng.integers(0, 16, (24, 20)), rng.integers(0, 8, (12, 10))]
    data = prior.encode(noise)
    assert len(data) % 4 == 1 and data[:1] == FIXED_MARKER
    assert len(data) == 1 + (24 * 20 * 4 + 12 * 10 * 3) // 8 + 3       # 4 and 3 bits an index, padded
    _assert_maps_equal(prior.decode(data, _shapes(noise)), noise)
    assert len(prior.encode(skewed[0])) % 4 == 0                        # what it learned stays coded
    with pytest.raises(ContainerError, match="does not fit"):
        prior.decode(data[:-4], _shapes(noise))
    with pytest.raises(ContainerError, match="does not fit"):
        prior.decode(b"\x00" + data[1:], _shapes(noise))


def test_a_fixed_length_index_past_the_codebook_is_refused():
    prior = _prior([20])
    maps = [np.full((4, 4), 19)]
    data = bytearray(prior._fixed_length(maps))
    data[1] = 0xFF                                                        # the first index reads 31
    with pytest.raises(ContainerError, match="past the codebook"):
        prior.decode(bytes(data), _shapes(maps))


def _checkerboard_from_integers():
    """A checkerboard prior from fixed integer tables (no fit: the same on every machine)."""
    rng = np.random.default_rng(2026)

    def level(k, p):
        bias = rng.integers(-40, 40, (2, k))
        bias[:, 0] = 90
        return LevelModel(bias, rng.integers(-12, 12, (p, k)), rng.integers(-8, 8, (4, k + 1, k)))

    prior = IndexPrior([level(8, 64), level(16, 1)])
    maps = [rng.integers(0, 8, (10, 14)) * (rng.random((10, 14)) < 0.15),
            rng.integers(0, 16, (5, 7)) * (rng.random((5, 7)) < 0.15)]
    return prior, maps


def test_files_of_models_without_the_marker_decode_as_before(tmp_path):
    """A model published before the grid prior has no PRIOR_KIND: its tensors load the
    checkerboard prior, which writes the very bytes the code before it wrote (pinned: sha256
    computed with that code) and decodes them."""
    import hashlib

    prior, maps = _checkerboard_from_integers()
    tensors = prior.to_tensors()
    assert PRIOR_KIND not in tensors and all(v.dtype == np.int16 for v in tensors.values())
    loaded = IndexPrior.from_tensors(load_safetensors(save_safetensors(tensors)))
    assert loaded.kind == "checkerboard"
    data = loaded.encode(maps)
    assert len(data) == 68 and hashlib.sha256(data).hexdigest() == \
        "63e26a7ee3ca6bdf6017721e5adfbbf7e1904d58ae64ddb374a4500890a3be9a"
    _assert_maps_equal(loaded.decode(data, _shapes(maps)), maps)


def test_an_unknown_prior_kind_is_refused():
    tensors = _prior([8, 16], kind="grid").to_tensors()
    tensors[PRIOR_KIND] = np.array([7], np.int16)
    with pytest.raises(ContainerError, match="prior kind"):
        IndexPrior.from_tensors(tensors)
    with pytest.raises(ValueError, match="kind"):
        IndexPrior.fit([_random_maps(np.random.default_rng(0), (2, 2), [8])], [8], kind="quincunx")


def _smooth_maps(rng, top_shape, sizes):
    """Index maps with spatial structure but little across levels: each level piecewise
    constant (3x3 blocks, 10 % noise) with codes of its own, as VQ maps of land cover look
    within a level, so the parent tells little and the neighbours much."""
    def level(h, w, k):
        blocks = rng.integers(0, k, (-(-h // 3) + 1, -(-w // 3) + 1))
        dr, dc = rng.integers(0, 3, 2)
        m = np.repeat(np.repeat(blocks, 3, 0), 3, 1)[dr:dr + h, dc:dc + w]
        return np.where(rng.random(m.shape) < 0.1, rng.integers(0, k, m.shape), m)

    h, w = top_shape
    return [level(2 * h, 2 * w, sizes[0]), level(h, w, sizes[1])]


@functools.lru_cache(maxsize=None)
def _smooth_priors():
    rng = np.random.default_rng(8)
    # enough symbols per table entry: with few images both priors learn the training maps'
    # particular pairs of block codes, which no other map repeats
    train = [_smooth_maps(rng, (16, 16), [16, 8]) for _ in range(60)]
    # the grid prior at 120 steps (of its 300), enough on these maps; the checkerboard at its default
    return {kind: IndexPrior.fit(train, [16, 8], kind=kind, steps=120 if kind == "grid" else None)
            for kind in ("checkerboard", "grid")}


def test_grid_prior_uses_neighbours_of_anchors_and_round_trips_structured_maps():
    """On spatially smooth maps the grid prior (neighbours for three quarters of the anchors'
    old share, uncles for all) codes well below the checkerboard prior."""
    priors = _smooth_priors()
    rng = np.random.default_rng(99)
    maps = _smooth_maps(rng, (21, 18), [16, 8])
    sizes = {kind: len(prior.encode(maps)) for kind, prior in priors.items()}
    for prior in priors.values():
        _assert_maps_equal(prior.decode(prior.encode(maps), _shapes(maps)), maps)
    assert sizes["grid"] < 0.92 * sizes["checkerboard"], sizes   # about 0.87 measured


def test_grid_prior_tables_are_integers_and_its_bytes_are_pinned():
    """The grid prior's probabilities come from integer tables only: fixed integer tables and
    maps give the same bytes on every machine (pinned), and an int8 table set round trips."""
    import hashlib

    from eoz.entropy import GridLevelModel

    rng = np.random.default_rng(2027)

    def level(k, kp):
        bias = rng.integers(-40, 40, (4, k))
        bias[:, 0] = 90
        uncle = rng.integers(-8, 8, (4, kp + 1, k)) if kp else np.zeros((0, 1, k), np.int64)
        return GridLevelModel(bias, rng.integers(-12, 12, (kp * 4 or 1, k)), uncle,
                              rng.integers(-8, 8, (16, k + 1, k)), rng.integers(-30, 0, k))

    prior = IndexPrior([level(8, 16), level(16, 0)])
    maps = [rng.integers(0, 8, (10, 14)) * (rng.random((10, 14)) < 0.15),
            rng.integers(0, 16, (5, 7)) * (rng.random((5, 7)) < 0.15)]
    data = prior.encode(maps)
    assert len(data) % 4 == 0
    tensors = prior.to_tensors()
    assert all(np.issubdtype(v.dtype, np.integer) for v in tensors.values())
    assert tensors["prior.0.neighbour"].dtype == np.int8 and tensors["prior.1.uncle"].shape == (0, 1, 16)
    loaded = IndexPrior.from_tensors(load_safetensors(save_safetensors(tensors)))
    assert loaded.encode(maps) == data
    _assert_maps_equal(loaded.decode(data, _shapes(maps)), maps)
    assert hashlib.sha256(data).hexdigest() == GRID_GOLDEN_SHA256


GRID_GOLDEN_SHA256 = "cba3890098ba75d8bf7517c0ca131a60da05dd23e5f68a6135490c87e4e5ce7e"


def test_grid_prior_code_bits_follow_the_training_frequencies():
    prior = _smooth_priors()["grid"]
    bits = [level.code_bits() for level in prior.levels]
    assert [len(b) for b in bits] == [16, 8]
    for b in bits:
        assert np.isfinite(b).all() and (b > 0).all()
        assert np.exp2(-b).sum() == pytest.approx(1.0, abs=0.01)


def test_grid_prior_choice_prices_codes_in_context():
    """Codes chosen by distance + weight x bits in context: weight 0 is the nearest code;
    a weight changes some codes and makes the maps cheaper to code, still decodable."""
    prior = _smooth_priors()["grid"]
    rng = np.random.default_rng(5)
    truth = _smooth_maps(rng, (12, 10), [16, 8])
    # distances: the true code is near, every other code a little farther, with noise
    distances = [rng.uniform(0.5, 1.5, m.shape + (k,)).astype(np.float32) for m, k in zip(truth, (16, 8))]
    for d, m in zip(distances, truth):
        np.put_along_axis(d, m[..., None], rng.uniform(0.0, 0.6, m.shape + (1,)), axis=-1)
    nearest = [d.argmin(-1) for d in distances]
    _assert_maps_equal(prior.choose(distances, 0.0), nearest)
    chosen = prior.choose(distances, 0.5)
    assert len(prior.encode(chosen)) < len(prior.encode(nearest))
    _assert_maps_equal(prior.decode(prior.encode(chosen), _shapes(chosen)), chosen)
    assert sum(int((c != n).sum()) for c, n in zip(chosen, nearest)) > 0


def test_checkerboard_prior_choice_prices_each_code_context_free():
    """The checkerboard prior keeps the context-free price its models were published with:
    distance + weight x the anchors' bits of each code, in float32 as the network's distances."""
    prior = _smooth_priors()["checkerboard"]
    rng = np.random.default_rng(6)
    distances = [rng.uniform(0.0, 1.0, (6, 5, 16)).astype(np.float32),
                 rng.uniform(0.0, 1.0, (3, 3, 8)).astype(np.float32)]
    _assert_maps_equal(prior.choose(distances, 0.0), [d.argmin(-1) for d in distances])
    chosen = prior.choose(distances, 0.5)
    priced = [(d + np.float32(0.5) * level.code_bits().astype(np.float32)).argmin(-1)
              for d, level in zip(distances, prior.levels)]
    _assert_maps_equal(chosen, priced)
    assert any((c != d.argmin(-1)).any() for c, d in zip(chosen, distances))


def test_low_rank_tables_are_the_exact_integer_products_of_their_factors():
    """The float64 products are exact: the same integers as Python's unbounded ones."""
    rng = np.random.default_rng(5)
    lim = 2 ** 14 - 1
    embed, mix, out = (rng.integers(-lim, lim + 1, shape) for shape in ((9, 6), (3, 6, 6), (6, 7)))
    got = _low_rank(embed, 11, mix, 12, out, 13)

    def shift_round(x, s):
        return x << -s if s <= 0 else (x + (1 << (s - 1))) >> s

    first = [[[sum(int(embed[i, q]) * int(mix[t, q, c]) for q in range(6)) for c in range(6)]
              for i in range(9)] for t in range(3)]
    extra = max(max(abs(v) for plane in first for row in plane for v in row).bit_length() - 20, 0)
    first = [[[shift_round(v, extra) for v in row] for row in plane] for plane in first]
    expected = [[[shift_round(sum(first[t][i][q] * int(out[q, c]) for q in range(6)), 11 + 12 - extra + 13 - 3)
                  for c in range(7)] for i in range(9)] for t in range(3)]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, np.array(expected, np.int64))


def test_a_low_rank_prior_stores_factors_far_smaller_than_its_tables():
    sizes = [256, 256]
    rng = np.random.default_rng(0)
    train = [_random_maps(rng, (4, 4), sizes) for _ in range(2)]
    tables = IndexPrior.fit(train, sizes, kind="grid", steps=5).to_tensors()
    factors = IndexPrior.fit(train, sizes, kind="grid-lowrank", steps=5).to_tensors()
    assert not any(k.endswith(".neighbour") for k in factors) and factors[PRIOR_KIND].tolist() == [3]
    assert sum(v.nbytes for v in factors.values()) < sum(v.nbytes for v in tables.values()) / 4
    narrow = IndexPrior.fit(train, sizes, kind="grid-lowrank", steps=2, rank=8).to_tensors()
    assert narrow["prior.0.nb_embed"].shape == (257, 8) and factors["prior.0.nb_embed"].shape == (257, 32)
