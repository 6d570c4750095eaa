"""The eoz HTTP API (FastAPI): routes, schemas, auth and errors over ``workers``."""

from app.main import create_app

__all__ = ["create_app"]
