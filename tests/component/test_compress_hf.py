"""Compression of models users bring, on their own evaluation data: a BERT-style classifier trained
here on a keyword task and judged on a JSONL file (dynamic int8 within the budget, timed in the form
a server calls it; a model that int8 damages is rejected and nothing is published); the published
variant is a Kubeforge artifact that the one loader rebuilds from its card (the config inside it, the
tokenizer beside it) and that agrees with the fp32 model; a causal LM judged by perplexity on plain
text and an image classifier on a directory of images; the command line and the pod's entry point
(eval data from the env, its format from the spec); malformed data, data of the wrong kind and a
torch.export program each get one line."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hf_models import exported_mlp, tiny_bert_classifier, tiny_llama, tiny_vit_classifier
from kubeforge_api.compression import (
    CompressionReason,
    CompressionReport,
    CompressionSpec,
    CompressionTermination,
    Rejection,
    Verdict,
)
from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG
from kubeforge_trainer import artifacts
from kubeforge_trainer.compress.evaluate import TextLogits
from kubeforge_trainer.compress.pipeline import CompressInputError, Outcome, run
from kubeforge_trainer.evaldata import EvalSource
from kubeforge_trainer.formats import load
from kubeforge_trainer.formats.identity import FormatError, identify
from kubeforge_trainer.formats.loaded import Task
from kubeforge_trainer.variants import hf as hf_format
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
)

LABELS = ["negative", "neutral", "positive"]
KEYWORDS = {0: ["awful", "bad", "cold", "slow"], 1: ["okay", "average", "plain", "fine"],
            2: ["great", "wonderful", "tasty", "fast"]}
FILLER = [f"word{i}" for i in range(150)]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentence(rng: random.Random, label: int) -> str:
    """Filler words with one keyword of the label somewhere among them."""
    words = [rng.choice(FILLER) for _ in range(rng.randint(6, 12))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(KEYWORDS[label]))
    return " ".join(words)


def tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer trained on `texts` ([CLS] text [SEP])."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=SPECIALS))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(s, tok.token_to_id(s)) for s in SPECIALS[2:4]])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=64, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def trained_bert(directory: Path, steps: int = 50) -> Path:
    """A BERT classifier of width 256 and 4 layers (wide enough that int8 pays at batch 1), trained
    briefly on the keyword task, saved with its tokenizer."""
    rng = random.Random(0)
    train = [(sentence(rng, label), label) for label in (rng.randrange(3) for _ in range(2000))]
    tok = tokenizer([t for t, _ in train])
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=64, id2label=dict(enumerate(LABELS)),
                        label2id={name: i for i, name in enumerate(LABELS)})
    model = BertForSequenceClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    model.train()
    for _ in range(steps):
        batch = [train[rng.randrange(len(train))] for _ in range(32)]
        enc = tok([t for t, _ in batch], padding="max_length", max_length=16, truncation=True, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([y for _, y in batch])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def eval_rows(n: int, seed: int = 1, names: bool = True) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    labels = [rng.randrange(3) for _ in range(n)]
    return [{"text": sentence(rng, y), "label": LABELS[y] if names and i % 2 else y} for i, y in enumerate(labels)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(2)
    return trained_bert(tmp_path_factory.mktemp("bert") / "artifact")


@pytest.fixture
def storage(bert: Path, tmp_path: Path) -> Path:
    shutil.copytree(bert, tmp_path / "artifact")
    write_jsonl(tmp_path / "eval.jsonl", eval_rows(150))
    return tmp_path


def compress(storage: Path, methods: list[dict[str, Any]], source: EvalSource | None, **spec: Any) -> Outcome:
    doc = {"methods": methods, "objective": "size", "accuracyBudget": {"maxDrop": 0.02}, **spec}
    return run(storage / "artifact", CompressionSpec.model_validate(doc), storage / "compressed", storage, threads=1,
               rounds=5, eval_data=source)


def fp32_logits(directory: Path, rows: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp32 model's logits on the rows, as transformers runs it, and the labels."""
    model = AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    enc = tok([r["text"] for r in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    return logits, torch.tensor([LABELS.index(r["label"]) if isinstance(r["label"], str) else r["label"]
                                 for r in rows])


def test_int8_of_a_bert_classifier_is_judged_on_the_users_jsonl_for_latency(storage: Path) -> None:
    rows = [json.loads(line) for line in (storage / "eval.jsonl").read_text().splitlines()]
    logits, labels = fp32_logits(storage / "artifact", rows)
    outcome = compress(storage, [{"quantize": {}}], EvalSource(storage / "eval.jsonl", "jsonl"), objective="latency")
    report = CompressionReport.model_validate(json.loads((storage / "compressed" / "report.json").read_text()))
    assert report == outcome.report and report.metric == "accuracy" and report.higher_is_better
    assert report.baseline.metric == pytest.approx(float((logits.argmax(-1) == labels).float().mean()))
    assert report.baseline.metric > 0.9  # the model learned the task: the drop means something
    assert report.parent.digest == identify(storage / "artifact").digest and report.parent.path == "artifact"
    [cand] = report.candidates
    assert cand.measured and cand.drop is not None and cand.drop <= 0.02 and cand.speedup and cand.size_ratio
    assert cand.measured.latency_ms.batch1 > 0 and cand.size_ratio > 2.5  # Linear weights in int8
    if cand.verdict == Verdict.ACCEPTED:  # faster: the lower quartile of the per-round speed-ups is above 1
        assert cand.speedup.batch1_spread and cand.speedup.batch1_spread.low > 1.0
        assert report.reason == CompressionReason.COMPRESSED and report.artifact == cand.artifact
    else:  # a busy machine can blur the measurement; the verdict then says so and nothing is published
        assert cand.rejection in (Rejection.NOT_FASTER, Rejection.NOT_MEASURABLY_FASTER), cand.note
        assert report.artifact is None
    print(f"int8 BERT d256x4: {cand.note}")


def damaged(directory: Path) -> None:
    """The same fp32 model, exactly, but one that dynamic int8 ruins: a huge constant in one feature
    of the pooler's input (a LayerNorm bias) that the pooler ignores (its weights for that feature
    are zero) sets the range the pooler's int8 input is quantized over, so every other feature
    rounds to zero in int8."""
    model = AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True).eval()
    with torch.no_grad():
        model.bert.encoder.layer[-1].output.LayerNorm.bias[7] = 1e4
        model.bert.pooler.dense.weight[:, 7] = 0.0
    model.save_pretrained(directory)


def test_int8_over_the_budget_is_rejected_and_nothing_is_published(storage: Path) -> None:
    damaged(storage / "artifact")
    outcome = compress(storage, [{"quantize": {}}], EvalSource(storage / "eval.jsonl", "jsonl"))
    report = outcome.report
    [cand] = report.candidates
    assert report.baseline.metric > 0.9 and cand.measured and cand.measured.metric < 0.6
    assert cand.verdict == Verdict.REJECTED and cand.rejection == Rejection.ACCURACY
    assert report.reason == CompressionReason.ACCURACY_BUDGET_EXCEEDED and report.chosen is None
    assert report.artifact is None and "over the budget 0.02" in (cand.note or "")


def test_the_published_variant_loads_through_the_one_loader_and_agrees_with_fp32(storage: Path) -> None:
    rows = [json.loads(line) for line in (storage / "eval.jsonl").read_text().splitlines()]
    outcome = compress(storage, [{"prune": {}}, {"quantize": {}}], EvalSource(storage / "eval.jsonl", "jsonl"),
                       select="best")
    report = outcome.report
    pruned, int8 = report.candidates
    assert pruned.verdict == Verdict.FAILED and "quantize (dynamic int8)" in (pruned.error or "")
    assert int8.verdict == Verdict.ACCEPTED and report.artifact == int8.artifact and report.artifact is not None
    directory = storage / report.artifact.path
    card, model = artifacts.load_model(directory)
    arch = card["architecture"]
    assert {k: arch[k] for k in ("model", "task", "class")} == {
        "model": "hf-transformers", "task": "text-classification", "class": "BertForSequenceClassification"}
    assert arch["config"]["hidden_size"] == 256 and arch["config"]["id2label"] == {"0": "negative", "1": "neutral",
                                                                                   "2": "positive"}
    assert set(arch["files"]) == {"config.json", "tokenizer.json", "tokenizer_config.json"}
    hf_format.check_side_files(directory, arch)  # the tokenizer beside the weights is the parent's
    assert card["compression"]["encoding"] == "int8-dynamic" and card["lineage"]["parentFormat"] == "hf-transformers"
    assert card["lineage"]["parent"]["digest"] == identify(storage / "artifact").digest
    assert card["dataset"]["format"] == "jsonl" and card["dataset"]["samples"] == 150
    assert identify(directory).format.value == "kubeforge"  # the card decides what the directory is
    tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    ids = tok([r["text"] for r in rows], padding=True, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        loaded = TextLogits(model, tok.pad_token_id)(ids)
        in_memory = TextLogits(outcome.models[1], tok.pad_token_id)(ids)  # type: ignore[arg-type]
    assert torch.equal(loaded, in_memory)  # the artifact is exactly the model that was measured
    fp32, _ = fp32_logits(storage / "artifact", rows)
    assert (loaded.argmax(-1) == fp32.argmax(-1)).float().mean() >= 0.95
    served = load(directory)  # what the inference server loads: text in, logits and labels out
    assert served.task == Task.TEXT_CLASSIFICATION and served.tokenizer is not None
    assert [(t.name, t.datatype.value) for t in served.inputs] == [("text", "BYTES")]
    assert [t.name for t in served.outputs] == ["logits", "label"] and served.id2label[2] == "positive"
    (directory / "tokenizer.json").write_text("{}")
    with pytest.raises(FormatError, match=r"tokenizer\.json is missing or not the file"):
        load(directory)
    with pytest.raises(hf_format.HFError, match=r"tokenizer\.json is missing or not the file the model card names"):
        hf_format.check_side_files(directory, arch)


def test_a_torchao_variant_of_a_hf_model_is_rebuilt_by_the_one_loader(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torchao")
    from kubeforge_trainer.compress import pipeline

    monkeypatch.setattr(pipeline, "serving_form", lambda backend, encoding, model: model)  # timed eagerly: no compile
    tiny_bert_classifier(tmp_path / "artifact")
    write_jsonl(tmp_path / "eval.jsonl", [{"text": "the food was cold", "label": 0}, {"text": "great", "label": 2}])
    outcome = compress(tmp_path, [{"quantize": {"backend": "torchao"}}], EvalSource(tmp_path / "eval.jsonl", "jsonl"),
                       accuracyBudget={"maxDrop": 1})
    assert outcome.report.artifact is not None, outcome.report.candidates[0]
    card, model = artifacts.load_model(tmp_path / outcome.report.artifact.path)
    assert card["compression"]["backend"] == "torchao"
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    with torch.inference_mode():
        assert torch.equal(TextLogits(model, 0)(ids), TextLogits(outcome.models[0], 0)(ids))  # type: ignore[arg-type]


def test_the_structure_is_built_from_the_card_alone_on_the_meta_device(storage: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(storage / "artifact", local_files_only=True)
    arch = hf_format.architecture(model, hf_format.side_files(storage / "artifact"))
    with torch.device("meta"):
        meta = hf_format.structure(json.loads(json.dumps(arch)))  # as the card's JSON holds it
    assert all(p.is_meta for p in meta.parameters())
    assert {k: v.shape for k, v in meta.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    for bad, error in (({"auto_map": {"AutoModel": "x.Y"}}, "remote code"), ({"model_type": "nope"}, "nope")):
        with pytest.raises(hf_format.HFError, match=error):
            hf_format.structure({**arch, "config": {**arch["config"], **bad}})
    with pytest.raises(hf_format.HFError, match="builds BertForSequenceClassification"):
        hf_format.structure({**arch, "class": "GPT2ForSequenceClassification"})


def test_a_causal_lm_is_judged_by_perplexity_on_plain_text(tmp_path: Path) -> None:
    tiny_llama(tmp_path / "artifact")
    text = " ".join(sentence(random.Random(i), i % 3) for i in range(60))
    (tmp_path / "corpus.txt").write_text(text)
    outcome = compress(tmp_path, [{"quantize": {}}], EvalSource(tmp_path / "corpus.txt", "text", 6),
                       accuracyBudget={"maxDrop": 0.5, "relative": True})
    report = outcome.report
    assert report.metric == "perplexity" and not report.higher_is_better and report.baseline.metric > 1
    [cand] = report.candidates
    assert cand.verdict == Verdict.ACCEPTED and report.artifact is not None, cand.note
    card, model = artifacts.load_model(tmp_path / report.artifact.path)
    assert card["architecture"]["task"] == "causal-lm" and card["dataset"]["samples"] == 6
    fp32 = AutoModelForCausalLM.from_pretrained(tmp_path / "artifact", local_files_only=True).eval()
    ids = torch.tensor([[2, 5, 9, 14, 20, 7]])
    with torch.inference_mode():
        assert torch.allclose(model(input_ids=ids).logits, fp32(input_ids=ids).logits, atol=0.05)


def test_an_image_classifier_is_judged_on_a_directory_of_images(tmp_path: Path) -> None:
    tiny_vit_classifier(tmp_path / "artifact")
    rng = np.random.default_rng(0)
    for label in ("cat", "dog", "3"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(4):
            np.save(tmp_path / "images" / label / f"{i}.npy", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    outcome = compress(tmp_path, [{"quantize": {}}], EvalSource(tmp_path / "images", "images", 9),
                       accuracyBudget={"maxDrop": 1.0})
    report = outcome.report
    assert report.metric == "accuracy" and report.candidates[0].verdict == Verdict.ACCEPTED
    assert report.artifact is not None
    card, _ = artifacts.load_model(tmp_path / report.artifact.path)
    assert card["dataset"]["samples"] == 9 and "preprocessor_config.json" in card["architecture"]["files"]


def test_data_that_does_not_fit_the_model_or_none_at_all_is_one_line(storage: Path) -> None:
    (storage / "corpus.txt").write_text("some text " * 50)
    with pytest.raises(CompressInputError, match=r"^evaluation data in format text does not fit "
                       r"BertForSequenceClassification \(a text-classification model\): use jsonl"):
        compress(storage, [{"quantize": {}}], EvalSource(storage / "corpus.txt", "text"))
    with pytest.raises(CompressInputError, match="a Hugging Face model has no recipe that says what to evaluate"):
        compress(storage, [{"quantize": {}}], None)
    with pytest.raises(CompressInputError, match=r"accuracyBudget.metric perplexity is not measured for artifact "
                                                 r"\(use one of accuracy, evalLoss\)"):
        compress(storage, [{"quantize": {}}], EvalSource(storage / "eval.jsonl", "jsonl"),
                 accuracyBudget={"metric": "perplexity"})


def test_the_command_line_compresses_a_hf_directory_and_reports_a_malformed_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kubeforge_trainer.compress.cli import main

    tiny_bert_classifier(tmp_path / "model")
    rows = [{"text": "the food was cold", "label": "negative"}, {"text": "wonderful actors", "label": 2}]
    write_jsonl(tmp_path / "eval.jsonl", rows * 5)
    assert main([str(tmp_path / "model"), "--method", "quantize", "--eval-data", str(tmp_path / "eval.jsonl"),
                 "--objective", "size", "--budget", "1", "--threads", "1", "--json"]) == 0
    report = CompressionReport.model_validate(json.loads(capsys.readouterr().out))
    assert report.reason == CompressionReason.COMPRESSED and report.parent.path == "model"
    (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n{\"text\": \"x\", \"label\": \"great\"}\n")
    assert main([str(tmp_path / "model"), "--method", "quantize", "--eval-data", str(tmp_path / "bad.jsonl"),
                 "--eval-format", "jsonl"]) == EXIT_INVALID_CONFIG
    err = capsys.readouterr().err
    assert err == (f"kubeforge compress: {tmp_path / 'bad.jsonl'}:2: label 'great' is not one of the model's "
                   "labels (negative, neutral, positive)\n")
    assert main([str(tmp_path / "model"), "--method", "quantize", "--eval-data", str(tmp_path / "eval.csv")]) == 78
    assert "cannot tell the evaluation data's format from its name" in capsys.readouterr().err


def entry(storage: Path, spec: dict[str, Any], env: dict[str, str]) -> tuple[int, CompressionTermination | None]:
    """The pod's entry point with its env; what it wrote to the termination log."""
    from kubeforge_trainer.compress.entry import main

    log = storage / "termination-log"
    code = main([], {"KUBEFORGE_STORAGE_DIR": str(storage), "KUBEFORGE_COMPRESSION_SPEC": json.dumps(spec),
                     "KUBEFORGE_COMPRESS_THREADS": "1", "KUBEFORGE_TERMINATION_LOG": str(log), **env})
    return code, CompressionTermination.model_validate_json(log.read_text()) if log.exists() else None


def test_the_pod_reads_the_eval_data_from_the_env_and_its_format_from_the_spec(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_bert_classifier(tmp_path / "artifact")
    write_jsonl(tmp_path / "mounted-data", [{"text": "the food was cold", "label": 0}] * 4)  # no suffix to go by
    monkeypatch.setenv("KUBEFORGE_TERMINATION_LOG", str(tmp_path / "termination-log"))
    spec = {"methods": [{"quantize": {}}], "objective": "size", "accuracyBudget": {"maxDrop": 1},
            "evalData": {"uri": "pvc://data/eval.jsonl", "format": "jsonl", "maxSamples": 3}}
    code, term = entry(tmp_path, spec, {"KUBEFORGE_COMPRESS_EVAL_DATA": str(tmp_path / "mounted-data")})
    assert code == 0 and term is not None and term.compressed and term.reason == CompressionReason.COMPRESSED
    card, _ = artifacts.load_model(tmp_path / term.artifact.path)  # type: ignore[union-attr]
    assert card["dataset"]["samples"] == 3
    code, term = entry(tmp_path, spec, {})
    assert code == EXIT_INVALID_CONFIG and term is not None and not term.compressed
    assert "KUBEFORGE_COMPRESS_EVAL_DATA is not" in term.message


def test_a_torch_export_program_has_no_applicable_method(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    exported_mlp(tmp_path / "artifact")
    monkeypatch.setenv("KUBEFORGE_TERMINATION_LOG", str(tmp_path / "termination-log"))
    code, term = entry(tmp_path, {"methods": [{"quantize": {}}]}, {})
    assert code == 0 and term is not None and term.reason == CompressionReason.COMPRESSION_FAILED
    assert "torch.export program: no compression method applies" in term.message and not term.compressed
    from kubeforge_trainer.compress.cli import main

    capsys.readouterr()
    assert main([str(tmp_path / "artifact"), "--method", "quantize"]) == EXIT_INVALID_CONFIG
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no compression method applies" in err
