"""No two processes of one rank step at once across attempts: a process of an old attempt (a partitioned
node's, still running) stops within a poll of a newer attempt being recorded, and the newer attempt takes
its first step only after that; an attempt whose predecessors are already gone waits for nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG
from kubeforge_trainer import checkpoint, fencewatch

OLD_RANK = """
import os, sys, time, pathlib
from kubeforge_trainer import checkpoint, fencewatch
root, steps = pathlib.Path(sys.argv[1]), open(sys.argv[2], "a", buffering=1)
fencewatch.enable()
checkpoint.resume_point(root)
while True:
    steps.write(f"{time.time()}\\n")
    time.sleep(0.02)
"""


def as_attempt(monkeypatch: pytest.MonkeyPatch, attempt: int) -> None:
    monkeypatch.setenv("KUBEFORGE_ATTEMPT", str(attempt))
    monkeypatch.setenv("KUBEFORGE_JOB_UID", "uid")


def test_an_attempt_after_one_whose_processes_are_gone_waits_for_nothing(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    as_attempt(monkeypatch, 0)
    checkpoint.resume_point(tmp_path)
    stamp = fencewatch.stamp_path(tmp_path, 0)
    stamp.touch()
    old = time.time() - 10 * fencewatch.STALE_SECONDS
    os.utime(stamp, (old, old))  # its last touch long before the next attempt records itself
    as_attempt(monkeypatch, 1)
    start = time.monotonic()
    checkpoint.resume_point(tmp_path)
    assert time.monotonic() - start < fencewatch.POLL_SECONDS


def test_an_attempt_waits_until_the_old_processes_have_stopped(tmp_path: Path) -> None:
    (tmp_path / checkpoint.FENCE).write_text("{}")
    stamp, stop, stopped_at = fencewatch.stamp_path(tmp_path, 0), threading.Event(), []

    def old_watcher() -> None:  # touches like a live process's watcher, until it sees the fence after 1 s
        while not stop.wait(0.1):
            stamp.touch()
        stopped_at.append(time.monotonic())

    stamp.touch()
    threading.Thread(target=old_watcher, daemon=True).start()
    threading.Timer(1.0, stop.set).start()
    waited = fencewatch.outlive_older(tmp_path, tmp_path / checkpoint.FENCE, 1)
    assert stopped_at and time.monotonic() - stopped_at[0] >= fencewatch.QUIET_SECONDS - 0.3
    assert waited < fencewatch.MAX_WAIT_SECONDS


def test_a_running_old_rank_stops_before_the_new_attempt_steps(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root, steps = tmp_path / "checkpoints", tmp_path / "steps"
    as_attempt(monkeypatch, 0)
    old = subprocess.Popen([sys.executable, "-c", OLD_RANK, str(root), str(steps)], env=dict(os.environ),
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (steps.exists() and steps.read_text().count("\n") > 3 and fencewatch.stamp_path(root, 0).exists()):
        assert old.poll() is None and time.monotonic() < deadline, "the old rank never stepped"
        time.sleep(0.05)
    as_attempt(monkeypatch, 1)
    checkpoint.resume_point(root)  # records attempt 1, then outlives attempt 0's processes
    first_new_step = time.time()
    try:
        assert old.wait(timeout=10) == EXIT_INVALID_CONFIG
    finally:
        old.kill()
    last_old_step = float(steps.read_text().split()[-1])
    assert last_old_step < first_new_step
    assert "attempt 1 of job uid has started" in (old.stderr.read() if old.stderr else "")


def test_a_rank_that_waited_resumes_from_what_is_there_after_the_wait(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    as_attempt(monkeypatch, 0)
    checkpoint.save(tmp_path, 10, {"model": {"w": torch.ones(2)}}, {}, keep=2)
    as_attempt(monkeypatch, 1)
    assert checkpoint.resume_point(tmp_path) == tmp_path / "step-000000010"  # rank 0 records the attempt

    def peer_steps_on(root: Path, fence_file: Path, attempt: int) -> float:  # rank 0 prunes the base meanwhile
        for step in (11, 12, 13):
            checkpoint.save(root, step, {"model": {"w": torch.ones(2)}}, {}, keep=2)
        return 1.0

    monkeypatch.setattr(fencewatch, "outlive_older", peer_steps_on)
    path = checkpoint.resume_point(tmp_path)  # rank 1, which had to wait
    assert path == tmp_path / "step-000000013-a1" and checkpoint.load(path).step == 13
