"""From the HTTP API to a real SMTP relay, through `mailgate serve` in its own process."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailgate.store import history
from mailgate.store.db import create_engine
from tests.support.cli import mailgate, mailgate_json
from tests.support.relay import Relay
from tests.support.servers import ServeProcess


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        "MAILGATE_DATA_DIR": str(tmp_path / "data"),
        "MAILGATE_DATABASE_URL": database_url,
        "MAILGATE_CONFIG": "",
        "MAILGATE_PLEASANTER_PARAMETERS": "",
        "MAILGATE_SMTP_HOST": "",
        "MAILGATE_TRANSPORT": "",
    }


@pytest.fixture
def servers() -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for server in started:
        server.stop()


def start(
    servers: list[ServeProcess], env: dict[str, str], tmp_path: Path, *extra: str
) -> ServeProcess:
    server = ServeProcess(env, tmp_path / f"serve-{len(servers)}.log", list(extra))
    servers.append(server)
    return server.start()


def demo_of(server: ServeProcess) -> tuple[int, str]:
    """The record id and API key that `serve` printed for the demo."""
    out = server.output()
    key = re.search(r"API key \(shown only now\): ([0-9a-f]{128})", out)
    record = re.search(r"record (\d+)", out)
    assert key and record, out
    return int(record.group(1)), key.group(1)


def post(server: ServeProcess, record: int, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/items/{record}/OutgoingMails/Send", json=payload, timeout=30
    )


def wait_status(env: dict[str, str], mail_id: int, statuses: set[str], timeout: float = 20) -> Any:
    """Poll the store directly (the CLI costs a second per call), as `mails show` reads it."""

    async def poll() -> Any:
        engine = create_engine(env["MAILGATE_DATABASE_URL"])
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                async with engine.connect() as conn:
                    shown = await history.show_mail(conn, mail_id)
                if shown is not None and shown["status"] in statuses:
                    return shown
                await asyncio.sleep(0.1)
            raise AssertionError(f"mail {mail_id} did not reach {statuses}: {shown}")
        finally:
            await engine.dispose()

    return asyncio.run(poll())


PDF = bytes(range(256)) * 40 + b"\r\n.\r\n\n.\n"  # binary, with a lone '.' line and bare LFs


def test_mail_arrives_intact_at_the_relay(
    env: dict[str, str], tmp_path: Path, servers: list[ServeProcess], relay: Relay
) -> None:
    env |= {"MAILGATE_SMTP_HOST": "127.0.0.1", "MAILGATE_SMTP_PORT": str(relay.port)}
    server = start(servers, env, tmp_path)
    record, key = demo_of(server)
    response = post(
        server,
        record,
        {
            "ApiVersion": 1.1,
            "ApiKey": key,
            "To": '"山田, 太郎" <taro@example.com>; jiro@example.com',
            "Cc": "cc@example.com",
            "Bcc": "hidden@example.com",
            "Title": "会議のお知らせ",
            "Body": "明日10時から会議です。\nよろしくお願いします。",
            "Attachments": [
                {
                    "Name": "見積書.pdf",
                    "Base64": base64.b64encode(PDF).decode(),
                    "ContentType": "application/pdf",
                },
                {"Name": "", "Base64": base64.b64encode(b"plain\n").decode(), "ContentType": ""},
            ],
        },
    )
    assert response.json() == {"Id": record, "StatusCode": 200, "Message": "Email sent."}
    (got,) = relay.wait_for(1)
    assert got.mail_from == "demo@example.com"
    assert sorted(got.rcpt_tos) == sorted(
        ["taro@example.com", "jiro@example.com", "cc@example.com", "hidden@example.com"]
    )
    assert b"\n" not in got.data.replace(b"\r\n", b"")
    message = got.message()
    assert message["Subject"] == "会議のお知らせ"
    assert message["From"] == "Demo User <demo@example.com>"
    assert message["To"].addresses[0].display_name == "山田, 太郎"
    assert message["Cc"] == "cc@example.com"
    assert "hidden@example.com" not in got.data.decode("ascii", "replace")
    assert message["Bcc"] is None
    assert message["Message-ID"] and message["Date"]
    body = message.get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n").rstrip("\n") == (
        "明日10時から会議です。\nよろしくお願いします。"
    )
    files = list(message.iter_attachments())
    assert [f.get_filename() for f in files] == ["見積書.pdf", "NoName"]
    assert files[0].get_content_type() == "application/pdf"
    assert files[0].get_payload(decode=True) == PDF
    assert files[1].get_content_type() == "text/plain"
    assert files[1].get_payload(decode=True) == b"plain\n"

    listed = mailgate_json("mails", "list", env=env)
    assert listed[0]["status"] == "sent" and listed[0]["record_id"] == record
    assert listed[0]["bcc"] == "hidden@example.com"
    shown = wait_status(env, listed[0]["id"], {"sent"})
    assert [e["event"] for e in shown["events"]] == ["queued", "sent"]


def test_iso_2022_jp(
    env: dict[str, str], tmp_path: Path, servers: list[ServeProcess], relay: Relay
) -> None:
    env |= {
        "MAILGATE_SMTP_HOST": "127.0.0.1",
        "MAILGATE_SMTP_PORT": str(relay.port),
        "MAILGATE_MAIL_ENCODING": "iso-2022-jp",
    }
    server = start(servers, env, tmp_path)
    record, key = demo_of(server)
    payload = {"ApiKey": key, "To": "a@example.com", "Title": "件名テスト", "Body": "本文です。"}
    assert post(server, record, payload).status_code == 200
    (got,) = relay.wait_for(1)
    assert got.data.isascii()
    message = got.message()
    assert message["Subject"] == "件名テスト"
    assert message.get_content_charset() == "iso-2022-jp"
    assert message.get_content().strip() == "本文です。"


def test_capture_when_no_relay_is_configured(
    env: dict[str, str], tmp_path: Path, servers: list[ServeProcess]
) -> None:
    server = start(servers, env, tmp_path)
    record, key = demo_of(server)
    response = post(server, record, {"ApiKey": key, "To": "a@example.com", "Title": "Hi"})
    assert response.status_code == 200
    mail_id = mailgate_json("mails", "list", env=env)[0]["id"]
    shown = wait_status(env, mail_id, {"captured"})
    assert shown["sent_at"] is not None
    raw = mailgate("mails", "show", str(mail_id), "--raw", env=env).stdout
    assert "Subject: Hi" in raw and "To: a@example.com" in raw


def test_sigkill_before_delivery_then_delivered_exactly_once(
    env: dict[str, str], tmp_path: Path, servers: list[ServeProcess], relay: Relay
) -> None:
    env |= {"MAILGATE_SMTP_HOST": "127.0.0.1", "MAILGATE_SMTP_PORT": str(relay.port)}
    api_only = start(servers, env, tmp_path, "--no-worker")
    record, key = demo_of(api_only)
    for i in range(5):
        payload = {"ApiKey": key, "To": f"user{i}@example.com", "Title": f"mail {i}"}
        assert post(api_only, record, payload).status_code == 200
    api_only.kill()
    assert relay.received == []
    start(servers, env, tmp_path)
    relay.wait_for(5)
    time.sleep(1.5)  # anything extra would arrive now
    assert sorted(r.message()["Subject"] for r in relay.received) == [f"mail {i}" for i in range(5)]


def test_sigkill_during_delivery_lease_is_taken_over(
    env: dict[str, str], tmp_path: Path, servers: list[ServeProcess], relay: Relay
) -> None:
    relay.handler.delay = 3.0  # the relay holds the DATA reply while we kill the server
    env |= {
        "MAILGATE_SMTP_HOST": "127.0.0.1",
        "MAILGATE_SMTP_PORT": str(relay.port),
        "MAILGATE_LEASE_SECONDS": "2",
    }
    first = start(servers, env, tmp_path)
    record, key = demo_of(first)
    assert (
        post(first, record, {"ApiKey": key, "To": "a@example.com", "Title": "x"}).status_code == 200
    )
    time.sleep(1.0)
    first.kill()
    relay.handler.delay = 0
    time.sleep(2.5)  # the dead server's message never completed DATA
    assert relay.received == []
    start(servers, env, tmp_path)
    relay.wait_for(1, timeout=20)
    time.sleep(1.0)
    assert len(relay.received) == 1


def test_temporary_failure_is_retried_and_permanent_is_recorded(
    env: dict[str, str], tmp_path: Path, servers: list[ServeProcess], relay: Relay
) -> None:
    refusals = iter(["451 4.3.0 Try again later"])
    relay.handler.data_reply = lambda envelope: next(refusals, None)
    relay.handler.rcpt_replies["nobody@example.com"] = "550 5.1.1 No such user"
    env |= {
        "MAILGATE_SMTP_HOST": "127.0.0.1",
        "MAILGATE_SMTP_PORT": str(relay.port),
        "MAILGATE_RETRY_BASE_DELAY": "0.5",
    }
    server = start(servers, env, tmp_path)
    record, key = demo_of(server)
    assert post(server, record, {"ApiKey": key, "To": "a@example.com"}).status_code == 200
    relay.wait_for(1)
    first = mailgate_json("mails", "list", env=env)[0]
    shown = wait_status(env, first["id"], {"sent"})
    assert [e["event"] for e in shown["events"]] == ["queued", "deferred", "sent"]
    assert "451 4.3.0 Try again later" in shown["events"][1]["detail"]
    assert shown["attempts"] == 2

    assert post(server, record, {"ApiKey": key, "To": "nobody@example.com"}).status_code == 200
    failed_id = mailgate_json("mails", "list", env=env)[0]["id"]
    failed = wait_status(env, failed_id, {"failed"})
    assert "550 5.1.1 No such user" in failed["last_error"]

    del relay.handler.rcpt_replies["nobody@example.com"]
    assert mailgate_json("mails", "retry", str(failed_id), env=env) == {
        "id": failed_id,
        "status": "queued",
    }
    resent = wait_status(env, failed_id, {"sent"})
    assert [e["event"] for e in resent["events"]] == ["queued", "failed", "retried", "sent"]
    assert resent["attempts"] == 1  # a fresh schedule after the manual retry
    again = mailgate("mails", "retry", str(failed_id), env=env, check=False)
    assert again.returncode != 0 and "only failed or dead" in again.stderr


def test_operations_endpoints(
    env: dict[str, str], tmp_path: Path, servers: list[ServeProcess]
) -> None:
    server = start(servers, env, tmp_path)
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").status_code == 200
    metrics = httpx.get(server.url + "/metrics")
    assert metrics.status_code == 200
    assert 'mailgate_queue_depth{status="queued"}' in metrics.text
    assert "mailgate_delivery_concurrency_limit 16.0" in metrics.text
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/api/{reference}/{id}/OutgoingMails/Send" in spec["paths"]
    assert httpx.get(server.url + "/docs").status_code == 200


def test_printed_curl_works(
    env: dict[str, str], tmp_path: Path, servers: list[ServeProcess]
) -> None:
    import shlex
    import subprocess

    server = start(servers, env, tmp_path)
    line = next(line for line in server.output().splitlines() if line.strip().startswith("curl "))
    args = shlex.split(line.strip())
    args = [a.replace("localhost", "127.0.0.1") for a in args]
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert '"StatusCode":200' in result.stdout, result.stdout + result.stderr


def test_sigterm_exits_cleanly(
    env: dict[str, str], tmp_path: Path, servers: list[ServeProcess]
) -> None:
    server = start(servers, env, tmp_path)
    assert server.terminate() == 0
    assert "Traceback" not in server.output()


MAIL_JSON = """\ufeff{
    // Pleasanter's Mail.json, as an operator edited it
    "SmtpHost": "127.0.0.1",
    "SmtpPort": %d,
    "SmtpUserName": null,
    "SmtpPassword": null,
    "SmtpEnableSsl": false,
    "ServerCertificateValidationCallback": false,
    "SecureSocketOptions": "None",
    "FixedFrom": "noreply@example.com",
    "AllowedFrom": ["boss@example.com"],
    "SupportFrom": "support@example.com",
    "InternalDomains": "",
    "Encoding": null,
    "ContentEncoding": null,
    "UseOAuth": false,   /* not used by mailgate */
}
"""
API_JSON = """{
    "Enabled": true,
    "LimitPerSite": 3,
    "PageSize": 200,
}
"""


def test_pleasanter_parameter_files_are_honoured(
    env: dict[str, str], tmp_path: Path, servers: list[ServeProcess], relay: Relay
) -> None:
    params = tmp_path / "App_Data" / "Parameters"
    params.mkdir(parents=True)
    (params / "Mail.json").write_text(MAIL_JSON % relay.port, encoding="utf-8")
    (params / "Api.json").write_text(API_JSON, encoding="utf-8")
    env |= {"MAILGATE_PLEASANTER_PARAMETERS": str(params)}
    server = start(servers, env, tmp_path)
    record, key = demo_of(server)
    answer = post(server, record, {"ApiKey": key, "To": "a@example.com", "Title": "t"}).json()
    assert answer == {
        "Id": record, "StatusCode": 200, "LimitPerDate": 3, "LimitRemaining": 2,
        "Message": "Email sent.",
    }  # fmt: skip
    allowed = {"ApiKey": key, "From": "boss@example.com", "To": "b@example.com", "Title": "b"}
    assert post(server, record, allowed).status_code == 200
    received = {r.message()["Subject"]: r for r in relay.wait_for(2)}
    assert received["t"].message()["From"] == "noreply@example.com"
    assert received["t"].mail_from == "noreply@example.com"
    assert received["b"].message()["From"] == "boss@example.com"
    history = {m["title"]: m for m in mailgate_json("mails", "list", env=env)}
    assert history["t"]["from"] == "Demo User <demo@example.com>"  # before FixedFrom
    assert "UseOAuth" in server.output()  # the ignored key is named in a warning
