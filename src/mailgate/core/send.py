"""The compat send call as one story: each contract row a step that refuses or goes on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from mailgate.config import Settings
from mailgate.core.messages import Msg, render
from mailgate.core.recipients import Recipients, resolve_recipients
from mailgate.core.refusal import Refusal
from mailgate.core.request import SendRequest, api_key_of, parse_fields, read_send_request
from mailgate.core.sender import Senders, apply_fixed_from, default_sender, requested_sender

_INT64 = 2**63
_JSON_TYPE = re.compile(r"^\s*application/([a-z0-9.+-]*\+)?json\s*(;|$)", re.IGNORECASE)
_ID = re.compile(r"^-?[0-9]+$")


@dataclass(frozen=True, slots=True)
class Caller:
    """The API key's user and, for the call's item, its site and the user's send-mail right."""

    id: int
    name: str
    language: str | None
    addresses: tuple[str, ...]
    site_id: int | None
    can_send_mail: bool


@dataclass(frozen=True, slots=True)
class AcceptedMail:
    """Everything the outbox stores for one accepted call."""

    reference: str
    record_id: int
    site_id: int
    user_id: int
    request: SendRequest
    senders: Senders
    recipients: Recipients
    accepted_at: datetime


class SendStore(Protocol):
    """What the send rules read and write, inside the one transaction of a call."""

    async def caller(self, api_key: str, item_id: int) -> Caller | None: ...
    async def user_for_token(self, user_id: int) -> tuple[str, tuple[str, ...]] | None: ...
    async def take_quota(self, site_id: int, day: str, limit: int) -> int | None: ...
    async def enqueue(self, mail: AcceptedMail) -> int: ...


@dataclass(frozen=True, slots=True)
class SendCall:
    """One call to the compat route; `fields` is its parsed body, None if not a JSON object."""

    reference: str
    id_text: str
    fields: dict[str, Any] | None
    content_type: str | None

    @classmethod
    def read(
        cls, reference: str, id_text: str, body: bytes | bytearray, content_type: str | None
    ) -> SendCall:
        """Parse the body at once, so the caller can drop it: a big body is the call's memory."""
        try:
            fields = parse_fields(body)
        except Refusal:
            fields = None
        return cls(reference, id_text, fields, content_type)


@dataclass(frozen=True, slots=True)
class Answer:
    """The compat response: `status` is both the HTTP status and `StatusCode`."""

    id: int
    status: int
    message: str
    limit_per_date: int | None = None
    limit_remaining: int | None = None
    mail_id: int | None = None


def parse_item_id(text: str) -> int:
    """The URL's id as a number, 0 when it is not one (as the contract's `Id`)."""
    if _ID.match(text):
        value = int(text)
        if -_INT64 <= value < _INT64:
            return value
    return 0


async def send(call: SendCall, store: SendStore, settings: Settings, now: datetime) -> Answer:
    """Run the contract's checks in order and enqueue the mail; never raises a Refusal."""
    item_id = parse_item_id(call.id_text)
    language: str = settings.default_language
    try:
        if not settings.api_enabled:
            raise Refusal(403, Msg.FORBIDDEN)
        fields = call.fields
        if fields is None:
            raise Refusal(400, Msg.INVALID_JSON)
        api_key = api_key_of(fields)
        caller = await store.caller(api_key, item_id) if api_key else None
        if caller is None:
            raise Refusal(401, Msg.UNAUTHORIZED)
        language = caller.language or language
        if settings.check_content_type and not _JSON_TYPE.match(call.content_type or ""):
            raise Refusal(400, Msg.INVALID_REQUEST)
        fallback_sender = default_sender(caller.name, caller.addresses, settings.mail)
        request = read_send_request(fields, settings.max_title_length)
        site_id = caller.site_id
        limit = settings.limit_per_site if site_id is not None else 0
        remaining = None
        if site_id is not None and limit > 0:
            # The server's local calendar day, as Pleasanter counts it.
            day = now.astimezone().date().isoformat()
            used = await store.take_quota(site_id, day, limit)
            if used is None:
                raise Refusal(429, Msg.OVER_LIMIT, site_id, limit)
            remaining = limit - used
        sender = requested_sender(request.from_, fallback_sender)
        if site_id is None or not caller.can_send_mail:
            raise Refusal(403, Msg.FORBIDDEN)
        recipients = await resolve_recipients(
            request.to,
            request.cc,
            request.bcc,
            store.user_for_token,
            settings.max_recipients,
            settings.mail.internal_domains,
        )
        mail_id = await store.enqueue(
            AcceptedMail(
                reference=call.reference,
                record_id=item_id,
                site_id=site_id,
                user_id=caller.id,
                request=request,
                senders=apply_fixed_from(sender, settings.mail),
                recipients=recipients,
                accepted_at=now,
            )
        )
    except Refusal as refusal:
        return Answer(item_id, refusal.status, render(refusal.msg, language, *refusal.args_))
    return Answer(
        item_id,
        200,
        render(Msg.SENT, language),
        limit_per_date=limit if remaining is not None else None,
        limit_remaining=remaining,
        mail_id=mail_id,
    )
