"""The dashboard's cluster page in headless Chromium on the real control plane, the dashboard running as
its shipped ServiceAccount: the nodes table shows each node Ready, a taint of the test's own, and the
ranks of a running TrainingJob placed on it; with Kueue's real manager, the queues panel shows a
ClusterQueue with an admitted Workload's usage against its nominal quota, and the LocalQueue it came
through. NotReady nodes, node-loss taints and the tables' bounds are covered by the unit tests of the
view models (tests/unit/test_dashboard_cluster_view.py) and the page's AppTest
(tests/component/test_dashboard_pages.py). Screenshots go to .test-artifacts/dashboard/."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import REPO, Cluster, KueueHarness, Queues, wait_for
from dashboard_world import TIMEOUT_MS, visit
from kubeforge_dashboard import launch
from minicluster.operator_process import OperatorProcess
from test_dashboard import CHROMIUM_ARGS, start_dashboard

ARTIFACTS = REPO / ".test-artifacts" / "dashboard"
SLEEPER = "import time; time.sleep(600)"
TAINT = "example.com/dashboard-test=shown"
Obj = dict[str, Any]


# Every table row's cell texts, read at once (the grids draw on a canvas; their accessible tables hold the text,
# and the page redraws them on each auto-refresh)
ROWS_JS = "() => [...document.querySelectorAll('tr')].map(r => [...r.querySelectorAll('td')].map(c => c.textContent))"


def rows(page: Any) -> list[list[str]]:
    return [[str(c).strip() for c in r] for r in page.evaluate(ROWS_JS)]


def until(page: Any, check: Callable[[list[list[str]]], bool], what: str) -> None:
    """Wait (a minute at most) until the page's tables pass `check`; fail showing them."""
    try:
        wait_for(lambda: check(rows(page)), 60, interval=1, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; the page's tables: {rows(page)}") from None


@contextmanager
def cluster_page(cluster: Cluster, namespace: str, shot: str) -> Iterator[Any]:
    """The cluster page of a dashboard started for this test, in a browser (a Playwright page)."""
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "install Debian's chromium (.ci/run does)"
    work = cluster.root / f"dashboard-cluster-{namespace}"
    url = start_dashboard(cluster, work, KUBEFORGE_DASHBOARD_NAMESPACES=namespace)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            visit(page, f"{url}/cluster")
            expect(page.get_by_text("Queues (Kueue)").first).to_be_visible()  # the page ran to its end
            try:
                yield page
            finally:
                page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)
                browser.close()
    finally:
        launch.stop(work)


def running_ranks(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    """Rank -> node of the job's Running pods."""
    pods = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=kubeforge.dev%2Fjob-name%3D{name}")
    return {p["metadata"]["labels"]["kubeforge.dev/rank"]: p["spec"]["nodeName"] for p in pods["items"]
            if p["status"].get("phase") == "Running"}


@pytest.mark.embedded("builds the dashboard's kubeconfig from the embedded cluster's CA file")
def test_nodes_table_shows_each_node_ready_with_a_running_jobs_ranks(cluster: Cluster, operator: OperatorProcess,
                                                                     namespace: str) -> None:
    name = "placed"
    cluster.apply({"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
                   "spec": {"nodes": 2, "command": ["python", "-c", SLEEPER],
                            "resources": {"requests": {"cpu": "10m"}, "limits": {"memory": "1Gi"}}}}, namespace)
    nodes = [n["metadata"]["name"] for n in cluster.client.get("/api/v1/nodes")["items"]]
    # a taint of our own on the first node (PreferNoSchedule: nothing of the session's other tests moves)
    cluster.kubectl("taint", "node", nodes[0], f"{TAINT}:PreferNoSchedule")
    try:
        with cluster_page(cluster, namespace, "cluster-nodes") as page:  # starts while the pods come up
            ranks_placed_shown(cluster, page, namespace, name, nodes)
    finally:
        cluster.kubectl("taint", "node", nodes[0], f"{TAINT}:PreferNoSchedule-", check=False)


def ranks_placed_shown(cluster: Cluster, page: Any, namespace: str, name: str, nodes: list[str]) -> None:
    """Every node Ready, with the job's ranks where they run and TAINT on the first node."""
    from playwright.sync_api import expect

    ranks = wait_for(lambda: (r := running_ranks(cluster, namespace, name)) and len(r) == 2 and r, 120,
                     what="both ranks Running")
    here = {node: ", ".join(f"rank {r}" for r in sorted(ranks) if ranks[r] == node) for node in nodes}
    expected = {node: f"TrainingJob {namespace}/{name}: {ranks_here}" if ranks_here else ""
                for node, ranks_here in here.items()}

    def placed(shown: list[list[str]]) -> bool:
        # node, status, since, reason, node-loss taints, other taints, jobs here, ... (the grid leaves out the
        # columns beyond the window); the page refreshes itself, so it shows the pods within a few seconds
        table = {r[0]: r for r in shown if len(r) >= 7 and r[0] in nodes and r[1].endswith("Ready")}
        return all(node in table and "NotReady" not in table[node][1]
                   and table[node][4] == "" and table[node][6] == jobs for node, jobs in expected.items()) \
            and table[nodes[0]][5] == f"{TAINT}:PreferNoSchedule"

    until(page, placed, f"every node Ready with {name}'s ranks")
    expect(page.get_by_test_id("stAlertContainer").filter(has_text="NotReady")).to_have_count(0)


def admitted_workload(kueue: KueueHarness, q: Queues, name: str, cpu: str) -> None:
    """A Workload of one pod asking for `cpu` in `q`'s LocalQueue, once Kueue admitted it."""
    container = {"name": "main", "image": "busybox", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}
    kueue.cluster.client.create(kueue.path("workloads", q.namespace), {
        "apiVersion": kueue.api_version, "kind": "Workload", "metadata": {"name": name},
        "spec": {"queueName": q.local_queue, "podSets": [{"name": "main", "count": 1, "template": {
            "spec": {"restartPolicy": "Never", "containers": [container]}}}]}})
    kueue.wait_admitted(q.namespace, name)


@pytest.mark.embedded("builds the dashboard's kubeconfig from the embedded cluster's CA file")
def test_queues_panel_shows_a_cluster_queues_usage_against_its_quota(cluster: Cluster, kueue: KueueHarness,
                                                                      namespace: str) -> None:
    from playwright.sync_api import expect

    with cluster_page(cluster, namespace, "cluster-queues") as page:
        expect(page.get_by_text("Kueue is not installed")).to_have_count(0)
        q = kueue.queues(namespace, cpu="2", memory="1Gi", cohort="kf-dashboard")
        admitted_workload(kueue, q, "small", "500m")
        expected = [
            [q.cluster_queue, "kf-dashboard", "0", "1", "1", "True"],  # cohort, pending, admitted, reserving, active
            # flavor, resource, nominal quota, reserved, in use (admitted), borrowed, reserved of quota
            [q.cluster_queue, q.flavor, "cpu", "2", "0.5", "0.5", "0", "0.25"],
            [q.cluster_queue, q.flavor, "memory", "1.0 GiB", "64.0 MiB", "64.0 MiB", "0 B", "0.0625"],
            [namespace, q.local_queue, q.cluster_queue, "0", "1", "1"]]  # pending, admitted, reserving
        until(page, lambda shown: all(e in shown for e in expected), "the queues with the admitted Workload's usage")
