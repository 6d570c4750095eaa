"""Which device the codecs compute on, for the eoz_workers gauge."""

from __future__ import annotations


def compute_device() -> str:
    """Where eoz.codecs runs its networks: CUDA whenever torch sees a GPU, else the CPU (the rule
    of the learned codecs, eoz/codecs/vqvae_fpn.py and hyperprior.py). torch's default device
    says "cpu" either way, since the codecs place their tensors themselves."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
