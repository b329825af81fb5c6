"""How the controller core runs TrainingJobs: the child kinds it owns, the pure policy, and the
progress probe (rank 0's endpoint, asked at most once per interval whatever events arrive). An
endpoint that misbehaves (a redirect, a compressed or oversized body, not a progress document)
gets a Warning Event at most once per job per `progress_warning_interval_seconds`; the job keeps
reconciling, its progress just is not read from there. Where Kueue is installed, a job also owns its
Workload and relates to ResourceFlavors and WorkloadPriorityClasses (trainingjob.queueing)."""

from __future__ import annotations

import time

from kubeforge_api.constants import PROGRESS_PORT, ROLE_NODE, TRAININGJOB_PLURAL
from kubeforge_api.contracts import ProgressDoc

from ..kube import Kube, Misbehaved
from ..observe import PodView, view
from ..plan import Obj, Plan, World
from ..render.workload import project_flavor, project_priority_class
from .context import Config, ProgressProbe
from .decide import decide
from .nodes import project_node
from .progress import last_step

Key = tuple[str, str]


def rank0(world: World, status: Obj) -> PodView | None:
    """Rank 0 of the current attempt, when it runs and has an address."""
    attempt = int(status.get("restartCount", 0))
    return next((v for v in map(view, world.owned("Pod")) if v.role == ROLE_NODE and v.rank == 0
                 and v.attempt == attempt and v.running and v.ip), None)


class TrainingJobKind:
    kind = "TrainingJob"
    plural = TRAININGJOB_PLURAL
    child_kinds: tuple[str, ...] = ("Pod", "Service")
    owner_label = ""
    related_kinds: tuple[str, ...] = ("Node",)
    progress_port = PROGRESS_PORT

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        if cfg.kueue:  # Kueue is installed: queued jobs own a Workload and read flavors and priorities
            self.child_kinds = (*self.child_kinds, "Workload")
            self.related_kinds = (*self.related_kinds, "ResourceFlavor", "WorkloadPriorityClass")
        self.polled: dict[Key, tuple[float, ProgressDoc | None]] = {}
        self.warned: dict[Key, float] = {}

    def related(self, kind: str, obj: Obj) -> Obj | None:
        projections = {"Node": project_node, "ResourceFlavor": project_flavor,
                       "WorkloadPriorityClass": project_priority_class}
        project = projections.get(kind)
        return project(obj) if project else None

    def decide(self, world: World) -> Plan:
        return decide(world, self.cfg)

    def forget(self, key: Key) -> None:
        self.polled.pop(key, None)
        self.warned.pop(key, None)

    async def probe(self, world: World, kube: Kube) -> ProgressProbe | None:
        """Rank 0's progress for a running job (a command job's script serves it through
        `kubeforge_trainer.report`, or not at all); the answer of the last poll within the interval."""
        job = world.obj
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        at, doc = self.polled.get(key, (-1e9, None))
        if time.monotonic() - at < self.cfg.progress_interval_seconds:
            return ProgressProbe(doc)
        status = job.get("status") or {}
        pod = rank0(world, status)
        if pod is None:
            return None
        reply = await kube.read_progress(pod.ip, self.progress_port, last_step(status.get("history") or {}))
        doc = reply if isinstance(reply, ProgressDoc) else None
        self.polled[key] = (time.monotonic(), doc)
        return ProgressProbe(doc, self._warning(key, pod, reply) if isinstance(reply, Misbehaved) else None)

    def _warning(self, key: Key, pod: PodView, reply: Misbehaved) -> str | None:
        """The Warning to post for a misbehaving endpoint, unless one was posted for the job lately."""
        now = time.monotonic()
        if now - self.warned.get(key, -1e9) < self.cfg.progress_warning_interval_seconds:
            return None
        self.warned[key] = now
        return f"the progress endpoint of pod {pod.name} {reply.problem}; progress is not read from it"
