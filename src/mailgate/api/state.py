"""What the HTTP handlers share: settings, the engine and, in-process, the worker."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.config import Settings
from mailgate.delivery.worker import Worker


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    worker: Worker | None = None

    def wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()
