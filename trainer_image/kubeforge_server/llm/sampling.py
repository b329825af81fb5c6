"""The next token of each sequence from its logits: greedy (temperature 0) takes the largest, as
`generate()` does without sampling; otherwise softmax at the temperature, cut to the smallest set
of tokens whose probability reaches `top_p` (nucleus), and drawn with the sequence's own random
generator, seeded by the request's `seed` when it has one, so a seeded request draws the same
tokens whatever else shares its batch."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_tokens: frozenset[int] = field(default_factory=frozenset)  # end-of-sequence ids (empty: ignore them)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Sampler:
    """Draws next tokens; keeps one generator per sampled sequence (by request id)."""

    def __init__(self) -> None:
        self._generators: dict[int, torch.Generator] = {}

    def forget(self, rid: int) -> None:
        self._generators.pop(rid, None)

    def sample(self, logits: torch.Tensor, rids: list[int], params: list[SamplingParams]) -> list[int]:
        """`logits` [rows, vocab] -> one token per row."""
        tokens: list[int] = logits.argmax(dim=-1).tolist()
        for row, (rid, p) in enumerate(zip(rids, params, strict=True)):
            if not p.greedy:
                tokens[row] = self._draw(logits[row], rid, p)
        return tokens

    def _draw(self, logits: torch.Tensor, rid: int, p: SamplingParams) -> int:
        generator = self._generators.get(rid)
        if generator is None:
            generator = torch.Generator(device=logits.device)
            seed = p.seed if p.seed is not None else secrets.randbits(63)
            generator.manual_seed(seed % 2**63)
            self._generators[rid] = generator
        probs = torch.softmax(logits.float() / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of the tokens ranked higher
            sorted_probs[before >= p.top_p] = 0.0  # the top token always stays
            choice = torch.multinomial(sorted_probs, 1, generator=generator)
            return int(order[choice].item())
        return int(torch.multinomial(probs, 1, generator=generator).item())
