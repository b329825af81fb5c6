"""Node-agent robustness: many pods staging one claim path at once, a container the agent
cannot create reported as `CreateContainerError` (waiting, no exit code) rather than as a failed
program, a container stopped the way a container runtime stops it, `kubectl exec` into a container,
and volumes that `make cluster-down` names before deleting them or keeps (`KEEP_VOLUMES=1`) for the
next cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, Cluster, absent, pod_phase, wait_for
from minicluster.containers import Process, now
from minicluster.kubeapi import Informer, KubeClient

pytestmark = pytest.mark.embedded("self-tests of the embedded cluster's node agent")

Obj = dict[str, Any]
PODS = 12


def test_many_pods_stage_the_same_claim_subpath_at_once(cluster: Cluster, namespace: str) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared"},
                   "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}},
                  namespace)
    wait_for(lambda: cluster.client.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/shared")
             ["status"].get("phase") == "Bound", what="the claim to bind")
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"w{i}"}, "spec": {
        "restartPolicy": "Never",
        "volumes": [{"name": "runs", "persistentVolumeClaim": {"claimName": "shared"}}],
        "containers": [{"name": "w", "image": "python:3.11",
                        "command": ["sh", "-c", f"echo w{i} > /out/w{i}.txt"],
                        "volumeMounts": [{"name": "runs", "mountPath": "/out", "subPath": "runs/tight/deep"}]}]}}
        for i in range(PODS)]
    reasons: set[str] = set()  # every waiting reason any pod ever reported

    def seen(_etype: str, pod: Obj) -> None:
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            reasons.add(cs.get("state", {}).get("waiting", {}).get("reason", ""))

    watch = Informer(cluster.client, f"/api/v1/namespaces/{namespace}/pods", seen).start()
    watch.synced.wait(10)
    cluster.apply(pods, namespace)  # one request: the agent sees them all at once
    try:
        wait_for(lambda: all(pod_phase(cluster, namespace, f"w{i}") in ("Succeeded", "Failed")
                             for i in range(PODS)), timeout=120, what="all pods to finish")
    finally:
        watch.stopped.set()
    assert "CreateContainerError" not in reasons, "staging the shared claim path raced"
    phases = {f"w{i}": pod_phase(cluster, namespace, f"w{i}") for i in range(PODS)}
    assert set(phases.values()) == {"Succeeded"}, phases
    pvc = cluster.client.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/shared")
    pv = cluster.client.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    out = Path(pv["spec"]["hostPath"]["path"]) / "runs" / "tight" / "deep"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"w{i}.txt" for i in range(PODS))


def test_a_container_the_agent_cannot_create_waits_with_create_container_error(
        cluster: Cluster, namespace: str) -> None:
    # A hostPath the agent cannot create (its parent is a file): a node-side failure, not the program's.
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "blocked"}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "v", "hostPath": {"path": "/etc/hostname/sub", "type": "DirectoryOrCreate"}}],
        "containers": [{"name": "main", "image": "python:3.11", "command": ["true"],
                        "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}}, namespace)
    path = f"/api/v1/namespaces/{namespace}/pods/blocked"

    def waiting() -> Obj | None:
        st = cluster.client.get(path)["status"]
        cs = (st.get("containerStatuses") or [{}])[0]
        return st if cs.get("state", {}).get("waiting", {}).get("reason") == "CreateContainerError" else None

    st = wait_for(waiting, timeout=60, what="CreateContainerError")
    assert st["phase"] == "Pending" and "reason" not in st, st
    cs = st["containerStatuses"][0]
    assert cs["name"] == "main" and "terminated" not in cs["lastState"], cs
    assert "NotADirectoryError" in cs["state"]["waiting"]["message"], cs
    cluster.client.delete(path)
    wait_for(lambda: absent(cluster, path), timeout=30, what="the blocked pod to be deleted")


STOPPABLE = """
import os, signal, subprocess, sys, time
out = sys.argv[1]
def term(*_):
    with open(out + "/main", "a") as f:
        f.write("SIGTERM\\n")
    time.sleep(0.5)  # a short graceful shutdown: a second SIGTERM in here would be counted too
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\\n"
    "signal.signal(signal.SIGTERM, lambda *_: open(sys.argv[1] + '/child', 'w').close())\\n"
    "time.sleep(60)", out])
open(out + "/pids", "w").write(str(child.pid))
while True:
    time.sleep(0.05)
"""


def test_stopping_a_container_sends_one_sigterm_to_its_main_process_then_kills_the_rest(tmp_path: Path) -> None:
    # A runtime signals a container's PID 1 once (servers read a second SIGTERM as "stop now"); the
    # kernel kills the other processes of the container when PID 1 ends.
    popen = subprocess.Popen([sys.executable, "-c", STOPPABLE, str(tmp_path)], start_new_session=True)
    proc = Process(popen, now(), None, tmp_path / "log")
    child = int(wait_for(lambda: (tmp_path / "pids").exists() and (tmp_path / "pids").read_text(), 30,
                         what="the container's child process"))
    proc.stop(10)
    assert (tmp_path / "main").read_text() == "SIGTERM\n" and proc.exit_code() == 0
    assert not (tmp_path / "child").exists()  # SIGKILLed, never asked to stop
    wait_for(lambda: not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/stat").read_text()
             .rsplit(")", 1)[1].split()[0] in "ZX", 10, what="the child to be killed")


def _claim_and_pod(name: str, script: str) -> str:
    return yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
            "restartPolicy": "Never", "volumes": [{"name": "m", "persistentVolumeClaim": {"claimName": "models"}}],
            "containers": [{"name": "main", "image": "python:3.11", "command": ["sh", "-c", script],
                            "volumeMounts": [{"name": "m", "mountPath": "/m"}]}]}}])


def _up_and_run(root: Path, pod: str, script: str) -> tuple[KubeClient, str]:
    """`make cluster-up` into `root`, then a pod on claim `default/models`: (admin client, the claim's volume)."""
    env = {**os.environ, "CLUSTER_ARGS": "--no-kube-proxy --no-metrics-server"}
    out = subprocess.run([REPO / "embedded-cluster" / "cluster-up.sh", root, sys.executable], env=env,
                         capture_output=True, text=True, timeout=600, check=True).stdout
    kubeconfig = out.splitlines()[-1]
    subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "apply", "-f", "-"], input=_claim_and_pod(pod, script),
                   text=True, capture_output=True, check=True, timeout=60)
    client = KubeClient.from_kubeconfig(Path(kubeconfig))
    wait_for(lambda: client.get(f"/api/v1/namespaces/default/pods/{pod}")["status"].get("phase")
             in ("Succeeded", "Failed"), timeout=120, what=f"pod {pod} to finish")
    volume = client.get("/api/v1/namespaces/default/persistentvolumeclaims/models")["spec"]["volumeName"]
    return client, str(volume)


def _down(root: Path, keep: bool) -> str:
    env = {**os.environ, "KEEP_VOLUMES": "1" if keep else ""}
    return subprocess.run([REPO / "embedded-cluster" / "cluster-down.sh", root], env=env, capture_output=True,
                          text=True, timeout=120, check=True).stdout


@pytest.mark.own_clusters
def test_cluster_down_names_the_volumes_it_deletes_and_keep_volumes_keeps_them(tmp_path: Path) -> None:
    root = tmp_path / "cluster"
    try:
        _, first = _up_and_run(root, "train", "echo trained-weights > /m/model.txt")
        kept = _down(root, keep=True)
        assert kept.splitlines()[0].startswith("keeping 1 volume(s)") and "default/models" in kept, kept
        assert (root / "node" / "volumes" / first / "model.txt").read_text() == "trained-weights\n"
        # The next cluster: the same claim binds to the kept volume, and a pod reads the old model.
        client, second = _up_and_run(root, "serve", "cat /m/model.txt")
        assert second == first
        assert client.text("/api/v1/namespaces/default/pods/serve/log") == "trained-weights\n"
        deleted = _down(root, keep=False)
    finally:
        _down(root, keep=False)
    line = deleted.splitlines()[0]
    assert line.startswith("deleting 1 volume(s)") and "trained models" in line and "default/models" in line, line
    assert "KEEP_VOLUMES=1 keeps them" in line and not root.exists()


@pytest.mark.parametrize("websockets", [True, False], ids=["websocket", "spdy"])
def test_kubectl_exec_runs_in_the_container_with_stdin_output_and_exit_code(
        cluster: Cluster, namespace: str, websockets: bool) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "box"}, "spec": {
        "terminationGracePeriodSeconds": 1, "volumes": [{"name": "data", "emptyDir": {}}],
        "containers": [{"name": "main", "image": "python:3.11", "workingDir": "/data",
                        "command": ["sh", "-c", "echo written > /data/x; exec sleep 3600"],
                        "env": [{"name": "GREETING", "value": "hi"}],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}, namespace)
    wait_for(lambda: pod_phase(cluster, namespace, "box") == "Running", 60, what="box Running")
    env = {**os.environ, "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": str(websockets).lower()}
    script = "echo $GREETING; hostname; pwd; cat x; cat; echo oops >&2; exit 3"
    done = subprocess.run(["kubectl", f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, "exec", "-i", "box",
                           "--", "sh", "-c", script], input="from stdin\n", env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.splitlines() == ["hi", "box", "/data", "written", "from stdin"], done
    assert "oops" in done.stderr and done.returncode == 3, done  # kubectl exits with the command's code
    ok = subprocess.run(["kubectl", f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, "exec", "box", "--",
                         "true"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok
    # `exec -it` from a terminal (script(1) gives kubectl one): the command gets a terminal of its own.
    line = f"stty cols 91 rows 17; kubectl --kubeconfig={cluster.kubeconfig} -n {namespace} exec -it box -- " \
           "sh -c 'test -t 0 && echo tty; stty size'"
    tty = subprocess.run(["script", "-qec", line, "/dev/null"], env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=60)
    assert tty.stdout.replace("^@", "").split()[-3:] == ["tty", "17", "91"], tty  # "^@": the terminal's echo
