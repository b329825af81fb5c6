"""The attempt number fences checkpoints and artifacts: an attempt records itself before it loads,
loads only the fenced attempt's checkpoints or the base it resumed from, and a writer of an older
attempt (or of another job) commits nothing; what a stale writer commits anyway is never loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kubeforge_trainer import artifacts, checkpoint
from kubeforge_trainer.checkpoint import Fenced
from kubeforge_trainer.models import build

T = {"model": {"w": torch.ones(2)}}


def as_attempt(monkeypatch: pytest.MonkeyPatch, attempt: int, job: str = "uid") -> None:
    monkeypatch.setenv("KUBEFORGE_ATTEMPT", str(attempt))
    monkeypatch.setenv("KUBEFORGE_JOB_UID", job)


def test_a_new_attempt_resumes_from_the_last_and_fences_the_old(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    as_attempt(monkeypatch, 0)
    assert checkpoint.latest(tmp_path) is None
    checkpoint.save(tmp_path, 10, T, {}, keep=2)
    as_attempt(monkeypatch, 1)
    assert checkpoint.resume_point(tmp_path) == tmp_path / "step-000000010"
    assert json.loads((tmp_path / "fence.json").read_text()) == {"job": "uid", "attempt": 1,
                                                                  "base": "step-000000010"}
    as_attempt(monkeypatch, 0)  # the old rank, partitioned, still running
    with pytest.raises(Fenced):
        checkpoint.save(tmp_path, 20, T, {}, keep=2)
    with pytest.raises(Fenced):
        checkpoint.latest(tmp_path)
    assert not list(tmp_path.glob("step-000000020*")) and not list(tmp_path.glob(".tmp-*"))


def test_what_a_stale_writer_commits_anyway_is_never_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    as_attempt(monkeypatch, 0)
    checkpoint.save(tmp_path, 10, T, {}, keep=3)
    as_attempt(monkeypatch, 1)
    checkpoint.resume_point(tmp_path)
    monkeypatch.setattr(checkpoint, "check_fence", lambda root, attempt: None)  # it raced past the check
    as_attempt(monkeypatch, 0)
    checkpoint.save(tmp_path, 30, T, {}, keep=3)
    monkeypatch.undo()
    as_attempt(monkeypatch, 1)
    loaded = checkpoint.latest(tmp_path)
    assert loaded is not None and loaded.step == 10
    checkpoint.save(tmp_path, 20, T, {}, keep=3)
    assert checkpoint.resume_point(tmp_path) == tmp_path / "step-000000020-a1"
    assert not (tmp_path / "step-000000030").exists()  # pruned, never accepted
    as_attempt(monkeypatch, 2)
    loaded = checkpoint.latest(tmp_path)
    assert loaded is not None and loaded.step == 20


def test_a_job_created_again_takes_over_the_fence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    as_attempt(monkeypatch, 3, "old")
    checkpoint.save(tmp_path, 10, T, {}, keep=2)
    checkpoint.resume_point(tmp_path)
    as_attempt(monkeypatch, 0, "new")
    assert checkpoint.resume_point(tmp_path) == tmp_path / "step-000000010-a3"
    as_attempt(monkeypatch, 3, "old")
    with pytest.raises(Fenced):
        checkpoint.save(tmp_path, 20, T, {}, keep=2)


def test_an_old_attempt_publishes_no_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    as_attempt(monkeypatch, 2)
    checkpoint.resume_point(tmp_path / "checkpoints")
    as_attempt(monkeypatch, 1)
    with pytest.raises(Fenced):
        arch = {"model": "gpt", "vocab": 40, "dim": 16, "heads": 2, "layers": 1, "seqLen": 12}
        artifacts.write(tmp_path / "artifact", build(arch).state_dict(), {"architecture": arch, "metrics": {}})
    assert not (tmp_path / "artifact").exists()


def test_a_hostile_fence_is_no_fence(tmp_path: Path) -> None:
    for text in ("[]", "{\"attempt\": \"x\"}", "not json", "{\"attempt\": 1, \"base\": \"../../etc\"}"):
        (tmp_path / "fence.json").write_text(text)
        fence = checkpoint.read_fence(tmp_path)
        assert fence is None or fence.base is None
