"""Self-tests of the embedded cluster: the real API server, controllers, scheduler and node agent
behave as a cluster would for the things Kubeforge relies on."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from conftest import Cluster, absent, pod_logs, pod_phase, wait_for
from minicluster.agent import NODE_CPUS_ENV, machine_cpus
from minicluster.controlplane import NODE_NAME
from minicluster.kubeapi import ApiError

pytestmark = pytest.mark.embedded("self-tests of the embedded cluster's node agent")

Obj = dict[str, Any]
PY = "python"


def pod(name: str, script: str, **spec: Any) -> Obj:
    container = {"name": "main", "image": "python:3.11", "command": [PY, "-u", "-c", script]}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": spec.pop("labels", {})},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": [container],
                     **spec}}


def create(cluster: Cluster, ns: str, obj: Obj) -> Obj:
    plural = {"Pod": "pods", "Service": "services", "ConfigMap": "configmaps", "Secret": "secrets",
              "PersistentVolumeClaim": "persistentvolumeclaims"}[obj["kind"]]
    return cluster.client.create(f"/api/v1/namespaces/{ns}/{plural}", obj)


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.harness.kubeforge.dev"},
    "spec": {
        "group": "harness.kubeforge.dev", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                "type": "object",
                "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
                "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}}}}}},
        }],
    },
}


def test_crd_cel_rule_rejects_and_unknown_fields_are_pruned(cluster: Cluster, namespace: str) -> None:
    try:
        cluster.client.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    except ApiError as e:
        assert e.status == 409
    path = f"/apis/harness.kubeforge.dev/v1/namespaces/{namespace}/widgets"
    wait_for(lambda: cluster.client.get(path), what="the CRD to be served")
    with pytest.raises(ApiError) as bad:
        cluster.client.create(path, {"apiVersion": "harness.kubeforge.dev/v1", "kind": "Widget",
                                     "metadata": {"name": "bad"}, "spec": {"min": 5, "max": 1}})
    assert bad.value.status == 422
    assert "min must not exceed max" in bad.value.body
    good = cluster.client.create(path, {"apiVersion": "harness.kubeforge.dev/v1", "kind": "Widget",
                                        "metadata": {"name": "good"}, "spec": {"min": 1, "max": 5, "color": "red"}})
    assert good["spec"] == {"min": 1, "max": 5}


def test_deployment_pods_run_and_readiness_probe_makes_them_ready(cluster: Cluster, namespace: str) -> None:
    server = "python -m http.server 8080"
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                        "name": "web", "image": "python:3.11", "command": ["sh", "-c", f"sleep 1; exec {server}"],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]}}}}
    cluster.apply(dep, namespace)
    rs = wait_for(lambda: cluster.client.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets")["items"],
                  what="a ReplicaSet")
    assert rs[0]["metadata"]["ownerReferences"][0]["name"] == "web"

    def ready_pods() -> list[Obj]:
        pods = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3Dweb")["items"]
        ready = [p for p in pods if p["status"].get("phase") == "Running" and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
        return ready if len(ready) == 2 else []

    pods = wait_for(ready_pods, 90, what="2 ready pods")
    assert len({p["status"]["podIP"] for p in pods}) == 2
    wait_for(lambda: cluster.client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")["status"]
             .get("readyReplicas") == 2, what="deployment readyReplicas=2")


def test_readiness_turns_false_when_probe_fails(cluster: Cluster, namespace: str) -> None:
    p = pod("flappy", "import time; time.sleep(600)", restartPolicy="Always", container={
        "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1,
                           "failureThreshold": 1}})
    create(cluster, namespace, p)
    wait_for(lambda: pod_phase(cluster, namespace, "flappy") == "Running", 60, what="Running")
    time.sleep(3)
    got = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/flappy")
    assert {c["type"]: c["status"] for c in got["status"]["conditions"]}["Ready"] == "False"


def test_indexed_job_with_two_completions_succeeds(cluster: Cluster, namespace: str) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "idx"},
           "spec": {"completions": 2, "parallelism": 2, "completionMode": "Indexed", "backoffLimit": 0,
                    "template": {"spec": {"restartPolicy": "Never", "containers": [{
                        "name": "w", "image": "python:3.11",
                        "command": [PY, "-c", "import os; print('index', os.environ['JOB_COMPLETION_INDEX'])"]}]}}}}
    cluster.client.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)

    def done() -> bool:
        st = cluster.client.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/idx").get("status", {})
        return st.get("succeeded") == 2 and any(c["type"] == "Complete" and c["status"] == "True"
                                                 for c in st.get("conditions", []))

    wait_for(done, 120, what="the Job to complete")
    pods = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name%3Didx")["items"]
    outputs = sorted(pod_logs(cluster, namespace, p["metadata"]["name"]).strip() for p in pods)
    assert outputs == ["index 0", "index 1"]


def test_deleting_an_owner_garbage_collects_its_children(cluster: Cluster, namespace: str) -> None:
    owner = create(cluster, namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    child = pod("child", "import time; time.sleep(600)")
    child["metadata"]["ownerReferences"] = [ref]
    create(cluster, namespace, child)
    create(cluster, namespace, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "child-secret",
                                                                                  "ownerReferences": [ref]}})
    wait_for(lambda: pod_phase(cluster, namespace, "child") == "Running", 60, what="child Running")
    cluster.client.delete(f"/api/v1/namespaces/{namespace}/configmaps/owner")

    wait_for(lambda: absent(cluster, f"/api/v1/namespaces/{namespace}/secrets/child-secret"), 60, what="secret GC")
    wait_for(lambda: absent(cluster, f"/api/v1/namespaces/{namespace}/pods/child"), 60, what="pod GC")


SERVE_NAME = (
    "import http.server, os, socket\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = (socket.gethostname() + ' ' + os.environ['POD_IP']).encode()\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
    "http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()\n"
)


def test_pods_on_the_same_port_reach_each_other_by_dns_name(cluster: Cluster, namespace: str) -> None:
    create(cluster, namespace, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers"},
                                "spec": {"clusterIP": "None", "selector": {"group": "peers"},
                                         "publishNotReadyAddresses": True}})
    env = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    for name in ("alpha", "beta"):
        create(cluster, namespace, pod(name, SERVE_NAME, hostname=name, subdomain="peers",
                                       labels={"group": "peers"}, container={"env": env}))
    client = (
        "import urllib.request, socket, time\n"
        f"for host in ['alpha.peers.{namespace}.svc.cluster.local', 'beta.peers.{namespace}.svc', 'alpha.peers']:\n"
        "    for _ in range(100):\n"
        "        try:\n"
        "            print(host, urllib.request.urlopen(f'http://{host}:8080/', timeout=2).read().decode())\n"
        "            break\n"
        "        except OSError:\n"
        "            time.sleep(0.2)\n"
        "print('all', sorted(a[4][0] for a in socket.getaddrinfo('peers', 8080, socket.AF_INET, socket.SOCK_STREAM)))\n"
    )
    create(cluster, namespace, pod("client", client))
    wait_for(lambda: pod_phase(cluster, namespace, "client") == "Succeeded", 90, what="client Succeeded")
    ips = {n: cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/{n}")["status"]["podIP"]
           for n in ("alpha", "beta")}
    out = pod_logs(cluster, namespace, "client").splitlines()
    assert out[0] == f"alpha.peers.{namespace}.svc.cluster.local alpha {ips['alpha']}"
    assert out[1] == f"beta.peers.{namespace}.svc beta {ips['beta']}"
    assert out[2] == f"alpha.peers alpha {ips['alpha']}"
    assert out[3] == f"all {sorted(ips.values())}"


def test_deleting_a_pod_sends_sigterm_and_honours_the_grace_period(cluster: Cluster, namespace: str) -> None:
    script = (
        "import signal, sys, time\n"
        "def term(*_):\n"
        "    print('got SIGTERM', flush=True); time.sleep(2); print('cleaned up', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "print('started', flush=True)\n"
        "while True: time.sleep(0.1)\n"
    )
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('started', flush=True)\n" \
               "time.sleep(600)\n"
    create(cluster, namespace, pod("graceful", script, terminationGracePeriodSeconds=10))
    create(cluster, namespace, pod("stubborn", stubborn, terminationGracePeriodSeconds=2))
    for name in ("graceful", "stubborn"):
        wait_for(lambda n=name: "started" in pod_logs(cluster, namespace, n), 60, what=f"{name} started")
    logs_dir = next(cluster.root.glob(f"node/pods/{namespace}_graceful_*")) / "logs"
    t0 = time.monotonic()
    cluster.client.delete(f"/api/v1/namespaces/{namespace}/pods/graceful")
    cluster.client.delete(f"/api/v1/namespaces/{namespace}/pods/stubborn")
    for name in ("graceful", "stubborn"):
        wait_for(lambda n=name: absent(cluster, f"/api/v1/namespaces/{namespace}/pods/{n}"), 60,
                 what=f"{name} deleted")
    elapsed = time.monotonic() - t0
    text = (logs_dir / "main.0.log").read_text()
    assert "got SIGTERM" in text and "cleaned up" in text  # the handler ran its 2 s cleanup to the end
    assert 2 <= elapsed < 15




def test_pod_asking_for_more_gpus_than_the_node_has_stays_pending_unschedulable(
        cluster: Cluster, namespace: str) -> None:
    p = pod("greedy", "print('never')", container={"resources": {"limits": {"nvidia.com/gpu": "4"}}})
    create(cluster, namespace, p)

    def unschedulable() -> Obj | None:
        st = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/greedy")["status"]
        return next((c for c in st.get("conditions", []) if c["type"] == "PodScheduled"
                     and c["status"] == "False" and c.get("reason") == "Unschedulable"), None)

    cond = wait_for(unschedulable, 60, what="Unschedulable")
    assert "nvidia.com/gpu" in cond["message"]
    assert pod_phase(cluster, namespace, "greedy") == "Pending"
    ok = pod("modest", "print('one gpu is enough')", container={"resources": {"limits": {"nvidia.com/gpu": "1"}}})
    create(cluster, namespace, ok)
    wait_for(lambda: pod_phase(cluster, namespace, "modest") == "Succeeded", 60, what="1-GPU pod Succeeded")


def test_the_node_advertises_the_machines_cpus_so_a_bigger_request_is_unschedulable(
        cluster: Cluster, namespace: str) -> None:
    expected = os.environ.get(NODE_CPUS_ENV) or machine_cpus()  # the session cluster is started without --cpus
    node = cluster.client.get(f"/api/v1/nodes/{NODE_NAME}")
    assert node["status"]["capacity"]["cpu"] == node["status"]["allocatable"]["cpu"] == expected
    assert cluster.info["nodeCpus"] == expected
    millis = int(expected[:-1]) if expected.endswith("m") else int(float(expected) * 1000)
    p = pod("greedy", "print('never')", container={"resources": {"requests": {"cpu": f"{millis + 1000}m"}}})
    create(cluster, namespace, p)

    def unschedulable() -> Obj | None:
        st = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/greedy")["status"]
        return next((c for c in st.get("conditions", []) if c["type"] == "PodScheduled"
                     and c["status"] == "False" and c.get("reason") == "Unschedulable"), None)

    assert "Insufficient cpu" in wait_for(unschedulable, 60, what="Unschedulable")["message"]


def test_the_cluster_states_its_cluster_ip_routing_in_one_line(cluster: Cluster) -> None:
    line = (cluster.root / "routing.txt").read_text()
    assert line == cluster.info["kubeProxy"]["summary"] + "\n" and line.count("\n") == 1
    assert line.startswith(f"ClusterIP routing: {'on' if cluster.routes_services else 'off'}")


def test_env_volumes_init_containers_and_exit_codes(cluster: Cluster, namespace: str) -> None:
    create(cluster, namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                                "data": {"greeting": "hello", "file.txt": "from configmap"}})
    create(cluster, namespace, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
                                "stringData": {"token": "s3cret"}})
    create(cluster, namespace, {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                                "spec": {"accessModes": ["ReadWriteOnce"],
                                         "resources": {"requests": {"storage": "1Gi"}}}})
    check = (
        "import os, json\n"
        "keys = ['NAME', 'NS', 'UID', 'TEAM', 'NOTE', 'IP', 'GREETING', 'TOKEN', 'MIX']\n"
        "out = {k: os.environ.get(k) for k in keys}\n"
        "out['cm'] = open('/etc/cfg/file.txt').read()\n"
        "out['secret'] = open('/etc/sec/token').read()\n"
        "out['init'] = open('/scratch/order.txt').read()\n"
        "out['shm'] = os.statvfs('/dev/shm').f_blocks > 0\n"
        "out['cwd'] = os.getcwd()\n"
        "open('/data/result.txt', 'w').write('persisted')\n"
        "print(json.dumps(out, sort_keys=True))\n"
        "raise SystemExit(3)\n"
    )
    p = pod("env", check, labels={"team": "ml"})
    p["metadata"]["annotations"] = {"note": "hi"}
    mounts = [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec", "readOnly": True},
              {"name": "work", "mountPath": "/scratch"}, {"name": "shm", "mountPath": "/dev/shm"},
              {"name": "data", "mountPath": "/data"}]
    p["spec"]["containers"][0].update({
        "workingDir": "/scratch", "volumeMounts": mounts,
        "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
            {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
            {"name": "MIX", "value": "$(GREETING)-$(NAME)"},
        ]})
    p["spec"]["initContainers"] = [
        {"name": f"init{i}", "image": "python:3.11", "volumeMounts": [{"name": "work", "mountPath": "/scratch"}],
         "command": ["sh", "-c", f"sleep 0.{3 - i}; echo -n {i} >> /scratch/order.txt"]} for i in (1, 2)]
    p["spec"]["volumes"] = [
        {"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "sec", "secret": {"secretName": "sec"}},
        {"name": "work", "emptyDir": {}}, {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    created = create(cluster, namespace, p)
    wait_for(lambda: pod_phase(cluster, namespace, "env") == "Failed", 90, what="env pod Failed")
    got = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/env")
    term = got["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"
    assert [s["state"]["terminated"]["exitCode"] for s in got["status"]["initContainerStatuses"]] == [0, 0]
    import json
    out = json.loads(pod_logs(cluster, namespace, "env").strip().splitlines()[-1])
    assert out == {
        "NAME": "env", "NS": namespace, "UID": created["metadata"]["uid"], "TEAM": "ml", "NOTE": "hi",
        "IP": got["status"]["podIP"], "GREETING": "hello", "TOKEN": "s3cret", "MIX": "hello-env",
        "cm": "from configmap", "secret": "s3cret", "init": "12", "shm": True, "cwd": "/scratch"}
    pvc = cluster.client.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/data")
    assert pvc["status"]["phase"] == "Bound"
    pv = cluster.client.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    from pathlib import Path
    assert (Path(pv["spec"]["hostPath"]["path"]) / "result.txt").read_text() == "persisted"


def test_restart_policy_liveness_and_kubectl_logs(cluster: Cluster, namespace: str) -> None:
    crash = pod("crashy", "print('boom'); raise SystemExit(7)", restartPolicy="OnFailure")
    create(cluster, namespace, crash)

    def restarted_twice() -> Obj | None:
        st = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/crashy")["status"]
        cs = (st.get("containerStatuses") or [{}])[0]
        return cs if cs.get("restartCount", 0) >= 2 else None

    cs = wait_for(restarted_twice, 60, what="two restarts")
    assert cs["lastState"]["terminated"]["exitCode"] == 7
    assert pod_phase(cluster, namespace, "crashy") == "Running" or "waiting" in cs["state"]
    out = cluster.kubectl("logs", "-n", namespace, "crashy", "--previous")
    assert out.stdout.strip() == "boom"
    live = pod("unhealthy", "import time; time.sleep(600)", restartPolicy="Always", container={
        "livenessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2}})
    create(cluster, namespace, live)

    def killed_by_liveness() -> Obj | None:
        st = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/unhealthy")["status"]
        cs = (st.get("containerStatuses") or [{}])[0]
        return cs if cs.get("restartCount", 0) >= 1 else None

    cs = wait_for(killed_by_liveness, 60, what="a liveness restart")
    assert cs["lastState"]["terminated"]["exitCode"] == 128 + signal.SIGTERM


def test_memory_limit_is_enforced_as_oomkilled(cluster: Cluster, namespace: str) -> None:
    hog = pod("hog", "x = bytearray(400 * 1024 * 1024); print('survived')",
              container={"resources": {"limits": {"memory": "100Mi"}}})
    create(cluster, namespace, hog)
    wait_for(lambda: pod_phase(cluster, namespace, "hog") == "Failed", 60, what="hog Failed")
    term = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/hog")["status"]["containerStatuses"][0][
        "state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (137, "OOMKilled")


def test_unpullable_image_reports_image_pull_backoff(cluster: Cluster, namespace: str) -> None:
    create(cluster, namespace, pod("nopull", "print()", container={"image": "registry.invalid/nope:1"}))

    def waiting() -> Obj | None:
        st = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/nopull")["status"]
        w = ((st.get("containerStatuses") or [{}])[0].get("state") or {}).get("waiting") or {}
        return w if w.get("reason") == "ImagePullBackOff" else None

    assert "registry.invalid/nope:1" in wait_for(waiting, 60, what="ImagePullBackOff")["message"]
