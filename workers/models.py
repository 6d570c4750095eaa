"""Models as the service sees them: what each takes, which queue runs it, and their archive.

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

from eoz.codecs import LEARNED_CODECS, HyperpriorCodec, JPEG2000Codec, SpectralPartitionCodec, VQVAECodec
from eoz.container import Header
from eoz.errors import InputError, UnknownModelError
from eoz.raster import RasterMeta
from eoz.registry import ModelEntry, ModelStore
from workers.keys import MODEL_FILES, model_key
from workers.store import ObjectStore

JPEG2000 = JPEG2000Codec.codec_id
# The quality parameters each codec takes; psnr/mse/lambda/block are the fixed-quality
# controls of the scale hyperprior.
TAKES = {JPEG2000: ("psnr", "quality", "lossless", "klt"), VQVAECodec.codec_id: ("rate_weight",),
         HyperpriorCodec.codec_id: ("psnr", "mse", "lambda", "block"),
         SpectralPartitionCodec.codec_id: ("psnr", "mse", "lambda", "block")}
GPU_QUEUE, CPU_QUEUE = "gpu", "cpu"
QUEUES = (GPU_QUEUE, CPU_QUEUE)


def codec_of(model_id: str, version: str | None = None) -> str:
    """The codec id a model runs with; UnknownModelError when the store has no such model."""
    if model_id == JPEG2000:
        return JPEG2000
    return ModelStore().get(model_id, version).codec


def queue_for(codec: str) -> str:
    """Learned codecs go to GPU workers; the JPEG 2000 baseline needs only a CPU."""
    return CPU_QUEUE if codec == JPEG2000 else GPU_QUEUE


def codec_params(model_id: str, version: str | None, params: dict) -> dict:
    """The keyword arguments of codec_for_model, refusing parameters the model does not take."""
    codec = codec_of(model_id, version)
    given = {k: v for k, v in params.items() if v is not None and v is not False}
    takes = TAKES.get(codec)
    if takes is None:
        raise InputError(f"{model_id} uses codec {codec!r}, which this build cannot run")
    refused = sorted(set(given) - set(takes))
    if refused:
        offered = f"it takes {list(takes)}" if takes else "it runs at its trained rate and takes none"
        raise InputError(f"model {model_id!r} does not take the quality parameter(s) {refused}; {offered}")
    if codec in (HyperpriorCodec.codec_id, SpectralPartitionCodec.codec_id):
        from eoz.quality import QualityTarget

        peak = ModelStore().get(model_id, version).manifest.get("peak", QualityTarget.peak)
        return {"target": QualityTarget(psnr=given.get("psnr"), mse=given.get("mse"), lmbda=given.get("lambda"),
                                        block=given.get("block"), peak=peak)}
    if codec == VQVAECodec.codec_id:
        return {"rate_weight": given["rate_weight"]} if "rate_weight" in given else {}
    if not {"psnr", "quality", "lossless"} & set(given):
        raise InputError("jpeg2000 needs one of psnr (target PSNR, peak 10000), quality or lossless")
    return {"quality": given.get("quality"), "lossless": bool(given.get("lossless")),
            "klt": bool(given.get("klt")), "target_psnr": given.get("psnr")}


def check_bands(model_id: str, version: str | None, meta: RasterMeta) -> None:
    """Refuse a raster whose band count the model was not trained for (before any job runs)."""
    if codec_of(model_id, version) == JPEG2000:
        return
    bands = ModelStore().get(model_id, version).bands
    if meta.count != len(bands):
        raise InputError(f"model {model_id!r} expects {len(bands)} bands {bands}; "
                         f"the raster has {meta.count} {meta.band_names}")


def catalogue() -> list[dict]:
    """Every model the service can run, newest versions included, plus the JPEG 2000 baseline."""
    entries = [{**e.summary(), "parameters": list(TAKES.get(e.codec, ())),
                "queue": queue_for(e.codec)} for e in ModelStore().entries()]
    return entries + [{
        "model_id": JPEG2000, "version": None, "codec": JPEG2000, "bands": None,
        "description": "OpenJPEG JPEG 2000 baseline, any band count: psnr (target PSNR per tile, "
                       "peak 10000), quality (OpenJPEG level), lossless, klt (spectral KLT first)",
        "parameters": list(TAKES[JPEG2000]), "queue": CPU_QUEUE}]


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
