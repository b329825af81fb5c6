"""Fine-tuning's data and export on a real tokenizer and a real tiny Llama, in process: the loss falls on
assistant turns only (with and without {% generation %} markers in the chat template), packed examples
compute exactly what they compute alone, bad lines are named FILE:LINE, and the merged model computes
what the base with the adapter computes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from kubeforge_api.finetune import Finetune
from kubeforge_trainer.context import ConfigError
from kubeforge_trainer.finetune.batches import collate, make_rows
from kubeforge_trainer.finetune.encode import IGNORE, Example, encode
from kubeforge_trainer.finetune.export import export, gather
from kubeforge_trainer.finetune.loop import token_loss_sum
from kubeforge_trainer.finetune.model import check_packing, load_base, load_tokenizer, with_method
from kubeforge_trainer.finetune.records import read
from llm_models import TAGGED_CHAT_TEMPLATE, text_jsonl, tiny_llama

CONVERSATION = [{"role": "system", "content": "answer briefly."},
                {"role": "user", "content": "what colour is it? ada trains the red kettle."},
                {"role": "assistant", "content": "the answer is: red"},
                {"role": "user", "content": "which thing? bo paints the blue river near the garden."},
                {"role": "assistant", "content": "the answer is: river"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("model"))


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def encoded(model_dir: Path, path: Path, fmt: str, max_len: int = 256, tagged: bool = False) -> list[Example]:
    tokenizer = load_tokenizer(model_dir, "model")
    if tagged:
        tokenizer.chat_template = TAGGED_CHAT_TEMPLATE
    return encode(tokenizer, read(path, fmt, path.name), max_len, path.name)


def trained_text(model_dir: Path, example: Example) -> list[str]:
    """The decoded runs of consecutive label tokens (what the loss sees)."""
    tokenizer = load_tokenizer(model_dir, "model")
    runs: list[list[int]] = []
    previous = False
    for label in example.labels:
        if label != IGNORE and not previous:
            runs.append([])
        if label != IGNORE:
            runs[-1].append(label)
        previous = label != IGNORE
    return [tokenizer.decode(run) for run in runs]


@pytest.mark.parametrize("tagged", [False, True], ids=["prefix-rendering", "generation-markers"])
def test_loss_falls_on_assistant_turns_only(model_dir: Path, tmp_path: Path, tagged: bool) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATION, "id": 7}])
    (example,) = encoded(model_dir, path, "messages", tagged=tagged)
    runs = trained_text(model_dir, example)
    end = "<|im_end|>" if tagged else "<|im_end|>\n"  # the turn's end marker is learnt (and its newline, untagged)
    assert runs == [f"the answer is: red{end}", f"the answer is: river{end}"], runs
    assert len(example.input_ids) == len(example.labels)


def test_prompt_completion_and_text_masks(model_dir: Path, tmp_path: Path) -> None:
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "which thing? ", "completion": "the kettle"}])
    (example,) = encoded(model_dir, pc, "prompt-completion")
    assert trained_text(model_dir, example) == ["the kettle<|endoftext|>"]
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "ada trains the red kettle."}])
    (example,) = encoded(model_dir, text, "text")
    assert example.labels[:-1] == example.input_ids[1:] and example.labels[-1] == IGNORE  # every next token
    assert trained_text(model_dir, example)[0].endswith("kettle.<|endoftext|>")  # the end is learnt too


def test_truncation_keeps_the_shift_and_drops_records_with_nothing_to_learn(model_dir: Path, tmp_path: Path) -> None:
    long_prompt = {"prompt": "which thing? " * 40, "completion": "the kettle"}
    path = write_jsonl(tmp_path / "pc.jsonl", [long_prompt, {"prompt": "x ", "completion": "the river"}])
    examples = encoded(model_dir, path, "prompt-completion", max_len=16)
    assert len(examples) == 1 and trained_text(model_dir, examples[0]) == ["the river<|endoftext|>"]
    (text,) = encoded(model_dir, write_jsonl(tmp_path / "t.jsonl", [{"text": "ada trains the kettle. " * 9}]),
                      "text", max_len=16)
    assert len(text.input_ids) == 16 and text.labels[:15] == text.input_ids[1:] and text.labels[15] != IGNORE


BAD_LINES = [
    ("messages", "{not json", "not valid JSON"),
    ("messages", "[1, 2]", "not a JSON object"),
    ("messages", {"text": "hello"}, "missing messages"),
    ("messages", {"messages": [{"role": "user", "content": "hi"}]}, "no assistant message"),
    ("messages", {"messages": [{"role": "assistant", "content": 5}]}, "messages[0].content"),
    ("prompt-completion", {"prompt": "q"}, "missing completion"),
    ("prompt-completion", {"prompt": "q", "completion": ""}, "completion"),
    ("text", {"text": ["a"]}, "text: Input should be a valid string"),
]


@pytest.mark.parametrize(("fmt", "bad", "what"), BAD_LINES)
def test_a_malformed_line_is_named_file_and_line(tmp_path: Path, fmt: str, bad: Any, what: str) -> None:
    good = {"messages": {"messages": CONVERSATION}, "prompt-completion": {"prompt": "q", "completion": "a"},
            "text": {"text": "fine"}}[fmt]
    path = write_jsonl(tmp_path / "data.jsonl", [good, "", good, bad, good])
    with pytest.raises(ConfigError) as e:
        read(path, fmt, "pvc://data/data.jsonl")
    message = str(e.value)
    assert message.startswith("pvc://data/data.jsonl:4: ") and what in message and "\n" not in message, message


def test_packed_examples_compute_what_they_compute_alone(model_dir: Path, tmp_path: Path) -> None:
    examples = encoded(model_dir, text_jsonl(tmp_path / "t.jsonl", 12, sentences=(1, 4)), "text")
    rows = make_rows(examples, 96, packing=True)
    assert len(rows) < len(examples) and any(len(r) >= 3 for r in rows)
    assert all(sum(len(e.input_ids) for e in row) <= 96 for row in rows)
    model = load_base(model_dir, "model").eval()
    packed = collate(rows, 0, packing=True)
    with torch.no_grad():
        logits = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False).logits
        worst = 0.0
        for r, row in enumerate(rows):
            at = 0
            for e in row:
                alone = model(input_ids=torch.tensor([e.input_ids]), use_cache=False).logits[0]
                worst = max(worst, float((logits[r, at : at + len(e.input_ids)] - alone).abs().max()))
                at += len(e.input_ids)
        packed_loss = token_loss_sum(model, packed)
        unpacked_loss = token_loss_sum(model, collate(make_rows(examples, 96, packing=False), 0, packing=False))
    assert worst < 1e-5
    assert abs(float(packed_loss) - float(unpacked_loss)) < 1e-3 * float(unpacked_loss)
    labels = packed.labels[packed.labels != IGNORE]
    assert len(labels) == sum(e.targets for e in examples)  # no label across an example boundary
    check_packing(model, load_tokenizer(model_dir, "model"))  # the guard passes on a model that keeps them apart


def test_merged_model_computes_what_base_plus_adapter_computes(model_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ft = Finetune.model_validate({"model": {"uri": "pvc://models/base"}, "data": {"uri": "pvc://data/d.jsonl"},
                                  "lora": {"rank": 4, "targetModules": ["q_proj", "v_proj", "down_proj"]}})
    torch.manual_seed(1)
    trained = with_method(load_base(model_dir, "model"), ft)
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, p in trained.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.2)
    artifact, adapter = export(tmp_path, model_dir, ft, gather(trained, lora=True), load_tokenizer(model_dir, "m"),
                               {"note": "test"})
    assert adapter is not None and artifact.format == adapter.format == "hf-transformers"
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "artifact", local_files_only=True,
                                                  trust_remote_code=False, use_safetensors=True).eval()
    with_adapter = PeftModel.from_pretrained(load_base(model_dir, "model"), tmp_path / "adapter").eval()
    ids = torch.randint(0, 400, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = merged(input_ids=ids).logits, with_adapter(input_ids=ids).logits
        base = load_base(model_dir, "model")(input_ids=ids).logits
    assert float((a - b).abs().max()) < 1e-5 < float((a - base).abs().max())
    lineage = json.loads((tmp_path / "artifact" / "kubeforge-lineage.json").read_text())
    assert lineage["adapter"]["digest"] == adapter.digest and lineage["kind"] == "merged-model"
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "pvc://models/base"


def test_a_full_fine_tune_with_tied_embeddings_exports_what_it_trained(model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    config = load_base(model_dir, "model").config
    config.tie_word_embeddings = True
    tied_dir = tmp_path / "tied"
    torch.manual_seed(2)
    LlamaForCausalLM(config).save_pretrained(tied_dir)
    tokenizer = load_tokenizer(model_dir, "model")
    tokenizer.save_pretrained(tied_dir)
    ft = Finetune.model_validate({"model": {"uri": "pvc://models/tied"}, "data": {"uri": "pvc://data/d.jsonl"},
                                  "method": "full"})
    trained = with_method(load_base(tied_dir, "model"), ft)
    with torch.no_grad():
        trained.get_input_embeddings().weight.add_(0.5)  # the head moves with it: they are one tensor
    artifact, adapter = export(tmp_path / "out", tied_dir, ft, gather(trained, lora=False), tokenizer, {})
    assert adapter is None and artifact.path == "artifact"
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "artifact", local_files_only=True).eval()
    ids = torch.randint(0, 400, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float((exported(input_ids=ids).logits - trained.eval()(input_ids=ids).logits).abs().max()) < 1e-5
