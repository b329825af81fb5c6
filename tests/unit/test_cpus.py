"""Threads that fit the pod: the CPU count comes from the container's quota (cgroup v1 and v2,
nested cgroups, the operator's limit), not from the node's cores. The cgroup files are a fake tree
here (a unit test cannot change its own cgroup); tests/component/test_cpu_quota.py runs the trainer
under a real quota where the machine allows it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kubeforge_api.constants import Env
from kubeforge_trainer.train.cpus import available_cpus, cgroup_cpu_quota, threads_per_rank

MACHINE = len(os.sched_getaffinity(0))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def v2_tree(tmp_path: Path, cpu_max: dict[str, str], own: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpuset cpu io memory pids")
    for sub, value in cpu_max.items():
        write(root / sub.lstrip("/") / "cpu.max", value)
    (root / own.lstrip("/")).mkdir(parents=True, exist_ok=True)
    write(tmp_path / "self-cgroup", f"0::{own}")
    return root, tmp_path / "self-cgroup"


def v1_tree(tmp_path: Path, quota: int, period: int, own: str, mount: str = "cpu,cpuacct") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    write(root / mount / own.lstrip("/") / "cpu.cfs_quota_us", str(quota))
    write(root / mount / own.lstrip("/") / "cpu.cfs_period_us", str(period))
    write(root / mount / "cpu.cfs_quota_us", "-1")
    write(root / mount / "cpu.cfs_period_us", "100000")
    write(tmp_path / "self-cgroup", f"12:memory:/x\n4:cpu,cpuacct:{own}\n0::/")
    return root, tmp_path / "self-cgroup"


def test_v2_quota_in_the_own_cgroup(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, {"/": "max 100000", "/kubepods/pod1/c1": "150000 100000"}, "/kubepods/pod1/c1")
    assert cgroup_cpu_quota(root, proc) == 1.5
    assert available_cpus({}, root, proc) == 1  # 1.5 CPUs: one thread, never a throttled second one


def test_v2_tightest_ancestor_wins(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, {"/kubepods/pod1": "100000 100000", "/kubepods/pod1/c1": "max 100000"},
                         "/kubepods/pod1/c1")
    assert cgroup_cpu_quota(root, proc) == 1.0


def test_v2_inside_a_cgroup_namespace_reads_the_root(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, {"/": "50000 100000"}, "/")
    assert cgroup_cpu_quota(root, proc) == 0.5
    assert available_cpus({}, root, proc) == 1  # never zero threads


def test_v2_unlimited_is_the_machine(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, {"/": "max 100000"}, "/")
    assert cgroup_cpu_quota(root, proc) is None
    assert available_cpus({}, root, proc) == MACHINE


def test_v1_quota_and_host_path_missing_in_the_container(tmp_path: Path) -> None:
    root, proc = v1_tree(tmp_path, 100000, 100000, "/kubepods/burstable/pod1/c1")
    assert cgroup_cpu_quota(root, proc) == 1.0
    # Without a cgroup namespace the host's path does not exist in the container: the mount root is ours.
    write(tmp_path / "self-cgroup", "4:cpu,cpuacct:/docker/abcdef")
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "200000")
    assert cgroup_cpu_quota(root, proc) == 2.0


def test_v1_unlimited_quota_is_none(tmp_path: Path) -> None:
    root, proc = v1_tree(tmp_path, -1, 100000, "/a", mount="cpu")
    assert cgroup_cpu_quota(root, proc) is None


def test_no_cgroup_files_at_all(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "none", tmp_path / "none-cgroup") is None


@pytest.mark.skipif(MACHINE < 2, reason="needs a machine with at least 2 CPUs to be smaller than it")
def test_the_operator_limit_bounds_the_count_and_ranks_share_it(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, {"/": "max 100000"}, "/")
    assert available_cpus({Env.CPU_LIMIT_MILLICORES: "1000"}, root, proc) == 1
    assert available_cpus({Env.CPU_LIMIT_MILLICORES: "garbage"}, root, proc) == MACHINE
    env = {Env.CPU_LIMIT_MILLICORES: str(MACHINE * 1000), "LOCAL_WORLD_SIZE": "2"}
    assert threads_per_rank(env, root, proc) == max(1, MACHINE // 2)
    assert threads_per_rank({"LOCAL_WORLD_SIZE": str(MACHINE * 4)}, root, proc) == 1
