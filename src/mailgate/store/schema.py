"""Tables: the directory (users, keys, sites, records, permissions) and the outbox."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Stable constraint names so Alembic renders the same schema on SQLite and PostgreSQL.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BigInteger ids render as INTEGER PRIMARY KEY on SQLite (rowid alias) and BIGINT on PostgreSQL.
Id = BigInteger().with_variant(Integer(), "sqlite")

users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("login", String(256), nullable=False, unique=True),
    Column("name", String(256), nullable=False),
    Column("language", String(8), nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime, nullable=False),
)

user_addresses = Table(
    "user_addresses",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("address", String(320), nullable=False),
    Column("position", Integer, nullable=False),
    UniqueConstraint("user_id", "address"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # SHA-256 of the key: keys are 512 random bits, so a fast hash is enough and stays indexable.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime, nullable=True),
    Index(None, "user_id"),
)

# Sites and records share one ID space, as Pleasanter's Items table does.
items = Table(
    "items",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # "site" or "record"
    Column("site_id", Id, nullable=True),
    Column("created_at", DateTime, nullable=False),
)

sites = Table(
    "sites",
    metadata,
    Column("id", Id, ForeignKey("items.id"), primary_key=True, autoincrement=False),
    Column("title", String(1024), nullable=False),
)

records = Table(
    "records",
    metadata,
    Column("id", Id, ForeignKey("items.id"), primary_key=True, autoincrement=False),
    Column("site_id", Id, ForeignKey("sites.id"), nullable=False),
    Column("title", String(1024), nullable=False),
    Index(None, "site_id"),
)

site_permissions = Table(
    "site_permissions",
    metadata,
    Column("site_id", Id, ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("can_read", Boolean, nullable=False, default=False),
    Column("can_send_mail", Boolean, nullable=False, default=False),
)

# One row per site and calendar day; incremented with a conditional upsert so the daily
# limit holds exactly however many API processes race on it.
api_usage = Table(
    "api_usage",
    metadata,
    Column("site_id", Id, primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("count", Integer, nullable=False),
)

outgoing_mails = Table(
    "outgoing_mails",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("reference_type", String(64), nullable=False),
    Column("record_id", Id, nullable=False),
    Column("site_id", Id, nullable=False),
    Column("user_id", Id, nullable=False),
    # History, as the caller sent it (From before FixedFrom).
    Column("from_addr", Text, nullable=False),
    Column("to_addrs", Text, nullable=False),
    Column("cc_addrs", Text, nullable=False),
    Column("bcc_addrs", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    # What goes on the wire, fixed at acceptance so every attempt sends the same message.
    Column("message_id", String(255), nullable=False),
    Column("header_from", Text, nullable=False),
    Column("header_to", Text, nullable=False),  # JSON list of mailboxes
    Column("header_cc", Text, nullable=False),  # JSON list of mailboxes
    Column("envelope_from", String(320), nullable=False),
    Column("envelope_to", Text, nullable=False),  # JSON list of addresses (To, Cc and Bcc)
    Column("charset", String(32), nullable=False),
    Column("transfer_encoding", String(32), nullable=True),
    Column("created_at", DateTime, nullable=False),
    # Delivery state.
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=True),
    Column("locked_by", String(128), nullable=True),
    Column("locked_until", DateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("sent_at", DateTime, nullable=True),
    Column("updated_at", DateTime, nullable=False),
    # The claim query scans only due rows, in due order.
    Index("ix_outgoing_mails_due", "status", "next_attempt_at"),
    Index(None, "record_id", "id"),
)

mail_attachments = Table(
    "mail_attachments",
    metadata,
    Column("mail_id", Id, ForeignKey("outgoing_mails.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("data", LargeBinary, nullable=False),
)

mail_events = Table(
    "mail_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("mail_id", Id, ForeignKey("outgoing_mails.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("event", String(16), nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("detail", Text, nullable=True),
    Index(None, "mail_id", "id"),
)
