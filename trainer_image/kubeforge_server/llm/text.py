"""Generated tokens to text, incrementally, and stop strings. Each new token decodes together with the
tokens since the last complete piece of text (so tokenizers that join pieces with spaces, or split a
character over tokens, give the same text as decoding all at once); text that ends in an incomplete
character waits for the next token. Text that could still become a stop string is held back until
it cannot; a stop string ends the text before it."""

from __future__ import annotations

from typing import Any

INCOMPLETE = "\ufffd"


class TextStream:
    def __init__(self, tokenizer: Any, stops: list[str]) -> None:
        self._tokenizer, self._stops = tokenizer, stops
        self._longest_stop = max((len(s) for s in stops), default=0)
        self.ids: list[int] = []
        self._prefix = 0  # first token of the window decoded with each new one
        self._read = 0  # tokens whose text is in `text`
        self.text = ""
        self._sent = 0
        self.stopped = False

    def add(self, token: int, final: bool = False) -> None:
        """One generated token (`final`: the last; its text is flushed even if incomplete)."""
        if self.stopped:
            return
        self.ids.append(token)
        self._decode(final)

    def flush(self) -> None:
        """The generation ended: whatever is still undecoded becomes text."""
        if not self.stopped and self._read < len(self.ids):
            self._decode(True)

    def _decode(self, final: bool) -> None:
        before = self._piece(self._prefix, self._read)
        after = self._piece(self._prefix, len(self.ids))
        if len(after) > len(before) and (final or not after.endswith(INCOMPLETE)):
            start = len(self.text)
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(self.ids)
            self._find_stop(start)

    def _piece(self, start: int, end: int) -> str:
        if start >= end:
            return ""
        text: str = self._tokenizer.decode(self.ids[start:end], skip_special_tokens=True)
        return text

    def _find_stop(self, start: int) -> None:
        begin = max(0, start - self._longest_stop + 1)
        found = [i for i in (self.text.find(s, begin) for s in self._stops) if i >= 0]
        if found:
            self.text = self.text[:min(found)]
            self.stopped = True

    def take(self, final: bool = False) -> str:
        """Text not handed out yet; without `final`, less what may still turn into a stop string."""
        end = len(self.text)
        if not final and not self.stopped:
            end -= self._held()
        delta = self.text[self._sent:end]
        self._sent = max(self._sent, end)
        return delta

    def _held(self) -> int:
        """Length of the longest end of the text that begins some stop string."""
        held = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(self.text)), held, -1):
                if self.text.endswith(stop[:k]):
                    held = k
                    break
        return held
