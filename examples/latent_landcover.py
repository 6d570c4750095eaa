"""Land cover from compressed data: k-means on the VQVAE-FPN top-level latents of a held-out city.

The latents come from `eoz features` (what a .eoz file's top level holds, one 64-d codebook
vector per 4 x 4 pixels). They are clustered with k-means, and the clusters are compared
with spectral-index classes computed from the original pixels at the same resolution
(water: NDWI > 0; vegetation: NDVI > 0.35; the rest built-up or bare). The index classes
are a proxy, not ground truth: they show whether the latents separate the main cover
types without decoding the image. Writes a PNG of the clusters beside the printed figures.

    python examples/latent_landcover.py [--city hongkong_imgs_1] [--clusters 6]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from eoz import datasets
from eoz.codecs import codec_for_model
from eoz.features import extract_features
from eoz.raster import read_raster

CLASSES = ("water", "vegetation", "built-up / bare")


def index_classes(array: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Spectral-index class of every factor x factor block (B02, B03, B04, B08 order)."""
    bands, h, w = array.shape
    padded = np.pad(array.astype(np.float64), ((0, 0), (0, shape[0] * factor - h), (0, shape[1] * factor - w)),
                    mode="edge")
    means = padded.reshape(bands, shape[0], factor, shape[1], factor).mean(axis=(2, 4))
    _, green, red, nir = means
    ndvi = (nir - red) / (nir + red + 1e-9)
    ndwi = (green - nir) / (green + nir + 1e-9)
    return np.where(ndwi > 0, 0, np.where(ndvi > 0.35, 1, 2))


def kmeans(x: np.ndarray, k: int, seed: int = 0, steps: int = 50) -> np.ndarray:
    """Labels of x (n, d) after k-means++ seeding and Lloyd steps."""
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    for _ in range(k - 1):
        d = np.min([((x - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(x[rng.choice(len(x), p=d / d.sum())])
    centres = np.array(centres)
    for _ in range(steps):
        labels = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.array([x[labels == j].mean(0) if (labels == j).any() else centres[j] for j in range(k)])
    return labels


def latents_and_classes(rel: str, codec) -> tuple[np.ndarray, np.ndarray, tuple[int, int], np.ndarray]:
    path = datasets.data_dir() / rel
    with tempfile.TemporaryDirectory() as tmp:
        extract_features(path, Path(tmp) / "latents.tif", codec)
        latents, meta = read_raster(Path(tmp) / "latents.tif")
    array, _ = read_raster(path)
    shape = (meta.height, meta.width)
    return latents.reshape(len(latents), -1).T, index_classes(array, codec.config.factor, shape).ravel(), shape, array


def normalized_mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    joint = np.histogram2d(a, b, bins=(a.max() + 1, b.max() + 1))[0] / a.size
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = (joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum()
    entropy = lambda p: -(p[p > 0] * np.log(p[p > 0])).sum()
    return float(2 * mi / (entropy(pa) + entropy(pb)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--city", default="hongkong_imgs_1")
    parser.add_argument("--model", default="vqvae-fpn-s2-10m")
    parser.add_argument("--clusters", type=int, default=6)
    parser.add_argument("--png", type=Path, default=Path(__file__).with_suffix(".png"))
    args = parser.parse_args()

    (rel,) = [r for r in datasets.S2_10M.validation if args.city in r]
    codec = codec_for_model(args.model)
    x, reference, shape, array = latents_and_classes(rel, codec)
    clusters = kmeans(x, args.clusters)
    # each cluster named after the index class most of its blocks have
    named = np.array([np.bincount(reference[clusters == j], minlength=3).argmax() for j in range(args.clusters)])
    print(f"{rel}: {shape[1]} x {shape[0]} latent pixels, {x.shape[1]} channels")
    print("index classes: " + ", ".join(f"{c} {np.mean(reference == i):.1%}" for i, c in enumerate(CLASSES)))
    print(f"k-means ({args.clusters} clusters) on latents: NMI with index classes "
          f"{normalized_mutual_information(reference, clusters):.3f}; majority-class agreement "
          f"{np.mean(named[clusters] == reference):.1%} (the largest class alone: {np.bincount(reference).max() / reference.size:.1%})")


    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rgb = np.clip(array[[2, 1, 0]].transpose(1, 2, 0) / np.percentile(array[:3], 99), 0, 1)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, image, title in ((axes[0], rgb, "original (B04 B03 B02)"),
                             (axes[1], reference.reshape(shape), "index classes: blue water, brown vegetation, cyan other"),
                             (axes[2], clusters.reshape(shape), "k-means on latents")):
        ax.imshow(image, cmap=None if image.ndim == 3 else "tab10", interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.png, dpi=90)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
