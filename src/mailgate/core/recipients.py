"""Recipient rules: splitting, [UserN] expansion, validation, limits and InternalDomains."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailgate.core.messages import Msg
from mailgate.core.refusal import Refusal
from mailgate.mail.addresses import (
    Mailbox,
    is_internal,
    parse_mailbox,
    split_addresses,
    user_token_id,
)

# Looks up a user's display name and mail addresses for a [UserN] token; None if unknown.
UserLookup = Callable[[int], Awaitable[tuple[str, tuple[str, ...]] | None]]


@dataclass(frozen=True, slots=True)
class Recipients:
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...]
    bcc: tuple[Mailbox, ...]

    def envelope(self) -> list[str]:
        return [mailbox.address for mailbox in (*self.to, *self.cc, *self.bcc)]


async def resolve_recipients(
    to: str,
    cc: str,
    bcc: str,
    lookup_user: UserLookup,
    max_recipients: int,
    internal_domains: tuple[str, ...],
) -> Recipients:
    """Rows 9 to 11 of the contract, plus mailgate's recipient limit."""
    lists = [split_addresses(to), split_addresses(cc), split_addresses(bcc)]
    if not any(lists):
        raise Refusal(500, Msg.NO_RECIPIENT)
    # Counted before parsing so a huge list is refused without work; [UserN] counts once here
    # and again, expanded, below.
    if sum(len(pieces) for pieces in lists) > max_recipients:
        raise Refusal(400, Msg.TOO_MANY_RECIPIENTS)
    parsed = [[await _expand(piece, lookup_user) for piece in pieces] for pieces in lists]
    seen: set[str] = set()
    result: list[tuple[Mailbox, ...]] = []
    for groups in parsed:
        unique = []
        for mailboxes in groups:
            for mailbox in mailboxes:
                key = mailbox.address.lower()
                if key not in seen:
                    seen.add(key)
                    unique.append(mailbox)
        result.append(tuple(unique))
    if len(seen) > max_recipients:
        raise Refusal(400, Msg.TOO_MANY_RECIPIENTS)
    recipients = Recipients(to=result[0], cc=result[1], bcc=result[2])
    if internal_domains:
        for address in recipients.envelope():
            if not is_internal(address, internal_domains):
                raise Refusal(500, Msg.EXTERNAL_ADDRESS, address)
    return recipients


async def _expand(piece: str, lookup_user: UserLookup) -> tuple[Mailbox, ...]:
    user_id = user_token_id(piece)
    if user_id is not None:
        found = await lookup_user(user_id)
        if found is None or not found[1]:
            raise Refusal(500, Msg.INVALID_ADDRESS, piece)
        name, addresses = found
        return tuple(Mailbox(name=name, address=address) for address in addresses)
    mailbox = parse_mailbox(piece)
    if mailbox is None:
        raise Refusal(500, Msg.INVALID_ADDRESS, piece)
    return (mailbox,)
