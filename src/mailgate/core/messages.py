"""The contract's answer texts in English and Japanese."""

from __future__ import annotations

import re
from enum import StrEnum

_PLACEHOLDER = re.compile(r"\{(\d)\}")


class Msg(StrEnum):
    SENT = "sent"
    INVALID_JSON = "invalid_json"
    UNAUTHORIZED = "unauthorized"
    INVALID_REQUEST = "invalid_request"
    NO_MAIL_ADDRESS = "no_mail_address"
    OVER_LIMIT = "over_limit"
    INVALID_ADDRESS = "invalid_address"
    FORBIDDEN = "forbidden"
    NO_RECIPIENT = "no_recipient"
    EXTERNAL_ADDRESS = "external_address"
    TOO_LARGE = "too_large"
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    UNAVAILABLE = "unavailable"
    UNEXPECTED = "unexpected"


_TEXTS: dict[Msg, tuple[str, str]] = {
    Msg.SENT: ("Email sent.", "メールを送信しました。"),
    Msg.INVALID_JSON: ("Invalid json data.", "JSONデータが不正です。"),
    Msg.UNAUTHORIZED: ("Unable to authorize.", "認証できませんでした。"),
    Msg.INVALID_REQUEST: ("Invalid request.", "要求が不正です。"),
    Msg.NO_MAIL_ADDRESS: (
        "Email address has not been set.",
        "メールアドレスが設定されていません。",
    ),
    Msg.OVER_LIMIT: (
        "The API limit ({1} Requests/Day) that can be used on the site with ID {0}"
        " has been exceeded.",
        "ID: {0} のサイトで利用できるAPIの制限（{1} 件/日）を超えました。",
    ),
    Msg.INVALID_ADDRESS: ("Invalid email address.[{0}]", "不正なメールアドレスです。[{0}]"),
    Msg.FORBIDDEN: (
        "You do not have permission to perform this operation.",
        "この操作を行うための権限がありません。",
    ),
    Msg.NO_RECIPIENT: (
        "Add at least one email address.",
        "1つ以上の宛先を追加してください。",
    ),
    Msg.EXTERNAL_ADDRESS: (
        "Cannot send to an external email address.[{0}]",
        "外部のメールアドレスには送信できません。[{0}]",
    ),
    Msg.TOO_LARGE: ("The request body is too large.", "要求の本文が大きすぎます。"),
    Msg.TOO_MANY_RECIPIENTS: ("Too many recipients.", "宛先が多すぎます。"),
    Msg.UNAVAILABLE: (
        "The service is temporarily unavailable.",
        "サービスは一時的に利用できません。",
    ),
    Msg.UNEXPECTED: ("An unexpected error occurred.", "予期しないエラーが発生しました。"),
}


def render(msg: Msg, language: str, *args: object) -> str:
    """The text of `msg` in `language` (`ja`, else English), with `{0}`, `{1}` filled in."""
    en, ja = _TEXTS[msg]
    template = ja if language == "ja" else en
    # str.format would choke on braces inside a caller's address; substitute in one pass.
    return _PLACEHOLDER.sub(lambda m: str(args[int(m.group(1))]), template)
