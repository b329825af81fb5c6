"""Autoscaling a ServingJob on a language model's own load: the pure recommendation (the HPA's ratio,
tolerance and clamping), the stabilization windows over the recommendations kept in status, the
gauge read from a server's /metrics trusting nothing, whole passes of `decide` (no HPA, the
Deployment's replicas set, a restart losing nothing, the canary's share), and `spec.llm` reaching the
server's environment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubeforge_api.server_settings import ServerSettings, kv_cache_budget, memory_bytes
from kubeforge_api.servingjob import (
    Autoscaling,
    AutoscalingMetric,
    AutoscalingStatus,
    Recommendation,
    ServingJobSpec,
)
from kubeforge_operator.plan import Plan, World, ts
from kubeforge_operator.servingjob.context import Config, ServingProbe
from kubeforge_operator.servingjob.decide import decide
from kubeforge_operator.servingjob.load import judge_load
from kubeforge_operator.servingjob.scaling import recommend, remember, stabilized

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CFG = Config("img", autoscaling_sync_seconds=5.0)
WAITING = AutoscalingMetric.WAITING_REQUESTS
KV = AutoscalingMetric.KV_CACHE_USAGE


def scaling(**fields: Any) -> Autoscaling:
    return Autoscaling.model_validate({"maxReplicas": 5, "metric": "waitingRequests", "targetWaitingRequests": 2,
                                       **fields})


def recs(*points: tuple[int, int]) -> list[Recommendation]:
    """Recommendations at (seconds before NOW, replicas)."""
    return [Recommendation(time=ts(NOW - timedelta(seconds=s)), replicas=r) for s, r in points]


# ---------- the recommendation ----------

@pytest.mark.parametrize(("values", "current", "want"), [
    ((4.0,), 1, 2),  # twice the target on one server: two
    ((4.0, 3.0), 2, 4),  # ceil(2 x 3.5 / 2)
    ((2.1,), 1, 1),  # within 10 % of the target: unchanged
    ((2.2,), 3, 3),  # within the tolerance however many run
    ((2.3,), 1, 2),  # just beyond it
    ((0.0, 0.0), 3, 1),  # idle: down to minReplicas
    ((100.0,), 1, 5),  # clamped to maxReplicas
    ((), 3, 3),  # no reading: no change
])
def test_the_recommendation_is_the_hpas_ratio_with_tolerance_and_clamping(
        values: tuple[float, ...], current: int, want: int) -> None:
    assert recommend(scaling(), values, current) == want


def test_kv_cache_usage_is_compared_as_a_share_of_the_target_percent() -> None:
    a = scaling(metric="kvCacheUsage", targetKVCacheUsagePercent=50)
    assert a.target == 0.5
    assert recommend(a, (0.9, 0.9), 2) == 4 and recommend(a, (0.5,), 1) == 1


def test_minimum_replicas_bound_the_recommendation_from_below() -> None:
    assert recommend(scaling(minReplicas=2), (0.0,), 4) == 2


# ---------- stabilization ----------

def test_scale_down_waits_for_the_highest_recommendation_of_the_window_to_leave_it() -> None:
    a = scaling(scaleDownStabilizationSeconds=30)
    history = recs((40, 1), (20, 3), (5, 1))
    assert stabilized(a, history, NOW, 3) == 3  # 3 was recommended 20 s ago: still in the window
    assert stabilized(a, history, NOW + timedelta(seconds=24), 3) == 3  # 3 held until 5 s before NOW
    assert stabilized(a, history, NOW + timedelta(seconds=26), 3) == 1


def test_the_recommendation_in_force_when_the_window_began_counts() -> None:
    a = scaling(scaleDownStabilizationSeconds=30)
    assert stabilized(a, recs((100, 4), (10, 1)), NOW, 4) == 4  # 4 held until 10 s ago


def test_scale_up_goes_to_the_lowest_recommendation_of_its_window() -> None:
    a = scaling(scaleUpStabilizationSeconds=30, scaleDownStabilizationSeconds=0)
    assert stabilized(a, recs((60, 1), (20, 4), (10, 3)), NOW, 1) == 1  # 1 was in force when the window began
    assert stabilized(a, recs((30, 1), (20, 4), (10, 3)), NOW, 1) == 1  # held until 20 s ago
    assert stabilized(a, recs((20, 4), (10, 3)), NOW, 1) == 3


def test_without_an_up_window_the_latest_recommendation_scales_up_at_once() -> None:
    assert stabilized(scaling(), recs((100, 1), (0, 4)), NOW, 1) == 4


def test_recommendations_are_kept_only_on_change_and_while_a_window_needs_them() -> None:
    a = scaling(scaleDownStabilizationSeconds=30)
    kept = remember(a, recs((100, 1), (50, 2), (20, 3)), NOW, 3)
    assert [(r.replicas, r.time) for r in kept] == [(2, ts(NOW - timedelta(seconds=50))),
                                                    (3, ts(NOW - timedelta(seconds=20)))]
    assert len(remember(a, recs(*((i, i % 2 + 1) for i in range(29, -1, -1))), NOW, 3)) <= 32


# ---------- what a server's /metrics says ----------

GOOD = (b"# HELP kubeforge:num_requests_waiting Requests waiting\n# TYPE kubeforge:num_requests_waiting gauge\n"
        b'kubeforge:num_requests_waiting{model_name="chat"} 3.0\n'
        b'kubeforge:num_requests_waiting_other{model_name="chat"} 99.0\n'
        b'kubeforge:kv_cache_usage_perc{model_name="chat"} 0.25\n')


def test_the_gauge_of_the_served_model_is_read() -> None:
    assert judge_load(GOOD, WAITING, "chat") == 3.0
    assert judge_load(GOOD, KV, "chat") == 0.25


@pytest.mark.parametrize(("body", "metric", "problem"), [
    (b'kubeforge:num_requests_waiting{model_name="chat"} NaN\n', WAITING, "no server can"),
    (b'kubeforge:num_requests_waiting{model_name="chat"} -1\n', WAITING, "no server can"),
    (b'kubeforge:num_requests_waiting{model_name="chat"} +Inf\n', WAITING, "no server can"),
    (b'kubeforge:num_requests_waiting{model_name="chat"} 1e12\n', WAITING, "no server can"),
    (b'kubeforge:kv_cache_usage_perc{model_name="chat"} 1.5\n', KV, "no server can"),
    (b'kubeforge:num_requests_waiting{model_name="other"} 1\n', WAITING, "does not report"),
    (b"kubeforge_inference_queue_depth 3\n", WAITING, "does not report"),
    (b'kubeforge:num_requests_waiting{model_name="chat"} 1\n' * 2, WAITING, "2 times"),
    (b'kubeforge:num_requests_waiting{model_name="chat"} 1\n' * 17, WAITING, "17 lines"),
    (b'kubeforge:num_requests_waiting{model_name="chat" 1\n', WAITING, "does not parse"),
    (b"kubeforge:num_requests_waiting lots\n", WAITING, "does not parse"),
    (b"\xff\xfe\x00", WAITING, "not UTF-8"),
])
def test_a_hostile_answer_is_a_problem_in_words_never_a_value(body: bytes, metric: AutoscalingMetric,
                                                              problem: str) -> None:
    judged = judge_load(body, metric, "chat")
    assert isinstance(judged, str) and problem in judged, judged


# ---------- whole passes ----------

def serving(autoscaling: Obj | None = None, status: Obj | None = None, **spec: Any) -> Obj:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "ServingJob",
            "metadata": {"name": "chat", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": {"model": {"uri": "pvc://models/llm"}, "autoscaling": {
                "minReplicas": 1, "maxReplicas": 3, "metric": "waitingRequests", "targetWaitingRequests": 1,
                "scaleDownStabilizationSeconds": 10, **(autoscaling or {})}, **spec},
            "status": status or {}}


def children(plan: Plan, replicas: int) -> dict[str, list[Obj]]:
    """The children a pass rendered, as the watch shows them, `replicas` of them ready."""
    out: dict[str, list[Obj]] = {}
    for obj in [*plan.create, *plan.update]:
        seen = {**obj, "metadata": {**obj["metadata"], "uid": f"uid-{obj['metadata']['name']}"}}
        if obj["kind"] == "Deployment":
            seen["status"] = {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas}
        out.setdefault(obj["kind"], []).append(seen)
    return out


def pass_(job: Obj, at: datetime, load: tuple[float, ...] | None, kids: dict[str, list[Obj]] | None = None,
          warning: str | None = None) -> Plan:
    return decide(World(job, kids or {}, frozenset(), at, probe=ServingProbe({}, load, warning)), CFG)


def replicas(plan: Plan, name: str = "chat") -> int:
    dep = next(o for o in [*plan.create, *plan.update] if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
    return int(dep["spec"]["replicas"])


def test_waiting_requests_add_a_replica_at_once_and_remove_it_after_the_down_window() -> None:
    first = pass_(serving(), NOW, (0.0,))
    assert replicas(first) == 1 and not any(o["kind"] == "HorizontalPodAutoscaler" for o in first.create)
    assert first.requeue_after == 5.0
    kids = children(first, 1)
    busy = pass_(serving(status=first.status), NOW + timedelta(seconds=5), (3.0,), kids)
    assert replicas(busy) == 3 and busy.status["autoscaling"]["desiredReplicas"] == 3
    assert busy.status["autoscaling"]["current"] == 3.0
    assert [(e.reason, e.message) for e in busy.events if e.reason != "ModelLoaded"] == [
        ("SuccessfulRescale", "New size: 3 (was 1); waitingRequests 3 per replica, target 1")]
    kids = children(busy, 3)
    idle = pass_(serving(status=busy.status), NOW + timedelta(seconds=10), (0.0, 0.0, 0.0), kids)
    assert not idle.update and idle.status["autoscaling"]["desiredReplicas"] == 3  # the window holds it
    later = pass_(serving(status=idle.status), NOW + timedelta(seconds=21), None, kids)
    assert replicas(later) == 1 and later.status["autoscaling"]["lastScaleTime"] == ts(NOW + timedelta(seconds=21))


def test_a_restarted_operator_decides_from_the_status_alone() -> None:
    first = pass_(serving(), NOW, (3.0,))
    assert first.status["autoscaling"]["desiredReplicas"] == 3
    kids = children(first, 3)
    # A new process: no memory but the status. Idle now, and still within the window: 3 stay.
    again = pass_(serving(status=first.status), NOW + timedelta(seconds=4), (0.0,), kids)
    assert again.status["autoscaling"]["desiredReplicas"] == 3 and not again.update
    assert [r["replicas"] for r in again.status["autoscaling"]["recommendations"]] == [3, 1]
    AutoscalingStatus.model_validate(again.status["autoscaling"])


def test_an_unchanged_load_writes_nothing() -> None:
    first = pass_(serving(), NOW, (0.0,))
    kids = children(first, 1)
    settled = pass_(serving(status=first.status), NOW + timedelta(seconds=5), (0.0,), kids)
    again = pass_(serving(status=settled.status), NOW + timedelta(seconds=10), (0.0,), kids)
    assert again.status == settled.status and not again.create and not again.update and not again.events


def test_a_misbehaving_server_is_a_warning_and_no_reading_changes_nothing() -> None:
    first = pass_(serving(), NOW, (2.0,))
    plan = pass_(serving(status=first.status), NOW + timedelta(seconds=5), (), children(first, 2),
                 warning="the metrics endpoint of pod chat-x answered a redirect")
    assert ("Warning", "MetricsEndpointMisbehaving") in [(e.type, e.reason) for e in plan.events]
    assert plan.status["autoscaling"]["desiredReplicas"] == 2 and "current" not in plan.status["autoscaling"]


def test_cpu_autoscaling_keeps_its_hpa_and_a_server_metric_replaces_it() -> None:
    cpu = pass_(serving({"metric": "cpu"}), NOW, None)
    hpa = next(o for o in cpu.create if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["behavior"]["scaleUp"] == {"stabilizationWindowSeconds": 0}
    assert "replicas" not in next(o for o in cpu.create if o["kind"] == "Deployment")["spec"]
    assert "autoscaling" not in cpu.status
    switched = pass_(serving(status=cpu.status), NOW + timedelta(seconds=1), (0.0,), children(cpu, 2))
    assert [c.kind for c in switched.delete] == ["HorizontalPodAutoscaler"]
    assert switched.status["autoscaling"]["desiredReplicas"] == 1  # 0 replicas observed: from minReplicas


def test_the_canary_gets_its_share_of_the_scaled_count() -> None:
    job = serving(canary={"model": {"uri": "pvc://models/next"}, "trafficPercent": 50})
    plan = pass_(job, NOW, (1.0, 3.0))
    assert plan.status["autoscaling"]["desiredReplicas"] == 3
    assert (replicas(plan), replicas(plan, "chat-canary")) == (1, 2)


def test_a_suspended_job_drops_its_autoscaling_status_and_holds_no_servers() -> None:
    first = pass_(serving(), NOW, (3.0,))
    plan = pass_(serving(status=first.status, suspend=True), NOW, None, children(first, 3))
    assert "autoscaling" not in plan.status and replicas(plan) == 0 and plan.requeue_after is None


# ---------- spec.llm in the server's environment ----------

def test_spec_llm_reaches_the_server_and_the_kv_budget_defaults_to_a_quarter_of_the_memory_limit() -> None:
    spec = ServingJobSpec.model_validate({"model": {"uri": "pvc://m/x"}, "resources": {"limits": {"memory": "2Gi"}},
                                          "llm": {"kvBlockTokens": 32, "maxRunningRequests": 1, "stepTokens": 64,
                                                  "maxWaitingRequests": 7, "prefixCaching": False}})
    s = ServerSettings.from_env(ServerSettings.for_spec("chat", spec).to_env())
    assert (s.kv_cache_bytes, s.kv_block_tokens, s.llm_max_running, s.llm_step_tokens, s.llm_max_waiting,
            s.prefix_caching) == (512 * 2**20, 32, 1, 64, 7, False)
    explicit = spec.model_copy(update={"llm": spec.llm.model_copy(update={"kv_cache_bytes": 4096})})
    assert kv_cache_budget(explicit) == 4096
    assert kv_cache_budget(ServingJobSpec.model_validate({"model": {"uri": "pvc://m/x"}})) == 0  # the server decides
    gpu = {"model": {"uri": "pvc://m/x"}, "resources": {"limits": {"memory": "8Gi", "nvidia.com/gpu": 1}}}
    assert kv_cache_budget(ServingJobSpec.model_validate(gpu)) == 0  # the cache lives in GPU memory


@pytest.mark.parametrize(("quantity", "size"), [
    ("1Gi", 2**30), ("500M", 500 * 10**6), ("1e3", 1000), (4096, 4096), ("1.5Ki", 1536), (None, 0), ("x", 0)])
def test_memory_quantities_in_bytes(quantity: int | str | None, size: int) -> None:
    assert memory_bytes(quantity) == size
