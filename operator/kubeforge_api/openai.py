"""OpenAI-compatible wire models for causal language models, used by both ends: the inference server
parses `/v1/completions` and `/v1/chat/completions` requests and writes answers, streamed chunks
(server-sent events ending `data: [DONE]`), the model list and error objects with them; tests and
benchmarks build requests and read answers with them.

Requests accept the fields the server honours, each bounded (`n` is 1 only); any other field is a
400 naming it. `ignore_eos` is vLLM's extension (generate `max_tokens` tokens even past the end-of-
sequence token), for benchmarks that need fixed output lengths."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

PATH_MODELS: Final = "/v1/models"
PATH_COMPLETIONS: Final = "/v1/completions"
PATH_CHAT: Final = "/v1/chat/completions"
SSE_DONE: Final = b"data: [DONE]\n\n"
OWNER: Final = "kubeforge"

MAX_STOPS: Final = 4
MAX_STOP_CHARS: Final = 256
MAX_MESSAGES: Final = 1024
MAX_TEXT_CHARS: Final = 4 * 1024 * 1024  # the request body bounds it first (maxRequestBytes)
MAX_TOKENS_FIELD: Final = 1_000_000  # then the model's context bounds it (400 beyond)
DEFAULT_COMPLETION_TOKENS: Final = 16  # OpenAI's default for /v1/completions; chat defaults to the context

FinishReason = Literal["stop", "length"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class _Open(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    """Fields both generation requests share."""

    model: str = Field(min_length=1, max_length=253)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_FIELD)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    n: Literal[1] = 1
    stop: str | Annotated[list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]],
                          Field(max_length=MAX_STOPS)] | None = Field(default=None)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    ignore_eos: bool = False

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return [s for s in stops if s]

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_Sampling):
    """POST /v1/completions: one prompt, text or token ids."""

    prompt: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | Annotated[
        list[Annotated[int, Field(ge=0, lt=2**31)]], Field(min_length=1, max_length=MAX_TOKENS_FIELD)]


class TextPart(_Strict):
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT_CHARS)


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | Annotated[
        list[TextPart], Field(max_length=MAX_MESSAGES)]
    name: str | None = Field(default=None, max_length=64)

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Sampling):
    """POST /v1/chat/completions: the messages go through the tokenizer's chat template."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_FIELD)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(_Open):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None = None


class Completion(_Open):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(_Open):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Open):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason


class ChatCompletion(_Open):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(_Open):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Open):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatChunk(_Open):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(_Open):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = OWNER
    max_model_len: int | None = None  # vLLM's extension: the context length in tokens


class ModelList(_Open):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(_Open):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorObject(_Open):
    """OpenAI's error answer: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail
