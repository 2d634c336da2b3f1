"""One relay connection after its handshake: mail transactions, pipelined where offered.

aiosmtplib opens the connection (TLS, STARTTLS, EHLO, AUTH); then this protocol takes the
transport over. aiosmtplib sends each command and waits for its reply, so a mail costs four
round trips (MAIL, RCPT, DATA, the message), each a wakeup of the event loop and two system
calls; its reply parser also drops replies that arrive together, so it cannot pipeline.
With PIPELINING (RFC 2920, offered by Postfix, Exim, aiosmtpd and most relays) MAIL, every
RCPT and DATA go in one write and their replies come back together: two round trips.
The message is written from its composed pieces, dot-stuffed one by one under flow control
(aiosmtplib copied a whole message three times and buffered all of it at once).
Errors are aiosmtplib's exception types, so failures are classified in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable, Sequence

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.email import quote_address

from mailgate.mail.compose import Pieces

_MAX_LINE = 8192  # aiosmtplib's limit for a reply line
_WRITE_SIZE = 64 * 1024
_ACCEPTED = (250, 251)  # RCPT: OK, or "will forward"


class Session(asyncio.Protocol):
    """Sends mails over one connection; one transaction at a time (the pool sees to that)."""

    def __init__(self, pipelining: bool, declare_size: bool, timeout: float | None) -> None:
        self.pipelining = pipelining
        self.declare_size = declare_size
        self.timeout = timeout
        self._transport: asyncio.WriteTransport | None = None
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: Exception | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    @classmethod
    async def take_over(cls, client: aiosmtplib.SMTP) -> Session:
        """Continue on the connection `client` has opened (and logged in on, if configured)."""
        if client.is_ehlo_or_helo_needed:
            # Without TLS or AUTH, aiosmtplib leaves the greeting to the first mail; as it
            # would, fall back to HELO for a relay that refuses EHLO.
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                if not client.is_connected:
                    raise
                await client.helo()
        protocol = client.protocol
        transport = protocol.transport if protocol is not None else None
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        session = cls(
            pipelining=client.supports_extension("pipelining"),
            declare_size=client.supports_extension("size"),
            timeout=client.timeout,
        )
        session._transport = transport  # type: ignore[assignment]
        transport.set_protocol(session)
        return session

    @property
    def is_connected(self) -> bool:
        return (
            self._lost is None and self._transport is not None and not self._transport.is_closing()
        )

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while (reply := self._parse()) is not None:
                self._replies.append(reply)
        except aiosmtplib.SMTPResponseException as error:
            self._fail(error)
            return
        if len(self._buffer) > _MAX_LINE:
            self._fail(aiosmtplib.SMTPResponseException(-1, "Response too long"))
            return
        self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._fail(error)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # Transactions

    async def sendmail(
        self, sender: str, recipients: Sequence[str], data: Pieces
    ) -> tuple[dict[str, SMTPResponse], str]:
        """Send one mail: the refused recipients (if some were accepted) and the final reply."""
        mail = f"MAIL FROM:{quote_address(sender)}"
        if self.declare_size:
            mail += f" SIZE={data.size}"
        commands = [mail] + [f"RCPT TO:{quote_address(r)}" for r in recipients] + ["DATA"]
        lines = [f"{command}\r\n".encode("ascii") for command in commands]
        if self.pipelining:
            self._write(b"".join(lines))
            replies = await self._read(len(lines))
        else:
            replies = []
            for line in lines[:-1]:
                self._write(line)
                replies += await self._read(1)
                if replies[0].code != 250:
                    break
            # DATA only once MAIL and some RCPT succeeded, as aiosmtplib's sendmail does.
            if replies[0].code == 250 and any(r.code in _ACCEPTED for r in replies[1:]):
                self._write(lines[-1])
                replies += await self._read(1)
        if replies[0].code != 250:
            await self._reset()
            raise aiosmtplib.SMTPSenderRefused(replies[0].code, replies[0].message, sender)
        refused = [
            aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
            for recipient, reply in zip(recipients, replies[1:], strict=False)
            if reply.code not in _ACCEPTED
        ]
        start = replies[-1] if len(replies) == len(lines) else None
        if len(refused) == len(recipients):
            if start is not None and start.code == 354:
                # A relay that opened DATA with no recipient gets an empty message, then RSET.
                self._write(b".\r\n")
                await self._read(1)
            await self._reset()
            raise aiosmtplib.SMTPRecipientsRefused(refused)
        assert start is not None
        if start.code != 354:
            await self._reset()
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        await self._write_message(data)
        (reply,) = await self._read(1)
        if reply.code != 250:
            await self._reset()
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return {e.recipient: SMTPResponse(e.code, e.message) for e in refused}, reply.message

    async def noop(self) -> None:
        self._write(b"NOOP\r\n")
        (reply,) = await self._read(1)
        if reply.code != 250:
            raise aiosmtplib.SMTPResponseException(reply.code, reply.message)

    async def quit(self) -> None:
        self._write(b"QUIT\r\n")
        await self._read(1)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def _write_message(self, data: Iterable[bytes]) -> None:
        """The pieces dot-stuffed (RFC 5321 4.5.2), one write per 64 KB, then the end mark."""
        line_start = True
        batch: list[bytes] = []
        size = 0
        for piece in data:
            if not piece:
                continue
            if line_start and piece.startswith(b"."):
                batch.append(b".")
            # bytes.replace returns the piece itself when there is no dot to stuff.
            batch.append(piece.replace(b"\r\n.", b"\r\n.."))
            size += len(piece)
            line_start = piece.endswith(b"\n")
            if size >= _WRITE_SIZE:
                self._write(b"".join(batch))
                batch, size = [], 0
                await self._drain()
        batch.append(b".\r\n" if line_start else b"\r\n.\r\n")
        self._write(b"".join(batch))

    async def _reset(self) -> None:
        """RSET after a refusal, so the session serves the next mail; a failure shows there."""
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            self._write(b"RSET\r\n")
            await self._read(1)

    def _write(self, data: bytes) -> None:
        if self._lost is not None:
            raise self._lost
        assert self._transport is not None
        self._transport.write(data)

    async def _drain(self) -> None:
        """Wait while the socket buffer is full; a relay that stops reading times out here."""
        if self._lost is not None:
            raise self._lost
        if self._paused:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.timeout):
                    await self._drained
            except TimeoutError:
                raise aiosmtplib.SMTPTimeoutError("Timed out sending the message") from None

    async def _read(self, count: int) -> list[SMTPResponse]:
        try:
            async with asyncio.timeout(self.timeout):
                while len(self._replies) < count:
                    if self._lost is not None:
                        raise self._lost
                    self._waiter = asyncio.get_running_loop().create_future()
                    await self._waiter
        except TimeoutError:
            raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from None
        return [self._replies.popleft() for _ in range(count)]

    def _parse(self) -> SMTPResponse | None:
        """One whole reply (multi-line ones joined by newlines) off the buffer, if there is one."""
        offset = 0
        message: list[bytes] = []
        while (end := self._buffer.find(b"\n", offset)) != -1:
            line = bytes(self._buffer[offset : end + 1])
            if len(line) > _MAX_LINE:
                raise aiosmtplib.SMTPResponseException(-1, "Response too long")
            try:
                code = int(line[:3])
            except ValueError:
                text = line.decode("utf-8", "ignore")
                raise aiosmtplib.SMTPResponseException(
                    -1, f"Malformed SMTP response line: {text}"
                ) from None
            offset = end + 1
            message.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                del self._buffer[:offset]
                return SMTPResponse(code, b"\n".join(message).decode("utf-8", "surrogateescape"))
        return None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._lost is None:
            self._lost = error
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(error)
            self._drained.exception()  # retrieved: nobody may be waiting for it
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
