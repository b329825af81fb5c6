"""HTTP/1.1 connections with limits: uvicorn's httptools protocol plus what it does not bound.

uvicorn bounds request headers only in its h11 protocol (`h11_max_incomplete_event_size`; h11 is the
slower parser), has no header or body read timeout (its keep-alive timeout runs only between a
response and the next request's first byte), and its `limit_concurrency` answers an extra
connection only once that connection has sent a request, in text. So this subclass adds, per
connection:

- a header limit: the request line and headers together may not exceed `max_header_bytes`; the
  connection is answered 431 as soon as more arrive (the parser never buffers more than one read;
  headers that arrive complete in one read are measured as the parser reports them);
- a header timeout: a request's headers must be complete `header_timeout_s` after its first byte
  (or after the connection opened): 408, or a plain close if nothing was sent;
- a body timeout: its body must be complete `body_timeout_s` after its headers: 408 (the request is
  abandoned: the application's `receive` reports a disconnect);
- a connection limit: beyond `max_connections` open connections a new one is answered 503 and closed
  at once, so idle sockets cannot pile up to the process's file limit.

Every answer (and the 400 for a request the HTTP parser refuses, which uvicorn gives in text) is the
server's one-line JSON error with `connection: close`, followed by a lingering
close (as nginx does): the server stops writing, discards what the client still sends for up to
`LINGER_SECONDS`, then closes, so a client that is still sending reads the answer instead of a
connection reset. The keep-alive timeout is uvicorn's own (`timeout_keep_alive`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from kubeforge_api.inference import ErrorBody
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

RETRY_AFTER_SECONDS = 1
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    on_refused: Callable[[int], None] = lambda status: None  # counts each answer given here


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection (`Config(http=...)`)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpTools,), {"limits": limits})


class HeadersTooLarge(Exception):
    """Raised from the parser's callback to stop parsing; uvicorn reports it as a parser error."""


class GuardedHttpTools(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True  # bytes received now belong to a request line or headers
        self._header_bytes = 0  # raw bytes received since the request began, while its headers are incomplete
        self._parsed_bytes = 0  # the request line and headers as the parser reported them
        self._oversized = False
        self._deadline: asyncio.TimerHandle | None = None
        self._discarding = False  # answered and half-closed: what still arrives is dropped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._answer(503, f"more than {self.limits.max_connections} open connections (maxConnections); "
                              "retry shortly", retry=True)
            return
        self._arm(self.limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding or self.transport.is_closing():
            return
        if self._awaiting_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._awaiting_headers and self._header_bytes > self.limits.max_header_bytes:
            self._answer(431, self._too_large())

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error (in text there), which is also how a `HeadersTooLarge`
        ends parsing: here the server's JSON error, 431 or 400."""
        if self._oversized:
            self._answer(431, self._too_large())
            return
        cycle = self.cycle  # a malformed body (chunk framing) ends the request being read: answer it
        current = not self._awaiting_headers and cycle is not None and not cycle.response_started
        if current and cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        self._answer(400, "malformed HTTP request", current=current)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed_bytes = 0
        if self._deadline is None:
            self._arm(self.limits.header_timeout_s, self._header_timeout)

    def on_url(self, url: bytes) -> None:
        self._parsed_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed_bytes += len(name) + len(value) + len(b": \r\n")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._parsed_bytes > self.limits.max_header_bytes:
            self._oversized = True
            raise HeadersTooLarge
        self._awaiting_headers, self._header_bytes = False, 0
        self._arm(self.limits.body_timeout_s, self._body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._awaiting_headers = True
        super().on_message_complete()

    def _too_large(self) -> str:
        return f"request line and headers exceed {self.limits.max_header_bytes} bytes (maxHeaderBytes)"

    def _header_timeout(self) -> None:
        self._deadline = None
        if self._header_bytes == 0:  # an idle connection: nothing to answer
            self.transport.close()
            return
        self._answer(408, f"request headers not complete within {self.limits.header_timeout_s:g} s "
                          "(headerTimeoutSeconds)")

    def _body_timeout(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is None or cycle.response_started:  # answered already (e.g. 413): drop the rest
            self.transport.close()
            return
        cycle.disconnected = True  # the application stops waiting for the body and answers nothing
        cycle.message_event.set()
        self._answer(408, f"request body not complete within {self.limits.body_timeout_s:g} s "
                          "(bodyTimeoutSeconds)", current=True)

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _answer(self, status: int, message: str, retry: bool = False, current: bool = False) -> None:
        """Answer `status` with a JSON error and close (lingering); the answer is written only where it
        cannot overtake a response: for the `current` request, or when no earlier response is pending."""
        self._disarm()
        self.limits.on_refused(status)
        if not (current or self.cycle is None or self.cycle.response_complete):
            self.transport.close()
            return
        body = ErrorBody(error=message).dump_json()
        extra = b"retry-after: %d\r\n" % RETRY_AFTER_SECONDS if retry else b""
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(), b"\r\nconnection: close\r\n", extra, b"\r\n", body]))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self._discarding = True
        self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_SECONDS, self.transport.close)
