"""Threads that fit the pod, under a real CFS quota: the trainer started inside a cgroup limited to
1 CPU on a machine with more cores uses 1 intra-op thread. Needs permission to create a cgroup with
the cpu controller (root, as the cluster tests run); skipped, with the reason, where that is denied.
tests/unit/test_cpus.py covers the cgroup v1/v2 parsing over fake trees."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubeforge_trainer.train.cpus import available_cpus

MACHINE = len(os.sched_getaffinity(0))


def own_path(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if (controller == "" and names == "") or controller in names.split(","):
            return path
    return "/"


def make_cgroup() -> Path:
    """A child of this process's cgroup limited to 1 CPU (cgroup v2 if unified, else the v1 cpu mount)."""
    name = f"kf-quota-test-{os.getpid()}"
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        group, files = root / own_path("").lstrip("/") / name, {"cpu.max": "100000 100000"}
    else:
        mount = next(root / m for m in ("cpu", "cpu,cpuacct", "cpuacct,cpu") if (root / m).is_dir())
        group = mount / own_path("cpu").lstrip("/") / name
        files = {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"}
    group.mkdir()
    try:
        for file, value in files.items():
            (group / file).write_text(value)
    except OSError:
        group.rmdir()  # e.g. the cpu controller is not delegated to this cgroup
        raise
    return group


@pytest.fixture
def one_cpu_cgroup() -> Iterator[Path]:
    if MACHINE < 2:
        pytest.skip("needs at least 2 CPUs so that a 1-CPU quota is smaller than the machine")
    try:
        group = make_cgroup()
    except (OSError, StopIteration) as e:
        pytest.skip(f"cannot create a cgroup with a CPU quota here: {e}")
    yield group
    group.rmdir()


def test_trainer_under_a_one_cpu_quota_uses_one_thread(one_cpu_cgroup: Path, tmp_path: Path) -> None:
    assert available_cpus({}) == MACHINE >= 2  # this test process itself is not limited
    job = {"strategy": "ddp", "nodes": 1, "procsPerNode": 1, "checkpoint": {"intervalSteps": 1000, "keep": 1},
           "recipe": {"model": "mlp", "dataset": "digits", "epochs": 1, "maxSteps": 2, "batchSize": 64}}
    env = {**os.environ, "KUBEFORGE_SPEC": json.dumps(job), "KUBEFORGE_STORAGE_DIR": str(tmp_path),
           "KUBEFORGE_PROGRESS_PORT": "0"}
    procs = one_cpu_cgroup / "cgroup.procs"
    out = subprocess.run([sys.executable, "-m", "kubeforge_trainer", "train"], env=env, capture_output=True,
                         text=True, timeout=300, preexec_fn=lambda: procs.write_text(str(os.getpid())))
    assert out.returncode == 0, out.stderr[-3000:]
    threads = re.search(r"kubeforge-trainer: rank 0/1, (\d+) intra-op threads", out.stderr)
    assert threads, out.stderr[-3000:]
    assert int(threads.group(1)) == 1
