"""Entropy coding of VQ index maps with constriction's range coder.

The prior is a set of integer frequency tables learned from the training set's index maps:
the top level is coded with its marginal, every lower level with the distribution of its
code given the parent code one level up and its position (one of 4) under that parent.
The FPN encoder makes a lower level's codes depend strongly on the level above, so this
context removes much of what a marginal would leave.

Tables are stored as integers and turned into probabilities by one float64 division, the
same on every machine; constriction quantizes them deterministically. Encoder and decoder
therefore always agree, whatever hardware ran the network.
"""

from __future__ import annotations

import math

import constriction
import numpy as np

from eoz.errors import ContainerError

TABLE_TOTAL = 1 << 20   # each row's frequencies sum to about this
PRIOR_STRENGTH = 32.0   # pseudo-counts of the marginal mixed into each context row
_CHUNK = 16384          # symbols per batched call, bounds the per-symbol probability array
_MODEL = constriction.stream.model.Categorical(perfect=False)


def _frequencies(counts: np.ndarray, marginal: np.ndarray) -> np.ndarray:
    """Smoothed integer frequencies for rows of counts (..., K), every symbol at least 1."""
    n = counts.sum(-1, keepdims=True)
    probs = (counts + PRIOR_STRENGTH * marginal) / (n + PRIOR_STRENGTH)
    return np.maximum(1, np.rint(probs * TABLE_TOTAL)).astype(np.uint32)


def _children_context(parent: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Context row (parent code * 4 + position under the parent) of each child symbol."""
    h, w = shape
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    return parent[rows // 2, cols // 2].astype(np.int64) * 4 + (rows % 2) * 2 + cols % 2


class IndexPrior:
    """Frequency tables for the index maps of a VQ model, bottom level first."""

    def __init__(self, top: np.ndarray, conditionals: list[np.ndarray]):
        self.top = top.astype(np.uint32)                        # (K_top,)
        self.conditionals = [c.astype(np.uint32) for c in conditionals]  # (K_{l+1}*4, K_l)
        self._top_probs = self.top / self.top.sum(dtype=np.float64)
        self._cond_probs = [c / c.sum(-1, keepdims=True, dtype=np.float64) for c in self.conditionals]

    @classmethod
    def fit(cls, index_maps: list[list[np.ndarray]], codebook_sizes: list[int]) -> "IndexPrior":
        """Count codes over many images' index maps (each a list, bottom level first)."""
        levels = len(codebook_sizes)
        marginals = [np.zeros(k) for k in codebook_sizes]
        cond_counts = [np.zeros((codebook_sizes[l + 1] * 4, codebook_sizes[l])) for l in range(levels - 1)]
        for maps in index_maps:
            for level, m in enumerate(maps):
                marginals[level] += np.bincount(m.ravel(), minlength=codebook_sizes[level])
                if level < levels - 1:
                    ctx = _children_context(maps[level + 1], m.shape).ravel()
                    np.add.at(cond_counts[level], (ctx, m.ravel()), 1)
        marginal_probs = [(m + 0.5) / (m.sum() + 0.5 * len(m)) for m in marginals]
        top = _frequencies(marginals[-1], marginal_probs[-1])
        conditionals = [_frequencies(c, marginal_probs[l]) for l, c in enumerate(cond_counts)]
        return cls(top, conditionals)

    @property
    def levels(self) -> int:
        return len(self.conditionals) + 1

    def encode(self, index_maps: list[np.ndarray]) -> bytes:
        encoder = constriction.stream.queue.RangeEncoder()
        top = index_maps[-1].ravel().astype(np.int32)
        encoder.encode(top, constriction.stream.model.Categorical(self._top_probs, perfect=False))
        for level in range(self.levels - 2, -1, -1):
            symbols = index_maps[level].ravel().astype(np.int32)
            ctx = _children_context(index_maps[level + 1], index_maps[level].shape).ravel()
            table = self._cond_probs[level]
            for start in range(0, len(symbols), _CHUNK):
                part = slice(start, start + _CHUNK)
                encoder.encode(symbols[part], _MODEL, table[ctx[part]])
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
        """Inverse of encode for index maps of the given shapes (bottom level first)."""
        if len(data) % 4:
            raise ContainerError("index stream length is not a multiple of 4 bytes")
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        maps: list[np.ndarray | None] = [None] * self.levels
        h, w = shapes[-1]
        top_model = constriction.stream.model.Categorical(self._top_probs, perfect=False)
        maps[-1] = np.asarray(decoder.decode(top_model, h * w), dtype=np.int64).reshape(h, w)
        for level in range(self.levels - 2, -1, -1):
            ctx = _children_context(maps[level + 1], shapes[level]).ravel()
            table = self._cond_probs[level]
            parts = [decoder.decode(_MODEL, table[ctx[s:s + _CHUNK]])
                     for s in range(0, len(ctx), _CHUNK)]
            maps[level] = np.concatenate(parts).astype(np.int64).reshape(shapes[level])
        return maps

    def fixed_length_bytes(self, shapes: list[tuple[int, int]]) -> float:
        """Size of the same maps stored with fixed-length indices (w*h*log2(K)/8 per level)."""
        sizes = [c.shape[1] for c in self.conditionals] + [len(self.top)]
        return sum(h * w * math.log2(k) / 8 for (h, w), k in zip(shapes, sizes))

    def to_tensors(self) -> dict[str, np.ndarray]:
        out = {"prior.top": self.top}
        out.update({f"prior.conditional.{l}": c for l, c in enumerate(self.conditionals)})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> "IndexPrior":
        n = sum(1 for k in tensors if k.startswith("prior.conditional."))
        return cls(tensors["prior.top"], [tensors[f"prior.conditional.{l}"] for l in range(n)])
