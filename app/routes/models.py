"""GET /v1/models: what each model is for, its versions, sha256 pins and bands."""

from __future__ import annotations

from fastapi import APIRouter

from app.errors import problems
from app.schemas import ModelInfo
from workers.models import catalogue

router = APIRouter(tags=["models"])


@router.get("/models", response_model=list[ModelInfo], responses=problems(401, 403))
def list_models() -> list[ModelInfo]:
    """Every model version in the model store, and the JPEG 2000 baseline."""
    return [ModelInfo(**entry) for entry in catalogue()]
