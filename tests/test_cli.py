"""The command line as an operator uses it, with --json output checked."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

from mailgate.api.app import create_app
from mailgate.config import Settings
from tests.support.cli import mailgate, mailgate_json
from tests.support.servers import ThreadedServer


def test_admin_flow_then_send_and_history(
    tmp_path: Path, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    env = {"MAILGATE_DATA_DIR": str(tmp_path / "data"), "MAILGATE_DATABASE_URL": database_url}
    site = mailgate_json("sites", "add", "--title", "Sales", env=env)
    record = mailgate_json("records", "add", "--site", str(site["id"]), "--title", "Deal", env=env)
    assert record["id"] != site["id"]  # one ID space
    user = mailgate_json(
        "users", "add", "--login", "taro", "--name", "山田 太郎", "--mail", "taro@example.com",
        "--mail", "t@example.org", "--language", "ja", env=env,
    )  # fmt: skip
    assert user["login"] == "taro" and isinstance(user["id"], int)
    rights = mailgate_json(
        "permissions", "grant", "--site", str(site["id"]), "--user", "taro", "--send-mail", env=env
    )
    assert rights == {"site": site["id"], "user": "taro", "rights": ["send-mail"]}
    key = mailgate_json("keys", "create", "--user", "taro", env=env)
    assert key["user"] == "taro" and len(key["api_key"]) == 128

    with ThreadedServer(create_app(make_settings(), run_worker=False)) as server:
        url = f"{server.url}/api/items/{record['id']}/OutgoingMails/Send"
        payload = {"ApiKey": key["api_key"], "To": "a@example.com", "Title": "件名"}
        answer = httpx.post(url, json=payload).json()
        assert answer == {
            "Id": record["id"],
            "StatusCode": 200,
            "Message": "メールを送信しました。",
        }

        listed = mailgate_json("mails", "list", "--record", str(record["id"]), env=env)
        assert len(listed) == 1
        mail = listed[0]
        assert set(mail) == {
            "id", "record_id", "status", "from", "to", "cc", "bcc", "title", "created_at",
            "sent_at", "attempts", "last_error",
        }  # fmt: skip
        assert (mail["from"], mail["to"], mail["title"], mail["status"]) == (
            "山田 太郎 <taro@example.com>",
            "a@example.com",
            "件名",
            "queued",
        )
        assert mailgate_json("mails", "list", "--status", "sent", env=env) == []
        shown = mailgate_json("mails", "show", str(mail["id"]), env=env)
        assert [e["event"] for e in shown["events"]] == ["queued"]

        revoked = mailgate_json("keys", "revoke", "--user", "taro", env=env)
        assert revoked == {"revoked": 1}
        assert httpx.post(url, json=payload).status_code == 401


def test_errors_go_to_stderr_with_nonzero_status(tmp_path: Path, database_url: str) -> None:
    env = {"MAILGATE_DATA_DIR": str(tmp_path / "data"), "MAILGATE_DATABASE_URL": database_url}
    cases = [
        ("keys", "create", "--user", "ghost", "--json"),
        ("records", "add", "--site", "999", "--title", "x", "--json"),
        ("mails", "show", "12345", "--json"),
        ("mails", "retry", "12345", "--json"),
        ("users", "add", "--login", "x", "--name", "X", "--mail", "not-an-address", "--json"),
    ]
    for args in cases:
        result = mailgate(*args, env=env, check=False)
        assert result.returncode != 0, args
        assert result.stdout == "", args
        assert result.stderr.startswith("mailgate: "), (args, result.stderr)


def test_broken_pleasanter_file_stops_with_a_clear_message(tmp_path: Path) -> None:
    params = tmp_path / "params"
    params.mkdir()
    (params / "Mail.json").write_text('{"SmtpHost": "relay", "SmtpPort": }')
    env = {"MAILGATE_DATA_DIR": str(tmp_path / "d"), "MAILGATE_PLEASANTER_PARAMETERS": str(params)}
    result = mailgate("mails", "list", "--json", env=env, check=False)
    assert result.returncode == 2
    assert "Mail.json" in result.stderr and result.stdout == ""


def test_json_output_is_one_document(tmp_path: Path, database_url: str) -> None:
    env = {"MAILGATE_DATA_DIR": str(tmp_path / "data"), "MAILGATE_DATABASE_URL": database_url}
    out = mailgate("sites", "add", "--title", "S", "--json", env=env).stdout
    assert json.loads(out) == {"id": 1}
