"""How many deliveries may run at once: up to the configured concurrency, fewer when it only queues.

Every delivery shares one event loop. Once the loop is saturated, more deliveries in flight
add no throughput, only waiting: each relay reply then sits behind everyone else's work
before it is read and recorded. That wait is the window in which a crash sends a mail twice,
and in `serve` it is also the API's latency. So, as TCP Vegas does for packets, the limit
compares each SMTP transaction's time with the fastest one seen lately: the excess is
deliveries queueing in our own process, and the limit shrinks while that queue is long and
grows while it is short. Against a slow (WAN) relay the time is the relay's, not a queue, so
the limit stays at the configured concurrency.
"""

from __future__ import annotations

import asyncio
from collections import deque

from mailgate.metrics import DELIVERY_LIMIT

# Deliveries' worth of waiting tolerated in the loop: grow below ALPHA, shrink above BETA.
ALPHA = 2.0
BETA = 4.0
# The fastest transaction is remembered over this many samples, then forgotten, so a relay
# that became slower for good is not mistaken for a queue forever.
MIN_WINDOW = 512


def queued(limit: int, fastest: float, typical: float) -> float:
    """Vegas' estimate of how many of `limit` deliveries are waiting rather than working."""
    if typical <= 0:
        return 0.0
    return limit * max(0.0, 1.0 - fastest / typical)


def next_limit(limit: int, waiting: float, busy: bool, minimum: int, maximum: int) -> int:
    """One step: down while many deliveries wait, up while few wait and every slot is used."""
    if waiting > BETA:
        return max(minimum, limit - 1)
    if waiting < ALPHA and busy:
        return min(maximum, limit + 1)
    return limit


class AdmissionLimit:
    """A semaphore whose size follows the measured queueing (see the module docstring)."""

    def __init__(self, maximum: int, minimum: int = 2) -> None:
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self.limit = maximum
        self.active = 0
        self.typical = 0.0  # smoothed transaction time, seconds
        self._fastest = (float("inf"), float("inf"))  # this window's and the last one's
        self._samples = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        DELIVERY_LIMIT.set(self.limit)

    @property
    def fastest(self) -> float:
        return min(self._fastest)

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Admitted just as it was cancelled: pass the place on.
                self.active -= 1
                self._admit()
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.active -= 1
        self._admit()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def _admit(self) -> None:
        while self._waiters and self.active < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)

    def observe(self, seconds: float) -> None:
        """Take one relay-accepted transaction's duration (called while its slot is held)."""
        current, previous = self._fastest
        self._fastest = (min(current, seconds), previous)
        self._samples += 1
        if self._samples % MIN_WINDOW == 0:
            self._fastest = (float("inf"), self._fastest[0])
        self.typical = seconds if self.typical == 0 else 0.8 * self.typical + 0.2 * seconds
        # About once per round of every slot, as Vegas steps once per round trip.
        if self._samples % max(1, self.limit // 2):
            return
        waiting = queued(self.limit, self.fastest, self.typical)
        limit = next_limit(
            self.limit, waiting, self.active >= self.limit, self.minimum, self.maximum
        )
        if limit != self.limit:
            self.limit = limit
            DELIVERY_LIMIT.set(limit)
            self._admit()
