"""The delivery limit follows the event loop: fewer deliveries while it lags, all while it idles."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.config import Settings
from mailgate.delivery.admission import AdmissionLimit, next_limit, queued
from mailgate.delivery.runtime import build_worker
from mailgate.delivery.worker import Worker
from tests.support.fill import enqueue_mails
from tests.support.relay import Relay


def test_queued_is_the_share_of_time_spent_waiting() -> None:
    assert queued(16, fastest=0.001, typical=0.001) == 0
    assert queued(16, fastest=0.001, typical=0.004) == 12  # 3 ms of every 4 are waiting
    assert queued(8, fastest=0.050, typical=0.055) == pytest.approx(8 / 11)


def test_next_limit_steps_down_while_many_wait_and_up_while_busy() -> None:
    assert next_limit(10, waiting=6, busy=True, minimum=2, maximum=16) == 9
    assert next_limit(2, waiting=6, busy=True, minimum=2, maximum=16) == 2
    assert next_limit(10, waiting=1, busy=True, minimum=2, maximum=16) == 11
    assert next_limit(16, waiting=1, busy=True, minimum=2, maximum=16) == 16
    # Not every slot in use: more room would change nothing.
    assert next_limit(10, waiting=1, busy=False, minimum=2, maximum=16) == 10
    # Between ALPHA and BETA: hold.
    assert next_limit(10, waiting=3, busy=True, minimum=2, maximum=16) == 10


def queueing(limit: AdmissionLimit, rounds: int = 200) -> None:
    """Transactions that take ten times the fastest one: deliveries queueing in the loop."""
    limit.observe(0.001)
    for _ in range(rounds):
        limit.observe(0.010)


def keeping_up(limit: AdmissionLimit, rounds: int = 200) -> None:
    for _ in range(rounds):
        limit.observe(0.001)


async def held_down(maximum: int) -> AdmissionLimit:
    """A limit with four deliveries running whose transactions show a long queue."""
    limit = AdmissionLimit(maximum=maximum)
    for _ in range(4):
        await limit.acquire()
    queueing(limit)
    # 9 ms of every 10 waiting: Vegas settles where fewer than BETA deliveries wait.
    assert limit.limit == 4
    return limit


async def test_a_lower_limit_holds_new_deliveries_until_one_ends() -> None:
    limit = await held_down(16)
    fifth = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0.01)
    assert not fifth.done()
    limit.release()
    await asyncio.wait_for(fifth, 1)
    assert limit.active == 4


async def test_raising_the_limit_admits_waiters_and_cancelled_waiters_keep_no_slot() -> None:
    limit = await held_down(8)
    cancelled = asyncio.create_task(limit.acquire())
    waiting = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0.01)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    keeping_up(limit)  # every slot busy and no queue: room grows
    await asyncio.wait_for(waiting, 1)
    assert limit.active == 5
    assert limit.limit == 6  # grows only while every slot is in use: one step past them


async def run_worker(
    worker: Worker, engine: AsyncEngine, relay: Relay, total: int, during: Callable[[], None]
) -> None:
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 60
    try:
        while len(relay.received) < total and time.monotonic() < deadline:
            during()
            await asyncio.sleep(0.005)
        assert len(relay.received) == total
    finally:
        worker.stop()
        await task
        await worker.transport.close()


async def test_a_slow_relay_keeps_every_connection_busy(
    engine: AsyncEngine, make_settings: Callable[..., Settings], relay: Relay
) -> None:
    # A WAN relay: the loop idles while replies take their time, so the limit must not fall.
    relay.handler.delay = 0.05
    await enqueue_mails(engine, 120)
    settings = make_settings(
        MAILGATE_SMTP_HOST="127.0.0.1",
        MAILGATE_SMTP_PORT=str(relay.port),
        MAILGATE_DELIVERY_CONCURRENCY="8",
    )
    worker = build_worker(settings, engine)
    lowest = [worker.admission.limit]
    await run_worker(worker, engine, relay, 120, lambda: lowest.append(worker.admission.limit))
    assert min(lowest) == 8


async def test_a_fast_local_relay_needs_fewer_deliveries_at_once(
    engine: AsyncEngine, make_settings: Callable[..., Settings], relay: Relay
) -> None:
    # On loopback the relay answers at once and the loop is the bottleneck: sixteen
    # deliveries would only queue behind each other, so fewer run.
    await enqueue_mails(engine, 1000)
    settings = make_settings(MAILGATE_SMTP_HOST="127.0.0.1", MAILGATE_SMTP_PORT=str(relay.port))
    worker = build_worker(settings, engine)
    seen = [worker.admission.limit]
    await run_worker(worker, engine, relay, 1000, lambda: seen.append(worker.admission.limit))
    assert seen[0] == 16
    assert min(seen) <= 8, seen
