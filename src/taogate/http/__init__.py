"""The HTTP service: ``create_app(settings)`` returns the ASGI app (Starlette) to run on uvicorn."""

from taogate.http._app import create_app

__all__ = ["create_app"]
