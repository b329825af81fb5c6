"""How the controller core runs ServingJobs: the child kinds (and the servers' pods, found by label),
the pure policy, and the probe: the TrainingJobs its models refer to, read from the operator's cache."""

from __future__ import annotations

from collections.abc import Callable

from kubeforge_api.constants import LABEL_SERVING, SERVINGJOB_PLURAL

from ..kube import Kube
from ..plan import Obj, Plan, World
from .context import Config
from .decide import decide

Key = tuple[str, str]
Lookup = Callable[[Key], Obj | None]


def referenced_jobs(spec: Obj) -> list[str]:
    """Names of the TrainingJobs a ServingJob spec refers to (main model and canary)."""
    sources = [spec.get("model") or {}, (spec.get("canary") or {}).get("model") or {}]
    return [str(s["trainingJobRef"]["name"]) for s in sources
            if isinstance(s, dict) and isinstance(s.get("trainingJobRef"), dict) and s["trainingJobRef"].get("name")]


class ServingJobKind:
    kind = "ServingJob"
    plural = SERVINGJOB_PLURAL
    child_kinds: tuple[str, ...] = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Pod")
    owner_label = LABEL_SERVING

    def __init__(self, cfg: Config, lookup: Lookup) -> None:
        self.cfg = cfg
        self.lookup = lookup

    def decide(self, world: World) -> Plan:
        return decide(world, self.cfg)

    def forget(self, key: Key) -> None:
        pass

    async def probe(self, world: World, kube: Kube) -> dict[str, Obj | None]:
        ns = world.obj["metadata"]["namespace"]
        return {name: self.lookup((ns, name)) for name in referenced_jobs(world.obj.get("spec") or {})}
