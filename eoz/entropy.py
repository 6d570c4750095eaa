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
"""

from __future__ import annotations

import decimal
import math

import constriction
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
            distinct, inverse = np.unique(parent_ctx, return_inverse=True)
            return self._normalised(self.bias[phase][None, :] + self.parent[distinct])[inverse]
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


class IndexPrior:
    """Context models for the index maps of a VQ model, bottom level first."""

    def __init__(self, levels: list[LevelModel]):
        self.levels = levels

    @classmethod
    def fit(cls, index_maps: list[list[np.ndarray]], codebook_sizes: list[int],
            steps: int = 200, seed: int = 0) -> "IndexPrior":
        """Fit every level's tables on many images' index maps (each a list, bottom first).

        Each of the ``steps`` Adam steps sees a random batch of symbols, so the fit costs
        the same minutes on CPU whatever the size of the training set.
        """
        return cls([_fit_level(index_maps, codebook_sizes, level, steps, seed)
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

    def code_bits(self) -> list[np.ndarray]:
        """Bits of each code of each level under the anchors' context-free (bias) distribution."""
        out = []
        for level in self.levels:
            scores = level.bias[0].astype(np.float64) / SCORE_UNITS
            log_p = scores - scores.max() - np.log(np.exp(scores - scores.max()).sum())
            out.append(-log_p / math.log(2))
        return out

    def fixed_length_bytes(self, shapes: list[tuple[int, int]]) -> float:
        """Size of the same maps stored with fixed-length indices (w*h*log2(K)/8 per level)."""
        return sum(h * w * math.log2(m.size) / 8 for (h, w), m in zip(shapes, self.levels))

    def to_tensors(self) -> dict[str, np.ndarray]:
        """Tables as int16 (scores are a few hundred eighth-nats at most): half the bytes of int32."""
        out = {}
        for l, m in enumerate(self.levels):
            for name, table in (("bias", m.bias), ("parent", m.parent), ("neighbour", m.neighbour)):
                if np.abs(table).max() > np.iinfo(np.int16).max:
                    raise ValueError(f"prior level {l} {name} scores exceed int16")
                out[f"prior.{l}.{name}"] = table.astype(np.int16)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> "IndexPrior":
        n = sum(1 for k in tensors if k.startswith("prior.") and k.endswith(".bias"))
        return cls([LevelModel(tensors[f"prior.{l}.bias"], tensors[f"prior.{l}.parent"],
                               tensors[f"prior.{l}.neighbour"]) for l in range(n)])


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
