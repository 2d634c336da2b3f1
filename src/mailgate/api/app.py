"""The ASGI application: the compat route ahead of FastAPI, the other routers, the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from mailgate import __version__
from mailgate.api import compat, health, reference
from mailgate.api.state import AppState
from mailgate.config import Settings
from mailgate.delivery.runtime import build_worker
from mailgate.store.acceptor import Acceptor
from mailgate.store.db import create_engine


class MailgateApp:
    """Serves the compat path (any casing, under `{base}`) directly, everything else by FastAPI.

    On the send call's hot path FastAPI's routing, dependencies and middleware cost more than
    the send rules themselves (measured: 0.4 ms of the 1.7 ms a call took through FastAPI).
    """

    def __init__(self, api: FastAPI, base_path: str) -> None:
        self.api = api
        self.pattern = compat.compat_path_pattern(base_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match = self.pattern.match(scope["path"])
            if match:
                state: AppState = self.api.state.mailgate
                reference, id_text = match.groups()
                await compat.serve(state, reference, id_text, scope, receive, send)
                return
        await self.api(scope, receive, send)


def create_app(settings: Settings, run_worker: bool = True) -> MailgateApp:
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

    api = FastAPI(
        title="mailgate",
        version=__version__,
        description="Pleasanter-compatible email-sending API with a durable outbox.",
        lifespan=lifespan,
    )
    api.include_router(health.router)
    if os.environ.get("MAILGATE_REFERENCE_ENDPOINT") == "1":
        # Only for benchmarks, which measure the compat route against this in the same process.
        api.include_router(reference.router)
    _describe_compat_route(api, settings.base_path)
    return MailgateApp(api, settings.base_path)


def _describe_compat_route(api: FastAPI, base_path: str) -> None:
    """Add the compat route, which FastAPI does not serve, to the OpenAPI description."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = generate()
            path = base_path + compat.CANONICAL
            schema["paths"] = {path: compat.OPENAPI_PATH_ITEM, **schema["paths"]}
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def app_factory() -> Any:
    """Entry for each HTTP process of `serve --workers N`: settings come from the environment."""
    from mailgate.config import load_settings
    from mailgate.memory import return_big_blocks_to_the_os

    return_big_blocks_to_the_os()
    return create_app(load_settings(), run_worker=os.environ.get(IN_PROCESS_DELIVERY) == "1")


# Tells the HTTP processes of `serve --workers N` whether each also delivers mail.
IN_PROCESS_DELIVERY = "MAILGATE_SERVE_DELIVERY"
