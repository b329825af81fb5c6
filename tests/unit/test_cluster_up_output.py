"""`make cluster-up` prints one line on ClusterIP routing (on, or off with why and what works
instead), one with the object store's S3 endpoint (never its secret key), then a line to paste
(`export KUBECONFIG=...`), then the kubeconfig path, which stays the last line for scripts. The
script runs with a stand-in for the cluster process (it only writes `routing.txt`,
`objectstore.txt` and `ready.json`, as `minicluster up` does once ready), so no cluster starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from minicluster.serviceproxy import ServiceProxy

SCRIPTS = Path(__file__).resolve().parents[2] / "embedded-cluster"
STAND_IN = """#!/usr/bin/env bash
# called as: PY -m minicluster up --dir DIR
while [ "$1" != "--dir" ]; do shift; done
printf '%s\\n' "ROUTING" > "$2/routing.txt"
printf '%s\\n' "STORE" > "$2/objectstore.txt"
echo '{"objectStore": {"secretKey": "SECRET"}}' > "$2/ready.json"
exec sleep 60
"""
HOLDER = "another embedded cluster on this host routes Services (pid 4242, bridge kft1)"
STORE = "object store (S3): http://10.102.0.1:41234 (keys: objectStore in CLUSTER/ready.json)"


def proxy(tmp_path: Path, enabled: bool, reason: str = "") -> ServiceProxy:
    p = ServiceProxy(tmp_path / "minicp", tmp_path / "kubeconfig", tmp_path, "node", "kft2", "10.102.0.1",
                     "10.102.0.0/16", lock_dir=tmp_path / "lock")
    p.enabled, p.reason = enabled, reason
    return p


def test_cluster_up_prints_the_routing_line_an_export_line_then_the_path(tmp_path: Path) -> None:
    line = proxy(tmp_path, False, HOLDER).summary()
    py, cluster = tmp_path / "python", tmp_path / "cluster"
    store = STORE.replace("CLUSTER", str(cluster))
    py.write_text(STAND_IN.replace("ROUTING", line.replace("`", "\\`")).replace("STORE", store))
    py.chmod(0o755)
    try:
        for _ in range(2):  # a fresh start, then "already running": the same four lines
            out = subprocess.run([SCRIPTS / "cluster-up.sh", cluster, py], capture_output=True, text=True,
                                 timeout=60, check=True).stdout.splitlines()
            assert out == [line, store, f"export KUBECONFIG={cluster}/admin.kubeconfig", f"{cluster}/admin.kubeconfig"]
            assert "SECRET" not in "\n".join(out)
    finally:
        subprocess.run([SCRIPTS / "cluster-down.sh", cluster], capture_output=True, timeout=90, check=True)
    assert not cluster.exists()


def test_the_routing_line_says_on_or_off_why_and_what_works_instead(tmp_path: Path) -> None:
    on = proxy(tmp_path, True).summary()
    assert on.startswith("ClusterIP routing: on") and "\n" not in on
    off = proxy(tmp_path, False, HOLDER).summary()
    assert off.startswith(f"ClusterIP routing: off ({HOLDER})") and "\n" not in off
    assert "kubectl port-forward svc/NAME" in off and "port 8080" in off  # the two routes that still work
