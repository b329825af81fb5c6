"""The trainer as real processes: torchrun with gloo on CPU, 2 ranks."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG
from safetensors.torch import load_file

Obj = dict[str, Any]
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def spec(strategy: str = "ddp", procs: int = 1, **recipe: Any) -> Obj:
    base = {"model": "mlp", "dataset": "digits", "epochs": 2, "batchSize": 64, "learningRate": 0.01}
    return {"strategy": strategy, "nodes": 1, "procsPerNode": procs, "recipe": {**base, **recipe},
            "checkpoint": {"intervalSteps": 10, "keep": 3}}


def launch(job: Obj, storage: Path, procs: int = 1) -> subprocess.Popen[str]:
    env = {**os.environ, "KUBEFORGE_SPEC": json.dumps(job), "KUBEFORGE_STORAGE_DIR": str(storage),
           "KUBEFORGE_PROGRESS_PORT": "0"}
    if procs == 1:
        cmd = [sys.executable, "-m", "kubeforge_trainer", "train"]
    else:
        cmd = [TORCHRUN, "--standalone", f"--nproc-per-node={procs}", "--max-restarts=0", "-m", "kubeforge_trainer",
               "train"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def run(job: Obj, storage: Path, procs: int = 1) -> Obj:
    p = launch(job, storage, procs)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
    return dict(json.loads(next(line for line in out.splitlines() if line.startswith('{"result"')))["result"])


def history(storage: Path, kind: str = "train") -> list[Obj]:
    return [r for r in map(json.loads, (storage / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def weights(storage: Path) -> dict[str, torch.Tensor]:
    return load_file(str(storage / "artifact" / "model.safetensors"))


def test_mlp_recipe_reaches_95_percent_on_digits(tmp_path: Path) -> None:
    result = run(spec(epochs=10), tmp_path)
    assert result["metrics"]["accuracy"] >= 0.95
    card = json.loads((tmp_path / "artifact" / "model-card.json").read_text())
    assert card["architecture"]["model"] == "mlp" and card["dataset"]["name"] == "digits"
    assert card["metrics"]["accuracy"] == result["metrics"]["accuracy"]
    assert card["weights"]["digest"] == result["artifact"]["digest"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_match_a_single_process(tmp_path: Path, strategy: str) -> None:
    run(spec(), tmp_path / "single")
    run(spec(strategy, 2), tmp_path / strategy, procs=2)
    single = [r["loss"] for r in history(tmp_path / "single")]
    multi = [r["loss"] for r in history(tmp_path / strategy)]
    assert len(single) == len(multi) > 10
    assert max(abs(a - b) for a, b in zip(single, multi, strict=True)) < 1e-4
    a, b = weights(tmp_path / "single"), weights(tmp_path / strategy)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_gradient_accumulation_keeps_the_math(tmp_path: Path, strategy: str) -> None:
    run(spec(strategy, 2), tmp_path / "plain", procs=2)
    run(spec(strategy, 2, gradientAccumulation=4), tmp_path / "accum", procs=2)
    plain = [r["loss"] for r in history(tmp_path / "plain")]
    accum = [r["loss"] for r in history(tmp_path / "accum")]
    assert max(abs(a - b) for a, b in zip(plain, accum, strict=True)) < 1e-4


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_sigkill_of_a_rank_resumes_from_the_last_checkpoint_and_ends_identical(tmp_path: Path,
                                                                                strategy: str) -> None:
    job = spec(strategy, 2, epochs=3)
    run(job, tmp_path / "reference", procs=2)
    storage = tmp_path / "killed"
    p = launch(job, storage, procs=2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill rank 1 once training is past step 25
        rows = history(storage) if (storage / "metrics.jsonl").exists() else []
        if rows and rows[-1]["step"] >= 25:
            break
        time.sleep(0.05)
    ranks = _children(p.pid)
    assert len(ranks) == 2
    os.kill(max(ranks), signal.SIGKILL)
    p.communicate(timeout=120)
    assert p.returncode != 0
    reached = history(storage)[-1]["step"]
    restarted = launch(job, storage, procs=2)  # the gang restart
    out, _ = restarted.communicate(timeout=600)
    assert restarted.returncode == 0, out[-3000:]
    assert "kubeforge: attempt 0: resumed from the checkpoint at step" in out  # what `kubectl logs` shows
    assert re.search(r"kubeforge: step \d+/\d+ epoch 2: loss \S+ evalLoss \S+ accuracy \S+", out), out[-3000:]
    assert "kubeforge: checkpoint at step" in out
    start = next(r for r in map(json.loads, (storage / "metrics.jsonl").read_text().splitlines())
                 if r["kind"] == "start" and r.get("resumedFrom"))
    interval = job["checkpoint"]["intervalSteps"]
    assert reached - start["resumedFrom"] <= interval + 1  # lost work: one interval plus the step in flight
    a, b = weights(tmp_path / "reference"), weights(storage)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_corrupt_or_pickled_checkpoints_are_refused(tmp_path: Path) -> None:
    run(spec(epochs=1), tmp_path)
    ckpts = sorted((tmp_path / "checkpoints").glob("step-*"))
    newest = ckpts[-1]
    data = bytearray((newest / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (newest / "model.safetensors").write_bytes(bytes(data))
    p = launch(spec(epochs=2), tmp_path)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == EXIT_INVALID_CONFIG and "corrupt" in out
    # A pickle planted in a checkpoint is never read: the loader refuses the directory.
    marker = tmp_path / "pwned"
    for c in ckpts:
        shutil.rmtree(c)
    run(spec(epochs=1), tmp_path)
    newest = sorted((tmp_path / "checkpoints").glob("step-*"))[-1]

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    torch.save({"x": Evil()}, newest / "optimizer.pt")
    p = launch(spec(epochs=2), tmp_path)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == EXIT_INVALID_CONFIG and "unexpected files" in out
    assert not marker.exists()


def test_bad_recipe_exits_with_the_invalid_config_code(tmp_path: Path) -> None:
    p = launch(spec(model="gpt"), tmp_path)  # gpt needs a text dataset
    out, _ = p.communicate(timeout=120)
    assert p.returncode == EXIT_INVALID_CONFIG and "text dataset" in out


@pytest.mark.parametrize(("model", "dataset", "metric"), [("cnn", "digits", "accuracy"), ("gpt", "text", "perplexity"),
                                                         ("mlp", "synthetic", "accuracy")])
def test_other_recipes_train(tmp_path: Path, model: str, dataset: str, metric: str) -> None:
    extra = {"modelConfig": {"seqLen": 32, "dim": 32, "layers": 1}} if model == "gpt" else {}
    result = run(spec(model=model, dataset=dataset, epochs=1, **extra), tmp_path)
    assert metric in result["metrics"]
    losses = [r["loss"] for r in history(tmp_path)]
    assert losses[-1] < losses[0]


def test_file_datasets(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    storage = tmp_path / "storage"
    storage.mkdir()
    np.savez(storage / "data.npz", x=x, y=y)
    rows = (json.dumps({"x": a.tolist(), "y": int(b)}) for a, b in zip(x, y, strict=True))
    (storage / "data.jsonl").write_text("\n".join(rows))
    for name in ("data.npz", "data.jsonl"):
        result = run(spec(dataset="file", datasetPath=name, epochs=5, batchSize=32), storage)
        assert result["metrics"]["accuracy"] > 0.8, name
        for d in ("checkpoints", "artifact"):
            shutil.rmtree(storage / d, ignore_errors=True)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_pipeline_matches_the_unsplit_model(tmp_path: Path, schedule: str) -> None:
    """Same global batches, so identical losses (outputs) and identical weights after each update
    (gradients) show the stages compute exactly what the unsplit model computes."""
    run(spec(), tmp_path / "single")
    run(spec("pipeline", 2, microBatches=4, pipelineSchedule=schedule), tmp_path / "pp", procs=2)
    single = [r["loss"] for r in history(tmp_path / "single")]
    piped = [r["loss"] for r in history(tmp_path / "pp")]
    assert len(single) == len(piped) and max(abs(a - b) for a, b in zip(single, piped, strict=True)) < 1e-5
    a, b = weights(tmp_path / "single"), weights(tmp_path / "pp")
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    ckpt = sorted((tmp_path / "pp" / "checkpoints").glob("step-*"))[-1]
    assert {"model-stage0.safetensors", "model-stage1.safetensors"} <= {p.name for p in ckpt.iterdir()}


def test_parameter_server_converges_on_digits(tmp_path: Path) -> None:
    job = {**spec("parameter-server", 1, epochs=10, maxStaleness=2), "nodes": 2, "parameterServers": 1}
    result = run(job, tmp_path, procs=3)  # 2 workers + 1 server
    assert result["metrics"]["accuracy"] >= 0.9


def test_sigterm_checkpoints_the_step_it_stops_at_and_resumes_identical(tmp_path: Path) -> None:
    """A pod told to go (Kueue's preemption, a suspend) loses no step: every rank stops at the same
    step boundary, that step is checkpointed (between the periodic ones), and the rerun ends where an
    uninterrupted run does."""
    job = spec("ddp", 2, epochs=8)
    run(job, tmp_path / "reference", procs=2)
    storage = tmp_path / "stopped"
    p = launch(job, storage, procs=2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = history(storage) if (storage / "metrics.jsonl").exists() else []
        if rows and rows[-1]["step"] >= 13:
            break
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGTERM)  # to torchrun's agent, which passes it to the ranks, as in a pod
    out, _ = p.communicate(timeout=120)
    assert re.search(r"rank 0 stopped at step \d+ on SIGTERM", out), out[-3000:]
    stopped_at = int(re.findall(r"rank 0 stopped at step (\d+)", out)[0])
    assert stopped_at < len(history(tmp_path / "reference")), "the run ended before the signal"
    assert history(storage)[-1]["step"] == stopped_at  # no step trained after the last checkpoint
    assert f"kubeforge: checkpoint at step {stopped_at}" in out
    resumed = launch(job, storage, procs=2)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    assert f"resumed from the checkpoint at step {stopped_at}" in out
    a, b = weights(tmp_path / "reference"), weights(storage)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_a_rank_stuck_after_sigterm_leaves_without_waiting_out_the_grace_period() -> None:
    """A rank that cannot reach the ranks' agreement (a peer gone mid-collective) exits with 143 soon
    after SIGTERM, as SIGTERM's default would, so a gang restart does not wait for its grace period."""
    script = ("import os, signal, time\n"
              "from kubeforge_trainer.train import stopping\n"
              "from kubeforge_trainer.train.common import World\n"
              "stopping.STOP_WAIT_S = 0.5\n"
              "request = stopping.StopRequest(World(0, 1, 0))\n"
              "os.kill(os.getpid(), signal.SIGTERM)\n"
              "time.sleep(60)  # never reaches a step boundary\n")
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, done.stderr[-2000:]
    assert time.monotonic() - began < 30
