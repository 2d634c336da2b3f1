"""Read Pleasanter's ``Mail.json`` and ``Api.json`` and translate them into mailgate settings."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import json5

logger = logging.getLogger("mailgate.config")

# Keys whose value maps one-to-one onto a mailgate setting; load_settings checks their types.
_MAIL_KEYS = {
    "SmtpHost": "smtp.host",
    "SmtpPort": "smtp.port",
    "SmtpUserName": "smtp.user",
    "SmtpPassword": "smtp.password",
    "FixedFrom": "mail.fixed_from",
    "AllowedFrom": "mail.allowed_from",
    "SupportFrom": "mail.support_from",
    "InternalDomains": "mail.internal_domains",
    "Encoding": "mail.charset",
    "ContentEncoding": "mail.transfer_encoding",
}
_MAIL_TRANSLATED = ("SmtpEnableSsl", "SecureSocketOptions", "ServerCertificateValidationCallback")
_API_KEYS = {"Enabled": "api_enabled", "LimitPerSite": "limit_per_site"}

# MailKit's SecureSocketOptions names, as Mail.json spells them.
_SECURE_SOCKET_OPTIONS = {
    "none": "none",
    "auto": "auto",
    "sslonconnect": "tls",
    "starttls": "starttls",
    "starttlswhenavailable": "opportunistic",
}

_JSON5_POSITION = re.compile(r"<string>:(?P<line>\d+) (?P<problem>.*) at column (?P<column>\d+)")


class ParameterFileError(ValueError):
    """A parameter file cannot be read, or holds a value mailgate cannot translate."""


@dataclass(frozen=True)
class Override:
    """One setting from a parameter file; ``source`` names the file and key for error messages."""

    target: str
    value: object
    source: str


def read_parameters(folder: Path) -> list[Override]:
    """Settings found in ``folder``'s ``Mail.json`` and ``Api.json``; a missing file adds none."""
    if not folder.is_dir():
        raise ParameterFileError(f"{folder}: Pleasanter parameters folder not found")
    return [*_mail_overrides(folder / "Mail.json"), *_api_overrides(folder / "Api.json")]


def _mail_overrides(path: Path) -> list[Override]:
    values = _read_file(path, [*_MAIL_KEYS, *_MAIL_TRANSLATED])
    overrides = _direct(path, values, _MAIL_KEYS)
    security = _security(path, values)
    if security is not None:
        overrides.append(security)
    if "ServerCertificateValidationCallback" in values:
        source = f"{path}: ServerCertificateValidationCallback"
        # true makes Pleasanter accept any certificate.
        accept_any = _bool(values["ServerCertificateValidationCallback"], source)
        overrides.append(Override("smtp.verify_certificate", not accept_any, source))
    return overrides


def _api_overrides(path: Path) -> list[Override]:
    return _direct(path, _read_file(path, _API_KEYS), _API_KEYS)


def _direct(path: Path, values: dict[str, object], keys: dict[str, str]) -> list[Override]:
    return [
        Override(target, values[key], f"{path}: {key}")
        for key, target in keys.items()
        if key in values
    ]


def _security(path: Path, values: dict[str, object]) -> Override | None:
    if "SecureSocketOptions" in values:
        source = f"{path}: SecureSocketOptions"
        name = values["SecureSocketOptions"]
        security = _SECURE_SOCKET_OPTIONS.get(name.lower()) if isinstance(name, str) else None
        if security is None:
            raise ParameterFileError(
                f"{source}: unknown value {name!r}; expected None, Auto, SslOnConnect, "
                "StartTls or StartTlsWhenAvailable"
            )
        return Override("smtp.security", security, source)
    if "SmtpEnableSsl" in values:
        source = f"{path}: SmtpEnableSsl"
        # Pleasanter's Smtp.cs falls back to StartTls (required, not opportunistic) here.
        security = "starttls" if _bool(values["SmtpEnableSsl"], source) else "none"
        return Override("smtp.security", security, source)
    return None


def _bool(value: object, source: str) -> bool:
    if not isinstance(value, bool):
        raise ParameterFileError(f"{source}: expected true or false, got {value!r}")
    return value


def _read_file(path: Path, honoured: Iterable[str]) -> dict[str, object]:
    """The honoured keys that ``path`` sets (not null, not ""), by their canonical spelling."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ParameterFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParameterFileError(f"{path}: not UTF-8 (byte offset {exc.start})") from None
    try:
        # strict=False: Newtonsoft, which Pleasanter uses, accepts raw control characters.
        data = json5.loads(text, strict=False)
    except ValueError as exc:
        raise ParameterFileError(f"{path}: malformed JSON: {_describe_json5_error(exc)}") from None
    if not isinstance(data, dict):
        raise ParameterFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    # Newtonsoft matches property names case-insensitively, so Pleasanter does too.
    canonical = {name.lower(): name for name in honoured}
    found: dict[str, object] = {}
    ignored: list[str] = []
    for key, value in data.items():
        name = canonical.get(key.lower())
        if name is None:
            ignored.append(key)
        elif value is not None and value != "":
            found[name] = value
    if ignored:
        logger.warning("%s: ignoring keys mailgate does not support: %s", path, ", ".join(ignored))
    return found


def _describe_json5_error(exc: ValueError) -> str:
    match = _JSON5_POSITION.fullmatch(str(exc))
    if match is None:
        return str(exc)
    return f"line {match['line']}, column {match['column']}: {match['problem']}"
