"""Wiring a worker from settings: the transport and the outbox it works on."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.config import Settings
from mailgate.delivery.dkim import build_signer
from mailgate.delivery.smtp import PoolLimits, SmtpTransport
from mailgate.delivery.transport import CaptureTransport, Transport
from mailgate.delivery.worker import Worker, WorkerSettings
from mailgate.store.outbox import Outbox


def build_transport(settings: Settings, concurrency: int) -> Transport:
    if settings.transport == "smtp":
        limits = PoolLimits(
            max_connections=concurrency,
            max_mails_per_connection=settings.smtp.max_mails_per_connection,
            idle_timeout=settings.smtp.idle_timeout,
        )
        return SmtpTransport(settings.smtp, limits)
    return CaptureTransport()


def build_worker(settings: Settings, engine: AsyncEngine, concurrency: int | None = None) -> Worker:
    concurrency = concurrency or settings.delivery_concurrency
    return Worker(
        Outbox(engine),
        build_transport(settings, concurrency),
        WorkerSettings(
            concurrency=concurrency,
            lease_seconds=settings.lease_seconds,
            retry_base_delay=settings.retry_base_delay,
            retry_factor=settings.retry_factor,
            retry_max_attempts=settings.retry_max_attempts,
        ),
        signer=build_signer(settings),
    )
