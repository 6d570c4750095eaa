"""Entropy models of the hyperprior: factorized bottleneck, Gaussian conditional, and their coder.

Training uses continuous likelihoods (additive uniform noise stands in for rounding). Coding
uses integer frequency tables, built once when a model is exported and stored in its
weights file: the factorized density of every z channel, and one discretized Gaussian per
entry of a fixed log-spaced scale table. Probabilities handed to the range coder are those
integers divided by their sum, which IEEE arithmetic gives identically everywhere, so no
libm difference between machines can change a table.

Every table has two extra bins, below and above its support; a symbol that falls there is
followed by its distance past the support, coded uniformly, so any value can be coded.
"""

from __future__ import annotations

import math

import constriction
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from eoz.errors import ContainerError

LIKELIHOOD_FLOOR = 1e-9
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 512.0, 96
FREQUENCY_TOTAL = 1 << 24
SYMBOL_LIMIT = (1 << 15) - 1     # symbols are clipped to +-this before coding
_OVERFLOW = constriction.stream.model.Uniform(1 << 16)


def scale_table() -> np.ndarray:
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


def scale_thresholds(unit: float) -> np.ndarray:
    """Log-scale boundaries between neighbouring scale_table() entries, in fixed-point units.

    Stored with a model, so the table a log-scale selects never depends on a machine's log().
    """
    step = math.log(SCALE_MAX / SCALE_MIN) / (SCALE_LEVELS - 1)
    return np.rint(unit * (math.log(SCALE_MIN) + (np.arange(1, SCALE_LEVELS) - 0.5) * step)).astype(np.int64)


class EntropyBottleneck(nn.Module):
    """Non-parametric factorized density per channel (Ballé et al. 2018, appendix 6.1)."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1,) + filters + (1,)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def _logits_cumulative(self, v: torch.Tensor) -> torch.Tensor:
        """(C, 1, n) values -> (C, 1, n) logits of the cumulative density."""
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            v = torch.matmul(F.softplus(matrix), v) + bias
            if i < len(self.factors):
                v = v + torch.tanh(self.factors[i]) * torch.tanh(v)
        return v

    def _channel_likelihood(self, v: torch.Tensor) -> torch.Tensor:
        lower = self._logits_cumulative(v - 0.5)
        upper = self._logits_cumulative(v + 0.5)
        sign = -torch.sign(lower + upper).detach()  # evaluate in the stable tail
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noisy (training) or rounded (eval) z and its likelihood."""
        z_hat = z + torch.empty_like(z).uniform_(-0.5, 0.5) if self.training else torch.round(z)
        c = z.shape[1]
        v = z_hat.transpose(0, 1).reshape(c, 1, -1)
        likelihood = self._channel_likelihood(v).reshape(c, z.shape[0], *z.shape[2:]).transpose(0, 1)
        return z_hat, likelihood.clamp(min=LIKELIHOOD_FLOOR)

    @torch.no_grad()
    def tables(self, radius: int = 64) -> "SymbolTables":
        """One integer table per channel over [-radius, radius] plus the two overflow bins."""
        c = self.matrices[0].shape[0]
        support = torch.arange(-radius, radius + 1, dtype=torch.float32).expand(c, 1, -1)
        pmf = self._channel_likelihood(support)[:, 0].double().numpy()
        below = torch.sigmoid(self._logits_cumulative(torch.full((c, 1, 1), -radius - 0.5)))[:, 0, 0]
        above = 1 - torch.sigmoid(self._logits_cumulative(torch.full((c, 1, 1), radius + 0.5)))[:, 0, 0]
        return SymbolTables.from_probabilities([np.concatenate([[b], p, [a]]) for b, p, a in
                                                zip(below.double().numpy(), pmf, above.double().numpy())])


class GaussianConditional(nn.Module):
    """Zero-mean Gaussian of a known scale, integrated over each rounding bin."""

    @staticmethod
    def likelihood(v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        scale = scale.clamp(min=SCALE_MIN)
        v = torch.abs(v)
        normal = lambda t: 0.5 * torch.erfc(-t / math.sqrt(2))
        likelihood = normal((0.5 - v) / scale) - normal((-0.5 - v) / scale)
        return likelihood.clamp(min=LIKELIHOOD_FLOOR)

    @staticmethod
    def tables(tail: float = 8.0) -> "SymbolTables":
        """Integer tables of the discretized Gaussian for every scale of scale_table()."""
        normal = lambda t: 0.5 * math.erfc(-t / math.sqrt(2))
        out = []
        for s in scale_table():
            radius = int(math.ceil(tail * s)) + 1
            edges = np.array([normal((k + 0.5) / s) for k in range(-radius - 1, radius + 1)])
            out.append(np.concatenate([[edges[0]], np.diff(edges), [1 - edges[-1]]]))
        return SymbolTables.from_probabilities(out)


class SymbolTables:
    """Integer frequency tables with overflow bins, and the range coding that uses them.

    ``frequencies`` is every table concatenated; table t covers symbols
    [-radius[t], radius[t]] and sits at frequencies[offsets[t]:offsets[t + 1]].
    """

    def __init__(self, frequencies: np.ndarray, offsets: np.ndarray):
        self.frequencies = frequencies.astype(np.int64)
        self.offsets = offsets.astype(np.int64)
        self.radius = (np.diff(self.offsets) - 3) // 2
        if (self.radius < 0).any() or (self.frequencies <= 0).any():
            raise ContainerError("entropy tables are malformed")

    @classmethod
    def from_probabilities(cls, tables: list[np.ndarray]) -> "SymbolTables":
        freqs = [np.maximum(1, np.rint(np.asarray(p, np.float64) / np.sum(p) * FREQUENCY_TOTAL)) for p in tables]
        offsets = np.concatenate([[0], np.cumsum([len(f) for f in freqs])])
        return cls(np.concatenate(freqs).astype(np.int64), offsets)

    def __len__(self) -> int:
        return len(self.radius)

    def bits(self, symbols: np.ndarray, table_ids: np.ndarray) -> np.ndarray:
        """What coding each symbol with its table costs, in bits (overflows included)."""
        symbols = np.clip(symbols.astype(np.int64), -SYMBOL_LIMIT, SYMBOL_LIMIT)
        r = self.radius[table_ids]
        index = self.offsets[table_ids] + np.clip(symbols, -r - 1, r + 1) + r + 1
        totals = np.add.reduceat(self.frequencies, self.offsets[:-1])[table_ids]
        return np.log2(totals / self.frequencies[index]) + np.where(np.abs(symbols) > r, 16.0, 0.0)

    def _model(self, t: int):
        f = self.frequencies[self.offsets[t]:self.offsets[t + 1]]
        return constriction.stream.model.Categorical(f / f.sum(dtype=np.int64), perfect=False)

    def encode(self, coder, symbols: np.ndarray, table_ids: np.ndarray) -> None:
        """Code flat int symbols, each with its table; order: by table id, then position."""
        symbols = np.clip(symbols.astype(np.int64), -SYMBOL_LIMIT, SYMBOL_LIMIT)
        overflow = []
        for t in np.unique(table_ids):
            picked = symbols[table_ids == t]
            r = self.radius[t]
            coder.encode((np.clip(picked, -r - 1, r + 1) + r + 1).astype(np.int32), self._model(t))
            overflow.append(np.abs(picked[np.abs(picked) > r]) - r - 1)
        if overflow and (rest := np.concatenate(overflow)).size:
            coder.encode(rest.astype(np.int32), _OVERFLOW)

    def decode(self, coder, table_ids: np.ndarray) -> np.ndarray:
        """Inverse of encode, given the same table ids."""
        if table_ids.size and (table_ids.min() < 0 or table_ids.max() >= len(self)):
            raise ContainerError("a symbol refers to an entropy table the model does not have")
        symbols = np.zeros(table_ids.shape, np.int64)
        escaped = []
        for t in np.unique(table_ids):
            where = np.flatnonzero(table_ids == t)
            r = self.radius[t]
            values = coder.decode(self._model(t), len(where)).astype(np.int64) - r - 1
            symbols[where] = values
            escaped.append(where[np.abs(values) > r])
        if escaped and (where := np.concatenate(escaped)).size:
            extra = coder.decode(_OVERFLOW, len(where)).astype(np.int64)
            symbols[where] += np.sign(symbols[where]) * extra
        return symbols

    def to_tensors(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.frequencies": self.frequencies.astype(np.int32),
                f"{prefix}.offsets": self.offsets.astype(np.int64)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str) -> "SymbolTables":
        return cls(tensors[f"{prefix}.frequencies"], tensors[f"{prefix}.offsets"])
