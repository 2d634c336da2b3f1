"""Reference (a) of B2: a plain aiosmtplib script pushing one pre-built message N times.

`python -m bench.smtpref --port P --count N --connections C --size BYTES [--seconds S]`

The Python SMTP client ceiling: the message is built once (stdlib `email`, CRLF), then C
connections each send mails back to back until N are accepted or S seconds pass. Prints
one JSON line: sent, seconds (connect included), CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from email import policy
from email.message import EmailMessage

import aiosmtplib

from bench.httpload import text_of


def build(size: int) -> bytes:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = "Bench User <bench@example.com>"
    message["To"] = "rcpt@example.com"
    message["Subject"] = "bench reference"
    message["Message-ID"] = "<reference@bench.local>"
    message.set_content(text_of(size))
    return message.as_bytes()


async def push(port: int, count: int, connections: int, data: bytes, seconds: float) -> dict:
    sent = 0
    issued = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def one() -> None:
        nonlocal sent, issued
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        await client.connect()
        try:
            while issued < count and time.perf_counter() < deadline:
                issued += 1
                await client.sendmail("bench@example.com", ["rcpt@example.com"], data)
                sent += 1
        finally:
            await client.quit()

    await asyncio.gather(*(one() for _ in range(connections)))
    return {
        "sent": sent,
        "seconds": time.perf_counter() - t0,
        "cpu_s": time.process_time() - cpu0,
        "message_bytes": len(data),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    result = asyncio.run(
        push(args.port, args.count, args.connections, build(args.size), args.seconds)
    )
    print(json.dumps(result))
