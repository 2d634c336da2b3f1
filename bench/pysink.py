"""A small asyncio SMTP sink: accepts everything, can delay every reply, reports arrivals.

`python -m bench.pysink --port P [--delay SECONDS] [--record]`

Used where `smtp-sink` cannot serve: a relay that answers every command (and the greeting)
after a fixed delay (B2w: postfix's `smtp-sink -w/-W` only delays in whole seconds), a relay
that reports each message's Subject with its arrival time (B3), and the fallback sink when
postfix is not installed. It writes to stdout, flushed every 20 ms:

    S <epoch>              a session was opened
    M <epoch> [<subject>]  a message was accepted (end of DATA, just before the 250 reply)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

_EHLO = b"250-pysink\r\n250-8BITMIME\r\n250-SIZE 100000000\r\n250 SMTPUTF8\r\n"


class Output:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def flusher(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            self.flush()

    def flush(self) -> None:
        if self.lines:
            sys.stdout.write("".join(self.lines))
            sys.stdout.flush()
            self.lines.clear()


class Sink(asyncio.Protocol):
    def __init__(self, out: Output, delay: float, record: bool) -> None:
        self.out = out
        self.delay = delay
        self.record = record
        self.buf = bytearray()
        self.scan = 0
        self.in_data = False
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.out.lines.append(f"S {time.time():.6f}\n")
        self.reply(b"220 pysink ESMTP\r\n")

    def reply(self, data: bytes, close: bool = False) -> None:
        if self.delay:
            self.loop.call_later(self.delay, self._write, data, close)
        else:
            self._write(data, close)

    def _write(self, data: bytes, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if close:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.buf:
            if self.in_data:
                # A message may be the bare terminator right after 354.
                if self.buf.startswith(b".\r\n"):
                    end, skip = 0, 3
                else:
                    at = self.buf.find(b"\r\n.\r\n", self.scan)
                    if at < 0:
                        self.scan = max(0, len(self.buf) - 4)
                        return
                    end, skip = at + 2, at + 5
                message = bytes(self.buf[:end]) if self.record else b""
                del self.buf[:skip]
                self.scan = 0
                self.in_data = False
                self.accepted(message)
                continue
            at = self.buf.find(b"\r\n")
            if at < 0:
                return
            line = bytes(self.buf[:at])
            del self.buf[: at + 2]
            self.command(line)

    def accepted(self, message: bytes) -> None:
        now = time.time()
        subject = ""
        if self.record:
            head = message[: message.find(b"\r\n\r\n")]
            at = head.find(b"\nSubject: ")
            if at >= 0:
                end = head.find(b"\r\n", at + 1)
                subject = head[at + 10 : end if end >= 0 else len(head)].decode("ascii", "replace")
        self.out.lines.append(f"M {now:.6f} {subject}\n")
        self.reply(b"250 2.0.0 Ok: queued\r\n")

    def command(self, line: bytes) -> None:
        verb = line[:4].upper()
        if verb == b"EHLO":
            self.reply(_EHLO)
        elif verb == b"DATA":
            self.in_data = True
            self.scan = 0
            self.reply(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        elif verb == b"QUIT":
            self.reply(b"221 2.0.0 Bye\r\n", close=True)
        elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            self.reply(b"250 2.0.0 Ok\r\n")
        else:
            self.reply(b"502 5.5.2 Error: command not recognized\r\n")


async def main(port: int, delay: float, record: bool) -> None:
    out = Output()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Sink(out, delay, record), "127.0.0.1", port, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    flusher = asyncio.create_task(out.flusher())
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    await stop.wait()
    flusher.cancel()
    server.close()
    out.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every reply")
    parser.add_argument("--record", action="store_true", help="report each message's Subject")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.delay, args.record))
