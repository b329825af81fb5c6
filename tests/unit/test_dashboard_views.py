"""The dashboard's pure view models over the typed API models: overview rows, filters and sorting,
the training page's timeline, pods and curves, the compression comparison from the typed status, the
serving tracks and the cluster's usage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dashboard_world as w
import pytest
from kubeforge_api.trainingjob import CompressionStatus
from kubeforge_dashboard.views import cluster, compression, overview, serving, training

NOW = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)


def rows_by_name() -> dict[str, overview.JobRow]:
    return {r.name: r for r in overview.rows(w.training_jobs(), [w.serving_job()], NOW)}


def test_overview_rows_say_state_progress_eta_and_why_a_job_is_unhealthy() -> None:
    rows = rows_by_name()
    running = rows["digits-running"]
    assert (running.state, running.progress, running.eta, running.size, running.age) == (
        "Running", 0.3, "1m 35s", "2 pods", "1h 0m")
    assert running.reason == "" and running.link == "training?ns=ml&name=digits-running"
    pending = rows["big-pending"]
    assert pending.state == "Pending" and pending.reason.startswith("Unschedulable: pod big-pending-node-0: 0/1 nodes")
    assert "Insufficient nvidia.com/gpu" in pending.reason
    failed = rows["broken"]
    assert failed.badge == "🔴 Failed" and failed.restarts == 3
    assert failed.reason.startswith("BackoffLimitExceeded: 3 counted failures")
    assert failed.reason.endswith("(exit code 3 in pod broken-node-1)")
    assert rows["digits-q"].progress == 1.0 and rows["digits-q"].reason == ""
    assert rows["just-created"].state == "Pending" and rows["just-created"].reason == "waiting for the operator"
    sj = rows["digits-serving"]
    assert (sj.kind, sj.state, sj.size, sj.progress) == ("ServingJob", "Ready", "2/2 replicas + 1 canary", 1.0)
    assert sj.link == "serving?ns=ml&name=digits-serving"


def test_overview_filters_sorts_and_counts() -> None:
    rows = list(rows_by_name().values())
    assert [r.name for r in overview.filtered(rows, "GPU")] == ["big-pending"]  # matches the reason, any case
    assert {r.name for r in overview.filtered(rows, states=frozenset({"Running"}))} == {"digits-running",
                                                                                        "oom-restarted"}
    assert [r.name for r in overview.filtered(rows, kinds=frozenset({overview.SERVING}))] == ["digits-serving"]
    assert overview.sort(rows, "restarts", descending=True)[0].name == "broken"
    assert overview.sort(rows, "progress", descending=True)[0].progress == 1.0
    assert [r.name for r in overview.sort(rows, "name")][:2] == ["big-pending", "broken"]
    assert overview.counts(rows)["Running"] == 2 and overview.counts(rows)["Succeeded"] == 2
    with pytest.raises(ValueError, match="unknown sort key"):
        overview.sort(rows, "colour")


def test_serving_state_follows_ready_and_degraded() -> None:
    sj = w.serving_job()
    assert overview.serving_state(sj) == ("Ready", "")
    st = sj.status
    assert st is not None
    degraded = st.model_copy(update={"conditions": [
        w.cond_model("Ready", "True", "ModelLoaded", "", 1),
        w.cond_model("Degraded", "True", "ModelNotFound", "pvc://models/runs/nothing has no model-card.json", 2)]})
    state, reason = overview.serving_state(sj.model_copy(update={"status": degraded}))
    assert state == "Degraded" and reason == "ModelNotFound: pvc://models/runs/nothing has no model-card.json"
    waiting = st.model_copy(update={"conditions": [w.cond_model("Ready", "False", "ModelNotReady",
                                                                "TrainingJob digits-q has not succeeded", 1)]})
    assert overview.serving_state(sj.model_copy(update={"status": waiting})) == (
        "NotReady", "ModelNotReady: TrainingJob digits-q has not succeeded")


def test_training_timeline_pods_curves_and_failure() -> None:
    jobs = {j.metadata.name: j for j in w.training_jobs()}
    done = jobs["digits-q"]
    events = [r.event for r in training.timeline(done.status)]
    assert events == ["Started", "Completed", "Running", "Succeeded"]
    curves = training.curves(done.status)
    assert set(curves) == {"Loss", "Eval metric", "Samples per second"}
    assert {p.series for p in curves["Loss"]} == {"loss", "evalLoss"} and len(curves["Loss"]) == 40 + 10
    assert training.curves(jobs["just-created"].status) == {} and training.timeline(None) == []
    pods = {r.name: r for r in training.pod_rows(w.pods())}
    assert (pods["oom-restarted-node-0"].restarts, pods["oom-restarted-node-0"].last_exit_code,
            pods["oom-restarted-node-0"].reason) == (1, 137, "OOMKilled")
    assert (pods["broken-node-1"].phase, pods["broken-node-1"].last_exit_code) == ("Failed", 3)
    assert "Insufficient nvidia.com/gpu" in pods["big-pending-node-0"].message
    assert training.failure_line(jobs["broken"].status) == "Error: exit code 3 in pod broken-node-1, container trainer"
    assert training.failure_message(jobs["broken"].status) == "ValueError: bad learning rate"
    assert training.progress_line(jobs["digits-running"].status) == (
        "step 120 of 400, 30.0%, epoch 2, loss 0.4213, eval accuracy 0.88, 912 samples/s, ETA 1m 35s")
    assert training.progress_line(None) == "no progress reported yet"
    art = dict(training.artifact_rows(done, [w.serving_job()]))
    assert art["Digest"] == w.DIGEST and art["Served by"] == "digits-serving" and art["Size"] == "41.0 KiB"
    assert training.artifact_rows(jobs["digits-running"], []) == []


def view_of(status: dict[str, Any] | None) -> compression.CompressionView | None:
    return compression.compression_view(None if status is None else CompressionStatus.model_validate(status))


def test_compression_report_compares_candidates_with_the_baseline() -> None:
    view = view_of(w.report(accepted=True))
    assert view is not None and view.compressed
    assert view.verdict.startswith("Compressed: quantize-dynamic published")
    base, quant, prune = view.rows
    assert (base.metric, base.size, base.speedup, base.verdict) == ("0.955", "41.0 KiB", "as fast", "baseline")
    assert (quant.metric, quant.drop, quant.size, quant.speedup, quant.verdict, quant.note) == (
        "0.951", "+0.004", "10.7 KiB", "2x faster", "✅ accepted", "mode=dynamic, backend=eager")
    assert prune.verdict == "❌ rejected" and view.budget == "max drop 0.01"
    assert dict(view.artifact) == {"URI": "pvc://models/runs/digits-q/compressed/quantize-dynamic",
                                   "Digest": w.DIGEST, "Size": "10.7 KiB"}
    rejected = view_of(w.report(accepted=False))
    assert rejected is not None and not rejected.compressed and not rejected.artifact
    assert rejected.verdict.startswith("Not compressed (AccuracyBudgetExceeded)")


def test_compression_while_running_and_when_sparse() -> None:
    assert view_of(None) is None
    running = view_of({"attempts": 2})
    assert running is not None and running.verdict == "Compression running (attempt 2)" and not running.rows
    failed = view_of({"attempts": 3, "compressed": False, "reason": "CompressionFailed",
                      "message": "pod demo-compress-0 ended without a readable compression report"})
    assert failed is not None and [r.method for r in failed.rows] == ["baseline (trained model)"]
    assert failed.verdict == ("Not compressed (CompressionFailed): the original model stays the artifact. "
                              "pod demo-compress-0 ended without a readable compression report")
    # speed-up from the latencies when the summary was shed of it (the 4 KiB termination message)
    summary = {"compressed": True, "reason": "Compressed", "message": "", "chosen": "prune-structured",
               "baseline": {"metric": 0.9, "latencyMs": {"batch1": 1.0, "batch8": 4.0}},
               "candidates": [{"method": "prune-structured", "verdict": "accepted", "metric": 0.89, "drop": 0.01,
                               "sizeBytes": 2048, "latencyMs": {"batch1": 0.5, "batch8": 2.0}}]}
    view = view_of(summary)
    assert view is not None and view.verdict == "Compressed: prune-structured published"
    assert (view.rows[1].metric, view.rows[1].size, view.rows[1].latency_ms, view.rows[1].speedup) == (
        "0.89", "2.0 KiB", "0.5", "2x faster")


def test_serving_tracks_lineage_and_canary_split() -> None:
    sj = w.serving_job()
    main, canary = serving.tracks(sj)
    assert (main.track, main.traffic_percent, main.replicas, main.training_job) == ("main", 80, "2/2", "digits-q")
    assert (canary.track, canary.traffic_percent, canary.replicas, canary.training_job) == (
        "canary", 20, "1/1", "digits-strict")
    assert serving.lineage_links(sj) == [("main: TrainingJob digits-q", ("ml", "digits-q")),
                                         ("canary: TrainingJob digits-strict", ("ml", "digits-strict"))]
    pods = w.pods("10.0.0.5", 8080)
    assert [p.name for p in serving.server_pods(pods, "canary")] == ["digits-serving-canary-5c4b-fghij"]
    waiting = sj.model_copy(update={"status": None})
    assert serving.tracks(waiting)[0].model == "waiting for TrainingJob digits-q (best)"


def test_the_header_shows_the_replicas_the_operator_decided_when_it_scales_on_a_metric() -> None:
    fixed = w.serving_job()
    assert serving.header(fixed).replicas == "2 ready of 2 (desired 2)"
    body = fixed.model_dump(by_alias=True, exclude_none=True)
    body["spec"] = {**body["spec"], "replicas": None,
                    "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "metric": "waitingRequests"}}
    body["status"]["autoscaling"] = {"metric": "waitingRequests", "current": 6.0, "desiredReplicas": 3}
    scaled = type(fixed).model_validate(body)
    assert serving.header(scaled).replicas == "2 ready of 2 (desired 3)"


def test_cluster_usage_counts_only_live_kubeforge_pods() -> None:
    src = w.world()
    (row,) = cluster.node_rows(src.node_list, src.pod_list)
    # 5 running pods on kf-node request 1 CPU each; the pending one has no node, the failed one holds nothing
    assert (row.node, row.cpu_requested, row.pods, row.gpus_requested) == ("kf-node", "5 / 32", 5, "0 / 1")
    assert row.cpu_requested_share == pytest.approx(5 / 32) and row.memory_requested == "10.0 GiB / 64.0 GiB"
    assert (row.cpu_in_use, row.cpu_in_use_share) == ("n/a", None)  # without metrics nothing is "in use"
    (measured,) = cluster.node_rows(src.node_list, src.pod_list, w.usage())
    assert (measured.cpu_in_use, measured.memory_in_use) == ("7.25 / 32", "12.0 GiB / 64.0 GiB")
    assert measured.cpu_in_use_share == pytest.approx(7.25 / 32)
    jobs = {r["job"]: r for r in cluster.job_rows(src.pod_list)}
    assert jobs["digits-running"]["pods"] == 2 and jobs["digits-serving"]["kind"] == "ServingJob"
    assert "broken" not in jobs and jobs["digits-running"]["cpu in use"] == "n/a"
    assert cluster.in_use(src.node_list, None) is None


@pytest.mark.parametrize("text", [w.PAYLOAD, w.BANNER, "C:\\path\\to [x]", "a `b` **c** _d_ ~e~ | f | <g> &amp;",
                                  "1. one\n- two\n> three", "www.evil.example and http://evil.example/x"])
def test_plain_markdown_shows_the_text_literally(text: str) -> None:
    from html import escape

    from kubeforge_dashboard.ui import plain

    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark").render(plain(text))
    assert html == f"<p>{escape(' '.join(text.split()), quote=False)}</p>\n"


def test_serving_history_keeps_a_bounded_series_per_job() -> None:
    from kubeforge_dashboard.history import ServingHistory
    from kubeforge_dashboard.metrics import Scrape

    def scrape(t: float, requests: float, slow: float = 0.0) -> Scrape:
        return Scrape(t, requests, 0.0, ((0.01, requests - slow), (0.1, requests), (float("inf"), requests)), requests)

    h = ServingHistory(points=3, jobs=2, min_interval=1.0)
    view, points = h.add("ml/a", scrape(100.0, 10))
    assert view.rate_per_second is None and points == []
    h.add("ml/a", scrape(100.5, 12))  # too soon after the last: no point, and the interval keeps its start
    view, points = h.add("ml/a", scrape(110.0, 30, slow=20))
    assert view.rate_per_second == pytest.approx(2.0) and len(points) == 1
    assert points[0].requests_per_second == pytest.approx(2.0) and 10 < (points[0].p50_ms or 0) <= 100
    for i in range(5):
        h.add("ml/a", scrape(120.0 + 10 * i, 30))  # idle intervals: a rate of 0, no latency
    points = h.series("ml/a")
    assert len(points) == 3 and points[-1].requests_per_second == 0 and points[-1].p50_ms is None
    view, points = h.add("ml/a", scrape(200.0, 5))  # counters went back: the replica restarted
    assert view.rate_per_second is None and len(points) == 3  # no interval to measure; the past stays true
    h.add("ml/b", scrape(1.0, 1))
    h.add("ml/c", scrape(1.0, 1))  # a third job: the one updated longest ago goes
    assert h.series("ml/a") == [] and h.add("ml/a", scrape(300.0, 9))[0].rate_per_second is None


def test_serving_history_rows_for_the_charts() -> None:
    from kubeforge_dashboard.history import Point

    rates, latency = serving.history_rows([Point(0.0, 2.0, 0.5, 4.0, 9.0), Point(5.0, 0.0, 0.0, None, None)])
    assert [(r["series"], r["value"]) for r in rates] == [("requests/s", 2.0), ("5xx/s", 0.5), ("requests/s", 0.0),
                                                          ("5xx/s", 0.0)]
    assert [(r["series"], r["value"]) for r in latency] == [("p50", 4.0), ("p99", 9.0)]


def test_a_job_has_finished_only_in_a_terminal_state() -> None:
    jobs = {j.metadata.name: j for j in w.training_jobs()}
    assert [n for n, j in jobs.items() if training.finished(j.status)] == ["broken", "digits-q", "digits-strict"]
