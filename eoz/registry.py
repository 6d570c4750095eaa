"""Access to model_store: ids, versions and sha256 pinning of every artifact.

Layout: ``<root>/<model-id>/<version>/manifest.json`` and ``weights.safetensors``. The
manifest records the sha256 of the weights file and of each codebook; a weights file whose
hash differs from its manifest is refused, so an entry can never silently change under a
file that names it. Versions are integers as strings ("1", "2", ...); the highest is the
default.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from safetensors.numpy import load as load_safetensors

from eoz.errors import ModelMismatchError, UnknownModelError

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "model_store"
# ids and versions come from untrusted .eoz headers: plain names only, never paths
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise UnknownModelError(f"{kind} {value!r} is not a valid name "
                                "(letters, digits, '.', '_', '-')")
    return value


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelEntry:
    model_id: str
    version: str
    path: Path
    manifest: dict

    @property
    def codec(self) -> str:
        return self.manifest["codec"]

    @property
    def weights_sha256(self) -> str:
        return self.manifest["weights_sha256"]

    @property
    def bands(self) -> list[str]:
        return list(self.manifest["bands"])

    @property
    def dtypes(self) -> tuple[str, ...] | None:
        """The dtypes the model takes: its manifest's ``dtype`` (one name or a list); None means any."""
        declared = self.manifest.get("dtype")
        return None if declared is None else (declared,) if isinstance(declared, str) else tuple(declared)

    def summary(self) -> dict:
        """What `eoz models` and the API list for each model."""
        m = self.manifest
        return {"model_id": self.model_id, "version": self.version, "codec": self.codec,
                "description": m.get("description", ""), "bands": self.bands,
                "dtype": m.get("dtype"), "weights_sha256": self.weights_sha256,
                "codebook_sha256": m.get("codebook_sha256", []),
                "validation": m.get("validation", {})}

    def load_weights(self) -> dict:
        """Tensors of the weights file as numpy arrays, after checking its sha256."""
        data = (self.path / "weights.safetensors").read_bytes()
        actual = sha256_bytes(data)
        if actual != self.weights_sha256:
            raise ModelMismatchError(
                f"{self.model_id} version {self.version}: weights.safetensors has sha256 "
                f"{actual[:12]}, its manifest pins {self.weights_sha256[:12]}; the store is damaged")
        return load_safetensors(data)


class ModelStore:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root or os.environ.get("EOZ_MODEL_STORE", DEFAULT_ROOT))

    def entries(self) -> list[ModelEntry]:
        found = []
        for manifest in sorted(self.root.glob("*/*/manifest.json")):
            found.append(self._entry(manifest.parent.parent.name, manifest.parent.name))
        return found

    def versions(self, model_id: str) -> list[str]:
        folder = self.root / _check_name("model id", model_id)
        versions = [p.name for p in folder.iterdir() if (p / "manifest.json").is_file()] \
            if folder.is_dir() else []
        return sorted(versions, key=lambda v: (len(v), v))

    def get(self, model_id: str, version: str | None = None) -> ModelEntry:
        versions = self.versions(model_id)
        if not versions:
            known = sorted({e.model_id for e in self.entries()})
            raise UnknownModelError(f"no model {model_id!r} in the model store; available: {known}")
        if version is None:
            version = versions[-1]
        _check_name("version", version)
        if version not in versions:
            raise UnknownModelError(f"model {model_id!r} has no version {version!r}; it has {versions}")
        return self._entry(model_id, version)

    def newest(self) -> list[ModelEntry]:
        """The newest version of every model."""
        return [self.get(model_id) for model_id in sorted({e.model_id for e in self.entries()})]

    def pick(self, band_names: list[str], dtype: str, codec: str | None = None) -> tuple[ModelEntry, str]:
        """The model for a raster (``--model auto``) and why it was picked.

        A model fits when the raster has its bands (matched by description, in the model's
        order), or, for a raster whose bands carry no descriptions, the same band count;
        and the same dtype. A model whose manifest names no bands and no dtype (the wavelet
        codec's) fits any raster. Among fitting models, ``codec`` (when given) wins, then a
        match by name, then one by count, then a model for any raster. No fit: an error
        listing what is available.
        """
        generic = all(name == f"band{i}" for i, name in enumerate(band_names, start=1))
        fits = []
        for entry in self.newest():
            if entry.dtypes is not None and dtype not in entry.dtypes:
                continue
            if not entry.bands:
                fits.append((entry, 2, "it takes any band count and dtype"))
            elif band_names == entry.bands:
                fits.append((entry, 0, "its bands match the raster's band descriptions"))
            elif generic and len(band_names) == len(entry.bands):
                fits.append((entry, 1, f"the raster's {len(band_names)} bands have no descriptions; "
                                       f"the model takes {len(entry.bands)} ({', '.join(entry.bands)})"))
        if not fits:
            available = "; ".join(f"{e.model_id} ({e.codec}): {', '.join(e.bands)} {e.manifest.get('dtype')}"
                                  for e in self.newest())
            raise UnknownModelError(f"no model fits a {dtype} raster with bands {band_names}; available: "
                                    f"{available or 'none'}; jpeg2000 takes any raster")
        fits.sort(key=lambda f: (f[0].codec != codec, f[1], f[0].model_id))
        return fits[0][0], fits[0][2]

    def _entry(self, model_id: str, version: str) -> ModelEntry:
        path = self.root / model_id / version
        manifest = json.loads((path / "manifest.json").read_text())
        return ModelEntry(model_id, version, path, manifest)

    def publish(self, model_id: str, version: str, manifest: dict, weights: bytes) -> ModelEntry:
        """Write a new entry; refuses to overwrite an existing version (versions are immutable)."""
        path = self.root / _check_name("model id", model_id) / _check_name("version", version)
        if path.exists():
            raise FileExistsError(f"{path} exists: versions are immutable, publish a new one")
        path.mkdir(parents=True)
        (path / "weights.safetensors").write_bytes(weights)
        manifest = {**manifest, "model_id": model_id, "version": version,
                    "weights_sha256": sha256_bytes(weights)}
        (path / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return self._entry(model_id, version)
