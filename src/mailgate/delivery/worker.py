"""The delivery worker: claims due mails with a lease, delivers them, records the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Protocol

from mailgate.delivery.admission import AdmissionLimit
from mailgate.delivery.failures import plan_next
from mailgate.delivery.transport import MessageData, Outcome, Transport
from mailgate.mail.compose import compose_parts
from mailgate.metrics import ATTEMPTS, DELIVERY_LATENCY, FAILURES
from mailgate.store.db import utcnow
from mailgate.store.outbox import ClaimedMail, Finished, Outbox

log = logging.getLogger("mailgate.delivery")
MIN_CLAIM_AHEAD = 32


class Signer(Protocol):
    """Signs the final message bytes (DKIM) for the header From's domain, or returns them as-is."""

    def sign(self, data: bytes, domain: str) -> bytes: ...


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 16
    lease_seconds: float = 60.0
    retry_base_delay: float = 300.0
    retry_factor: float = 1.3
    retry_max_attempts: int = 18
    poll_interval: float = 0.5
    grace_seconds: float = 20.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    """One process's delivery loop; `wake()` lets the API in the same process skip the poll."""

    def __init__(
        self,
        outbox: Outbox,
        transport: Transport,
        settings: WorkerSettings,
        signer: Signer | None = None,
    ) -> None:
        self.outbox = outbox
        self.transport = transport
        self.settings = settings
        self.signer = signer
        self.name = worker_name()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._inflight: dict[asyncio.Task[None], int] = {}
        self._finished: list[tuple[Finished, asyncio.Future[None]]] = []
        self._has_finished = asyncio.Event()
        self.admission = AdmissionLimit(settings.concurrency)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop claiming; `run` then finishes in-flight mails within the grace period."""
        self._stopping.set()
        self._wake.set()

    async def _renew_leases(self) -> None:
        # Renew well before expiry: a live worker's mail must never look abandoned.
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            if self._inflight:
                try:
                    await self.outbox.extend(
                        self.name, list(self._inflight.values()), self.settings.lease_seconds
                    )
                except Exception:
                    log.exception("renewing leases failed; trying again")

    async def _checkpoints(self) -> None:
        # This worker's commits leave the WAL to grow; it is folded back in a thread.
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.outbox.checkpoint()
            except Exception:
                log.exception("checkpointing the database failed; trying again")

    async def run(self) -> None:
        renewer = asyncio.create_task(self._renew_leases())
        checkpointer = asyncio.create_task(self._checkpoints())
        recorder = asyncio.create_task(self._recorder())
        try:
            while not self._stopping.is_set():
                # Keep up to one batch waiting behind the deliveries in progress, so a slot
                # that frees never waits for a claim, and claims come in batches, not one by one.
                room = self._in_hand() - len(self._inflight)
                if room <= 0:
                    await self._wait_for_room()
                    continue
                if await self._claim(room) == room:
                    await self._wait_for_room()
                    continue
                await self._idle()
        finally:
            try:
                await self._drain()
            finally:
                renewer.cancel()
                checkpointer.cancel()
                recorder.cancel()
                self.outbox.close()

    async def _claim(self, room: int) -> int:
        """Claim up to `room` mails and start their deliveries; how many were claimed.

        Only the deliveries hold the mails: a batch kept here until the next claim would keep
        every big attachment in it alive that long (B4 measured a file held twice).
        """
        try:
            claimed = await self.outbox.claim(self.name, room, self.settings.lease_seconds)
        except Exception:
            log.exception("claiming mails failed; trying again")
            return 0
        for mail in claimed:
            task = asyncio.create_task(self._deliver(mail))
            self._inflight[task] = mail.id
            task.add_done_callback(self._done)
        return len(claimed)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._wake.set()

    def _in_hand(self) -> int:
        """How many mails to hold leased: twice the deliveries at once, and a batch at least.

        Each claim is a write transaction and a read: when the admission limit shrinks to a
        few deliveries at once, claims of a few mails each cost more than the mails.
        """
        return max(2 * self.admission.limit, MIN_CLAIM_AHEAD)

    async def _wait_for_room(self) -> None:
        """Until at most half of `_in_hand()` mails are in hand: room for a whole batch."""
        while 2 * len(self._inflight) > self._in_hand() and not self._stopping.is_set():
            self._wake.clear()
            await self._wake.wait()

    async def _idle(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)

    async def _drain(self) -> None:
        if not self._inflight:
            return
        mail_ids = dict(self._inflight)
        _, pending = await asyncio.wait(list(mail_ids), timeout=self.settings.grace_seconds)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # The lease goes back now, so another worker need not wait for it to expire.
            await self.outbox.release(mail_ids[task], self.name)

    async def _deliver(self, mail: ClaimedMail) -> None:
        async with self.admission:
            if self._stopping.is_set():
                # Claimed ahead but not started: give it back rather than start now.
                await self.outbox.release(mail.id, self.name)
                return
            attempt = mail.attempts + 1
            try:
                parts = compose_parts(mail.message)
                data: MessageData = parts
                if self.signer is not None:
                    domain = mail.message.sender.address.rpartition("@")[2]
                    data = self.signer.sign(b"".join(parts), domain)
            except Exception as error:
                log.exception("mail %s cannot be composed", mail.id)
                await self._record(mail, attempt, Outcome("failed", f"cannot compose: {error}"))
                return
            started = time.monotonic()
            outcome = await self.transport.deliver(mail.envelope_from, mail.envelope_to, data)
            if outcome.status == "sent":
                self.admission.observe(time.monotonic() - started)
            # Recorded before the slot frees: at most `concurrency` mails can ever be delivered
            # but unrecorded, which bounds the duplicates a crash can cause.
            await self._record(mail, attempt, outcome)

    async def _record(self, mail: ClaimedMail, attempt: int, outcome: Outcome) -> None:
        settings = self.settings
        plan = plan_next(
            outcome,
            attempt,
            utcnow(),
            settings.retry_base_delay,
            settings.retry_factor,
            settings.retry_max_attempts,
        )
        for event, _ in plan.events:
            ATTEMPTS.labels(outcome=event).inc()
            if event in ("deferred", "dead"):
                FAILURES.labels(cls="temporary").inc()
            elif event == "failed":
                FAILURES.labels(cls="permanent").inc()
            else:
                DELIVERY_LATENCY.observe((utcnow() - mail.created_at).total_seconds())
        if plan.status not in ("sent", "captured"):
            log.info("mail %s attempt %d: %s %s", mail.id, attempt, plan.status, plan.events[-1][1])
        finished = Finished(
            mail.id, attempt, plan.status, plan.events, plan.next_attempt_at, plan.envelope_to
        )
        try:
            lost = self.outbox.finish_now(self.name, [finished])
        except Exception:
            log.exception("recording the outcome of mail %s failed", mail.id)
            return
        if lost is not None:
            _warn_lost(lost)
            return
        done = asyncio.get_running_loop().create_future()
        self._finished.append((finished, done))
        self._has_finished.set()
        await done

    async def _recorder(self) -> None:
        """Group commit of outcomes that cannot be recorded at once (PostgreSQL, a busy lock).

        The sooner a delivered mail is recorded, the smaller the window in which a crash
        makes it go out twice; one commit per batch keeps that window short under load.
        """
        while True:
            await self._has_finished.wait()
            self._has_finished.clear()
            batch, self._finished = self._finished, []
            results = [f for f, _ in batch]
            try:
                try:
                    lost = await self.outbox.finish(self.name, results)
                except Exception as error:
                    # Once more, on a fresh connection: the database may have dropped this one.
                    log.warning(
                        "recording %d outcomes failed (%s); trying again", len(batch), error
                    )
                    lost = await self.outbox.finish(self.name, results)
            except Exception:
                # The leases expire and the mails are tried again: late, perhaps twice, not lost.
                log.exception("recording %d outcomes failed", len(batch))
            else:
                _warn_lost(lost)
            for _, done in batch:
                if not done.done():
                    done.set_result(None)


def _warn_lost(mail_ids: list[int]) -> None:
    for mail_id in mail_ids:
        log.warning("mail %s: lease lost before its outcome was recorded", mail_id)
