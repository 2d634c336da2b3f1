"""The SMTP session: pipelined commands, refusals, and DATA written from composed pieces."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from mailgate.config import SmtpSettings
from mailgate.delivery.session import Session
from mailgate.delivery.smtp import SmtpTransport
from mailgate.mail.addresses import Mailbox
from mailgate.mail.compose import Attachment, Message, Pieces, compose, compose_parts
from tests.support.relay import RecordingHandler, Relay


def transport(relay: Relay) -> SmtpTransport:
    return SmtpTransport(SmtpSettings(host="127.0.0.1", port=relay.port, timeout=10))


def big_message(size: int) -> Message:
    return Message(
        message_id="<big@example.com>",
        date=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        sender=Mailbox("App", "app@example.com"),
        to=[Mailbox("", "user@example.org")],
        cc=[],
        subject="a big file",
        body="see the attachment\n.a line with a leading dot\n",
        attachments=[Attachment("big.bin", "application/octet-stream", os.urandom(size))],
    )


async def test_dots_at_line_starts_arrive_intact_across_pieces() -> None:
    pieces = [
        b"Subject: dots\r\n\r\n",
        b".starts a piece\r\n",
        b"middle\r\n.line\r\n..two dots\r\n",
        b"\r\n",
        b".\r\n",
        b"no line end at the very end",
    ]
    with Relay() as relay:
        smtp = transport(relay)
        try:
            outcome = await smtp.deliver(
                "app@example.com", ["user@example.org"], Pieces(tuple(pieces))
            )
        finally:
            await smtp.close()
        assert outcome.status == "sent", outcome
        # aiosmtpd undoes the dot-stuffing; the data must be exactly what was composed.
        assert relay.wait_for(1)[0].data == b"".join(pieces) + b"\r\n"


async def test_a_big_attachment_arrives_byte_for_byte() -> None:
    message = big_message(6 * 1024 * 1024)
    parts = compose_parts(message)
    blocks = list(parts)
    assert len(blocks) > 100  # the attachment really goes out in blocks
    assert all(block.endswith(b"\r\n") for block in blocks)
    assert parts.size == sum(map(len, blocks))
    with Relay() as relay:
        smtp = transport(relay)
        try:
            outcome = await smtp.deliver("app@example.com", ["user@example.org"], parts)
        finally:
            await smtp.close()
        assert outcome.status == "sent", outcome
        received = relay.wait_for(1)[0]
        assert received.data == compose(message)
        attachment = next(received.message().iter_attachments())
        assert attachment.get_content() == message.attachments[0].data


async def test_a_refusal_at_the_end_of_data_fails_the_mail_and_keeps_the_session() -> None:
    def refuse_big(envelope: Any) -> str | None:
        return "552 5.3.4 Message too big" if len(envelope.content) > 10_000 else None

    with Relay(RecordingHandler(data_reply=refuse_big)) as relay:
        smtp = transport(relay)
        try:
            refused = await smtp.deliver(
                "app@example.com", ["user@example.org"], compose_parts(big_message(20_000))
            )
            accepted = await smtp.deliver(
                "app@example.com", ["user@example.org"], b"Subject: small\r\n\r\nhi\r\n"
            )
        finally:
            await smtp.close()
        assert refused.status == "failed"
        assert refused.detail is not None and refused.detail.startswith("552")
        assert accepted.status == "sent", accepted
        assert [r.data for r in relay.wait_for(1)] == [b"Subject: small\r\n\r\nhi\r\n"]
        assert relay.handler.sessions == 1


async def test_the_size_is_declared_so_a_relay_refuses_before_the_data() -> None:
    parts = compose_parts(big_message(3000))
    with Relay(data_size_limit=2000) as relay:
        smtp = transport(relay)
        try:
            outcome = await smtp.deliver("app@example.com", ["user@example.org"], parts)
        finally:
            await smtp.close()
    assert outcome.status == "failed"
    assert outcome.detail is not None and outcome.detail.startswith("552"), outcome
    assert relay.received == []


@pytest.mark.parametrize("pipelining", [True, False])
async def test_refused_recipients_with_and_without_pipelining(pipelining: bool) -> None:
    handler = RecordingHandler(pipelining=pipelining, rcpt_replies={"bad@example.org": "550 No"})
    with Relay(handler) as relay:
        smtp = transport(relay)
        try:
            some = await smtp.deliver(
                "app@example.com", ["ok@example.org", "bad@example.org"], b"Subject: 1\r\n\r\n"
            )
            none = await smtp.deliver("app@example.com", ["bad@example.org"], b"Subject: 2\r\n\r\n")
            after = await smtp.deliver("app@example.com", ["ok@example.org"], b"Subject: 3\r\n\r\n")
        finally:
            await smtp.close()
        assert some.status == "sent" and some.detail is not None
        assert "<bad@example.org>: 550 No" in some.detail
        assert (none.status, none.detail) == ("failed", "<bad@example.org>: 550 No")
        assert after.status == "sent", after
        received = relay.wait_for(2)
        assert [(r.rcpt_tos, r.data) for r in received] == [
            (["ok@example.org"], b"Subject: 1\r\n\r\n"),
            (["ok@example.org"], b"Subject: 3\r\n\r\n"),
        ]
        assert relay.handler.sessions == 1


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_refused_sender_fails_the_mail_and_keeps_the_session(pipelining: bool) -> None:
    handler = RecordingHandler(pipelining=pipelining, mail_reply="550 5.7.1 Not allowed")
    with Relay(handler) as relay:
        smtp = transport(relay)
        try:
            refused = await smtp.deliver(
                "app@example.com", ["u@example.org"], b"Subject: 1\r\n\r\n"
            )
            handler.mail_reply = None
            accepted = await smtp.deliver(
                "app@example.com", ["u@example.org"], b"Subject: 2\r\n\r\n"
            )
        finally:
            await smtp.close()
        assert (refused.status, refused.detail) == ("failed", "550 5.7.1 Not allowed")
        assert accepted.status == "sent", accepted
        assert [r.data for r in relay.wait_for(1)] == [b"Subject: 2\r\n\r\n"]
        assert relay.handler.sessions == 1


def test_replies_are_read_whole_however_they_arrive() -> None:
    session = Session(pipelining=True, declare_size=False, timeout=1)
    # Three pipelined replies, the second multi-line, cut across packets anywhere.
    stream = b"250 2.1.0 Ok\r\n250-first\r\n250 second\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    for cut in (1, 7, 15, 30, len(stream) - 1):
        session.data_received(stream[:cut])
        session.data_received(stream[cut:])
        assert [tuple(r) for r in session._replies] == [
            (250, "2.1.0 Ok"),
            (250, "first\nsecond"),
            (354, "End data with <CR><LF>.<CR><LF>"),
        ]
        session._replies.clear()


async def test_a_relay_that_stops_reading_the_message_times_out() -> None:
    """The mail is deferred (tried again later), not stuck on a full socket buffer forever."""

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 stall ESMTP\r\n")
        while line := await reader.readline():
            command = line[:4].upper()
            if command == b"EHLO":
                writer.write(b"250-stall\r\n250 PIPELINING\r\n")
            elif command == b"DATA":
                writer.write(b"354 go on\r\n")
                await writer.drain()
                await asyncio.sleep(30)  # and never read the message
            elif command in (b"MAIL", b"RCPT"):
                writer.write(b"250 ok\r\n")
            await writer.drain()

    server = await asyncio.start_server(stalls, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    smtp = SmtpTransport(SmtpSettings(host="127.0.0.1", port=port, timeout=1))
    started = time.monotonic()
    try:
        outcome = await smtp.deliver(
            "app@example.com", ["u@example.org"], compose_parts(big_message(30 * 1024 * 1024))
        )
    finally:
        await smtp.close()
        server.close()
    assert outcome.status == "deferred", outcome
    assert outcome.detail is not None and "Timed out sending the message" in outcome.detail
    assert time.monotonic() - started < 10
