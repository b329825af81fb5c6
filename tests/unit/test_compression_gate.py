"""The compression gate on typed numbers (no model): a candidate that is not faster, not measurably
faster, below minSpeedup, not smaller or timed implausibly is rejected with the reason in words
('3.12x slower', never '0.32x faster') and `best` never picks it; the timing summary (medians,
quartiles, paired ratios, rounding, re-measuring a session whose batch 1 is slower than its batch 8);
and the compression pod's guaranteed CPU: a request by default, its whole CPUs the timing threads."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from kubeforge_api.compression import (
    Candidate,
    CompressEnv,
    CompressionReason,
    CompressionSpec,
    Latency,
    Measured,
    Rejection,
    Spread,
    Verdict,
    request_threads,
    speed_phrase,
)
from kubeforge_api.trainingjob import TrainingJobSpec
from kubeforge_operator.plan import ObjectRef
from kubeforge_operator.render.trainingjob import render_compression_pod
from kubeforge_trainer.compress import gate, measure
from kubeforge_trainer.compress.entry import threads_for
from pydantic import ValidationError
from torch import nn


def spec(**kw: Any) -> CompressionSpec:
    return CompressionSpec.model_validate({"methods": [{"quantize": {}}], "accuracyBudget": {"maxDrop": 0.01}, **kw})


def cand(speed: float, low: float, high: float, drop: float = 0.0, size: float = 3.9,
         method: str = "quantize-dynamic") -> Candidate:
    lat = Latency(batch1=1.0, batch8=2.0)
    return Candidate(method=method, verdict=Verdict.ACCEPTED, drop=drop, size_ratio=size,
                     speedup=Latency(batch1=speed, batch8=speed, batch1_spread=Spread(low=low, high=high)),
                     measured=Measured(metric=0.95, size_bytes=10, parameters=10, latency_ms=lat))


def test_speed_is_said_in_words() -> None:
    assert speed_phrase(0.32) == "3.12x slower" and speed_phrase(2.677) == "2.68x faster"
    assert speed_phrase(0.059) == "17x slower" and speed_phrase(1.001) == "as fast"
    assert gate.range_phrase(0.31, 0.36) == "2.78-3.23x slower" and gate.range_phrase(0.9, 1.2) == (
        "1.11x slower to 1.2x faster")


@pytest.mark.parametrize(("c", "kw", "rejection", "words"), [
    (cand(0.32, 0.30, 0.35), {}, Rejection.NOT_FASTER, "3.12x slower at batch 1 (quartiles 2.86-3.33x slower)"),
    (cand(1.04, 0.97, 1.10), {}, Rejection.NOT_MEASURABLY_FASTER, "not measurably faster"),
    (cand(1.30, 1.20, 1.40), {"minSpeedup": 1.5}, Rejection.BELOW_MIN_SPEEDUP, "below minSpeedup 1.5"),
    (cand(2.60, 2.50, 2.70, drop=0.05), {}, Rejection.ACCURACY, "drop 0.05 over the budget 0.01"),
    (cand(0.32, 0.30, 0.35, size=1.0), {"objective": "size"}, Rejection.NOT_SMALLER, "weights not smaller"),
    (cand(2.60, 2.50, 2.70), {}, None, "2.6x faster at batch 1 (quartiles 2.5-2.7x faster), 3.9x smaller"),
    (cand(0.32, 0.30, 0.35), {"objective": "size"}, None, "3.9x smaller, 3.12x slower at batch 1"),
])
def test_the_gate_judges_by_the_objective(c: Candidate, kw: dict[str, Any], rejection: Rejection | None,
                                         words: str) -> None:
    judged = gate.judge(c, spec(**kw))
    assert judged.rejection == rejection and (judged.verdict == Verdict.ACCEPTED) == (rejection is None)
    assert judged.note and words in judged.note and "0.32x" not in judged.note, judged.note


def test_implausible_timings_and_a_slow_back_end_are_said() -> None:
    judged = gate.judge(cand(2.6, 2.5, 2.7), spec(), timing_invalid=True, warning="the int8 back end torchao is slow")
    assert judged.rejection == Rejection.MEASUREMENT_INVALID and judged.note
    assert judged.note.endswith("; the int8 back end torchao is slow")
    assert gate.outcome([judged], None, "accuracy")[0] == CompressionReason.MEASUREMENT_INVALID


def test_best_never_publishes_a_slower_candidate_and_the_outcome_names_why() -> None:
    s = spec(select="best")
    cands = [gate.judge(c, s) for c in (cand(0.32, 0.3, 0.35), cand(1.8, 1.7, 1.9, method="prune-structured"),
                                         cand(2.4, 2.3, 2.5, method="distill"))]
    assert gate.choose(s, cands) == 2
    reason, message = gate.outcome(cands, 2, "accuracy")
    assert reason == CompressionReason.COMPRESSED and message.startswith("distill: accuracy 0.95 (drop 0), 2.4x faster")
    slow = [cands[0]]
    reason, message = gate.outcome(slow, gate.choose(s, slow), "accuracy")
    assert reason == CompressionReason.NOT_FASTER and "quantize-dynamic: 3.12x slower at batch 1" in message
    by_size = spec(select="best", objective="size")
    sized = [gate.judge(cand(0.5, 0.4, 0.6, size=s_), by_size) for s_ in (2.0, 3.9, 1.0)]
    assert gate.choose(by_size, sized) == 1 and sized[2].rejection == Rejection.NOT_SMALLER
    over = [gate.judge(cand(2.0, 1.9, 2.1, drop=0.3), spec())]
    assert gate.outcome(over, None, "accuracy")[0] == CompressionReason.ACCURACY_BUDGET_EXCEEDED


def test_min_speedup_is_bounded_and_belongs_to_objective_latency() -> None:
    assert spec().objective == "latency" and spec().min_speedup == 1.0
    assert spec(objective="size").min_speedup == 1.0
    for bad in ({"minSpeedup": 0.5}, {"objective": "speed"}, {"objective": "size", "minSpeedup": 2}):
        with pytest.raises(ValidationError):
            spec(**bad)


def test_timings_are_summarized_as_medians_with_quartiles_rounded() -> None:
    base = {1: [0.1000123456789, 0.12, 0.11, 0.5, 0.105], 8: [0.4, 0.41, 0.42, 0.43, 0.44]}
    other = {1: [0.2, 0.24, 0.22, 0.25, 0.21], 8: [0.1, 0.1, 0.1, 0.1, 0.1]}
    lat = measure.latency(base)
    assert lat.batch1 == 0.11 and lat.batch1_spread == Spread(low=0.105, high=0.12)
    speed = measure.speedup(base, other)  # round by round: 0.5, 0.5, 0.5, 2.0, 0.5
    assert speed.batch1 == 0.5 and speed.batch1_spread == Spread(low=0.5, high=0.5) and speed.batch8 == 4.2
    assert not measure.implausible(base) and measure.implausible(other)


class Work(nn.Module):
    """Takes time in proportion to the batch, like a model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.0002 * len(x))
        return x


class Disturbed(Work):
    """Batch 1 made slower than batch 8 for the first `sessions` measurements (a busy machine)."""

    def __init__(self, sessions: int) -> None:
        super().__init__()
        self.disturbed = sessions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == 1 and self.disturbed > 0:
            time.sleep(0.004)
        return super().forward(x)


class _Data:
    x_eval = torch.zeros(16, 4)


def test_a_session_whose_batch1_is_slower_than_batch8_is_measured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    once, always = Disturbed(1), Disturbed(10)
    real = measure.latencies

    def counting(models: Any, data: Any, rounds: int = 7, target_ms: float = 30.0) -> list[measure.Samples]:
        out = real(models, data, rounds, target_ms=5.0)
        once.disturbed -= 1
        return out

    monkeypatch.setattr(measure, "latencies", counting)
    s = measure.session([Work(), once], _Data(), rounds=3)  # type: ignore[arg-type]
    assert s.attempts == 2 and s.invalid == []
    s = measure.session([Work(), always], _Data(), rounds=3)  # type: ignore[arg-type]
    assert s.attempts == 1 + measure.RETRIES and s.invalid == [1]


JOB: dict[str, Any] = {"recipe": {"model": "mlp", "dataset": "digits"},
                       "storage": {"persistentVolumeClaim": {"claimName": "d"}},
                       "compression": {"methods": [{"quantize": {}}]}}


def pod(resources: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = {**JOB, "compression": {**JOB["compression"], **({"resources": resources} if resources else {})}}
    return render_compression_pod(ObjectRef("j", "ns", "u", 1), TrainingJobSpec.model_validate(doc), 1, "img", "1Gi")


def test_the_compression_pod_requests_a_whole_cpu_and_times_with_the_cpus_it_requests() -> None:
    def threads(p: dict[str, Any]) -> str:
        [value] = [e["value"] for e in p["spec"]["containers"][0]["env"] if e["name"] == CompressEnv.THREADS]
        return str(value)

    default = pod()
    assert default["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "1"}} and threads(default) == "1"
    limited = pod({"limits": {"cpu": "2", "memory": "1Gi"}})  # a limit alone is also the request
    assert limited["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"},
                                                             "requests": {"cpu": "2"}} and threads(limited) == "2"
    memory = pod({"requests": {"memory": "1Gi"}})
    assert memory["spec"]["containers"][0]["resources"] == {"requests": {"memory": "1Gi", "cpu": "1"}}
    assert threads(pod({"requests": {"cpu": "1500m"}, "limits": {"cpu": "4"}})) == "1"
    assert [request_threads(q) for q in ("500m", "2", 3, "2.5", "bogus")] == [1, 2, 3, 2, 1]


def test_timing_threads_are_the_guaranteed_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubeforge_trainer.compress import entry

    monkeypatch.setattr(entry, "available_cpus", lambda env: 8)
    key = CompressEnv.THREADS
    assert threads_for(None, {}) == 8  # outside a pod nothing is requested: the usable CPUs
    assert threads_for(None, {key: "2"}) == 2 and threads_for(3, {key: "2"}) == 3
    assert threads_for(None, {key: "16"}) == 8 and threads_for(None, {key: "x"}) == 8
