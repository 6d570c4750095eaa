"""What a client may read of an error: its message without this host's file paths.

Errors raised deep in the library name the files they read (GDAL's messages, a scratch
file, the model store), which tells a client where the service keeps its data. Every
message that leaves the service, a problem's ``detail`` or a job's ``error``, passes
through ``redact``: a path under the data folder, the model store or the temporary folder
becomes ``<file>``.
"""

from __future__ import annotations

import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path

from eoz.registry import ModelStore

HIDDEN = "<file>"


@lru_cache(maxsize=8)
def _pattern(roots: tuple[str, ...]) -> re.Pattern:
    """Each root (longest first, so a root inside another is taken whole) and the rest of its path."""
    alternatives = "|".join(re.escape(r) for r in sorted(roots, key=len, reverse=True))
    return re.compile(f"(?:{alternatives})[^\\s'\":,;()]*")


def host_roots(data_dir: Path | None = None) -> tuple[str, ...]:
    """The folders whose paths a client must not see, as configured and as absolute paths;
    data_dir: the service's (default: the environment's, as a worker reads it)."""
    if data_dir is None:
        from workers.settings import Settings

        data_dir = Settings.model_fields["data_dir"].default
        data_dir = Path(os.environ.get("EOZ_DATA_DIR") or data_dir)
    folders = (data_dir, ModelStore().root, Path(tempfile.gettempdir()))
    return tuple(sorted({str(p) for folder in folders for p in (folder, folder.absolute())} - {"", ".", "/"}))


def redact(text: str, data_dir: Path | None = None) -> str:
    return _pattern(host_roots(data_dir)).sub(HIDDEN, text)
