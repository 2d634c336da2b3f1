"""A refused call: the contract's status code and message, raised by the rules."""

from __future__ import annotations

from mailgate.core.messages import Msg


class Refusal(Exception):
    """The rules refuse the call with `status` and the message `msg` filled with `args`."""

    def __init__(self, status: int, msg: Msg, *args: object) -> None:
        super().__init__(msg.value)
        self.status = status
        self.msg = msg
        self.args_ = args
