"""Models users bring, served as real processes and called with an independent Open Inference Protocol
client (tritonclient): a Hugging Face text classifier takes strings (JSON and binary BYTES), tokenized
in the server per batch, and answers logits and label names; a causal LM answers the last position
of each text; an image classifier takes normalised FP32 pixels or 8-bit RGB images; a torch.export
program takes exactly its named tensors. Every answer equals the model run in-process (transformers
with its own tokenizer and image processor, or the exported program) to 1e-4. Metadata states the
real tensors and the format; the digest the operator resolved is enforced for every format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.http as triton
from hf_models import (
    IMAGE_LABELS,
    IMAGE_SIZE,
    MLP_CLASSES,
    MLP_FEATURES,
    TEXT_LABELS,
    exported_mlp,
    tiny_bert_classifier,
    tiny_llama,
    tiny_vit_classifier,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubeforge_api.server_settings import EXIT_MODEL_LOAD_FAILED, ServerEnv
from kubeforge_trainer.formats.identity import identify
from servehelp import Server, request
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

TEXTS = ["the model serves text", "hello", "users bring their own models in common formats " * 8,
         "Ünïcode wörds ☃ and the movie was great"]
TOL = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    return {"bert": tiny_bert_classifier(root / "bert"), "llama": tiny_llama(root / "llama"),
            "vit": tiny_vit_classifier(root / "vit"), "mlp": exported_mlp(root / "mlp")}


@pytest.fixture(scope="module")
def servers(dirs: dict[str, Path]) -> Iterator[dict[str, Server]]:
    """One server per model, started together; each checks the digest of its directory. The text
    classifier waits 50 ms for fuller batches, so concurrent texts of different lengths share one."""
    extra = {"bert": {ServerEnv.MAX_DELAY_MS: "50"}}
    started = {name: Server(d, name=name, env={ServerEnv.MODEL_DIGEST: identify(d).digest,
                                               **extra.get(name, {})}).start(wait_ready=False)
               for name, d in dirs.items()}
    try:
        for s in started.values():
            s.wait_ready(timeout=120)
        yield started
    finally:
        for s in started.values():
            assert s.stop() == 0


def client(s: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=f"127.0.0.1:{s.port}")


def strings(values: np.ndarray) -> list[str]:
    """BYTES as tritonclient returns them: str from JSON, bytes from binary data."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.reshape(-1)]


def text_input(texts: list[str], binary: bool, name: str = "text") -> triton.InferInput:
    inp = triton.InferInput(name, [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=binary)
    return inp


def infer(s: Server, inputs: list[triton.InferInput], outputs: list[str], binary: bool) -> Any:
    with client(s) as c:
        return c.infer(s.name, inputs, outputs=[triton.InferRequestedOutput(o, binary_data=binary) for o in outputs])


def bert_reference(model_dir: Path, texts: list[str]) -> np.ndarray:
    """Each text alone through transformers, with the model's own tokenizer (truncated at its max length)."""
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True).eval()
    with torch.inference_mode():
        return np.concatenate([model(**tok([t], truncation=True, return_tensors="pt")).logits.numpy() for t in texts])


def test_text_classifier_metadata(servers: dict[str, Server], dirs: dict[str, Path]) -> None:
    with client(servers["bert"]) as c:
        meta = c.get_model_metadata("bert")
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [("text", "BYTES", [-1])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [
        ("logits", "FP32", [-1, 3]), ("label", "BYTES", [-1])]
    assert meta["parameters"]["format"] == "hf-transformers"
    assert meta["parameters"]["architecture"] == "BertForSequenceClassification"
    assert meta["parameters"]["digest"] == identify(dirs["bert"]).digest


@pytest.mark.parametrize("binary", [False, True])
def test_text_classifier_equals_transformers(servers: dict[str, Server], dirs: dict[str, Path], binary: bool) -> None:
    """One request of texts of different lengths (one longer than the model's 32 positions)."""
    result = infer(servers["bert"], [text_input(TEXTS, binary)], ["logits", "label"], binary)
    want = bert_reference(dirs["bert"], TEXTS)
    np.testing.assert_allclose(result.as_numpy("logits"), want, **TOL)
    assert strings(result.as_numpy("label")) == [TEXT_LABELS[int(i)] for i in want.argmax(-1)]


def test_concurrent_texts_share_a_padded_batch(servers: dict[str, Server], dirs: dict[str, Path]) -> None:
    s = servers["bert"]
    before = _batches(s)
    with ThreadPoolExecutor(len(TEXTS)) as pool:
        answers = list(pool.map(lambda t: infer(s, [text_input([t], False)], ["logits"], False).as_numpy("logits"),
                                TEXTS))
    np.testing.assert_allclose(np.concatenate(answers), bert_reference(dirs["bert"], TEXTS), **TOL)
    calls, row_count = (a - b for a, b in zip(_batches(s), before, strict=True))
    assert row_count == len(TEXTS) and calls < len(TEXTS), "no two texts shared a batch"


def _batches(s: Server) -> tuple[float, float]:
    """(model calls, rows) so far, from the batch-size histogram."""
    text = request(s.port, "GET", "/metrics").body.decode()
    prefix = "kubeforge_inference_batch_size_"
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith(prefix))
    return float(values[prefix + "count"]), float(values[prefix + "sum"])


def test_text_requests_are_checked(servers: dict[str, Server]) -> None:
    path = "/v2/models/bert/infer"

    def post(doc: dict[str, Any]) -> tuple[int, str]:
        r = request(servers["bert"].port, "POST", path, json.dumps(doc).encode())
        return r.status, r.json().get("error", "")

    def text(data: list[Any], datatype: str = "BYTES", name: str = "text") -> dict[str, Any]:
        return {"inputs": [{"name": name, "shape": [len(data)], "datatype": datatype, "data": data}]}

    assert post(text(["fine"]))[0] == 200
    assert post(text([1]))[0] == 422 and "strings" in post(text([1]))[1]
    assert "empty" in post(text([""]))[1]
    assert "datatype BYTES" in post(text([1.0], "FP32"))[1]
    assert "unknown input" in post(text(["x"], name="input_ids"))[1]
    assert "unknown output" in post({**text(["x"]), "outputs": [{"name": "probabilities"}]})[1]
    raw = b"\x05\x00\x00\x00hello\x09\x00\x00\x00cut"
    head = json.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    r = request(servers["bert"].port, "POST", path, head + raw, {"inference-header-content-length": str(len(head))})
    assert r.status == 422 and "length-prefixed" in r.json()["error"]


@pytest.mark.parametrize("binary", [False, True])
def test_causal_lm_answers_the_last_position(servers: dict[str, Server], dirs: dict[str, Path], binary: bool) -> None:
    texts = TEXTS[:3]
    result = infer(servers["llama"], [text_input(texts, binary)], ["logits"], binary)
    tok = AutoTokenizer.from_pretrained(dirs["llama"], local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(dirs["llama"], local_files_only=True).eval()
    with torch.inference_mode():
        want = np.concatenate([model(**tok([t], truncation=True, return_tensors="pt")).logits[:, -1].numpy()
                               for t in texts])
    np.testing.assert_allclose(result.as_numpy("logits"), want, **TOL)
    meta = request(servers["llama"].port, "GET", "/v2/models/llama").json()
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, model.config.vocab_size]}]
    assert meta["parameters"]["task"] == "causal-lm" and meta["parameters"]["max_tokens"] == 32


def test_image_classifier_takes_pixels_or_8_bit_images(servers: dict[str, Server], dirs: dict[str, Path]) -> None:
    s = servers["vit"]
    meta = request(s.port, "GET", "/v2/models/vit").json()
    assert meta["inputs"] == [{"name": "pixel_values", "datatype": "FP32", "shape": [-1, 3, IMAGE_SIZE, IMAGE_SIZE]}]
    assert meta["parameters"]["alternative_inputs"] == f"image UINT8 [-1, {IMAGE_SIZE}, {IMAGE_SIZE}, 3]"
    images = np.random.default_rng(0).integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    processor = ViTImageProcessorPil.from_pretrained(dirs["vit"], local_files_only=True)
    pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
    model = AutoModelForImageClassification.from_pretrained(dirs["vit"], local_files_only=True).eval()
    with torch.inference_mode():
        want = model(pixel_values=pixels).logits.numpy()
    for name, x, datatype in (("pixel_values", pixels.numpy(), "FP32"), ("image", images, "UINT8")):
        for binary in (False, True):
            inp = triton.InferInput(name, list(x.shape), datatype)
            inp.set_data_from_numpy(x, binary_data=binary)
            result = infer(s, [inp], ["logits", "label"], binary)
            np.testing.assert_allclose(result.as_numpy("logits"), want, **TOL)
            assert strings(result.as_numpy("label")) == [IMAGE_LABELS[int(i)] for i in want.argmax(-1)]


def test_exported_program_takes_its_named_tensors(servers: dict[str, Server], dirs: dict[str, Path]) -> None:
    s = servers["mlp"]
    meta = request(s.port, "GET", "/v2/models/mlp").json()
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, MLP_FEATURES]},
                              {"name": "mask", "datatype": "INT64", "shape": [-1, MLP_CLASSES]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "probabilities"]
    assert meta["parameters"]["format"] == "torch-export"
    assert meta["parameters"]["digest"] == identify(dirs["mlp"]).digest
    rng = np.random.default_rng(1)
    features = rng.standard_normal((5, MLP_FEATURES)).astype(np.float32)
    mask = rng.integers(0, 2, (5, MLP_CLASSES)).astype(np.int64)
    with torch.inference_mode():
        want = torch.export.load(dirs["mlp"] / "model.pt2").module()(torch.from_numpy(features), torch.from_numpy(mask))
    for binary in (False, True):
        a = triton.InferInput("features", [5, MLP_FEATURES], "FP32")
        b = triton.InferInput("mask", [5, MLP_CLASSES], "INT64")
        a.set_data_from_numpy(features, binary_data=binary)
        b.set_data_from_numpy(mask, binary_data=binary)
        result = infer(s, [a, b], ["probabilities", "logits"], binary)
        for name in ("logits", "probabilities"):
            np.testing.assert_allclose(result.as_numpy(name), want[name].numpy(), **TOL)
    only = infer(s, [a, b], ["probabilities"], False).get_response()
    assert [o["name"] for o in only["outputs"]] == ["probabilities"]
    features_only = {"name": "features", "shape": [1, MLP_FEATURES], "datatype": "FP32", "data": [0.0] * MLP_FEATURES}
    one = {"inputs": [features_only]}
    r = request(s.port, "POST", "/v2/models/mlp/infer", json.dumps(one).encode())
    assert r.status == 422 and "exactly 'features' and 'mask'" in r.json()["error"]
    two = {"inputs": [features_only, {"name": "mask", "shape": [2, MLP_CLASSES], "datatype": "INT64", "data": [1] * 6}]}
    r = request(s.port, "POST", "/v2/models/mlp/infer", json.dumps(two).encode())
    assert r.status == 422 and "rows" in r.json()["error"]


def test_the_resolved_digest_is_enforced_for_every_format(dirs: dict[str, Path], tmp_path: Path) -> None:
    other = "sha256:" + "0" * 64
    for name in ("bert", "mlp"):
        log = tmp_path / f"{name}-termination-log"
        s = Server(dirs[name], name=name, env={ServerEnv.MODEL_DIGEST: other, ServerEnv.TERMINATION_LOG: str(log)})
        s.start(wait_ready=False)
        assert s.proc is not None and s.proc.wait(timeout=120) == EXIT_MODEL_LOAD_FAILED
        why = log.read_text()
        assert f"expected {other}, found {identify(dirs[name]).digest}" in why and "\n" not in why.strip()


_element = st.one_of(st.text(max_size=40), st.integers(-5, 5), st.floats(allow_nan=True), st.none(), st.booleans(),
                     st.lists(st.text(max_size=5), max_size=2))
_tensor = st.fixed_dictionaries(
    {"name": st.sampled_from(["text", "pixel_values", "x"]), "shape": st.lists(st.integers(-1, 4), max_size=3),
     "datatype": st.sampled_from(["BYTES", "FP32", "UINT8", "bytes"]), "data": st.lists(_element, max_size=5)},
    optional={"parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-1, 40)})})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture], database=None)
@given(inputs=st.lists(_tensor, min_size=1, max_size=2), tail=st.binary(max_size=40), binary=st.booleans(),
       outputs=st.sampled_from([None, ["label"], ["logits", "label"], ["nope"]]))
def test_fuzz_text_requests_never_5xx(servers: dict[str, Server], inputs: list[dict[str, Any]], tail: bytes,
                                      binary: bool, outputs: list[str] | None) -> None:
    doc: dict[str, Any] = {"inputs": inputs}
    if outputs is not None:
        doc["outputs"] = [{"name": o, "parameters": {"binary_data": binary}} for o in outputs]
    head = json.dumps(doc).encode()
    headers = {"inference-header-content-length": str(len(head))} if tail else {}
    r = request(servers["bert"].port, "POST", "/v2/models/bert/infer", head + tail, headers)
    assert r.status in (200, 422), (doc, tail, r.status, r.body[:300])
    if r.status == 422:
        assert "\n" not in r.json()["error"]
