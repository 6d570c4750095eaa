"""Which device the codecs compute on, for the eoz_worker_device gauge."""

from __future__ import annotations


def compute_device() -> str:
    """torch's default device: eoz.codecs builds its models and tensors there.

    CUDA being installed is not enough: the gauge reports where the work runs, so it
    says "cuda" only once the codec library computes there.
    """
    import torch

    return torch.get_default_device().type
