"""The Pleasanter-compatible route as plain ASGI: HTTP in, `core.send` answer out."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.types import Receive, Scope, Send

from mailgate.api.state import AppState
from mailgate.core.messages import Msg, render
from mailgate.core.send import Answer, SendCall, parse_item_id
from mailgate.metrics import ACCEPTED, REFUSED

log = logging.getLogger("mailgate.api")

CANONICAL = "/api/{reference}/{id}/OutgoingMails/Send"
_JSON_HEADER = (b"content-type", b"application/json;charset=utf-8")
# What FastAPI answered for another method on this path, kept so clients see no change.
_NOT_ALLOWED = orjson.dumps({"detail": "Method Not Allowed"})
_NOT_ALLOWED_HEADERS = [(b"allow", b"POST"), (b"content-type", b"application/json")]


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def compat_path_pattern(base_path: str) -> re.Pattern[str]:
    """Pleasanter matches its routes case-insensitively, so we do too."""
    return re.compile(
        "^" + re.escape(base_path) + r"/api/([^/]+)/([^/]+)/outgoingmails/send/?$", re.IGNORECASE
    )


def answer_body(answer: Answer) -> bytes:
    """Compact JSON in the contract's key order, nulls left out."""
    body: dict[str, Any] = {"Id": answer.id, "StatusCode": answer.status}
    if answer.limit_per_date is not None:
        body["LimitPerDate"] = answer.limit_per_date
        body["LimitRemaining"] = answer.limit_remaining
    body["Message"] = answer.message
    return orjson.dumps(body)


async def serve(
    state: AppState, reference: str, id_text: str, scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer one call to the compat path; the HTTP status always equals `StatusCode`."""
    if scope["method"] != "POST":
        await _respond(send, 405, _NOT_ALLOWED, _NOT_ALLOWED_HEADERS)
        return
    settings = state.settings
    content_type = declared = None
    for name, value in scope["headers"]:
        # The first of repeated headers wins, as with Starlette's `request.headers`.
        if name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif name == b"content-length" and declared is None:
            declared = value
    try:
        body = await _read_body(receive, declared, settings.max_request_bytes)
    except _TooLarge:
        await _refuse(send, id_text, 413, Msg.TOO_LARGE, settings.default_language)
        return
    except _Disconnected:
        return  # nobody is left to answer
    call = SendCall.read(reference, id_text, body, content_type)
    del body  # the parsed fields hold all that is needed: a big body need not stay
    try:
        answer = await state.acceptor.accept(call, datetime.now(UTC))
    except (OperationalError, InterfaceError, OSError, TimeoutError) as error:
        log.error("database unavailable: %s", type(error).__name__)
        await _refuse(send, id_text, 503, Msg.UNAVAILABLE, settings.default_language)
        return
    except Exception:
        log.exception("unexpected error in the send route")
        await _refuse(send, id_text, 500, Msg.UNEXPECTED, settings.default_language)
        return
    if answer.status == 200:
        ACCEPTED.inc()
        state.wake_worker()
    else:
        REFUSED.labels(status=str(answer.status)).inc()
    await _respond(send, answer.status, answer_body(answer), [_JSON_HEADER])


async def _read_body(receive: Receive, declared: bytes | None, limit: int) -> bytearray:
    """The whole body in one buffer: chunks joined at the end would need twice its size."""
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        if len(body) + len(chunk) > limit:
            raise _TooLarge
        body += chunk
        if not message.get("more_body", False):
            return body


async def _refuse(send: Send, id_text: str, status: int, msg: Msg, language: str) -> None:
    REFUSED.labels(status=str(status)).inc()
    answer = Answer(parse_item_id(id_text), status, render(msg, language))
    await _respond(send, status, answer_body(answer), [_JSON_HEADER])


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


_REQUEST_SCHEMA = {
    "type": "object",
    "required": ["ApiKey"],
    "properties": {
        "ApiVersion": {"type": ["number", "string"], "example": 1.1},
        "ApiKey": {"type": "string"},
        "From": {"type": "string"},
        "To": {"type": "string", "description": "Addresses separated by , ; or newline"},
        "Cc": {"type": "string"},
        "Bcc": {"type": "string"},
        "Title": {"type": "string", "maxLength": 1024},
        "Body": {"type": "string"},
        "Attachments": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "Name": {"type": "string"},
                    "Base64": {"type": "string", "format": "byte"},
                    "ContentType": {"type": "string"},
                },
            },
        },
    },
}
_ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "Id": {"type": "integer"},
        "StatusCode": {"type": "integer"},
        "LimitPerDate": {"type": "integer"},
        "LimitRemaining": {"type": "integer"},
        "Message": {"type": "string"},
    },
}
_ANSWERS = [
    (200, "Stored durably and queued"),
    (400, "Invalid JSON or request"),
    (401, "Unable to authorize"),
    (403, "No permission, unknown record, or API disabled"),
    (413, "Request body too large"),
    (429, "Daily limit of the site exceeded"),
    (500, "Address or sender problem"),
    (503, "Database unavailable"),
]

# The route's OpenAPI description: it is not a FastAPI route, so FastAPI cannot derive it.
OPENAPI_PATH_ITEM: dict[str, Any] = {
    "post": {
        "tags": ["Pleasanter compatible"],
        "summary": "Send an email for a record (Pleasanter-compatible)",
        "operationId": "send_mail",
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("reference", "id")
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _REQUEST_SCHEMA}},
        },
        "responses": {
            str(code): {
                "description": text,
                "content": {"application/json": {"schema": _ANSWER_SCHEMA}},
            }
            for code, text in _ANSWERS
        },
    }
}
