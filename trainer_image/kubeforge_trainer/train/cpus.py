"""How many CPUs this container may really use, and so how many threads each local rank gets.

`os.cpu_count()` is the node's cores; a pod limited to 1 CPU on a 64-core node that starts 64
intra-op threads is throttled by the CFS quota on every step. The usable count is the smallest of:

- the CPUs the process may be scheduled on (`sched_getaffinity`: cpusets, `taskset`);
- the CFS bandwidth quota of the process's cgroup and every ancestor (cgroup v2 `cpu.max`,
  cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`);
- the container's CPU limit as the operator passes it down (`Env.CPU_LIMIT_MILLICORES`, the
  downward API `limits.cpu` in millicores), for runtimes whose cgroup files are not visible.

Fractional CPUs round down (a 1.5-CPU quota gets 1 thread per rank, never a throttled 2), and every
rank keeps at least one thread. The cgroup parsing is ours because the few lines it takes are
simpler than a dependency; the root paths are parameters so tests can point them at a fake tree.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from kubeforge_api.constants import Env

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _memberships(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(cgroup v2 path, cgroup v1 cpu-controller path) of this process, from /proc/self/cgroup."""
    v2 = v1 = None
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _lineage(mount: Path, path: str | None) -> Iterator[Path]:
    """The cgroup directory of `path` under `mount` and its ancestors up to the mount. Inside a
    container without a cgroup namespace the host path does not exist there; the mount root is then
    the container's own cgroup."""
    here = mount / (path or "/").lstrip("/")
    if not here.is_dir():
        here = mount
    while True:
        yield here
        if here == mount or mount not in here.parents:
            return
        here = here.parent


def _v2_quota(directory: Path) -> float | None:
    text = _read(directory / "cpu.max")
    if not text:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max":
        return None
    return int(quota) / int(period or "100000")


def _v1_quota(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    if quota is None or period is None or int(quota) <= 0 or int(period) <= 0:
        return None
    return int(quota) / int(period)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The tightest CFS quota (in CPUs) over this process's cgroup and its ancestors; None if unlimited."""
    v2_path, v1_path = _memberships(proc_cgroup)
    quotas: list[float] = []
    with contextlib.suppress(ValueError):  # a malformed file counts as no limit
        if (root / "cgroup.controllers").exists():  # unified hierarchy mounted at the root
            quotas += [q for d in _lineage(root, v2_path) if (q := _v2_quota(d)) is not None]
        for name in V1_CPU_DIRS:
            mount = root / name
            if mount.is_dir() and not mount.is_symlink():
                quotas += [q for d in _lineage(mount, v1_path) if (q := _v1_quota(d)) is not None]
    return min(quotas) if quotas else None


def env_cpu_limit(env: Mapping[str, str]) -> float | None:
    """The CPU limit the operator passed down, in CPUs; None when absent or not a positive number."""
    try:
        millicores = int(env.get(Env.CPU_LIMIT_MILLICORES, ""))
    except ValueError:
        return None
    return millicores / 1000 if millicores > 0 else None


def available_cpus(env: Mapping[str, str] = os.environ, root: Path = CGROUP_ROOT,
                   proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """CPUs this process may use: affinity, cgroup quota and the operator's limit, rounded down, >= 1."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limits = [float(affinity)] + [q for q in (cgroup_cpu_quota(root, proc_cgroup), env_cpu_limit(env)) if q]
    return max(1, math.floor(min(limits) + 1e-9))


def threads_per_rank(env: Mapping[str, str] = os.environ, root: Path = CGROUP_ROOT,
                     proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """Intra-op threads for one of the `LOCAL_WORLD_SIZE` ranks sharing this container, >= 1."""
    local = max(1, int(env.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, available_cpus(env, root, proc_cgroup) // local)
