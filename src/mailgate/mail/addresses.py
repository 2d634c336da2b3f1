"""Mail address lists as Pleasanter's API accepts them: splitting, parsing, [UserN], domains."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

_MAX_LOCAL_OCTETS = 64
_MAX_ADDRESS_OCTETS = 254
_MAX_LABEL = 63

_SEPARATORS = frozenset(",;\n\r")
# C0, DEL, C1 and the Unicode line separators: str.splitlines() breaks on several of them, so
# none may reach a header, not even inside a display name.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# RFC 5322 atext, widened by RFC 6532 to non-ASCII characters (_visible() narrows those).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_ATOMS = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)*")
# An unquoted display name: RFC 5322 obs-phrase (atoms, dots and spaces), nothing special.
_PHRASE = re.compile(r'[^"(),:;<>@\[\\\]]+')
_ASCII_LABEL = re.compile(r"[A-Za-z0-9-]+")
_USER_TOKEN = re.compile(r"\[user([0-9]{1,18})\]", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One mailbox: display name ("" when none, unquoted) and addr-spec."""

    name: str
    address: str

    def __str__(self) -> str:
        if not self.name:
            return self.address
        if _ATOMS.fullmatch(self.name) and _visible(self.name):
            return f"{self.name} <{self.address}>"
        escaped = self.name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{self.address}>'


def split_addresses(text: str) -> list[str]:
    """Split an address list on , ; and line breaks outside double quotes; drop empty pieces."""
    pieces: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char in _SEPARATORS:
            pieces.append(text[start:index])
            start = index + 1
    pieces.append(text[start:])
    return [stripped for piece in pieces if (stripped := piece.strip())]


def parse_mailbox(piece: str) -> Mailbox | None:
    """One mailbox: bare, <angle> or with a plain or quoted name; None if invalid."""
    if _CONTROL.search(piece):
        return None
    text = piece.strip()
    if text.startswith('"'):
        quoted = _read_quoted(text)
        if quoted is None:
            return None
        name, end = quoted
        rest = text[end:].lstrip()
        if rest.startswith("@"):
            return _bare(text)
        return _angle(name, rest)
    if text.startswith("<"):
        return _angle("", text)
    phrase, bracket, rest = text.partition("<")
    if not bracket:
        return _bare(text)
    if not _PHRASE.fullmatch(phrase):
        return None
    return _angle(re.sub(" +", " ", phrase.strip()), bracket + rest)


def user_token_id(piece: str) -> int | None:
    """The user id of a '[UserN]' token, else None."""
    match = _USER_TOKEN.fullmatch(piece.strip())
    return int(match[1]) if match else None


def parse_domain_list(text: str | None) -> list[str]:
    """InternalDomains' comma list as lower-case domains, without a leading '@' or '.'."""
    if not text:
        return []
    return [domain for part in text.split(",") if (domain := part.strip().lstrip("@.").lower())]


def is_internal(address: str, domains: Sequence[str]) -> bool:
    """Whether the address's domain is one of the domains or a subdomain; True if none are set."""
    if not domains:
        return True
    domain = address.rpartition("@")[2].lower()
    return any(domain == d or domain.endswith("." + d) for d in map(str.lower, domains))


def _visible(text: str) -> bool:
    """Whether no character is a non-ASCII space, control or invisible format mark."""
    return text.isascii() or all(
        char.isascii() or unicodedata.category(char)[0] in "LMNPS" for char in text
    )


def _bare(text: str) -> Mailbox | None:
    address = _addr_spec(text)
    return Mailbox("", address) if address else None


def _angle(name: str, text: str) -> Mailbox | None:
    if not (text.startswith("<") and text.endswith(">")):
        return None
    address = _addr_spec(text[1:-1].strip())
    return Mailbox(name, address) if address else None


def _read_quoted(text: str) -> tuple[str, int] | None:
    """Unescaped content of the quoted-string at text[0] and the index after it."""
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return "".join(chars), index + 1
        if char == "\\":
            index += 1
            if index == len(text):
                return None
            char = text[index]
        chars.append(char)
        index += 1
    return None


def _addr_spec(text: str) -> str | None:
    """The addr-spec if text is exactly one valid 'local@domain', else None."""
    if text.startswith('"'):
        quoted = _read_quoted(text)
        if quoted is None or not quoted[0]:
            return None
        end = quoted[1]
        local, at, domain = text[:end], text[end : end + 1], text[end + 1 :]
        if at != "@":
            return None
    else:
        local, _, domain = text.partition("@")
        if not _DOT_ATOM.fullmatch(local) or not _visible(local):
            return None
    if not _valid_domain(domain):
        return None
    address = f"{local}@{domain}"
    if len(local.encode()) > _MAX_LOCAL_OCTETS or len(address.encode()) > _MAX_ADDRESS_OCTETS:
        return None
    return address


def _valid_domain(domain: str) -> bool:
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        try:
            if literal[:5].lower() == "ipv6:":
                ipaddress.IPv6Address(literal[5:])
            else:
                ipaddress.IPv4Address(literal)
        except ValueError:
            return False
        return True
    return bool(domain) and all(map(_valid_label, domain.split(".")))


def _valid_label(label: str) -> bool:
    if not 0 < len(label) <= _MAX_LABEL or label[0] == "-" or label[-1] == "-":
        return False
    if label.isascii():
        return _ASCII_LABEL.fullmatch(label) is not None
    # An IDN label: letters, marks and digits of any script (as .NET accepts); IDNA is the relay's.
    return all(_ASCII_LABEL.fullmatch(char) or _is_idn_char(char) for char in label)


def _is_idn_char(char: str) -> bool:
    return not char.isascii() and unicodedata.category(char)[0] in "LMN"
