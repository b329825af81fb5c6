"""`formats.load` in-process on tiny models of each format: what each describes (task, tensors, label
names, tokenizer, image normalisation, digest), that nothing reaches the network, and that each
broken directory is refused in one line naming it and the problem."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
from hf_models import (
    IMAGE_MEAN,
    IMAGE_SIZE,
    IMAGE_STD,
    MAX_LENGTH,
    TEXT_LABELS,
    exported_mlp,
    tiny_bert_classifier,
    tiny_llama,
    tiny_vit_classifier,
)
from kubeforge_api.inference import Datatype
from kubeforge_api.storage import ModelFormat
from kubeforge_trainer import artifacts
from kubeforge_trainer.formats import FormatError, Task, load
from kubeforge_trainer.formats.identity import identify
from kubeforge_trainer.models import build
from safetensors.torch import load_file, save_file


def shapes(tensors: Any) -> list[tuple[str, Datatype, tuple[int, ...]]]:
    return [(t.name, t.datatype, t.shape) for t in tensors]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection attempt fails the test: loading must never reach the network."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a connection was attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_text_classifier(tmp_path: Path) -> None:
    d = tiny_bert_classifier(tmp_path / "bert")
    loaded = load(d)
    assert (loaded.format, loaded.task, loaded.architecture) == (
        ModelFormat.HF_TRANSFORMERS, Task.TEXT_CLASSIFICATION, "BertForSequenceClassification")
    assert shapes(loaded.inputs) == [("text", Datatype.BYTES, (-1,))]
    assert shapes(loaded.outputs) == [("logits", Datatype.FP32, (-1, 3)), ("label", Datatype.BYTES, (-1,))]
    assert loaded.id2label == TEXT_LABELS and loaded.max_length == MAX_LENGTH
    assert loaded.tokenizer is not None and loaded.tokenizer.is_fast and not loaded.model.training
    assert loaded.digest == identify(d).digest


def test_without_a_tokenizer_a_text_model_takes_token_ids(tmp_path: Path) -> None:
    d = tiny_llama(tmp_path / "llama")
    (d / "tokenizer.json").unlink()
    loaded = load(d)
    vocab = loaded.model.config.vocab_size
    assert loaded.task == Task.CAUSAL_LM and loaded.tokenizer is None
    assert shapes(loaded.inputs) == [("input_ids", Datatype.INT64, (-1, -1))]
    assert loaded.inputs[0].upper == vocab and loaded.inputs[0].max_variable == MAX_LENGTH
    assert shapes(loaded.outputs) == [("logits", Datatype.FP32, (-1, -1, vocab))]


def test_image_classifier(tmp_path: Path) -> None:
    loaded = load(tiny_vit_classifier(tmp_path / "vit"))
    assert loaded.task == Task.IMAGE_CLASSIFICATION and loaded.tokenizer is None
    assert shapes(loaded.inputs) == [("pixel_values", Datatype.FP32, (-1, 3, IMAGE_SIZE, IMAGE_SIZE))]
    assert loaded.image is not None and (loaded.image.height, loaded.image.width) == (IMAGE_SIZE, IMAGE_SIZE)
    assert loaded.image.mean == tuple(IMAGE_MEAN) and loaded.image.std == tuple(IMAGE_STD)
    assert loaded.image.rescale == pytest.approx(1 / 255)


def test_exported_program(tmp_path: Path) -> None:
    d = exported_mlp(tmp_path / "mlp")
    loaded = load(d)
    assert (loaded.format, loaded.task, loaded.architecture) == (ModelFormat.TORCH_EXPORT, Task.TENSORS, "torch.export")
    assert shapes(loaded.inputs) == [("features", Datatype.FP32, (-1, 8)), ("mask", Datatype.INT64, (-1, 3))]
    assert shapes(loaded.outputs) == [("logits", Datatype.FP32, (-1, 3)), ("probabilities", Datatype.FP32, (-1, 3))]
    assert loaded.inputs[0].max_rows == 1024 and loaded.outputs[0].sizes_from[0] == ("features", 0)
    assert loaded.digest == identify(d).digest and loaded.program is not None


def test_kubeforge_artifact(tmp_path: Path) -> None:
    arch = {"model": "gpt", "vocab": 40, "dim": 16, "heads": 2, "layers": 1, "seqLen": 12}
    written = artifacts.write(tmp_path / "gpt", build(arch).state_dict(), {"architecture": arch, "metrics": {}})
    loaded = load(tmp_path / "gpt")
    assert (loaded.format, loaded.task, loaded.architecture) == (ModelFormat.KUBEFORGE, Task.CAUSAL_LM, "gpt")
    assert loaded.digest == written["digest"] == identify(tmp_path / "gpt").digest
    assert loaded.inputs[0].upper == 40 and loaded.inputs[0].max_variable == 12


def _config(d: Path, **changes: Any) -> None:
    doc = json.loads((d / "config.json").read_text())
    doc.update(changes)
    (d / "config.json").write_text(json.dumps({k: v for k, v in doc.items() if v is not None}))


def _drop_tensors(d: Path, prefix: str) -> None:
    state = load_file(d / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith(prefix)}, d / "model.safetensors")


BROKEN = {
    "corrupt safetensors header": (lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64),
                                   "model.safetensors is not a readable safetensors file"),
    "config not JSON": (lambda d: (d / "config.json").write_text("{architectures"), "config.json is not readable JSON"),
    "no architectures": (lambda d: _config(d, architectures=None), "names no architectures"),
    "a head not served": (lambda d: _config(d, architectures=["BertForMaskedLM"]), "'BertForMaskedLM' is not served"),
    "unknown model type": (lambda d: _config(d, model_type="no-such-model"), "not a configuration transformers knows"),
    "no model type": (lambda d: _config(d, model_type=None), "not a configuration transformers knows"),
    "missing weights": (lambda d: _drop_tensors(d, "classifier."), "the weights lack 2 tensors"),
    "no weights file": (lambda d: (d / "model.safetensors").unlink(), "no *.safetensors weights"),
    "weights of another shape": (lambda d: _config(d, id2label={str(i): f"l{i}" for i in range(5)}),
                                 "do not fit 2 tensors"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_transformers_directory_is_refused_in_one_line(tmp_path: Path, case: str) -> None:
    d = tiny_bert_classifier(tmp_path / "bert")
    breaks, says = BROKEN[case]
    breaks(d)
    with pytest.raises(FormatError) as refused:
        load(d)
    message = str(refused.value)
    assert says in message and message.startswith(f"{d}: ") and "\n" not in message, message
    assert "http" not in message and "Traceback" not in message


def test_an_image_model_without_a_size_is_refused(tmp_path: Path) -> None:
    d = tiny_vit_classifier(tmp_path / "vit")
    (d / "preprocessor_config.json").unlink()
    _config(d, image_size=None)
    with pytest.raises(FormatError, match="image size"):
        load(d)


def test_a_missing_directory_names_what_a_model_directory_holds(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"no such model directory \(a model directory holds model-card\.json"):
        load(tmp_path / "absent")


class Pair(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x.sum(-1)


class Nested(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return x, [x + 1]


def _export(module: torch.nn.Module, d: Path, dynamic: bool = True) -> Path:
    d.mkdir()
    shapes = {"x": {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=64)}} if dynamic else None
    torch.export.save(torch.export.export(module, (torch.ones(2, 5),), dynamic_shapes=shapes), d / "model.pt2")
    return d


def test_a_program_returning_a_tuple_names_its_outputs_by_position(tmp_path: Path) -> None:
    loaded = load(_export(Pair(), tmp_path / "pair"))
    assert shapes(loaded.inputs) == [("x", Datatype.FP32, (-1, -1))] and loaded.inputs[0].max_variable == 64
    assert shapes(loaded.outputs) == [("output_0", Datatype.FP32, (-1, -1)), ("output_1", Datatype.FP32, (-1,))]
    assert loaded.outputs[0].sizes_from == (("x", 0), ("x", 1))


def test_a_program_of_fixed_shape_takes_that_batch(tmp_path: Path) -> None:
    loaded = load(_export(Pair(), tmp_path / "fixed", dynamic=False))
    assert shapes(loaded.inputs) == [("x", Datatype.FP32, (2, 5))]


def test_a_program_with_nested_outputs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="nested outputs"):
        load(_export(Nested(), tmp_path / "nested"))
