"""Address lists, mailboxes, [UserN] tokens and InternalDomains."""

from __future__ import annotations

import pytest

from mailgate.mail.addresses import (
    Mailbox,
    is_internal,
    parse_domain_list,
    parse_mailbox,
    split_addresses,
    user_token_id,
)


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("", []),
        ("   ", []),
        ("a@example.com", ["a@example.com"]),
        ("a@example.com,b@example.com", ["a@example.com", "b@example.com"]),
        ("a@example.com; b@example.com", ["a@example.com", "b@example.com"]),
        (
            "a@example.com\nb@example.com\r\nc@example.com",
            ["a@example.com", "b@example.com", "c@example.com"],
        ),
        ("a@example.com\rb@example.com", ["a@example.com", "b@example.com"]),
        ("a;;b", ["a", "b"]),
        ("a;", ["a"]),
        (";, \n;", []),
        ("  Jane Doe <jane@example.com>  ", ["Jane Doe <jane@example.com>"]),
        ("a@example.com b@example.com", ["a@example.com b@example.com"]),
        ('"Doe, Jane" <jane@example.com>', ['"Doe, Jane" <jane@example.com>']),
        (
            '"Doe; Jane" <j@example.com>, b@example.com',
            ['"Doe; Jane" <j@example.com>', "b@example.com"],
        ),
        ('"x\ny" <a@example.com>;b@example.com', ['"x\ny" <a@example.com>', "b@example.com"]),
        (
            '"say \\"hi, there\\"" <a@example.com>, b@x',
            ['"say \\"hi, there\\"" <a@example.com>', "b@x"],
        ),
        ('"unterminated, a@example.com', ['"unterminated, a@example.com']),
        ("[User1];[user2]", ["[User1]", "[user2]"]),
    ],
)
def test_split_addresses(text: str, pieces: list[str]) -> None:
    assert split_addresses(text) == pieces


@pytest.mark.parametrize(
    ("piece", "name", "address"),
    [
        ("a@example.com", "", "a@example.com"),
        ("  a@example.com  ", "", "a@example.com"),
        ("<a@example.com>", "", "a@example.com"),
        ("< a@example.com >", "", "a@example.com"),
        ("Jane Doe <jane@example.com>", "Jane Doe", "jane@example.com"),
        ("Jane   Doe<jane@example.com>", "Jane Doe", "jane@example.com"),
        ("John Q. Public <john@example.com>", "John Q. Public", "john@example.com"),
        ('"Doe, Jane" <jane@example.com>', "Doe, Jane", "jane@example.com"),
        ('"Doe, Jane"<jane@example.com>', "Doe, Jane", "jane@example.com"),
        ('"say \\"hi\\" \\\\ bye" <a@example.com>', 'say "hi" \\ bye', "a@example.com"),
        ('"" <a@example.com>', "", "a@example.com"),
        ("山田 太郎 <taro@example.jp>", "山田 太郎", "taro@example.jp"),
        ("山田　太郎 <taro@example.jp>", "山田　太郎", "taro@example.jp"),
        ("O'Brien <ob@example.com>", "O'Brien", "ob@example.com"),
        ("first.last+tag@example.com", "", "first.last+tag@example.com"),
        ("!#$%&'*+-/=?^_`{|}~@example.com", "", "!#$%&'*+-/=?^_`{|}~@example.com"),
        ("user@localhost", "", "user@localhost"),
        ("user@sub-domain.example.co.jp", "", "user@sub-domain.example.co.jp"),
        ("user@123.example", "", "user@123.example"),
        ("user@[192.0.2.1]", "", "user@[192.0.2.1]"),
        ("user@[IPv6:2001:db8::1]", "", "user@[IPv6:2001:db8::1]"),
        ('"john doe"@example.com', "", '"john doe"@example.com'),
        ('"a@b, c"@example.com', "", '"a@b, c"@example.com'),
        ('Name <"x y"@example.com>', "Name", '"x y"@example.com'),
        ("山田@例え.jp", "", "山田@例え.jp"),
        ("user@bücher.de", "", "user@bücher.de"),
        ("user@भारत.in", "", "user@भारत.in"),
        ("x" * 64 + "@example.com", "", "x" * 64 + "@example.com"),
        ("a@" + "b" * 63 + ".com", "", "a@" + "b" * 63 + ".com"),
        (
            "a@" + ".".join(["b" * 63] * 3) + "." + "c" * 59,
            "",
            "a@" + ".".join(["b" * 63] * 3) + "." + "c" * 59,
        ),
    ],
)
def test_parse_mailbox_valid(piece: str, name: str, address: str) -> None:
    assert parse_mailbox(piece) == Mailbox(name, address)


@pytest.mark.parametrize(
    "piece",
    [
        "",
        "   ",
        "plain",
        "@example.com",
        "user@",
        "user@@example.com",
        "a@b@example.com",
        "user example.com",
        "a@example.com b@example.com",
        "a@example.com c",
        "Jane <jane@example.com> trailing",
        "<a@example.com> <b@example.com>",
        "<a@example.com>>",
        "Jane <jane@example.com",
        "Jane jane@example.com>",
        "<>",
        '"Doe, Jane" jane@example.com',
        '"Doe" Jane <jane@example.com>',
        '"unterminated <jane@example.com>',
        "Doe, Jane <jane@example.com>",
        "a@b <c@example.com>",
        "Jane (comment) <jane@example.com>",
        ".user@example.com",
        "user.@example.com",
        "us..er@example.com",
        "us er@example.com",
        "us(er@example.com",
        "us\\er@example.com",
        '""@example.com',
        '"abc"',
        '"abc" @example.com',
        "user@.example.com",
        "user@example.com.",
        "user@example..com",
        "user@-example.com",
        "user@example-.com",
        "user@exa_mple.com",
        "user@exa mple.com",
        "user@[192.0.2.256]",
        "user@[example.com]",
        "user@[IPv6:zz::1]",
        "user@" + "b" * 64 + ".com",
        "x" * 65 + "@example.com",
        "あ" * 22 + "@example.com",
        "a@" + ".".join(["b" * 63] * 4),
        "us\u3000er@example.com",
        "us\u00a0er@example.com",
        "\u200buser@example.com",
        "user\u202e@example.com",
        "user@例\u3000え.jp",
        "user@😀.jp",
        # Control characters never reach a header, whatever their place.
        "a@b.com\r\nBcc: x@y.com",
        "a@b.com\nBcc: x@y.com",
        "a@b.com\r",
        '"x\r\nBcc: y" <a@b>',
        "Jane\r\nBcc: x@y.com <a@b.com>",
        "Jane <a@b.com>\r\nBcc: x@y.com",
        "Ja\x00ne <a@b.com>",
        "Ja\tne <a@b.com>",
        "a\x7f@b.com",
        "Jane\x85 <a@b.com>",
        "Jane\u2028 <a@b.com>",
        "a@b.com\x00",
    ],
)
def test_parse_mailbox_invalid(piece: str) -> None:
    assert parse_mailbox(piece) is None


@pytest.mark.parametrize(
    ("mailbox", "text"),
    [
        (Mailbox("", "a@example.com"), "a@example.com"),
        (Mailbox("Jane Doe", "jane@example.com"), "Jane Doe <jane@example.com>"),
        (Mailbox("山田 太郎", "taro@example.jp"), "山田 太郎 <taro@example.jp>"),
        (Mailbox("Doe, Jane", "jane@example.com"), '"Doe, Jane" <jane@example.com>'),
        (Mailbox("John Q. Public", "j@example.com"), '"John Q. Public" <j@example.com>'),
        (Mailbox('say "hi" \\ bye', "a@example.com"), '"say \\"hi\\" \\\\ bye" <a@example.com>'),
        (Mailbox("a@b", "c@example.com"), '"a@b" <c@example.com>'),
        (Mailbox(" padded", "a@example.com"), '" padded" <a@example.com>'),
        (Mailbox("two  spaces", "a@example.com"), '"two  spaces" <a@example.com>'),
        (Mailbox("山田　太郎", "taro@example.jp"), '"山田　太郎" <taro@example.jp>'),
    ],
)
def test_mailbox_str_quotes_when_needed_and_round_trips(mailbox: Mailbox, text: str) -> None:
    assert str(mailbox) == text
    assert parse_mailbox(text) == mailbox


@pytest.mark.parametrize(
    ("piece", "user_id"),
    [
        ("[User12]", 12),
        ("[user12]", 12),
        ("[USER7]", 7),
        ("  [User3]  ", 3),
        ("[User007]", 7),
        ("[User]", None),
        ("[User-1]", None),
        ("[User 1]", None),
        ("[User1", None),
        ("User1", None),
        ("[User1] x", None),
        ("[Group1]", None),
        ("[Dept1]", None),
        ("[User１]", None),
        ("[Uſer1]", None),
        ("[User" + "9" * 19 + "]", None),
        ("a@example.com", None),
    ],
)
def test_user_token_id(piece: str, user_id: int | None) -> None:
    assert user_token_id(piece) == user_id


@pytest.mark.parametrize(
    ("text", "domains"),
    [
        (None, []),
        ("", []),
        (" , ,", []),
        ("example.com", ["example.com"]),
        (
            "Example.COM, @corp.example.jp ,.sub.example.org,",
            ["example.com", "corp.example.jp", "sub.example.org"],
        ),
        ("@", []),
    ],
)
def test_parse_domain_list(text: str | None, domains: list[str]) -> None:
    assert parse_domain_list(text) == domains


@pytest.mark.parametrize(
    ("address", "domains", "internal"),
    [
        ("user@example.com", [], True),
        ("user@example.com", ["example.com"], True),
        ("User@EXAMPLE.com", ["example.com"], True),
        ("user@example.com", ["Example.Com"], True),
        ("a@mail.example.com", ["example.com"], True),
        ("a@deep.mail.example.com", ["example.com"], True),
        ("user@evil-example.com", ["example.com"], False),
        ("user@example.com.evil.net", ["example.com"], False),
        ("user@example.co", ["example.com"], False),
        ("user@other.org", ["example.com", "other.org"], True),
        ("user@other.net", ["example.com", "other.org"], False),
        ('"x@example.com"@evil.net', ["example.com"], False),
        ("user@example.com", ["mail.example.com"], False),
    ],
)
def test_is_internal(address: str, domains: list[str], internal: bool) -> None:
    assert is_internal(address, domains) is internal
