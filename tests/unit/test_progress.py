"""Progress plumbing: bounded curves in status, and the 4 KiB termination message."""

from __future__ import annotations

import json
from pathlib import Path

from kubeforge_api.contracts import HistoryPoint, ProgressDoc
from kubeforge_operator.trainingjob.progress import HISTORY_LIMIT, downsample, last_step, merge_history, summary
from kubeforge_trainer.train.common import termination_message


def test_history_is_merged_in_order_bounded_and_keeps_the_newest_point() -> None:
    hist: dict[str, list[list[float]]] = {}
    for start in range(0, 1000, 100):
        points = [HistoryPoint(kind="train", step=s, loss=1.0 / (s + 1)) for s in range(start + 1, start + 101)]
        hist = merge_history(hist, points)
    assert len(hist["loss"]) <= HISTORY_LIMIT
    assert hist["loss"][-1][0] == 1000 and hist["loss"][0][0] == 1
    steps = [p[0] for p in hist["loss"]]
    assert steps == sorted(steps)
    assert merge_history(hist, [HistoryPoint(kind="train", step=500, loss=9.0)]) == hist  # old points are not re-added
    assert last_step(hist) == 1000


def test_downsample_halves_until_it_fits() -> None:
    pts = [[float(i), float(i)] for i in range(1001)]
    out = downsample(pts, 200)
    assert len(out) <= 200 and out[-1] == pts[-1] and out[0] == pts[0]


def test_summary_is_rounded_so_unchanged_progress_writes_nothing() -> None:
    p = ProgressDoc.model_validate({"step": 10, "totalSteps": 40, "epoch": 1, "percent": 25.0, "loss": 0.123456789,
                                    "eval": {"accuracy": 0.5}, "samplesPerSecond": 1234.567, "etaSeconds": 12.7})
    assert summary(p) == {"step": 10, "totalSteps": 40, "epoch": 1, "percent": "25.0%", "loss": 0.123457,
                          "eval": {"accuracy": 0.5}, "samplesPerSecond": 1234.6, "etaSeconds": 12}


def test_termination_message_fits_4k_and_ends_at_the_last_step() -> None:
    history = [{"kind": "train", "step": s, "loss": 1.0 / s, "time": 1.0, "lr": 0.1} for s in range(1, 3001)]
    msg = termination_message({"path": "artifact", "digest": "sha256:" + "ab" * 32, "sizeBytes": 1},
                              {"step": 3000, "history": history})
    assert len(msg) <= 4096
    parsed = json.loads(msg)
    steps = [p["step"] for p in parsed["progress"]["history"]]
    assert steps[-1] == 3000 and len(steps) > 20 and parsed["artifact"]["digest"] == "sha256:" + "ab" * 32


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
