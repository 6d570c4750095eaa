"""Entropy coding of VQ index maps: a checkerboard context model and constriction's range coder.

Each level is coded in two passes over a checkerboard. Anchors ((row + col) even) are coded
first, given the parent code one level up and the position under it; the other half is
then coded given the parent and its four already decoded anchor neighbours. Both passes are
vectorized, so decoding needs no per-symbol loop, and together they capture most of the
spatial and cross-level redundancy of the index maps.

The model is log-linear: a symbol's score is the sum of table entries for its contexts
(phase bias, parent code and position, each neighbour's code in its direction). Tables are
fitted as a multinomial logistic regression on training index maps, then stored as
integers in 1/8-nat units. Probabilities come from integer arithmetic only: the score gap
to the best symbol indexes a fixed integer exp() table, giving integer frequencies that are
identical on every machine, and constriction quantizes them deterministically. Encoder and
decoder therefore always agree, whatever hardware ran the network.

Two kinds of prior exist; a model's tensors say which (``PRIOR_KIND``, absent in models
published before the second):

- ``checkerboard`` (``LevelModel``, the first): anchors see only the parent; the rest see
  the parent and their four anchor neighbours. Files of models without the marker decode
  with it exactly as they always did.
- ``grid`` (``GridLevelModel``): each level is coded in four passes over its 2x2 grid,
  (even, even), (odd, odd), (even, odd), (odd, even), so that three quarters of the symbols
  see decoded neighbours of their own level (the four diagonals; then left, right, up and
  down; then all eight), each phase with its own table per direction, and every symbol
  also sees the parent's four neighbours one level up ("uncles"). The top level's first
  pass, with no parent, is the only context-free one. Its neighbour and uncle tables are
  fitted low rank (see ``_fit_grid_level``), then stored as plain int8 tables, so decoding
  is the same integer table lookups and sums as the checkerboard's.
"""

from __future__ import annotations

import decimal
import math

import constriction
import numba
import numpy as np
import torch
from torch.nn import functional as F

from eoz.errors import ContainerError

SCORE_UNITS = 8          # table entries are log-probabilities in 1/8 nat


def _exp_table() -> np.ndarray:
    """round(2^24 e^(-k / SCORE_UNITS)) for k < 256, at least 1, computed in decimal: its exp is
    correctly rounded everywhere, where a libm's may differ by an ulp and flip a rounding, and
    these integers decide every coded symbol."""
    context = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)
    return np.array([max(1, int(context.multiply(2 ** 24, context.exp(decimal.Decimal(-k) / SCORE_UNITS))
                                .to_integral_value(context=context))) for k in range(256)], np.int64)


_EXP = _exp_table().astype(np.int32)   # at most 2^24
_CHUNK = 8192            # symbols per batched coder call; bounds the (n, K) arrays
_MODEL = constriction.stream.model.Categorical(perfect=False)
_DIRECTIONS = ((0, -1), (0, 1), (-1, 0), (1, 0))   # left, right, up, down
_FIT_BATCH = 32768
FIXED_MARKER = b"\xf1"   # first byte of a fixed-length index payload
PRIOR_KIND = "prior.kind"   # tensor key: [GRID_KIND] for a grid prior; absent: the checkerboard
GRID_KIND = 2
LOW_RANK_KIND = 3
KINDS = ("checkerboard", "grid", "grid-lowrank")
_KIND_MARKERS = {"grid": GRID_KIND, "grid-lowrank": LOW_RANK_KIND}
# the grid prior's passes: phase k codes the positions with (row % 2, col % 2) == _GRID[k]
_GRID = ((0, 0), (1, 1), (0, 1), (1, 0))
# its neighbour directions: left, right, up, down, then the diagonals
_DIRECTIONS8 = _DIRECTIONS + ((-1, -1), (-1, 1), (1, -1), (1, 1))
# directions already decoded at each phase (indices into _DIRECTIONS8)
_PHASE_DIRECTIONS = ((), (4, 5, 6, 7), (0, 1, 2, 3), (0, 1, 2, 3, 4, 5, 6, 7))
# each phase has its own table per direction (shared tables over-count: a phase that sees
# eight neighbours needs smaller weights than one that sees four): phase p's k-th direction
# reads neighbour table _PHASE_TABLE[p] + k
_PHASE_TABLE = tuple(int(v) for v in np.cumsum([0] + [len(d) for d in _PHASE_DIRECTIONS])[:-1])
_NEIGHBOUR_TABLES = sum(len(d) for d in _PHASE_DIRECTIONS)
_UNCLES = 4              # the parent's neighbours seen: left, right, up, down
_INT8_LIMIT = 127        # neighbour and uncle scores are clipped to this when fitted: int8 tables


def _parent_context(parent: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """(parent code * 4 + position under the parent) of every symbol; zeros at the top level."""
    h, w = shape
    if parent is None:
        return np.zeros(h * w, np.int64)
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    return (parent[rows // 2, cols // 2].astype(np.int64) * 4 + (rows % 2) * 2 + cols % 2).ravel()


def _neighbours(codes: np.ndarray, none: int) -> np.ndarray:
    """(4, h*w) codes of the left, right, up and down neighbours; ``none`` outside the map."""
    padded = np.pad(codes.astype(np.int64), 1, constant_values=none)
    h, w = codes.shape
    return np.stack([padded[1 + dr:1 + dr + h, 1 + dc:1 + dc + w].ravel() for dr, dc in _DIRECTIONS])


def _phases(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of anchors and of the rest, each in raster order."""
    h, w = shape
    anchor = ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0).ravel()
    return np.flatnonzero(anchor), np.flatnonzero(~anchor)


class LevelModel:
    """Integer score tables of one level: bias (2, K), parent (P, K), neighbour (4, K+1, K)."""

    def __init__(self, bias: np.ndarray, parent: np.ndarray, neighbour: np.ndarray):
        # int32: six int16 scores sum far below 2^31, and half the memory traffic of int64
        self.bias = bias.astype(np.int32)
        self.parent = parent.astype(np.int32)
        self.neighbour = neighbour.astype(np.int32)
        self.size = self.bias.shape[1]

    def probabilities(self, phase: int, parent_ctx: np.ndarray, neighbours: np.ndarray | None) -> np.ndarray:
        """(n, K) float64 probabilities from integer scores; exact and machine independent.
        Anchors (no neighbours) depend on the parent context alone: each distinct one is
        computed once."""
        if neighbours is None:
            return _parent_only(self.bias[phase], self.parent, parent_ctx)
        scores = self.bias[phase][None, :] + self.parent[parent_ctx]
        for d in range(4):
            scores += self.neighbour[d][neighbours[d]]
        return self._normalised(scores)

    @staticmethod
    def _normalised(scores: np.ndarray) -> np.ndarray:
        gap = np.minimum(scores.max(axis=1, keepdims=True) - scores, 255)
        freqs = _EXP[gap]
        return freqs / freqs.sum(axis=1, keepdims=True, dtype=np.int64)

    def code(self, coder, codes: np.ndarray | None, parent: np.ndarray | None,
             shape: tuple[int, int], decode: bool) -> np.ndarray:
        """Encode ``codes`` or, with decode=True, decode a map of ``shape``; returns the map."""
        pctx = _parent_context(parent, shape)
        anchors, others = _phases(shape)
        flat = np.zeros(shape[0] * shape[1], np.int64) if decode else codes.ravel().astype(np.int64)
        for phase, positions in enumerate((anchors, others)):
            if phase == 1:
                neighbours = _neighbours(flat.reshape(shape), self.size)[:, positions]
            for start in range(0, len(positions), _CHUNK):
                part = positions[start:start + _CHUNK]
                nb = neighbours[:, start:start + _CHUNK] if phase == 1 else None
                probs = self.probabilities(phase, pctx[part], nb)
                if decode:
                    flat[part] = coder.decode(_MODEL, probs)
                else:
                    coder.encode(flat[part].astype(np.int32), _MODEL, probs)
        return flat.reshape(shape)

    def code_bits(self) -> np.ndarray:
        return _bits(self.bias[0])

    def choose(self, distances: np.ndarray, parent: np.ndarray | None, rate_weight: float) -> np.ndarray:
        """The map minimizing distance + rate_weight x bits, each code priced context-free
        (the anchors' bias), in float32 as the network's distances. ``distances``: (h, w, K)."""
        return (distances + rate_weight * self.code_bits().astype(np.float32)).argmin(-1)


def _bits(scores: np.ndarray) -> np.ndarray:
    """Bits of each code under the softmax of one row of integer scores."""
    scores = scores.astype(np.float64) / SCORE_UNITS
    log_p = scores - scores.max() - np.log(np.exp(scores - scores.max()).sum())
    return -log_p / math.log(2)


def _parent_only(bias: np.ndarray, parent: np.ndarray, pctx: np.ndarray) -> np.ndarray:
    """Probabilities of symbols whose context is their parent alone: each distinct one once."""
    distinct, inverse = np.unique(pctx, return_inverse=True)
    return LevelModel._normalised(bias[None, :] + parent[distinct])[inverse]


def _grid_positions(shape: tuple[int, int], phase: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (each flat, raster order) of one phase of the 2x2 grid."""
    r0, c0 = _GRID[phase]
    rows, cols = np.meshgrid(np.arange(r0, shape[0], 2), np.arange(c0, shape[1], 2), indexing="ij")
    return rows.ravel(), cols.ravel()


def _codes_around(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, directions) -> np.ndarray:
    """(len(directions), n) codes of a map padded by one ``none`` cell, around (rows, cols)."""
    return np.stack([padded[rows + 1 + dr, cols + 1 + dc] for dr, dc in directions]) if directions \
        else np.zeros((0, len(rows)), np.int64)


def _grid_contexts(codes: np.ndarray, parent: np.ndarray | None, size: int, parent_size: int,
                   phase: int, rows: np.ndarray, cols: np.ndarray, n_uncles: int):
    """Parent context, uncle codes (n_uncles, n) and decoded neighbour codes of one phase's
    positions. ``codes`` only needs the earlier phases filled in."""
    pctx = np.zeros(len(rows), np.int64)
    uncles = np.zeros((0, len(rows)), np.int64)
    if parent is not None:
        r0, c0 = _GRID[phase]
        pr, pc = rows // 2, cols // 2
        pctx = parent[pr, pc].astype(np.int64) * 4 + r0 * 2 + c0
        uncles = _codes_around(np.pad(parent.astype(np.int64), 1, constant_values=parent_size), pr, pc,
                               _DIRECTIONS8[:n_uncles])
    padded = np.pad(codes.astype(np.int64), 1, constant_values=size)
    directions = [_DIRECTIONS8[d] for d in _PHASE_DIRECTIONS[phase]]
    return pctx, uncles, _codes_around(padded, rows, cols, directions)


@numba.njit(cache=True, nogil=True)
def _grid_probabilities(parent, pctx, bias, uncle, uncles, neighbour, neighbours):
    """(n, K) probabilities of the grid prior: each symbol's integer score is its parent
    row + the bias + one row per uncle and per neighbour table; the gap to the best score
    indexes the integer exp table and the frequencies are divided by their sum. The same
    integers and the same one division as LevelModel._normalised, so the same floats, in
    one compiled pass instead of a (n, K) array per table."""
    n, size = len(pctx), bias.shape[0]
    probs = np.empty((n, size))
    scores = np.empty(size, np.int64)
    for i in range(n):
        for k in range(size):
            scores[k] = np.int64(parent[pctx[i], k]) + bias[k]
        for d in range(uncles.shape[0]):
            row = uncle[d, uncles[d, i]]
            for k in range(size):
                scores[k] += row[k]
        for d in range(neighbours.shape[0]):
            row = neighbour[d, neighbours[d, i]]
            for k in range(size):
                scores[k] += row[k]
        best = scores.max()
        total = np.int64(0)
        for k in range(size):
            scores[k] = _EXP[min(best - scores[k], 255)]
            total += scores[k]
        for k in range(size):
            probs[i, k] = scores[k] / total
    return probs


class GridLevelModel:
    """Integer score tables of one level of the grid prior: bias (4, K), parent (P, K),
    uncle (4, Kp + 1, K) (none at the top level), neighbour (16, K + 1, K): one table for
    each direction each phase sees (``_PHASE_TABLE``), and marginal (K): the training
    codes' log-frequencies, for the encoder's rate term only."""

    def __init__(self, bias: np.ndarray, parent: np.ndarray, uncle: np.ndarray, neighbour: np.ndarray,
                 marginal: np.ndarray, factors: dict[str, np.ndarray] | None = None):
        self.factors = factors   # a low-rank prior's integer factors: what its file stores
        self.bias = bias.astype(np.int32)
        self.parent = parent.astype(np.int32)
        self.uncle = uncle.astype(np.int32)
        self.neighbour = neighbour.astype(np.int32)
        self.marginal = marginal.astype(np.int32)
        self.size = self.bias.shape[1]
        self.parent_size = self.uncle.shape[1] - 1 if len(self.uncle) else 0

    def tables(self) -> dict[str, np.ndarray]:
        """What a file stores: the tables, or for a low-rank prior the free ones and the factors."""
        if self.factors is not None:
            return {"bias": self.bias, "marginal": self.marginal, **self.factors}
        return {"bias": self.bias, "parent": self.parent, "uncle": self.uncle,
                "neighbour": self.neighbour, "marginal": self.marginal}

    @classmethod
    def from_factors(cls, bias: np.ndarray, marginal: np.ndarray, factors: dict[str, np.ndarray]) -> "GridLevelModel":
        """A low-rank level from its stored integer factors, multiplied out exactly (_low_rank)."""
        f = {k: np.asarray(v).astype(np.int64) for k, v in factors.items()}
        e_nb, e_mix, e_out, e_un, e_umix, e_pa = f["exponents"].tolist()
        k = f["out"].shape[1]
        neighbour = _low_rank(f["nb_embed"], e_nb, f["nb_mix"], e_mix, f["out"], e_out)
        neighbour[:, np.arange(k), np.arange(k)] += f["copy"]   # the bonus for repeating the neighbour's code
        uncle = _low_rank(f["un_embed"], e_un, f["un_mix"], e_umix, f["out"], e_out) if len(f["un_mix"]) \
            else np.zeros((0, 1, k), np.int64)
        parent = _low_rank(f["pa_embed"], e_pa, None, 0, f["out"], e_out)
        return cls(bias, parent, uncle, neighbour, marginal, factors)

    def probabilities(self, phase: int, pctx: np.ndarray, uncles: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
        """(n, K) float64 probabilities from integer scores; exact and machine independent."""
        if not uncles.shape[0] and not neighbours.shape[0]:
            return _parent_only(self.bias[phase], self.parent, pctx)   # the top level's first phase
        first = _PHASE_TABLE[phase]
        return _grid_probabilities(self.parent, pctx, self.bias[phase], self.uncle, uncles,
                                   self.neighbour[first:first + len(_PHASE_DIRECTIONS[phase])], neighbours)

    def _chunks(self, out: np.ndarray, parent: np.ndarray | None):
        """(rows, cols, probabilities) of each chunk of symbols in coding order. A phase's
        contexts are read from ``out`` when the phase starts, so the caller must have filled
        in every chunk yielded before."""
        for phase in range(4):
            rows, cols = _grid_positions(out.shape, phase)
            if not len(rows):
                continue
            pctx, uncles, neighbours = _grid_contexts(out, parent, self.size, self.parent_size, phase, rows, cols,
                                                      len(self.uncle))
            for start in range(0, len(rows), _CHUNK):
                part = slice(start, start + _CHUNK)
                yield rows[part], cols[part], self.probabilities(phase, pctx[part], uncles[:, part],
                                                                 neighbours[:, part])

    def choose(self, distances: np.ndarray, parent: np.ndarray | None, rate_weight: float) -> np.ndarray:
        """The map minimizing distance + rate_weight x bits symbol by symbol in coding order,
        each symbol's bits under the context its coded neighbours and parent give it: a
        context-free price per code misjudges this prior, whose neighbours make a code cheap
        or dear. ``distances``: (h, w, K)."""
        out = np.zeros(distances.shape[:2], np.int64)
        for rows, cols, probs in self._chunks(out, parent):
            out[rows, cols] = (distances[rows, cols] - rate_weight * np.log2(probs)).argmin(1)
        return out

    def code(self, coder, codes: np.ndarray | None, parent: np.ndarray | None,
             shape: tuple[int, int], decode: bool) -> np.ndarray:
        """Encode ``codes`` or, with decode=True, decode a map of ``shape``; returns the map."""
        out = np.zeros(shape, np.int64) if decode else codes.astype(np.int64)
        for rows, cols, probs in self._chunks(out, parent):
            if decode:
                out[rows, cols] = coder.decode(_MODEL, probs)
            else:
                coder.encode(out[rows, cols].astype(np.int32), _MODEL, probs)
        return out

    def code_bits(self) -> np.ndarray:
        return _bits(self.marginal)


class IndexPrior:
    """Context models for the index maps of a VQ model, bottom level first."""

    def __init__(self, levels: list[LevelModel] | list[GridLevelModel]):
        self.levels = levels
        grid = bool(levels) and isinstance(levels[0], GridLevelModel)
        self.kind = ("grid-lowrank" if levels[0].factors is not None else "grid") if grid else "checkerboard"

    @classmethod
    def fit(cls, index_maps: list[list[np.ndarray]], codebook_sizes: list[int],
            steps: int | None = None, seed: int = 0, kind: str = "checkerboard",
            rank: int = 0) -> "IndexPrior":
        """Fit every level's tables on many images' index maps (each a list, bottom first).

        Each of the ``steps`` Adam steps (default 200 for the checkerboard, GRID_STEPS for
        the grid) sees a random batch of symbols, so the fit costs the same minutes on CPU
        whatever the size of the training set. ``rank``: the grid kinds' factor rank
        (default GRID_RANK).
        """
        if kind not in KINDS:
            raise ValueError(f"no index prior kind {kind!r}; kinds: {KINDS}")
        if kind != "checkerboard":
            return cls([_fit_grid_level(index_maps, codebook_sizes, level, steps or GRID_STEPS, seed,
                                        low_rank=kind == "grid-lowrank", rank=rank or GRID_RANK)
                        for level in range(len(codebook_sizes))])
        return cls([_fit_level(index_maps, codebook_sizes, level, steps or 200, seed)
                    for level in range(len(codebook_sizes))])

    def encode(self, index_maps: list[np.ndarray]) -> bytes:
        """The context-coded stream, or the fixed-length indices where those are smaller (busy
        tiles the context model predicts badly): a fixed-length payload is 1 byte longer than a
        multiple of 4, which no coded stream is, so old files read as before."""
        encoder = constriction.stream.queue.RangeEncoder()
        for level in range(len(self.levels) - 1, -1, -1):
            parent = index_maps[level + 1] if level + 1 < len(self.levels) else None
            self.levels[level].code(encoder, index_maps[level], parent, index_maps[level].shape, False)
        coded = encoder.get_compressed().astype("<u4").tobytes()
        fixed = self._fixed_length(index_maps)
        return fixed if len(fixed) < len(coded) else coded

    def _index_bits(self) -> list[int]:
        return [max(1, (m.size - 1).bit_length()) for m in self.levels]

    def _fixed_length(self, index_maps: list[np.ndarray]) -> bytes:
        """FIXED_MARKER, each level's indices (bottom first) in ceil(log2 K) bits, most
        significant first, zero padding to a length of 1 (mod 4)."""
        bits = np.concatenate([((m.ravel().astype(np.int64)[:, None] >> np.arange(n - 1, -1, -1)) & 1).ravel()
                               for m, n in zip(index_maps, self._index_bits())])
        packed = FIXED_MARKER + np.packbits(bits.astype(np.uint8)).tobytes()
        return packed + bytes(-(len(packed) - 1) % 4)

    def _read_fixed_length(self, data: bytes, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
        sizes = [h * w * n for (h, w), n in zip(shapes, self._index_bits())]
        expected = 1 + -(-sum(sizes) // 8)
        if data[:1] != FIXED_MARKER or len(data) != expected + -(expected - 1) % 4:
            raise ContainerError(f"fixed-length index payload of {len(data)} bytes does not fit maps {shapes}")
        bits = np.unpackbits(np.frombuffer(data, np.uint8, offset=1), count=sum(sizes)).astype(np.int64)
        maps, start = [], 0
        for (h, w), n, size, level in zip(shapes, self._index_bits(), sizes, self.levels):
            codes = bits[start:start + size].reshape(-1, n) @ (1 << np.arange(n - 1, -1, -1))
            if codes.size and codes.max() >= level.size:
                raise ContainerError(f"fixed-length index {codes.max()} is past the codebook's {level.size} codes")
            maps.append(codes.reshape(h, w))
            start += size
        return maps

    def decode(self, data: bytes, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
        """Inverse of encode for index maps of the given shapes (bottom level first)."""
        if len(data) % 4 == 1:
            return self._read_fixed_length(data, shapes)
        if len(data) % 4 or not data:  # any symbol at all leaves at least one word
            raise ContainerError(f"index stream of {len(data)} bytes is empty or not a multiple of 4 bytes")
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
        maps: list[np.ndarray] = [None] * len(self.levels)
        for level in range(len(self.levels) - 1, -1, -1):
            parent = maps[level + 1] if level + 1 < len(self.levels) else None
            maps[level] = self.levels[level].code(decoder, None, parent, tuple(shapes[level]), True)
        if not decoder.maybe_exhausted():
            raise ContainerError("index stream does not end where its index maps do: "
                                 "it is truncated or has extra data")
        return maps

    def choose(self, distances: list[np.ndarray], rate_weight: float) -> list[np.ndarray]:
        """Index maps (bottom first) chosen by distance + rate_weight x bits, top level first
        as they are coded: each level prices its codes as its kind can (``distances``: (h, w, K)
        per level, from VQVAEFPN.distances)."""
        maps: list[np.ndarray] = [None] * len(self.levels)
        for level in range(len(self.levels) - 1, -1, -1):
            parent = maps[level + 1] if level + 1 < len(self.levels) else None
            maps[level] = self.levels[level].choose(distances[level], parent, rate_weight)
        return maps

    def fixed_length_bytes(self, shapes: list[tuple[int, int]]) -> float:
        """Size of the same maps stored with fixed-length indices (w*h*log2(K)/8 per level)."""
        return sum(h * w * math.log2(m.size) / 8 for (h, w), m in zip(shapes, self.levels))

    def to_tensors(self) -> dict[str, np.ndarray]:
        """Tables as int16 (scores are a few hundred eighth-nats at most): half the bytes of
        int32; a grid prior's tables as int8 where they fit (its neighbour and uncle tables,
        clipped when fitted), a low-rank prior's factors, and the kind's marker."""
        out = {}
        for l, m in enumerate(self.levels):
            named = m.tables() if self.kind != "checkerboard" else \
                {"bias": m.bias, "parent": m.parent, "neighbour": m.neighbour}
            for name, table in named.items():
                if table.size and np.abs(table).max() > np.iinfo(np.int16).max:
                    raise ValueError(f"prior level {l} {name} scores exceed int16")
                small = self.kind != "checkerboard" and (not table.size or np.abs(table).max() <= _INT8_LIMIT)
                out[f"prior.{l}.{name}"] = table.astype(np.int8 if small else np.int16)
        if self.kind != "checkerboard":
            out[PRIOR_KIND] = np.array([_KIND_MARKERS[self.kind]], np.int16)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> "IndexPrior":
        """The prior a model's tensors hold: a grid prior where they carry PRIOR_KIND, else
        the checkerboard prior every earlier model was published with."""
        n = sum(1 for k in tensors if k.startswith("prior.") and k.endswith(".bias"))
        if PRIOR_KIND not in tensors:
            return cls([LevelModel(tensors[f"prior.{l}.bias"], tensors[f"prior.{l}.parent"],
                                   tensors[f"prior.{l}.neighbour"]) for l in range(n)])
        kind = np.asarray(tensors[PRIOR_KIND]).ravel().tolist()
        if kind not in ([GRID_KIND], [LOW_RANK_KIND]):
            raise ContainerError(f"index prior kind {kind} is not one this build reads "
                                 f"({sorted(_KIND_MARKERS.values())})")
        if kind == [LOW_RANK_KIND]:
            return cls([GridLevelModel.from_factors(
                tensors[f"prior.{l}.bias"], tensors[f"prior.{l}.marginal"],
                {name: tensors[f"prior.{l}.{name}"] for name in _FACTOR_NAMES}) for l in range(n)])
        return cls([GridLevelModel(*(tensors[f"prior.{l}.{name}"]
                                     for name in ("bias", "parent", "uncle", "neighbour", "marginal")))
                    for l in range(n)])


def _level_samples(index_maps, codebook_sizes, level):
    """Targets, phases, parent contexts and neighbour codes of one level over all images."""
    none = codebook_sizes[level]
    targets, phases, parents, neighbours = [], [], [], []
    for maps in index_maps:
        codes = maps[level]
        parent = maps[level + 1] if level + 1 < len(maps) else None
        anchors, others = _phases(codes.shape)
        phase = np.zeros(codes.size, np.int64)
        phase[others] = 1
        nb = _neighbours(codes, none)
        targets.append(codes.ravel().astype(np.int64))
        phases.append(phase)
        parents.append(_parent_context(parent, codes.shape))
        neighbours.append(nb)
    return (torch.from_numpy(np.concatenate(targets)), torch.from_numpy(np.concatenate(phases)),
            torch.from_numpy(np.concatenate(parents)), torch.from_numpy(np.concatenate(neighbours, 1)))


def _fit_level(index_maps, codebook_sizes, level, steps, seed) -> LevelModel:
    """Multinomial logistic regression on one-hot contexts, then rounding to score units."""
    k = codebook_sizes[level]
    n_parent = codebook_sizes[level + 1] * 4 if level + 1 < len(codebook_sizes) else 1
    targets, phases, parents, neighbours = _level_samples(index_maps, codebook_sizes, level)
    # one table for the four directions: direction d's rows start at d * (k + 1)
    neighbours = (neighbours + (torch.arange(4) * (k + 1))[:, None]).t().contiguous()
    generator = torch.Generator().manual_seed(seed)
    bias = torch.zeros(2, k, requires_grad=True)
    parent = torch.zeros(n_parent, k, requires_grad=True)
    neighbour = torch.zeros(4 * (k + 1), k, requires_grad=True)
    with torch.no_grad():
        counts = torch.bincount(targets, minlength=k).double()
        bias[:] = torch.log((counts + 0.5) / (counts.sum() + 0.5 * k)).float()
    optimizer = torch.optim.Adam([bias, parent, neighbour], lr=0.05)
    for _ in range(steps):
        rows = torch.randint(0, len(targets), (min(_FIT_BATCH, len(targets)),), generator=generator)
        phase = phases[rows]
        # anchors are coded before their neighbours are known: only the others use them
        context = F.embedding(neighbours[rows], neighbour).sum(1) * phase[:, None]
        logits = F.embedding(phase, bias) + F.embedding(parents[rows], parent) + context
        loss = F.cross_entropy(logits, targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    to_int = lambda t: np.rint(t.detach().numpy().astype(np.float64) * SCORE_UNITS).astype(np.int64)
    return LevelModel(to_int(bias), to_int(parent), to_int(neighbour).reshape(4, k + 1, k))


GRID_STEPS = 300
GRID_RANK = 32


def _grid_samples(index_maps, codebook_sizes, level):
    """(n, 2 + _UNCLES + 8) rows into one concatenated table (bias, parent, the uncles, up to
    8 neighbours), their 0/1 weights (0: a direction the phase has not decoded yet, or the
    uncles at the top level), the targets and the tables' row offsets."""
    k = codebook_sizes[level]
    kp = codebook_sizes[level + 1] if level + 1 < len(codebook_sizes) else 0
    n_parent = kp * 4 if kp else 1
    # one table of all rows: bias, parent, the uncles, then every neighbour table; columns
    # 2 + _UNCLES.. of a sample are its phase's neighbour directions (unused columns weigh 0)
    offsets = np.cumsum([0, 4, n_parent] + [kp + 1] * _UNCLES + [k + 1] * _NEIGHBOUR_TABLES)
    rows, weights, targets = [], [], []
    for maps in index_maps:
        codes = np.asarray(maps[level]).astype(np.int64)
        parent = np.asarray(maps[level + 1]).astype(np.int64) if kp else None
        for phase in range(4):
            r, c = _grid_positions(codes.shape, phase)
            if not len(r):
                continue
            pctx, uncles, neighbours = _grid_contexts(codes, parent, k, kp, phase, r, c, _UNCLES)
            n = len(r)
            first = 2 + _UNCLES     # the first neighbour column
            idx = np.zeros((first + 8, n), np.int64)
            w = np.zeros((first + 8, n), np.float32)
            idx[0], idx[1] = phase, pctx
            w[0:2] = 1
            if kp:
                idx[2:first], w[2:first] = uncles, 1
            idx[:first] += offsets[:first, None]
            for j in range(len(_PHASE_DIRECTIONS[phase])):
                idx[first + j], w[first + j] = neighbours[j] + offsets[first + _PHASE_TABLE[phase] + j], 1
            idx[first + len(_PHASE_DIRECTIONS[phase]):] = offsets[first]   # any row: weight 0
            rows.append(idx.T)
            weights.append(w.T)
            targets.append(codes[r, c])
    return (torch.from_numpy(np.concatenate(rows)), torch.from_numpy(np.concatenate(weights)),
            torch.from_numpy(np.concatenate(targets)), offsets)


def _fit_grid_level(index_maps, codebook_sizes, level, steps, seed, low_rank: bool = False,
                    rank: int = 0) -> GridLevelModel:
    """Multinomial logistic regression on one-hot contexts (one embedding bag over all the
    tables), then rounding to score units; neighbour and uncle scores clipped to int8.

    The bias and parent tables are free. The neighbour and uncle tables are low rank, so
    that they generalize beyond the training cities (free (K+1) x K tables learn the
    training maps' rare pairs: on the v2 maps 0.26 bits per index better on the training
    cities and 0.61 worse on the validation cities, benchmarks/results/index_coding.md): a
    code embedding E (K+1, rank) shared by every direction and phase, a
    rank x rank mixing matrix per table, and an output matrix shared with the
    uncles; plus, for neighbours, a per-table per-code bonus for repeating the neighbour's
    code (a diagonal the low rank cannot hold). Only the integer tables they multiply out
    to are kept.

    ``low_rank`` (the grid-lowrank kind): the parent table is low rank too (an embedding of
    each parent context times the shared output matrix: a free table has 4 Kp x K entries,
    16 MB at 1024 codes a level), nothing is clipped, and the file keeps the factors as
    integers (_integer_factor), from which the tables are multiplied out exactly."""
    k = codebook_sizes[level]
    kp = codebook_sizes[level + 1] if level + 1 < len(codebook_sizes) else 0
    rows, weights, targets, offsets = _grid_samples(index_maps, codebook_sizes, level)
    generator = torch.Generator().manual_seed(seed)
    counts = torch.bincount(targets, minlength=k).double()
    marginal = torch.log((counts + 0.5) / (counts.sum() + 0.5 * k)).float()
    r = rank or GRID_RANK
    bias = marginal.repeat(4, 1).requires_grad_(True)
    small = lambda *shape: (0.1 * torch.randn(*shape, generator=generator)).requires_grad_(True)
    out = small(r, k)
    n_parent = int(offsets[2] - offsets[1])
    # the parent table: free, or (low_rank) an embedding of each parent context times ``out``
    pa_embed = small(n_parent, r) if low_rank else None
    free_parent = None if low_rank else torch.zeros(n_parent, k, requires_grad=True)
    nb_embed, nb_mix = small(k + 1, r), torch.eye(r).repeat(_NEIGHBOUR_TABLES, 1, 1).requires_grad_(True)
    copy = torch.zeros(_NEIGHBOUR_TABLES, k, requires_grad=True)
    un_embed, un_mix = small(kp + 1, r), torch.eye(r).repeat(_UNCLES, 1, 1).requires_grad_(True)
    same = torch.eye(k + 1, k)    # neighbour code == coded code

    def tables():
        neighbour = (nb_embed @ nb_mix) @ out + copy[:, None, :] * same   # (tables, k + 1, k)
        uncle = (un_embed @ un_mix) @ out                         # (4, kp + 1, k)
        return bias, pa_embed @ out if low_rank else free_parent, uncle, neighbour

    factors = [out, nb_embed, nb_mix, copy, un_embed, un_mix] + ([pa_embed] if low_rank else [])
    optimizer = torch.optim.Adam([{"params": [bias] + ([] if low_rank else [free_parent]), "lr": 0.05},
                                  {"params": factors, "lr": 0.02}])
    for _ in range(steps):
        pick = torch.randint(0, len(targets), (min(_FIT_BATCH, len(targets)),), generator=generator)
        table = torch.cat([t.reshape(-1, k) for t in tables()])
        logits = F.embedding_bag(rows[pick], table, mode="sum", per_sample_weights=weights[pick])
        loss = F.cross_entropy(logits, targets[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scores = lambda t: np.rint(t.detach().numpy().astype(np.float64) * SCORE_UNITS).astype(np.int64)   # noqa: E731
    marginal_scores = scores(marginal)
    if low_rank:
        stored = {"out": out, "nb_embed": nb_embed, "nb_mix": nb_mix, "pa_embed": pa_embed,   # no uncles at the top
                  "un_embed": un_embed if kp else un_embed[:0], "un_mix": un_mix if kp else un_mix[:0]}
        ints = {name: _integer_factor(t) for name, t in stored.items()}
        exponents = [ints[name][1] for name in ("nb_embed", "nb_mix", "out", "un_embed", "un_mix", "pa_embed")]
        return GridLevelModel.from_factors(scores(bias), marginal_scores, {
            **{name: v for name, (v, _) in ints.items()}, "copy": scores(copy),
            "exponents": np.array(exponents, np.int64)})
    with torch.no_grad():
        ints = [scores(t) for t in tables()]
    clip = lambda t: np.clip(t, -_INT8_LIMIT, _INT8_LIMIT)
    uncle = clip(ints[2]) if kp else np.zeros((0, 1, k), np.int64)
    return GridLevelModel(ints[0], ints[1], uncle, clip(ints[3]), marginal_scores)


_FACTOR_NAMES = ("out", "nb_embed", "nb_mix", "un_embed", "un_mix", "pa_embed", "copy", "exponents")
_FACTOR_BITS = 14        # a low-rank prior's integer factors lie within +-2^_FACTOR_BITS
_PRODUCT_BITS = 20       # the first product is rounded to this many bits before the second


def _integer_factor(t: torch.Tensor) -> tuple[np.ndarray, int]:
    """(round(t x 2^e), e), e the largest with every value within +-2^_FACTOR_BITS."""
    values = t.detach().numpy().astype(np.float64)
    top = float(np.abs(values).max()) if values.size else 0.0
    e = _FACTOR_BITS - 1 - math.ceil(math.log2(top)) if top > 0 else 0
    return np.rint(values * 2.0 ** e).astype(np.int64), e


def _shift_round(x: np.ndarray, s: int) -> np.ndarray:
    """round(x / 2^s) (halves up) in integers; s <= 0 scales up."""
    return x << -s if s <= 0 else (x + (1 << (s - 1))) >> s


def _exact_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b of integer arrays through float64, exact on every machine and BLAS: each product
    and every partial sum is an integer below 2^53 (checked), which float64 holds, so no
    order of summation or fused multiply-add can round."""
    bound = float(np.abs(a).max(initial=0)) * float(np.abs(b).max(initial=0)) * a.shape[-1]
    if bound >= 2.0 ** 52:
        raise ValueError("low-rank prior factors too large for an exact product")
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)


def _low_rank(embed, e_embed, mix, e_mix, out, e_out) -> np.ndarray:
    """SCORE_UNITS x embed @ mix @ out rounded to integers, from integer factors scaled by
    2^e: the same integers on every machine (_exact_product, integer shifts)."""
    a, e_a = embed, e_embed
    if mix is not None:
        a = _exact_product(embed, mix)
        e_a = e_embed + e_mix
        extra = max(int(np.abs(a).max(initial=0)).bit_length() - _PRODUCT_BITS, 0)
        a, e_a = _shift_round(a, extra), e_a - extra
    shift = e_a + e_out - int(math.log2(SCORE_UNITS))
    if a.ndim == 2:
        return _shift_round(_exact_product(a, out), shift)
    tables = np.empty(a.shape[:-1] + out.shape[1:], np.int64)
    for t in range(len(a)):   # one table at a time: the float64 products of all would take GBs
        tables[t] = _shift_round(_exact_product(a[t], out), shift)
    return tables
