"""Models as the service sees them: the catalogue and their archive (eoz.resolve maps options).

A compress job copies the model version it used into the object store under
``models/<weights sha256>/`` (once per version: the manifest is written last and its
presence means complete). A decompress job decodes with the local model store when it
holds the pinned version, and otherwise fetches that version back from the archive into
a local cache, so files stay decodable after model_store has moved on.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from eoz.codecs import LEARNED_CODECS
from eoz.container import Header
from eoz.errors import InputError, UnknownModelError
from eoz.registry import ModelEntry, ModelStore
from eoz.resolve import JPEG2000, JPEG2000_DTYPES, honoured, queue_for
from workers.keys import MODEL_FILES, model_key
from workers.store import ObjectStore


def catalogue() -> list[dict]:
    """Every model the service can run, newest versions included, plus the JPEG 2000 baseline."""
    entries = [{**e.summary(), "parameters": list(honoured(e.codec)),
                "queue": queue_for(e.codec)} for e in ModelStore().entries()]
    return entries + [{
        "model_id": JPEG2000, "version": None, "codec": JPEG2000, "bands": None,
        "description": "OpenJPEG JPEG 2000 baseline, any band count: psnr (target PSNR per tile at the "
                       "peak: 255 for uint8, else 10000), quality (OpenJPEG level), lossless (the only "
                       "bit-exact codec), klt (spectral KLT first)",
        "dtype": list(JPEG2000_DTYPES), "parameters": list(honoured(JPEG2000)), "queue": queue_for(JPEG2000)}]


def archive_model(store: ObjectStore, entry: ModelEntry) -> None:
    """Keep the model version in the object store, once per weights sha256."""
    sha = entry.weights_sha256
    if store.exists(model_key(sha, "manifest.json")):
        return
    for name in MODEL_FILES:
        store.put_file(model_key(sha, name), entry.path / name)


def _matches_local(header: Header) -> bool:
    try:
        entry = ModelStore().get(header.model_id, header.model_version)
    except UnknownModelError:
        return False
    return entry.weights_sha256 == header.weights_sha256


def check_decodable(header: Header, store: ObjectStore) -> None:
    """Refuse, before queueing, a file whose pinned model is neither local nor archived."""
    if header.codec == JPEG2000 or _matches_local(header):
        return
    if header.codec not in LEARNED_CODECS:
        raise InputError(f"the file uses codec {header.codec!r}, which this build cannot decode")
    try:
        archived = store.exists(model_key(str(header.weights_sha256), "manifest.json"))
    except ValueError:
        archived = False
    if not archived:
        raise UnknownModelError(
            f"the file pins model {header.model_id!r} version {header.model_version!r} "
            f"(weights {str(header.weights_sha256)[:12]}), which is neither in the model store "
            "nor archived in the object store")


def pinned_model_store(header: Header, store: ObjectStore, cache_dir: Path) -> ModelStore:
    """A model store holding the version the file pins: the local one, or one fetched from the archive."""
    if header.codec == JPEG2000 or _matches_local(header):
        return ModelStore()
    check_decodable(header, store)
    sha = str(header.weights_sha256)
    root = cache_dir / sha
    if not root.is_dir():
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{sha}.", dir=cache_dir))
        try:
            for name in MODEL_FILES:
                store.get_file(model_key(sha, name), staging / name)
            fetched = ModelStore(staging / "store").publish(
                header.model_id, header.model_version,
                json.loads((staging / "manifest.json").read_text()),
                (staging / "weights.safetensors").read_bytes())
            if fetched.weights_sha256 != sha:
                raise UnknownModelError(f"the archived model under models/{sha[:12]} is damaged: "
                                        f"its weights hash to {fetched.weights_sha256[:12]}")
            try:
                os.rename(staging / "store", root)  # atomic; another worker may have won the race
            except OSError:
                if not root.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ModelStore(root)
