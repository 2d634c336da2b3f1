"""The send rules called directly: sender policy, recipients, request reading."""

from __future__ import annotations

import base64

import orjson
import pytest

from mailgate.config import MailPolicy
from mailgate.core.messages import Msg, render
from mailgate.core.recipients import resolve_recipients
from mailgate.core.refusal import Refusal
from mailgate.core.request import parse_fields, read_send_request
from mailgate.core.send import parse_item_id
from mailgate.core.sender import apply_fixed_from, default_sender, requested_sender
from mailgate.mail.addresses import Mailbox

USERS = {7: ("Taro", ("taro@example.com", "taro@home.example.org")), 8: ("Nobody", ())}


async def lookup(user_id: int) -> tuple[str, tuple[str, ...]] | None:
    return USERS.get(user_id)


async def resolve(to: str = "", cc: str = "", bcc: str = "", limit: int = 100, domains=()):  # type: ignore[no-untyped-def]
    return await resolve_recipients(to, cc, bcc, lookup, limit, domains)


def refused(error: pytest.ExceptionInfo[Refusal]) -> tuple[int, str]:
    return error.value.status, render(error.value.msg, "en", *error.value.args_)


def test_default_sender_is_users_first_address() -> None:
    sender = default_sender("Alice", ("a@example.com", "b@example.com"), MailPolicy())
    assert sender == Mailbox("Alice", "a@example.com")


def test_default_sender_falls_back_to_support_from() -> None:
    policy = MailPolicy(support_from="Support <support@example.com>")
    assert default_sender("Alice", (), policy) == Mailbox("Support", "support@example.com")
    with pytest.raises(Refusal) as error:
        default_sender("Alice", (), MailPolicy())
    assert refused(error) == (500, "Email address has not been set.")


def test_requested_from_replaces_default() -> None:
    default = Mailbox("Alice", "a@example.com")
    assert requested_sender("", default) == default
    assert requested_sender("Bob <b@example.com>", default) == Mailbox("Bob", "b@example.com")
    with pytest.raises(Refusal) as error:
        requested_sender("b@example.com; c@example.com", default)
    assert refused(error) == (500, "Invalid email address.[b@example.com; c@example.com]")


def test_fixed_from_unless_allowed() -> None:
    policy = MailPolicy(fixed_from="noreply@example.com", allowed_from=("boss@example.com",))
    plain = apply_fixed_from(Mailbox("Alice", "a@example.com"), policy)
    assert plain.header == Mailbox("", "noreply@example.com")
    assert plain.history == Mailbox("Alice", "a@example.com")
    allowed = apply_fixed_from(Mailbox("Boss", "Boss@Example.com"), policy)
    assert allowed.header == Mailbox("Boss", "Boss@Example.com")
    assert apply_fixed_from(Mailbox("A", "a@x.com"), MailPolicy()).header == Mailbox("A", "a@x.com")


async def test_recipients_split_dedupe_and_keep_names() -> None:
    result = await resolve(
        to='"Doe, Jane" <jane@example.com>; bob@example.com',
        cc="BOB@example.com, carol@example.com",
        bcc="jane@example.com\ndave@example.com",
    )
    assert result.to == (Mailbox("Doe, Jane", "jane@example.com"), Mailbox("", "bob@example.com"))
    assert result.cc == (Mailbox("", "carol@example.com"),)
    assert result.bcc == (Mailbox("", "dave@example.com"),)
    assert result.envelope() == [
        "jane@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    ]


async def test_user_tokens_expand_to_all_addresses() -> None:
    result = await resolve(to="[User7]", cc="[user7]")
    assert result.to == (
        Mailbox("Taro", "taro@example.com"),
        Mailbox("Taro", "taro@home.example.org"),
    )
    assert result.cc == ()
    for token in ("[User8]", "[User9]"):
        with pytest.raises(Refusal) as error:
            await resolve(to=token)
        assert refused(error) == (500, f"Invalid email address.[{token}]")


async def test_recipient_order_of_checks() -> None:
    with pytest.raises(Refusal) as error:
        await resolve()
    assert refused(error) == (500, "Add at least one email address.")
    with pytest.raises(Refusal) as error:
        await resolve(to="ok@example.com", cc="bad-cc", bcc="bad-bcc")
    assert refused(error) == (500, "Invalid email address.[bad-cc]")
    with pytest.raises(Refusal) as error:
        await resolve(to="a@example.com;b@example.com", limit=1)
    assert refused(error) == (400, "Too many recipients.")
    with pytest.raises(Refusal) as error:
        await resolve(to="[User7]", limit=1)  # one token, two addresses
    assert refused(error) == (400, "Too many recipients.")


async def test_internal_domains_anchor_at_a_label() -> None:
    ok = await resolve(to="a@example.com", cc="b@sub.example.com", domains=("example.com",))
    assert len(ok.envelope()) == 2
    with pytest.raises(Refusal) as error:
        await resolve(to="a@example.com", bcc="x@evil-example.com", domains=("example.com",))
    assert refused(error) == (500, "Cannot send to an external email address.[x@evil-example.com]")


def test_request_reading_like_newtonsoft() -> None:
    fields = parse_fields(b'{"TITLE": 1.5, "body": false, "To": "a@x.com", "cc": null}')
    request = read_send_request(fields, 1024)
    assert (request.title, request.body, request.to, request.cc) == ("1.5", "False", "a@x.com", "")


def attachment_fields(text: str) -> dict[str, object]:
    return parse_fields(orjson.dumps({"Attachments": [{"Name": "a.bin", "Base64": text}]}))


def test_attachment_base64_may_be_line_wrapped_like_dotnet_accepts() -> None:
    data = bytes(range(256)) * 40
    wrapped = base64.encodebytes(data).decode().replace("\n", "\r\n")  # 76-column lines
    assert "\r\n" in wrapped
    request = read_send_request(attachment_fields(wrapped), 1024)
    assert request.attachments[0].data == data
    plain = read_send_request(attachment_fields(base64.b64encode(data).decode()), 1024)
    assert plain.attachments[0].data == data


@pytest.mark.parametrize(
    "text", ["YWJjé", "YW=Jj", "YWJ", "YQ===", "QUJD=", "ab-_", "YWJj!", "YW\nJj!"]
)
def test_attachment_base64_that_is_not_base64_is_refused(text: str) -> None:
    with pytest.raises(Refusal) as error:
        read_send_request(attachment_fields(text), 1024)
    assert refused(error) == (400, render(Msg.INVALID_REQUEST, "en"))


@pytest.mark.parametrize("raw", [b'"\\ud800"', b'{"Title": "\\ud800"}'])
def test_lone_surrogates_are_invalid_json(raw: bytes) -> None:
    with pytest.raises(Refusal) as error:
        parse_fields(raw)
    assert refused(error) == (400, "Invalid json data.")


@pytest.mark.parametrize(
    ("text", "value"),
    [("12", 12), ("-3", -3), ("abc", 0), ("12abc", 0), ("9" * 20, 0), ("", 0), ("١٢", 0)],
)
def test_item_id_parsing(text: str, value: int) -> None:
    assert parse_item_id(text) == value


def test_japanese_messages() -> None:
    assert render(Msg.INVALID_ADDRESS, "ja", "x@") == "不正なメールアドレスです。[x@]"
    assert render(Msg.OVER_LIMIT, "en", 5, "{1}") == (
        "The API limit ({1} Requests/Day) that can be used on the site with ID 5 has been exceeded."
    )
