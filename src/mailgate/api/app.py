"""The ASGI application: routers, the case-insensitive compat path, and the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from mailgate import __version__
from mailgate.api import compat, health, reference
from mailgate.api.state import AppState
from mailgate.config import Settings
from mailgate.delivery.runtime import build_worker
from mailgate.store.acceptor import Acceptor
from mailgate.store.db import create_engine


class CompatPathMiddleware:
    """Rewrites any casing of the compat path to the one the router knows."""

    def __init__(self, app: ASGIApp, base_path: str) -> None:
        self.app = app
        self.base_path = base_path
        self.pattern = compat.compat_path_pattern(base_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match = self.pattern.match(scope["path"])
            if match:
                reference, item = match.groups()
                path = self.base_path + compat.CANONICAL.format(reference=reference, id=item)
                scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


def create_app(settings: Settings, run_worker: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        state = AppState(settings=settings, engine=engine, acceptor=Acceptor(engine, settings))
        app.state.mailgate = state
        worker_task = None
        worker_engine = None
        if run_worker:
            worker_engine = create_engine(settings.database_url, durable_commits=False)
            state.worker = build_worker(settings, worker_engine)
            worker_task = asyncio.create_task(state.worker.run())
        try:
            yield
        finally:
            if state.worker is not None and worker_task is not None:
                state.worker.stop()
                await worker_task
                await state.worker.transport.close()
            if worker_engine is not None:
                await worker_engine.dispose()
            state.acceptor.close()
            await engine.dispose()

    app = FastAPI(
        title="mailgate",
        version=__version__,
        description="Pleasanter-compatible email-sending API with a durable outbox.",
        lifespan=lifespan,
    )
    app.include_router(compat.build_router(settings.base_path))
    app.include_router(health.router)
    if os.environ.get("MAILGATE_REFERENCE_ENDPOINT") == "1":
        # Only for benchmarks, which measure the compat route against this in the same process.
        app.include_router(reference.router)
    app.add_middleware(CompatPathMiddleware, base_path=settings.base_path)
    return app


def app_factory() -> Any:
    """Entry for each HTTP process of `serve --workers N`: settings come from the environment."""
    from mailgate.config import load_settings

    return create_app(load_settings(), run_worker=os.environ.get(IN_PROCESS_DELIVERY) == "1")


# Tells the HTTP processes of `serve --workers N` whether each also delivers mail.
IN_PROCESS_DELIVERY = "MAILGATE_SERVE_DELIVERY"
