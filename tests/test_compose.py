"""What a recipient sees of a composed mail, and the wire format it travels in."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import hashlib
import os
import random
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.charset import Charset
from email.header import Header
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from mailgate.mail.addresses import Mailbox
from mailgate.mail.compose import (
    _HEADER_CHARSETS,
    Attachment,
    Message,
    _compose_fast,
    _compose_stdlib,
    _encoded_words,
    compose,
    compose_parts,
    new_message_id,
)

JST = timezone(timedelta(hours=9))
JAPANESE_SUBJECT = (
    "Re: 見積書の件について、ご確認をお願いいたします。"
    "来週の打ち合わせの日程も併せてご連絡ください。"
)
JAPANESE_BODY = (
    "山田様\n\nいつもお世話になっております。\r\n"
    "見積書を添付いたします。\rよろしくお願いいたします。\n"
)


def make(**changes: Any) -> Message:
    message = Message(
        message_id="<0123456789abcdef@mailgate.local>",
        date=datetime(2024, 5, 1, 9, 30, 15, tzinfo=JST),
        sender=Mailbox("Sender Name", "sender@example.com"),
        to=[Mailbox("", "to@example.com")],
        cc=[],
        subject="Hello",
        body="Hello, world.\n",
        attachments=(),
    )
    return dataclasses.replace(message, **changes)


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def text_part(parsed: EmailMessage) -> EmailMessage:
    part = parsed.get_body(("plain",))
    assert isinstance(part, EmailMessage)
    return part


def crlf(text: str) -> str:
    """The body as a recipient decodes it: CRLF line ends, ending in one."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    # An empty body still travels as one empty line.
    return "".join(line + "\r\n" for line in lines) or "\r\n"


def headers_of(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")


def test_headers_a_recipient_sees() -> None:
    message = make(
        sender=Mailbox("山田 太郎", "taro@example.jp"),
        to=[Mailbox("", "a@example.com"), Mailbox("Doe, Jane", "jane@example.com")],
        cc=[Mailbox("Bob", "bob@example.org"), Mailbox("鈴木 花子", "hanako@example.jp")],
        subject=JAPANESE_SUBJECT,
    )
    parsed = parse(compose(message))
    assert parsed["From"] == "山田 太郎 <taro@example.jp>"
    assert parsed["From"].addresses[0].display_name == "山田 太郎"
    assert [(a.display_name, a.addr_spec) for a in parsed["To"].addresses] == [
        ("", "a@example.com"),
        ("Doe, Jane", "jane@example.com"),
    ]
    assert [(a.display_name, a.addr_spec) for a in parsed["Cc"].addresses] == [
        ("Bob", "bob@example.org"),
        ("鈴木 花子", "hanako@example.jp"),
    ]
    assert parsed["Subject"] == JAPANESE_SUBJECT
    assert parsed["Message-ID"] == message.message_id
    assert parsedate_to_datetime(parsed["Date"]) == message.date
    assert parsed["Date"] == "Wed, 01 May 2024 09:30:15 +0900"
    assert parsed["MIME-Version"] == "1.0"
    assert "Bcc" not in parsed
    assert parsed.defects == []


def test_non_ascii_headers_are_base64_encoded_words() -> None:
    raw = compose(make(sender=Mailbox("山田 太郎", "taro@example.jp"), subject="見積書"))
    headers = headers_of(raw)
    assert headers.isascii()
    assert "=?utf-8?b?5bGx55SwIOWkqumDjg==?= <taro@example.jp>" in headers
    assert "Subject: =?utf-8?b?6KaL56mN5pu4?=" in headers


def test_lines_are_folded_to_78_octets() -> None:
    many = [Mailbox(f"名前{i}", f"user{i}@example.com") for i in range(30)]
    message = make(to=many, subject=JAPANESE_SUBJECT * 5, body="x")
    raw = compose(message)
    assert max(len(line) for line in headers_of(raw).split("\r\n")) <= 78
    parsed = parse(raw)
    assert parsed["Subject"] == JAPANESE_SUBJECT * 5
    assert [a.addr_spec for a in parsed["To"].addresses] == [m.address for m in many]


def test_long_ascii_subject_is_folded_at_spaces_and_keeps_its_spacing() -> None:
    subject = " ".join(["word"] * 40) + "  two  spaces"
    raw = compose(make(subject=subject))
    assert "=?" not in headers_of(raw)
    assert parse(raw)["Subject"] == subject


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "Plain subject",
        "x" * 200,
        "=?utf-8?b?5bGx?= is literal text",
        "tab\there",
        "Café",
        "絵文字 😀",
    ],
)
def test_subject_round_trips(subject: str) -> None:
    raw = compose(make(subject=subject))
    assert raw.count(b"\r\nSubject:") == 1
    assert parse(raw)["Subject"] == subject


@pytest.mark.parametrize(
    ("body", "cte"),
    [
        ("Hello, world.\n", "7bit"),
        ("no newline at the end", "7bit"),
        ("", "7bit"),
        ("bare\nlf\rcr\r\ncrlf", "7bit"),
        ("Le café est prêt, venez le boire tant qu'il est encore chaud.\n", "quoted-printable"),
        ("Café, crème brûlée.\n", "base64"),
        (JAPANESE_BODY, "base64"),
        ("x" * 2000, "quoted-printable"),
        ("From the start\n.\n..dots\n", "7bit"),
    ],
)
def test_utf8_body_round_trips_in_a_7bit_safe_encoding(body: str, cte: str) -> None:
    part = text_part(parse(compose(make(body=body))))
    assert part.get_content_type() == "text/plain"
    assert part.get_content_charset() == "utf-8"
    assert part["Content-Transfer-Encoding"] == cte
    assert part.get_content() == crlf(body)


@pytest.mark.parametrize(
    ("requested", "body", "cte"),
    [
        ("base64", "Hello\n", "base64"),
        ("BASE64", JAPANESE_BODY, "base64"),
        ("quoted-printable", JAPANESE_BODY, "quoted-printable"),
        ("7bit", "Hello\n", "7bit"),
        ("8bit", JAPANESE_BODY, "8bit"),
        ("7bit", JAPANESE_BODY, "base64"),
        ("7bit", "x" * 1000, "quoted-printable"),
        ("8bit", "é" * 1000, "base64"),
    ],
)
def test_transfer_encoding_is_honoured_when_it_can_carry_the_body(
    requested: str, body: str, cte: str
) -> None:
    part = text_part(parse(compose(make(body=body, transfer_encoding=requested))))
    assert part["Content-Transfer-Encoding"] == cte
    assert part.get_content() == crlf(body)


def test_iso_2022_jp_message() -> None:
    message = make(
        sender=Mailbox("山田 太郎", "taro@example.jp"),
        to=[Mailbox("鈴木 花子", "hanako@example.jp")],
        subject=JAPANESE_SUBJECT,
        body=JAPANESE_BODY,
        charset="ISO-2022-JP",
    )
    raw = compose(message)
    assert raw.isascii()
    headers = headers_of(raw)
    assert "=?iso-2022-jp?b?" in headers
    assert "utf-8" not in headers
    assert "\x1b$B" in raw.decode("ascii").split("\r\n\r\n", 1)[1]
    parsed = parse(raw)
    assert parsed["Subject"] == JAPANESE_SUBJECT
    assert parsed["From"].addresses[0].display_name == "山田 太郎"
    assert parsed["To"].addresses[0].display_name == "鈴木 花子"
    assert 'charset="iso-2022-jp"' in parsed["Content-Type"]
    assert parsed.get_content_charset() == "iso-2022-jp"
    assert parsed["Content-Transfer-Encoding"] == "7bit"
    assert parsed.get_content() == crlf(JAPANESE_BODY)


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "絵文字 😀"},
        {"body": "半角ｶﾀｶﾅ"},
        {"body": "丸数字①"},
        {"to": [Mailbox("Smile 😀", "a@example.com")]},
        {"sender": Mailbox("～", "a@example.com")},
    ],
)
def test_iso_2022_jp_falls_back_to_utf8_when_it_cannot_encode(changes: dict[str, object]) -> None:
    message = make(charset="iso-2022-jp", **changes)
    parsed = parse(compose(message))
    assert parsed.get_content_charset() == "utf-8"
    assert "iso-2022-jp" not in headers_of(compose(message))
    assert parsed["Subject"] == message.subject
    assert parsed["From"].addresses[0].display_name == message.sender.name
    assert parsed["To"].addresses[0].display_name == message.to[0].name
    assert parsed.get_content() == crlf(message.body)


def test_attachments_round_trip_byte_identical() -> None:
    files = [
        Attachment("見積書.pdf", "application/pdf", b"%PDF-1.4\n\x00\x01\xff\xfe binary"),
        Attachment("notes.txt", "text/plain", b"bare\nLF\r\nCRLF\rCR\n\x82\xa0 shift_jis \xff\n"),
        Attachment("data.csv", "text/csv; charset=shift_jis", "名前,値\r\n".encode("shift_jis")),
        Attachment("empty.bin", "application/octet-stream", b""),
        Attachment("untyped.txt", "", b"no type given"),
        Attachment("bad-type.bin", "not a type", b"\x00\x01"),
        Attachment("nested.eml", "message/rfc822", b"Subject: x\r\n\r\nbody\r\n"),
        Attachment('quote " and \\ backslash.txt', "text/plain", b"q"),
        Attachment("長い名前" * 20 + ".txt", "text/plain", b"long name"),
    ]
    parsed = parse(compose(make(body=JAPANESE_BODY, attachments=files)))
    assert parsed.get_content_type() == "multipart/mixed"
    assert parsed["MIME-Version"] == "1.0"
    body, *parts = parsed.iter_parts()
    assert body.get_content_type() == "text/plain"
    assert body.get_content() == crlf(JAPANESE_BODY)
    assert [part.get_filename() for part in parts] == [f.name for f in files]
    assert [part.get_content_disposition() for part in parts] == ["attachment"] * len(files)
    assert [part["Content-Transfer-Encoding"] for part in parts] == ["base64"] * len(files)
    assert [part.get_payload(decode=True) for part in parts] == [f.data for f in files]
    assert [part.get_content_type() for part in parts] == [
        "application/pdf",
        "text/plain",
        "text/csv",
        "application/octet-stream",
        "text/plain",
        "application/octet-stream",
        "application/octet-stream",
        "text/plain",
        "text/plain",
    ]
    assert parts[2].get_content_charset() == "shift_jis"
    assert parts[0].get_content() == files[0].data
    assert parsed.defects == []
    assert all(part.defects == [] for part in parts)


def test_non_ascii_file_name_uses_rfc_2231() -> None:
    raw = compose(make(attachments=[Attachment("見積書.pdf", "application/pdf", b"x")]))
    assert raw.isascii()
    assert b"filename*=utf-8''%E8%A6%8B%E7%A9%8D%E6%9B%B8.pdf" in raw


def test_large_binary_attachment_keeps_crlf_only() -> None:
    data = os.urandom(1024 * 1024) + b"\n\r\n\r" * 1000
    raw = compose(make(body="a\nb\rc", attachments=[Attachment("big.bin", "", data)]))
    assert re.search(rb"(?<!\r)\n", raw) is None
    assert re.search(rb"\r(?!\n)", raw) is None
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    _, part = parse(raw).iter_parts()
    assert part.get_payload(decode=True) == data


@pytest.mark.parametrize("size", [0, 1, 2, 3, 57, 58, 57 * 1024 - 1, 57 * 1024, 3 * 57 * 1024 + 5])
def test_attachments_are_encoded_in_line_ending_blocks_as_they_are_read(size: int) -> None:
    data = os.urandom(size)
    message = make(attachments=[Attachment("a.bin", "", data), Attachment("b.bin", "", data)])
    parts = compose_parts(message)
    blocks = list(parts)
    assert b"".join(blocks) == compose(message) == _compose_stdlib(message)
    assert parts.size == len(compose(message))
    assert all(block.endswith(b"\r\n") for block in blocks if block)
    # Big files are encoded a block at a time: no piece holds more than one block's lines.
    assert max(map(len, blocks)) <= max(78 * 1024 + 200, len(blocks[0]))
    for part in parse(b"".join(blocks)).iter_attachments():
        assert part.get_payload(decode=True) == data


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"subject": JAPANESE_SUBJECT, "body": JAPANESE_BODY, "charset": "iso-2022-jp"},
        {"cc": [Mailbox("鈴木", "s@example.jp")], "attachments": [Attachment("a.bin", "", b"1")]},
    ],
)
def test_no_line_ends_other_than_crlf(changes: dict[str, object]) -> None:
    raw = compose(make(**{"body": "one\ntwo\rthree\r\n", **changes}))
    assert raw.endswith(b"\r\n")
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", raw) is None


def test_same_message_gives_identical_bytes() -> None:
    attachments = [Attachment("a.pdf", "application/pdf", os.urandom(5000))]
    message = make(subject=JAPANESE_SUBJECT, attachments=attachments)
    raw = compose(message)
    assert compose(message) == raw
    assert compose(dataclasses.replace(message, attachments=list(attachments))) == raw
    other = compose(dataclasses.replace(message, message_id="<other@mailgate.local>"))
    assert boundary_of(other) != boundary_of(raw)


def boundary_of(raw: bytes) -> str:
    boundary = parse(raw).get_boundary()
    assert boundary is not None
    return boundary


def test_boundary_avoids_text_that_contains_it() -> None:
    message = make(attachments=[Attachment("a.bin", "", b"1")])
    taken = boundary_of(compose(message))
    body = f"--{taken}\nlooks like a boundary\n--{taken}--\n"
    raw = compose(dataclasses.replace(message, body=body))
    assert boundary_of(raw) != taken
    text, attachment = parse(raw).iter_parts()
    assert text.get_content() == crlf(body)
    assert attachment.get_payload(decode=True) == b"1"


def test_international_addresses() -> None:
    raw = compose(make(to=[Mailbox("", "user@例え.jp")], cc=[Mailbox("", "山田@example.jp")]))
    headers = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    assert "To: user@xn--r8jz45g.jp" in headers
    assert "Cc: 山田@example.jp" in headers


def test_empty_to_and_cc_are_left_out() -> None:
    parsed = parse(compose(make(to=[], cc=[])))
    assert "To" not in parsed
    assert "Cc" not in parsed
    assert "Bcc" not in parsed


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "Hi\r\nBcc: victim@example.com"},
        {"subject": "Hi\nBcc: victim@example.com"},
        {"subject": "Hi\r"},
        {"sender": Mailbox("x\r\nBcc: victim@example.com", "a@example.com")},
        {"to": [Mailbox("x\nBcc: y", "a@example.com")]},
        {"cc": [Mailbox("", "a@example.com\r\nBcc: victim@example.com")]},
        {"to": [Mailbox("", "a@example.com>, evil@example.net")]},
        {"message_id": "<a@b>\r\nBcc: victim@example.com"},
        {"attachments": [Attachment("a.txt\r\nX-Evil: 1", "text/plain", b"")]},
        {"attachments": [Attachment("a.txt", "text/plain\r\nX-Evil: 1", b"")]},
    ],
)
def test_line_breaks_in_header_values_raise(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        compose(make(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"date": datetime(2024, 5, 1, 9, 30)},
        {"charset": "shift_jis"},
        {"transfer_encoding": "binary"},
    ],
)
def test_invalid_settings_raise(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        compose(make(**changes))


def test_new_message_id() -> None:
    first, second = new_message_id("mailgate.local"), new_message_id("mailgate.local")
    assert re.fullmatch(r"<[0-9a-f]{32}@mailgate\.local>", first)
    assert first != second


# The fast composer against the stdlib one: a deterministic corpus of generated messages.

ASCII_WORDS = ["Hello", "invoice", "Re:", "a,b", "(note)", "x" * 90, "=?utf-8?b?eA==?=", "tab\tx"]
TEXTS = {
    "ascii": "The quick brown fox jumps over the lazy dog, again and again. ",
    "japanese": "山田様、いつもお世話になっております。見積書をお送りします。全角　空白",
    "not-jis": "半角ｶﾀｶﾅ 丸数字① 波ダッシュ～",
    "emoji": "絵文字😀🎉👍🏽 ok",
    "latin": "Café crème brûlée, naïve façade: ñ ü ß Ωμέγα Привет ",
    "separators": "form\x0cfeed vtab\x0b nel\x85 ls\u2028ps\u2029 fs\x1c",
}
CONTENT_TYPES = [
    "",
    "application/pdf",
    "text/plain",
    "image/PNG",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "multipart/mixed",
    "Message/rfc822",
    "x" * 64 + "/y",
    "x/" + "y" * 300,
]
UNUSUAL_CONTENT_TYPES = ["x" * 65 + "/y", "text/csv; charset=shift_jis", "not a type", "a/b "]
FILE_NAMES = [
    "",
    "report.pdf",
    "my report (final) v2, 50% off & more [1].pdf",
    " spaces around ",
    "a'b.txt",
    "見積書.pdf",
    "見積書　2024年5月分（修正版）.xlsx",
    "長い名前" * 20 + ".txt",
    "emoji 😀.png",
    'quote " in a non-ASCII name 名.txt',
    "ctrl\x7f\x85\u2028 名.txt",
]
UNUSUAL_FILE_NAMES = ['quote ".txt', "back\\slash.txt", "=?utf-8?q?x?=.txt", "tab\t.txt"]


def random_text(rnd: random.Random, scripts: list[str], max_length: int) -> str:
    """Pieces of TEXTS in the given scripts and ASCII words, joined by one or two spaces."""
    pieces = []
    for _ in range(rnd.randint(1, 6)):
        if rnd.random() < 0.3:
            pieces.append(rnd.choice(ASCII_WORDS))
        else:
            text = TEXTS[rnd.choice(scripts)]
            start = rnd.randrange(len(text))
            pieces.append(text[start : start + rnd.randint(1, 40)])
    return rnd.choice([" ", "  "]).join(pieces)[:max_length]


def random_body(rnd: random.Random, scripts: list[str]) -> str:
    lines = []
    for _ in range(rnd.choice([0, 1, 2, 5, 20, 60])):
        kind = rnd.random()
        if kind < 0.1:
            line = "y" * rnd.choice([75, 76, 77, 78, 79, 998, 999, 1500])
        elif kind < 0.2:
            line = rnd.choice(["", ".", "..dots", "From me", "a=b", "=", "--=_"])
            line += rnd.choice(["", " ", "\t", "  \t"])
        else:
            line = random_text(rnd, scripts, 200) + rnd.choice(["", "", " ", "\t", "="])
        lines.append(line + rnd.choice(["\n", "\n", "\r\n", "\r"]))
    body = "".join(lines)
    return body[:-1] if body and rnd.random() < 0.2 else body


def random_mailbox(rnd: random.Random, scripts: list[str], index: int, local: str = "") -> Mailbox:
    name = rnd.choice(["", "", "Jane Doe", "Doe, Jane", 'Jane "JD" Doe', "a\\b", "x" * 80])
    if rnd.random() < 0.4:
        name = random_text(rnd, scripts, 60)
    domain = rnd.choice(["example.com", "sub.example.co.jp", "例え.jp", "[192.0.2.1]"])
    local = local or rnd.choice([f"user{index}", "x.y+tag", '"john doe"'])
    return Mailbox(name, f"{local}@{domain}")


def random_message(rnd: random.Random, index: int) -> tuple[Message, bool]:
    """A message and whether the fast composer must take it."""
    common = True
    scripts = rnd.choice([["ascii"], ["ascii", "japanese"], ["japanese"], list(TEXTS)])
    attachments = []
    for _ in range(rnd.choice([0, 0, 1, 1, 3])):
        name = rnd.choice(FILE_NAMES)
        content_type = rnd.choice(CONTENT_TYPES)
        if rnd.random() < 0.1:
            name, common = rnd.choice(UNUSUAL_FILE_NAMES), False
        if rnd.random() < 0.1:
            content_type, common = rnd.choice(UNUSUAL_CONTENT_TYPES), False
        size = rnd.choice([0, 1, 2, 3, 56, 57, 58, 114, rnd.randrange(5000)])
        attachments.append(Attachment(name, content_type, rnd.randbytes(size)))
    sender = random_mailbox(rnd, scripts, index)
    if rnd.random() < 0.05:
        # A non-ASCII local part makes the stdlib write headers (file names too) as RFC 6532.
        sender = random_mailbox(rnd, scripts, index, local="山田")
        common = common and not attachments
    message_id = f"<{rnd.getrandbits(64):x}@mailgate.local>"
    body = random_body(rnd, scripts)
    if attachments and rnd.random() < 0.1:
        body += f"--=_{hashlib.sha256(message_id.encode()).hexdigest()[:40]}\n"
    message = Message(
        message_id=message_id,
        date=datetime(
            2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(minutes=rnd.randint(-720, 840)))
        ),
        sender=sender,
        to=[random_mailbox(rnd, scripts, n) for n in range(rnd.choice([0, 1, 1, 2, 30]))],
        cc=[random_mailbox(rnd, scripts, n) for n in range(rnd.choice([0, 0, 1, 3]))],
        subject=rnd.choice(
            ["", "Hello", " ".join(ASCII_WORDS[:4] * 6), random_text(rnd, scripts, 200)]
        ),
        body=body,
        attachments=attachments,
        charset=rnd.choice(["utf-8", "UTF-8", "iso-2022-jp", "ISO-2022-JP"]),
        transfer_encoding=rnd.choice(
            [None, "7bit", "8bit", "quoted-printable", "base64", "BASE64"]
        ),
    )
    return message, common


def test_fast_composer_gives_the_stdlib_composers_bytes() -> None:
    """The stdlib composer is the reference: every message must come out byte for byte the same.

    The common shapes must also really take the fast path, and only the unusual ones fall back.
    """
    rnd = random.Random(20240501)
    fast_count = 0
    for index in range(400):
        message, common = random_message(rnd, index)
        assert compose(message) == _compose_stdlib(message), message
        assert (_compose_fast(message) is not None) == common, message
        fast_count += common
    assert fast_count > 300


def test_file_names_and_types_of_every_length_match_the_stdlib() -> None:
    """Around every folding threshold: one line, a line of its own, RFC 2231 sections."""
    ascii_names = [piece * length for length in range(1, 130) for piece in ("a", "a b")]
    # Every percent-encoded length: "名" adds 9 characters, each "a" one.
    encoded_names = ["a" * extra + "名" * length for length in range(40) for extra in range(12)]
    names = ascii_names + encoded_names + ["😀" * length for length in range(1, 40)]
    types = [f"{'m' * length}/s" for length in range(1, 65)] + [
        f"a/{'s' * n}" for n in range(1, 130)
    ]
    attachments = [Attachment(name, "", b"x" * len(name)) for name in names]
    attachments += [Attachment("f", content_type, b"") for content_type in types]
    message = make(attachments=attachments)
    assert _compose_fast(message) is not None
    assert compose(message) == _compose_stdlib(message)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"attachments": [Attachment('a".txt', "", b"")]}, "quoted name"),
        ({"attachments": [Attachment("a", "text/csv; charset=x", b"")]}, "type parameters"),
        ({"attachments": [Attachment("a", "m" * 65 + "/s", b"")]}, "long main type"),
        (
            {"to": [Mailbox("", "山田@example.jp")], "attachments": [Attachment("a", "", b"")]},
            "RFC 6532 with attachments",
        ),
    ],
)
def test_unusual_shapes_fall_back_to_the_stdlib(changes: dict[str, object], reason: str) -> None:
    message = make(**changes)
    assert _compose_fast(message) is None, reason
    assert compose(message) == _compose_stdlib(message)


def test_encoded_words_match_email_header() -> None:
    """email.header.Header is the reference for the words of a non-ASCII name or subject."""
    rnd = random.Random(7)
    texts = [random_text(rnd, list(TEXTS), rnd.choice([20, 80, 300])) for _ in range(400)]
    texts += ["", " ", "a\u2028", "a\x0cb", "\udc80", "lone \udc80 surrogate", "全角　空白"]
    for text in texts:
        for name, charset in _HEADER_CHARSETS.items():
            for header in ("From", "To", "Subject"):
                expected = outcome(header_words, text, charset, header)
                assert outcome(_encoded_words, text, charset, header) == expected, (text, name)


def header_words(text: str, charset: Charset, header: str) -> list[str]:
    """The words email.header.Header writes for text."""
    return Header(text, charset, header_name=header).encode(maxlinelen=78).split()


def outcome(function: Callable[..., object], *args: object) -> object:
    """What the call returns, or the type of what it raises."""
    try:
        return function(*args)
    except Exception as error:
        return type(error)
