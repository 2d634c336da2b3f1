"""SMTP transport: a pool of reused connections to one relay (opened by aiosmtplib)."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field

import aiosmtplib

from mailgate.config import SmtpSettings
from mailgate.delivery.failures import classify, partly_refused
from mailgate.delivery.session import Session
from mailgate.delivery.transport import MessageData, Outcome, pieces
from mailgate.metrics import SMTP_CONNECTIONS, SMTP_SESSIONS


@dataclass
class _Connection:
    session: Session
    mails: int = 0
    last_used: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class PoolLimits:
    """How many connections to keep, and how long and for how many mails to reuse one."""

    max_connections: int = 16
    max_mails_per_connection: int = 100
    # A connection idle longer than this is checked with NOOP before reuse…
    noop_after: float = 5.0
    # …and one idle longer than this is closed rather than trusted.
    idle_timeout: float = 60.0


class SmtpTransport:
    """Sends through one relay, reusing connections (RSET after a refused mail)."""

    def __init__(self, settings: SmtpSettings, limits: PoolLimits | None = None) -> None:
        if not settings.host:
            raise ValueError("SMTP transport needs a relay host")
        self.settings = settings
        self.limits = limits or PoolLimits()
        # Built once: loading the system's CA store costs tens of milliseconds per connection.
        self._tls_context = _tls_context(settings)
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(self.limits.max_connections)
        self.sessions_opened = 0

    def _tls_mode(self) -> tuple[bool, bool | None]:
        security = self.settings.security
        if security == "tls" or (security == "auto" and self.settings.port == 465):
            return True, False
        if security == "starttls":
            return False, True
        if security in ("opportunistic", "auto"):
            return False, None
        return False, False

    async def _open(self) -> _Connection:
        use_tls, start_tls = self._tls_mode()
        client = aiosmtplib.SMTP(
            hostname=self.settings.host,
            port=self.settings.port,
            username=self.settings.user,
            password=self.settings.password,
            local_hostname=self.settings.helo_name,
            timeout=self.settings.timeout,
            use_tls=use_tls,
            start_tls=start_tls,
            tls_context=self._tls_context,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPConnectError as error:
            # aiosmtplib wraps a certificate refused on implicit TLS; classify() needs it bare.
            if isinstance(error.__cause__, ssl.SSLCertVerificationError):
                raise error.__cause__ from None
            raise
        try:
            session = await Session.take_over(client)
        except BaseException:
            client.close()
            raise
        self.sessions_opened += 1
        SMTP_SESSIONS.inc()
        SMTP_CONNECTIONS.inc()
        return _Connection(session)

    async def _close(self, conn: _Connection, polite: bool = True) -> None:
        SMTP_CONNECTIONS.dec()
        try:
            if polite and conn.session.is_connected:
                await conn.session.quit()
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            conn.session.close()

    async def _acquire(self) -> tuple[_Connection, bool]:
        """An open connection and whether it was reused."""
        while self._idle:
            conn = self._idle.pop()
            idle = time.monotonic() - conn.last_used
            if idle > self.limits.idle_timeout or not conn.session.is_connected:
                await self._close(conn)
                continue
            if idle > self.limits.noop_after:
                try:
                    await conn.session.noop()
                except (aiosmtplib.SMTPException, OSError):
                    await self._close(conn, polite=False)
                    continue
            return conn, True
        return await self._open(), False

    async def _release(self, conn: _Connection) -> None:
        conn.last_used = time.monotonic()
        if conn.mails >= self.limits.max_mails_per_connection or not conn.session.is_connected:
            await self._close(conn)
        else:
            self._idle.append(conn)

    async def deliver(
        self, envelope_from: str, recipients: list[str], data: MessageData
    ) -> Outcome:
        async with self._slots:
            for _ in range(2):
                try:
                    conn, reused = await self._acquire()
                except Exception as error:
                    return classify(error)
                try:
                    refused, reply = await conn.session.sendmail(
                        envelope_from, recipients, pieces(data)
                    )
                except aiosmtplib.SMTPServerDisconnected as error:
                    await self._close(conn, polite=False)
                    # A relay may drop a pooled connection while it idles: one fresh try.
                    if reused:
                        continue
                    return classify(error)
                except (
                    aiosmtplib.SMTPResponseException,
                    aiosmtplib.SMTPRecipientsRefused,
                ) as error:
                    # The session is still good after a refusal (it sent RSET).
                    conn.mails += 1
                    await self._release(conn)
                    return classify(error)
                except Exception as error:
                    await self._close(conn, polite=False)
                    return classify(error)
                conn.mails += 1
                await self._release(conn)
                return partly_refused(reply, refused)
        return Outcome("deferred", "relay closed the connection")

    async def close(self) -> None:
        while self._idle:
            await self._close(self._idle.pop())


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext | None:
    """The client TLS context for STARTTLS or implicit TLS; None when TLS is never used."""
    if settings.security == "none":
        return None
    context = ssl.create_default_context()
    if settings.ca_file is not None:
        context.load_verify_locations(cafile=settings.ca_file)
    if not settings.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
