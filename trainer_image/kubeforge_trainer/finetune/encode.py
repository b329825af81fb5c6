"""Records to training examples: token ids and next-token labels, with the loss only where the format
says (assistant turns of a conversation, the completion after a prompt, every token of plain text).

Conversations are rendered with the tokenizer's own chat template. Where the template marks assistant
text with `{% generation %}`, transformers returns the assistant mask itself; otherwise each assistant
turn is located by rendering the conversation prefix by prefix (the text up to the turn's generation
prompt, then up to its end), and the tokens whose first character falls inside a turn are trained on.
A template that does not render prefixes as prefixes of the whole cannot be masked this way and is
refused. Labels are shifted here (position i predicts token i+1), so examples can be packed side by
side without the last token of one predicting the first of the next."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..context import ConfigError
from .records import Messages, PromptCompletion, Record, Text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE = -100  # the label cross-entropy skips


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]  # labels[i] is the token after input_ids[i], or IGNORE

    @property
    def targets(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def to_example(ids: list[int], trained: list[bool], max_len: int) -> Example | None:
    """Truncate to `max_len` tokens and shift; None when no token is left to learn."""
    ids, trained = ids[: max_len + 1], trained[: max_len + 1]
    labels = [nxt if keep else IGNORE for nxt, keep in zip(ids[1:], trained[1:], strict=True)]
    example = Example(ids[:max_len], [*labels, IGNORE][: min(len(ids), max_len)])
    return example if example.targets else None


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
    assert isinstance(text, str)
    return text


def _assistant_spans(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> tuple[str, list[range]]:
    """The rendered conversation and the character span of each assistant turn (prefix by prefix)."""
    full = _render(tokenizer, messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, upto = _render(tokenizer, messages[:i], True), _render(tokenizer, messages[: i + 1], False)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise ValueError("the tokenizer's chat template does not render this conversation prefix by prefix, so "
                             "its assistant turns cannot be located; use a template with {% generation %} markers")
        spans.append(range(len(before), len(upto)))
    return full, spans


def _conversation(tokenizer: PreTrainedTokenizerBase, record: Messages) -> tuple[list[int], list[bool]]:
    messages = [m.model_dump() for m in record.messages]
    template = str(tokenizer.chat_template or "")
    if "generation" in template and "{%" in template:
        out: Any = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                 return_assistant_tokens_mask=True)
        if any(out["assistant_masks"]):
            return list(out["input_ids"]), [bool(m) for m in out["assistant_masks"]]
    text, spans = _assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    trained = [any(start in span for span in spans) for start, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), trained


def _tokens(tokenizer: PreTrainedTokenizerBase, record: Record) -> tuple[list[int], list[bool]]:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if isinstance(record, Messages):
        return _conversation(tokenizer, record)
    if isinstance(record, PromptCompletion):
        prompt = list(tokenizer(record.prompt)["input_ids"])
        completion = list(tokenizer(record.completion, add_special_tokens=False)["input_ids"]) + eos
        return prompt + completion, [False] * len(prompt) + [True] * len(completion)
    assert isinstance(record, Text)
    ids = list(tokenizer(record.text)["input_ids"]) + eos
    return ids, [True] * len(ids)


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, fmt: str, name: str) -> None:
    if fmt == "messages" and not tokenizer.chat_template:
        raise ConfigError(f"{name}: the base model's tokenizer has no chat template; the messages format needs one "
                          "(use prompt-completion or text, or a model with a chat template)")
    if fmt == "messages" and not tokenizer.is_fast:
        raise ConfigError(f"{name}: the messages format needs a fast tokenizer (tokenizer.json)")


def encode(tokenizer: PreTrainedTokenizerBase, lines: list[tuple[int, Record]], max_len: int,
           name: str) -> list[Example]:
    """Examples in file order; records left with no trained token (after truncation) are dropped."""
    examples = []
    for number, record in lines:
        try:
            example = to_example(*_tokens(tokenizer, record), max_len)
        except (ValueError, TypeError) as e:  # jinja's TemplateError is an Exception: caught below
            raise ConfigError(f"{name}:{number}: {e}") from None
        except Exception as e:
            if type(e).__module__.startswith("jinja2"):
                raise ConfigError(f"{name}:{number}: the chat template refused the conversation: {e}") from None
            raise
        if example is not None:
            examples.append(example)
    if not examples:
        raise ConfigError(f"{name}: no record has a token to learn within maxSeqLength={max_len}")
    return examples
