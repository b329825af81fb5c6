"""Shared fixtures: the embedded cluster (started once per session; tests isolate by namespace), or any
cluster given with `--kubeconfig` (e.g. kind, with the operator installed there by helm); tests marked
`embedded` need the embedded cluster's internals and skip there, each saying why."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from minicluster.kubeapi import ApiError, KubeClient, NotFound
from minicluster.launch import start_cluster
from minicluster.operator_process import OperatorProcess, install, operator_kubeconfig
from plan_status import check_every_plan

REPO = Path(__file__).resolve().parent.parent
ALLOWED_PRIORITY_CLASS = "kubeforge-test-allowed"  # the session operator allows it; the cluster has none such
# Namespaces the session operator never acts in: a namespaced-mode operator of its own gets them.
NAMESPACED_MODE = ("kf-namespaced-watched", "kf-namespaced-other")
Obj = dict[str, Any]
# Namespaces the session's local operator never acts in: tests of operators installed in the cluster use them.
OPERATOR_FREE = tuple(f"free-{uuid.uuid4().hex[:6]}-{i}" for i in range(4))
_unused_free = iter(OPERATOR_FREE)


@pytest.fixture(autouse=True)
def plans_match_their_status_models(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "unit" in request.path.parts:
        check_every_plan(monkeypatch)


@dataclass(frozen=True)
class Cluster:
    root: Path
    kubeconfig: Path
    client: KubeClient
    info: Obj

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", f"--kubeconfig={self.kubeconfig}", *args], input=input, text=True,
                              capture_output=True, check=check, timeout=600)

    @property
    def routes_services(self) -> bool:
        """Whether this cluster runs kube-proxy (only one cluster per host can; see serviceproxy.py)."""
        return bool(self.info.get("kubeProxy", {}).get("enabled"))

    @property
    def gateway(self) -> str:
        """The pod bridge's host-side address (where the API server listens)."""
        return str(self.info["gateway"])

    def apply(self, docs: list[Obj] | Obj | str | Path, namespace: str | None = None) -> None:
        """`kubectl apply` a manifest file/folder, YAML text or objects."""
        ns = [f"--namespace={namespace}"] if namespace else []
        if isinstance(docs, Path):
            self.kubectl("apply", "--server-side", "-f", str(docs), *ns)
            return
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs if isinstance(docs, list) else [docs])
        self.kubectl("apply", "--server-side", "-f", "-", *ns, input=text)


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.25, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (NotFound, KeyError, IndexError):
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last={last!r}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kubeconfig", default=None, help=(
        "run the cluster tier against this cluster (its current context; the operator must run there) "
        "instead of the embedded one"))


def external_cluster(kubeconfig: Path, root: Path) -> Cluster:
    """A cluster the tests did not start: ClusterIPs route inside it, but not from this machine."""
    client = KubeClient.from_kubeconfig(kubeconfig)
    try:
        client.get("/apis/metrics.k8s.io/v1beta1")
        metrics = True
    except ApiError:
        metrics = False
    return Cluster(root, kubeconfig, client, {"external": True, "kubeProxy": {"enabled": True},
                                              "metricsServer": metrics})


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    given = request.config.getoption("--kubeconfig")
    if given:
        yield external_cluster(Path(given).resolve(), tmp_path_factory.mktemp("external"))
        return
    try:  # KUBEFORGE_CLUSTER_ARGS: more `minicluster up` flags, e.g. --no-metrics-server while iterating
        running = start_cluster(gpus=1, extra=tuple(os.environ.get("KUBEFORGE_CLUSTER_ARGS", "").split()))
    except RuntimeError as e:
        pytest.fail(str(e))
    kubeconfig = running.kubeconfig
    yield Cluster(running.root, kubeconfig, KubeClient.from_kubeconfig(kubeconfig), running.info)
    running.stop()


@dataclass(frozen=True)
class ObjectStore:
    """The session cluster's S3-compatible object store: ready.json's `objectStore`."""
    endpoint: str  # from this machine
    in_cluster_endpoint: str  # from pods
    access_key: str
    secret_key: str
    region: str

    def client(self, secret_key: str | None = None, access_key: str | None = None, unsigned: bool = False) -> Any:
        """boto3's S3 client from this machine (path-style), with the store's keys unless others are given."""
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"},
                        signature_version=UNSIGNED if unsigned else None)
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key, config=config)


@pytest.fixture
def bucket(object_store: ObjectStore) -> Iterator[str]:
    """A fresh bucket in the object store, emptied and deleted afterwards."""
    client, name = object_store.client(), f"kf-test-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    yield name
    with contextlib.suppress(Exception):
        for obj in client.list_objects_v2(Bucket=name).get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
        client.delete_bucket(Bucket=name)


@pytest.fixture
def object_store(cluster: Cluster) -> ObjectStore:
    """The session cluster's object store; skips (saying why) where the cluster has none."""
    store = cluster.info.get("objectStore")
    if not store:
        pytest.skip("this cluster runs without the embedded object store")
    return ObjectStore(store["endpoint"], store["inClusterEndpoint"], store["accessKey"], store["secretKey"],
                       store["region"])


@pytest.fixture
def service_routing(cluster: Cluster) -> Cluster:
    """The session cluster, for tests that need ClusterIP routing; skips (saying why) where another
    embedded cluster on this host holds kube-proxy."""
    if cluster.info.get("external"):
        pytest.skip("this machine cannot reach an external cluster's ClusterIPs")
    if not cluster.routes_services:
        pytest.skip(f"no ClusterIP routing in this cluster: {cluster.info.get('kubeProxy', {}).get('reason')}")
    return cluster


@pytest.fixture
def resource_metrics(cluster: Cluster) -> Cluster:
    """The session cluster, for tests that need metrics.k8s.io (kubectl top, HPA)."""
    if not cluster.info.get("metricsServer"):
        pytest.skip("this cluster runs without metrics-server")
    return cluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "own_clusters: starts and stops embedded clusters of its own (runs first)")
    config.addinivalue_line("markers", "embedded(reason): needs the embedded cluster; skips with --kubeconfig")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start and stop clusters of their own run before the session cluster takes the host's
    kube-proxy lock (they check what a cluster that holds it leaves behind). With `--kubeconfig`, tests
    marked `embedded` skip with the marker's reason."""
    items.sort(key=lambda item: item.get_closest_marker("own_clusters") is None)
    if config.getoption("--kubeconfig"):
        for item in items:
            marker = item.get_closest_marker("embedded")
            if marker is not None:
                item.add_marker(pytest.mark.skip(reason=f"embedded cluster only: {marker.args[0]}"))


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace; tests of Kubeforge's own pods get Pod Security `restricted` enforced."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    restricted = "operator" in request.fixturenames
    labels = {"pod-security.kubernetes.io/enforce": "restricted"} if restricted else {}
    cluster.client.create("/api/v1/namespaces", {"metadata": {"name": name, "labels": labels}})
    wait_for(lambda: cluster.client.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
             what="the default ServiceAccount")
    yield name
    with contextlib.suppress(ApiError):
        cluster.client.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def free_namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace that the session's local operator leaves alone (an installed operator watches it)."""
    name = next(_unused_free)
    cluster.client.create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    with contextlib.suppress(ApiError):
        cluster.client.delete(f"/api/v1/namespaces/{name}")


def absent(cluster: Cluster, path: str) -> bool:
    """Whether the object at API `path` is gone."""
    try:
        cluster.client.get(path)
        return False
    except NotFound:
        return True


def pod_phase(cluster: Cluster, ns: str, name: str) -> str:
    return str(cluster.client.get(f"/api/v1/namespaces/{ns}/pods/{name}").get("status", {}).get("phase", ""))


def pod_logs(cluster: Cluster, ns: str, name: str, container: str | None = None) -> str:
    """The `kubectl logs` equivalent: through the API server to the node's log endpoint."""
    query = {"container": container} if container else None
    return cluster.client.text(f"/api/v1/namespaces/{ns}/pods/{name}/log", query)


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """`make helm`'s binary: built from the Go module once, then reused from the cache."""
    out = subprocess.run([str(REPO / "embedded-cluster" / "build-helm.sh")], capture_output=True, text=True,
                         check=True, timeout=3600)
    return Path(out.stdout.strip().splitlines()[-1])


def helm(binary: Path, *args: str, kubeconfig: Path | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    cfg = [f"--kubeconfig={kubeconfig}"] if kubeconfig else []
    out = subprocess.run([str(binary), *cfg, *args], capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({out.returncode}): {out.stderr}{out.stdout}")
    return out


@pytest.fixture(scope="session")
def operator_process(cluster: Cluster) -> Iterator[OperatorProcess | None]:
    """The operator, running under its shipped RBAC with a token of its own ServiceAccount: a local
    process here, held to its Deployment's 512 MiB memory limit for the whole session (minicluster.memcap
    says how); the installed Deployment (None) in a cluster given with `--kubeconfig`."""
    if cluster.info.get("external"):
        cluster.kubectl("wait", "-n", "kubeforge-system", "--for=condition=Available", "deployment/kubeforge-operator",
                        "--timeout=120s")
        yield None
        return
    install(cluster.kubeconfig)
    kubeconfig = operator_kubeconfig(cluster.kubeconfig, cluster.root / "operator.kubeconfig")
    op = OperatorProcess(kubeconfig, cluster.root / "operator.log", {
        "KUBEFORGE_RESTART_BACKOFF_SECONDS": "1", "KUBEFORGE_LOG_FORMAT": "plain",
        "KUBEFORGE_ALLOWED_PRIORITY_CLASSES": json.dumps([ALLOWED_PRIORITY_CLASS]),
        "KUBEFORGE_DENIED_NAMESPACES": json.dumps(["kube-system", *NAMESPACED_MODE, *OPERATOR_FREE])}).start()
    yield op
    op.stop()
    peak = op.check_memory()
    (cluster.root / "operator-peak-rss-bytes").write_text(f"{peak}\n")


@pytest.fixture
def operator(operator_process: OperatorProcess | None) -> OperatorProcess | None:
    """The session's operator, started again first if an earlier test left it dead (a test that kills it
    and fails half-way must not fail every test after it)."""
    if operator_process is not None:
        operator_process.ensure_running()
    return operator_process


def job(cluster: Cluster, ns: str, name: str) -> Obj:
    return cluster.client.get(f"/apis/kubeforge.dev/v1alpha1/namespaces/{ns}/trainingjobs/{name}")


def condition(obj: Obj, ctype: str) -> Obj | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == ctype), None)


def wait_condition(cluster: Cluster, ns: str, name: str, ctype: str, timeout: float = 120,
                   reason: str | None = None) -> Obj:
    def check() -> Obj | None:
        obj = job(cluster, ns, name)
        c = condition(obj, ctype)
        if c and c["status"] == "True" and (reason is None or c["reason"] == reason):
            return obj
        for terminal in ("Succeeded", "Failed"):  # a terminal state never changes: stop waiting at once
            t = condition(obj, terminal)
            if terminal != ctype and t and t["status"] == "True":
                raise AssertionError(f"{ns}/{name} ended {terminal} while waiting for {ctype}: {obj['status']}")
        return None

    return dict(wait_for(check, timeout, what=f"{ctype}{'/' + reason if reason else ''} on {ns}/{name}"))


@dataclass(frozen=True)
class Queues:
    """One test's Kueue queues: a ResourceFlavor, a ClusterQueue with its quotas, and a LocalQueue in
    `namespace` that points at it (what `queue-name` labels and Workloads' `spec.queueName` name)."""
    flavor: str
    cluster_queue: str
    local_queue: str
    namespace: str


@dataclass
class KueueHarness:
    """Kueue's real manager on the session cluster (`process`: None where Kueue is installed in an
    external cluster), with helpers for queues and Workloads (API `api_version`, Kueue's storage version)."""
    cluster: Cluster
    process: Any  # minicluster.kueue.Kueue | None
    api_version: str = "kueue.x-k8s.io/v1beta2"
    created: list[str] = field(default_factory=list)  # cluster-scoped objects to delete at the end

    def path(self, plural: str, namespace: str | None = None, name: str | None = None) -> str:
        """API path of a Kueue resource (`workloads`, `clusterqueues`, ...), a collection without `name`."""
        ns = f"/namespaces/{namespace}" if namespace else ""
        return f"/apis/{self.api_version}{ns}/{plural}" + (f"/{name}" if name else "")

    def queues(self, namespace: str, cpu: str = "1", memory: str = "1Gi", *, extra: dict[str, str] | None = None,
               cohort: str | None = None, preemption: Obj | None = None, flavor: str | None = None,
               prefix: str = "kf") -> Queues:
        """A fresh ResourceFlavor (or the existing `flavor`), a ClusterQueue with nominal quotas `cpu`,
        `memory` and `extra` (e.g. {"nvidia.com/gpu": "1"}) in an optional `cohort`, with an optional
        `preemption` policy (as the ClusterQueue's spec.preemption, e.g. {"withinClusterQueue":
        "LowerPriority"}), and a LocalQueue in `namespace`; unique names per call. ClusterQueues of a
        cohort lend and borrow quota of a flavor they share: pass the first one's `flavor` to the next."""
        suffix = uuid.uuid4().hex[:6]
        q = Queues(flavor or f"{prefix}-flavor-{suffix}", f"{prefix}-cq-{suffix}", f"{prefix}-lq-{suffix}",
                   namespace)
        quotas = {"cpu": cpu, "memory": memory, **(extra or {})}
        spec: Obj = {"namespaceSelector": {}, "resourceGroups": [{
            "coveredResources": list(quotas), "flavors": [{"name": q.flavor, "resources": [
                {"name": k, "nominalQuota": v} for k, v in quotas.items()]}]}]}
        spec |= {"cohortName": cohort} if cohort else {}
        spec |= {"preemption": preemption} if preemption else {}
        client = self.cluster.client
        if flavor is None:
            client.create(self.path("resourceflavors"), {"apiVersion": self.api_version, "kind": "ResourceFlavor",
                                                         "metadata": {"name": q.flavor}})
            self.created.append(self.path("resourceflavors", name=q.flavor))
        client.create(self.path("clusterqueues"), {"apiVersion": self.api_version, "kind": "ClusterQueue",
                                                   "metadata": {"name": q.cluster_queue}, "spec": spec})
        self.created.append(self.path("clusterqueues", name=q.cluster_queue))
        client.create(self.path("localqueues", namespace), {
            "apiVersion": self.api_version, "kind": "LocalQueue", "metadata": {"name": q.local_queue},
            "spec": {"clusterQueue": q.cluster_queue}})
        wait_for(lambda: self.active(self.path("clusterqueues", name=q.cluster_queue)), timeout=30,
                 what=f"ClusterQueue {q.cluster_queue} Active")
        wait_for(lambda: self.active(self.path("localqueues", namespace, q.local_queue)), timeout=30,
                 what=f"LocalQueue {namespace}/{q.local_queue} Active")
        return q

    def active(self, path: str) -> bool:
        return (condition(self.cluster.client.get(path), "Active") or {}).get("status") == "True"

    def workload(self, namespace: str, name: str) -> Obj:
        return self.cluster.client.get(self.path("workloads", namespace, name))

    @staticmethod
    def admitted(workload: Obj) -> bool:
        """Kueue admitted it: quota reserved (status.admission) and the Admitted condition True."""
        c = condition(workload, "Admitted")
        return bool(workload.get("status", {}).get("admission")) and c is not None and c["status"] == "True"

    def wait_admitted(self, namespace: str, name: str, timeout: float = 30) -> Obj:
        """The Workload once Kueue admitted it."""
        last: Obj = {}

        def check() -> Obj | None:
            last.clear()
            last.update(self.workload(namespace, name))
            return last if self.admitted(last) else None
        try:
            return dict(wait_for(check, timeout, interval=0.05, what=f"Workload {namespace}/{name} Admitted"))
        except AssertionError as e:
            raise AssertionError(f"{e}; its status: {last.get('status')}") from None

    def wait_pending(self, namespace: str, name: str, timeout: float = 30) -> Obj:
        """The Workload's QuotaReserved condition once Kueue set it False (why it waits: reason, message)."""
        def check() -> Obj | None:
            c = condition(self.workload(namespace, name), "QuotaReserved")
            return c if c is not None and c["status"] == "False" else None
        return dict(wait_for(check, timeout, what=f"Workload {namespace}/{name} pending"))

    def cleanup(self, wait: float = 0) -> None:
        """Delete the ClusterQueues and ResourceFlavors `queues` made, and wait up to `wait` seconds until
        they are gone (Kueue removes their finalizers once no Workload uses them)."""
        for path in reversed(self.created):
            with contextlib.suppress(ApiError):
                self.cluster.client.delete(path)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: all(absent(self.cluster, p) for p in self.created), wait, interval=1,
                     what="the test queues gone")
        self.created.clear()


@pytest.fixture(scope="session")
def kueue(cluster: Cluster) -> Iterator[KueueHarness]:
    """Kueue's manager, started on the session cluster the first time a test asks (built from its Go
    module once, then reused); on an external cluster, the Kueue installed there, else a skip."""
    from minicluster.kueue import API_VERSION, Kueue, build

    if cluster.info.get("external"):
        try:
            cluster.client.get(f"/apis/{API_VERSION}")
        except ApiError:
            pytest.skip(f"Kueue ({API_VERSION}) is not installed in the cluster given with --kubeconfig")
        harness = KueueHarness(cluster, None, API_VERSION)
        yield harness
        harness.cleanup(wait=60)  # a cluster that outlives the session
        return
    process = Kueue(build(), cluster.kubeconfig, cluster.root / "kueue", cluster.root / "logs")
    try:
        process.start()
    except (RuntimeError, TimeoutError) as e:
        pytest.fail(f"Kueue's manager did not start: {e}")
    harness = KueueHarness(cluster, process, API_VERSION)
    yield harness
    harness.cleanup()
    process.stop()
