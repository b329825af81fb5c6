"""The OpenAI-compatible HTTP routes, beside the Open Inference Protocol ones on the same port:
`GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (answers whole, or with
`stream: true` as server-sent events in OpenAI's chunk format ending `data: [DONE]`). They only
translate: parse and bound the request (400 with OpenAI's error object), tokenize, hand it to the
engine (429 beyond the waiting bound) and write what comes back. A client that disconnects is
noticed at once (its request is cancelled and its KV-cache blocks freed within a step); a slow
reader only delays its own stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kubeforge_api.openai import (
    PATH_CHAT,
    PATH_COMPLETIONS,
    PATH_MODELS,
    SSE_DONE,
    AssistantMessage,
    ChatChoice,
    ChatChunk,
    ChatChunkChoice,
    ChatCompletion,
    ChatRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Delta,
    ModelCard,
    ModelList,
    Usage,
)
from pydantic import BaseModel, ValidationError

from ..errors import ServerError
from .engine import QueueFull
from .errors import BadRequest, MethodNotAllowed, ModelFailed, ModelNotFound, OpenAIError, RouteNotFound, TooMany
from .serving import Generation, LanguageModel

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ReadBody = Callable[[Scope, Receive], Awaitable[bytes]]

log = logging.getLogger("kubeforge_server")
PREFIX = "/v1/"
JSON = b"application/json"
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]
INLINE_TOKENIZE_CHARS = 64 * 1024  # longer prompts are tokenized off the event loop


class ClientLeft(Exception):
    """The client disconnected: nobody to answer."""


class OpenAIRoutes:
    """`lm()` is the served language model, or raises why there is none (still loading, another task)."""

    def __init__(self, lm: Callable[[], LanguageModel], read_body: ReadBody,
                 count: Callable[[str, int], None]) -> None:
        self._lm, self._read_body, self._count = lm, read_body, count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrival = time.perf_counter()
        path, method = scope["path"], scope["method"]
        endpoint = {PATH_COMPLETIONS: "completions", PATH_CHAT: "chat_completions"}.get(path, "models")
        try:
            status = await self._route(path, method, scope, receive, send, arrival)
        except ClientLeft:
            return
        except OpenAIError as e:
            status = await _answer(send, e.status, e.body(), e.headers)
        except ServerError as e:  # from reading the body: too large, the body budget spent, a timeout
            error = OpenAIError(e.message)
            error.status, error.headers = e.status, e.headers
            status = await _answer(send, e.status, error.body(), e.headers)
        except Exception as e:  # a fault of ours, not of the request: say so in one line (if not streaming yet)
            log.exception("unexpected error")
            status = 500
            with contextlib.suppress(Exception):
                await _answer(send, 500, ModelFailed(f"internal error: {type(e).__name__}").body())
        self._count(endpoint, status)

    async def _route(self, path: str, method: str, scope: Scope, receive: Receive, send: Send,
                     arrival: float) -> int:
        if path in (PATH_COMPLETIONS, PATH_CHAT):
            _allow(method, "POST")
            lm = self._lm()
            body = await self._read_body(scope, receive)
            request = _parse(CompletionRequest if path == PATH_COMPLETIONS else ChatRequest, body)
            return await self._generate(lm, request, receive, send, arrival)
        if path == PATH_MODELS or path.startswith(PATH_MODELS + "/"):
            _allow(method, "GET")
            lm = self._lm()
            card = ModelCard(id=lm.name, created=lm.created, max_model_len=lm.max_len)
            if path == PATH_MODELS:
                return await _answer(send, 200, ModelList(data=[card]).model_dump_json().encode())
            _check_model(lm, path[len(PATH_MODELS) + 1:])
            return await _answer(send, 200, card.model_dump_json().encode())
        raise RouteNotFound(f"no such endpoint: {method} {path[:200]}")

    async def _generate(self, lm: LanguageModel, request: CompletionRequest | ChatRequest, receive: Receive,
                        send: Send, arrival: float) -> int:
        _check_model(lm, request.model)
        if isinstance(request, CompletionRequest) and isinstance(request.prompt, str) and (
                len(request.prompt) > INLINE_TOKENIZE_CHARS):
            prompt = await asyncio.to_thread(lm.prompt_ids, request)
        else:
            prompt = lm.prompt_ids(request)
        try:
            gen = lm.generation(request, prompt, arrival)
        except QueueFull as e:
            raise TooMany(f"the server is busy: {e}; retry shortly") from None
        left = asyncio.Event()
        watcher = asyncio.create_task(_watch(receive, gen, left))
        try:
            if request.stream:
                await _stream(send, gen, request, lm.name, left)
                return 200
            text = await _collect(gen, left)
            return await _answer(send, 200, _whole(request, gen, text, lm.name))
        finally:
            watcher.cancel()
            gen.cancel()


def _check_model(lm: LanguageModel, name: str) -> None:
    if name != lm.name:
        raise ModelNotFound(f"the model {name[:128]!r} does not exist; this server serves {lm.name!r}", "model")


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"method {method} is not allowed here; use {allowed}")


def _parse(model: type[CompletionRequest] | type[ChatRequest], body: bytes) -> CompletionRequest | ChatRequest:
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "json_invalid":
            raise BadRequest(f"the body is not valid JSON: {first['msg']}") from None
        raise BadRequest(f"{where or 'body'}: {first['msg']}", str(first["loc"][0]) if first["loc"] else None) from None


async def _watch(receive: Receive, gen: Generation, left: asyncio.Event) -> None:
    """Notice the client leaving (the body has been read: the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    left.set()
    gen.cancel()
    gen.wake()


async def _collect(gen: Generation, left: asyncio.Event) -> str:
    parts = []
    while not gen.done:
        parts.append(await gen.next_text())
        if left.is_set():
            raise ClientLeft
    if gen.error is not None:
        raise ModelFailed(f"the model failed: {gen.error}")
    return "".join(parts)


def _usage(gen: Generation) -> Usage:
    return Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                 total_tokens=gen.prompt_tokens + gen.completion_tokens)


def _finish(gen: Generation) -> Any:
    return "stop" if gen.finish == "stop" else "length"


def _whole(request: CompletionRequest | ChatRequest, gen: Generation, text: str, name: str) -> bytes:
    created = int(time.time())
    answer: BaseModel
    if isinstance(request, ChatRequest):
        choice = ChatChoice(message=AssistantMessage(content=text), finish_reason=_finish(gen))
        answer = ChatCompletion(id=f"chatcmpl-{uuid.uuid4().hex}", created=created, model=name, usage=_usage(gen),
                                choices=[choice])
    else:
        answer = Completion(id=f"cmpl-{uuid.uuid4().hex}", created=created, model=name, usage=_usage(gen),
                            choices=[CompletionChoice(text=text, finish_reason=_finish(gen))])
    return answer.model_dump_json().encode()


async def _stream(send: Send, gen: Generation, request: CompletionRequest | ChatRequest, name: str,
                  left: asyncio.Event) -> None:
    chat = isinstance(request, ChatRequest)
    rid, created = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", int(time.time())

    def chunk(text: str | None, finish: Any = None, role: bool = False) -> bytes:
        event: BaseModel
        if chat:
            delta = Delta(role="assistant" if role else None, content=text)
            event = ChatChunk(id=rid, created=created, model=name,
                              choices=[ChatChunkChoice(delta=delta, finish_reason=finish)])
        else:
            event = Completion(id=rid, created=created, model=name,
                               choices=[CompletionChoice(text=text or "", finish_reason=finish)])
        return b"data: " + event.model_dump_json(exclude_none=chat).encode() + b"\n\n"

    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    if chat:
        await _event(send, chunk("", role=True))
    while not gen.done:
        before = gen.completion_tokens
        text = await gen.next_text()
        if left.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if text or (gen.completion_tokens > before and not gen.done):  # a chunk per step with new tokens,
            await _event(send, chunk(text))  # even when their text is not complete yet (bytes of a character)
    if gen.error is not None:
        error = ModelFailed(f"the model failed: {gen.error}")
        await _event(send, b"data: " + error.body() + b"\n\n")
    else:
        await _event(send, chunk(None if chat else "", finish=_finish(gen)))
        if request.include_usage():
            usage: dict[str, Any] = {
                "id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
                "model": name, "choices": [], "usage": _usage(gen).model_dump()}
            await _event(send, b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n")
    await send({"type": "http.response.body", "body": SSE_DONE, "more_body": False})


async def _event(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _answer(send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> int:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", JSON), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
    return status
