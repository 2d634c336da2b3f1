"""mailgate: a Pleasanter-compatible email-sending API with a durable outbox."""

__version__ = "0.1.0"
