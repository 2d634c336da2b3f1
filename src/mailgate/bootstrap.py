"""The demo created on an empty database, so a first `curl` works at once."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.store import directory


@dataclass(frozen=True)
class Demo:
    site_id: int
    record_id: int
    login: str
    api_key: str


async def create_demo_if_empty(engine: AsyncEngine) -> Demo | None:
    """Create a site, a record and a user who may send mail from it; None if not empty."""
    async with engine.begin() as conn:
        if not await directory.is_empty(conn):
            return None
        site_id = await directory.add_site(conn, "Demo site")
        record_id = await directory.add_record(conn, site_id, "Demo record")
        await directory.add_user(conn, "demo", "Demo User", ["demo@example.com"], None)
        await directory.grant(conn, site_id, "demo", read=True, send_mail=True)
        api_key = await directory.create_key(conn, "demo")
    return Demo(site_id, record_id, "demo", api_key)


def curl_command(demo: Demo, base_url: str) -> str:
    body = {
        "ApiVersion": 1.1,
        "ApiKey": demo.api_key,
        "To": "someone@example.com",
        "Cc": "",
        "Bcc": "",
        "Title": "This is a test of the email sending API.",
        "Body": "We are sending an email as a test of the email sending API.",
        "Attachments": [
            {"Name": "sample1.txt", "Base64": "c2FtcGxlMS50eHQ=", "ContentType": "text/plain"}
        ],
    }
    url = f"{base_url}/api/items/{demo.record_id}/OutgoingMails/Send"
    return (
        f"curl -sS -X POST {shlex.quote(url)} -H 'Content-Type: application/json' "
        f"-d {shlex.quote(json.dumps(body, ensure_ascii=False))}"
    )
