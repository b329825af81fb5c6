"""Containers as local processes. Each container runs in its pod's network namespace with a
private mount and UTS namespace (its own hostname, /etc/hosts, /etc/resolv.conf and volume
mounts at their `mountPath`) and, where cgroups v1 are writable, a memory cgroup of its own that
enforces `resources.limits.memory` and reports OOM kills, and a cpuacct cgroup that counts its
CPU time (the kubelet's resource metrics; `/proc` sums where cgroups are not writable). Images
are not pulled: the command runs in this machine's Python environment (see `entrypoint`)."""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
CPUACCT_ROOT = Path("/sys/fs/cgroup/cpuacct")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STAGE_ROOT = Path("/run/kubeforge-stage")  # mount points for staged volume sources
# What containers run from, in place of an image: the Python environment and the project it has installed.
REPO = Path(__file__).resolve().parents[2]
IMAGE_DIRS = sorted({Path(sys.prefix).resolve(), REPO})

# Images whose entrypoint we know; any other image must give `command`.
IMAGE_ENTRYPOINTS: dict[str, list[str]] = {
    "kubeforge/trainer": ["python", "-m", "kubeforge_trainer"],
    "kubeforge/operator": ["python", "-m", "kubeforge_operator"],
    "kubeforge/dashboard": ["python", "-m", "streamlit", "run", str(REPO / "dashboard" / "serve.py"),
                            "--server.port=8501", "--server.address=0.0.0.0", "--server.headless=true",
                            "--browser.gatherUsageStats=false"],  # dashboard/Dockerfile's, from the checkout
}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_pull_error(image: str) -> str | None:
    """Images are not pulled; references that can never resolve fail as a pull would.
    A registry host ending in `.invalid` (RFC 2606) or the tag `does-not-exist` fails."""
    host = image.split("/", 1)[0] if "/" in image else ""
    if host.endswith(".invalid") or image.endswith(":does-not-exist"):
        return f'failed to pull and unpack image "{image}": not found'
    return None


def entrypoint(container: Obj) -> list[str]:
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        repo = container.get("image", "").split("@")[0].rsplit(":", 1)[0]
        repo = repo.split("/", 1)[1] if repo.count("/") >= 2 else repo
        if repo not in IMAGE_ENTRYPOINTS:
            raise ValueError(f"image {container.get('image')!r} has no known entrypoint; set command")
        command = IMAGE_ENTRYPOINTS[repo]
    return [*command, *args]


QUANTITY_SUFFIXES = (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40), ("m", 10**-3),
                     ("k", 10**3), ("M", 10**6), ("G", 10**9), ("T", 10**12))


def quantity(q: str | int | float) -> float:
    """The value of a Kubernetes quantity: `512Mi`, `1G`, `1e9`, `250m` (0.25), `2`."""
    s = str(q)
    for suffix, mult in QUANTITY_SUFFIXES:
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * mult
    return float(s)


def parse_quantity(q: str | int | float) -> int:
    """Bytes for a memory quantity such as `512Mi`, `1G` or `1e9`."""
    return int(quantity(q))


def resource_field(resources: dict[str, Any], resource: str, divisor: str | None) -> str:
    """What the downward API's `resourceFieldRef` gives: the quantity in units of `divisor`, rounded
    up, as the kubelet computes it (`limits.cpu` 1 with divisor `1m` is 1000)."""
    group, _, name = resource.partition(".")
    value = quantity((resources.get(group) or {}).get(name, "0")) / quantity(divisor or "1")
    return str(math.ceil(round(value, 9)))


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class CgroupParents:
    """Where a node's per-container cgroups go: memory (limits, OOM) and cpuacct (CPU time)."""

    memory: Path | None = None
    cpuacct: Path | None = None


@dataclass
class Process:
    """One run of a container."""

    popen: subprocess.Popen[bytes]
    started_at: str
    cgroup: Path | None
    log_path: Path
    cpu_cgroup: Path | None = None
    started: float = field(default_factory=time.time)

    def cpu_seconds(self) -> float:
        """CPU time the container has used (cpuacct, else the sum over its processes in /proc)."""
        if self.cpu_cgroup is not None:
            with contextlib.suppress(OSError, ValueError):
                return int((self.cpu_cgroup / "cpuacct.usage").read_text()) / 1e9
        return sum(_proc_cpu_seconds(pid) for pid in self.pids())

    def working_set_bytes(self) -> int:
        """Memory the kubelet calls the working set: usage minus inactive file pages."""
        if self.cgroup is not None:
            with contextlib.suppress(OSError, ValueError):
                usage = int((self.cgroup / "memory.usage_in_bytes").read_text())
                stat = dict(line.split() for line in (self.cgroup / "memory.stat").read_text().splitlines())
                return max(usage - int(stat.get("total_inactive_file", 0)), 0)
        return sum(_proc_rss_bytes(pid) for pid in self.pids())

    def poll(self) -> int | None:
        return self.popen.poll()

    def exit_code(self) -> int:
        rc = self.popen.returncode
        return 128 - rc if rc < 0 else rc

    def oom_killed(self) -> bool:
        if self.cgroup is None:
            return False
        try:
            for line in (self.cgroup / "memory.oom_control").read_text().splitlines():
                if line.startswith("oom_kill ") and int(line.split()[1]) > 0:
                    return True
        except OSError:
            pass
        return False

    def pids(self) -> list[int]:
        if self.cgroup is not None:
            try:
                return [int(p) for p in (self.cgroup / "cgroup.procs").read_text().split()]
            except OSError:
                pass
        return [self.popen.pid] if self.popen.poll() is None else []

    def signal_all(self, sig: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, grace: float) -> None:
        """Stop the container as a container runtime does: one SIGTERM to its main process (PID 1 of
        a real container) and nothing else; once that exits, or after `grace` seconds, SIGKILL
        whatever is left (the kernel kills the rest of a pid namespace when its PID 1 ends).
        Signalling every process and the process group would hand the main process a second
        SIGTERM whenever it ran between the two, and servers read a second SIGTERM as "stop now"."""
        if self.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.poll() is None:
                time.sleep(0.05)
        self.signal_all(signal.SIGKILL)
        self.popen.wait()
        self.release()

    def release(self) -> None:
        if self.cgroup is None:
            return
        for _ in range(50):
            if not self.pids():
                break
            self.signal_all(signal.SIGKILL)
            time.sleep(0.05)
        for group in (self.cgroup, self.cpu_cgroup):
            if group is not None:
                with contextlib.suppress(OSError):
                    group.rmdir()


def _proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _proc_rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class PodFiles:
    """Where a pod's files live on the host: logs, volumes and the per-pod /etc files."""

    root: Path
    hostname: str
    fqdn: str | None
    ip: str
    netns_path: str
    nameserver: str
    namespace: str
    cgroups: CgroupParents = field(default_factory=CgroupParents)

    def prepare(self) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        (self.root / "volumes").mkdir(exist_ok=True)
        names = f"{self.fqdn} {self.hostname}" if self.fqdn else self.hostname
        (self.root / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{self.ip}\t{names}\n")
        search = f"{self.namespace}.svc.cluster.local svc.cluster.local cluster.local"
        (self.root / "resolv.conf").write_text(
            f"nameserver {self.nameserver}\nsearch {search}\noptions ndots:5\n")

    def log_path(self, container: str, restart: int) -> Path:
        return self.root / "logs" / f"{container}.{restart}.log"

    def start(self, name: str, argv: list[str], env: dict[str, str], workdir: str | None,
              mounts: list[Mount], memory_limit: int | None, restart: int) -> Process:
        cgroup = self._cgroup(name, restart, memory_limit)
        cpu_cgroup = self._cpu_cgroup(name, restart)
        lines = ["set -e"]
        for group in (cgroup, cpu_cgroup):
            if group is not None:
                lines.append(f"echo $$ > {shlex.quote(str(group / 'cgroup.procs'))}")
        lines += [
            f"hostname {shlex.quote(self.hostname)}",
            f"mount --bind {shlex.quote(str(self.root / 'hosts'))} /etc/hosts",
            f"mount --bind {shlex.quote(str(self.root / 'resolv.conf'))} /etc/resolv.conf",
        ]
        # Stage every source first: a mount over e.g. /tmp must not hide a later mount's source. The
        # "image" is this machine's Python environment and project: directories of it that a volume
        # would hide (an emptyDir at /tmp, the project under /tmp) are staged too and bound back last.
        stage = STAGE_ROOT / self.root.name / name
        hidden = [d for d in IMAGE_DIRS if any(d.is_relative_to(m.target) for m in mounts)]
        sources = [(m.source, stage / str(i)) for i, m in enumerate(mounts)]
        sources += [(d, stage / f"image-{i}") for i, d in enumerate(hidden)]
        for source, staged in sources:
            make = f"mkdir -p {shlex.quote(str(staged))}" if source.is_dir() else \
                f"mkdir -p {shlex.quote(str(stage))} && touch {shlex.quote(str(staged))}"
            lines += [make, f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(staged))}"]
        for i, m in enumerate(mounts):
            from_q, target = shlex.quote(str(stage / str(i))), shlex.quote(m.target)
            make = f"mkdir -p {target}" if m.source.is_dir() else \
                f"mkdir -p {shlex.quote(str(Path(m.target).parent))} && touch {target}"
            lines += [f"[ -e {target} ] || {make}", f"mount --bind {from_q} {target}"]
            if m.read_only:
                lines.append(f"mount -o remount,bind,ro {target}")
        for i, d in enumerate(hidden):
            lines.append(f"mkdir -p {shlex.quote(str(d))} && mount --bind "
                         f"{shlex.quote(str(stage / f'image-{i}'))} {shlex.quote(str(d))}")
        lines.append(f"cd {shlex.quote(workdir or '/')}")
        lines.append('exec "$@"')
        script = self.root / f"start-{name}.sh"
        script.write_text("\n".join(lines) + "\n")
        log_path = self.log_path(name, restart)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                ["nsenter", f"--net={self.netns_path}", "--", "unshare", "--mount", "--uts",
                 "--propagation", "private", "--", "/bin/sh", str(script), *argv],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return Process(popen, now(), cgroup, log_path, cpu_cgroup)

    def _cpu_cgroup(self, name: str, restart: int) -> Path | None:
        if self.cgroups.cpuacct is None:
            return None
        path = self.cgroups.cpuacct / f"{self.root.name}-{name}-{restart}"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return path

    def _cgroup(self, name: str, restart: int, memory_limit: int | None) -> Path | None:
        if self.cgroups.memory is None:
            return None
        path = self.cgroups.memory / f"{self.root.name}-{name}-{restart}"
        try:
            path.mkdir(parents=True, exist_ok=True)
            if memory_limit:
                (path / "memory.limit_in_bytes").write_text(str(memory_limit))
                with contextlib.suppress(OSError):  # without swap accounting the memory limit alone applies
                    (path / "memory.memsw.limit_in_bytes").write_text(str(memory_limit))
        except OSError:
            return None
        return path


def cgroup_parents(name: str) -> CgroupParents:
    """Memory and cpuacct cgroups for this node's containers (None where cgroups v1 are not writable).
    Ones of the same name are a dead cluster's (a live one holds its bridge name): removed first."""
    remove_cgroup_parents(CgroupParents(CGROUP_ROOT / name, CPUACCT_ROOT / name), timeout=2.0)
    memory = CGROUP_ROOT / name
    try:
        memory.mkdir(parents=True, exist_ok=True)
        (memory / "memory.use_hierarchy").write_text("1")
    except OSError:
        pass
    cpuacct = CPUACCT_ROOT / name
    with contextlib.suppress(OSError):
        cpuacct.mkdir(parents=True, exist_ok=True)
    return CgroupParents(memory if memory.is_dir() else None, cpuacct if cpuacct.is_dir() else None)


def remove_cgroup_parents(parents: CgroupParents, timeout: float = 10.0) -> None:
    """Remove the node's parent cgroups, and any container cgroup still in them: a container whose
    stop outlived the agent's wait, or whose last task the kernel has not finished removing yet."""
    deadline = time.monotonic() + timeout
    for group in (parents.memory, parents.cpuacct):
        while group is not None and group.exists():
            for child in [c for c in group.iterdir() if c.is_dir()]:
                _kill_and_remove(child)
            with contextlib.suppress(OSError):
                group.rmdir()
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)


def _kill_and_remove(group: Path) -> None:
    with contextlib.suppress(OSError):
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(OSError):
        group.rmdir()


def exec_in(pid: int, argv: list[str], timeout: float) -> int:
    """Run `argv` inside the namespaces of process `pid` (exec probes)."""
    try:
        return subprocess.run(
            ["nsenter", f"--target={pid}", "--net", "--mount", "--uts", "--", *argv],
            capture_output=True, timeout=timeout,
        ).returncode
    except subprocess.TimeoutExpired:
        return -1
