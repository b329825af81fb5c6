"""Compression on models trained by the trainer's own code (digits MLPs and CNN, the small GPT on
text): every method yields an artifact the one loader rebuilds with the in-memory model's outputs,
the gate accepts and rejects by the budget and by the objective (a slower candidate is never
published), structured pruning really shrinks the model, the report's numbers are recomputed here,
and tampered, pickled or already compressed artifacts are refused."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from kubeforge_api.compression import (
    CompressionReport,
    CompressionSpec,
    CompressionTermination,
    Rejection,
    Verdict,
    speed_phrase,
)
from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG
from kubeforge_api.trainingjob import Recipe
from kubeforge_trainer import artifacts
from kubeforge_trainer.compress import prune
from kubeforge_trainer.compress.pipeline import Outcome, run
from kubeforge_trainer.data import Data
from kubeforge_trainer.data import load as load_data
from kubeforge_trainer.models import build
from kubeforge_trainer.variants import encoded
from kubeforge_trainer.variants.quantize import EagerBackend, Frozen, TorchaoBackend, torchao_available
from safetensors.torch import load_file
from torch import nn

RECIPES: dict[str, dict[str, Any]] = {
    "mlp": {"model": "mlp", "dataset": "digits", "epochs": 3, "batchSize": 64, "learningRate": 0.01,
            "modelConfig": {"hidden": 1024}},  # wide enough that dynamic int8 is faster at batch 1
    "narrow": {"model": "mlp", "dataset": "digits", "epochs": 2, "batchSize": 64, "learningRate": 0.01},  # int8 slower
    "cnn": {"model": "cnn", "dataset": "digits", "epochs": 2, "batchSize": 64, "learningRate": 0.01},
    "gpt": {"model": "gpt", "dataset": "text", "epochs": 100, "maxSteps": 30, "batchSize": 16,
            "learningRate": 0.003, "modelConfig": {"dim": 64, "layers": 4, "seqLen": 32}},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train the three models at once with `python -m kubeforge_trainer train` (real trainer code)."""
    root = tmp_path_factory.mktemp("trained")
    procs = {}
    for name, recipe in RECIPES.items():
        env = {**os.environ, "KUBEFORGE_SPEC": json.dumps({"recipe": recipe}),
               "KUBEFORGE_STORAGE_DIR": str(root / name), "KUBEFORGE_PROGRESS_PORT": "0", "OMP_NUM_THREADS": "1"}
        procs[name] = subprocess.Popen([sys.executable, "-m", "kubeforge_trainer", "train"], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for name, p in procs.items():
        out, _ = p.communicate(timeout=400)
        assert p.returncode == 0, f"{name}: {out[-2000:]}"
    return {name: root / name for name in RECIPES}


def storage_copy(trained: dict[str, Path], name: str, tmp_path: Path) -> Path:
    shutil.copytree(trained[name] / "artifact", tmp_path / "artifact")
    return tmp_path


def compress(storage: Path, methods: list[dict[str, Any]], max_drop: float = 0.05, select: str = "best",
             relative: bool = False, objective: str = "size") -> Outcome:
    """The stage in this process; objective size unless asked (most tests are about the methods, not speed)."""
    spec = CompressionSpec.model_validate({"methods": methods, "select": select, "objective": objective,
                                          "accuracyBudget": {"maxDrop": max_drop, "relative": relative}})
    return run(storage / "artifact", spec, storage / "compressed", storage, threads=1, rounds=3)


def data_of(storage: Path) -> Data:
    card = json.loads((storage / "artifact" / "model-card.json").read_text())
    return load_data(Recipe.model_validate(card["recipe"]), storage)


@torch.inference_mode()
def metric(model: nn.Module, data: Data) -> float:
    """Computed here, independently of the trainer's `evaluate`."""
    logits = model(data.x_eval)
    if data.task == "classify":
        return float((logits.argmax(-1) == data.y_eval).float().mean())
    return math.exp(float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), data.y_eval.reshape(-1))))


def check_report(storage: Path, outcome: Outcome, data: Data) -> None:
    """Recompute every number of the report from the artifacts on disk."""
    report = outcome.report
    assert CompressionReport.model_validate_json((storage / "compressed" / "report.json").read_text()) == report
    _, base = artifacts.load_model(storage / "artifact")
    higher = data.task == "classify"
    assert report.baseline.metric == pytest.approx(metric(base, data), rel=1e-4)
    assert report.baseline.size_bytes == (storage / "artifact" / "model.safetensors").stat().st_size
    for cand, in_memory in zip(report.candidates, outcome.models, strict=True):
        if cand.verdict in (Verdict.FAILED, Verdict.SKIPPED):
            continue
        assert cand.artifact and cand.measured and cand.speedup and in_memory is not None
        card, loaded = artifacts.load_model(storage / cand.artifact.path)
        with torch.inference_mode():
            assert torch.allclose(loaded(data.x_eval[:64]), in_memory(data.x_eval[:64]), atol=1e-5), cand.method
        value = metric(loaded, data)
        assert cand.measured.metric == pytest.approx(value, rel=1e-4)
        drop = (report.baseline.metric - value) if higher else (value - report.baseline.metric)
        drop = drop / abs(report.baseline.metric) if report.budget.relative else drop
        assert cand.drop == pytest.approx(drop, abs=1e-4)
        within = drop <= report.budget.max_drop + 1e-4
        assert within or (cand.verdict, cand.rejection) == (Verdict.REJECTED, Rejection.ACCURACY)
        faster = cand.speedup.batch1_spread is not None and cand.speedup.batch1_spread.low > 1.0
        serves = cand.size_ratio > 1.0 if report.objective == "size" else faster
        assert (cand.verdict == Verdict.ACCEPTED) == (within and serves), (cand.verdict, cand.note)
        assert cand.note and f"{speed_phrase(cand.speedup.batch1)} at batch 1" in cand.note  # '3.12x slower'
        weights = storage / cand.artifact.path / "model.safetensors"
        assert cand.measured.size_bytes == weights.stat().st_size
        assert cand.artifact.digest == artifacts.digest_of(weights) == card["weights"]["digest"]
        assert cand.size_ratio == pytest.approx(report.baseline.size_bytes / weights.stat().st_size, rel=5e-3)
        for speed in (cand.speedup, cand.measured.latency_ms):  # medians inside their quartiles, rounded
            for median, spread in ((speed.batch1, speed.batch1_spread), (speed.batch8, speed.batch8_spread)):
                assert spread is not None and spread.low <= median <= spread.high
                assert median == float(f"{median:.4g}")  # rounded: never 15 digits
        lineage = card["lineage"]
        assert lineage["parent"]["digest"] == report.parent.digest and lineage["method"] == cand.method
        assert lineage["parameters"] == cand.parameters and card["compression"]["report"]["verdict"] == cand.verdict
    if report.chosen is not None:
        assert report.artifact == report.candidates[report.chosen].artifact
        assert report.candidates[report.chosen].verdict == Verdict.ACCEPTED


def test_mlp_every_method_loads_back_and_the_report_holds(trained: dict[str, Path], tmp_path: Path) -> None:
    storage = storage_copy(trained, "mlp", tmp_path)
    methods: list[dict[str, Any]] = [
               {"quantize": {"mode": "dynamic"}}, {"quantize": {"mode": "static", "calibrationSamples": 128}},
               {"quantize": {"mode": "dynamic", "backend": "torchao"}},
               {"prune": {"structured": True, "amount": 0.75, "fineTuneSteps": 30}},
               {"prune": {"structured": False, "amount": 0.8, "fineTuneSteps": 20}},
               {"distill": {"student": {"depth": 1, "width": 64}, "steps": 60}}]
    outcome = compress(storage, methods, max_drop=0.08)
    data = data_of(storage)
    check_report(storage, outcome, data)
    by = {c.method + str(c.parameters.get("backend", "")): c for c in outcome.report.candidates}
    assert all(c.verdict != Verdict.FAILED for c in by.values()), [c.error for c in by.values()]
    # int8 weights, scales and zero points are separate tensors; int8 is ~4x smaller than fp32
    for key in ("quantize-dynamicauto", "quantize-staticauto", "quantize-dynamictorchao"):
        ref = by[key].artifact
        assert ref is not None and (by[key].size_ratio or 0) > 3.0
        stored = load_file(str(storage / ref.path / "model.safetensors"))
        assert any(k.endswith("::qdata") and v.dtype == torch.int8 for k, v in stored.items())
        assert any(k.endswith("::scale") for k in stored) and any(k.endswith("::zero_point") for k in stored)
    # structured pruning really removes neurons: fewer parameters, shapes in the card, faster
    pruned = by["prune-structured"]
    assert pruned.artifact and pruned.measured and pruned.speedup
    card = json.loads((storage / pruned.artifact.path / "model-card.json").read_text())
    assert card["architecture"]["shapes"]["1"] == [256, 64]
    assert pruned.measured.parameters < outcome.report.baseline.parameters / 3
    assert pruned.speedup.batch8 > 1.0
    # unstructured: honest sparsity (recomputed), dense size, a smaller zlib size
    sparse = by["prune-unstructured"]
    assert sparse.artifact and sparse.sparsity is not None and sparse.compressed_size_bytes is not None
    _, loaded = artifacts.load_model(storage / sparse.artifact.path)
    weights = [m.weight for m in loaded.modules() if isinstance(m, nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert sparse.sparsity == pytest.approx(zeros) and zeros >= 0.79
    assert sparse.compressed_size_bytes < sparse.measured.size_bytes / 2  # type: ignore[union-attr]
    student = by["distill"]
    assert student.artifact
    assert json.loads((storage / student.artifact.path / "model-card.json").read_text())["architecture"]["layers"] == 1


def test_cnn_static_int8_and_channel_pruning(trained: dict[str, Path], tmp_path: Path) -> None:
    storage = storage_copy(trained, "cnn", tmp_path)
    outcome = compress(storage, [{"quantize": {"mode": "static"}},
                                 {"prune": {"structured": True, "amount": 0.5, "fineTuneSteps": 30}},
                                 {"distill": {"steps": 40}}], max_drop=0.5)
    check_report(storage, outcome, data_of(storage))
    static, pruned, student = outcome.report.candidates
    assert static.verdict == Verdict.ACCEPTED and (static.size_ratio or 0) > 3.0
    assert pruned.measured and pruned.measured.parameters < outcome.report.baseline.parameters * 0.6
    assert pruned.artifact and student.artifact
    card = json.loads((storage / pruned.artifact.path / "model-card.json").read_text())
    assert card["architecture"]["shapes"]["1"][0] == 8  # conv channels 16 -> 8


def test_gpt_dynamic_int8_ffn_and_head_pruning_and_half_depth_student(trained: dict[str, Path], tmp_path: Path) -> None:
    storage = storage_copy(trained, "gpt", tmp_path)
    outcome = compress(storage, [{"quantize": {"mode": "dynamic"}},
                                 {"prune": {"structured": True, "amount": 0.5, "fineTuneSteps": 20}},
                                 {"distill": {"steps": 30}}], max_drop=0.5, relative=True)
    report = outcome.report
    assert report.metric == "perplexity" and not report.higher_is_better
    check_report(storage, outcome, data_of(storage))
    dyn, pruned, student = report.candidates
    assert dyn.verdict == Verdict.ACCEPTED and dyn.drop is not None and abs(dyn.drop) < 0.05
    assert pruned.artifact and student.artifact
    shapes = json.loads((storage / pruned.artifact.path / "model-card.json").read_text())["architecture"]["shapes"]
    assert shapes["1.mlp.0"] == [128, 64] and shapes["1.mlp.2"] == [64, 128]
    assert shapes["1.qkv"] == [96, 64] and shapes["1.proj"] == [64, 32]  # 4 heads of 16 -> 2
    assert pruned.measured and pruned.measured.parameters < report.baseline.parameters
    assert json.loads((storage / student.artifact.path / "model-card.json").read_text())["architecture"]["layers"] == 2


def test_gate_rejects_outside_the_budget_and_first_stops_at_the_first_accepted(
        trained: dict[str, Path], tmp_path: Path) -> None:
    storage = storage_copy(trained, "mlp", tmp_path / "reject")
    harsh = {"prune": {"structured": True, "amount": 0.95, "fineTuneSteps": 0}}
    rejected = compress(storage, [harsh], max_drop=0.001)
    check_report(storage, rejected, data_of(storage))
    assert rejected.report.candidates[0].verdict == Verdict.REJECTED
    assert rejected.report.chosen is None and rejected.report.artifact is None
    assert rejected.report.reason == "AccuracyBudgetExceeded"
    assert rejected.report.candidates[0].artifact is not None  # kept for inspection, not published
    storage = storage_copy(trained, "mlp", tmp_path / "first")
    first = compress(storage, [harsh, {"quantize": {}}, {"prune": {}}], max_drop=0.02, select="first",
                     objective="latency")  # int8 is ~2x faster on this width
    verdicts = [c.verdict for c in first.report.candidates]
    assert verdicts == [Verdict.REJECTED, Verdict.ACCEPTED, Verdict.SKIPPED]
    assert first.report.chosen == 1 and first.report.reason == "Compressed"
    assert first.report.artifact == first.report.candidates[1].artifact


def test_tampered_or_pickled_artifacts_are_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    storage = storage_copy(trained, "cnn", tmp_path)
    outcome = compress(storage, [{"quantize": {"mode": "static"}}], max_drop=1.0)
    ref = outcome.report.candidates[0].artifact
    assert ref is not None
    good = storage / ref.path
    artifacts.load_model(good)

    flipped = tmp_path / "flipped"
    shutil.copytree(good, flipped)
    blob = bytearray((flipped / "model.safetensors").read_bytes())
    blob[-5] ^= 0xFF
    (flipped / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(artifacts.ArtifactError, match="digest"):
        artifacts.load_model(flipped)

    pickled = tmp_path / "pickled"
    shutil.copytree(good, pickled)
    torch.save({"weight": torch.zeros(3)}, pickled / "model.safetensors")  # a pickle under the right name
    card = json.loads((pickled / "model-card.json").read_text())
    card["weights"]["digest"] = artifacts.digest_of(pickled / "model.safetensors")  # digest "fixed" too
    (pickled / "model-card.json").write_text(json.dumps(card))
    with pytest.raises(artifacts.ArtifactError, match="not a valid safetensors"):
        artifacts.load_model(pickled)
    (pickled / "model.pt").write_bytes((pickled / "model.safetensors").read_bytes())
    card["weights"]["file"] = "model.pt"
    (pickled / "model-card.json").write_text(json.dumps(card))
    with pytest.raises(artifacts.ArtifactError, match="safetensors"):
        artifacts.load_model(pickled)

    reshaped = tmp_path / "reshaped"
    shutil.copytree(good, reshaped)
    card = json.loads((reshaped / "model-card.json").read_text())
    card["architecture"]["channels"] = 32  # the card no longer describes the weights
    (reshaped / "model-card.json").write_text(json.dumps(card))
    with pytest.raises(artifacts.ArtifactError, match="do not fit"):
        artifacts.load_model(reshaped)


def compress_env(storage: Path, spec: Any) -> dict[str, str]:
    return {**os.environ, "KUBEFORGE_STORAGE_DIR": str(storage), "KUBEFORGE_COMPRESS_THREADS": "1",
            "KUBEFORGE_SPEC": json.dumps({"recipe": RECIPES["cnn"], "compression": spec})}


def compress_process(storage: Path, spec: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kubeforge_trainer", "compress"], env=compress_env(storage, spec),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_pod_entry_point_contract(trained: dict[str, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The real process: a good spec (exit 0, termination message) and a bad one (78, the field named)
    run side by side; a missing artifact goes through the same `main` in this process."""
    from kubeforge_trainer.compress.entry import main

    storage = storage_copy(trained, "cnn", tmp_path)
    good = compress_process(storage, {"methods": [{"quantize": {"mode": "static"}}], "objective": "size",
                                      "accuracyBudget": {"maxDrop": 0.5}})
    bad = finished(compress_process(storage, {"methods": [{"prune": {"amount": 1.5}}]}))
    done = finished(good)
    assert done.returncode == 0, done.stderr[-2000:]
    message = CompressionTermination.model_validate(json.loads(done.stdout.splitlines()[-1])["compression"])
    assert message.compressed and message.chosen == "quantize-static" and message.artifact is not None
    assert message.report_path == "compressed/report.json"
    report = CompressionReport.model_validate_json((storage / message.report_path).read_text())
    assert report.artifact == message.artifact and (storage / message.artifact.path / "model.safetensors").exists()

    assert bad.returncode == EXIT_INVALID_CONFIG
    assert "spec.compression.methods[0].prune.amount" in bad.stderr and "Traceback" not in bad.stderr
    capsys.readouterr()
    missing = main(["--artifact", "nowhere"], compress_env(storage, {"methods": [{"quantize": {}}]}))
    assert missing == EXIT_INVALID_CONFIG and "cannot compress nowhere" in capsys.readouterr().err


def test_cli_prints_a_table_or_the_typed_report(trained: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from kubeforge_trainer.compress.cli import main

    storage = storage_copy(trained, "mlp", tmp_path)
    argv = [str(storage / "artifact"), "--method", "quantize:dynamic", "--method",
            "prune:unstructured,amount=0.5,fineTuneSteps=5", "--budget", "0.05", "--select", "best", "--threads", "1"]
    assert main([*argv, "--json"]) == 0
    report = CompressionReport.model_validate_json(capsys.readouterr().out)
    assert [c.method for c in report.candidates] == ["quantize-dynamic", "prune-unstructured"]
    assert report.candidates[1].parameters == {"structured": False, "amount": 0.5, "fineTuneSteps": 5}
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "baseline (fp32)" in out and "quantize-dynamic" in out and "sparsity 50%" in out
    assert main([str(storage / "artifact"), "--method", "prune:sideways"]) == EXIT_INVALID_CONFIG
    assert main([str(storage / "artifact"), "--method", "prune,amount=2"]) == EXIT_INVALID_CONFIG
    assert "compression.methods[0].prune.amount" in capsys.readouterr().err
    outside = [str(storage / "artifact"), "--method", "quantize", "--output", str(tmp_path.parent / "elsewhere")]
    assert main(outside) == EXIT_INVALID_CONFIG
    assert "must be under the storage root" in capsys.readouterr().err  # at once, not after the work


def test_a_slower_candidate_is_rejected_with_its_numbers_and_never_published(
        trained: dict[str, Path], tmp_path: Path) -> None:
    """Dynamic int8 makes the default (narrow) digits MLP slower at batch 1: under objective latency it
    is rejected in words ('2.4x slower'), nothing is published, and `select: best` never picks it; under
    objective size the same candidate is published (it is smaller). On the wide MLP it is faster."""
    storage = storage_copy(trained, "narrow", tmp_path / "latency")
    slow = compress(storage, [{"quantize": {}}], max_drop=0.05, objective="latency")
    check_report(storage, slow, data_of(storage))
    [cand] = slow.report.candidates
    assert cand.speedup and cand.speedup.batch1 < 1.0, cand
    assert (cand.verdict, cand.rejection) == (Verdict.REJECTED, Rejection.NOT_FASTER)
    assert cand.note and re.search(r"[\d.]+x slower at batch 1", cand.note) and "faster" not in cand.note.split("(")[0]
    assert slow.report.chosen is None and slow.report.artifact is None and slow.report.reason == "NotFaster"
    assert "slower at batch 1" in slow.report.message
    term = CompressionTermination.from_report(slow.report, "compressed/report.json")
    assert not term.compressed and term.candidates[0].note and term.candidates[0].rejection == Rejection.NOT_FASTER
    smaller = compress(storage_copy(trained, "narrow", tmp_path / "size"), [{"quantize": {}}], objective="size")
    assert smaller.report.chosen == 0 and "slower at batch 1" in (smaller.report.candidates[0].note or "")
    storage = storage_copy(trained, "mlp", tmp_path / "wide")
    fast = compress(storage, [{"quantize": {}}], objective="latency", select="best")
    check_report(storage, fast, data_of(storage))
    [int8] = fast.report.candidates
    assert fast.report.chosen == 0 and int8.speedup and int8.speedup.batch1 > 1.0
    assert re.search(r"[\d.]+x faster at batch 1 \(quartiles [\d.]+-[\d.]+x faster\)", fast.report.message)


def test_an_already_compressed_artifact_gets_one_line(trained: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from kubeforge_trainer.compress.cli import main

    storage = storage_copy(trained, "mlp", tmp_path)
    outcome = compress(storage, [{"quantize": {}}])
    ref = outcome.report.candidates[0].artifact
    assert ref is not None
    capsys.readouterr()
    assert main([str(storage / ref.path), "--method", "quantize"]) == EXIT_INVALID_CONFIG
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already compressed (int8-dynamic" in err and "Traceback" not in err
    assert "compress the fp32 model it was made from (artifact)" in err


def test_the_cli_help_lists_the_method_syntax_and_the_report_says_where_it_wrote(
        trained: dict[str, Path], tmp_path: Path) -> None:
    kubeforge = str(Path(sys.executable).with_name("kubeforge"))
    out = subprocess.run([kubeforge, "compress", "-h"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for syntax in ("NAME[:MODE][,key=value...]", "prune:structured,amount=0.5", "quantize:static", "distill,depth=1",
                   "--objective", "--min-speedup"):
        assert syntax in out.stdout, syntax
    storage = storage_copy(trained, "narrow", tmp_path)
    out = subprocess.run([kubeforge, "compress", str(storage / "artifact"), "--method", "quantize", "--threads", "1",
                          "--budget", "0.05"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"the report to {storage / 'compressed' / 'report.json'}; nothing published" in out.stdout, out.stdout
    assert "NotFaster" in out.stdout and "x slower" in out.stdout


@pytest.mark.skipif(not torchao_available(), reason="torchao is not installed")
def test_an_int8_back_end_slower_than_fp32_is_flagged(trained: dict[str, Path], tmp_path: Path) -> None:
    """torch runs its int8 matmul (which torchao calls, compiled or not) as a scalar loop on a CPU
    without AVX512-VNNI, or with oneDNN off (how this test gets there on any CPU): torchao int8 is then
    many times slower than fp32. The stage says so, naming the back end and the cause, and rejects it."""
    storage = storage_copy(trained, "mlp", tmp_path)
    with torch.backends.mkldnn.flags(enabled=False):
        outcome = compress(storage, [{"quantize": {"backend": "torchao"}}], max_drop=0.5, objective="latency")
    [cand] = outcome.report.candidates
    assert cand.speedup and cand.speedup.batch1 < 1.0 and cand.rejection == Rejection.NOT_FASTER, cand
    assert cand.note and "the int8 back end torchao is" in cand.note and "slower than fp32" in cand.note
    assert "AVX512-VNNI" in cand.note and "torchao 0." in cand.note
    assert any("torchao" in w and "slower than fp32" in w for w in outcome.report.warnings)
    assert outcome.report.chosen is None


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_head_pruning_shrinks_attention_and_the_pruned_artifact_loads(tmp_path: Path) -> None:
    """Heads only (FFN untouched): 8 heads -> 2 per block; qkv and proj really shrink, parameters and
    latency fall (interleaved rounds), and the card's shapes rebuild the pruned model exactly."""
    arch = {"model": "gpt", "vocab": 256, "dim": 256, "heads": 8, "layers": 2, "seqLen": 128}
    torch.manual_seed(0)
    model = build(arch).eval()
    pruned = copy.deepcopy(model)
    shapes = prune.structured(pruned, arch, 0.75, ("heads",))
    assert shapes["1.qkv"] == [192, 256] and shapes["1.proj"] == [256, 64] and "1.mlp.0" not in shapes
    gone = 6 * 32  # per block, 6 of 8 heads of 32 dims: 3 x gone qkv rows (weights, biases), gone proj columns
    assert parameters(model) - parameters(pruned) == 2 * (3 * gone * 256 + 3 * gone + 256 * gone)
    x = torch.randint(0, 256, (8, 128), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        for m in (model, pruned):
            m(x)
        ratios = []
        for _ in range(9):
            start = time.perf_counter()
            model(x)
            mid = time.perf_counter()
            pruned(x)
            ratios.append((mid - start) / (time.perf_counter() - mid))
    assert statistics.median(ratios) > 1.0, ratios
    card = {"architecture": {**arch, "shapes": shapes},
            "compression": {"method": "prune-structured", "encoding": "fp32", "backend": ""}}
    artifacts.write(tmp_path / "pruned", encoded(pruned, "fp32", ""), card)
    loaded_card, loaded = artifacts.load_model(tmp_path / "pruned")
    assert loaded_card["architecture"]["shapes"] == shapes
    with torch.inference_mode():
        assert torch.equal(loaded(x[:2]), pruned(x[:2]))


@pytest.mark.skipif(not torchao_available(), reason="torchao is not installed")
def test_torchao_is_timed_in_its_serving_form_with_the_same_outputs() -> None:
    """The torchao back end serves (and the stage times) its model under torch.compile with inductor
    freezing; that form computes what the eager torchao model does. The eager back end serves as is."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    assert EagerBackend().serving(model) is model
    quantized = TorchaoBackend().dynamic(copy.deepcopy(model))
    served = TorchaoBackend().serving(quantized)
    assert isinstance(served, Frozen)  # the machine has a C++ compiler: inductor can run
    x = torch.randn(4, 32)
    with torch.inference_mode():
        assert torch.allclose(served(x), quantized(x), atol=1e-4)
    assert not served.compile_failed


class _CompileFails(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("C++ compile error: cannot find the compiler")


def test_a_model_whose_compilation_fails_runs_eagerly() -> None:
    model = nn.Sequential(nn.Linear(8, 4)).eval()
    frozen = Frozen(model)
    frozen.compiled = _CompileFails()
    x = torch.randn(3, 8)
    with torch.inference_mode():
        assert torch.equal(frozen(x), model(x)) and frozen.compile_failed
        assert torch.equal(frozen(x), model(x))
