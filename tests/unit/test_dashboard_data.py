"""The dashboard's data layer without a cluster: Kubernetes objects to records, quantities, the
Prometheus reduction (rates and percentiles as Prometheus computes them), the short-lived cache,
the local-runs source over real run records, settings and the inference form's parsing."""

from __future__ import annotations

import json
from pathlib import Path

import dashboard_world as w
import pytest
from kubeforge_api.contracts import RunRecord
from kubeforge_api.inference import InferenceResponse, ModelMetadata
from kubeforge_dashboard import metrics, servers
from kubeforge_dashboard.cache import CachingSource
from kubeforge_dashboard.kubeobjects import event_info, matches, node_info, parse_all, pod_info, quantity
from kubeforge_dashboard.local import LOCAL_NAMESPACE, LocalRunsSource
from kubeforge_dashboard.memory import MemorySource
from kubeforge_dashboard.settings import DashboardSettings, SourceKind, make_source
from kubeforge_dashboard.source import ErrorKind, Resources, SourceError
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


def test_quantities() -> None:
    assert [quantity(q) for q in ("500m", "2", 4, "1Gi", "1e3", "1.5k", "bogus", "3Zz")] == [
        0.5, 2, 4, 2**30, 1000, 1500, 0, 0]


def test_pod_after_an_oom_restart_and_a_pending_pod() -> None:
    p = pod_info({
        "metadata": {"name": "j-node-0", "namespace": "ml", "labels": {"a": "b"}, "creationTimestamp": w.T0},
        "spec": {"nodeName": "kf-node", "containers": [{"name": "trainer", "ports": [{"containerPort": 29400}],
                                                       "resources": {"limits": {"cpu": "2", "memory": "1Gi"},
                                                                     "requests": {"cpu": "500m"}}}]},
        "status": {"phase": "Running", "podIP": "10.1.0.4", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "trainer", "ready": True, "restartCount": 2,
                                          "state": {"running": {}},
                                          "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}})
    assert (p.ready, p.ip, p.port, p.restarts, p.requests.cpu_m, p.requests.memory) == (
        True, "10.1.0.4", 29400, 2, 500, 2**30)
    assert (p.containers[0].last_exit_code, p.containers[0].last_reason) == (137, "OOMKilled")
    pending = pod_info({"metadata": {"name": "x"}, "spec": {}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "message": "0/1 nodes are available"}]}})
    assert (pending.phase, pending.message, pending.node) == ("Pending", "0/1 nodes are available", "")


def test_resource_metrics_as_usage() -> None:
    from kubeforge_dashboard.kubeobjects import usage_of

    nodes = [{"metadata": {"name": "kf-node"}, "usage": {"cpu": "1523456789n", "memory": "2097152Ki"}}]
    pods = [{"metadata": {"name": "p", "namespace": "ml"},
             "containers": [{"usage": {"cpu": "250m", "memory": "1Mi"}}, {"usage": {"cpu": "500000u"}}]}]
    u = usage_of(nodes, pods)
    assert u.nodes["kf-node"] == Resources(1523, 2 * 2**30, 0) and u.pods[("ml", "p")] == Resources(750, 2**20, 0)


def test_events_nodes_and_selectors() -> None:
    e = event_info({"involvedObject": {"kind": "Pod", "name": "p"}, "reason": "BackOff", "type": "Warning",
                    "message": "back-off", "count": 4, "lastTimestamp": w.T0})
    assert (e.object_name, e.count, e.time) == ("p", 4, w.T0)
    n = node_info({"metadata": {"name": "n1"}, "status": {
        "capacity": {"cpu": "32", "memory": "64Gi", "nvidia.com/gpu": "1"},
        "allocatable": {"cpu": "31500m", "memory": "63Gi"}, "conditions": [{"type": "Ready", "status": "True"}]}})
    assert (n.ready, n.capacity.gpus, n.allocatable.cpu_m, n.allocatable.memory) == (True, 1, 31500, 63 * 2**30)
    assert matches({"a": "1", "b": "2"}, {"a": "1"}) and matches({"a": "1"}, {"a": ""})
    assert not matches({"a": "1"}, {"a": "2"}) and not matches({}, {"a": ""})


def test_unreadable_objects_become_problems_not_exceptions() -> None:
    from kubeforge_api.trainingjob import TrainingJob

    good = {"metadata": {"name": "ok", "namespace": "ml"}, "spec": {"recipe": w.RECIPE}}
    bad = {"metadata": {"name": "odd", "namespace": "ml"}, "spec": {"nodes": "many"}}
    out = parse_all(TrainingJob.model_validate, [good, bad], "TrainingJob")
    assert [j.metadata.name for j in out.items] == ["ok"]
    assert len(out.problems) == 1 and out.problems[0].startswith("TrainingJob ml/odd:")


def exposition(latencies: list[float], codes: dict[str, int]) -> str:
    reg = CollectorRegistry()
    requests = Counter("kubeforge_inference_requests", "", ["endpoint", "code"], registry=reg)
    for code, n in codes.items():
        requests.labels("infer", code).inc(n)
    requests.labels("ready", "200").inc(1000)  # probes are not requests
    hist = Histogram("kubeforge_inference_latency_seconds", "", ["stage"], registry=reg,
                     buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.5))
    for v in latencies:
        hist.labels("total").observe(v)
        hist.labels("queue").observe(10.0)
    return generate_latest(reg).decode()


def test_percentiles_and_rate_from_prometheus_histograms() -> None:
    first = metrics.parse(exposition([0.003] * 50 + [0.02] * 49 + [0.4], {"200": 99, "503": 1}), time=100.0)
    assert (first.requests, first.errors, first.count) == (100, 1, 100)
    view = metrics.latency_view(first, None)
    assert view.window == "since start" and view.rate_per_second is None
    assert view.p50_ms == pytest.approx(5.0) and view.p99_ms == pytest.approx(25.0)
    # 10 s later 50 more requests, all slow: the window shows them, the rate is 5/s
    later = metrics.parse(exposition([0.003] * 50 + [0.02] * 49 + [0.4] + [0.04] * 50, {"200": 149, "503": 1}),
                          time=110.0)
    view = metrics.latency_view(later, first)
    assert view.rate_per_second == pytest.approx(5.0) and view.window == "last 10 s"
    assert 25.0 < (view.p50_ms or 0) <= 50.0
    both = metrics.combine([first, first])
    assert both.requests == 200 and metrics.quantile(0.5, both.buckets) == pytest.approx(0.005)
    restarted = metrics.latency_view(first, later)  # counters went back: fall back to since-start
    assert restarted.window == "since start" and restarted.rate_per_second is None
    assert metrics.latency_view(metrics.parse(exposition([], {}), 1.0), None).p50_ms is None  # no requests yet
    for text in ("", "this is { not prometheus"):
        with pytest.raises(metrics.MetricsError, match=r"^not Prometheus text"):
            metrics.parse(text, 1.0)


def test_cache_reuses_answers_within_ttl_and_never_keeps_failures() -> None:
    now = [0.0]
    inner = w.world()
    cached = CachingSource(inner, ttl=2.0, clock=lambda: now[0])
    for _ in range(3):
        cached.training_jobs(("ml",))
    assert inner.calls["training_jobs"] == 1
    now[0] = 2.5
    cached.training_jobs(("ml",))
    cached.training_jobs(())
    assert inner.calls["training_jobs"] == 3
    failing = MemorySource(failures={"nodes": SourceError(ErrorKind.UNREACHABLE, "down")})
    cached = CachingSource(failing, ttl=60, clock=lambda: 0.0)
    for _ in range(2):
        with pytest.raises(SourceError):
            cached.nodes()
    assert failing.calls["nodes"] == 2


def write_run(root: Path, folder: str, state: str, history: bool = True) -> None:
    (root / folder / "logs").mkdir(parents=True)
    status = {"state": state, "reason": "Completed", "conditions": [w.cond("Succeeded", "True", "Completed", "", 3)],
              "history": w.history(8) if history else None}
    record = RunRecord(name=folder.rsplit("-", 1)[0], uid="0123456789", file="job.yaml",
                       spec={"nodes": 1, "recipe": w.RECIPE}, start_time=w.T0, storage=str(root / folder / "storage"),
                       logs=str(root / folder / "logs"), state=state,
                       status={k: v for k, v in status.items() if v is not None})
    (root / folder / "run.json").write_text(json.dumps(record.dump()))
    (root / folder / "logs" / "digits-node-0.log").write_text("".join(f"line {i}\n" for i in range(500)))


def test_local_runs_are_training_jobs_of_the_local_namespace(tmp_path: Path) -> None:
    write_run(tmp_path, "digits-01234567", "Succeeded")
    write_run(tmp_path, "digits-89abcdef", "Failed", history=False)
    (tmp_path / "broken-00000000").mkdir()
    (tmp_path / "broken-00000000" / "run.json").write_text("{not json")
    src = LocalRunsSource(tmp_path)
    listing = src.training_jobs(())
    assert sorted(j.metadata.name for j in listing.items) == ["digits-01234567", "digits-89abcdef"]
    assert all(j.metadata.namespace == LOCAL_NAMESPACE for j in listing.items)
    assert len(listing.problems) == 1 and "broken-00000000" in listing.problems[0]
    assert src.training_jobs(("ml",)).items == [] and src.namespaces() == [LOCAL_NAMESPACE]
    job = src.training_job(LOCAL_NAMESPACE, "digits-01234567")
    assert job.status is not None and job.status.state == "Succeeded" and job.status.history
    (pod,) = src.pods(LOCAL_NAMESPACE, {"kubeforge.dev/job-name": "digits-01234567"})
    assert pod.name == "digits-01234567/digits-node-0"
    assert src.logs(LOCAL_NAMESPACE, pod.name, None, False, 3) == "line 497\nline 498\nline 499"
    for bad in ("../etc/passwd", "digits-01234567/../../x", "nope/digits-node-0"):
        with pytest.raises(SourceError):
            src.logs(LOCAL_NAMESPACE, bad, None, False, 3)
    with pytest.raises(SourceError) as e:
        src.training_job(LOCAL_NAMESPACE, "gone")
    assert e.value.kind == ErrorKind.NOT_FOUND
    assert src.nodes()[0].capacity.cpu_m >= 1000


def test_settings_from_env_and_auto_source_without_a_cluster(tmp_path: Path) -> None:
    s = DashboardSettings.from_env({"KUBEFORGE_DASHBOARD_NAMESPACES": "a, b", "KUBEFORGE_RUNS_DIR": str(tmp_path),
                                    "KUBEFORGE_DASHBOARD_REFRESH_SECONDS": "10",
                                    "KUBECONFIG": str(tmp_path / "missing")})
    assert (s.namespaces, s.refresh_seconds, s.source) == (("a", "b"), 10.0, SourceKind.AUTO)
    assert "local runs" in make_source(s).description
    strict = s.model_copy(update={"source": SourceKind.KUBERNETES})
    with pytest.raises(SourceError, match="no cluster access"):
        make_source(strict)


def test_inference_form_parsing_and_answers() -> None:
    assert servers.parse_rows("1, 2\n3 4\n") == [[1, 2], [3, 4]]
    assert servers.parse_rows("[[1, 2]]") == [[1, 2]] and servers.parse_rows("[5, 6]") == [[5, 6]]
    with pytest.raises(ValueError, match="same number"):
        servers.parse_rows("1,2\n3")
    with pytest.raises(ValueError):
        servers.parse_rows("one, two")
    meta = ModelMetadata.model_validate({"name": "m", "platform": "pytorch", "outputs": [],
                                         "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]})
    assert servers.default_input(meta).count("0") == 64
    req = servers.request_for([[1.0, 2.0]], meta)
    assert (req.inputs[0].name, req.inputs[0].shape) == ("pixels", [1, 2])
    resp = InferenceResponse.model_validate({"model_name": "m", "outputs": [
        {"name": "logits", "shape": [2, 3], "datatype": "FP32", "data": [0.1, 0.9, 0.0, 2.0, 1.0, 0.5]}]})
    assert [(r["row"], r["predicted class"]) for r in servers.answer_rows(resp)] == [(0, 1), (1, 0)]
