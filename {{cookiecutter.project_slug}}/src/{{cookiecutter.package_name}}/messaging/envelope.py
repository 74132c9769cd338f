"""What travels through the broker: a JSON body and the headers that describe it.

The body is the event's payload only; everything about the message (its id, type, time,
the trace and the request and caller that caused it) is in headers, so that the broker,
its tools and any consumer can route and correlate without parsing the body.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import orjson

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

MESSAGE_ID: Final = "message-id"
MESSAGE_TYPE: Final = "message-type"
MESSAGE_TIME: Final = "message-time"
REQUEST_ID: Final = "x-request-id"
USER_ID: Final = "x-user-id"
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
# Set by the worker on a dead-lettered message: why it was given up.
DEAD_LETTER_REASON: Final = "x-dead-letter-reason"


class MalformedMessageError(Exception):
    """A delivery that is not one of our messages (missing headers, body not JSON)."""


class MessageRefusedError(Exception):
    """The broker will never take this message as it is (too large, say): not an outage."""


class PublishError(Exception):
    """The broker did not take every message of a batch; `taken` are the ids it did take.

    `refused` maps the messages it will never take to the reason (`MessageRefusedError`);
    `unavailable` is false when those are all that failed: the broker itself is fine.
    """

    def __init__(
        self,
        taken: Collection[uuid.UUID],
        cause: BaseException,
        refused: Mapping[uuid.UUID, str] | None = None,
        *,
        unavailable: bool = True,
    ) -> None:
        """`cause` is the first failure of the batch."""
        super().__init__(str(cause) or type(cause).__name__)
        self.taken = frozenset(taken)
        self.refused = dict(refused or {})
        self.unavailable = unavailable

    @classmethod
    def of_batch(
        cls, messages: Sequence[Message], results: Sequence[BaseException | None]
    ) -> PublishError | None:
        """The error for a batch published one message a result (None: taken), if any failed."""
        failures = [result for result in results if result is not None]
        if not failures:
            return None
        taken = [
            message.id for message, result in zip(messages, results, strict=True) if result is None
        ]
        refused = {
            message.id: str(result) or type(result).__name__
            for message, result in zip(messages, results, strict=True)
            if isinstance(result, MessageRefusedError)
        }
        return cls(taken, failures[0], refused, unavailable=len(refused) < len(failures))


@dataclass(frozen=True, slots=True)
class Message:
    """One event: `payload` is the JSON body, `headers` hold the rest (all strings)."""

    id: uuid.UUID
    type: str
    time: datetime
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        """The payload as JSON bytes."""
        return orjson.dumps(self.payload)

    @property
    def request_id(self) -> str | None:
        """The `X-Request-ID` of the HTTP request that caused the event, if any."""
        return self.headers.get(REQUEST_ID)

    @property
    def user_id(self) -> str | None:
        """The authenticated caller of that request, if any."""
        return self.headers.get(USER_ID)

    @classmethod
    def decode(cls, headers: dict[str, Any], body: bytes) -> Message:
        """Read a delivery; raise `MalformedMessageError` when it cannot be one of ours."""
        text = {str(k).lower(): str(v) for k, v in headers.items() if v is not None}
        try:
            payload = orjson.loads(body)
            message_id = uuid.UUID(text[MESSAGE_ID])
            message_time = datetime.fromisoformat(text[MESSAGE_TIME])
            message_type = text[MESSAGE_TYPE]
        except (KeyError, ValueError, orjson.JSONDecodeError) as exc:
            msg = f"not a valid message: {type(exc).__name__}: {exc}"
            raise MalformedMessageError(msg) from None
        if not isinstance(payload, dict):
            msg = "not a valid message: the body is not a JSON object"
            raise MalformedMessageError(msg)
        return cls(message_id, message_type, message_time, payload, text)
