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


def test_a_writer_that_raced_the_check_stops_right_after_its_commit(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    as_attempt(monkeypatch, 0)
    checkpoint.save(tmp_path, 10, T, {}, keep=3)
    real, calls = checkpoint.check_fence, []

    def racing(root: Path, attempt: int) -> None:
        calls.append(attempt)
        if len(calls) == 1:  # the check passes; attempt 1 records itself before the rename
            (root / "fence.json").write_text(json.dumps({"job": "uid", "attempt": 1, "base": "step-000000010"}))
            return
        real(root, attempt)
    monkeypatch.setattr(checkpoint, "check_fence", racing)
    with pytest.raises(Fenced):
        checkpoint.save(tmp_path, 20, T, {}, keep=3)
    monkeypatch.setattr(checkpoint, "check_fence", real)
    assert calls == [0, 0] and not list(tmp_path.glob("step-000000020*"))  # removed at once
    as_attempt(monkeypatch, 1)
    loaded = checkpoint.latest(tmp_path)
    assert loaded is not None and loaded.step == 10


def test_a_checkpoint_the_newer_attempt_took_as_its_base_is_kept(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    as_attempt(monkeypatch, 0)
    checkpoint.save(tmp_path, 10, T, {}, keep=3)
    real = checkpoint.check_fence
    renamed = []

    def racing(root: Path, attempt: int) -> None:
        if (root / "step-000000020").exists() and not renamed:  # after the rename: attempt 1 lists it, records it
            renamed.append(True)
            (root / "fence.json").write_text(json.dumps({"job": "uid", "attempt": 1, "base": "step-000000020"}))
        real(root, attempt)
    monkeypatch.setattr(checkpoint, "check_fence", racing)
    with pytest.raises(Fenced):
        checkpoint.save(tmp_path, 20, T, {}, keep=3)
    monkeypatch.setattr(checkpoint, "check_fence", real)
    as_attempt(monkeypatch, 1)
    loaded = checkpoint.latest(tmp_path)  # the base it recorded is still there: no work lost
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


def test_an_old_attempts_metrics_history_appends_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubeforge_trainer.progress import ProgressReporter, read_history

    history, root = tmp_path / "metrics.jsonl", tmp_path / "checkpoints"
    as_attempt(monkeypatch, 0)
    checkpoint.resume_point(root)
    old = ProgressReporter(history, None, lambda: checkpoint.fenced_out(root, 0))
    old.record("start", step=0)
    old.record_all([("train", {"step": s, "loss": 1.0}) for s in (1, 2)])
    old.flush()
    as_attempt(monkeypatch, 1)  # the next attempt records itself, then reports
    checkpoint.resume_point(root)
    new = ProgressReporter(history, None, lambda: checkpoint.fenced_out(root, 1))
    new.record("start", step=2, attempt=1, resumedFrom=2)
    old.record("eval", step=3, loss=0.5)  # the old rank 0, partitioned, still running: refused
    old.record("train", step=4, loss=0.5)
    new.record("train", step=3, loss=0.9)
    new.close()
    old.close()
    assert old.fenced and not new.fenced
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert [(p["attempt"], p["step"]) for p in lines] == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 3)]
    assert [(p["attempt"], p["kind"], p["step"]) for p in read_history(history)] == [
        (0, "start", 0), (0, "train", 1), (0, "train", 2), (1, "start", 2), (1, "train", 3)]


def test_the_history_reader_never_reads_what_an_old_attempt_appended_anyway(tmp_path: Path) -> None:
    """A stale writer that raced the fence check: its lines after the newer attempt's first are dropped, and
    so are its points past the step the newer attempt resumed from (the newer attempt redoes them)."""
    from kubeforge_trainer.progress import read_history

    rows = [(0, "start", 0), (0, "train", 1), (0, "train", 2), (0, "train", 3), (1, "start", 2), (0, "train", 4),
            (0, "eval", 4), (1, "train", 3), (2, "train", 4), (1, "train", 4)]
    history = tmp_path / "metrics.jsonl"
    history.write_text("".join(json.dumps({"kind": k, "step": s, "attempt": a}) + "\n" for a, k, s in rows)
                       + '{"kind": "train", "st')  # the torn last line of a killed writer
    assert [(p["attempt"], p["kind"], p["step"]) for p in read_history(history)] == [
        (0, "start", 0), (0, "train", 1), (0, "train", 2), (1, "start", 2), (1, "train", 3), (2, "train", 4)]


def write_artifact(directory: Path, attempt: int, job: str = "uid") -> None:
    arch = {"model": "gpt", "vocab": 40, "dim": 16, "heads": 2, "layers": 1, "seqLen": 12}
    artifacts.write(directory, build(arch).state_dict(), {"architecture": arch, "metrics": {},
                                                          "lineage": {"uid": job, "attempt": attempt}})


def test_an_artifact_an_old_attempt_renamed_into_place_anyway_is_never_published(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from kubeforge_trainer import publish

    as_attempt(monkeypatch, 1)
    checkpoint.resume_point(tmp_path / "checkpoints")
    write_artifact(tmp_path / "artifact", 1)
    artifacts.check_current(tmp_path / "artifact")  # the current attempt's own: accepted
    as_attempt(monkeypatch, 2)  # a newer attempt starts after attempt 1's rank 0 passed its fence check
    checkpoint.resume_point(tmp_path / "checkpoints")
    with pytest.raises(artifacts.ArtifactError, match=r"attempt 1 .* attempt 2 of job uid is the current one"):
        artifacts.check_current(tmp_path / "artifact")
    code = publish.main(["--storage", str(tmp_path), "--uri", "s3://bucket/prefix"])
    assert code == 64 and "never published" in capsys.readouterr().err  # refused before any upload is tried
    write_artifact(tmp_path / "artifact", 2, job="another-job")
    with pytest.raises(artifacts.ArtifactError, match="another-job"):
        artifacts.check_current(tmp_path / "artifact")
