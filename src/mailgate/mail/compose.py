"""The RFC 5322 bytes of one outgoing mail, built with the stdlib email package."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.charset import BASE64, Charset
from email.generator import BytesGenerator
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8, Policy
from email.utils import format_datetime
from typing import Any

from mailgate.mail.addresses import Mailbox, parse_mailbox

_LINE = 78  # RFC 5322's recommended line length
_MAX_LINE = 998  # RFC 5322's hard limit, CRLF excluded
_ENCODINGS = frozenset({"base64", "quoted-printable", "7bit", "8bit"})
_ASCII = bytes(range(128))


def _b_encoding(name: str) -> Charset:
    charset = Charset(name)
    charset.header_encoding = BASE64
    return charset


# Encoded-words in B form in the message's charset: what Japanese mailers send and expect.
_HEADER_CHARSETS = {name: _b_encoding(name) for name in ("utf-8", "iso-2022-jp")}


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attached file; content_type "" means text/plain."""

    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Message:
    """Everything that goes into the headers and body of one mail (Bcc is envelope only)."""

    message_id: str
    date: datetime
    sender: Mailbox
    to: Sequence[Mailbox]
    cc: Sequence[Mailbox]
    subject: str
    body: str
    attachments: Sequence[Attachment] = ()
    charset: str = "utf-8"
    transfer_encoding: str | None = None


@dataclass(frozen=True, slots=True)
class _Folded:
    """A header encoded and folded here; EmailPolicy writes a value with name and fold() as is."""

    name: str
    lines: tuple[str, ...]

    def fold(self, *, policy: Policy[Any]) -> str:
        return policy.linesep.join(self.lines) + policy.linesep


class _Generator(BytesGenerator):
    """BytesGenerator whose body output is the same, only faster on large attachments."""

    _NL: str  # the policy's line end, set by flatten()

    def _write_lines(self, lines: str) -> None:
        # The stdlib splits the body with a regex and writes line by line: ~30 ms per MB of
        # attachment. Should a later Python drop this hook, output stays right, only slower.
        self.write(lines.replace("\r\n", "\n").replace("\r", "\n").replace("\n", self._NL))


def new_message_id(domain: str) -> str:
    """A fresh Message-ID header value, angle brackets included."""
    return f"<{uuid.uuid4().hex}@{domain}>"


def compose(message: Message) -> bytes:
    """Serialise the message with CRLF line ends; the same Message always gives the same bytes."""
    if message.date.utcoffset() is None:
        raise ValueError("the Date needs a time zone")
    charset = _charset(message)
    header_charset = _HEADER_CHARSETS[charset]
    headers = [_address_header("From", [message.sender], header_charset)]
    if message.to:
        headers.append(_address_header("To", message.to, header_charset))
    if message.cc:
        headers.append(_address_header("Cc", message.cc, header_charset))
    headers += [
        _subject(message.subject, header_charset),
        _Folded("Date", (f"Date: {format_datetime(message.date)}",)),
        _fold("Message-ID", [_single_line(message.message_id, "Message-ID")]),
    ]
    msg = EmailMessage(policy=SMTP)
    for header in headers:
        msg[header.name] = header
    encoded_body = message.body.encode(charset)
    cte = _transfer_encoding(encoded_body, message.transfer_encoding)
    msg.set_content(message.body, subtype="plain", charset=charset, cte=cte)
    if message.attachments:
        msg.make_mixed(boundary=_boundary(message.message_id, encoded_body))
        for attachment in message.attachments:
            msg.attach(_attachment_part(attachment))
    # Only an address with a non-ASCII local part (or a domain IDNA refuses) needs RFC 6532.
    utf8 = not all(line.isascii() for header in headers for line in header.lines)
    out = io.BytesIO()
    _Generator(out, mangle_from_=False, policy=SMTPUTF8 if utf8 else SMTP).flatten(msg)
    return out.getvalue()


def _charset(message: Message) -> str:
    charset = message.charset.lower()
    if charset not in _HEADER_CHARSETS:
        raise ValueError(f"unsupported charset {message.charset!r}")
    if charset == "iso-2022-jp":
        names = [mailbox.name for mailbox in (message.sender, *message.to, *message.cc)]
        try:
            for text in (message.subject, message.body, *names):
                text.encode(charset)
        except UnicodeEncodeError:
            # Never lose a mail over a charset: UTF-8 carries what ISO-2022-JP cannot (emoji,
            # half-width kana, vendor extensions like ①) and every current mail reader decodes it.
            return "utf-8"
    return charset


def _transfer_encoding(body: bytes, requested: str | None) -> str:
    """The requested Content-Transfer-Encoding if it can carry the body, else the best one."""
    if requested is not None:
        requested = requested.lower()
        if requested not in _ENCODINGS:
            raise ValueError(f"unsupported transfer encoding {requested!r}")
    fits = max(map(len, body.splitlines()), default=0) <= _MAX_LINE
    if requested in ("base64", "quoted-printable") or (requested == "8bit" and fits):
        return requested
    if fits and body.isascii():
        return "7bit"
    # Not 7bit-clean, so automatic (and a 7bit/8bit request that cannot hold the body) chooses
    # quoted-printable, readable for mostly-ASCII text, unless base64 is shorter.
    non_ascii = len(body.translate(None, _ASCII))
    return "quoted-printable" if 6 * non_ascii < len(body) else "base64"


def _boundary(message_id: str, body: bytes) -> str:
    """A multipart boundary derived from the Message-ID, so a retry sends identical bytes."""
    seed = message_id
    while True:
        # base64 and quoted-printable never produce "=_"; only a 7bit/8bit body might hold it.
        boundary = "=_" + hashlib.sha256(seed.encode()).hexdigest()[:40]
        if boundary.encode() not in body:
            return boundary
        seed = boundary


def _attachment_part(attachment: Attachment) -> EmailMessage:
    part = EmailMessage(policy=SMTP)
    part["Content-Type"] = _single_line(attachment.content_type, "content type") or "text/plain"
    # An unparsable type says nothing; multipart/* and message/* may not be base64 (RFC 2045).
    if part["Content-Type"].defects or part.get_content_maintype() in ("multipart", "message"):
        part.replace_header("Content-Type", "application/octet-stream")
    part["Content-Transfer-Encoding"] = "base64"
    part["Content-Disposition"] = "attachment"
    if attachment.name:
        name = _single_line(attachment.name, "attachment name")
        part.set_param("filename", name, header="Content-Disposition")
    # Always base64 of the raw bytes: as text, the stdlib would rewrite line ends and charsets.
    part.set_payload(base64.encodebytes(attachment.data).decode("ascii"))
    return part


def _address_header(name: str, mailboxes: Sequence[Mailbox], charset: Charset) -> _Folded:
    groups = [_mailbox_words(mailbox, charset, name) for mailbox in mailboxes]
    for group in groups[:-1]:
        group[-1] += ","
    return _fold(name, [word for group in groups for word in group])


def _mailbox_words(mailbox: Mailbox, charset: Charset, header: str) -> list[str]:
    if parse_mailbox(mailbox.address) != Mailbox("", mailbox.address):
        raise ValueError(f"invalid address {mailbox.address!r}")
    address = _wire_address(mailbox.address)
    name = _single_line(mailbox.name, "display name")
    if not name:
        return [address]
    if _plain(name) and len(name) < _LINE:
        return [str(Mailbox(name, address))]
    return [*_encoded_words(name, charset, header), f"<{address}>"]


def _wire_address(address: str) -> str:
    """The address with an internationalised domain in its ASCII (IDNA) form where possible."""
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


def _subject(subject: str, charset: Charset) -> _Folded:
    _single_line(subject, "subject")
    words = subject.split(" ")
    if _plain(subject) and all(len(word) < _LINE for word in words):
        return _fold("Subject", words)
    return _fold("Subject", _encoded_words(subject, charset, "Subject"))


def _plain(text: str) -> bool:
    """Whether text can stand in a header as is ("=?" would be decoded as an encoded-word)."""
    return text.isascii() and text.isprintable() and "=?" not in text


def _encoded_words(text: str, charset: Charset, header: str) -> list[str]:
    """RFC 2047 encoded-words for text, each short enough for a line of its own."""
    return Header(text, charset, header_name=header).encode(maxlinelen=_LINE).split()


def _fold(name: str, words: Sequence[str]) -> _Folded:
    """The header as lines: words joined by spaces, a line break before a word that overflows."""
    lines: list[str] = []
    line = f"{name}:"
    for word in words:
        # Breaking before an empty word would leave a line of only whitespace.
        if word and len(line) + 1 + len(word) > _LINE and len(line) > len(name) + 1:
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return _Folded(name, tuple(lines))


def _single_line(value: str, what: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"line break in the {what}")
    return value
