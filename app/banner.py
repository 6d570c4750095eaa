"""What `eoz serve` says before uvicorn starts: where data goes, who runs the jobs, the models, the docs.

An operator starting the service (or reading its log later) should see at once which
configuration it picked up from the environment, without a request to it. Secrets stay out:
a Redis URL is shown without its password.
"""

from __future__ import annotations

from collections import defaultdict
from urllib.parse import urlsplit, urlunsplit

from eoz.registry import ModelStore
from workers.models import catalogue
from workers.settings import Settings

WILDCARDS = {"0.0.0.0": "localhost", "::": "localhost", "": "localhost"}


def banner(settings: Settings, host: str, port: int) -> str:
    """The lines `eoz serve` prints for these settings, listening on host:port."""
    rows = {"data": str(settings.data_dir.absolute()), "runner": _runner(settings), "store": _store(settings),
            "models": _models(), "docs": f"{_base_url(host, port)}/docs"}
    return "\n".join(["eoz serve", *(f"  {name:<8}{value}" for name, value in rows.items())])


def _runner(settings: Settings) -> str:
    if settings.redis_url:
        return f"Redis {_without_password(settings.redis_url)} (jobs run by `eoz worker` processes)"
    plural = "es" if settings.workers != 1 else ""
    return f"embedded, {settings.workers} worker process{plural} (EOZ_WORKERS)"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, parts.query, parts.fragment))


def _store(settings: Settings) -> str:
    if settings.s3_bucket:
        return f"S3 bucket {settings.s3_bucket} at {settings.s3_endpoint or 'AWS'}"
    return f"filesystem {(settings.data_dir / 'store').absolute()}"


def _models() -> str:
    """Each model id with its versions (the JPEG 2000 baseline has none), and the store they are in."""
    versions: dict[str, list[str]] = defaultdict(list)
    for entry in catalogue():
        versions[entry["model_id"]] += [entry["version"]] if entry["version"] else []
    listed = ", ".join(" ".join([model, "/".join(found)]).strip() for model, found in sorted(versions.items()))
    return f"{listed} (from {ModelStore().root.absolute()})"


def _base_url(host: str, port: int) -> str:
    host = WILDCARDS.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"
