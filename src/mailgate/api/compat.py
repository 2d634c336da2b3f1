"""The Pleasanter-compatible route: HTTP in, `core.send` answer out, in Pleasanter's shape."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import InterfaceError, OperationalError

from mailgate.api.state import AppState
from mailgate.core.messages import Msg, render
from mailgate.core.send import Answer, SendCall, parse_item_id
from mailgate.metrics import ACCEPTED, REFUSED

log = logging.getLogger("mailgate.api")

CANONICAL = "/api/{reference}/{id}/OutgoingMails/Send"
_CONTENT_TYPE = "application/json;charset=utf-8"


class _TooLarge(Exception):
    pass


def compat_path_pattern(base_path: str) -> re.Pattern[str]:
    """Pleasanter matches its routes case-insensitively, so we do too."""
    return re.compile(
        "^" + re.escape(base_path) + r"/api/([^/]+)/([^/]+)/outgoingmails/send/?$", re.IGNORECASE
    )


def answer_response(answer: Answer) -> Response:
    """Compact JSON in the contract's key order, nulls left out; HTTP status = StatusCode."""
    body: dict[str, Any] = {"Id": answer.id, "StatusCode": answer.status}
    if answer.limit_per_date is not None:
        body["LimitPerDate"] = answer.limit_per_date
        body["LimitRemaining"] = answer.limit_remaining
    body["Message"] = answer.message
    return Response(
        orjson.dumps(body), status_code=answer.status, headers={"content-type": _CONTENT_TYPE}
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


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


def build_router(base_path: str) -> APIRouter:
    router = APIRouter()

    @router.post(
        base_path + CANONICAL,
        summary="Send an email for a record (Pleasanter-compatible)",
        tags=["Pleasanter compatible"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _REQUEST_SCHEMA}},
            },
            "responses": {
                str(code): {
                    "description": text,
                    "content": {"application/json": {"schema": _ANSWER_SCHEMA}},
                }
                for code, text in [
                    (200, "Stored durably and queued"),
                    (400, "Invalid JSON or request"),
                    (401, "Unable to authorize"),
                    (403, "No permission, unknown record, or API disabled"),
                    (413, "Request body too large"),
                    (429, "Daily limit of the site exceeded"),
                    (500, "Address or sender problem"),
                    (503, "Database unavailable"),
                ]
            },
        },
    )
    async def send_mail(reference: str, id: str, request: Request) -> Response:
        state: AppState = request.app.state.mailgate
        settings = state.settings
        try:
            body = await _read_body(request, settings.max_request_bytes)
        except _TooLarge:
            return _refused(id, 413, Msg.TOO_LARGE, settings.default_language)
        call = SendCall(reference, id, body, request.headers.get("content-type"))
        try:
            answer = await state.acceptor.accept(call, datetime.now(UTC))
        except (OperationalError, InterfaceError, OSError, TimeoutError) as error:
            log.error("database unavailable: %s", type(error).__name__)
            return _refused(id, 503, Msg.UNAVAILABLE, settings.default_language)
        except Exception:
            log.exception("unexpected error in the send route")
            return _refused(id, 500, Msg.UNEXPECTED, settings.default_language)
        if answer.status == 200:
            ACCEPTED.inc()
            state.wake_worker()
        else:
            REFUSED.labels(status=str(answer.status)).inc()
        return answer_response(answer)

    return router


def _refused(id_text: str, status: int, msg: Msg, language: str) -> Response:
    REFUSED.labels(status=str(status)).inc()
    return answer_response(Answer(parse_item_id(id_text), status, render(msg, language)))
