"""Resource metrics end to end: per-container cgroup accounting on the node, the real
metrics-server, `kubectl top`, and a HorizontalPodAutoscaler scaling on CPU."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, wait_for

Obj = dict[str, Any]
SPIN = "while True: pass"
# Burns about half a core while the file /load/on exists, idles otherwise.
BURN = """
import os, time
while True:
    if os.path.exists("/load/on"):
        end = time.time() + 0.05
        while time.time() < end: pass
    time.sleep(0.05)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def parse_time(ts: str) -> float:
    return time.mktime(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone


def test_kubectl_top_reports_what_a_busy_pod_burns(resource_metrics: Cluster, namespace: str) -> None:
    cluster = resource_metrics
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "spin"}, "spec": {
        "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "spin", "image": "python:3.11", "command": ["python", "-c", SPIN],
            "resources": {"requests": {"cpu": "100m"}}}]}}, namespace)
    pod = wait_for(lambda: (lambda p: p if p["status"].get("phase") == "Running" else None)(
        cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/spin")), timeout=60, what="spin running")
    pid = int(pod["status"]["containerStatuses"][0]["containerID"].removeprefix("kubeforge://"))
    samples: list[tuple[float, float]] = []  # (time, CPU seconds) of the spinning process, as /proc counts

    def metric() -> Obj | None:
        samples.append((time.time(), cpu_seconds(pid)))
        try:
            return cluster.client.get(f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/spin")
        except Exception:
            return None

    m = wait_for(metric, timeout=90, interval=0.5, what="metrics for the spinning pod")
    m = wait_for(lambda: (lambda n: n if n["timestamp"] != m["timestamp"] else None)(metric()), timeout=30,
                 interval=0.5, what="a second metrics window")  # a whole window while the test watched
    end = parse_time(m["timestamp"])
    start = end - float(m["window"].rstrip("s"))
    burned = (_at(samples, end) - _at(samples, start)) / (end - start)
    reported = int(m["containers"][0]["usage"]["cpu"].removesuffix("n")) / 1e9
    print(f"spinning pod: burned {burned * 1000:.0f}m, metrics API reports {reported * 1000:.0f}m")
    assert abs(reported - burned) <= 0.1 * burned, (reported, burned)
    top = cluster.kubectl("top", "pod", "spin", "-n", namespace, "--no-headers").stdout.split()
    assert top[0] == "spin" and top[1].endswith("m") and int(top[1][:-1]) > 0, top
    nodes = cluster.kubectl("top", "nodes", "--no-headers").stdout.split()
    assert nodes[0] == "kf-node" and nodes[1].endswith("m") and int(nodes[1][:-1]) > 0, nodes


def _at(samples: list[tuple[float, float]], t: float) -> float:
    """CPU seconds at time `t`, interpolated between the samples around it."""
    before = max((s for s in samples if s[0] <= t), default=samples[0])
    after = min((s for s in samples if s[0] >= t), default=samples[-1])
    if after[0] == before[0]:
        return before[1]
    return before[1] + (after[1] - before[1]) * (t - before[0]) / (after[0] - before[0])


@pytest.mark.embedded("switches the load through a hostPath file on this machine")
def test_hpa_scales_a_cpu_bound_deployment_out_and_back_in(resource_metrics: Cluster, namespace: str,
                                                           tmp_path: Path) -> None:
    cluster = resource_metrics
    load = tmp_path / "load"
    load.mkdir()
    load.chmod(0o777)
    cluster.apply([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "burner"}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "burner"}},
            "template": {"metadata": {"labels": {"app": "burner"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "volumes": [{"name": "load", "hostPath": {"path": str(load)}}],
                "containers": [{"name": "burn", "image": "python:3.11", "command": ["python", "-c", BURN],
                                "resources": {"requests": {"cpu": "100m"}},
                                "volumeMounts": [{"name": "load", "mountPath": "/load"}]}]}}}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "burner"}, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burner"},
            "minReplicas": 1, "maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": 50}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5,
                                       "policies": [{"type": "Percent", "value": 100, "periodSeconds": 5}]}}}},
    ], namespace)
    hpa = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/burner"
    wait_for(lambda: any(c["type"] == "ScalingActive" and c["status"] == "True"
                         for c in cluster.client.get(hpa).get("status", {}).get("conditions", [])),
             timeout=90, what="the HPA to read CPU metrics")
    replicas = f"/apis/apps/v1/namespaces/{namespace}/deployments/burner"
    (load / "on").touch()
    t0 = time.monotonic()
    wait_for(lambda: cluster.client.get(replicas)["spec"]["replicas"] > 1, timeout=90, interval=1,
             what="the HPA to scale out under load")
    print(f"HPA scaled out {time.monotonic() - t0:.0f} s after the load started")
    (load / "on").unlink()
    t1 = time.monotonic()
    wait_for(lambda: cluster.client.get(replicas)["spec"]["replicas"] == 1, timeout=120, interval=1,
             what="the HPA to scale back in after the load stopped")
    print(f"HPA scaled back in {time.monotonic() - t1:.0f} s after the load stopped")
