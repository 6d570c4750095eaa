"""The service's back half: job functions, the runners that run them, and the object store.

The API (``app``) and ``eoz worker`` share everything here; nothing here imports ``app``.
"""

from workers.runner import JobRecord, Runner, make_runner
from workers.settings import Settings
from workers.store import FilesystemStore, ObjectStore, S3Store, make_store

__all__ = ["FilesystemStore", "JobRecord", "ObjectStore", "Runner", "S3Store", "Settings",
           "make_runner", "make_store"]
