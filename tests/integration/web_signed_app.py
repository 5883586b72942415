"""Minimal Litestar and Starlette apps serving HMAC-signed URLs of a local-files backend.

Run under a real uvicorn in a subprocess by `test_web_memory.py` (`--factory`
`tests.integration.web_signed_app:uvicorn_litestar` / `uvicorn_starlette`); the store
directory comes from `W1_STORE_DIR`. The backend key is `files`; URLs are signed with
`SECRET` (the test signs them itself) and served at `/_storage`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar
from starlette.applications import Starlette
from starlette.routing import Mount

from sqlalchemy_obstore import ObstoreBackend
from sqlalchemy_obstore.contrib.litestar import ObstoreConfig, ObstorePlugin
from sqlalchemy_obstore.contrib.starlette import storage_lifespan, storage_routes

SECRET = "memory-test-signing-secret-0123456789abcdef"
BACKEND = "files"


def _backend() -> ObstoreBackend:
    return ObstoreBackend(BACKEND, Path(os.environ["W1_STORE_DIR"]))


def uvicorn_litestar() -> Litestar:
    """`--factory` entry point: the Litestar plugin's route."""
    config = ObstoreConfig(backends=[_backend()], signing_secret=SECRET)
    return Litestar(route_handlers=[], plugins=[ObstorePlugin(config)])


def uvicorn_starlette() -> Starlette:
    """`--factory` entry point: the Starlette lifespan and router."""
    backend = _backend()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with storage_lifespan([backend], signing_secret=SECRET):
            yield

    return Starlette(
        routes=[Mount("/_storage", app=storage_routes(signing_secret=SECRET))], lifespan=lifespan
    )
