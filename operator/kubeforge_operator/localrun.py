"""`kubeforge run JOB.yaml`: a TrainingJob on this machine, decided by the operator's own policy.
Pods become local process groups addressed over 127.0.0.1: each pass builds the same `World` the
controller builds in a cluster (the job, its pods as Pod objects, rank 0's progress), runs the same
`decide`, and carries the plan out on processes. Backoff, disruptions, deadlines, `lastFailure`
and the exit-code table therefore behave exactly as in a cluster. The run record (`run.json`)
holds the job's status for the dashboard."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubeforge_api.constants import (
    API_VERSION,
    LABEL_ATTEMPT,
    LABEL_RANK,
    LABEL_ROLE,
    ROLE_NODE,
    State,
)
from kubeforge_api.constants import Env as E
from kubeforge_api.contracts import ProgressDoc, RunRecord, parse_progress

from .localinputs import container_env, local_mounts, localize, run_init_containers
from .plan import Obj, Plan, World, ts
from .ports import free_port
from .trainingjob.context import Config
from .trainingjob.decide import decide
from .trainingjob.progress import last_step

POLL_SECONDS = 0.2
TERMINAL = (State.SUCCEEDED, State.FAILED)


def local_env(pod: Obj, storage: Path, master_port: int, progress_port: int, termination: Path,
              mounts: dict[str, Path] | None = None) -> dict[str, str]:
    """The rendered pod's env with cluster addresses replaced by loopback ones and mounted paths by
    local folders."""
    env = container_env(pod["spec"]["containers"][0], mounts or {})
    env[E.MASTER_ADDR], env[E.MASTER_PORT] = "127.0.0.1", str(master_port)
    if E.RDZV_ENDPOINT in env:
        env[E.RDZV_ENDPOINT] = f"127.0.0.1:{master_port}"
    if E.PS_ADDRESSES in env:
        env[E.PS_ADDRESSES] = ",".join("127.0.0.1" for _ in env[E.PS_ADDRESSES].split(","))
    env[E.STORAGE_DIR], env[E.PROGRESS_PORT] = str(storage), str(progress_port)
    env[E.TERMINATION_LOG] = str(termination)
    return env


@dataclass
class LocalPod:
    """A rendered pod running as a process group."""

    manifest: Obj
    proc: subprocess.Popen[bytes]
    log: Path
    termination: Path
    port: int
    created: str
    finished: str = ""
    deleting: bool = False

    def as_pod(self) -> Obj:
        """The Pod object a kubelet would report for this process."""
        meta = self.manifest["metadata"]
        code = self.proc.poll()
        if code is not None and not self.finished:
            self.finished = ts(datetime.now(UTC))
        status: Obj = {"phase": "Running", "podIP": "127.0.0.1"}
        if code is not None:
            status["phase"] = "Succeeded" if code == 0 else "Failed"
            code = code if code >= 0 else 128 - code
            term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "finishedAt": self.finished,
                    "message": self._message(code)}
            status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": term}}]
        uid = f"{meta['name']}-{meta['labels'][LABEL_ATTEMPT]}"
        out_meta = {**meta, "uid": uid, "creationTimestamp": self.created}
        if self.deleting:
            out_meta["deletionTimestamp"] = self.created
        return {"kind": "Pod", "metadata": out_meta, "status": status}

    def _message(self, code: int) -> str:
        """The termination message, or the log's tail on error (FallbackToLogsOnError)."""
        with contextlib.suppress(OSError):
            if self.termination.exists() and self.termination.stat().st_size:
                return self.termination.read_text(errors="replace")[:4096]
            if code != 0:
                return "\n".join(self.log.read_text(errors="replace").splitlines()[-5:])[-1024:]
        return ""

    def stop(self) -> None:
        self.deleting = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)


@dataclass
class LocalRun:
    """One TrainingJob run on this machine: its object, its process pods, its folders."""

    job: Obj
    root: Path
    storage: Path
    claims: Path = Path("claims")
    cfg: Config = field(default_factory=lambda: Config(default_image="local", backoff_seconds=1.0, pod_policy=None))
    pods: dict[str, LocalPod] = field(default_factory=dict)
    service: bool = False
    master_port: int = 0
    progress: ProgressDoc | None = None
    polled: float = -1e9

    @classmethod
    def create(cls, doc: Obj, runs: Path, storage: Path | None, claims: Path | None = None) -> LocalRun:
        uid = str(uuid.uuid4())
        name = doc["metadata"]["name"]
        job = {"apiVersion": API_VERSION, "kind": "TrainingJob", "spec": doc.get("spec") or {}, "status": {},
               "metadata": {"name": name, "namespace": "local", "uid": uid, "generation": 1,
                            "resourceVersion": "1", "creationTimestamp": ts(datetime.now(UTC))}}
        root = runs / f"{name}-{uid[:8]}"
        (root / "logs").mkdir(parents=True, exist_ok=True)
        storage = storage or root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        return cls(job, root, storage, claims or Path("claims"))

    @property
    def status(self) -> Obj:
        return dict(self.job.get("status") or {})

    # ----- one pass, as the controller runs it -----
    def world(self) -> World:
        pods = [p.as_pod() for p in self.pods.values()]
        services = [{"kind": "Service", "metadata": {"name": self.job["metadata"]["name"]}}] if self.service else []
        return World(self.job, {"Pod": pods, "Service": services}, frozenset(), datetime.now(UTC), self._probe())

    def _probe(self) -> ProgressDoc | None:
        rank0 = next((p for p in self.pods.values() if p.manifest["metadata"]["labels"][LABEL_ROLE] == ROLE_NODE
                      and p.manifest["metadata"]["labels"][LABEL_RANK] == "0" and p.proc.poll() is None), None)
        if rank0 is None or time.monotonic() - self.polled < self.cfg.progress_interval_seconds / 10:
            return self.progress
        self.polled = time.monotonic()
        since = last_step(self.status.get("history") or {})
        with contextlib.suppress(OSError, ValueError):
            url = f"http://127.0.0.1:{rank0.port}/progress?since={since}"
            with urllib.request.urlopen(url, timeout=0.5) as r:
                self.progress = parse_progress(r.read(64 * 1024)) or self.progress
        return self.progress

    def step(self) -> Plan:
        plan = decide(self.world(), self.cfg)
        self.job["status"] = plan.status
        for ref in plan.delete:
            if ref.name in self.pods:
                self.pods[ref.name].stop()
        for obj in plan.create:
            if obj["kind"] == "Service":
                self.service = True
            else:
                self.start(obj)
        self._reap()
        return plan

    def start(self, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        if not any(p.proc.poll() is None for p in self.pods.values()):
            self.master_port = free_port()  # a fresh rendezvous for each attempt
        port = free_port()
        log, termination = self.root / "logs" / f"{name}.log", self.root / "logs" / f"{name}.termination"
        termination.unlink(missing_ok=True)
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # this environment's torchrun
        mounts = local_mounts(pod, self.claims.resolve(), self.root / "volumes" / name)
        env = {**os.environ, "PATH": path, **local_env(pod, self.storage, self.master_port, port, termination, mounts)}
        c = pod["spec"]["containers"][0]
        argv = [localize(a, mounts) for a in [*c["command"], *c.get("args", [])]]
        failed = run_init_containers(pod, mounts, {"PATH": path}, log, termination)
        if failed:  # the pod ends as its failed init container did (its one line is the termination message)
            argv = [sys.executable, "-c", f"raise SystemExit({failed})"]
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.pods[name] = LocalPod(pod, proc, log, termination, port, ts(datetime.now(UTC)))

    def _reap(self) -> None:
        """Deleted pods disappear once their process has exited (graceful deletion)."""
        for name, p in list(self.pods.items()):
            if p.deleting and p.proc.poll() is not None:
                del self.pods[name]

    def stop_all(self, grace: float = 10.0) -> None:
        for p in self.pods.values():
            p.stop()
        deadline = time.monotonic() + grace
        for p in self.pods.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.proc.wait(max(deadline - time.monotonic(), 0.1))
            if p.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.proc.pid, signal.SIGKILL)
                p.proc.wait()
        self.pods.clear()

    def finished(self) -> bool:
        return self.status.get("state") in TERMINAL

    # ----- the record -----
    def record(self, state: str | None = None) -> RunRecord:
        st = self.status
        return RunRecord(name=self.job["metadata"]["name"], uid=self.job["metadata"]["uid"],
                         file=str(self.job.get("file", "")), spec=self.job["spec"],
                         start_time=self.job["metadata"]["creationTimestamp"],
                         completion_time=st.get("completionTime"), storage=str(self.storage),
                         logs=str(self.root / "logs"), state=state or str(st.get("state", State.PENDING)),
                         restart_count=int(st.get("restartCount", 0)), status=st)

    def save(self, state: str | None = None) -> Path:
        path = self.root / "run.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record(state).dump(), indent=2))
        tmp.replace(path)
        return path


def drive(run: LocalRun, on_pass: Any = None) -> None:
    """Passes until the job is terminal; `on_pass(run, plan)` reports after each one."""
    while True:
        plan = run.step()
        if on_pass is not None:
            on_pass(run, plan)
        if run.finished():
            run.stop_all()
            return
        time.sleep(min(plan.requeue_after or POLL_SECONDS, POLL_SECONDS))
