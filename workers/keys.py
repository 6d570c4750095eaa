"""Key layout of the object store; the same keys under a folder or in an S3 bucket.

    uploads/<job>/input.tif          a GeoTIFF uploaded to compress, as received
    uploads/<job>/input.eoz          an .eoz uploaded to decompress, as received
    tmp/<job>/<attempt><suffix>      a result while it is written, under a key of its own per
                                     attempt (a stalled run and its re-run never touch each
                                     other's object); moved to results/ once complete
    results/<job>/output.eoz         a compress job's result
    results/<job>/output.tif         a decompress job's result (GeoTIFF or COG)
    models/<sha256>/manifest.json    the model version a stored .eoz pins, content-addressed by
    models/<sha256>/weights.safetensors  the sha256 of its weights and written once, so an
                                     archive decodes years later after model_store moved on

A key under results/ therefore exists only when its job finished; nothing else is ever
written there. Uploads are kept after their job (a job re-run after its worker died needs
its input); uploads/, tmp/ and results/ expire after EOZ_RETENTION_DAYS (``workers.cleanup``),
models/ never. Job ids are 32 hex digits made by the service, never taken from clients.
"""

from __future__ import annotations

import re
import uuid
from posixpath import splitext

from eoz.errors import InputError

# Keys that name S3 sources come from clients: plain relative paths only.
_KEY = re.compile(r"[A-Za-z0-9!_.*'()=+,;:@-][A-Za-z0-9!_.*'()=+,;:@/-]{0,1023}")
_JOB_ID = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

MODEL_FILES = ("weights.safetensors", "manifest.json")  # manifest last: it marks completeness
EXPIRING = ("uploads/", "tmp/", "results/")  # prefixes that EOZ_RETENTION_DAYS applies to
# .eoz has no registered media type: plain binary, named by its filename
MEDIA_TYPES = {".eoz": "application/octet-stream", ".tif": "image/tiff", ".json": "application/json"}


def new_job_id() -> str:
    return uuid.uuid4().hex


def is_job_id(value: str) -> bool:
    return bool(_JOB_ID.fullmatch(value))


def check_key(key: str) -> str:
    """A key that is a plain relative path: no '..', '.', empty or absolute segments."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or any(
            part in ("", ".", "..") for part in key.split("/")):
        raise InputError(f"{key!r} is not a valid object key (a relative path of plain names)")
    return key


def upload_key(job_id: str, suffix: str) -> str:
    return f"uploads/{job_id}/input{suffix}"


def result_key(job_id: str, suffix: str) -> str:
    return f"results/{job_id}/output{suffix}"


def temp_key(job_id: str, suffix: str) -> str:
    """A fresh key per call: each attempt of a job writes its own temporary object."""
    return f"tmp/{job_id}/{uuid.uuid4().hex}{suffix}"


def media_type(key: str) -> str:
    return MEDIA_TYPES.get(splitext(key)[1], "application/octet-stream")


def download_name(key: str) -> str:
    """The filename a client saves an object as: a result is named by its job."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "results" and is_job_id(parts[1]):
        return parts[1] + splitext(key)[1]
    return parts[-1]


def model_key(weights_sha256: str, name: str) -> str:
    if not _SHA256.fullmatch(weights_sha256) or name not in MODEL_FILES:
        raise ValueError(f"no model file {name!r} for sha256 {weights_sha256!r}")
    return f"models/{weights_sha256}/{name}"
