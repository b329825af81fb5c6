"""The dashboard on the real control plane: its shipped ServiceAccount (manifests/overlays/dashboard)
can read everything the pages show, check users' tokens and rights, and write nothing; running as
that ServiceAccount, every page loaded in headless Chromium shows a finished TrainingJob (curves
included) and a Ready ServingJob (latency, lineage, an inference answer); with sign-in on, a tenant
signed in with a token of its own sees its namespace and nothing else, and no one without a valid
token gets a page. The chart's namespaced install grants Roles in the watched namespaces only.
Screenshots go to the ignored folder .test-artifacts/dashboard/."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, Cluster, helm
from dashboard_world import TIMEOUT_MS, chunk_failures, visit
from kubeforge_dashboard import launch
from minicluster.controlplane import write_kubeconfig
from minicluster.operator_process import OperatorProcess, install

SA_NAMESPACE, SA = "kubeforge-system", "kubeforge-dashboard"
AS = f"--as=system:serviceaccount:{SA_NAMESPACE}:{SA}"
SAMPLE = REPO / "manifests" / "samples" / "servingjob-digits.yaml"
ARTIFACTS = REPO / ".test-artifacts" / "dashboard"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

READS = [("trainingjobs.kubeforge.dev", ""), ("servingjobs.kubeforge.dev", ""), ("pods", ""), ("events", ""),
         ("nodes", ""), ("namespaces", "")]
METRICS = [("nodes.metrics.k8s.io", ""), ("pods.metrics.k8s.io", "")]  # get and list: what is in use
WRITES = ["create", "update", "patch", "delete", "deletecollection"]
NEVER = [("get", "secrets", ""), ("list", "secrets", ""), ("create", "pods", "exec"), ("get", "pods", "proxy"),
         ("create", "pods", "eviction"), ("update", "trainingjobs.kubeforge.dev", "status"),
         ("patch", "servingjobs.kubeforge.dev", "status"), ("list", "deployments.apps", ""),
         ("list", "configmaps", ""), ("create", "serviceaccounts", "token"), ("impersonate", "users", ""),
         ("create", "events", "")]


def can(cluster: Cluster, verb: str, resource: str, sub: str = "", namespace: str = "default") -> bool:
    args = ["auth", "can-i", verb, resource, AS, f"--namespace={namespace}"]
    if sub:
        args.append(f"--subresource={sub}")
    out = cluster.kubectl(*args, check=False)
    assert out.stdout.strip() in ("yes", "no"), out.stderr
    return out.stdout.strip() == "yes"


def install_dashboard(cluster: Cluster) -> None:
    """The operator's CRDs and RBAC (as the session's operator runs), then the dashboard's ServiceAccount and
    RBAC from its opt-in overlay (everything of it but the Deployment, which runs here as a process)."""
    install(cluster.kubeconfig)
    docs = yaml.safe_load_all(cluster.kubectl("kustomize", str(REPO / "manifests" / "overlays" / "dashboard")).stdout)
    ours = [d for d in docs if d and "dashboard" in d["metadata"]["name"] and d["kind"] != "Deployment"]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(ours))


def test_dashboard_service_account_reads_what_pages_show_and_writes_nothing(cluster: Cluster) -> None:
    install_dashboard(cluster)
    for resource, sub in READS:
        for verb in ("get", "list", "watch"):
            assert can(cluster, verb, resource, sub), f"the dashboard cannot {verb} {resource}"
    assert can(cluster, "get", "pods", "log") and not can(cluster, "create", "pods", "log")
    assert all(can(cluster, verb, r, sub) for r, sub in METRICS for verb in ("get", "list"))
    for resource, sub in [*READS, ("pods", "log")]:
        for verb in WRITES:
            assert not can(cluster, verb, resource, sub), f"the dashboard may {verb} {resource}/{sub}"
    for verb, resource, sub in NEVER:
        assert not can(cluster, verb, resource, sub), f"the dashboard may {verb} {resource}/{sub}"
    rules = cluster.kubectl("auth", "can-i", "--list", AS, "--namespace=default").stdout.splitlines()[1:]
    granted = {}
    for line in rules:
        if not line.strip() or line.startswith(" "):  # non-resource URLs: discovery and health, for everyone
            continue
        granted[line.split()[0]] = set(line[line.rindex("[") + 1:line.rindex("]")].split())
    assert set(granted["pods"]) == {"get", "list", "watch"} and granted["pods/log"] == {"get"}
    # it checks users' tokens and rights (system:auth-delegator), and writes nothing else
    assert granted["tokenreviews.authentication.k8s.io"] == {"create"}
    assert granted["subjectaccessreviews.authorization.k8s.io"] == {"create"}
    for resource, verbs in granted.items():
        if not resource.startswith(("selfsubject", "tokenreviews.", "subjectaccessreviews.")):
            assert verbs <= {"get", "list", "watch"}, (resource, verbs)


def dashboard_kubeconfig(cluster: Cluster, out: Path) -> Path:
    """A kubeconfig holding a token of the dashboard's own ServiceAccount."""
    token = cluster.kubectl("create", "token", SA, "-n", SA_NAMESPACE, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    return write_kubeconfig(out, admin["server"], Path(admin["certificate-authority"]), token,
                            f"system:serviceaccount:{SA_NAMESPACE}:{SA}")


def small(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sample, trained for one epoch and without compression (the page tests cover reports)."""
    for d in docs:
        if d["kind"] == "TrainingJob":
            d["spec"]["recipe"]["epochs"] = 1
            d["spec"].pop("compression", None)
        if d["kind"] == "ServingJob":
            d["spec"]["model"]["trainingJobRef"]["variant"] = "original"
    return docs


@pytest.fixture
def served(cluster: Cluster, operator: OperatorProcess, namespace: str) -> tuple[str, str, str]:
    """A finished TrainingJob and the Ready ServingJob serving its artifact (the serving sample, smaller)."""
    docs = small([d for d in yaml.safe_load_all(SAMPLE.read_text()) if d])
    kinds = {d["kind"]: d["metadata"]["name"] for d in docs}
    tj, sj = kinds["TrainingJob"], kinds["ServingJob"]
    cluster.apply(docs, namespace)
    for what, condition in ((f"tj/{tj}", "Succeeded"), (f"sj/{sj}", "Ready")):
        out = cluster.kubectl("wait", "-n", namespace, f"--for=condition={condition}", what, "--timeout=480s",
                              check=False)
        assert out.returncode == 0, cluster.kubectl("get", "-n", namespace, what, "-o", "yaml").stdout
    return namespace, tj, sj


def start_dashboard(cluster: Cluster, work: Path, **env: str) -> str:
    """The dashboard (`make dashboard`'s process) running as its own ServiceAccount; its URL."""
    install_dashboard(cluster)
    work.mkdir(exist_ok=True)
    env = {"KUBECONFIG": str(dashboard_kubeconfig(cluster, work / "sa.kubeconfig")),
           "KUBEFORGE_DASHBOARD_SOURCE": "kubernetes", "KUBEFORGE_DASHBOARD_REFRESH_SECONDS": "2", **env}
    return launch.start(work, env, port=0).url


@pytest.fixture
def dashboard(cluster: Cluster, served: tuple[str, str, str]) -> Iterator[str]:
    work = cluster.root / f"dashboard-{served[0]}"
    yield start_dashboard(cluster, work, KUBEFORGE_DASHBOARD_NAMESPACES=served[0])
    launch.stop(work)


@pytest.mark.embedded("builds the dashboard's kubeconfig from the embedded cluster's CA file")
def test_every_page_in_a_real_browser(cluster: Cluster, served: tuple[str, str, str], dashboard: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "install Debian's chromium (.ci/run does)"
    namespace, tj, sj = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)  # Streamlit renders over its websocket after the page loads

        visit(page, dashboard + "/")
        expect(page.get_by_text("Kubeforge jobs").first).to_be_visible()
        grid = page.get_by_test_id("stDataFrame").first
        expect(grid).to_be_visible()
        expect(page.get_by_test_id("stMetric").filter(has_text="Succeeded")).to_contain_text("1")
        expect(page.get_by_test_id("stMetric").filter(has_text="Ready")).to_contain_text("1")
        page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

        visit(page, f"{dashboard}/training?ns={namespace}&name={tj}")
        expect(page.get_by_text(f"TrainingJob {tj}").first).to_be_visible()
        expect(page.get_by_text("Succeeded").first).to_be_visible()
        charts = page.get_by_test_id("stVegaLiteChart")
        expect(charts.first.locator("canvas, svg").first).to_be_visible()
        assert charts.count() >= 2  # loss and eval metric at least
        expect(page.get_by_text("sha256:").first).to_be_visible()
        # table cells are drawn on a canvas; their text lives in the grid's accessible (hidden) table
        expect(page.get_by_text(f"{tj}-node-0").first).to_be_attached()
        page.screenshot(path=str(ARTIFACTS / "training.png"), full_page=True)

        visit(page, f"{dashboard}/serving?ns={namespace}&name={sj}")
        expect(page.get_by_text(f"ServingJob {sj}").first).to_be_visible()
        expect(page.get_by_role("link", name=f"main: TrainingJob {tj}")).to_be_visible()
        expect(page.get_by_test_id("stMetric").filter(has_text="p99 latency")).to_be_visible()
        page.get_by_role("button", name="Send inference request").click()
        expect(page.get_by_text(f"(model {sj})").first).to_be_visible()
        # the next auto-refresh scrapes the servers again and counts that request
        requests = page.get_by_test_id("stMetric").first  # Requests, then Rate, p50 and p99
        expect(requests).to_contain_text("Requests")
        expect(requests).to_contain_text(re.compile(r"Requests\s*[1-9]"))
        page.screenshot(path=str(ARTIFACTS / "serving.png"), full_page=True)

        visit(page, f"{dashboard}/cluster")
        expect(page.get_by_text("kf-node").first).to_be_attached()
        expect(page.get_by_test_id("stMetric").filter(has_text="CPU requested by Kubeforge")).to_be_visible()
        expect(page.get_by_test_id("stMetric").filter(has_text="CPU in use")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "cluster.png"), full_page=True)
        assert not chunk_failures(page)  # every element's code loaded (the page reloads itself when one fails)
        browser.close()


def tenant_token(cluster: Cluster, namespace: str, name: str, reads: bool) -> str:
    """A token of a ServiceAccount in `namespace` that may read Kubeforge's jobs, pods, events and logs
    there (`reads`), or nothing at all."""
    cluster.kubectl("create", "serviceaccount", name, "-n", namespace)
    if reads:
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name},
                "rules": [{"apiGroups": ["kubeforge.dev"], "resources": ["trainingjobs", "servingjobs"],
                           "verbs": ["get", "list", "watch"]},
                          {"apiGroups": [""], "resources": ["pods", "events", "pods/log"], "verbs": ["get", "list"]}]}
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                   "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}
        cluster.apply([role, binding], namespace)
    return str(cluster.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip())


@pytest.mark.embedded("builds the dashboard's kubeconfig from the embedded cluster's CA file")
def test_signed_in_tenants_see_what_their_own_rbac_allows(cluster: Cluster, served: tuple[str, str, str]) -> None:
    """Sign-in on, as in the shipped Deployment: the API server reviews each user's token and rights."""
    from playwright.sync_api import expect, sync_playwright

    namespace, tj, _ = served
    work = cluster.root / f"dashboard-signed-{namespace}"
    url = start_dashboard(cluster, work, KUBEFORGE_DASHBOARD_AUTH="token")
    try:
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url + "/", timeout=30)
        assert denied.value.code == 401
        reader = tenant_token(cluster, namespace, "reader", reads=True)
        outsider = tenant_token(cluster, namespace, "outsider", reads=False)
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        assert chromium, "install Debian's chromium (.ci/run does)"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(http_credentials={"username": "reader", "password": reader})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            visit(page, url + "/")
            expect(page.get_by_text(f"system:serviceaccount:{namespace}:reader").first).to_be_visible()
            expect(page.get_by_text(tj).first).to_be_attached()
            visit(page, f"{url}/cluster")  # nodes are not the tenant's to read
            expect(page.get_by_text("may not list nodes").first).to_be_visible()
            page = browser.new_page(http_credentials={"username": "outsider", "password": outsider})
            visit(page, f"{url}/training?ns={namespace}&name={tj}")
            expect(page.get_by_text("may not get trainingjobs in namespace").first).to_be_visible()
            browser.close()
    finally:
        launch.stop(work)


def test_the_chart_grants_a_namespaced_dashboard_roles_in_its_namespaces_only(helm_bin: Path) -> None:
    chart = REPO / "manifests" / "chart" / "kubeforge"

    def dashboard_docs(*sets: str) -> list[dict[str, Any]]:
        out = helm(helm_bin, "template", "kf", str(chart), "--namespace=kubeforge-system",
                   "--set=dashboard.enabled=true", *(f"--set={x}" for x in sets)).stdout
        return [d for d in yaml.safe_load_all(out) if d and "dashboard" in d["metadata"]["name"]]

    namespaced = dashboard_docs("watchNamespaces={team-a,team-b}")
    roles = [d for d in namespaced if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert not [d for d in namespaced if d["kind"] == "ClusterRole"]  # nothing to read cluster-wide
    [delegator] = [d for d in namespaced if d["kind"] == "ClusterRoleBinding"]
    assert delegator["roleRef"]["name"] == "system:auth-delegator"
    env = {e["name"]: e["value"] for d in namespaced if d["kind"] == "Deployment"
           for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBEFORGE_DASHBOARD_WATCH_NAMESPACES"] == "team-a,team-b" and env["KUBEFORGE_DASHBOARD_AUTH"] == "token"
    assert any(d["kind"] == "NetworkPolicy" for d in namespaced)
    open_ = dashboard_docs("dashboard.auth=none", "dashboard.networkPolicy.enabled=false")
    assert not [d for d in open_ if d["kind"] == "NetworkPolicy" or d["metadata"]["name"].endswith("delegator")]
    bad = subprocess.run([str(helm_bin), "template", "kf", str(chart), "--set=dashboard.auth=maybe"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "auth" in bad.stderr


def test_overview_lists_come_from_one_list_then_watch_events(cluster: Cluster, namespace: str) -> None:
    """The Kubernetes source lists each kind once per scope, then follows changes by watch: a created
    job appears, a status change shows, a deleted job disappears, without a second list."""
    from conftest import wait_for
    from kubeforge_dashboard.kube import KubernetesSource, connect

    install(cluster.kubeconfig)
    src = KubernetesSource(connect(str(cluster.kubeconfig)))
    assert src.training_jobs((namespace,)).items == []
    job = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "watched"},
           "spec": {"recipe": {"model": "mlp", "dataset": "digits"}}}
    cluster.apply(job, namespace)
    wait_for(lambda: [j.metadata.name for j in src.training_jobs((namespace,)).items] == ["watched"], 30,
             what="the new job in the mirror")
    path = f"/apis/kubeforge.dev/v1alpha1/namespaces/{namespace}/trainingjobs/watched/status"
    cluster.client.patch(path, {"status": {"state": "Running", "history": {"loss": "1:2 2:1"}}})

    def state() -> str | None:
        (j,) = src.training_jobs((namespace,)).items
        assert j.status is None or j.status.history is None  # lists never carry curves
        return j.status.state if j.status else None

    wait_for(lambda: state() == "Running", 30, what="the status change in the mirror")
    assert src.training_job(namespace, "watched").status.history == {"loss": "1:2 2:1"}  # type: ignore
    cluster.kubectl("delete", "-n", namespace, "tj/watched")
    wait_for(lambda: src.training_jobs((namespace,)).items == [], 30, what="the deletion in the mirror")
    assert src.calls["list trainingjobs"] == 1
