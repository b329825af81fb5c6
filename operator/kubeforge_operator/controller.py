"""The one controller core, the same for every kind. Watch events only update caches and queue the
object's key; a worker then runs one level-based pass: gather the cached object and the children
it owns, let the kind probe what it needs, `decide` (pure, the kind's), and `apply` the plan:
status first (guarded by resourceVersion), then deletes, children's status writes (e.g. a queue's
admission given back), creates and events. Passes for one object never overlap; an unchanged world
gives a plan with no writes.

A kind plugs in with a `Kind`: its name, the child kinds it owns, the cluster-scoped kinds it relates
to (cached in the form the kind projects them to; a change of that form queues every object), a pure
`decide(world) -> Plan` and an optional `probe`. Nothing here knows what a TrainingJob or a ServingJob is."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from kubeforge_api.conditions import set_condition
from kubeforge_api.constants import CONDITION_RECONCILED, GROUP, LABEL_OWNER_UID, Reason

from . import metrics
from .kube import ApiError, Kube
from .plan import Obj, Plan, Refusal, World, ts
from .transitions import message_of, state_of

Key = tuple[str, str]  # (namespace, name)
PostEvent = Callable[[Obj, str, str, str], None]  # (involved object, type, reason, message)
ChildKey = tuple[str, str]  # (kind, name)
log = logging.getLogger("kubeforge.controller")
EXPECTATION_TTL = 30.0  # seconds a created child may stay unseen before we stop assuming it exists
RETRY_BASE, RETRY_MAX = 0.5, 120.0  # seconds: a pass that failed is retried, doubling, capped
SLIM_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


class Kind(Protocol):
    """What a kind brings to the controller."""

    kind: str  # e.g. "TrainingJob"
    plural: str  # e.g. "trainingjobs"
    child_kinds: tuple[str, ...]  # e.g. ("Pod", "Service")
    owner_label: str  # label naming the owner on objects it owns indirectly (a Deployment's pods); "" if none
    related_kinds: tuple[str, ...]  # cluster-scoped kinds its decisions read, e.g. ("Node",)

    def related(self, kind: str, obj: Obj) -> Obj | None:
        """What the kind needs of a related object (None: nothing); only a change of it queues passes."""
        ...

    def decide(self, world: World) -> Plan: ...

    async def probe(self, world: World, kube: Kube) -> Any: ...

    def forget(self, key: Key) -> None: ...


def key_of(obj: Obj) -> Key:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def newer(a: Obj | None, b: Obj) -> bool:
    """Whether `b` is at least as new as cached `a` (resourceVersions compare as integers in etcd)."""
    if a is None:
        return True
    try:
        return int(b["metadata"]["resourceVersion"]) >= int(a["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return True


def controller_of(obj: Obj) -> Obj | None:
    """The ownerReference of our group that controls `obj`, if any."""
    return next((r for r in obj["metadata"].get("ownerReferences") or []
                 if r.get("controller") and str(r.get("apiVersion", "")).startswith(f"{GROUP}/")), None)


def owned_by(child: Obj, uid: str) -> bool:
    """Whether `child` belongs to the object with `uid`, directly or through the owner-uid label."""
    if (controller_of(child) or {}).get("uid") == uid:
        return True
    return bool((child["metadata"].get("labels") or {}).get(LABEL_OWNER_UID) == uid)


def slim(obj: Obj, keep_spec: bool = True) -> Obj:
    """What the cache keeps of an object: server bookkeeping nobody reads is dropped, and for a
    child its spec too (a kind decides from a child's metadata and status; what it wants of the
    spec it rendered itself, and the spec-hash annotation says whether that changed), except the node
    a pod was bound to (which only the scheduler writes)."""
    meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    if meta.get("annotations"):
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k not in SLIM_ANNOTATIONS}
    out = {k: v for k, v in obj.items() if keep_spec or k != "spec"} | {"metadata": meta}
    node = (obj.get("spec") or {}).get("nodeName") if not keep_spec else None
    if isinstance(node, str) and node:
        out["spec"] = {"nodeName": node}
    return out


def status_patch(old: Obj, new: Obj) -> Obj:
    """Merge-patch body turning `old` into `new`: removed keys become null, at every depth (a merge
    patch merges objects, so a key left out of a nested object would otherwise stay)."""
    patch: Obj = {}
    for k, v in new.items():
        before = old.get(k)
        if isinstance(v, dict) and isinstance(before, dict):
            if before != v:
                patch[k] = status_patch(before, v)
        elif before != v or k not in old:
            patch[k] = v
    patch.update({k: None for k in old if k not in new})
    return patch


class WorkQueue:
    """Keys waiting for a pass; a key queued while its pass runs is run again right after."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.queued: set[Key] = set()
        self.active: set[Key] = set()
        self.again: set[Key] = set()
        self.timers: dict[Key, asyncio.TimerHandle] = {}

    def add(self, key: Key) -> None:
        if key in self.active:
            self.again.add(key)
        elif key not in self.queued:
            self.queued.add(key)
            self.queue.put_nowait(key)

    def add_after(self, key: Key, seconds: float) -> None:
        self.cancel(key)
        self.timers[key] = asyncio.get_running_loop().call_later(seconds, self.add, key)

    def cancel(self, key: Key) -> None:
        timer = self.timers.pop(key, None)
        if timer:
            timer.cancel()

    async def take(self) -> Key:
        key = await self.queue.get()
        self.queued.discard(key)
        self.active.add(key)
        return key

    def done(self, key: Key) -> None:
        self.active.discard(key)
        if key in self.again:
            self.again.discard(key)
            self.add(key)


class Expectations:
    """Children created but not yet seen, per owner. Recorded before the create (the watch may
    deliver the child before the create returns), dropped when the create fails or the child is
    seen, forgotten after `ttl` seconds (a create whose object never shows up is tried again)."""

    def __init__(self, ttl: float = EXPECTATION_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.clock = ttl, clock
        self.pending: dict[Key, dict[ChildKey, float]] = {}

    def expect(self, key: Key, child: ChildKey) -> None:
        self.pending.setdefault(key, {})[child] = self.clock()

    def observed(self, key: Key, child: ChildKey) -> None:
        """The child was seen (or its create failed): nothing to wait for."""
        owned = self.pending.get(key)
        if owned is not None:
            owned.pop(child, None)
            if not owned:
                del self.pending[key]

    def forget(self, key: Key) -> None:
        self.pending.pop(key, None)

    def of(self, key: Key) -> frozenset[ChildKey]:
        """What `key` still waits for, expired entries dropped."""
        owned = self.pending.get(key, {})
        for child, since in list(owned.items()):
            if self.clock() - since > self.ttl:
                self.observed(key, child)
        return frozenset(self.pending.get(key, {}))


class Controller:
    """Caches, queue, expectations and apply for one kind."""

    def __init__(self, kind: Kind, kube: Kube, post_event: PostEvent, workers: int = 8,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 denied_namespaces: frozenset[str] = frozenset()) -> None:
        self.kind = kind
        self.denied = denied_namespaces
        self.refusals: dict[Key, tuple[Refusal, ...]] = {}
        self.retries: dict[Key, int] = {}
        self.kube = kube
        self.post_event = post_event
        self.clock = clock
        self.objs: dict[Key, Obj] = {}
        self.children: dict[Key, dict[ChildKey, Obj]] = {}
        self.related: dict[str, dict[str, Obj]] = {kind: {} for kind in kind.related_kinds}
        self.expectations = Expectations()
        self.queue = WorkQueue()
        self.workers = workers
        self.tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()

    # ----- caches, fed by watch events (and a priming list at startup) -----
    def on_object(self, etype: str | None, obj: Obj) -> None:
        key = key_of(obj)
        if key[0] in self.denied:  # never act in these namespaces, whatever a user creates there
            return
        if etype == "DELETED":
            self.objs.pop(key, None)
            self.expectations.forget(key)
            self.refusals.pop(key, None)
            self.retries.pop(key, None)
            self.queue.cancel(key)
            self.kind.forget(key)
            return
        old = self.objs.get(key)
        if newer(old, obj):
            if old is not None and old["metadata"].get("generation") != obj["metadata"].get("generation"):
                self.refusals.pop(key, None)  # a changed spec deserves another try
            self.objs[key] = slim(obj)
        self.queue.add(key)

    def owner_key(self, child: Obj) -> Key | None:
        """The object of this kind that owns `child`: its controller, or the owner label of a grandchild."""
        meta = child["metadata"]
        owner = controller_of(child)
        if owner is not None and owner.get("kind") == self.kind.kind:
            return meta["namespace"], str(owner.get("name"))
        name = (meta.get("labels") or {}).get(self.kind.owner_label) if self.kind.owner_label else None
        return (meta["namespace"], name) if name else None

    def on_child(self, etype: str | None, child: Obj) -> None:
        key = self.owner_key(child)
        if key is None or key[0] in self.denied:
            return
        ckey = (child["kind"], child["metadata"]["name"])
        owned = self.children.setdefault(key, {})
        if etype == "DELETED":
            if owned.get(ckey, {}).get("metadata", {}).get("uid") == child["metadata"].get("uid"):
                owned.pop(ckey, None)
            if not owned:
                self.children.pop(key, None)
        elif newer(owned.get(ckey), child):
            owned[ckey] = slim(child, keep_spec=False)
            self.expectations.observed(key, ckey)
        self.queue.add(key)

    def on_related(self, etype: str | None, obj: Obj) -> None:
        """A cluster-scoped object the kind relates to changed: keep its projection; when that changed,
        every object with children looks again (a Node lost concerns whoever has pods on it)."""
        cache = self.related.get(obj.get("kind", ""))
        if cache is None:
            return
        name = obj["metadata"]["name"]
        seen = None if etype == "DELETED" else self.kind.related(obj["kind"], obj)
        if seen == cache.get(name):
            return
        if seen is None:
            cache.pop(name, None)
        else:
            cache[name] = seen
        for key in self.children:
            self.queue.add(key)

    def enqueue_related(self, ns: str, refers: Callable[[Obj], bool]) -> None:
        """Queue the objects of namespace `ns` that `refers` to something that just changed."""
        for key, obj in self.objs.items():
            if key[0] == ns and refers(obj):
                self.queue.add(key)

    async def prime(self, namespaces: list[str]) -> None:
        """List existing children once so the first passes see the world as it is."""
        for kind in self.kind.child_kinds:
            for child in await self.kube.list_children(kind, namespaces):
                self.on_child(None, {"kind": kind, **child})
        for kind in self.kind.related_kinds:
            try:
                found = await self.kube.list_cluster(kind)
            except ApiError as e:  # e.g. namespaced RBAC without the grant: decide without them
                log.warning("%s: cannot list %s (%s); decisions go without them", self.kind.kind, kind, e)
                continue
            for item in found:
                self.on_related(None, {"kind": kind, **item})
        self.ready.set()

    # ----- workers -----
    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _worker(self) -> None:
        await self.ready.wait()
        while True:
            key = await self.queue.take()
            try:
                await self.reconcile(key)
                self.retries.pop(key, None)
            except ApiError as e:
                if e.status == 409:  # a stale pass: the watch brings the newer object, look again soon
                    self.queue.add_after(key, RETRY_BASE)
                else:
                    log.warning("%s %s/%s: %s", self.kind.kind, *key, e)
                    self.queue.add_after(key, self._retry_delay(key))
            except Exception as e:
                log.exception("%s %s/%s: the pass crashed", self.kind.kind, *key)
                self.queue.add_after(key, self._retry_delay(key))
                await self._report_crash(key, e)
            finally:
                self.queue.done(key)

    def _retry_delay(self, key: Key) -> float:
        self.retries[key] = self.retries.get(key, 0) + 1
        return float(min(RETRY_BASE * 2 ** (self.retries[key] - 1), RETRY_MAX))

    # ----- one pass -----
    def world(self, key: Key) -> World | None:
        """What a pass of `key` sees; None when there is nothing to reconcile."""
        obj = self.objs.get(key)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None
        uid = obj["metadata"]["uid"]
        children: dict[str, list[Obj]] = {}
        for (kind, _), child in sorted(self.children.get(key, {}).items()):
            if owned_by(child, uid):  # not a leftover of an earlier namesake
                children.setdefault(kind, []).append(child)
        return World(obj, children, self.expectations.of(key), self.clock(), refusals=self.refusals.get(key, ()),
                     related={kind: dict(objs) for kind, objs in self.related.items()})

    async def _report_crash(self, key: Key, error: Exception) -> None:
        """Say on the object itself that its passes crash (condition Reconciled=False), so a user learns
        it from `kubectl describe`; the next pass that completes removes the condition."""
        obj = self.objs.get(key)
        if obj is None:
            return
        old = obj.get("status") or {}
        first_line = (str(error).splitlines() or [""])[0][:200]
        conditions = set_condition(list(old.get("conditions") or []), CONDITION_RECONCILED, False,
                                   Reason.RECONCILE_ERROR, f"the operator cannot reconcile this {self.kind.kind}: "
                                   f"{type(error).__name__}: {first_line}; the operator's log has the details",
                                   ts(self.clock()), int(obj["metadata"].get("generation", 0)))
        patch = status_patch(old, {**old, "conditions": conditions})
        if not patch:
            return
        path = self.kube.custom_path(self.kind.plural, *key)
        try:
            updated = await self.kube.patch_status(path, patch, obj["metadata"]["resourceVersion"])
        except ApiError as e:
            log.warning("%s %s/%s: could not report the crash: %s", self.kind.kind, *key, e)
            return
        if newer(self.objs.get(key), updated):
            self.objs[key] = slim(updated)

    async def reconcile(self, key: Key) -> Plan | None:
        world = self.world(key)
        if world is None:
            return None
        t0 = time.perf_counter()
        probe = await self.kind.probe(world, self.kube)
        if probe is not None:
            world = replace(world, probe=probe)
        plan = self.kind.decide(world)
        await self.apply(key, world.obj, plan)
        metrics.RECONCILE_SECONDS.labels(self.kind.kind).observe(time.perf_counter() - t0)
        return plan

    async def _create(self, key: Key, owner: Obj, child: Obj) -> None:
        """Create a child, expected from before the call until it is seen; a refusal is remembered for
        the next pass to report, and a failed create expects nothing."""
        ckey = (child["kind"], child["metadata"]["name"])
        self.expectations.expect(key, ckey)
        try:
            refusal = await self._try_create(key[0], owner, child)
        except BaseException:
            self.expectations.observed(key, ckey)
            raise
        if refusal is not None:
            self.expectations.observed(key, ckey)
            self._refuse(key, refusal)

    async def _try_create(self, ns: str, owner: Obj, child: Obj) -> Refusal | None:
        """A 4xx the API server means (not a conflict, not throttling) is a refusal; a 409 is fine
        only if the object there is ours."""
        kind, name = child["kind"], child["metadata"]["name"]
        try:
            if await self.kube.create(child):
                return None
        except ApiError as e:
            if e.status == 429 or e.status >= 500 or e.status == 409:
                raise
            return Refusal(kind, name, "CreateRejected", f"{kind} {name}: {e.message}")
        existing = await self.kube.get_child(kind, ns, name)
        if owned_by(existing, owner["metadata"]["uid"]):
            return None
        return Refusal(kind, name, "NameConflict", f"{kind} {name} already exists and is not owned by this "
                                                   f"{self.kind.kind}")

    def _log_transition(self, key: Key, old: Obj, new: Obj) -> None:
        """One info line per change of state, e.g. `TrainingJob ml/digits: Running -> Succeeded: ...`."""
        before, after = state_of(old), state_of(new)
        if after and after != before:
            log.info("%s %s/%s: %s -> %s: %s", self.kind.kind, *key, before or "new", after, message_of(new))

    def _refuse(self, key: Key, refusal: Refusal) -> None:
        self.refusals[key] = (*self.refusals.get(key, ()), refusal)
        self.queue.add(key)

    async def apply(self, key: Key, obj: Obj, plan: Plan) -> None:
        """Status first, guarded by resourceVersion: a pass that decided on stale data gets a 409
        and acts on nothing; a decision (e.g. a restart counted) is durable before it is carried out."""
        ns, name = key
        path = self.kube.custom_path(self.kind.plural, ns, name)
        if plan.delete_self:
            await self.kube.delete(path)
            return
        old = obj.get("status") or {}
        if plan.status.get("conditions"):  # this pass completed: it did not crash
            plan.status["conditions"] = [c for c in plan.status["conditions"] if c["type"] != CONDITION_RECONCILED]
        patch = status_patch(old, plan.status)
        if patch:
            updated = await self.kube.patch_status(path, patch, obj["metadata"]["resourceVersion"])
            if newer(self.objs.get(key), updated):
                self.objs[key] = slim(updated)
            metrics.count_transition(self.kind.kind, ns, old, plan.status)
            self._log_transition(key, old, plan.status)
        await asyncio.gather(*(self.kube.delete_child(ns, c.kind, c.name, c.uid, c.force) for c in plan.delete))
        await asyncio.gather(*(self.kube.patch_status(self.kube.child_path(w.kind, ns, w.name), w.status,
                                                      w.resource_version) for w in plan.child_status))
        # What pods depend on (a Service for their rendezvous) first: pods are created only if none was refused,
        # so a gang never starts against an object that is not its own.
        refused = len(self.refusals.get(key, ()))
        await asyncio.gather(*(self._create(key, obj, c) for c in plan.create if c["kind"] != "Pod"),
                             *(self.kube.apply(child) for child in plan.update))
        if len(self.refusals.get(key, ())) == refused:
            await asyncio.gather(*(self._create(key, obj, c) for c in plan.create if c["kind"] == "Pod"))
        for e in plan.events:
            self.post_event(obj, e.type, e.reason, e.message)
        if plan.requeue_after is not None:
            self.queue.add_after(key, plan.requeue_after)
