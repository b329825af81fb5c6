"""`make cluster-up` prints a line to paste (`export KUBECONFIG=...`) before the kubeconfig path,
which stays the last line for scripts. The script runs with a stand-in for the cluster process
(it only writes `ready.json`), so no cluster starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "embedded-cluster"
STAND_IN = """#!/usr/bin/env bash
# called as: PY -m minicluster up --dir DIR
while [ "$1" != "--dir" ]; do shift; done
echo '{}' > "$2/ready.json"
exec sleep 60
"""


def test_cluster_up_prints_an_export_line_then_the_path(tmp_path: Path) -> None:
    py, cluster = tmp_path / "python", tmp_path / "cluster"
    py.write_text(STAND_IN)
    py.chmod(0o755)
    try:
        for _ in range(2):  # a fresh start, then "already running": the same two lines
            out = subprocess.run([SCRIPTS / "cluster-up.sh", cluster, py], capture_output=True, text=True,
                                 timeout=60, check=True).stdout.splitlines()
            assert out == [f"export KUBECONFIG={cluster}/admin.kubeconfig", f"{cluster}/admin.kubeconfig"]
    finally:
        subprocess.run([SCRIPTS / "cluster-down.sh", cluster], capture_output=True, timeout=90, check=True)
    assert not cluster.exists()
