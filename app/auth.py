"""API keys (EOZ_API_KEYS): none configured = open service; else every /v1 call needs one.

A key comes in ``X-API-Key`` or as ``Authorization: Bearer <key>``. No key: 401; a key
that is not configured: 403. Keys are compared in constant time. The caller is known by
the key's sha256 (``Owner``): jobs are stored with it, never with the key, and a job is
visible only to the key that created it. An open service's caller is "".
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.errors import InvalidApiKeyError, MissingApiKeyError
from app.services import ServicesDep

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="one of EOZ_API_KEYS")
_bearer = HTTPBearer(auto_error=False, description="one of EOZ_API_KEYS as a bearer token")


def key_fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def require_api_key(header_key: Annotated[str | None, Depends(_header)],
                    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                    services: ServicesDep) -> str:
    """The caller's fingerprint, once its key is accepted."""
    keys = services.settings.api_keys
    if not keys:
        return ""
    given = header_key or (bearer.credentials if bearer else None)
    if not given:
        raise MissingApiKeyError("this service needs an API key: send X-API-Key or Authorization: Bearer")
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
        raise InvalidApiKeyError("the API key is not valid for this service")
    return key_fingerprint(given)


Owner = Annotated[str, Depends(require_api_key)]
