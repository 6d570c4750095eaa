"""Neural network definitions (pure nn.Modules; no I/O, no entropy coding)."""

from __future__ import annotations

import numpy as np
import torch

NETWORK_PREFIX = "model."   # a weights file's network tensors; the rest are coding tables


def network_state(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The state dict of the network in a published model's tensors."""
    return {k[len(NETWORK_PREFIX):]: torch.from_numpy(v.copy()) for k, v in tensors.items()
            if k.startswith(NETWORK_PREFIX)}
