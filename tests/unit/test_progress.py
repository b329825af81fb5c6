"""Progress plumbing: bounded curves in status, and the 4 KiB termination message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubeforge_api.contracts import HistoryPoint, ProgressDoc
from kubeforge_api.curves import decode, encode
from kubeforge_api.trainingjob import TrainingJobStatus
from kubeforge_operator.trainingjob.progress import (
    HISTORY_LIMIT,
    apply_progress,
    downsample,
    headline,
    last_step,
    merge_history,
    summary,
)
from kubeforge_trainer.train.common import termination_message
from pydantic import ValidationError


def test_history_is_merged_in_order_bounded_and_keeps_the_newest_point() -> None:
    hist: dict[str, str] = {}
    for start in range(0, 1000, 100):
        points = [HistoryPoint(kind="train", step=s, loss=1.0 / (s + 1)) for s in range(start + 1, start + 101)]
        hist = merge_history(hist, points)
    loss = decode(hist["loss"])
    assert len(loss) <= HISTORY_LIMIT
    assert loss[-1] == (1000, 0.000999) and loss[0] == (1, 0.5)
    steps = [p[0] for p in loss]
    assert steps == sorted(steps)
    assert merge_history(hist, [HistoryPoint(kind="train", step=500, loss=9.0)]) == hist  # old points are not re-added
    assert merge_history(hist, []) == hist  # re-encoding is stable: an unchanged curve writes nothing
    assert last_step(hist) == 1000


def test_a_curve_is_one_string_and_older_list_curves_still_read() -> None:
    assert encode([(10, 2.302585), (20, 1234.5678), (30, 1e-7)]) == "10:2.303 20:1235 30:1e-07"
    assert decode("10:2.303 20:1235 30:1e-07") == [(10, 2.303), (20, 1235.0), (30, 1e-07)]
    assert decode([[10, 2.5], [20.0, 1.0], ["bad"]]) == [(10, 2.5), (20, 1.0)]  # the older [[step, value]] form
    assert decode("10:2.5 junk 20:x 30:1") == [(10, 2.5), (30, 1.0)] and decode(5) == decode(None) == []
    assert last_step({"loss": [[5, 1.0]], "accuracy": "7:0.5"}) == 7
    status = TrainingJobStatus.model_validate({"history": {"loss": [[1, 2.0], [2, 1.0]]}})
    assert status.history == {"loss": "1:2 2:1"}  # a job written by an older operator still parses
    with pytest.raises(ValidationError):
        TrainingJobStatus.model_validate({"history": {"loss": "1:2\n2:1"}})  # one line, or describe grows again


def test_downsample_halves_until_it_fits() -> None:
    pts = [(i, float(i)) for i in range(1001)]
    out = downsample(pts, 200)
    assert len(out) <= 200 and out[-1] == pts[-1] and out[0] == pts[0]


def test_summary_is_rounded_so_unchanged_progress_writes_nothing() -> None:
    p = ProgressDoc.model_validate({"step": 10, "totalSteps": 40, "epoch": 1, "percent": 25.0, "loss": 0.123456789,
                                    "eval": {"accuracy": 0.5}, "samplesPerSecond": 1234.567, "etaSeconds": 12.7})
    assert summary(p) == {"step": 10, "totalSteps": 40, "epoch": 1, "percent": "25.0%", "loss": 0.123457,
                          "eval": {"accuracy": 0.5}, "samplesPerSecond": 1234.6, "etaSeconds": 12}


@pytest.mark.parametrize(("evaluation", "shown"), [
    ({"evalLoss": 0.2, "accuracy": 0.96666}, "accuracy 0.9667"),
    ({"evalLoss": 2.5, "perplexity": 12.18}, "perplexity 12.18"),
    ({"evalLoss": 0.25}, "evalLoss 0.25"), ({}, None)])
def test_the_metric_kubectl_get_shows_is_the_evaluations_headline(evaluation: dict[str, float],
                                                                   shown: str | None) -> None:
    assert headline(evaluation) == shown
    status: dict[str, Any] = {}
    apply_progress(status, ProgressDoc.model_validate({"step": 1, "totalSteps": 2, "eval": evaluation}))
    assert status.get("metric") == shown


def test_termination_message_fits_4k_ends_at_the_last_step_and_keeps_every_eval_point() -> None:
    history: list[dict[str, Any]] = []
    for s in range(1, 3001):  # 8 epochs of 375 steps, an eval point after each epoch's last step
        history.append({"kind": "train", "step": s, "loss": 1.0 / s, "time": 1.0, "lr": 0.1})
        if s % 375 == 0:
            history.append({"kind": "eval", "step": s, "accuracy": 0.9, "evalLoss": 0.3})
    msg = termination_message({"path": "artifact", "digest": "sha256:" + "ab" * 32, "sizeBytes": 1},
                              {"step": 3000, "history": history})
    assert len(msg) <= 4096
    parsed = json.loads(msg)
    steps = [p["step"] for p in parsed["progress"]["history"] if p["kind"] == "train"]
    assert steps[-1] == 3000 and len(steps) > 20 and parsed["artifact"]["digest"] == "sha256:" + "ab" * 32
    assert [p["step"] for p in parsed["progress"]["history"] if p["kind"] == "eval"] == [375 * e for e in range(1, 9)]


def test_history_file_gets_train_points_in_batches_and_everything_by_the_end(tmp_path: Path) -> None:
    from kubeforge_trainer.progress import ProgressReporter

    path = tmp_path / "metrics.jsonl"
    reporter = ProgressReporter(path, None)
    reporter.record("start", step=0)
    assert len(path.read_text().splitlines()) == 1  # anything but a train point is written at once
    for step in range(1, 51):
        reporter.record("train", step=step, loss=1.0)
    assert len(path.read_text().splitlines()) < 51  # not a flush per point on the hot path
    final = reporter.final()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == list(range(51))
    assert len(final["history"]) == 51
    reporter.close()
