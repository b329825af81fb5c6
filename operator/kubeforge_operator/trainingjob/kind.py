"""How the controller core runs TrainingJobs: the child kinds it owns, the pure policy, and the
progress probe (rank 0's endpoint, asked at most once per interval whatever events arrive)."""

from __future__ import annotations

import time

from kubeforge_api.constants import PROGRESS_PORT, ROLE_NODE, TRAININGJOB_PLURAL
from kubeforge_api.contracts import ProgressDoc

from ..kube import Kube
from ..observe import view
from ..plan import Plan, World
from .context import Config
from .decide import decide
from .progress import last_step

Key = tuple[str, str]


class TrainingJobKind:
    kind = "TrainingJob"
    plural = TRAININGJOB_PLURAL
    child_kinds: tuple[str, ...] = ("Pod", "Service")
    owner_label = ""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.polled: dict[Key, tuple[float, ProgressDoc | None]] = {}

    def decide(self, world: World) -> Plan:
        return decide(world, self.cfg)

    def forget(self, key: Key) -> None:
        self.polled.pop(key, None)

    async def probe(self, world: World, kube: Kube) -> ProgressDoc | None:
        """Rank 0's progress for a running recipe job; the answer of the last poll within the interval."""
        job = world.obj
        if not (job.get("spec") or {}).get("recipe"):
            return None
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        at, doc = self.polled.get(key, (-1e9, None))
        if time.monotonic() - at < self.cfg.progress_interval_seconds:
            return doc
        status = job.get("status") or {}
        attempt = int(status.get("restartCount", 0))
        rank0 = next((v for v in map(view, world.owned("Pod")) if v.role == ROLE_NODE and v.rank == 0
                      and v.attempt == attempt and v.running and v.ip), None)
        if rank0 is None:
            return None
        doc = await kube.progress(rank0.ip, PROGRESS_PORT, last_step(status.get("history") or {}))
        self.polled[key] = (time.monotonic(), doc)
        return doc
