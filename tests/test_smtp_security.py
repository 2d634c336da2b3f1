"""SmtpTransport against real aiosmtpd relays: STARTTLS, implicit TLS, AUTH and pool limits."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop
from aiosmtpd.smtp import AuthResult, LoginPassword

from mailgate.config import SmtpSettings, load_settings
from mailgate.delivery.runtime import build_transport
from mailgate.delivery.smtp import PoolLimits, SmtpTransport
from mailgate.delivery.transport import Outcome
from tests.support.relay import Relay

MAIL = b"From: app@example.com\r\nTo: user@example.org\r\nSubject: test\r\n\r\nhello\r\n"
USER = "mailgate@example.com"
PASSWORD = "s3cret-Pa55word"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """The relay's side: a certificate for 127.0.0.1 issued by the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def starttls_relay(server_tls: ssl.SSLContext) -> Iterator[Relay]:
    with Relay(tls_context=server_tls, require_starttls=True) as relay:
        yield relay


@pytest.fixture
def tls_relay(server_tls: ssl.SSLContext) -> Iterator[Relay]:
    with Relay(ssl_context=server_tls) as relay:
        yield relay


def transport(relay: Relay, limits: PoolLimits | None = None, **smtp: Any) -> SmtpTransport:
    return SmtpTransport(SmtpSettings(host="127.0.0.1", port=relay.port, timeout=5, **smtp), limits)


async def send(relay: Relay, **smtp: Any) -> Outcome:
    """One mail over a fresh transport, closed afterwards."""
    smtp_transport = transport(relay, **smtp)
    try:
        return await smtp_transport.deliver("app@example.com", ["user@example.org"], MAIL)
    finally:
        await smtp_transport.close()


def assert_certificate_refused(outcome: Outcome, relay: Relay) -> None:
    assert outcome.status == "deferred"
    assert outcome.detail is not None
    assert outcome.detail.startswith("TLS certificate verification failed: ")
    assert "unable to get local issuer certificate" in outcome.detail
    assert relay.received == []


@pytest.mark.parametrize(
    ("verify", "with_ca"), [(True, True), (False, False)], ids=["verified", "unverified"]
)
async def test_starttls_delivers(
    starttls_relay: Relay, ca_file: Path, verify: bool, with_ca: bool
) -> None:
    outcome = await send(
        starttls_relay,
        security="starttls",
        verify_certificate=verify,
        ca_file=ca_file if with_ca else None,
    )

    assert outcome.status == "sent"
    assert [r.data for r in starttls_relay.received] == [MAIL]


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_tls_sessions_reuse_connections_on_uvloop(
    tls_relay: Relay, starttls_relay: Relay, ca_file: Path, security: str
) -> None:
    """mailgate runs on uvloop, whose TLS transports the pooled session takes over."""
    relay = tls_relay if security == "tls" else starttls_relay

    async def three_mails() -> list[Outcome]:
        smtp_transport = transport(relay, security=security, ca_file=ca_file)
        try:
            return [
                await smtp_transport.deliver("app@example.com", ["user@example.org"], MAIL)
                for _ in range(3)
            ]
        finally:
            await smtp_transport.close()

    outcomes = uvloop.run(three_mails())
    assert [o.status for o in outcomes] == ["sent"] * 3
    assert [r.data for r in relay.received] == [MAIL] * 3
    # One connection for the three (the relay counts EHLOs: STARTTLS greets twice).
    assert relay.handler.sessions == (1 if security == "tls" else 2)


async def test_starttls_refuses_an_unknown_certificate(starttls_relay: Relay) -> None:
    outcome = await send(starttls_relay, security="starttls")

    assert_certificate_refused(outcome, starttls_relay)


@pytest.mark.parametrize(
    ("verify", "with_ca"), [(True, True), (False, False)], ids=["verified", "unverified"]
)
async def test_implicit_tls_delivers(
    tls_relay: Relay, ca_file: Path, verify: bool, with_ca: bool
) -> None:
    outcome = await send(
        tls_relay, security="tls", verify_certificate=verify, ca_file=ca_file if with_ca else None
    )

    assert outcome.status == "sent"
    assert [r.data for r in tls_relay.received] == [MAIL]


async def test_implicit_tls_refuses_an_unknown_certificate(tls_relay: Relay) -> None:
    outcome = await send(tls_relay, security="tls")

    assert_certificate_refused(outcome, tls_relay)


async def test_plain_connection_to_a_relay_requiring_starttls_is_refused(
    starttls_relay: Relay,
) -> None:
    outcome = await send(starttls_relay, security="none")

    assert outcome == Outcome("failed", "530 Must issue a STARTTLS command first")
    assert starttls_relay.received == []


class Authenticator:
    """Accepts USER with PASSWORD; remembers the mechanisms clients used."""

    def __init__(self) -> None:
        self.mechanisms: list[str] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.mechanisms.append(mechanism)
        valid = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        # handled=False: aiosmtpd answers a failure with its own 535.
        return AuthResult(success=valid, handled=False)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_auth_delivers(server_tls: ssl.SSLContext, ca_file: Path, mechanism: str) -> None:
    authenticator = Authenticator()
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    with Relay(
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
        auth_exclude_mechanism=[other],
    ) as relay:
        outcome = await send(
            relay, security="starttls", ca_file=ca_file, user=USER, password=PASSWORD
        )

    assert outcome.status == "sent"
    assert authenticator.mechanisms == [mechanism]
    assert len(relay.received) == 1


async def test_auth_failure_is_permanent_and_never_shows_the_password(
    server_tls: ssl.SSLContext, ca_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    authenticator = Authenticator()
    with Relay(tls_context=server_tls, require_starttls=True, authenticator=authenticator) as relay:
        outcome = await send(
            relay, security="starttls", ca_file=ca_file, user=USER, password=PASSWORD + "-old"
        )

    assert outcome == Outcome("failed", "535 5.7.8 Authentication credentials invalid")
    # aiosmtplib tries each mechanism the relay offers before giving up.
    assert sorted(authenticator.mechanisms) == ["LOGIN", "PLAIN"]
    assert relay.received == []
    assert caplog.records, "the relay and client logged the session"
    assert PASSWORD not in caplog.text


async def test_one_session_per_mail_with_max_one_mail_per_connection(relay: Relay) -> None:
    smtp_transport = transport(relay, PoolLimits(max_mails_per_connection=1))
    try:
        for _ in range(5):
            outcome = await smtp_transport.deliver("app@example.com", ["user@example.org"], MAIL)
            assert outcome.status == "sent"
    finally:
        await smtp_transport.close()

    assert len(relay.received) == 5
    assert relay.handler.sessions == 5


async def test_sequential_mails_share_one_session_by_default(relay: Relay) -> None:
    smtp_transport = transport(relay)
    try:
        for _ in range(50):
            outcome = await smtp_transport.deliver("app@example.com", ["user@example.org"], MAIL)
            assert outcome.status == "sent"
    finally:
        await smtp_transport.close()

    assert len(relay.received) == 50
    assert relay.handler.sessions == 1


async def test_a_connection_idle_past_the_timeout_is_replaced(relay: Relay) -> None:
    smtp_transport = transport(relay, PoolLimits(idle_timeout=0.05))
    try:
        await smtp_transport.deliver("app@example.com", ["user@example.org"], MAIL)
        await smtp_transport.deliver("app@example.com", ["user@example.org"], MAIL)
        await asyncio.sleep(0.1)
        await smtp_transport.deliver("app@example.com", ["user@example.org"], MAIL)
    finally:
        await smtp_transport.close()

    assert len(relay.received) == 3
    assert relay.handler.sessions == 2


def test_pool_limits_come_from_the_settings(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "MAILGATE_SMTP_HOST": "relay.example",
            "MAILGATE_SMTP_MAX_MAILS_PER_CONNECTION": "1",
            "MAILGATE_SMTP_IDLE_TIMEOUT": "15",
        },
        data_dir=tmp_path,
    )

    smtp_transport = build_transport(settings, concurrency=4)

    assert isinstance(smtp_transport, SmtpTransport)
    assert smtp_transport.limits == PoolLimits(
        max_connections=4, max_mails_per_connection=1, idle_timeout=15.0
    )
