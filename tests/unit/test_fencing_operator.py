"""The operator's side of fencing by attempt: a progress document from an attempt other than the current
one is ignored (an old rank 0 still answering on a lost node), and how long a lost node waits before its
old pods are force-deleted is a setting (`KUBEFORGE_NODE_FENCE_SECONDS`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kubeforge_api.contracts import HistoryPoint, ProgressDoc
from kubeforge_operator.plan import World
from kubeforge_operator.settings import Settings
from kubeforge_operator.trainingjob.context import Config, Pass
from kubeforge_operator.trainingjob.progress import record_progress

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
STATUS = {"restartCount": 2, "state": "Running", "progress": {"step": 40, "totalSteps": 100, "epoch": 0,
                                                               "percent": "40.0%"}, "history": {"loss": "40:0.5"}}


def a_pass(doc: ProgressDoc) -> Pass:
    job = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
           "spec": {"nodes": 2, "command": ["x"]}, "status": STATUS}
    return Pass(World(job, {"Pod": [], "Service": []}, frozenset(), NOW, probe=doc), Config(default_image="img"))


def doc(attempt: int, **extra: Any) -> ProgressDoc:
    return ProgressDoc(step=70, total_steps=100, attempt=attempt, phase="training", last_checkpoint_step=70,
                       history=[HistoryPoint(kind="train", step=70, loss=0.1)], **extra)


@pytest.mark.parametrize("attempt", [0, 1, 3])
def test_a_progress_document_of_another_attempt_changes_nothing(attempt: int) -> None:
    p = a_pass(doc(attempt, resumed_from=60))
    record_progress(p)
    assert p.status["progress"] == STATUS["progress"] and p.status["history"] == STATUS["history"]
    assert "lastCheckpoint" not in p.status and "resumedFrom" not in p.status and not p.plan.events


def test_the_current_attempts_progress_is_recorded() -> None:
    p = a_pass(doc(2, resumed_from=60))
    record_progress(p)
    assert p.status["progress"]["step"] == 70 and p.status["lastCheckpoint"] == {"step": 70}
    assert p.status["history"]["loss"].endswith("70:0.1") and p.status["resumedFrom"] == {"attempt": 2, "step": 60}


def test_the_node_fence_time_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().policy().node_fence_seconds == 0
    monkeypatch.setenv("KUBEFORGE_NODE_FENCE_SECONDS", "45")
    assert Settings().policy().node_fence_seconds == 45
    monkeypatch.setenv("KUBEFORGE_NODE_FENCE_SECONDS", "-1")
    with pytest.raises(ValueError, match="node_fence_seconds"):
        Settings()
