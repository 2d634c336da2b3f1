"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from mailgate.api.state import AppState
from mailgate.metrics import OLDEST_DUE_AGE, QUEUE_DEPTH
from mailgate.store.db import reader, utcnow
from mailgate.store.outbox import queue_stats

router = APIRouter(tags=["operations"])
STATUSES = ("queued", "deferred", "sent", "captured", "failed", "dead")


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable")
async def readyz(request: Request) -> JSONResponse:
    state: AppState = request.app.state.mailgate
    try:
        async with reader(state.engine).connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as error:
        return JSONResponse(
            {"status": "unavailable", "reason": type(error).__name__}, status_code=503
        )
    return JSONResponse({"status": "ready"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    state: AppState = request.app.state.mailgate
    counts, oldest = await queue_stats(state.engine)
    for status in STATUSES:
        QUEUE_DEPTH.labels(status=status).set(counts.get(status, 0))
    OLDEST_DUE_AGE.set((utcnow() - oldest).total_seconds() if oldest else 0)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
