"""The life of one pod on the node: sandbox, volumes, init containers in order, the main
containers with restartPolicy and probes, status written back to the API server, and graceful
deletion (SIGTERM, grace period, SIGKILL, then the final delete)."""

from __future__ import annotations

import base64
import http.client
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .containers import (
    STAGE_ROOT,
    CgroupParents,
    Mount,
    PodFiles,
    Process,
    entrypoint,
    exec_in,
    image_pull_error,
    now,
    parse_quantity,
    resource_field,
)
from .resourcemetrics import ContainerSample

Obj = dict[str, Any]
log = logging.getLogger(__name__)


class Api(Protocol):
    """What a pod worker needs from the API server (raw JSON dicts in and out)."""

    def patch_pod_status(self, ns: str, name: str, status: Obj) -> None: ...
    def finish_delete(self, ns: str, name: str, uid: str) -> None: ...
    def get(self, path: str) -> Obj: ...
    def create(self, path: str, body: Obj) -> Obj: ...


class SandboxProvider(Protocol):
    def create(self) -> Any: ...
    def destroy(self, sandbox: Any) -> None: ...


class SpecError(Exception):
    """The pod cannot be started as written (a missing ConfigMap key, an unknown image...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Probe:
    spec: Obj
    started: float
    successes: int = 0
    failures: int = 0
    last: float = 0.0
    ok: bool = False

    def due(self, t: float) -> bool:
        if t < self.started + float(self.spec.get("initialDelaySeconds", 0)):
            return False
        return t >= self.last + float(self.spec.get("periodSeconds", 10))

    def record(self, t: float, success: bool) -> bool:
        """Record a result; returns the probe's (possibly changed) verdict."""
        self.last = t
        if success:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.spec.get("successThreshold", 1)):
                self.ok = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.ok = False
        return self.ok


@dataclass
class ContainerState:
    spec: Obj
    runs: int = 0
    proc: Process | None = None
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    ready: bool = False
    next_start: float = 0.0
    done: bool = False  # terminated and will not restart
    readiness: Probe | None = None
    liveness: Probe | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self) -> Obj:
        out: Obj = {
            "name": self.name, "image": self.spec.get("image", ""), "imageID": "",
            "ready": self.ready, "restartCount": max(self.runs - 1, 0), "state": self.state,
            "lastState": self.last_state, "started": "running" in self.state,
        }
        if self.proc is not None:
            out["containerID"] = f"kubeforge://{self.proc.popen.pid}"
        return out


def probe_port(port: int | str, container: Obj) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    named = {p["name"]: p["containerPort"] for p in container.get("ports") or [] if p.get("name")}
    return int(named.get(port, port))


def probe_once(spec: Obj, container: Obj, ip: str, pid: int | None) -> bool:
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "httpGet" in spec:
            g = spec["httpGet"]
            conn = http.client.HTTPConnection(g.get("host") or ip, probe_port(g["port"], container), timeout=timeout)
            conn.request("GET", g.get("path", "/"),
                         headers={h["name"]: h["value"] for h in g.get("httpHeaders") or []})
            status = conn.getresponse().status
            conn.close()
            return 200 <= status < 400
        if "tcpSocket" in spec:
            with socket.create_connection((spec["tcpSocket"].get("host") or ip,
                                           probe_port(spec["tcpSocket"]["port"], container)), timeout=timeout):
                return True
        if "exec" in spec and pid is not None:
            return exec_in(pid, list(spec["exec"]["command"]), timeout) == 0
    except (OSError, http.client.HTTPException, ValueError):
        return False
    return False


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion; `$$(VAR)` escapes."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


class PodWorker:
    """Runs one pod (identified by uid) until it is deleted."""

    def __init__(self, pod: Obj, api: Api, network: SandboxProvider, root: Path, nameserver: str,
                 base_env: dict[str, str], cgroups: CgroupParents, backoff: tuple[float, float],
                 on_exit: Callable[[str], None]) -> None:
        self.pod = pod
        self.api = api
        self.network = network
        self.meta = pod["metadata"]
        self.uid: str = self.meta["uid"]
        self.root = root / f"{self.meta['namespace']}_{self.meta['name']}_{self.uid}"
        self.nameserver = nameserver
        self.base_env = base_env
        self.cgroups = cgroups
        self.backoff = backoff
        self.on_exit = on_exit
        self.wake = threading.Event()
        self.deleting = threading.Event()
        self.killed = False  # the node died: processes SIGKILLed, nothing more said to the API server
        self.write_lock = threading.Lock()  # a status write and `resend` never cross
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.meta['name']}", daemon=True)
        self.sandbox: Any = None
        self.files: PodFiles | None = None
        self.last_status: Obj = {}
        self.init = [ContainerState(c) for c in pod["spec"].get("initContainers") or []]
        self.main = [ContainerState(c) for c in pod["spec"]["containers"]]
        self.phase = "Pending"
        self.start_time = now()

    # ----- driven by the watch -----
    def update(self, pod: Obj) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()
        self.wake.set()

    def kill(self) -> None:
        """The node died: SIGKILL every process of the pod now; the worker then ends (the sandbox
        goes, so the pod's address stops answering) without telling the API server anything."""
        self.killed = True
        self.deleting.set()
        for c in self.init + self.main:
            if c.proc is not None:
                c.proc.signal_all(signal.SIGKILL)
        self.wake.set()

    def resend(self) -> None:
        """Post the pod's last status again (after the node was cut off, or marked not ready)."""
        with self.write_lock:
            if self.last_status and not self.killed:
                self.api.patch_pod_status(self.meta["namespace"], self.meta["name"], self.last_status)

    @property
    def pod_ip(self) -> str | None:
        """The pod's address on the bridge, once its sandbox exists (port-forward connects there)."""
        return str(self.sandbox.ip) if self.sandbox is not None else None

    def container_pid(self, container: str) -> int | None:
        """The main process of a running container (exec enters its namespaces)."""
        c = next((c for c in self.init + self.main if c.name == container), None)
        if c is None or c.proc is None or c.proc.poll() is not None:
            return None
        return int(c.proc.popen.pid)

    def log_file(self, container: str, previous: bool) -> Path | None:
        for c in self.init + self.main:
            if c.name == container:
                n = c.runs - 2 if previous else c.runs - 1
                if self.files is None or n < 0:
                    return None
                path = self.files.log_path(container, n)
                return path if path.exists() else None
        return None

    def resource_samples(self) -> list[ContainerSample]:
        """CPU and memory of the running main containers (the kubelet's resource metrics)."""
        out = []
        for c in self.main:
            proc = c.proc
            if proc is None or proc.poll() is not None:
                continue
            out.append(ContainerSample(c.name, self.meta["name"], self.meta["namespace"], proc.cpu_seconds(),
                                       proc.working_set_bytes(), proc.started))
        return out

    # ----- the pod's life -----
    def _run(self) -> None:
        try:
            attempt = 0
            while not self.deleting.is_set():
                try:
                    self._live()
                    return
                except Exception as e:  # never let one pod take the node down: retry, as the kubelet does
                    log.exception("pod %s/%s: could not create its containers", self.meta["namespace"],
                                  self.meta["name"])
                    attempt += 1
                    self._could_not_create(f"{type(e).__name__}: {e}")
                    self.deleting.wait(min(self.backoff[0] * 2 ** (attempt - 1), self.backoff[1]))
        finally:
            self._teardown()
            if self.deleting.is_set() and not self.killed:
                self.api.finish_delete(self.meta["namespace"], self.meta["name"], self.uid)
            self.on_exit(self.uid)

    def _teardown(self) -> None:
        self._terminate()
        if self.sandbox is not None:
            self.network.destroy(self.sandbox)
            self.sandbox = None
        self._cleanup_volumes()

    def _could_not_create(self, message: str) -> None:
        """The agent failed to set the pod up: its containers wait with `CreateContainerError` (no exit
        code, so nobody reads it as the program failing) and the pod starts over after a back-off."""
        self._teardown()
        for c in self.init + self.main:
            c.proc, c.done, c.ready = None, False, False
            c.state = {"waiting": {"reason": "CreateContainerError", "message": message[-1024:]}}
        self.phase = "Pending"
        try:
            self._write()
        except Exception:
            log.exception("pod %s/%s: status write failed", self.meta["namespace"], self.meta["name"])

    def _live(self) -> None:
        spec = self.pod["spec"]
        for c in self.init + self.main:
            err = image_pull_error(c.spec.get("image", ""))
            if err:
                c.state = {"waiting": {"reason": "ErrImagePull", "message": err}}
                self._write()
                c.state = {"waiting": {"reason": "ImagePullBackOff",
                                       "message": f'Back-off pulling image "{c.spec.get("image")}"'}}
                self._write()
                self.deleting.wait()
                return
        self.sandbox = self.network.create()
        hostname = spec.get("hostname") or self.meta["name"]
        sub = spec.get("subdomain")
        fqdn = f"{hostname}.{sub}.{self.meta['namespace']}.svc.cluster.local" if sub else None
        self.files = PodFiles(self.root, hostname[:63], fqdn, self.sandbox.ip, self.sandbox.netns_path,
                              self.nameserver, self.meta["namespace"], self.cgroups)
        self.files.prepare()
        while True:  # as the kubelet does, retry mounts until their sources exist (claims bind, maps appear)
            try:
                volumes = self._volumes()
                break
            except SpecError as e:
                for c in self.init + self.main:
                    c.state = {"waiting": {"reason": e.reason, "message": e.message}}
                self._write()
                if self.deleting.wait(1.0):
                    return
        self._write()
        policy = spec.get("restartPolicy", "Always")
        for c in self.init:
            while not self.deleting.is_set():
                code = self._run_to_completion(c, volumes)
                if code is None or code == 0:
                    break
                if policy == "Never":
                    self.phase = "Failed"
                    self._write()
                    self.deleting.wait()
                    return
                self._wait_backoff(c, init=True)
            if self.deleting.is_set():
                return
            c.done = True
        self._supervise(volumes, policy)

    def _run_to_completion(self, c: ContainerState, volumes: dict[str, Path]) -> int | None:
        self._start(c, volumes)
        self._write()
        while not self.deleting.is_set():
            if c.proc is None:  # could not be created (a missing key...): retry after the back-off
                if self.deleting.wait(max(c.next_start - time.monotonic(), 0)):
                    return None
                self._start(c, volumes)
                self._write()
                continue
            if c.proc.poll() is not None:
                self._record_exit(c)
                self._write()
                return int(c.state["terminated"]["exitCode"])
            self.wake.wait(0.2)
            self.wake.clear()
        return None

    def _wait_backoff(self, c: ContainerState, init: bool = False) -> None:
        delay = min(self.backoff[0] * 2 ** max(c.runs - 1, 0), self.backoff[1])
        c.next_start = time.monotonic() + delay
        if "terminated" in c.state:
            c.last_state = {"terminated": c.state["terminated"]}
        c.state = {"waiting": {"reason": "CrashLoopBackOff",
                               "message": f"back-off {delay:g}s restarting failed container={c.name}"}}
        self._write()
        if init:
            self.deleting.wait(delay)

    def _supervise(self, volumes: dict[str, Path], policy: str) -> None:
        for c in self.main:
            self._start(c, volumes)
        self._write()
        while not self.deleting.is_set():
            t = time.monotonic()
            for c in self.main:
                if c.done:
                    continue
                if c.proc is None:
                    if t >= c.next_start:
                        self._start(c, volumes)
                    continue
                if c.proc.poll() is not None:
                    self._record_exit(c)
                    code = int(c.state["terminated"]["exitCode"])
                    if policy == "Always" or (policy == "OnFailure" and code != 0):
                        c.proc = None
                        self._wait_backoff(c)
                    else:
                        c.done = True
                    continue
                self._probe(c, t)
            if all(c.done for c in self.main):
                failed = any(c.state["terminated"]["exitCode"] != 0 for c in self.main)
                self.phase = "Failed" if failed else "Succeeded"
                self._write()
                self.deleting.wait()
                return
            self.phase = "Running"
            self._write()
            self.wake.wait(0.2)
            self.wake.clear()

    def _probe(self, c: ContainerState, t: float) -> None:
        assert c.proc is not None and self.sandbox is not None
        if c.liveness is not None and c.liveness.due(t):
            c.liveness.record(t, probe_once(c.liveness.spec, c.spec, self.sandbox.ip, c.proc.popen.pid))
            if c.liveness.failures >= int(c.liveness.spec.get("failureThreshold", 3)):
                grace = float(c.liveness.spec.get("terminationGracePeriodSeconds")
                              or self.pod["spec"].get("terminationGracePeriodSeconds", 30))
                c.proc.stop(grace)
                return
        if c.readiness is None:
            c.ready = True
        elif c.readiness.due(t):
            c.ready = c.readiness.record(t, probe_once(c.readiness.spec, c.spec, self.sandbox.ip, c.proc.popen.pid))

    def _start(self, c: ContainerState, volumes: dict[str, Path]) -> None:
        assert self.files is not None
        try:
            env = self._env(c.spec)
            argv = [expand(a, env) for a in entrypoint(c.spec)]
            mounts = [self._mount(m, volumes) for m in c.spec.get("volumeMounts") or []]
            term = self._termination_file(c)
            term.write_text("")
            mounts.append(Mount(term, c.spec.get("terminationMessagePath", "/dev/termination-log")))
        except SpecError as e:
            c.state = {"waiting": {"reason": e.reason, "message": e.message}}
            c.next_start = time.monotonic() + self.backoff[1]
            return
        except (ValueError, OSError) as e:
            c.state = {"waiting": {"reason": "CreateContainerError", "message": str(e)}}
            c.next_start = time.monotonic() + self.backoff[1]
            return
        limit = (c.spec.get("resources") or {}).get("limits", {}).get("memory")
        try:
            c.proc = self.files.start(c.name, argv, env, c.spec.get("workingDir"), mounts,
                                      parse_quantity(limit) if limit else None, c.runs)
        except OSError as e:
            c.state = {"waiting": {"reason": "CreateContainerError", "message": f"{type(e).__name__}: {e}"}}
            c.next_start = time.monotonic() + self.backoff[0]
            return
        c.runs += 1
        c.state = {"running": {"startedAt": c.proc.started_at}}
        t = time.monotonic()
        c.readiness = Probe(c.spec["readinessProbe"], t) if c.spec.get("readinessProbe") else None
        c.liveness = Probe(c.spec["livenessProbe"], t) if c.spec.get("livenessProbe") else None
        c.ready = c.readiness is None

    def _record_exit(self, c: ContainerState) -> None:
        assert c.proc is not None
        code = c.proc.exit_code()
        reason = "OOMKilled" if c.proc.oom_killed() else "Completed" if code == 0 else "Error"
        c.proc.release()  # only after reading the cgroup's OOM counter
        term = {"exitCode": code, "reason": reason, "startedAt": c.proc.started_at, "finishedAt": now(),
                "containerID": f"kubeforge://{c.proc.popen.pid}"}
        message = self._termination_message(c)
        if message:
            term["message"] = message
        c.state = {"terminated": term}
        c.ready = False

    def _termination_file(self, c: ContainerState) -> Path:
        return self.root / f"termination-{c.name}"

    def _termination_message(self, c: ContainerState) -> str:
        """The container's terminationMessagePath file, else (FallbackToLogsOnError, on error) its log tail."""
        assert c.proc is not None
        written = self._termination_file(c)
        text = written.read_text(errors="replace")[:4096] if written.exists() else ""
        if text or c.spec.get("terminationMessagePolicy") != "FallbackToLogsOnError" or c.proc.exit_code() == 0:
            return text
        lines = c.proc.log_path.read_text(errors="replace").splitlines()[-80:]
        return "\n".join(lines)[-2048:]

    # ----- status -----
    def _conditions(self) -> list[Obj]:
        t = now()
        started = self.sandbox is not None
        initialized = all(c.done for c in self.init)
        ready = started and initialized and self.phase == "Running" and all(c.ready for c in self.main)
        out = [("PodReadyToStartContainers", started), ("Initialized", initialized),
               ("ContainersReady", ready), ("Ready", ready)]
        old = {c["type"]: c for c in self.last_status.get("conditions", [])}
        conds = []
        for ctype, value in out:
            status = "True" if value else "False"
            prev = old.get(ctype)
            ltt = prev["lastTransitionTime"] if prev and prev["status"] == status else t
            conds.append({"type": ctype, "status": status, "lastTransitionTime": ltt})
        return conds

    def _write(self, reason_msg: tuple[str, str] | None = None) -> None:
        status: Obj = {
            "phase": self.phase, "startTime": self.start_time, "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}], "conditions": self._conditions(),
            "containerStatuses": [c.status() for c in self.main],
            "qosClass": self.pod.get("status", {}).get("qosClass", "BestEffort"),
        }
        if self.init:
            status["initContainerStatuses"] = [c.status() for c in self.init]
        if self.sandbox is not None:
            status["podIP"] = self.sandbox.ip
            status["podIPs"] = [{"ip": self.sandbox.ip}]
        if reason_msg:
            status["reason"], status["message"] = reason_msg
            status["phase"] = "Failed"
        with self.write_lock:
            if status != self.last_status:
                self.api.patch_pod_status(self.meta["namespace"], self.meta["name"], status)
                self.last_status = status

    # ----- teardown -----
    def _terminate(self) -> None:
        grace = 0 if self.killed else self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        procs = [c.proc for c in self.init + self.main if c.proc is not None and c.proc.poll() is None]
        threads = [threading.Thread(target=p.stop, args=(float(grace),)) for p in procs]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    def _cleanup_volumes(self) -> None:
        shutil.rmtree(STAGE_ROOT / self.root.name, ignore_errors=True)
        vols = self.root / "volumes"
        if vols.exists():
            for d in vols.iterdir():
                subprocess.run(["umount", "-l", str(d)], capture_output=True)
            shutil.rmtree(vols, ignore_errors=True)

    # ----- volumes and environment -----
    def _volumes(self) -> dict[str, Path]:
        ns = self.meta["namespace"]
        out: dict[str, Path] = {}
        for v in self.pod["spec"].get("volumes") or []:
            name = v["name"]
            local = self.root / "volumes" / name
            if "emptyDir" in v:
                local.mkdir(parents=True, exist_ok=True)
                ed = v["emptyDir"] or {}
                if ed.get("medium") == "Memory":
                    size = ed.get("sizeLimit")
                    opts = f"size={parse_quantity(size)}" if size else "size=50%"
                    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(local)], check=True)
                local.chmod(0o777)
            elif kinds := [k for k in ("configMap", "secret", "downwardAPI") if k in v]:
                self._project(kinds[0], v[kinds[0]], local, (v[kinds[0]] or {}).get("defaultMode", 0o644))
            elif "projected" in v:
                for source in v["projected"].get("sources") or []:
                    for kind, src in source.items():
                        self._project(kind, src, local, v["projected"].get("defaultMode", 0o644))
            elif "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                try:
                    pvc = self.api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}")
                    pv_name = pvc.get("spec", {}).get("volumeName")
                    if not pv_name:
                        raise SpecError("FailedMount", f'persistentvolumeclaim "{claim}" is not bound')
                    pv = self.api.get(f"/api/v1/persistentvolumes/{pv_name}")
                except LookupError:
                    raise SpecError("FailedMount", f'persistentvolumeclaim "{claim}" not found') from None
                host = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
                if not host:
                    raise SpecError("FailedMount", f'persistentvolume "{pv_name}" has no host path')
                local = Path(host)
                os.makedirs(local, exist_ok=True)
            elif "hostPath" in v:
                local = Path(v["hostPath"]["path"])
                if v["hostPath"].get("type") in ("DirectoryOrCreate", None, "") and not local.exists():
                    os.makedirs(local, exist_ok=True)
            else:
                raise SpecError("CreateContainerConfigError", f"volume {name!r}: unsupported volume type")
            out[name] = local
        return out

    def _project(self, kind: str, src: Obj, local: Path, default_mode: int) -> None:
        """Write the files of a configMap, secret, downwardAPI or serviceAccountToken source."""
        ns = self.meta["namespace"]
        local.mkdir(parents=True, exist_ok=True)
        if kind == "serviceAccountToken":
            sa = self.pod["spec"].get("serviceAccountName", "default")
            req = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
                "audiences": [src["audience"]] if src.get("audience") else [],
                "expirationSeconds": int(src.get("expirationSeconds", 3600)),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.meta["name"], "uid": self.uid}}}
            token = self.api.create(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", req)["status"]["token"]
            data, items = {"token": token.encode()}, [{"key": "token", "path": src["path"]}]
        elif kind == "downwardAPI":
            items = src.get("items") or []
            data = {i["path"]: self._field(i["fieldRef"]["fieldPath"]).encode() for i in items if "fieldRef" in i}
            items = [{"key": i["path"], "path": i["path"], **({"mode": i["mode"]} if "mode" in i else {})}
                     for i in items if "fieldRef" in i]
        elif kind in ("configMap", "secret"):
            name = src.get("name") or src.get("secretName") or ""
            plural = "configmaps" if kind == "configMap" else "secrets"
            data = self._get_data(f"/api/v1/namespaces/{ns}/{plural}/{name}", kind, name, bool(src.get("optional")))
            items = src.get("items") or [{"key": k, "path": k} for k in data]
            missing = [i["key"] for i in items if i["key"] not in data]
            if missing and not src.get("optional"):
                raise SpecError("CreateContainerConfigError", f'{kind} "{name}" has no key "{missing[0]}"')
        else:
            raise SpecError("CreateContainerConfigError", f"unsupported volume source {kind!r}")
        for item in items:
            if item["key"] not in data:
                continue
            f = local / item["path"]
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data[item["key"]])
            f.chmod(int(item.get("mode", default_mode)))

    def _get_data(self, path: str, kind: str, name: str, optional: bool) -> dict[str, bytes]:
        try:
            obj = self.api.get(path)
        except LookupError:
            if optional:
                return {}
            raise SpecError("CreateContainerConfigError", f'{kind} "{name}" not found') from None
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        binary = obj.get("binaryData") if kind == "configMap" else None
        if kind == "secret":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        for k, v in (binary or {}).items():
            data[k] = base64.b64decode(v)
        return data

    def _mount(self, m: Obj, volumes: dict[str, Path]) -> Mount:
        if m["name"] not in volumes:
            raise SpecError("CreateContainerConfigError", f"volumeMount {m['name']!r} names no volume")
        src = volumes[m["name"]]
        if m.get("subPath"):
            src = src / m["subPath"]
            if not src.exists():  # race-safe: pods sharing a claim create the same subPath at once
                os.makedirs(src, exist_ok=True)
        return Mount(src, m["mountPath"], bool(m.get("readOnly")))

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        simple = {
            "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
            "spec.nodeName": self.pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", ""),
            "status.podIP": self.sandbox.ip if self.sandbox else "", "status.hostIP": "127.0.0.1",
        }
        if path not in simple:
            raise SpecError("CreateContainerConfigError", f"unsupported fieldRef {path!r}")
        return str(simple[path])

    def _env(self, container: Obj) -> dict[str, str]:
        ns = self.meta["namespace"]
        hostname = self.pod["spec"].get("hostname") or self.meta["name"]
        env = dict(self.base_env)
        env["HOSTNAME"] = hostname
        for src in container.get("envFrom") or []:
            kind = "configMap" if "configMapRef" in src else "secret"
            ref = src.get("configMapRef") or src.get("secretRef") or {}
            path = f"/api/v1/namespaces/{ns}/{'configmaps' if kind == 'configMap' else 'secrets'}/{ref['name']}"
            for k, v in self._get_data(path, kind, ref["name"], bool(ref.get("optional"))).items():
                env[src.get("prefix", "") + k] = v.decode(errors="replace")
        for e in container.get("env") or []:
            if "valueFrom" not in e:
                env[e["name"]] = expand(str(e.get("value", "")), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[e["name"]] = self._field(vf["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
                kind = "configMap" if "configMapKeyRef" in vf else "secret"
                ref = vf.get("configMapKeyRef") or vf["secretKeyRef"]
                plural = "configmaps" if kind == "configMap" else "secrets"
                data = self._get_data(f"/api/v1/namespaces/{ns}/{plural}/{ref['name']}", kind, ref["name"],
                                      bool(ref.get("optional")))
                if ref["key"] in data:
                    env[e["name"]] = data[ref["key"]].decode(errors="replace")
                elif not ref.get("optional"):
                    raise SpecError("CreateContainerConfigError",
                                    f"couldn't find key {ref['key']} in {kind} {ns}/{ref['name']}")
            elif "resourceFieldRef" in vf:
                ref = vf["resourceFieldRef"]
                env[e["name"]] = resource_field(container.get("resources") or {}, ref["resource"], ref.get("divisor"))
        return env
