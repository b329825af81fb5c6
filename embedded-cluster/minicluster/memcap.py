"""The operator's memory limit in the cluster tests: 512 MiB, as its Deployment declares. Where the
machine delegates a cgroup v2 `memory` controller to us, the operator process runs in a child
cgroup with `memory.max` (the kernel enforces it, as the kubelet would); everywhere the peak
resident set (`VmHWM` of /proc/PID/status) is recorded for every run of the process, and the
session asserts it stayed under the limit. RLIMIT_AS is not used: Python's virtual mappings
(thread stacks, arenas) dwarf what it actually holds."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

LIMIT_BYTES = 512 * 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")


def peak_rss(pid: int) -> int:
    """Peak resident set of a running process in bytes (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def delegated(root: Path = CGROUP_ROOT, self_cgroup: Path = Path("/proc/self/cgroup")) -> Path | None:
    """Our cgroup v2 directory when children of it may get `memory.max`; None otherwise (cgroup v1,
    no memory controller delegated, or not writable)."""
    if not (root / "cgroup.controllers").exists():
        return None  # not a cgroup v2 hierarchy
    try:
        line = next(ln for ln in self_cgroup.read_text().splitlines() if ln.startswith("0::"))
    except (OSError, StopIteration):
        return None
    own = root / line[3:].lstrip("/")
    try:
        enabled = (own / "cgroup.subtree_control").read_text().split()
    except OSError:
        return None
    return own if "memory" in enabled and os.access(own, os.W_OK) else None


def cap(pid: int, name: str, limit: int = LIMIT_BYTES, root: Path = CGROUP_ROOT,
        self_cgroup: Path = Path("/proc/self/cgroup")) -> Path | None:
    """Move `pid` into a child cgroup whose memory.max is `limit`; the cgroup, or None when the
    machine does not allow it (then only the peak is checked)."""
    parent = delegated(root, self_cgroup)
    if parent is None:
        return None
    group = parent / name
    try:
        group.mkdir(exist_ok=True)
        (group / "memory.max").write_text(str(limit))
        with contextlib.suppress(OSError):
            (group / "memory.swap.max").write_text("0")  # a swapping operator would hide its size
        (group / "cgroup.procs").write_text(str(pid))
    except OSError:
        return None
    return group


def release(group: Path | None) -> None:
    """Remove a cgroup made by `cap` once its process is gone."""
    if group is not None:
        with contextlib.suppress(OSError):
            group.rmdir()
