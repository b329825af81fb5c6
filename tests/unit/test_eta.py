"""The ETA in `status.progress` (and so in `kubeforge run` and the dashboard) comes from a smoothed
throughput: noisy steps and checkpoint pauses move it by a bounded amount, a real change of speed
still moves it. Also: a step's curve points reach the operator together."""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from kubeforge_cli.main import eta_text
from kubeforge_trainer.progress import ProgressReporter
from kubeforge_trainer.rate import TAU_SECONDS, SmoothedRate
from kubeforge_trainer.train import common

TOTAL, BATCH = 1000, 64


def noisy_step_seconds(steps: int = TOTAL, seed: int = 7) -> Iterator[float]:
    """Step times around 50 ms, often 2x off either way, with a 1 s checkpoint every 50 steps."""
    rng = random.Random(seed)
    for step in range(1, steps + 1):
        yield 0.05 * math.exp(rng.gauss(0, 0.6)) + (1.0 if step % 50 == 0 else 0.0)


def jumps(etas: list[float], seconds: list[float]) -> list[float]:
    """How far each ETA moved beyond the clock's advance, less 10 % of the ETA before it."""
    steps = zip(etas[:-1], etas[1:], seconds[1:], strict=True)
    return [abs(now - (before - dt)) - 0.1 * before for before, now, dt in steps]


def test_a_noisy_rate_moves_the_eta_by_at_most_a_tenth_plus_a_second() -> None:
    rate, smoothed, instant = SmoothedRate(), [], []
    seconds = list(noisy_step_seconds())
    for done, dt in enumerate(seconds, start=1):
        rate.update(BATCH, dt)
        smoothed.append(rate.eta((TOTAL - done) * BATCH) or 0.0)
        instant.append((TOTAL - done) * dt)  # remaining / the rate of this step alone
    assert max(jumps(smoothed, seconds)) <= 1.0
    assert max(jumps(instant, seconds)) > 30.0  # the same steps made the unsmoothed ETA jump by minutes


def test_a_real_change_of_speed_is_followed_within_a_few_time_constants() -> None:
    rate = SmoothedRate()
    for _ in range(100):
        rate.update(100, 0.1)  # 1000/s
    for _ in range(int(3 * TAU_SECONDS / 0.1)):
        rate.update(50, 0.1)  # 500/s for three time constants
    assert rate.rate == pytest.approx(500, rel=0.05)
    assert rate.eta(5000) == pytest.approx(10, rel=0.05) and SmoothedRate().eta(5000) is None


def test_the_trainer_reports_the_smoothed_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = 399  # under 400 steps every step is reported
    seconds = list(noisy_step_seconds(steps))
    clock = iter([0.0, *_cumulative(iter(seconds))])
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))  # the clock StepLog reads
    reporter = ProgressReporter(None, None)
    log = common.StepLog(reporter, SimpleNamespace(attempt=0), 0, steps, BATCH, steps, None)  # type: ignore[arg-type]
    etas = []
    for done in range(1, steps + 1):
        log.after(done, 0.5, {}, None, False)
        etas.append(_field(reporter, "etaSeconds"))
    assert max(jumps(etas, seconds)) <= 1.0 and etas[-1] == 0.0
    curve = [p["samplesPerSecond"] for p in reporter.points if p["kind"] == "train"]
    assert max(curve) / min(curve) > 10  # history keeps the measured rate, progress the smoothed one


def _cumulative(values: Iterator[float]) -> Iterator[float]:
    total = 0.0
    for v in values:
        total += v
        yield total


def _field(reporter: ProgressReporter, name: str) -> Any:
    return reporter.snapshot()[name]


def test_kubeforge_run_shows_the_trainers_eta_not_its_own_estimate() -> None:
    assert eta_text({"step": 72, "totalSteps": 100, "etaSeconds": 3725}) == "ETA 1:02:05"
    assert eta_text({"step": 100, "totalSteps": 100, "etaSeconds": 0}) == ""  # finished: no ETA
    assert eta_text({"step": 1, "totalSteps": 100}) == ""  # before the first measurement


def test_a_steps_train_and_eval_points_are_recorded_at_once() -> None:
    """The operator asks for points after the last step it saw; a poll between a step's train and
    eval points lost that eval point (two of eight epochs were missing from the accuracy curve)."""
    batches: list[list[str]] = []

    class Spy(deque[dict[str, Any]]):
        def extend(self, items: Iterable[dict[str, Any]]) -> None:
            items = list(items)
            batches.append([p["kind"] for p in items])
            super().extend(items)

    reporter = ProgressReporter(None, None)
    reporter.points = Spy(maxlen=10)
    log = common.StepLog(reporter, SimpleNamespace(attempt=0), 0, 4, BATCH, 2, None)  # type: ignore[arg-type]
    log.after(2, 0.5, {"accuracy": 0.9}, None, True)
    assert batches[-1] == ["train", "eval"] and [p["kind"] for p in reporter.since(1)] == ["train", "eval"]
