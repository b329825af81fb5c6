"""Errors of the OpenAI-compatible routes, each its HTTP status and OpenAI's error object
(`{"error": {"message", "type", "param", "code"}}`)."""

from __future__ import annotations

from kubeforge_api.openai import ErrorDetail, ErrorObject


class OpenAIError(Exception):
    status = 400
    kind = "invalid_request_error"
    code: str | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(" ".join(message.split())[:500])
        self.param = param

    def body(self) -> bytes:
        detail = ErrorDetail(message=str(self), type=self.kind, param=self.param, code=self.code)
        return ErrorObject(error=detail).model_dump_json().encode()


class BadRequest(OpenAIError):
    pass


class ModelNotFound(OpenAIError):
    status = 404
    code = "model_not_found"


class RouteNotFound(OpenAIError):
    status = 404


class MethodNotAllowed(OpenAIError):
    status = 405


class TooMany(OpenAIError):
    """The waiting queue is full: retry shortly."""

    status = 429
    kind = "rate_limit_error"
    code = "queue_full"
    headers = ((b"retry-after", b"1"),)


class NotReady(OpenAIError):
    status = 503
    kind = "service_unavailable"
    headers = ((b"retry-after", b"1"),)


class ModelFailed(OpenAIError):
    status = 500
    kind = "server_error"
