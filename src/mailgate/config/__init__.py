"""Configuration: defaults, TOML file, Pleasanter parameter files and environment variables."""

from mailgate.config.settings import (
    ConfigError,
    DkimKey,
    MailPolicy,
    Settings,
    SmtpSettings,
    load_settings,
    read_dkim_key,
)

__all__ = [
    "ConfigError",
    "DkimKey",
    "MailPolicy",
    "Settings",
    "SmtpSettings",
    "load_settings",
    "read_dkim_key",
]
