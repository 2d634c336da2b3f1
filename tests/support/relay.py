"""A real SMTP relay for tests: aiosmtpd on 127.0.0.1, recording what it accepts."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class RecordingHandler:
    """Accepts everything unless told otherwise; counts SMTP sessions."""

    received: list[Received] = field(default_factory=list)
    sessions: int = 0
    # address → SMTP reply for RCPT TO, e.g. "550 5.1.1 No such user"
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    # Called with the envelope at end of DATA; returns a reply to refuse, or None to accept.
    data_reply: Callable[[Any], str | None] | None = None
    delay: float = 0.0
    # SMTP reply for MAIL FROM, e.g. "550 5.7.1 Sender refused"
    mail_reply: str | None = None
    # Whether EHLO offers PIPELINING (aiosmtpd does by default).
    pipelining: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.sessions += 1
        if not self.pipelining:
            responses = [line for line in responses if "PIPELINING" not in line]
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.data_reply is not None:
            reply = self.data_reply(envelope)
            if reply:
                return reply
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 2.0.0 Ok: queued"


class Relay:
    """Starts and stops an aiosmtpd relay on a free loopback port."""

    def __init__(self, handler: RecordingHandler | None = None, **controller_args: Any) -> None:
        self.handler = handler or RecordingHandler()
        self.port = free_port()
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, **controller_args
        )

    def __enter__(self) -> Relay:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """Block until `count` messages arrived (or fail the test)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.handler.received) >= count:
                return self.handler.received
            time.sleep(0.02)
        raise AssertionError(f"relay got {len(self.handler.received)} mails, expected {count}")

    def wait_for_distinct(self, count: int, timeout: float) -> None:
        """Block until `count` different Subjects arrived (duplicates are not counted)."""
        deadline = time.monotonic() + timeout
        subjects: set[str] = set()
        parsed = 0
        while time.monotonic() < deadline:
            # Only mails that came since the last look are parsed: the relay shares this
            # process, and re-parsing thousands every poll would slow the run it observes.
            arrived = self.handler.received[parsed:]
            parsed += len(arrived)
            subjects.update(r.message()["Subject"] for r in arrived)
            if len(subjects) >= count:
                return
            time.sleep(0.2)
        raise AssertionError(
            f"relay has {len(self.handler.received)} mails, wanted {count} distinct"
        )
