"""Web applications for the CLI tests, written the way the docs teach (`--app module:app`).

None of them registers a backend at import: the Litestar app through `ObstorePlugin`,
the FastAPI app in its lifespan (`storage_lifespan`), the Starlette app through
`StorageExtension` with its own registry. Each creates its engine in its startup and
keeps it where such apps do: advanced-alchemy's `SQLAlchemyPlugin` (the Litestar app),
the lifespan state (FastAPI), `app.state.sessionmaker` (Starlette). Configured by:

* `SQLO_WEB_DIR`: the local-files directory of the `web` backend (prefix `uploads`);
* `SQLO_WEB_DB`: the database URL (deliberately not `DATABASE_URL`);
* `SQLO_WEB_TABLE`: the table of the `Document` model (`tests.e2e.cli_app.make_models`);
* `SQLO_WEB_MARKER`: a file each app writes `stopped` to when its shutdown runs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from litestar import Litestar
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool
from starlette.applications import Starlette

from sqlalchemy_obstore import BackendRegistry, ObstoreBackend
from sqlalchemy_obstore.contrib.litestar import ObstoreConfig, ObstorePlugin
from sqlalchemy_obstore.contrib.starlette import StorageExtension, storage_lifespan
from tests.e2e.cli_app import make_models

Base, Document = make_models(os.environ.get("SQLO_WEB_TABLE", "web_cli_documents"), "web")


def web_backend() -> ObstoreBackend:
    return ObstoreBackend("web", Path(os.environ["SQLO_WEB_DIR"]), prefix="uploads")


def _stopped() -> None:
    marker = os.environ.get("SQLO_WEB_MARKER")
    if marker:
        Path(marker).write_text("stopped")


@asynccontextmanager
async def _marker(app: Any) -> AsyncIterator[None]:
    print("this line must never reach the command's stdout")
    try:
        yield
    finally:
        _stopped()


def create_litestar_app() -> Litestar:
    """ObstorePlugin + advanced-alchemy's SQLAlchemyPlugin, as docs/how-to/web-litestar.md."""
    from advanced_alchemy.extensions.litestar import (
        EngineConfig,
        SQLAlchemyAsyncConfig,
        SQLAlchemyPlugin,
    )

    alchemy = SQLAlchemyPlugin(
        config=SQLAlchemyAsyncConfig(
            connection_string=os.environ["SQLO_WEB_DB"],
            metadata=Base.metadata,
            create_all=True,
            engine_config=EngineConfig(poolclass=NullPool),
        )
    )
    storage = ObstorePlugin(ObstoreConfig(backends=[web_backend()]))
    return Litestar(route_handlers=[], plugins=[storage, alchemy], lifespan=[_marker])


def create_fastapi_app() -> FastAPI:
    """Backends and engine in the lifespan; the engine in the lifespan state."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with storage_lifespan([web_backend()]):
            engine = create_async_engine(os.environ["SQLO_WEB_DB"])
            async with engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)
            try:
                yield {"engine": engine}
            finally:
                await engine.dispose()
                _stopped()

    return FastAPI(lifespan=lifespan)


REGISTRY = BackendRegistry()


def create_starlette_app() -> Starlette:
    """StorageExtension with its own registry; a sessionmaker in `app.state`."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_async_engine(os.environ["SQLO_WEB_DB"])
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        try:
            yield
        finally:
            await engine.dispose()
            _stopped()

    app = Starlette(lifespan=lifespan)
    StorageExtension([web_backend()], registry=REGISTRY).init_app(app)
    return app


def create_failing_app() -> Litestar:
    """Its startup fails."""

    @asynccontextmanager
    async def broken(app: Litestar) -> AsyncIterator[None]:
        raise RuntimeError("the configuration service is down")
        yield  # pragma: no cover

    return Litestar(route_handlers=[], lifespan=[broken])


def create_app_failing_at_shutdown() -> FastAPI:
    """Registers the backend and keeps its engine in app.state; its shutdown fails."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with storage_lifespan([web_backend()]):
            app.state.engine = create_async_engine(os.environ["SQLO_WEB_DB"])
            yield
            await app.state.engine.dispose()
            raise RuntimeError("could not flush the metrics")

    return FastAPI(lifespan=lifespan)


def create_app_without_database() -> FastAPI:
    """Registers the backend but keeps no engine anywhere."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with storage_lifespan([web_backend()]):
            yield

    return FastAPI(lifespan=lifespan)


def not_an_app() -> int:
    return 42


litestar_app = create_litestar_app()
fastapi_app = create_fastapi_app()
