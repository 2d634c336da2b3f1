"""DKIM: a composed mail signed by DkimSigner, relayed by aiosmtpd, verifies with dkimpy."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailgate.config import DkimKey, SmtpSettings, load_settings
from mailgate.delivery.dkim import DkimSigner, build_signer
from mailgate.delivery.smtp import SmtpTransport
from mailgate.mail.addresses import Mailbox
from mailgate.mail.compose import Attachment, Message, compose
from tests.support.relay import Relay

SELECTOR = "mail2024"
DOMAIN = "example.com"


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_file(private_key: rsa.RSAPrivateKey, tmp_path: Path) -> Path:
    path = tmp_path / "dkim.pem"
    path.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture
def signer(key_file: Path) -> DkimSigner:
    return DkimSigner([DkimKey(DOMAIN, SELECTOR, key_file)])


def dns_for(private_key: rsa.RSAPrivateKey) -> Callable[..., bytes | None]:
    """A resolver that knows only the selector's TXT record, as an administrator publishes it."""
    public = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name.rstrip(b".") == f"{SELECTOR}._domainkey.{DOMAIN}".encode() else None

    return txt


def message(sender: Mailbox = Mailbox("Sender", "app@Example.COM")) -> bytes:
    return compose(
        Message(
            message_id="<dkim-test@example.com>",
            date=datetime(2024, 4, 1, 9, 30, tzinfo=UTC),
            sender=sender,
            to=[Mailbox("山田 太郎", "taro@example.org")],
            cc=[Mailbox("", "hanako@example.org")],
            subject="署名のテスト",
            body="本文です。\n" * 40,
            attachments=[Attachment("report.csv", "text/csv", b"a,b\r\n1,2\r\n")],
            charset="iso-2022-jp",
        )
    )


def tags(signed: bytes) -> dict[str, str]:
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    value = re.match(r"DKIM-Signature:(.*?)\r\n(?! )", header, re.DOTALL)
    assert value is not None
    unfolded = re.sub(r"\s+", "", value.group(1))
    return dict(tag.split("=", 1) for tag in unfolded.split(";") if tag)


async def test_signed_mail_verifies_after_the_relay(
    signer: DkimSigner, private_key: rsa.RSAPrivateKey, relay: Relay
) -> None:
    data = message()

    signed = signer.sign(data, "Example.COM")

    assert signed.startswith(b"DKIM-Signature: ")
    assert signed.endswith(data)
    assert re.search(rb"(?<!\r)\n", signed) is None, "bare LF"
    signature = tags(signed)
    assert signature["a"] == "rsa-sha256"
    assert signature["c"] == "relaxed/relaxed"
    assert (signature["d"], signature["s"]) == (DOMAIN, SELECTOR)
    assert signature["h"].split(":") == [
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
    ]

    transport = SmtpTransport(SmtpSettings(host="127.0.0.1", port=relay.port, timeout=5))
    try:
        outcome = await transport.deliver("app@example.com", ["taro@example.org"], signed)
    finally:
        await transport.close()
    assert outcome.status == "sent"
    received = relay.wait_for(1)[0].data

    assert dkim.verify(received, dnsfunc=dns_for(private_key))
    # The check has teeth: a changed header no longer verifies.
    tampered = received.replace(b"Message-ID: <dkim-test@", b"Message-ID: <forged@")
    assert tampered != received
    assert not dkim.verify(tampered, dnsfunc=dns_for(private_key))


def test_a_domain_without_a_key_is_left_unsigned(signer: DkimSigner) -> None:
    data = message(Mailbox("Other", "app@example.net"))

    assert signer.sign(data, "example.net") is data
    # Exact domain only: a subdomain of a signing domain has no key of its own.
    assert signer.sign(data, "news.example.com") is data


def test_keys_are_read_once_at_start(
    key_file: Path, signer: DkimSigner, private_key: rsa.RSAPrivateKey
) -> None:
    key_file.unlink()

    signed = signer.sign(message(), DOMAIN)

    assert dkim.verify(signed, dnsfunc=dns_for(private_key))


def test_build_signer_from_settings(
    key_file: Path, private_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    assert build_signer(load_settings(environ={}, data_dir=tmp_path)) is None

    settings = load_settings(
        environ={
            "MAILGATE_DKIM_DOMAIN": DOMAIN,
            "MAILGATE_DKIM_SELECTOR": SELECTOR,
            "MAILGATE_DKIM_KEY_FILE": str(key_file),
        },
        data_dir=tmp_path,
    )
    signer = build_signer(settings)

    assert signer is not None
    assert dkim.verify(signer.sign(message(), DOMAIN), dnsfunc=dns_for(private_key))
