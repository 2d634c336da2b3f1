"""The RFC 5322 bytes of one outgoing mail, exactly as the stdlib email package writes them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import itertools
import re
import struct
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.charset import BASE64, Charset
from email.generator import BytesGenerator
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8, Policy
from email.quoprimime import body_encode
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

from mailgate.mail.addresses import Mailbox, parse_mailbox

_LINE = 78  # RFC 5322's recommended line length
_MAX_LINE = 998  # RFC 5322's hard limit, CRLF excluded
_ENCODINGS = frozenset({"base64", "quoted-printable", "7bit", "8bit"})
_ASCII = bytes(range(128))
# Attachments are base64-encoded this many 76-column lines (57 bytes each) at a time.
_BLOCK_ROWS = 1024
_BLOCK = 57 * _BLOCK_ROWS
_BLOCK_LINES = struct.Struct("76s" * _BLOCK_ROWS)
_DISPOSITION = "Content-Disposition: attachment"
# type/subtype of RFC 2045 token characters, as the API accepts them, with a main type short
# enough for the stdlib to leave the header on one line.
_SIMPLE_TYPE = re.compile(r"([A-Za-z0-9!#$&^_.+-]{1,64})/[A-Za-z0-9!#$&^_.+-]+")


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
    return b"".join(compose_parts(message))


def compose_parts(message: Message) -> Pieces:
    """compose()'s bytes as pieces, attachments encoded only as they are read."""
    fast = _compose_fast(message)
    return Pieces((_compose_stdlib(message),) if fast is None else tuple(fast))


@dataclass(frozen=True, slots=True)
class Pieces:
    """A message's bytes as pieces that each end a line, and its size.

    An attachment is held as its raw bytes and base64-encoded a block at a time while the
    pieces are read: a worker sending a 20 MB file holds the file, not also its 27 MB
    encoding (B4: peak RSS growth 3.1x -> 2.1x the file).
    """

    items: tuple[bytes | memoryview, ...]  # a memoryview is an attachment still to encode

    @property
    def size(self) -> int:
        return sum(
            len(item) if isinstance(item, bytes) else _base64_size(len(item)) for item in self.items
        )

    def __iter__(self) -> Iterator[bytes]:
        for item in self.items:
            if isinstance(item, bytes):
                yield item
            else:
                for start in range(0, len(item), _BLOCK):
                    yield _base64_lines(item[start : start + _BLOCK])


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What both composers derive from a Message: its own headers and the encoded body."""

    headers: list[_Folded]
    charset: str
    body: bytes
    cte: str

    @property
    def utf8(self) -> bool:
        """Whether a header needs RFC 6532: only a non-ASCII local part or a domain IDNA refuses."""
        return not all(line.isascii() for header in self.headers for line in header.lines)


def _prepare(message: Message) -> _Prepared:
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
    body = message.body.encode(charset)
    return _Prepared(headers, charset, body, _transfer_encoding(body, message.transfer_encoding))


def _compose_stdlib(message: Message) -> bytes:
    """The reference composer, built on the stdlib email package; _compose_fast must match it."""
    prepared = _prepare(message)
    msg = EmailMessage(policy=SMTP)
    for header in prepared.headers:
        msg[header.name] = header
    msg.set_content(message.body, subtype="plain", charset=prepared.charset, cte=prepared.cte)
    if message.attachments:
        msg.make_mixed(boundary=_boundary(message.message_id, prepared.body))
        for attachment in message.attachments:
            msg.attach(_attachment_part(attachment))
    out = io.BytesIO()
    _Generator(out, mangle_from_=False, policy=SMTPUTF8 if prepared.utf8 else SMTP).flatten(msg)
    return out.getvalue()


def _compose_fast(message: Message) -> list[bytes | memoryview] | None:
    """The bytes _compose_stdlib gives, written directly; None for a shape not covered here."""
    # Hand-written because a profile shows EmailMessage, set_content and the generator's header
    # parsing and refolding take ~85% of compose's CPU, for headers whose folding is fixed here.
    prepared = _prepare(message)
    if prepared.utf8 and message.attachments:
        # RFC 6532 changes how the stdlib writes file names; rare enough to leave to it.
        return None
    try:
        head = "".join(line + "\r\n" for header in prepared.headers for line in header.lines)
        out: list[bytes | memoryview] = [head.encode()]
    except UnicodeEncodeError:
        # A lone surrogate: the stdlib writes it as a raw byte (surrogateescape) or fails.
        return None
    text = (
        f'Content-Type: text/plain; charset="{prepared.charset}"\r\n'
        f"Content-Transfer-Encoding: {prepared.cte}\r\n"
    )
    if not message.attachments:
        out += [f"{text}MIME-Version: 1.0\r\n\r\n".encode(), _body(prepared)]
        return out
    boundary = _boundary(message.message_id, prepared.body)
    # The boundary's fixed length always puts the parameter on a line of its own.
    out += [
        f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary="{boundary}"\r\n'
        f"\r\n--{boundary}\r\n{text}\r\n".encode(),
        _body(prepared),
    ]
    for attachment in message.attachments:
        part = _attachment_head(attachment)
        if part is None:
            return None
        out.append(f"\r\n--{boundary}\r\n{part}\r\n\r\n".encode())
        out.append(memoryview(attachment.data))
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return out


def _body(prepared: _Prepared) -> bytes:
    """The body as email.contentmanager's set_content encodes it, with CRLF line ends."""
    body = prepared.body
    if prepared.cte in ("7bit", "8bit") and b"\r" not in body:
        # The common case, without splitting into lines: LF ends, one added if missing.
        return (body if body.endswith(b"\n") else body + b"\n").replace(b"\n", b"\r\n")
    lines = body.splitlines()
    # set_content wraps at the SMTP policy's max_line_length, 78: 57 bytes a base64 line.
    if prepared.cte == "base64":
        return _base64(b"\r\n".join(lines) + b"\r\n")
    text = b"\n".join(lines) + b"\n"
    if prepared.cte == "quoted-printable":
        return body_encode(text.decode("latin-1"), _LINE).replace("\n", "\r\n").encode("ascii")
    return text.replace(b"\n", b"\r\n")


def _base64(data: bytes) -> bytes:
    """base64.encodebytes(data) with CRLF line ends."""
    return b"".join(Pieces((memoryview(data),)))


def _base64_size(size: int) -> int:
    """len(_base64(data)) for `size` bytes of data: 4 characters per 3 bytes, CRLF per 76."""
    encoded = 4 * -(-size // 3)
    return encoded + 2 * -(-encoded // 76)


def _base64_lines(chunk: memoryview) -> bytes:
    encoded = binascii.b2a_base64(chunk, newline=False)
    rows, rest = divmod(len(encoded), 76)
    # One C call cuts every full line: a slicing loop costs more than the encoding itself.
    cut = _BLOCK_LINES if rows == _BLOCK_ROWS else struct.Struct("76s" * rows)
    lines = list(cut.unpack_from(encoded))
    if rest:
        lines.append(encoded[-rest:])
    lines.append(b"")
    return b"\r\n".join(lines)


def _attachment_head(attachment: Attachment) -> str | None:
    """_attachment_part's headers as the generator folds them; None for an unusual type or name."""
    content_type = attachment.content_type or "text/plain"
    # Anything else (parameters, spaces, a long main type) the stdlib parses and may rewrite.
    match = _SIMPLE_TYPE.fullmatch(content_type)
    if match is None:
        return None
    if match[1].lower() in ("multipart", "message"):
        content_type = "application/octet-stream"
    disposition = _disposition(attachment.name)
    if disposition is None:
        return None
    return f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n{disposition}"


def _disposition(name: str) -> str | None:
    """The Content-Disposition header as email's folder writes it, RFC 2231 sections included."""
    if not name:
        return _DISPOSITION
    if name.isascii():
        # The stdlib parses a quoted file name back: escapes and encoded-words could change it.
        if not name.isprintable() or '"' in name or "\\" in name or "=?" in name:
            return None
        # The folder keeps a whole ASCII value that fits; a non-ASCII one it always refolds.
        one_line = f'{_DISPOSITION}; filename="{name}"'
        if len(one_line) <= _LINE:
            return one_line
        charset = "us-ascii"
        param = f'filename="{name}"'
    elif "\r" in name or "\n" in name:
        return None
    else:
        try:
            param = "filename*=utf-8''" + quote(name, safe="")
        except UnicodeEncodeError:
            return None
        charset = "utf-8"
    # From here on this mirrors email._header_value_parser._fold_mime_parameters.
    first = _DISPOSITION + ";"
    if len(first) + len(param) + 1 < _LINE:
        return f"{first} {param}"
    if len(param) + 2 <= _LINE:
        return f"{first}\r\n {param}"
    lines = [first]
    chrome = charset + "''"
    # Percent-encoding works character by character, so each character's share is known.
    pieces = [quote(char, safe="") for char in name]
    section = start = 0
    while True:
        room = _LINE - (len("filename") + len(str(section)) + 3 + len(chrome)) - 2
        end = start
        while end < len(pieces) and len(pieces[end]) <= room:
            room -= len(pieces[end])
            end += 1
        lines.append(f" filename*{section}*={chrome}{''.join(pieces[start:end])}")
        if end == len(pieces):
            return "\r\n".join(lines)
        lines[-1] += ";"
        chrome = ""
        section, start = section + 1, end


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
    if text.splitlines() != [text]:
        # Header encodes each piece between line separators (\x0c, \u2028, ...) on its own.
        return Header(text, charset, header_name=header).encode(maxlinelen=_LINE).split()
    # Header.encode() gets its words from header_encode_lines() with these line lengths, then
    # spends twice as long again laying them out on lines that .split() takes apart.
    lengths = itertools.chain([_LINE - len(header) - 2], itertools.repeat(_LINE - 1))
    return [word for word in charset.header_encode_lines(text, lengths) if word is not None]


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
