"""Configuration: defaults, TOML file, Pleasanter parameter files and environment variables."""

from mailgate.config.settings import (
    ConfigError,
    MailPolicy,
    Settings,
    SmtpSettings,
    load_settings,
)

__all__ = ["ConfigError", "MailPolicy", "Settings", "SmtpSettings", "load_settings"]
