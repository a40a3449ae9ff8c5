"""Who a request is for: user and session set once in context and copied onto every span started under it.

`with user_session(user_id="u1", session_id="s1"):` puts both in OTel baggage (so they also cross process
boundaries with the W3C baggage header) and `BaggageAttributes`, a span processor, writes them as `user.id`
and `session.id` on each span as it starts, including spans made by other instrumentations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import baggage, context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from sdk_helpers.conventions import SESSION_ID, USER_ID

PROPAGATED = (USER_ID, SESSION_ID)


@contextmanager
def user_session(user_id: str | None = None, session_id: str | None = None) -> Iterator[None]:
    """Every span started inside carries this user and session.

    >>> from sdk_helpers import user_session
    >>> with user_session(user_id="u-42", session_id="chat-7"):
    ...     pass  # agent code here; its spans get user.id=u-42, session.id=chat-7
    """
    ctx = context.get_current()
    for key, value in ((USER_ID, user_id), (SESSION_ID, session_id)):
        if value is not None:
            ctx = baggage.set_baggage(key, str(value), context=ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


class BaggageAttributes(SpanProcessor):
    """Copies user and session from baggage onto each span when it starts (never overwriting one it has)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for key in PROPAGATED:
            value = baggage.get_baggage(key, parent_context)
            if value is not None and (span.attributes is None or key not in span.attributes):
                span.set_attribute(key, str(value))

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
