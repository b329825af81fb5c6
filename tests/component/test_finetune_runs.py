"""Fine-tunes as real processes (torchrun with gloo on CPU, a tiny Llama made here): two FSDP ranks
compute the losses one process computes, a SIGKILLed gang resumes exactly where it checkpointed, a
pod-like `launch` leaves the merged model, the adapter and the evaluation in its termination message,
and bad data fails the job permanently naming the line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from kubeforge_api.contracts import parse_result
from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG
from kubeforge_api.finetune import DATA_ENV, EVAL_DATA_ENV, MODEL_DIR_ENV
from kubeforge_operator.ports import free_port
from llm_models import chat_jsonl, prompt_completion_jsonl, tiny_llama
from safetensors.torch import load_file

Obj = dict[str, Any]
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    tiny_llama(root / "model")
    chat_jsonl(root / "chat.jsonl", 200)
    chat_jsonl(root / "eval.jsonl", 16, seed=1, turns=2)
    prompt_completion_jsonl(root / "pc.jsonl", 60)
    return root


def job(strategy: str = "fsdp", procs: int = 1, **finetune: Any) -> Obj:
    base = {"model": {"uri": "pvc://models/base"}, "data": {"uri": "pvc://data/chat.jsonl"}, "maxSeqLength": 96,
            "batchSize": 4, "epochs": 1, "maxSteps": 12, "learningRate": 5e-3, "evalFraction": 0.1,
            "lora": {"rank": 4, "dropout": 0.0, "targetModules": ["q_proj", "v_proj"]}}
    return {"strategy": strategy, "nodes": 1, "procsPerNode": procs, "finetune": {**base, **finetune},
            "checkpoint": {"intervalSteps": 10, "keep": 2}}


def environment(spec: Obj, storage: Path, inputs: Path, data: str = "chat.jsonl") -> dict[str, str]:
    env = {**os.environ, "KUBEFORGE_SPEC": json.dumps(spec), "KUBEFORGE_STORAGE_DIR": str(storage),
           "KUBEFORGE_PROGRESS_PORT": "0", "KUBEFORGE_TERMINATION_LOG": str(storage / "termination-log"),
           MODEL_DIR_ENV: str(inputs / "model"), DATA_ENV: str(inputs / data)}
    if "evalData" in spec["finetune"]:
        env[EVAL_DATA_ENV] = str(inputs / "eval.jsonl")
    return env


def start(spec: Obj, storage: Path, inputs: Path, procs: int = 1, data: str = "chat.jsonl") -> subprocess.Popen[str]:
    storage.mkdir(parents=True, exist_ok=True)
    train = ["-m", "kubeforge_trainer", "train"]
    cmd = [sys.executable, *train] if procs == 1 else [
        TORCHRUN, "--standalone", f"--nproc-per-node={procs}", "--max-restarts=0", *train]
    return subprocess.Popen(cmd, env=environment(spec, storage, inputs, data), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def run(spec: Obj, storage: Path, inputs: Path, procs: int = 1, data: str = "chat.jsonl") -> Obj:
    p = start(spec, storage, inputs, procs, data)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]
    return dict(json.loads(next(line for line in out.splitlines() if line.startswith('{"result"')))["result"])


def points(storage: Path, kind: str = "train") -> list[Obj]:
    """The points of the latest attempt."""
    rows = [json.loads(line) for line in (storage / "metrics.jsonl").read_text().splitlines()]
    last_start = max(i for i, r in enumerate(rows) if r["kind"] == "start")
    return [r for r in rows[last_start:] if r["kind"] == kind]


def adapter_weights(storage: Path) -> dict[str, torch.Tensor]:
    return load_file(str(storage / "adapter" / "adapter_model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_fsdp_ranks_compute_what_one_process_computes(inputs: Path, tmp_path: Path) -> None:
    steps = {"maxSteps": 50, "epochs": 2}  # the fine-tuning goal: equal losses for 50 steps
    one = run(job(gradientAccumulation=2, **steps), tmp_path / "one", inputs)  # 4 rows a step, in 2 micro-batches
    two = run(job(procs=2, batchSize=2, **steps), tmp_path / "two", inputs, procs=2)  # 2 rows a step on each rank
    a, b = [p["loss"] for p in points(tmp_path / "one")], [p["loss"] for p in points(tmp_path / "two")]
    assert len(a) == len(b) == 50
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4, (a, b)
    assert a[-1] < a[0]
    for moment in ("before", "after"):
        assert abs(one[moment]["evalLoss"] - two[moment]["evalLoss"]) < 1e-4
    assert max_diff(adapter_weights(tmp_path / "one"), adapter_weights(tmp_path / "two")) < 1e-4


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_a_killed_gang_resumes_exactly_from_its_checkpoint(inputs: Path, tmp_path: Path) -> None:
    spec = job(procs=2, batchSize=2, maxSteps=None, epochs=2, lora={"rank": 4, "dropout": 0.1})  # dropout draws
    reference = run(spec, tmp_path / "reference", inputs, procs=2)
    storage = tmp_path / "killed"
    p = start(spec, storage, inputs, procs=2)
    first = storage / "checkpoints" / "step-000000010"
    deadline = time.monotonic() + 120
    while not first.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    ranks = _children(p.pid)
    assert first.exists() and len(ranks) == 2, p.communicate()[0][-3000:]
    os.kill(max(ranks), signal.SIGKILL)
    out, _ = p.communicate(timeout=120)
    assert p.returncode != 0 and not (storage / "artifact").exists(), out[-2000:]
    resumed = run(spec, storage, inputs, procs=2)  # the gang restart
    start_point = points(storage, "start")[0]
    assert resumed["resumedFrom"] == start_point["resumedFrom"] >= 10
    after = {p["step"]: p["loss"] for p in points(storage)}
    full = {p["step"]: p["loss"] for p in points(tmp_path / "reference")}
    assert sorted(after) == [s for s in sorted(full) if s > start_point["resumedFrom"]]  # every later step, once
    assert max(abs(after[s] - full[s]) for s in after) <= 1e-6
    assert resumed["before"] == reference["before"] and abs(resumed["after"]["evalLoss"] -
                                                              reference["after"]["evalLoss"]) <= 1e-6
    assert max_diff(adapter_weights(storage), adapter_weights(tmp_path / "reference")) <= 1e-6


def test_a_pod_like_launch_leaves_model_adapter_and_evaluation(inputs: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = job("ddp", 2, batchSize=2, maxSteps=16, evalData={"uri": "pvc://data/eval.jsonl"})
    env = {**environment(spec, tmp_path, inputs), "PET_NNODES": "1", "PET_NPROC_PER_NODE": "2", "PET_NODE_RANK": "0",
           "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(free_port()), "KUBEFORGE_JOB_NAME": "chat",
           "KUBEFORGE_JOB_UID": "u-1", "KUBEFORGE_ATTEMPT": "0"}
    p = subprocess.run([sys.executable, "-m", "kubeforge_trainer", "launch"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    result = parse_result((tmp_path / "termination-log").read_text())
    assert result is not None and result.artifact is not None and result.adapter_artifact is not None
    assert result.artifact.format == result.adapter_artifact.format == "hf-transformers"
    ev = result.evaluation
    assert ev is not None and ev.before and ev.after and ev.before.loss and ev.after.loss
    assert ev.after.loss < ev.before.loss and ev.trainable_fraction is not None and ev.trainable_fraction < 0.05
    assert ev.tokens_per_second and result.progress and result.progress.step == 16
    lineage = json.loads((tmp_path / "artifact" / "kubeforge-lineage.json").read_text())
    assert lineage["evalData"]["uri"] == "pvc://data/eval.jsonl" and lineage["trainingJob"]["name"] == "chat"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "artifact", local_files_only=True,
                                                 trust_remote_code=False, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "artifact", local_files_only=True)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "which thing?"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    assert model.generate(**prompt, max_new_tokens=4, do_sample=False).shape[1] > prompt["input_ids"].shape[1]
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(inputs / "model"), tmp_path / "adapter")


def test_full_fine_tune_without_packing(inputs: Path, tmp_path: Path) -> None:
    spec = job("ddp", method="full", packing=False, data={"uri": "pvc://data/pc.jsonl", "format": "prompt-completion"},
               maxSteps=8, lora=None, learningRate=1e-3)
    del spec["finetune"]["lora"]
    result = run(spec, tmp_path, inputs, data="pc.jsonl")
    assert result["fraction"] == 1.0 and "adapterArtifact" not in result
    assert result["after"]["evalLoss"] < result["before"]["evalLoss"]
    assert not (tmp_path / "adapter").exists() and (tmp_path / "artifact" / "model.safetensors").is_file()


def test_bad_data_fails_the_job_permanently_naming_the_line(inputs: Path, tmp_path: Path) -> None:
    lines = (inputs / "chat.jsonl").read_text().splitlines()
    (tmp_path / "bad.jsonl").write_text("\n".join([*lines[:5], '{"messages": "hello"}', *lines[5:]]) + "\n")
    (tmp_path / "model").symlink_to(inputs / "model")
    p = start(job(), tmp_path / "storage", tmp_path, data="bad.jsonl")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == EXIT_INVALID_CONFIG, out[-2000:]
    message = (tmp_path / "storage" / "termination-log").read_text()
    assert message.startswith("kubeforge-trainer: pvc://data/chat.jsonl:6: messages: ") and "\n" not in message
