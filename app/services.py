"""The parts every route uses, built once per app at startup and reached as a dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from workers.runner import Runner
from workers.settings import Settings
from workers.store import ObjectStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: ObjectStore
    runner: Runner


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
