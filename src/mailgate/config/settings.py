"""Settings from built-in defaults, a TOML file, Pleasanter parameter files and the environment."""

from __future__ import annotations

import codecs
import math
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import dkim.crypto

from mailgate.config.pleasanter import ParameterFileError, read_parameters


class ConfigError(Exception):
    """A setting cannot be used; the message names the file or variable and the problem."""


SmtpSecurity = Literal["none", "starttls", "tls", "opportunistic", "auto"]


@dataclass(frozen=True)
class SmtpSettings:
    """How to reach the SMTP relay."""

    host: str | None = None
    port: int = 25
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    security: SmtpSecurity = "none"
    verify_certificate: bool = True
    timeout: float = 30.0
    helo_name: str | None = None
    # Trusted in addition to the system's CAs, e.g. a company CA that signed the relay's cert.
    ca_file: Path | None = None
    max_mails_per_connection: int = 100
    idle_timeout: float = 60.0


@dataclass(frozen=True)
class DkimKey:
    """Signs mails whose header From is in `domain` with the PEM RSA key in `key_file`."""

    domain: str
    selector: str
    key_file: Path


@dataclass(frozen=True)
class MailPolicy:
    """Sender rules, recipient domains and encoding of the mails sent."""

    fixed_from: str | None = None
    allowed_from: tuple[str, ...] = ()
    support_from: str | None = None
    internal_domains: tuple[str, ...] = ()
    charset: str = "utf-8"
    transfer_encoding: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything mailgate is configured with."""

    data_dir: Path = Path("mailgate-data")
    # A PostgreSQL URL may carry a password, so it stays out of repr like the SMTP password.
    database_url: str = field(default="", repr=False)
    smtp: SmtpSettings = SmtpSettings()
    transport: Literal["smtp", "capture"] = "capture"
    mail: MailPolicy = MailPolicy()
    pleasanter_parameters: Path | None = None
    base_path: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    api_enabled: bool = True
    limit_per_site: int = 0
    check_content_type: bool = False
    max_request_bytes: int = 30_000_000
    max_recipients: int = 1000
    max_title_length: int = 1024
    default_language: Literal["en", "ja"] = "en"
    delivery_concurrency: int = 16
    retry_base_delay: float = 300.0
    retry_factor: float = 1.3
    retry_max_attempts: int = 18
    lease_seconds: float = 60.0
    message_id_domain: str = "mailgate.local"
    dkim: tuple[DkimKey, ...] = ()


_Check = Callable[[Any, str], object]
_Kind = Literal["str", "int", "float", "bool", "list", "path"]


def _as_is(value: object, where: str) -> object:
    return value


@dataclass(frozen=True)
class _Field:
    """How one setting is typed and validated, whichever source it comes from."""

    kind: _Kind
    check: _Check = _as_is

    def from_value(self, value: object, where: str) -> object:
        """Validate a value from a TOML or JSON file."""
        return self.check(_typed(self.kind, value, where), where)

    def from_text(self, text: str, where: str) -> object:
        """Validate an environment variable's text."""
        return self.check(_parse(self.kind, text, where), where)


_EXPECTED = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "list": "a list of strings or a comma-separated string",
    "path": "a path string",
}
_BOOL_WORDS = {
    **dict.fromkeys(("true", "1", "yes", "on"), True),
    **dict.fromkeys(("false", "0", "no", "off"), False),
}


def _typed(kind: _Kind, value: object, where: str) -> object:
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value}")
        return float(value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "path" and isinstance(value, str):
        # Path("") would silently mean the current directory.
        if not value.strip():
            raise ConfigError(f"{where}: must not be empty")
        return Path(value).expanduser()
    if kind == "list" and isinstance(value, str):
        return _split(value.split(","))
    if kind == "list" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return _split(value)
    raise ConfigError(f"{where}: expected {_EXPECTED[kind]}, got {type(value).__name__}")


def _parse(kind: _Kind, text: str, where: str) -> object:
    if kind == "bool":
        word = text.strip().lower()
        if word not in _BOOL_WORDS:
            raise ConfigError(f"{where}: expected true/false/1/0/yes/no/on/off, got {text!r}")
        return _BOOL_WORDS[word]
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return _typed(kind, float(text), where)
    except ValueError:
        raise ConfigError(f"{where}: expected {_EXPECTED[kind]}, got {text!r}") from None
    return _typed(kind, text, where)


def _split(items: list[str]) -> tuple[str, ...]:
    return tuple(stripped for item in items if (stripped := item.strip()))


def _optional(value: str, where: str) -> str | None:
    return value or None


def _non_empty(value: str, where: str) -> str:
    if not value.strip():
        raise ConfigError(f"{where}: must not be empty")
    return value


def _choice(*options: str) -> _Check:
    def check(value: str, where: str) -> str:
        if value.strip().lower() not in options:
            raise ConfigError(f"{where}: expected one of {', '.join(options)}, got {value!r}")
        return value.strip().lower()

    return check


def _at_least(minimum: float) -> _Check:
    def check(value: float, where: str) -> float:
        if value < minimum:
            raise ConfigError(f"{where}: must be at least {minimum}, got {value}")
        return value

    return check


def _positive(value: float, where: str) -> float:
    if value <= 0:
        raise ConfigError(f"{where}: must be greater than 0, got {value}")
    return value


def _port(value: int, where: str) -> int:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{where}: must be a port number from 1 to 65535, got {value}")
    return value


def _lowercase(value: tuple[str, ...], where: str) -> tuple[str, ...]:
    return tuple(item.lower() for item in value)


# Python's codec names, including aliases such as "UTF8" and "csISO2022JP", to ours.
_CHARSETS = {"utf-8": "utf-8", "iso2022_jp": "iso-2022-jp"}


def _charset(value: str, where: str) -> str:
    try:
        charset = _CHARSETS.get(codecs.lookup(value.strip()).name)
    except LookupError:
        charset = None
    if charset is None:
        raise ConfigError(f"{where}: unsupported charset {value!r}; expected utf-8 or iso-2022-jp")
    return charset


# Ours and Pleasanter's (MimeKit ContentEncoding) names, compared without case, "-" or "_".
_TRANSFER_ENCODINGS = {
    "default": None,
    "base64": "base64",
    "quotedprintable": "quoted-printable",
    "7bit": "7bit",
    "sevenbit": "7bit",
    "8bit": "8bit",
    "eightbit": "8bit",
}


def _transfer_encoding(value: str, where: str) -> str | None:
    key = re.sub(r"[-_\s]", "", value).lower()
    if not key:
        return None
    if key not in _TRANSFER_ENCODINGS:
        raise ConfigError(
            f"{where}: unsupported content encoding {value!r}; "
            "expected base64, quoted-printable, 7bit or 8bit"
        )
    return _TRANSFER_ENCODINGS[key]


def _base_path(value: str, where: str) -> str:
    path = "".join(f"/{part}" for part in value.strip().split("/") if part)
    if re.search(r"[\s?#\\]", path):
        raise ConfigError(f"{where}: a URL path prefix such as /fs is expected, got {value!r}")
    return path


_DNS_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _domain(value: str, where: str) -> str:
    if not _DNS_NAME.fullmatch(value):
        raise ConfigError(f"{where}: expected a domain name, got {value!r}")
    return value


def _dkim_domain(value: str, where: str) -> str:
    # Lowercase, as DkimSigner matches the header From's domain without case.
    return _domain(value, where).lower()


def _selector(value: str, where: str) -> str:
    if not _DNS_NAME.fullmatch(value):
        raise ConfigError(f"{where}: expected a DKIM selector such as 'mail', got {value!r}")
    return value


_FIELDS: dict[str, _Field] = {
    "data_dir": _Field("path"),
    "database_url": _Field("str"),
    "smtp.host": _Field("str", _optional),
    "smtp.port": _Field("int", _port),
    "smtp.user": _Field("str", _optional),
    "smtp.password": _Field("str", _optional),
    "smtp.security": _Field("str", _choice(*get_args(SmtpSecurity))),
    "smtp.verify_certificate": _Field("bool"),
    "smtp.timeout": _Field("float", _positive),
    "smtp.helo_name": _Field("str", _optional),
    "smtp.ca_file": _Field("path"),
    "smtp.max_mails_per_connection": _Field("int", _at_least(1)),
    "smtp.idle_timeout": _Field("float", _positive),
    "transport": _Field("str", _choice("smtp", "capture")),
    "mail.fixed_from": _Field("str", _optional),
    "mail.allowed_from": _Field("list"),
    "mail.support_from": _Field("str", _optional),
    "mail.internal_domains": _Field("list", _lowercase),
    "mail.charset": _Field("str", _charset),
    "mail.transfer_encoding": _Field("str", _transfer_encoding),
    "pleasanter_parameters": _Field("path"),
    "base_path": _Field("str", _base_path),
    "host": _Field("str", _non_empty),
    "port": _Field("int", _port),
    "api_enabled": _Field("bool"),
    "limit_per_site": _Field("int", _at_least(0)),
    "check_content_type": _Field("bool"),
    "max_request_bytes": _Field("int", _at_least(1)),
    "max_recipients": _Field("int", _at_least(1)),
    "max_title_length": _Field("int", _at_least(1)),
    "default_language": _Field("str", _choice("en", "ja")),
    "delivery_concurrency": _Field("int", _at_least(1)),
    "retry_base_delay": _Field("float", _positive),
    # Below 1 the delays would shrink instead of grow.
    "retry_factor": _Field("float", _at_least(1)),
    "retry_max_attempts": _Field("int", _at_least(1)),
    "lease_seconds": _Field("float", _positive),
    "message_id_domain": _Field("str", _domain),
    # One signing domain; TOML may list several as [[dkim]] tables of these three keys.
    "dkim.domain": _Field("str", _dkim_domain),
    "dkim.selector": _Field("str", _selector),
    "dkim.key_file": _Field("path"),
}
_DKIM_PARTS = ("domain", "selector", "key_file")

_TOML_TABLES = frozenset({"server", "smtp", "mail", "api", "delivery"})
_TOML_KEYS = {
    "data_dir": "data_dir",
    "database_url": "database_url",
    "transport": "transport",
    "pleasanter_parameters": "pleasanter_parameters",
    "base_path": "base_path",
    "default_language": "default_language",
    "message_id_domain": "message_id_domain",
    "server.host": "host",
    "server.port": "port",
    **{
        f"smtp.{name}": f"smtp.{name}"
        for name in (
            "host",
            "port",
            "user",
            "password",
            "security",
            "verify_certificate",
            "timeout",
            "helo_name",
            "ca_file",
            "max_mails_per_connection",
            "idle_timeout",
        )
    },
    "mail.fixed_from": "mail.fixed_from",
    "mail.allowed_from": "mail.allowed_from",
    "mail.support_from": "mail.support_from",
    "mail.internal_domains": "mail.internal_domains",
    "mail.encoding": "mail.charset",
    "mail.content_encoding": "mail.transfer_encoding",
    "api.enabled": "api_enabled",
    "api.limit_per_site": "limit_per_site",
    "api.check_content_type": "check_content_type",
    "api.max_request_bytes": "max_request_bytes",
    "api.max_recipients": "max_recipients",
    "api.max_title_length": "max_title_length",
    "delivery.concurrency": "delivery_concurrency",
    "delivery.retry_base_delay": "retry_base_delay",
    "delivery.retry_factor": "retry_factor",
    "delivery.retry_max_attempts": "retry_max_attempts",
    "delivery.lease_seconds": "lease_seconds",
}

_ENV = {
    "MAILGATE_DATA_DIR": "data_dir",
    "MAILGATE_DATABASE_URL": "database_url",
    "MAILGATE_SMTP_HOST": "smtp.host",
    "MAILGATE_SMTP_PORT": "smtp.port",
    "MAILGATE_SMTP_USER": "smtp.user",
    "MAILGATE_SMTP_PASSWORD": "smtp.password",
    "MAILGATE_SMTP_SECURITY": "smtp.security",
    "MAILGATE_SMTP_VERIFY_CERTIFICATE": "smtp.verify_certificate",
    "MAILGATE_SMTP_TIMEOUT": "smtp.timeout",
    "MAILGATE_SMTP_HELO_NAME": "smtp.helo_name",
    "MAILGATE_SMTP_CA_FILE": "smtp.ca_file",
    "MAILGATE_SMTP_MAX_MAILS_PER_CONNECTION": "smtp.max_mails_per_connection",
    "MAILGATE_SMTP_IDLE_TIMEOUT": "smtp.idle_timeout",
    "MAILGATE_TRANSPORT": "transport",
    "MAILGATE_PLEASANTER_PARAMETERS": "pleasanter_parameters",
    "MAILGATE_BASE_PATH": "base_path",
    "MAILGATE_HOST": "host",
    "MAILGATE_PORT": "port",
    "MAILGATE_DELIVERY_CONCURRENCY": "delivery_concurrency",
    "MAILGATE_RETRY_BASE_DELAY": "retry_base_delay",
    "MAILGATE_RETRY_FACTOR": "retry_factor",
    "MAILGATE_RETRY_MAX_ATTEMPTS": "retry_max_attempts",
    "MAILGATE_LEASE_SECONDS": "lease_seconds",
    "MAILGATE_MAX_REQUEST_BYTES": "max_request_bytes",
    "MAILGATE_MAX_RECIPIENTS": "max_recipients",
    "MAILGATE_MAX_TITLE_LENGTH": "max_title_length",
    "MAILGATE_DEFAULT_LANGUAGE": "default_language",
    "MAILGATE_LIMIT_PER_SITE": "limit_per_site",
    "MAILGATE_API_ENABLED": "api_enabled",
    "MAILGATE_CHECK_CONTENT_TYPE": "check_content_type",
    "MAILGATE_FIXED_FROM": "mail.fixed_from",
    "MAILGATE_ALLOWED_FROM": "mail.allowed_from",
    "MAILGATE_SUPPORT_FROM": "mail.support_from",
    "MAILGATE_INTERNAL_DOMAINS": "mail.internal_domains",
    "MAILGATE_MAIL_ENCODING": "mail.charset",
    "MAILGATE_MAIL_CONTENT_ENCODING": "mail.transfer_encoding",
    "MAILGATE_MESSAGE_ID_DOMAIN": "message_id_domain",
    "MAILGATE_DKIM_DOMAIN": "dkim.domain",
    "MAILGATE_DKIM_SELECTOR": "dkim.selector",
    "MAILGATE_DKIM_KEY_FILE": "dkim.key_file",
}


def load_settings(
    config_file: Path | None = None,
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Layer defaults, TOML file, Pleasanter files, environment and ``data_dir``; later wins."""
    env = os.environ if environ is None else environ
    if config_file is None and env.get("MAILGATE_CONFIG", "").strip():
        config_file = Path(env["MAILGATE_CONFIG"]).expanduser()
    values = _toml_values(config_file) if config_file is not None else {}
    env_values = _env_values(env)
    parameters = env_values.get("pleasanter_parameters", values.get("pleasanter_parameters"))
    if isinstance(parameters, Path):
        try:
            overrides = read_parameters(parameters)
        except ParameterFileError as exc:
            raise ConfigError(str(exc)) from None
        for override in overrides:
            values[override.target] = _FIELDS[override.target].from_value(
                override.value, override.source
            )
    values |= env_values
    if data_dir is not None:
        values["data_dir"] = data_dir.expanduser()
    return _build(values)


def _toml_values(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    values: dict[str, object] = {}
    for key, raw in _flatten(path, document):
        if key == "dkim":
            values["dkim"] = _dkim_tables(path, raw)
            continue
        target = _TOML_KEYS.get(key)
        if target is None:
            raise ConfigError(f"{path}: unknown key {key!r}")
        value = _FIELDS[target].from_value(raw, f"{path}: {key}")
        if isinstance(value, Path):
            # Relative paths in the file are relative to the file, whatever the working directory.
            value = path.parent.absolute() / value
        values[target] = value
    return values


def _flatten(path: Path, document: dict[str, Any]) -> Iterator[tuple[str, object]]:
    for key, value in document.items():
        if key not in _TOML_TABLES:
            yield key, value
        elif isinstance(value, dict):
            for name, item in value.items():
                yield f"{key}.{name}", item
        else:
            raise ConfigError(f"{path}: {key!r} must be a table ([{key}])")


def _dkim_tables(path: Path, raw: object) -> tuple[DkimKey, ...]:
    if not isinstance(raw, list) or not all(isinstance(table, dict) for table in raw):
        raise ConfigError(f"{path}: 'dkim' must be an array of tables ([[dkim]])")
    keys: dict[str, DkimKey] = {}
    for index, table in enumerate(raw):
        where = f"{path}: dkim[{index}]"
        for name in table:
            if name not in _DKIM_PARTS:
                raise ConfigError(f"{where}: unknown key {name!r}")
        missing = [name for name in _DKIM_PARTS if name not in table]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        parts: dict[str, Any] = {
            name: _FIELDS[f"dkim.{name}"].from_value(table[name], f"{where}.{name}")
            for name in _DKIM_PARTS
        }
        parts["key_file"] = path.parent.absolute() / parts["key_file"]
        key = DkimKey(**parts)
        if key.domain in keys:
            raise ConfigError(f"{where}.domain: {key.domain} already has a key")
        keys[key.domain] = key
    return tuple(keys.values())


def _env_values(environ: Mapping[str, str]) -> dict[str, object]:
    return {
        target: _FIELDS[target].from_text(environ[name], name)
        for name, target in _ENV.items()
        if environ.get(name, "").strip()
    }


def _merge_env_dkim(values: dict[str, Any]) -> None:
    """The environment's one signing domain joins the TOML ones, replacing a same-domain key."""
    parts = {name: values.pop(f"dkim.{name}") for name in _DKIM_PARTS if f"dkim.{name}" in values}
    if not parts:
        return
    if len(parts) < len(_DKIM_PARTS):
        env = {target: name for name, target in _ENV.items()}
        given = ", ".join(env[f"dkim.{name}"] for name in parts)
        missing = ", ".join(env[f"dkim.{name}"] for name in _DKIM_PARTS if name not in parts)
        raise ConfigError(
            f"{missing}: must be set too when {given} is (a DKIM key needs all three)"
        )
    key = DkimKey(**parts)
    values["dkim"] = (*(k for k in values.get("dkim", ()) if k.domain != key.domain), key)


def _check_files(settings: Settings) -> None:
    """Fail at start, not at the first mail, on a CA or key file that cannot be used."""
    if settings.smtp.ca_file is not None:
        _check_ca_file(settings.smtp.ca_file)
    for key in settings.dkim:
        read_dkim_key(key.key_file)


def _check_ca_file(path: Path) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise ConfigError(f"{path}: SMTP CA file holds no PEM certificate") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read SMTP CA file: {exc.strerror}") from None


# Receivers (dkimpy among them) ignore signatures made with shorter RSA keys.
_MIN_DKIM_BITS = 1024


def read_dkim_key(path: Path) -> bytes:
    """The PEM RSA private key in `path`, checked; errors name the file, never its content."""
    try:
        # dkimpy only finds the PEM body between bare-LF lines.
        pem = path.read_bytes().replace(b"\r\n", b"\n")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read DKIM key file: {exc.strerror}") from None
    try:
        bits = dkim.crypto.parse_pem_private_key(pem)["modulus"].bit_length()
    except Exception:
        # Whatever the parser trips on (its messages may quote key bytes), the key is unusable.
        raise ConfigError(
            f"{path}: not an unencrypted RSA private key in PEM (PKCS#1 or PKCS#8)"
        ) from None
    if bits < _MIN_DKIM_BITS:
        raise ConfigError(
            f"{path}: DKIM key has {bits} bits; at least {_MIN_DKIM_BITS} needed, 2048 advised"
        )
    return pem


def _build(values: dict[str, Any]) -> Settings:
    data_dir = Path(values.pop("data_dir", Settings.data_dir)).absolute()
    if not values.get("database_url"):
        values["database_url"] = f"sqlite:///{(data_dir / 'mailgate.db').as_posix()}"
    host = values.get("smtp.host")
    transport = values.setdefault("transport", "smtp" if host else "capture")
    if transport == "smtp" and not host:
        raise ConfigError(
            "transport is 'smtp' but no SMTP host is set "
            "(MAILGATE_SMTP_HOST, [smtp] host or Mail.json SmtpHost)"
        )
    _merge_env_dkim(values)
    sections: dict[str, dict[str, Any]] = {"smtp": {}, "mail": {}, "": {}}
    for target, value in values.items():
        section, _, name = target.rpartition(".")
        sections[section][name] = value
    settings = Settings(
        data_dir=data_dir,
        smtp=SmtpSettings(**sections["smtp"]),
        mail=MailPolicy(**sections["mail"]),
        **sections[""],
    )
    _check_files(settings)
    return settings
