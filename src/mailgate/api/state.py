"""What the HTTP handlers share: settings, the engine and, in-process, the worker."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.config import Settings
from mailgate.delivery.worker import Worker
from mailgate.store.acceptor import Acceptor


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    acceptor: Acceptor
    worker: Worker | None = None

    def wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()
