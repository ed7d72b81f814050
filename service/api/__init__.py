"""The REST API (FastAPI): one router per resource."""

from .app import create_app

__all__ = ["create_app"]
