"""Every dashboard page rendered by Streamlit's AppTest with realistic jobs (running,
pending-unschedulable, failed with an exit code, restarted after an OOM kill, succeeded with
compression accepted and rejected, serving with a canary), asserting what the user reads; plus
the empty and error states. Serving metrics come from a real HTTP endpoint serving Prometheus text;
the "try it" form talks to a real inference server process."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dashboard_world as w
import pytest
from kubeforge_dashboard.history import ServingHistory
from kubeforge_dashboard.memory import MemorySource
from kubeforge_dashboard.source import ErrorKind, SourceError
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "streamlit_app.py")
PAGES = {"training": "app_pages/training_job.py", "serving": "app_pages/serving_job.py",
         "cluster": "app_pages/cluster.py", "overview": "app_pages/overview.py"}


_COMPONENTS: list[Any] = []


def render(source: Any, page: str = "overview", session: dict[str, Any] | None = None, **query: str) -> AppTest:
    """The app over `source` (and anything else a test puts into `session`), on `page` with `query`."""
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in (session or {}).items():
        at.session_state[key] = value
    # Each new AppTest scans every installed package for Streamlit components (seconds here); a real
    # server does it once, so the tests share the first scan. Without this private attribute: just slower.
    if _COMPONENTS and hasattr(at, "_bidi_component_manager"):
        at._bidi_component_manager = _COMPONENTS[0]
    at.session_state["kubeforge_source"] = source
    at.session_state["kubeforge_history"] = ServingHistory(min_interval=0)  # each test's own, never the process's
    at.run()  # the pages are known once st.navigation has run
    if not _COMPONENTS and getattr(at, "_bidi_component_manager", None) is not None:
        _COMPONENTS.append(at._bidi_component_manager)
    if page != "overview":
        at.switch_page(PAGES[page])
        for k, v in query.items():
            at.query_params[k] = v
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(markdown: str) -> str:
    """The text a Markdown source shows where it only escapes characters (what `ui.plain` writes)."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def seen(at: AppTest) -> str:
    """Everything the page shows as text: headings, messages, metrics, tables, code."""
    parts: list[str] = []
    for kind in ("title", "subheader", "markdown", "caption", "error", "warning", "info", "success"):
        parts += [shown(str(e.value)) for e in getattr(at, kind)]
    parts += [str(e.value) for kind in ("code", "text") for e in getattr(at, kind)]
    parts += [shown(e.proto.text) for e in at.get("progress")] + [shown(e.proto.label) for e in at.get("page_link")]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    parts += [e.value.to_string() for e in at.dataframe]
    parts += [e.value.to_string() for e in at.table]
    return "\n".join(parts)


def charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart"))


def markdown_bodies(at: AppTest) -> list[str]:
    """The source of everything the browser renders as Markdown: headings, texts, alerts, badges, metric
    labels and values, progress texts, link labels and widget labels."""
    out: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "error", "warning", "info", "success"):
        out += [str(e.value) for e in getattr(at, kind)]
    out += [f"{m.label} {m.value}" for m in at.metric]
    out += [e.proto.text for e in at.get("progress")] + [e.proto.label for e in at.get("page_link")]
    out += [w.label for kind in ("selectbox", "multiselect", "text_input", "text_area") for w in getattr(at, kind)]
    return out


# Markdown the payload would form unless every character of it is escaped: a link or image, raw HTML, a
# Streamlit directive, an autolinked domain, math, a heading.
UNSAFE = [r"(?<!\\)\]\(", r"(?<!\\)<img", r"(?<!\\):red\[", r"www\.evil", r"(?<!\\)\$x", r"(?m)^\s*#", r"\n=+"]


def rendered_unsafely(body: str) -> list[str]:
    """What in one Markdown source would become a link, an image, a heading, HTML or a directive."""
    found = [p for p in UNSAFE if re.search(p, body)]
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # the patterns above still hold
        return found
    html = MarkdownIt("commonmark").render(body)
    return found + [tag for tag in ("<a ", "<img", "<h1", "<h2") if tag in html]


def test_overview_shows_every_job_with_state_progress_and_reason() -> None:
    at = render(w.world())
    assert {m.label: m.value for m in at.metric} == {"Running": "2", "Pending": "2", "Succeeded": "2",
                                                     "Failed": "1", "Ready": "1"}
    table = at.dataframe[0].value.set_index("Name")
    assert len(table) == 8
    assert table.loc["digits-running", "State"] == "🔵 Running" and table.loc["digits-running", "Progress"] == 0.3
    assert table.loc["digits-running", "ETA"] == "1m 35s" and table.loc["broken", "Restarts"] == 3
    assert "Insufficient nvidia.com/gpu" in table.loc["big-pending", "Reason"]
    assert "exit code 3 in pod broken-node-1" in table.loc["broken", "Reason"]
    assert table.loc["digits-serving", "Size"] == "2/2 replicas + 1 canary"
    assert table.loc["digits-q", "Open"] == "training?ns=ml&name=digits-q"


def test_overview_filter_and_sort() -> None:
    at = render(w.world())
    at.text_input(key="ov_filter").input("gpu").run()
    assert list(at.dataframe[0].value["Name"]) == ["big-pending"]
    at.text_input(key="ov_filter").input("").run()
    at.selectbox(key="ov_sort").select("restarts").run()
    at.toggle(key="ov_reverse").set_value(True).run()
    assert at.dataframe[0].value["Name"].iloc[0] == "broken"
    at.multiselect(key="ov_states").select("Failed").run()
    assert list(at.dataframe[0].value["Name"]) == ["broken"]


def test_overview_empty_and_unreachable() -> None:
    assert "No TrainingJobs or ServingJobs in any namespace yet" in seen(render(MemorySource()))
    down = MemorySource(failures={"training_jobs": SourceError(
        ErrorKind.UNREACHABLE, "no cluster access: cannot list trainingjobs in all namespaces (MaxRetryError)")})
    text = seen(render(down))
    assert "no cluster access: cannot list trainingjobs" in text and "Check the kubeconfig" in text
    assert not down.calls["serving_jobs"]


def test_overview_forbidden_namespace() -> None:
    src = MemorySource(failures={"training_jobs": SourceError(
        ErrorKind.FORBIDDEN, "forbidden: the dashboard may not list trainingjobs in namespace secret-team (403)")})
    text = seen(render(src))
    assert "forbidden: the dashboard may not list trainingjobs in namespace secret-team" in text
    assert "pick another namespace" in text


def test_running_job_page_shows_curves_pods_events_and_logs() -> None:
    at = render(w.world(), "training", ns="ml", name="digits-running")
    text = seen(at)
    assert "TrainingJob digits-running" in text and ":blue-badge[Running]" in text
    assert charts(at) == 3  # loss, eval metric, samples per second
    assert "Last checkpoint: step 100" in text and "step 120 loss 0.4213" in text
    pods = next(d.value for d in at.dataframe if "last_exit_code" in d.value.columns)
    assert list(pods["name"]) == ["digits-running-node-0", "digits-running-node-1"]
    assert set(pods["phase"]) == {"Running"} and set(pods["node"]) == {"kf-node"}
    assert "PodsCreated" in text and "No artifact yet" in text
    assert "strategy" in text.lower() and "mlp on digits" in text
    assert "Previous container" not in text


def test_job_pages_refresh_while_the_job_runs() -> None:
    for name in ("digits-running", "big-pending", "oom-restarted", "just-created"):
        assert "Refreshing every 5 s while the job runs" in seen(render(w.world(), "training", ns="ml", name=name))
    for name in ("digits-q", "broken"):
        assert "Refreshing" not in seen(render(w.world(), "training", ns="ml", name=name))


def test_pending_unschedulable_job_page_says_why() -> None:
    text = seen(render(w.world(), "training", ns="ml", name="big-pending"))
    assert ":gray-badge[Pending]" in text and "reason Unschedulable" in text
    assert "FailedScheduling" in text and "1 Insufficient nvidia.com/gpu" in text
    assert "nvidia.com/gpu=8" in text


def test_failed_job_page_shows_exit_code_pod_and_log() -> None:
    at = render(w.world(), "training", ns="ml", name="broken")
    (error,) = [shown(e.value) for e in at.error]
    assert error == "Last failure: Error: exit code 3 in pod broken-node-1, container trainer"
    assert at.code[0].value == "ValueError: bad learning rate"  # the termination text, as code
    assert "ValueError: bad learning rate" in at.code[1].value  # the log
    assert "No metrics history yet" in seen(at)


def test_restarted_job_page_shows_the_previous_container_log() -> None:
    at = render(w.world(), "training", ns="ml", name="oom-restarted")
    text = seen(at)
    assert "restarts 1" in text and "OOMKilled: exit code 137 in pod oom-restarted-node-0" in text
    assert "Previous container of oom-restarted-node-0" in text
    assert [c.value for c in at.code] == ["resumed from step 0\nstep 10 loss 2.1",
                                          "step 90 loss 1.0\nKilled: out of memory"]
    pods = next(d.value for d in at.dataframe if "last_exit_code" in d.value.columns).iloc[0]
    assert (pods["restarts"], pods["last_exit_code"], pods["reason"]) == (1, 137, "OOMKilled")


def test_succeeded_job_with_compression_accepted() -> None:
    at = render(w.world(), "training", ns="ml", name="digits-q")
    assert [shown(s.value) for s in at.success] == ["Compressed: quantize-dynamic published. quantize-dynamic kept "
                                             "accuracy within 0.01"]
    report = next(d.value for d in at.dataframe if "speedup" in d.value.columns).set_index("method")
    assert report.loc["quantize-dynamic", "verdict"] == "✅ accepted"
    assert report.loc["quantize-dynamic", "speedup"] == "2x faster"
    assert report.loc["quantize-dynamic", "drop"] == "+0.004"
    assert report.loc["baseline (trained model)", "metric"] == "0.955"
    assert report.loc["prune-structured", "verdict"] == "❌ rejected"
    text = seen(at)
    assert w.DIGEST in text and "digits-serving" in text and "Last checkpoint: step 400" in text
    assert charts(at) == 3 and ":green-badge[Succeeded]" in text


def test_succeeded_job_with_compression_rejected() -> None:
    at = render(w.world(), "training", ns="ml", name="digits-strict")
    warning = [shown(x.value) for x in at.warning]
    assert any(v.startswith("Not compressed (AccuracyBudgetExceeded): the original model stays") for v in warning)
    assert "no candidate stayed within the accuracy budget" in " ".join(warning)


def test_job_without_status_and_missing_job() -> None:
    text = seen(render(w.world(), "training", ns="ml", name="just-created"))
    assert "No metrics history yet" in text and "No conditions yet" in text and "no progress reported yet" in text
    assert "not found: TrainingJob ml/gone" in seen(render(w.world(), "training", ns="ml", name="gone"))


def test_training_page_without_a_query_offers_a_choice() -> None:
    at = render(w.world(), "training")
    assert at.selectbox[0].options[0] == "ml/digits-running"
    assert "TrainingJob digits-running" in seen(at)


def exposition(extra: int = 0) -> bytes:
    """A server's /metrics after 100 requests (p50 5 ms, p99 25 ms), and `extra` more at 40 ms."""
    reg = CollectorRegistry()
    requests = Counter("kubeforge_inference_requests", "", ["endpoint", "code"], registry=reg)
    requests.labels("infer", "200").inc(100 + extra)
    hist = Histogram("kubeforge_inference_latency_seconds", "", ["stage"], registry=reg,
                     buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.5))
    for v in [0.003] * 50 + [0.02] * 49 + [0.4] + [0.04] * extra:
        hist.labels("total").observe(v)
    return generate_latest(reg)


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, int, list[bytes]]]:
    """A real HTTP endpoint answering /metrics with `body[0]`."""
    body = [exposition()]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 404)
            self.end_headers()
            self.wfile.write(body[0])

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "127.0.0.1", server.server_address[1], body
    server.shutdown()


def test_serving_page_with_canary_lineage_and_latency(metrics_server: tuple[str, int, list[bytes]]) -> None:
    ip, port, _ = metrics_server
    at = render(w.world(ip, port), "serving", ns="ml", name="digits-serving")
    text = seen(at)
    assert ":green-badge[Ready]" in text and "2 ready of 2 (desired 2)" in text
    tracks = next(d.value for d in at.dataframe if "traffic_percent" in d.value.columns).set_index("track")
    assert (tracks.loc["main", "traffic_percent"], tracks.loc["canary", "traffic_percent"]) == (80, 20)
    assert tracks.loc["canary", "training_job"] == "digits-strict"
    links = {shown(e.proto.label): e.proto.query_string for e in at.get("page_link") if e.proto.page == "training"}
    assert links == {"Lineage: main: TrainingJob digits-q": "ns=ml&name=digits-q",
                     "Lineage: canary: TrainingJob digits-strict": "ns=ml&name=digits-strict"}
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Requests"] == "200"  # two ready servers, 100 requests each
    assert (metrics["p50 latency"], metrics["p99 latency"]) == ("5.0 ms", "25.0 ms")
    assert metrics["Rate"] == "measuring..."


def test_serving_page_shows_throughput_and_latency_over_time(metrics_server: tuple[str, int, list[bytes]]) -> None:
    ip, port, body = metrics_server
    at = render(w.world(ip, port), "serving", ns="ml", name="digits-serving")
    assert charts(at) == 0 and "fill in as the page refreshes (every 5 s)" in seen(at)
    for more in (50, 120):  # each refresh scrapes again: a point per interval
        body[0] = exposition(extra=more)
        at.run()
    assert not at.exception
    assert charts(at) == 2  # throughput and latency
    throughput, latency = (c.proto.spec for c in at.get("vega_lite_chart"))
    assert '"Throughput"' in throughput and '"Latency"' in latency
    assert {m.label: m.value for m in at.metric}["Requests"] == str(2 * (100 + 120))
    assert "Refreshes every 5 s" in seen(at)


def test_serving_page_when_metrics_cannot_be_read(metrics_server: tuple[str, int, list[bytes]]) -> None:
    ip, port, body = metrics_server
    body[0] = b"<html>not metrics {"
    text = seen(render(w.world(ip, port), "serving", ns="ml", name="digits-serving"))
    assert "Metrics of digits-serving-7d9f-abcde unreadable: not Prometheus text" in text
    closed = seen(render(w.world("127.0.0.1", 9), "serving", ns="ml", name="digits-serving"))
    assert "Metrics of digits-serving-7d9f-abcde unreadable: cannot reach http://127.0.0.1:9/metrics" in closed


def test_cluster_page_shows_capacity_requests_and_use() -> None:
    at = render(w.world(), "cluster")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["CPU requested by Kubeforge"] == "5 of 32 cores"
    assert metrics["CPU in use"] == "7.25 of 32 cores"  # from the metrics API, beside what is requested
    assert metrics["GPUs requested by Kubeforge"] == "0 of 1"
    nodes = at.dataframe[1].value.iloc[0]
    assert (nodes["node"], nodes["cpu_requested"], nodes["cpu_in_use"], nodes["pods"]) == ("kf-node", "5 / 32",
                                                                                           "7.25 / 32", 5)
    config = at.dataframe[1].proto.columns
    assert "CPU requested by Kubeforge" in config and "CPU in use" in config and "CPU used" not in config
    jobs = at.dataframe[2].value.set_index("job")
    assert jobs.loc["digits-running", "pods"] == 2 and "broken" not in jobs.index
    assert (jobs.loc["digits-running", "cpu requested"], jobs.loc["digits-running", "cpu in use"]) == ("2", "3.75")
    assert jobs.loc["digits-serving", "cpu in use"] == "n/a"
    down = MemorySource(failures={"nodes": SourceError(ErrorKind.FORBIDDEN, "forbidden: the dashboard may not "
                                                                           "list nodes (403 Forbidden)")})
    assert "forbidden: the dashboard may not list nodes" in seen(render(down, "cluster"))


def test_cluster_page_without_a_metrics_api_says_in_use_is_not_measured() -> None:
    src = w.world()
    src.usage_now = None
    at = render(src, "cluster")
    assert {m.label: m.value for m in at.metric}["CPU in use"] == "n/a"
    assert "In use: not measured" in seen(at) and at.dataframe[1].value.iloc[0]["cpu_in_use"] == "n/a"


def test_cluster_page_shows_node_status_placement_and_kueue_queues() -> None:
    from kubeforge_dashboard.source import ClusterQueueInfo, LocalQueueInfo, NodeInfo, Queues, QuotaUse, Taint

    src = w.world()
    lost = NodeInfo("kf-node-b", False, src.node_list[0].capacity, src.node_list[0].allocatable,
                    ready_status="Unknown", ready_since="2020-01-01T00:00:00Z", ready_reason="NodeStatusUnknown",
                    taints=(Taint("node.kubernetes.io/unreachable", "NoExecute"),))
    src.node_list.append(lost)
    at = render(src, "cluster")
    assert "1 of 2 nodes NotReady: kf-node-b" in seen(at)
    status = at.dataframe[0].value.set_index("node")
    assert status.loc["kf-node-b", "status"] == "🔴 NotReady" and status.index[0] == "kf-node-b"
    assert status.loc["kf-node-b", "node-loss taints"] == "node.kubernetes.io/unreachable:NoExecute"
    assert "TrainingJob ml/digits-running: rank 0, rank 1" in status.loc["kf-node", "jobs here"]
    assert "Kueue is not installed" in seen(at) and src.calls["queues"] == 1 and "Refreshes every" in seen(at)
    src.queue_state = Queues("kueue.x-k8s.io/v1beta2", [ClusterQueueInfo(
        "team-a", "research", pending=2, admitted=1, quotas=(QuotaUse("default", "cpu", 4, 3, 3),))],
        [LocalQueueInfo("ml", "user-queue", "team-a", pending=2, admitted=1)])
    at = render(src, "cluster")
    assert "1 ClusterQueues (2 workloads pending, 1 admitted) and 1 LocalQueues" in seen(at)
    cq, quota, lq = (at.dataframe[i].value.iloc[0] for i in (3, 4, 5))
    assert (cq["cluster queue"], cq["cohort"], cq["pending"], cq["admitted"]) == ("team-a", "research", 2, 1)
    assert (quota["nominal quota"], quota["reserved"], quota["reserved of quota"]) == ("4", "3", 0.75)
    assert (lq["namespace"], lq["local queue"], lq["pending"]) == ("ml", "user-queue", 2)
    src.failures["queues"] = SourceError(ErrorKind.FORBIDDEN, "forbidden: the dashboard may not list clusterqueues")
    at = render(src, "cluster")
    assert "may not list clusterqueues" in seen(at) and len(at.dataframe) == 3  # the nodes still show


def test_try_it_asks_a_real_inference_server(tmp_path: Path) -> None:
    import torch
    from kubeforge_trainer.artifacts import load_model
    from servehelp import DIGITS_MLP, Server, write_artifact

    model_dir = write_artifact(tmp_path / "artifact", DIGITS_MLP)
    server = Server(model_dir, name="digits-serving").start()
    try:
        at = render(w.world("127.0.0.1", server.port), "serving", ns="ml", name="digits-serving")
        assert at.text_area[0].value.count("0") == 64  # one row as wide as the model's input
        row = [float(i % 17) for i in range(64)]
        at.text_area[0].input(", ".join(str(v) for v in row))
        at.button[0].click().run()
        assert not at.exception
        assert [shown(s.value) for s in at.success] == ["Answered by digits-serving-7d9f-abcde (model digits-serving)"]
        answer = next(d.value for d in at.dataframe if "predicted class" in d.value.columns).iloc[0]
        _, model = load_model(model_dir)
        assert answer["predicted class"] == int(model(torch.tensor([row])).argmax())
        at.text_area[0].input("1, 2, 3")
        at.button[0].click().run()
        (error,) = [shown(e.value) for e in at.error]
        assert error.startswith("Request failed: http://127.0.0.1:") and "answered 4" in error
        # scraped before this run's request: the first answer, seen through both pods (one process here)
        assert {m.label: m.value for m in at.metric}["Requests"] == "2"
    finally:
        server.stop()


def test_local_runs_through_the_same_pages(tmp_path: Path) -> None:
    from kubeforge_api.contracts import RunRecord
    from kubeforge_dashboard.local import LocalRunsSource

    run = tmp_path / "digits-0123abcd"
    (run / "logs").mkdir(parents=True)
    status = {"state": "Succeeded", "reason": "Completed", "history": w.history(20), "restartCount": 0,
              "conditions": [w.cond("Succeeded", "True", "Completed", "all 1 worker pods succeeded", 5)],
              "artifact": {"uri": f"file://{run}/storage/artifact", "digest": w.DIGEST, "sizeBytes": 5000}}
    record = RunRecord(name="digits", uid="0123abcd-ffff", file="job.yaml", spec={"nodes": 1, "recipe": w.RECIPE},
                       start_time=w.T0, storage=str(run / "storage"), logs=str(run / "logs"), state="Succeeded",
                       status=status)
    (run / "run.json").write_text(record.model_dump_json(by_alias=True))
    (run / "logs" / "digits-node-0.log").write_text("epoch 3 done\ntraining finished\n")
    src = LocalRunsSource(tmp_path)
    table = render(src).dataframe[0].value
    assert list(table["Name"]) == ["digits-0123abcd"] and list(table["Namespace"]) == ["local"]
    at = render(src, "training", ns="local", name="digits-0123abcd")
    assert charts(at) == 3 and "training finished" in at.code[0].value and w.DIGEST in seen(at)
    assert "local runs have no ServingJobs" in seen(render(src, "serving", ns="local", name="x"))


@pytest.mark.parametrize(("page", "query"), [
    ("overview", {}), ("training", {"ns": "ml", "name": "www.evil.example"}),
    ("training", {"ns": "ml", "name": "evil-report"}), ("serving", {"ns": "ml", "name": "evil-serving"}),
    ("training", {"ns": "ml", "name": w.PAYLOAD})])
def test_tenant_strings_are_never_rendered_as_markdown(page: str, query: dict[str, str]) -> None:
    """Failure messages, termination text, compression fields, report keys, condition and event messages, job
    names and args, and a crafted query string: shown as text or code, never as images, links or headings."""
    at = render(w.hostile(), page, **query)
    bodies = markdown_bodies(at)
    unsafe = {b: rendered_unsafely(b) for b in bodies if rendered_unsafely(b)}
    assert not unsafe, unsafe
    shown = "\n".join([*(c.value for c in at.code), *(d.value.to_string() for d in at.dataframe), *bodies])
    assert "evil" in shown  # the tenant's words are still on the page, as text


def test_termination_text_is_shown_as_code() -> None:
    at = render(w.hostile(), "training", ns="ml", name="www.evil.example")
    assert [shown(e.value) for e in at.error] == ["Last failure: Error: exit code 1 in pod www.evil.example-node-0, "
                                                  "container trainer"]
    assert at.code[0].value == w.BANNER and at.code[0].language in (None, "plaintext")


def test_serving_page_shows_a_language_models_tokens(tmp_path: Path) -> None:
    """A real language-model server (a tiny Llama made here): the page reads its `kubeforge:` token metrics,
    shows the load now in tiles and, after a few refreshes, token rates, latency, cache use and the queue over
    time; the Open Inference Protocol tiles stay away while no such request came."""
    import json

    from llm_models import tiny_llama
    from servehelp import Server, request

    server = Server(tiny_llama(tmp_path / "model"), name="digits-serving").start()
    text = request(server.port, "GET", "/metrics").body.decode()
    generated = int(float(re.search(r"^kubeforge:generation_tokens_total\S* (\S+)$", text, re.M).group(1)))  # warm-up

    def complete(tokens: int = 8) -> None:
        nonlocal generated
        body = {"model": "digits-serving", "prompt": "ada trains the red kettle near the river. " * 4,
                "max_tokens": tokens, "temperature": 0, "ignore_eos": True}
        reply = request(server.port, "POST", "/v1/completions", json.dumps(body).encode())
        assert reply.status == 200, reply.body
        generated += reply.json()["usage"]["completion_tokens"]

    try:
        complete()
        at = render(w.world("127.0.0.1", server.port), "serving", ns="ml", name="digits-serving")
        tiles = {m.label: m.value for m in at.metric}
        assert "Language model" in seen(at) and "Requests" not in tiles  # no OIP request: no empty OIP tiles
        assert tiles["Generated tokens/s"] == "measuring..." and tiles["TTFT p50"].endswith(" ms")
        assert tiles["Running / waiting"] == "0 / 0" and tiles["KV cache"].startswith("0.0 %")
        assert "fill in as the page refreshes" in seen(at) and charts(at) == 0
        for _ in range(2):  # each refresh scrapes again: a point per interval
            complete(12)
            at.run()
            assert not at.exception, [e.value for e in at.exception]
        tiles = {m.label: m.value for m in at.metric}
        assert float(tiles["Generated tokens/s"].rstrip("/s").replace(",", "")) > 0
        assert float(tiles["Prompt tokens/s"].rstrip("/s").replace(",", "")) > 0
        assert tiles["Prefix-cache hits"].endswith(" %") and tiles["Prefix-cache hits"] != "0.0 %"  # same prompt
        both = next(m for m in at.metric if m.label == "Generated tokens/s").proto.help
        assert both == f"{2 * generated:,} generated since start"  # two ready pods, one server here: counted twice
        titles = [json.loads(c.proto.spec)["title"] for c in at.get("vega_lite_chart")]
        assert titles == ["Tokens per second", "Token latency", "Cache", "Requests"]
    finally:
        assert server.stop() == 0


def test_fine_tune_job_page_shows_method_evaluation_and_adapter() -> None:
    at = render(MemorySource(training=[w.finetune_job(w.finished_finetune())]), "training", ns="ml", name="chat-lora")
    text = seen(at)
    assert "LoRA rank 8, alpha 16, dropout 0.05 on q_proj, v_proj" in text and "pvc://models/base/tiny-llama" in text
    evaluation = next(d.value for d in at.dataframe if "before (base model)" in d.value.columns).set_index("metric")
    assert (evaluation.loc["perplexity", "before (base model)"], evaluation.loc["perplexity", "after"]) == (
        "7.389", "4.482")
    artifact = dict(next(d.value for d in at.dataframe if "field" in d.value.columns and "URI" in set(
        d.value["field"])).values.tolist())
    assert artifact["URI"] == "pvc://models/runs/chat-lora/artifact"
    assert artifact["Adapter URI"] == "pvc://models/runs/chat-lora/adapter"
