"""`make dashboard` without a cluster: it falls back to the local runs, runs in the background,
prints its URL as the last line, serves the app there, and `make dashboard-down` stops it."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def make(target: str, tmp: Path) -> str:
    env = {**os.environ, "KUBECONFIG": str(tmp / "no-such-kubeconfig"), "KUBEFORGE_RUNS_DIR": str(tmp / "runs"),
           "KUBEFORGE_DASHBOARD_PORT": "0"}
    out = subprocess.run(["make", "-s", target, f"CLUSTER_DIR={tmp}"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_dashboard_runs_in_the_background_and_stops(tmp_path: Path) -> None:
    lines = make("dashboard", tmp_path).strip().splitlines()
    url = lines[-1]
    assert url.startswith("http://127.0.0.1:") and "source: local" in lines[-2]
    pid = int((tmp_path / "dashboard" / "pid").read_text())
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=10) as r:
            assert r.status == 200
    finally:
        assert "dashboard stopped" in make("dashboard-down", tmp_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert "no dashboard was running" in make("dashboard-down", tmp_path)
