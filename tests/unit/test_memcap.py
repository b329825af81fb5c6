"""The cluster tests' memory limit for the operator: a cgroup v2 `memory.max` where the machine
delegates the memory controller, and the peak resident set checked everywhere."""

from __future__ import annotations

import os
from pathlib import Path

from minicluster import memcap


def tree(tmp_path: Path, v2: bool = True, controllers: str = "cpu memory") -> tuple[Path, Path]:
    root, own = tmp_path / "cgroup", tmp_path / "cgroup" / "user.slice" / "tests"
    own.mkdir(parents=True)
    if v2:
        (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    (own / "cgroup.subtree_control").write_text(controllers + "\n")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("0::/user.slice/tests\n")
    return root, self_cgroup


def test_a_delegated_v2_memory_controller_caps_the_process(tmp_path: Path) -> None:
    root, self_cgroup = tree(tmp_path)
    group = memcap.cap(4242, "kubeforge-operator-4242", root=root, self_cgroup=self_cgroup)
    assert group == root / "user.slice" / "tests" / "kubeforge-operator-4242"
    assert (group / "memory.max").read_text() == str(512 * 1024 * 1024)
    assert (group / "cgroup.procs").read_text() == "4242"
    for name in ("memory.max", "memory.swap.max", "cgroup.procs"):
        (group / name).unlink()
    memcap.release(group)
    assert not group.exists()


def test_without_a_delegated_memory_controller_only_the_peak_is_checked(tmp_path: Path) -> None:
    root, self_cgroup = tree(tmp_path / "v1", v2=False)
    assert memcap.cap(1, "x", root=root, self_cgroup=self_cgroup) is None
    root, self_cgroup = tree(tmp_path / "nomem", controllers="cpu")
    assert memcap.cap(1, "x", root=root, self_cgroup=self_cgroup) is None


def test_peak_rss_reads_the_high_water_mark() -> None:
    assert 1024 * 1024 < memcap.peak_rss(os.getpid()) < 64 * 1024 * 1024 * 1024
    assert memcap.peak_rss(2**22 + 12345) == 0  # no such process
