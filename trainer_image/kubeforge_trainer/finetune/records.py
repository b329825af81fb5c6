"""The user's JSONL, read and checked before anything trains: one record per line in the job's format
(pydantic models, unknown keys ignored, no type coercion). The first bad line stops the job with one
`ConfigError` line, `FILE:LINE: what is wrong`, naming the file as the user's spec does."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from ..context import ConfigError

Format = Literal["messages", "prompt-completion", "text"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class Message(_Record):
    role: str = Field(min_length=1, max_length=64)
    content: str


class Messages(_Record):
    messages: list[Message] = Field(min_length=1)

    @model_validator(mode="after")
    def _has_assistant(self) -> Messages:
        if not any(m.role == "assistant" for m in self.messages):
            raise ValueError("no assistant message: nothing to learn from this conversation")
        return self


class PromptCompletion(_Record):
    prompt: str
    completion: str = Field(min_length=1)


class Text(_Record):
    text: str = Field(min_length=1)


Record = Messages | PromptCompletion | Text
MODELS: dict[str, type[Messages] | type[PromptCompletion] | type[Text]] = {
    "messages": Messages, "prompt-completion": PromptCompletion, "text": Text}


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _what(error: ErrorDetails, fmt: str) -> str:
    kind, where = error["type"], _where(tuple(error["loc"]))
    if kind == "json_invalid":
        return f"not valid JSON ({error.get('ctx', {}).get('error', error['msg'])})"
    if kind in ("model_type", "model_attributes_type") and not where:
        return f"not a JSON object (the {fmt} format wants one object per line)"
    if kind == "missing":
        return f"missing {where}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def read(path: Path, fmt: str, name: str) -> list[tuple[int, Record]]:
    """(line number, record) for each non-blank line of `path`; `name` is how errors name the file."""
    model = MODELS[fmt]
    found: list[tuple[int, Record]] = []
    try:
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    found.append((number, model.model_validate_json(line)))
                except ValidationError as e:
                    raise ConfigError(f"{name}:{number}: {_what(e.errors()[0], fmt)}") from None
    except OSError as e:
        raise ConfigError(f"{name}: cannot read the data ({e.strerror or e})") from None
    if not found:
        raise ConfigError(f"{name}: no records (one JSON object per line is expected)")
    return found
