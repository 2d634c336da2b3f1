"""The contract's table, case by case, over real HTTP: full status code and JSON compared."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailgate.api.app import create_app
from mailgate.config import Settings
from mailgate.store import directory
from mailgate.store.schema import users
from tests.conftest import Seeded, seed_user
from tests.support.servers import ThreadedServer

SENT = "Email sent."


@dataclass
class Api:
    url: str
    client: httpx.AsyncClient
    seeded: Seeded

    async def send(
        self,
        payload: dict[str, Any] | bytes | None = None,
        record: int | str | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> httpx.Response:
        if payload is None:
            payload = {"ApiVersion": 1.1, "ApiKey": self.seeded.api_key, **fields}
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        target = record if record is not None else self.seeded.record_id
        url = self.url + (path or f"/api/items/{target}/OutgoingMails/Send")
        return await self.client.post(
            url, content=body, headers=headers or {"Content-Type": "application/json"}
        )


@pytest.fixture
def start_api(
    engine: AsyncEngine, seeded: Seeded, make_settings: Callable[..., Settings]
) -> Callable[..., Any]:
    servers: list[ThreadedServer] = []

    async def start(**env: str) -> Api:
        server = ThreadedServer(create_app(make_settings(**env), run_worker=False)).__enter__()
        servers.append(server)
        return Api(server.url, httpx.AsyncClient(timeout=30), seeded)

    yield start
    for server in servers:
        server.__exit__()


@pytest.fixture
async def api(start_api: Callable[..., Any]) -> AsyncIterator[Api]:
    client: Api = await start_api()
    yield client
    await client.client.aclose()


def expect(response: httpx.Response, status: int, message: str, id_: int, **extra: int) -> None:
    """The whole answer: status, exact compact JSON in the contract's key order, header."""
    body: dict[str, Any] = {"Id": id_, "StatusCode": status, **extra, "Message": message}
    assert response.status_code == status
    assert response.content == orjson.dumps(body)
    assert response.headers["content-type"] == "application/json;charset=utf-8"


# ---- row 1: body is not valid JSON ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"{", b"", b"not json", b'{"ApiKey": "x",}', b"[1, 2]", b'"text"', b"\xff\xfe"]
)
async def test_row1_invalid_json(api: Api, raw: bytes) -> None:
    expect(await api.send(raw), 400, "Invalid json data.", api.seeded.record_id)


async def test_row1_uses_server_default_language(start_api: Callable[..., Any]) -> None:
    api = await start_api(MAILGATE_DEFAULT_LANGUAGE="ja")
    expect(await api.send(b"{"), 400, "JSONデータが不正です。", api.seeded.record_id)


# ---- row 2: authentication --------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"To": "a@example.com"},
        {"ApiKey": "0" * 128, "To": "a@example.com"},
        {"ApiKey": None, "To": "a@example.com"},
        {"ApiKey": ["x"], "To": "a@example.com"},
        {"ApiKey": "", "To": "a@example.com"},
    ],
)
async def test_row2_unknown_or_missing_key(api: Api, payload: dict[str, Any]) -> None:
    expect(await api.send(payload), 401, "Unable to authorize.", api.seeded.record_id)


async def test_row2_revoked_key(api: Api, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await directory.revoke_keys(conn, api.seeded.login) == 1
    expect(await api.send(To="a@example.com"), 401, "Unable to authorize.", api.seeded.record_id)


async def test_row2_key_revoked_while_in_use_is_refused_at_once(
    api: Api, engine: AsyncEngine
) -> None:
    expect(await api.send(To="a@example.com"), 200, SENT, api.seeded.record_id)
    async with engine.begin() as conn:
        await directory.revoke_keys(conn, api.seeded.login)
    expect(await api.send(To="a@example.com"), 401, "Unable to authorize.", api.seeded.record_id)


async def test_row2_disabled_user(api: Api, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(users).values(disabled=True))
    expect(await api.send(To="a@example.com"), 401, "Unable to authorize.", api.seeded.record_id)


async def test_row2_field_names_are_case_insensitive(api: Api) -> None:
    payload = {"apikey": api.seeded.api_key, "TO": "a@example.com", "title": "x"}
    expect(await api.send(payload), 200, SENT, api.seeded.record_id)


# ---- row 3: optional Content-Type check -------------------------------------------------------


async def test_row3_content_type_not_enforced_by_default(api: Api) -> None:
    response = await api.send(
        orjson.dumps({"ApiKey": api.seeded.api_key, "To": "a@example.com"}),
        headers={"Content-Type": "text/plain"},
    )
    expect(response, 200, SENT, api.seeded.record_id)


async def test_row3_content_type_enforced(start_api: Callable[..., Any]) -> None:
    api = await start_api(MAILGATE_CHECK_CONTENT_TYPE="true")
    body = orjson.dumps({"ApiKey": api.seeded.api_key, "To": "a@example.com"})
    plain = await api.send(body, headers={"Content-Type": "text/plain"})
    expect(plain, 400, "Invalid request.", api.seeded.record_id)
    json_ok = await api.send(body, headers={"Content-Type": "application/json; charset=utf-8"})
    expect(json_ok, 200, SENT, api.seeded.record_id)


# ---- row 4: no sender address -----------------------------------------------------------------


async def test_row4_user_without_address(api: Api, engine: AsyncEngine) -> None:
    other = await seed_user(engine, login="noaddr", mails=(), site_id=api.seeded.site_id)
    payload = {"ApiKey": other.api_key, "To": "a@example.com"}
    expect(
        await api.send(payload, record=other.record_id),
        500,
        "Email address has not been set.",
        other.record_id,
    )


async def test_row4_support_from_fills_in(
    start_api: Callable[..., Any], engine: AsyncEngine
) -> None:
    api = await start_api(MAILGATE_SUPPORT_FROM="support@example.com")
    other = await seed_user(engine, login="noaddr", mails=(), site_id=api.seeded.site_id)
    payload = {"ApiKey": other.api_key, "To": "a@example.com"}
    expect(await api.send(payload, record=other.record_id), 200, SENT, other.record_id)


# ---- row 5: body does not fit the model -------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"To": ["a@example.com"]},
        {"To": {"a": 1}},
        {"Title": "x" * 1025},
        {"Title": "Hello\r\nBcc: victim@example.com"},
        {"Title": "Hello\nX-Injected: 1"},
        {"Attachments": "abc"},
        {"Attachments": {"Name": "a.txt"}},
        {"Attachments": [1]},
        {"Attachments": [{"Name": "a.txt", "Base64": "!!!not base64!!!"}]},
        {"Attachments": [{"Name": "a.txt", "Base64": "YWJj", "ContentType": "text/plain\r\nX: y"}]},
        {"Attachments": [{"Name": "a\r\n.txt", "Base64": "YWJj"}]},
        {"Attachments": [{"Name": "a.txt", "Base64": ["YWJj"]}]},
    ],
)
async def test_row5_invalid_request(api: Api, fields: dict[str, Any]) -> None:
    fields = {"To": "a@example.com", **fields}
    expect(await api.send(**fields), 400, "Invalid request.", api.seeded.record_id)


@pytest.mark.parametrize(
    "fields",
    [
        {"To": "a@example.com", "Title": 12345, "Body": True, "ApiVersion": "1.1"},
        {"To": "a@example.com", "Cc": None, "Bcc": None, "From": None, "Attachments": None},
        {"To": "a@example.com", "Title": "x" * 1024},
        {"To": "a@example.com", "Attachments": [{"Name": "a.txt", "Base64": ""}]},
        {"To": "a@example.com", "Attachments": [None, {"FileName": "b.txt", "Base64": "YWJj"}]},
        {"To": "a@example.com", "Unknown": {"nested": [1]}},
    ],
)
async def test_row5_what_dotnet_clients_send_is_accepted(api: Api, fields: dict[str, Any]) -> None:
    expect(await api.send(**fields), 200, SENT, api.seeded.record_id)


# ---- row 6: daily limit per site --------------------------------------------------------------


async def test_row6_limit_per_site(start_api: Callable[..., Any]) -> None:
    api = await start_api(MAILGATE_LIMIT_PER_SITE="2")
    rid, sid = api.seeded.record_id, api.seeded.site_id
    expect(await api.send(To="a@example.com"), 200, SENT, rid, LimitPerDate=2, LimitRemaining=1)
    expect(await api.send(To="a@example.com"), 200, SENT, rid, LimitPerDate=2, LimitRemaining=0)
    message = (
        f"The API limit (2 Requests/Day) that can be used on the site with ID {sid}"
        " has been exceeded."
    )
    expect(await api.send(To="a@example.com"), 429, message, rid)


async def test_row6_limit_message_in_japanese(
    start_api: Callable[..., Any], engine: AsyncEngine
) -> None:
    api = await start_api(MAILGATE_LIMIT_PER_SITE="1")
    ja = await seed_user(engine, login="hanako", language="ja", site_id=api.seeded.site_id)
    payload = {"ApiKey": ja.api_key, "To": "a@example.com"}
    first = await api.send(payload, record=ja.record_id)
    expect(first, 200, "メールを送信しました。", ja.record_id, LimitPerDate=1, LimitRemaining=0)
    message = f"ID: {ja.site_id} のサイトで利用できるAPIの制限（1 件/日）を超えました。"
    expect(await api.send(payload, record=ja.record_id), 429, message, ja.record_id)


async def test_row6_no_limit_fields_without_limit(api: Api) -> None:
    response = await api.send(To="a@example.com")
    assert "LimitPerDate" not in response.json()


# ---- row 7: From -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sender", ["not an address", "a@example.com, b@example.com", "x@y.com\r\nBcc: v@example.com"]
)
async def test_row7_invalid_from(api: Api, sender: str) -> None:
    response = await api.send(From=sender, To="a@example.com")
    expect(response, 500, f"Invalid email address.[{sender}]", api.seeded.record_id)


# ---- row 8: permission and existence ----------------------------------------------------------


async def test_row8_no_send_mail_right(api: Api, engine: AsyncEngine) -> None:
    other = await seed_user(engine, login="reader", send_mail=False)
    payload = {"ApiKey": other.api_key, "To": "a@example.com"}
    expect(
        await api.send(payload, record=other.record_id),
        403,
        "You do not have permission to perform this operation.",
        other.record_id,
    )


async def test_row8_other_users_site(api: Api, engine: AsyncEngine) -> None:
    other = await seed_user(engine, login="bob")
    expect(
        await api.send(record=other.record_id, To="a@example.com"),
        403,
        "You do not have permission to perform this operation.",
        other.record_id,
    )


@pytest.mark.parametrize(("record", "id_"), [(999999, 999999), ("abc", 0), ("1" * 30, 0)])
async def test_row8_unknown_record_is_403(api: Api, record: int | str, id_: int) -> None:
    expect(
        await api.send(record=record, To="a@example.com"),
        403,
        "You do not have permission to perform this operation.",
        id_,
    )


async def test_row8_site_id_works_as_record(api: Api) -> None:
    expect(
        await api.send(record=api.seeded.site_id, To="a@example.com"), 200, SENT, api.seeded.site_id
    )


async def test_api_disabled_answers_403(start_api: Callable[..., Any]) -> None:
    api = await start_api(MAILGATE_API_ENABLED="false")
    expect(
        await api.send(To="a@example.com"),
        403,
        "You do not have permission to perform this operation.",
        api.seeded.record_id,
    )


# ---- rows 9 to 11: recipients -----------------------------------------------------------------


@pytest.mark.parametrize("fields", [{}, {"To": "", "Cc": " ", "Bcc": None}, {"To": ";;,"}])
async def test_row9_no_recipient(api: Api, fields: dict[str, Any]) -> None:
    expect(await api.send(**fields), 500, "Add at least one email address.", api.seeded.record_id)


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"To": "good@example.com; bad-address"}, "bad-address"),
        ({"To": "a@example.com", "Cc": "x@", "Bcc": "y@"}, "x@"),
        ({"To": "a@example.com", "Bcc": "@nowhere"}, "@nowhere"),
        ({"To": "a@example.com;; b c@example.com"}, "b c@example.com"),
        ({"To": "[User99999]"}, "[User99999]"),
    ],
)
async def test_row10_invalid_address(api: Api, fields: dict[str, Any], bad: str) -> None:
    expect(await api.send(**fields), 500, f"Invalid email address.[{bad}]", api.seeded.record_id)


async def test_row11_internal_domains(start_api: Callable[..., Any]) -> None:
    api = await start_api(MAILGATE_INTERNAL_DOMAINS="example.com")
    expect(
        await api.send(To="ok@example.com; x@evil-example.com"),
        500,
        "Cannot send to an external email address.[x@evil-example.com]",
        api.seeded.record_id,
    )
    expect(
        await api.send(To="ok@mail.example.com", Bcc="b@EXAMPLE.com"),
        200,
        SENT,
        api.seeded.record_id,
    )


# ---- row 12 and mailgate's additions ----------------------------------------------------------


async def test_row12_manuals_example(api: Api) -> None:
    response = await api.send(
        {
            "ApiVersion": 1.1,
            "ApiKey": api.seeded.api_key,
            "To": "recipient@example.com",
            "Cc": "cc@example.com",
            "Bcc": "bcc@example.com",
            "Title": "This is a test of the email sending API.",
            "Body": "We are sending an email as a test of the email sending API.",
            "Attachments": [
                {
                    "Name": "sample1.txt",
                    "Base64": base64.b64encode(b"sample1").decode(),
                    "ContentType": "text/plain",
                },
                {
                    "Name": "sample2.txt",
                    "Base64": base64.b64encode(b"sample2").decode(),
                    "ContentType": "text/plain",
                },
            ],
        }
    )
    expect(response, 200, SENT, api.seeded.record_id)


@pytest.mark.parametrize(
    "path",
    [
        "/api/items/{id}/outgoingmails/send",
        "/API/Items/{id}/OUTGOINGMAILS/SEND",
        "/api/items/{id}/OutgoingMails/Send/",
        "/api/anything/{id}/OutgoingMails/Send",
    ],
)
async def test_path_is_case_insensitive(api: Api, path: str) -> None:
    response = await api.send(path=path.format(id=api.seeded.record_id), To="a@example.com")
    expect(response, 200, SENT, api.seeded.record_id)


async def test_other_methods_on_the_path_are_405(api: Api) -> None:
    url = f"{api.url}/API/items/{api.seeded.record_id}/outgoingmails/send"
    response = await api.client.get(url)
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    assert response.json() == {"detail": "Method Not Allowed"}


async def test_base_path(start_api: Callable[..., Any]) -> None:
    api = await start_api(MAILGATE_BASE_PATH="/fs")
    rid = api.seeded.record_id
    ok = await api.send(path=f"/fs/api/items/{rid}/OutgoingMails/Send", To="a@example.com")
    expect(ok, 200, SENT, rid)
    missing = await api.send(path=f"/api/items/{rid}/OutgoingMails/Send", To="a@example.com")
    assert missing.status_code == 404


async def test_too_large_body_is_413_and_server_stays_up(start_api: Callable[..., Any]) -> None:
    api = await start_api(MAILGATE_MAX_REQUEST_BYTES="1000")
    big = {"ApiKey": api.seeded.api_key, "To": "a@example.com", "Body": "x" * 2000}
    expect(await api.send(big), 413, "The request body is too large.", api.seeded.record_id)
    expect(await api.send(To="a@example.com", Body="small"), 200, SENT, api.seeded.record_id)


async def test_too_large_chunked_body_is_413(start_api: Callable[..., Any]) -> None:
    api = await start_api(MAILGATE_MAX_REQUEST_BYTES="1000")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 100

    response = await api.client.post(
        f"{api.url}/api/items/{api.seeded.record_id}/OutgoingMails/Send", content=chunks()
    )
    expect(response, 413, "The request body is too large.", api.seeded.record_id)


async def test_too_many_recipients(start_api: Callable[..., Any]) -> None:
    api = await start_api(MAILGATE_MAX_RECIPIENTS="3")
    four = ";".join(f"u{i}@example.com" for i in range(4))
    expect(await api.send(To=four), 400, "Too many recipients.", api.seeded.record_id)
    three = ";".join(f"u{i}@example.com" for i in range(3))
    expect(await api.send(To=three), 200, SENT, api.seeded.record_id)


async def test_database_unavailable_is_503(
    make_settings: Callable[..., Settings], seeded: Seeded
) -> None:
    settings = make_settings(MAILGATE_DATABASE_URL="postgresql://postgres@127.0.0.1:9/none")
    with ThreadedServer(create_app(settings, run_worker=False)) as server:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"{server.url}/api/items/5/OutgoingMails/Send",
                content=orjson.dumps({"ApiKey": "k", "To": "a@example.com"}),
            )
            expect(response, 503, "The service is temporarily unavailable.", 5)
            assert (await client.get(server.url + "/readyz")).status_code == 503
