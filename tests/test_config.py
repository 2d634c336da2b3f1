"""Configuration loading: TOML file, Pleasanter parameter files, environment and CLI layering."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailgate.config import ConfigError, DkimKey, MailPolicy, SmtpSettings, load_settings

# As an administrator edits Pleasanter's App_Data/Parameters/Mail.json: BOM, comments, trailing
# commas, keys mailgate does not use (OAuth) and a few nulls.
MAIL_JSON = """\ufeff{
    // Relay of the head office; the certificate is self-signed.
    "SmtpHost": "smtp.example.co.jp",
    "SmtpPort": 587,
    "SmtpUserName": "pleasanter@example.co.jp",
    "SmtpPassword": "Pa55-w0rd!",
    "SmtpEnableSsl": true,
    "ServerCertificateValidationCallback": true,
    "SecureSocketOptions": "StartTlsWhenAvailable",
    "UseOAuth": false,
    "OAuthClientId": null,
    "OAuthTokenRefreshBufferTime": 300,
    /* Senders allowed to appear in From */
    "FixedFrom": "\\"Pleasanter\\" <noreply@example.co.jp>",
    "AllowedFrom": [
        "alice@example.co.jp",
        "bob@example.co.jp",
    ],
    "SupportFrom": "\\"Pleasanter.org\\" <support@pleasanter.org>",
    "InternalDomains": "Example.co.jp, example.com",
    "Encoding": "ISO-2022-JP",
    "ContentEncoding": "Base64",
}
"""

API_JSON = """\ufeff{
    "Version": 1.1,
    "Enabled": false,
    "PageSize": 200,
    "LimitPerSite": 100, // requests per site and day
}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def parameters(tmp_path: Path) -> Path:
    folder = tmp_path / "Parameters"
    write(folder / "Mail.json", MAIL_JSON)
    write(folder / "Api.json", API_JSON)
    return folder


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(environ={})

    assert settings.data_dir == tmp_path / "mailgate-data"
    assert settings.database_url == f"sqlite:///{tmp_path}/mailgate-data/mailgate.db"
    assert settings.transport == "capture"
    assert settings.smtp == SmtpSettings()
    assert (settings.smtp.max_mails_per_connection, settings.smtp.idle_timeout) == (100, 60.0)
    assert settings.smtp.ca_file is None
    assert settings.mail == MailPolicy()
    assert settings.dkim == ()
    assert (settings.host, settings.port, settings.base_path) == ("127.0.0.1", 8080, "")


def test_pleasanter_files_as_shipped(parameters: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mailgate.config"):
        settings = load_settings(environ={"MAILGATE_PLEASANTER_PARAMETERS": str(parameters)})

    assert settings.smtp == SmtpSettings(
        host="smtp.example.co.jp",
        port=587,
        user="pleasanter@example.co.jp",
        password="Pa55-w0rd!",
        security="opportunistic",
        verify_certificate=False,
    )
    assert settings.transport == "smtp"
    assert settings.mail == MailPolicy(
        fixed_from='"Pleasanter" <noreply@example.co.jp>',
        allowed_from=("alice@example.co.jp", "bob@example.co.jp"),
        support_from='"Pleasanter.org" <support@pleasanter.org>',
        internal_domains=("example.co.jp", "example.com"),
        charset="iso-2022-jp",
        transfer_encoding="base64",
    )
    assert settings.api_enabled is False
    assert settings.limit_per_site == 100

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    mail_warning, api_warning = warnings
    assert str(parameters / "Mail.json") in mail_warning
    assert "UseOAuth" in mail_warning and "OAuthTokenRefreshBufferTime" in mail_warning
    assert str(parameters / "Api.json") in api_warning
    assert "Version" in api_warning and "PageSize" in api_warning
    assert "Enabled" not in api_warning


@pytest.mark.parametrize(
    ("options", "enable_ssl", "security"),
    [
        ('"None"', "true", "none"),
        ('"Auto"', "false", "auto"),
        ('"SslOnConnect"', "false", "tls"),
        ('"StartTls"', "false", "starttls"),
        ('"starttlswhenavailable"', "false", "opportunistic"),
        # Without SecureSocketOptions Pleasanter's Smtp.cs uses StartTls or None.
        ("null", "true", "starttls"),
        ("null", "false", "none"),
    ],
)
def test_secure_socket_options(
    tmp_path: Path, options: str, enable_ssl: str, security: str
) -> None:
    write(
        tmp_path / "p" / "Mail.json",
        f'{{"SmtpHost": "relay", "SmtpEnableSsl": {enable_ssl}, "SecureSocketOptions": {options}}}',
    )

    settings = load_settings(environ={"MAILGATE_PLEASANTER_PARAMETERS": str(tmp_path / "p")})

    assert settings.smtp.security == security


def test_missing_parameter_file_is_skipped(tmp_path: Path) -> None:
    write(tmp_path / "p" / "Api.json", '{"LimitPerSite": 5}')

    settings = load_settings(environ={"MAILGATE_PLEASANTER_PARAMETERS": str(tmp_path / "p")})

    assert settings.limit_per_site == 5
    assert settings.smtp == SmtpSettings()


def test_layering_toml_then_pleasanter_then_env_then_cli(tmp_path: Path, parameters: Path) -> None:
    config = write(
        tmp_path / "etc" / "mailgate.toml",
        f"""
        data_dir = "toml-data"
        pleasanter_parameters = "{parameters}"

        [smtp]
        host = "toml.example"
        port = 2525
        timeout = 5

        [mail]
        internal_domains = ["toml.example"]

        [delivery]
        concurrency = 4
        """,
    )
    environ = {"MAILGATE_SMTP_PORT": "2626", "MAILGATE_DATA_DIR": "env-data"}

    settings = load_settings(config, environ=environ)
    assert settings.delivery_concurrency == 4  # TOML only
    assert settings.smtp.timeout == 5.0  # TOML only
    assert settings.smtp.host == "smtp.example.co.jp"  # Pleasanter over TOML
    assert settings.mail.internal_domains == ("example.co.jp", "example.com")
    assert settings.smtp.port == 2626  # environment over Pleasanter
    assert settings.data_dir == tmp_path / "env-data"  # environment over TOML

    settings = load_settings(config, data_dir=Path("cli-data"), environ=environ)
    assert settings.data_dir == tmp_path / "cli-data"  # CLI over environment
    assert settings.database_url == f"sqlite:///{tmp_path}/cli-data/mailgate.db"


def test_null_and_empty_in_pleasanter_files_leave_earlier_values(tmp_path: Path) -> None:
    write(
        tmp_path / "p" / "Mail.json",
        '{"SmtpHost": "", "SupportFrom": null, "InternalDomains": "", "Encoding": null}',
    )
    config = write(
        tmp_path / "mailgate.toml",
        f"""
        pleasanter_parameters = "{tmp_path / "p"}"
        [smtp]
        host = "toml.example"
        [mail]
        support_from = "support@toml.example"
        internal_domains = "toml.example"
        encoding = "iso-2022-jp"
        """,
    )

    settings = load_settings(config, environ={})

    assert settings.smtp.host == "toml.example"
    assert settings.mail.support_from == "support@toml.example"
    assert settings.mail.internal_domains == ("toml.example",)
    assert settings.mail.charset == "iso-2022-jp"


def test_config_file_from_environment_and_paths_relative_to_it(tmp_path: Path) -> None:
    config = write(tmp_path / "etc" / "mailgate.toml", 'data_dir = "data"\n[server]\nport = 9000\n')

    settings = load_settings(environ={"MAILGATE_CONFIG": str(config)})

    assert settings.port == 9000
    assert settings.data_dir == tmp_path / "etc" / "data"


def test_environment_values_are_parsed() -> None:
    settings = load_settings(
        environ={
            "MAILGATE_SMTP_HOST": "relay.example",
            "MAILGATE_SMTP_SECURITY": "StartTLS",
            "MAILGATE_SMTP_VERIFY_CERTIFICATE": "off",
            "MAILGATE_API_ENABLED": "No",
            "MAILGATE_CHECK_CONTENT_TYPE": "1",
            "MAILGATE_RETRY_FACTOR": "2.5",
            "MAILGATE_INTERNAL_DOMAINS": "A.example, b.example,",
            "MAILGATE_MAIL_ENCODING": "UTF8",
            "MAILGATE_DEFAULT_LANGUAGE": "ja",
            "MAILGATE_BASE_PATH": "fs/",
            "MAILGATE_DATABASE_URL": "postgresql://mailgate@db/mailgate",
            "MAILGATE_FIXED_FROM": "",  # empty means unset
        }
    )

    assert settings.smtp.security == "starttls"
    assert settings.smtp.verify_certificate is False
    assert settings.api_enabled is False
    assert settings.check_content_type is True
    assert settings.retry_factor == 2.5
    assert settings.mail.internal_domains == ("a.example", "b.example")
    assert settings.mail.charset == "utf-8"
    assert settings.mail.fixed_from is None
    assert settings.default_language == "ja"
    assert settings.base_path == "/fs"
    assert settings.database_url == "postgresql://mailgate@db/mailgate"


@pytest.mark.parametrize(
    ("value", "expected"), [("", ""), ("/", ""), ("/fs", "/fs"), ("fs/", "/fs"), ("/a//b/", "/a/b")]
)
def test_base_path_is_normalised(value: str, expected: str) -> None:
    config = Path("mailgate.toml")
    config.write_text(f'base_path = "{value}"\n', encoding="utf-8")

    assert load_settings(config, environ={}).base_path == expected


@pytest.mark.parametrize(
    ("environ", "transport"),
    [
        ({}, "capture"),
        ({"MAILGATE_SMTP_HOST": "relay.example"}, "smtp"),
        ({"MAILGATE_SMTP_HOST": "relay.example", "MAILGATE_TRANSPORT": "capture"}, "capture"),
        ({"MAILGATE_SMTP_HOST": "relay.example", "MAILGATE_TRANSPORT": "SMTP"}, "smtp"),
    ],
)
def test_transport_default(environ: dict[str, str], transport: str) -> None:
    assert load_settings(environ=environ).transport == transport


def test_smtp_transport_needs_a_host() -> None:
    with pytest.raises(ConfigError, match="no SMTP host"):
        load_settings(environ={"MAILGATE_TRANSPORT": "smtp"})


def test_secrets_are_not_in_repr(parameters: Path) -> None:
    settings = load_settings(
        environ={
            "MAILGATE_PLEASANTER_PARAMETERS": str(parameters),
            "MAILGATE_DATABASE_URL": "postgresql://mailgate:db-secret@db/mailgate",
        }
    )

    assert settings.smtp.password == "Pa55-w0rd!"
    text = repr(settings)
    assert "Pa55-w0rd!" not in text
    assert "db-secret" not in text
    assert "smtp.example.co.jp" in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILGATE_SMTP_PORT", "smtp"),
        ("MAILGATE_SMTP_PORT", "70000"),
        ("MAILGATE_PORT", "0"),
        ("MAILGATE_API_ENABLED", "maybe"),
        ("MAILGATE_SMTP_SECURITY", "ssl"),
        ("MAILGATE_TRANSPORT", "sendmail"),
        ("MAILGATE_DEFAULT_LANGUAGE", "fr"),
        ("MAILGATE_MAIL_ENCODING", "shift_jis"),
        ("MAILGATE_RETRY_BASE_DELAY", "-1"),
        ("MAILGATE_LEASE_SECONDS", "nan"),
        ("MAILGATE_DELIVERY_CONCURRENCY", "0"),
        ("MAILGATE_LIMIT_PER_SITE", "-1"),
        ("MAILGATE_MESSAGE_ID_DOMAIN", "not a domain"),
        ("MAILGATE_SMTP_MAX_MAILS_PER_CONNECTION", "0"),
        ("MAILGATE_SMTP_IDLE_TIMEOUT", "0"),
        ("MAILGATE_DKIM_DOMAIN", "example..com/"),
        ("MAILGATE_DKIM_SELECTOR", "mail 2024"),
    ],
)
def test_bad_environment_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: .*{value}"):
        load_settings(environ={name: value})


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("colour = 'blue'\n", "'colour'"),
        ("[smtp]\nhots = 'relay'\n", "'smtp.hots'"),
        ("[smtp.tls]\nca = 'x'\n", "'smtp.tls'"),
        ("[retry]\nfactor = 2\n", "'retry'"),
    ],
)
def test_unknown_toml_key(toml: str, key: str) -> None:
    config = write(Path("mailgate.toml"), toml)

    with pytest.raises(ConfigError, match=re.escape(f"mailgate.toml: unknown key {key}")):
        load_settings(config, environ={})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[smtp]\nport = '25'\n", "smtp.port: expected an integer, got str"),
        ("[api]\nenabled = 'yes'\n", "api.enabled: expected true or false, got str"),
        ("[mail]\nallowed_from = [1]\n", "mail.allowed_from: expected a list of strings"),
        ("smtp = 'relay'\n", "'smtp' must be a table"),
        ("data_dir = ''\n", "data_dir: must not be empty"),
        ("[smtp]\nport = \n", "invalid TOML"),
    ],
)
def test_bad_toml_value(toml: str, message: str) -> None:
    config = write(Path("mailgate.toml"), toml)

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(config, environ={})


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.toml: config file not found"):
        load_settings(Path("nowhere.toml"), environ={})


def test_malformed_pleasanter_file_names_the_file_and_position(tmp_path: Path) -> None:
    mail = write(tmp_path / "p" / "Mail.json", '{\n    "SmtpHost": "relay",\n    "SmtpPort": ,\n}')

    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILGATE_PLEASANTER_PARAMETERS": str(tmp_path / "p")})

    assert str(caught.value).startswith(f"{mail}: malformed JSON: line 3, column 17")


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("Api.json", "[1, 2]", "Api.json: expected a JSON object, got list"),
        ("Api.json", "", "Api.json: malformed JSON"),
        ("Api.json", '{"LimitPerSite": "many"}', "Api.json: LimitPerSite: expected an integer"),
        ("Mail.json", '{"SmtpPort": 99999}', "Mail.json: SmtpPort: must be a port number"),
        ("Mail.json", '{"SecureSocketOptions": "Tls"}', "SecureSocketOptions: unknown value"),
        ("Mail.json", '{"SmtpEnableSsl": "yes"}', "SmtpEnableSsl: expected true or false"),
        ("Mail.json", '{"ContentEncoding": "UUEncode"}', "ContentEncoding: unsupported"),
        ("Mail.json", '{"Encoding": "Shift_JIS"}', "Encoding: unsupported charset"),
    ],
)
def test_bad_pleasanter_file(tmp_path: Path, file: str, text: str, message: str) -> None:
    write(tmp_path / "p" / file, text)

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(environ={"MAILGATE_PLEASANTER_PARAMETERS": str(tmp_path / "p")})


def test_missing_pleasanter_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Pleasanter parameters folder not found"):
        load_settings(environ={"MAILGATE_PLEASANTER_PARAMETERS": str(tmp_path / "missing")})


@pytest.fixture(scope="module")
def ca_pem() -> bytes:
    return trustme.CA().cert_pem.bytes()


def test_smtp_tls_and_pool_settings_from_environment(tmp_path: Path, ca_pem: bytes) -> None:
    ca_file = tmp_path / "company-ca.pem"
    ca_file.write_bytes(ca_pem)

    settings = load_settings(
        environ={
            "MAILGATE_SMTP_CA_FILE": str(ca_file),
            "MAILGATE_SMTP_MAX_MAILS_PER_CONNECTION": "1",
            "MAILGATE_SMTP_IDLE_TIMEOUT": "2.5",
        }
    )

    assert settings.smtp.ca_file == ca_file
    assert settings.smtp.max_mails_per_connection == 1
    assert settings.smtp.idle_timeout == 2.5


def test_smtp_tls_and_pool_settings_from_toml(tmp_path: Path, ca_pem: bytes) -> None:
    (tmp_path / "etc" / "tls").mkdir(parents=True)
    (tmp_path / "etc" / "tls" / "ca.pem").write_bytes(ca_pem)
    config = write(
        tmp_path / "etc" / "mailgate.toml",
        """
        [smtp]
        ca_file = "tls/ca.pem"
        max_mails_per_connection = 20
        idle_timeout = 30
        """,
    )

    settings = load_settings(config, environ={})

    assert settings.smtp.ca_file == tmp_path / "etc" / "tls" / "ca.pem"
    assert settings.smtp.max_mails_per_connection == 20
    assert settings.smtp.idle_timeout == 30.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read SMTP CA file: No such file"),
        (b"not a certificate", "SMTP CA file holds no PEM certificate"),
    ],
)
def test_unusable_ca_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    ca_file = tmp_path / "ca.pem"
    if content is not None:
        ca_file.write_bytes(content)

    with pytest.raises(ConfigError, match=re.escape(f"{ca_file}: {message}")):
        load_settings(environ={"MAILGATE_SMTP_CA_FILE": str(ca_file)})


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def key_file(path: Path, pem: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    return path


def test_dkim_keys_from_toml_and_environment(tmp_path: Path, rsa_pem: bytes) -> None:
    key_file(tmp_path / "etc" / "keys" / "com.pem", rsa_pem)
    # Written on Windows: CRLF line ends.
    key_file(tmp_path / "etc" / "keys" / "org.pem", rsa_pem.replace(b"\n", b"\r\n"))
    env_key = key_file(tmp_path / "env.pem", rsa_pem)
    config = write(
        tmp_path / "etc" / "mailgate.toml",
        """
        [[dkim]]
        domain = "Example.COM"
        selector = "mail"
        key_file = "keys/com.pem"

        [[dkim]]
        domain = "example.org"
        selector = "s1"
        key_file = "keys/org.pem"
        """,
    )
    toml_keys = (
        DkimKey("example.com", "mail", tmp_path / "etc" / "keys" / "com.pem"),
        DkimKey("example.org", "s1", tmp_path / "etc" / "keys" / "org.pem"),
    )

    assert load_settings(config, environ={}).dkim == toml_keys

    environ = {
        "MAILGATE_DKIM_DOMAIN": "example.org",
        "MAILGATE_DKIM_SELECTOR": "s2",
        "MAILGATE_DKIM_KEY_FILE": str(env_key),
    }
    # The environment's key replaces the file's for the same domain and keeps the others.
    assert load_settings(config, environ=environ).dkim == (
        toml_keys[0],
        DkimKey("example.org", "s2", env_key),
    )
    environ["MAILGATE_DKIM_DOMAIN"] = "example.net"
    assert load_settings(config, environ=environ).dkim == (
        *toml_keys,
        DkimKey("example.net", "s2", env_key),
    )


def test_dkim_environment_needs_all_three() -> None:
    message = (
        "MAILGATE_DKIM_SELECTOR, MAILGATE_DKIM_KEY_FILE: must be set too when "
        "MAILGATE_DKIM_DOMAIN is (a DKIM key needs all three)"
    )

    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_settings(environ={"MAILGATE_DKIM_DOMAIN": "example.com"})


def short_rsa_pem() -> bytes:
    """A 648-bit RSA key, below what cryptography generates, from two Mersenne primes."""
    p, q, e = 2**521 - 1, 2**127 - 1, 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def encrypted_rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


def ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


NOT_A_KEY = "not an unencrypted RSA private key in PEM"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (None, "cannot read DKIM key file: No such file"),
        (lambda: b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGdhcmJhZ2U=\n-----END", NOT_A_KEY),
        (encrypted_rsa_pem, NOT_A_KEY),
        (ec_pem, NOT_A_KEY),
        (short_rsa_pem, "DKIM key has 648 bits; at least 1024 needed, 2048 advised"),
    ],
    ids=["missing", "garbage", "encrypted", "ec", "short"],
)
def test_unusable_dkim_key_names_the_file_not_its_content(
    tmp_path: Path, make: Callable[[], bytes] | None, message: str
) -> None:
    path = tmp_path / "dkim.pem"
    content = b""
    if make is not None:
        content = key_file(path, make()).read_bytes()
    environ = {
        "MAILGATE_DKIM_DOMAIN": "example.com",
        "MAILGATE_DKIM_SELECTOR": "mail",
        "MAILGATE_DKIM_KEY_FILE": str(path),
    }

    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")) as caught:
        load_settings(environ=environ)

    error = str(caught.value).encode()
    assert all(line not in error for line in content.splitlines()[1:-1])


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[dkim]\ndomain = 'example.com'\n", "'dkim' must be an array of tables ([[dkim]])"),
        ("[[dkim]]\ndomain = 'example.com'\nselector = 'mail'\n", "dkim[0]: missing key_file"),
        (
            "[[dkim]]\ndomain = 'example.com'\nselector = 'mail'\nkey_file = 'k.pem'\nkey = 1\n",
            "dkim[0]: unknown key 'key'",
        ),
        (
            "[[dkim]]\ndomain = 'example.com'\nselector = 'm'\nkey_file = 'k.pem'\n"
            "[[dkim]]\ndomain = 'EXAMPLE.com'\nselector = 'n'\nkey_file = 'k.pem'\n",
            "dkim[1].domain: example.com already has a key",
        ),
        (
            "[[dkim]]\ndomain = 'example.com'\nselector = 5\nkey_file = 'k.pem'\n",
            "dkim[0].selector: expected a string, got int",
        ),
    ],
)
def test_bad_dkim_table(tmp_path: Path, rsa_pem: bytes, toml: str, message: str) -> None:
    key_file(tmp_path / "k.pem", rsa_pem)
    config = write(tmp_path / "mailgate.toml", toml)

    with pytest.raises(ConfigError, match=re.escape(f"{config}: {message}")):
        load_settings(config, environ={})
