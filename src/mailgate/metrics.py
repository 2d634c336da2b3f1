"""Prometheus metrics shared by the API and the delivery workers of one process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACCEPTED = Counter("mailgate_mails_accepted_total", "Mails accepted by the API")
REFUSED = Counter("mailgate_api_refusals_total", "API calls refused, by status", ["status"])
ATTEMPTS = Counter("mailgate_delivery_attempts_total", "Delivery attempts, by outcome", ["outcome"])
FAILURES = Counter(
    "mailgate_delivery_failures_total", "Failed attempts, by class (temporary/permanent)", ["cls"]
)
DELIVERY_LATENCY = Histogram(
    "mailgate_delivery_latency_seconds",
    "From acceptance to the relay's acceptance (or capture)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
)
QUEUE_DEPTH = Gauge("mailgate_queue_depth", "Outgoing mails by status", ["status"])
OLDEST_DUE_AGE = Gauge("mailgate_oldest_due_age_seconds", "Age of the oldest mail waiting now")
SMTP_CONNECTIONS = Gauge("mailgate_smtp_connections_open", "Open SMTP connections to the relay")
SMTP_SESSIONS = Counter("mailgate_smtp_sessions_total", "SMTP sessions opened to the relay")
DELIVERY_LIMIT = Gauge(
    "mailgate_delivery_concurrency_limit",
    "Deliveries allowed at once now (below the setting while deliveries only queue)",
)
