"""Errors that become HTTP answers: each carries its status code and a one-line message, so the
HTTP edge only translates (`{"error": message}` with `status`)."""

from __future__ import annotations


class ServerError(Exception):
    status = 500
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split())[:500])

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(ServerError):
    """Schema, datatype, shape, value or batch-size violation."""

    status = 422


class TooLarge(ServerError):
    status = 413


class NotFound(ServerError):
    status = 404


class MethodNotAllowed(ServerError):
    status = 405


class Unavailable(ServerError):
    """Queue full, model not loaded yet, or shutting down: try again (elsewhere) shortly."""

    status = 503
    headers = ((b"retry-after", b"1"),)


class Timeout(ServerError):
    status = 504
