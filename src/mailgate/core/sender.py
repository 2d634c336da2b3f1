"""Sender policy: the user's address, SupportFrom, a caller's From, FixedFrom/AllowedFrom."""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.config import MailPolicy
from mailgate.core.messages import Msg
from mailgate.core.refusal import Refusal
from mailgate.mail.addresses import Mailbox, parse_mailbox, split_addresses


@dataclass(frozen=True, slots=True)
class Senders:
    """`history` is what the caller asked for; `header` is what the recipients see."""

    history: Mailbox
    header: Mailbox


def default_sender(user_name: str, user_addresses: tuple[str, ...], policy: MailPolicy) -> Mailbox:
    """The user's first address under the user's name, else SupportFrom (row 4)."""
    if user_addresses:
        return Mailbox(name=user_name, address=user_addresses[0])
    support = parse_mailbox(policy.support_from) if policy.support_from else None
    if support is None:
        raise Refusal(500, Msg.NO_MAIL_ADDRESS)
    return support


def requested_sender(from_text: str, default: Mailbox) -> Mailbox:
    """A non-empty From must be exactly one valid address (row 7)."""
    if not from_text.strip():
        return default
    pieces = split_addresses(from_text)
    mailbox = parse_mailbox(pieces[0]) if len(pieces) == 1 else None
    if mailbox is None:
        raise Refusal(500, Msg.INVALID_ADDRESS, from_text)
    return mailbox


def apply_fixed_from(sender: Mailbox, policy: MailPolicy) -> Senders:
    """Replace the header From by FixedFrom unless the address is in AllowedFrom."""
    fixed = parse_mailbox(policy.fixed_from) if policy.fixed_from else None
    if fixed is None:
        return Senders(history=sender, header=sender)
    # Addresses compare case-insensitively: `Info@Example.com` is the same mailbox to a relay.
    allowed = {address.strip().lower() for address in policy.allowed_from}
    if sender.address.lower() in allowed:
        return Senders(history=sender, header=sender)
    return Senders(history=sender, header=fixed)
