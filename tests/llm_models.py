"""Tiny causal language models for the fine-tuning tests and benchmark, made here (never downloaded): a
byte-level BPE tokenizer trained on a small built-in text with a ChatML chat template, a random Llama-style
model of any size saved with `save_pretrained`, and deterministic synthetic JSONL data in the three
fine-tuning formats. Each builder writes into the path it is given and returns it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD, EOS, START, END = "<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIALS = [PAD, EOS, START, END]
# ChatML. The plain template is what most models ship; the tagged one marks assistant text with
# {% generation %} so transformers can return the assistant mask itself.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
TAGGED_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}"
    "{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{% else %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

NAMES = ["ada", "bo", "cy", "dee", "eli", "fay", "gus", "hal", "ivy", "jo"]
COLOURS = ["red", "green", "blue", "amber", "violet", "grey", "white", "black"]
THINGS = ["kettle", "bicycle", "lantern", "garden", "river", "engine", "model", "cluster", "checkpoint", "token"]
VERBS = ["trains", "paints", "fixes", "serves", "counts", "packs", "reads", "writes"]


def sentence(rng: random.Random) -> str:
    """One sentence of the synthetic language the tokenizer, the data and the benchmark share."""
    return (f"{rng.choice(NAMES)} {rng.choice(VERBS)} the {rng.choice(COLOURS)} {rng.choice(THINGS)} "
            f"near the {rng.choice(THINGS)}.")


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = [sentence(rng) for _ in range(n)]
    return [*lines, "what colour is it? which thing? the answer is: yes no 0 1 2 3 4 5 6 7 8 9 user assistant system"]


def train_tokenizer(directory: Path, vocab_size: int = 512, tagged: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `corpus()`, saved with its chat template and special tokens."""
    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS,
                                   additional_special_tokens=[START, END], model_max_length=4096)  # type: ignore[no-untyped-call]
    fast.chat_template = TAGGED_CHAT_TEMPLATE if tagged else CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return fast


def tiny_llama(directory: Path, layers: int = 2, hidden: int = 64, vocab_size: int = 512, seed: int = 0,
               intermediate: int | None = None, heads: int = 4) -> Path:
    """A random LlamaForCausalLM with its tokenizer (`train_tokenizer`), in safetensors."""
    tok = train_tokenizer(directory, vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                         max_position_embeddings=4096, tie_word_embeddings=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def _answer(rng: random.Random, lead: str = "the answer is: ") -> tuple[str, str]:
    """A question about a sentence and its answer (`lead` then the word): learnable from the question."""
    text = sentence(rng)
    words = text.rstrip(".").split()
    if rng.random() < 0.5:
        return f"what colour is it? {text}", f"{lead}{words[3]}"
    return f"which thing? {text}", f"{lead}{words[4]}"


def chat_jsonl(path: Path, n: int, seed: int = 0, turns: int | tuple[int, int] = 1, system: bool = True,
               single: float = 0.0, lead: str = "the answer is: ") -> Path:
    """`n` conversations (optionally a system turn, then `turns` user/assistant pairs, or a number of
    them drawn from (min, max) where a share `single` has one pair: long-tailed lengths), one per line;
    each answer is `lead` and the word asked for."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            messages = [{"role": "system", "content": "answer briefly."}] if system else []
            count = turns if isinstance(turns, int) else 1 if rng.random() < single else rng.randint(*turns)
            for _ in range(count):
                question, answer = _answer(rng, lead)
                messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def prompt_completion_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            question, answer = _answer(rng)
            f.write(json.dumps({"prompt": question + "\n", "completion": answer}) + "\n")
    return path


def text_jsonl(path: Path, n: int, seed: int = 0, sentences: tuple[int, int] = (1, 3)) -> Path:
    """Plain text examples of `sentences` (min, max) sentences each: mixed lengths for packing."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            count = rng.randint(*sentences)
            f.write(json.dumps({"text": " ".join(sentence(rng) for _ in range(count))}) + "\n")
    return path
