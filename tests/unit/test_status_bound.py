"""A TrainingJob status never exceeds 64 KiB (docs/operations.md), whatever its pods report: the
largest progress documents the typed contract admits, pass after pass, and the longest
termination messages (multi-byte characters, the kubelet's 4 KiB) on top of a status already full."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kubeforge_api.contracts import MAX_EVAL_KEYS, MAX_HISTORY_POINTS, MAX_STEP, TERMINATION_LIMIT, ProgressDoc
from kubeforge_api.trainingjob import TrainingJobSpec, TrainingJobStatus
from kubeforge_operator.plan import ObjectRef, World, ts
from kubeforge_operator.render.trainingjob import members, render_pod
from kubeforge_operator.trainingjob.bounded import MAX_STATUS_BYTES, bound, size
from kubeforge_operator.trainingjob.context import Config
from kubeforge_operator.trainingjob.decide import decide
from kubeforge_operator.trainingjob.progress import CURVES, merge_history

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CFG = Config("img")
SPEC: Obj = {"nodes": 2, "recipe": {"model": "mlp", "dataset": "digits"}, "runPolicy": {"backoffLimit": 0}}
WIDE = -999_999_999_999_999.9  # the widest number the contract admits (|x| <= 1e15)
DEVIL = "\U0001f608"  # 4 bytes in UTF-8


def job(status: Obj) -> Obj:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": SPEC, "status": status}


def pods(phase: str = "Running", message: str = "") -> list[Obj]:
    spec = TrainingJobSpec.model_validate(SPEC)
    out = []
    for m in members(spec):
        p = render_pod(ObjectRef("demo", "ml", "u", 1), spec, m, 0, "img", "1Gi")
        p["metadata"].update({"uid": f"uid-{m.rank}", "creationTimestamp": ts(NOW - timedelta(seconds=60))})
        p["status"] = {"phase": "Running", "podIP": f"10.0.0.{m.rank + 1}"}
        if m.rank == 0 and phase == "Failed":
            p["status"] = {"phase": "Failed", "message": DEVIL * 100_000, "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": message,
                                                             "finishedAt": ts(NOW)}}}]}
        out.append(p)
    return out


def worst_progress(first_step: int) -> ProgressDoc:
    """The largest document the contract admits: every eval key, every history point, widest numbers."""
    metrics = {"loss": WIDE, "evalLoss": WIDE, "accuracy": WIDE, "perplexity": WIDE, "samplesPerSecond": 1e15}
    history = [{"kind": "eval", "step": min(first_step + i, MAX_STEP), "time": 1e15, **metrics}
               for i in range(MAX_HISTORY_POINTS)]
    return ProgressDoc.model_validate({
        "step": MAX_STEP, "totalSteps": MAX_STEP, "epoch": MAX_STEP, "percent": 100, "loss": WIDE,
        "eval": {f"m{i:02d}" + "x" * 61: WIDE for i in range(MAX_EVAL_KEYS)}, "samplesPerSecond": 1e15,
        "etaSeconds": 1e15, "lastCheckpointStep": MAX_STEP, "history": history})


def fits(status: Obj) -> int:
    n = size(status)
    assert n <= MAX_STATUS_BYTES, f"status of {n} bytes"
    TrainingJobStatus.model_validate(status)  # and it is still a valid status
    return n


def test_the_largest_progress_documents_pass_after_pass_stay_under_the_bound() -> None:
    status: Obj = {}
    first = MAX_STEP - 30 * MAX_HISTORY_POINTS
    for i in range(30):
        world = World(job(status), {"Pod": pods(), "Service": [{"kind": "Service"}]}, frozenset(), NOW,
                      probe=worst_progress(first + i * MAX_HISTORY_POINTS))
        status = json.loads(json.dumps(decide(world, CFG).status))
        fits(status)
    assert set(status["history"]) == set(CURVES) and status["progress"]["eval"]


def test_the_longest_termination_messages_on_a_full_status_stay_under_the_bound() -> None:
    full: Obj = {
        "history": merge_history({}, worst_progress(MAX_STEP - MAX_HISTORY_POINTS).history),
        "conditions": [{"type": t, "status": "False", "reason": "R" * 64, "message": DEVIL * 1024,
                        "lastTransitionTime": ts(NOW), "observedGeneration": 1}
                       for t in ("Created", "Running", "Restarting", "Suspended", "Compressed")],
        "compression": {"attempts": 1, "message": DEVIL * 1024, "reportPath": "r" * 512},
        "restartCount": 0, "state": "Running",
    }
    message = "\n".join([DEVIL * 100] * 20)[:TERMINATION_LIMIT // 4]  # 4 KiB of 4-byte characters
    status = decide(World(job(full), {"Pod": pods("Failed", message)}, frozenset(), NOW), CFG).status
    assert status["state"] == "Failed" and status["lastFailure"]["message"]
    fits(status)


def test_bound_keeps_a_status_that_fits_as_it_is_and_is_stable() -> None:
    small: Obj = {"history": {"loss": [[1, 0.5], [2, 0.25]]}, "conditions": [{"type": "Running", "message": "x"}]}
    assert bound(json.loads(json.dumps(small))) == small
    big: Obj = {"history": {c: [[s, WIDE] for s in range(200)] for c in CURVES},
                "conditions": [{"type": f"T{i}", "message": DEVIL * 1024} for i in range(12)]}
    once = bound(json.loads(json.dumps(big)))
    assert size(once) <= MAX_STATUS_BYTES and bound(json.loads(json.dumps(once))) == once
    for curve in once.get("history", {}).values():
        assert curve[-1][0] == 199  # the newest point is always kept
