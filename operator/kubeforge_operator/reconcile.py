"""The one place that acts. kopf events only update the caches and queue the job's key; a worker
then runs one level-based pass: observe the cached pods, `decide`, and apply the plan (creates,
deletes, at most one status write, events). Passes for one job never overlap."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubeforge_api.constants import GROUP, LABEL_JOB, PROGRESS_PORT, ROLE_NODE, TRAININGJOB_PLURAL, VERSION

from . import metrics
from .kube import ApiError, Kube
from .observe import PodView, view
from .progress import last_step
from .status import Config, Plan, decide, ts

Obj = dict[str, Any]
Key = tuple[str, str]
log = logging.getLogger("kubeforge.reconcile")
EXPECTATION_TTL = 30.0  # seconds a created pod may stay unseen before we stop assuming it exists


def job_path(ns: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{TRAININGJOB_PLURAL}/{name}"


def _newer(a: Obj | None, b: Obj) -> bool:
    """Whether `b` is at least as new as cached `a` (resourceVersions compare as integers in etcd)."""
    if a is None:
        return True
    try:
        return int(b["metadata"]["resourceVersion"]) >= int(a["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return True


def _job_key(meta: Obj) -> Key | None:
    """The (namespace, job) a child belongs to, from its job-name label."""
    job = (meta.get("labels") or {}).get(LABEL_JOB)
    return (meta["namespace"], job) if job else None


def _owned_by(obj: Obj, uid: str) -> bool:
    """Children of an earlier job of the same name may linger until garbage-collected: skip them."""
    return any(ref.get("uid") == uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or [])


def status_patch(old: Obj, new: Obj) -> Obj:
    """Merge-patch body turning `old` into `new` (removed keys become null)."""
    patch: Obj = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


class Reconciler:
    def __init__(self, kube: Kube, config: Config, workers: int = 8,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.kube = kube
        self.config = config
        self.clock = clock
        self.jobs: dict[Key, Obj] = {}
        self.pods: dict[Key, dict[str, Obj]] = {}
        self.services: dict[Key, Obj] = {}
        self.expected: dict[Key, dict[str, float]] = {}
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.queued: set[Key] = set()
        self.active: set[Key] = set()
        self.again: set[Key] = set()
        self.timers: dict[Key, asyncio.TimerHandle] = {}
        self.workers = workers
        self.tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()

    # ----- caches, fed by kopf events (and a priming list at startup) -----
    def on_job(self, etype: str | None, job: Obj) -> None:
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        if etype == "DELETED":
            self.jobs.pop(key, None)
            self.expected.pop(key, None)
            timer = self.timers.pop(key, None)
            if timer:
                timer.cancel()
            return
        if _newer(self.jobs.get(key), job):
            self.jobs[key] = job
        self.enqueue(key)

    def on_pod(self, etype: str | None, pod: Obj) -> None:
        meta = pod["metadata"]
        key = _job_key(meta)
        if key is None:
            return
        pods = self.pods.setdefault(key, {})
        if etype == "DELETED":
            if pods.get(meta["name"], {}).get("metadata", {}).get("uid") == meta.get("uid"):
                pods.pop(meta["name"], None)
            if not pods:
                self.pods.pop(key, None)
        elif _newer(pods.get(meta["name"]), pod):
            pods[meta["name"]] = pod
            self.expected.get(key, {}).pop(meta["name"], None)
        self.enqueue(key)

    def on_service(self, etype: str | None, svc: Obj) -> None:
        meta = svc["metadata"]
        key = _job_key(meta)
        if key is None:
            return
        if etype == "DELETED":
            if self.services.get(key, {}).get("metadata", {}).get("uid") == meta.get("uid"):
                self.services.pop(key, None)
        else:
            self.services[key] = svc
        self.enqueue(key)

    async def prime(self, namespaces: list[str]) -> None:
        """List existing children once so the first passes see the world as it is."""
        scopes = [f"/api/v1/namespaces/{ns}" for ns in namespaces] or ["/api/v1"]
        for scope in scopes:
            for pod in await self.kube.list(f"{scope}/pods", LABEL_JOB):
                self.on_pod(None, pod)
            for svc in await self.kube.list(f"{scope}/services", LABEL_JOB):
                self.on_service(None, svc)
        self.ready.set()

    # ----- the work queue -----
    def enqueue(self, key: Key) -> None:
        if key in self.active:
            self.again.add(key)
        elif key not in self.queued:
            self.queued.add(key)
            self.queue.put_nowait(key)

    def requeue_after(self, key: Key, seconds: float) -> None:
        old = self.timers.pop(key, None)
        if old:
            old.cancel()
        self.timers[key] = asyncio.get_running_loop().call_later(seconds, self.enqueue, key)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _worker(self) -> None:
        await self.ready.wait()
        while True:
            key = await self.queue.get()
            self.queued.discard(key)
            self.active.add(key)
            try:
                await self.reconcile(key)
            except ApiError as e:
                if e.status != 409:
                    log.warning("reconcile %s/%s failed: %s", *key, e)
                self.requeue_after(key, 1.0)
            except Exception:
                log.exception("reconcile %s/%s crashed", *key)
                self.requeue_after(key, 5.0)
            finally:
                self.active.discard(key)
                if key in self.again:
                    self.again.discard(key)
                    self.enqueue(key)

    # ----- one pass -----
    async def reconcile(self, key: Key) -> Plan | None:
        job = self.jobs.get(key)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return None
        t0 = time.perf_counter()
        now = self.clock()
        expected = self.expected.setdefault(key, {})
        for name, since in list(expected.items()):
            if time.monotonic() - since > EXPECTATION_TTL:
                expected.pop(name)
        uid = job["metadata"]["uid"]
        pods = [view(p) for p in self.pods.get(key, {}).values() if _owned_by(p, uid)]
        service_exists = key in self.services and _owned_by(self.services[key], uid)
        progress = await self._progress(job, pods)
        plan = decide(job, pods, service_exists, frozenset(expected), now, self.config, progress)
        await self.apply(key, job, plan)
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - t0)
        return plan

    async def _progress(self, job: Obj, pods: list[PodView]) -> Obj | None:
        """Ask rank 0 of the current attempt how training goes (recipe jobs only)."""
        if not (job.get("spec") or {}).get("recipe"):
            return None
        attempt = int((job.get("status") or {}).get("restartCount", 0))
        rank0 = next((p for p in pods if p.role == ROLE_NODE and p.rank == 0 and p.attempt == attempt
                      and p.running and p.ip), None)
        if rank0 is None:
            return None
        since = last_step((job.get("status") or {}).get("history") or {})
        return await self.kube.progress(rank0.ip, PROGRESS_PORT, since)

    async def apply(self, key: Key, job: Obj, plan: Plan) -> None:
        """Status first, guarded by resourceVersion: a pass that decided on stale data gets a 409
        and acts on nothing; a decision (e.g. a restart counted) is durable before it is carried out."""
        ns, name = key
        if plan.delete_job:
            await self.kube.delete(job_path(ns, name))
            return
        old = job.get("status") or {}
        patch = status_patch(old, plan.status)
        if patch:
            updated = await self.kube.patch_status(job_path(ns, name), patch, job["metadata"]["resourceVersion"])
            if _newer(self.jobs.get(key), updated):
                self.jobs[key] = updated
            self._count(ns, old, plan.status)
        now = ts(self.clock())
        await asyncio.gather(*(self.kube.delete_pod(ns, pod, uid) for pod, uid in plan.delete))
        await asyncio.gather(*(self.kube.create(obj) for obj in plan.create),
                             *(self.kube.event(job, ev.type, ev.reason, ev.message, now) for ev in plan.events))
        for obj in plan.create:
            if obj["kind"] == "Pod":
                self.expected.setdefault(key, {})[obj["metadata"]["name"]] = time.monotonic()
            else:
                self.services[key] = obj
        if plan.requeue_after is not None:
            self.requeue_after(key, plan.requeue_after)

    @staticmethod
    def _count(ns: str, old: Obj, new: Obj) -> None:
        def has_created(status: Obj) -> bool:
            return any(c.get("type") == "Created" for c in status.get("conditions") or [])

        if has_created(new) and not has_created(old):
            metrics.JOBS_CREATED.labels(ns).inc()
        if new.get("restartCount", 0) > old.get("restartCount", 0):
            metrics.JOBS_RESTARTED.labels(ns).inc()
        if new.get("state") != old.get("state") and new.get("state") in ("Succeeded", "Failed"):
            (metrics.JOBS_SUCCEEDED if new["state"] == "Succeeded" else metrics.JOBS_FAILED).labels(ns).inc()
