"""How the controller core runs ServingJobs: the child kinds (and the servers' pods, found by label),
the pure policy, and the probe: the TrainingJobs its models refer to, read from the operator's cache,
and, while it autoscales on a server metric, that gauge of every ready server (pod IP, server port),
read at most once per `autoscaling_sync_seconds` whatever events arrive. A server that answers what no
honest one does (a redirect, a compressed or oversized body, a gauge that is missing, repeated, not a
number, negative or beyond any bound) is left out of the average, and a Warning Event says so at most
once per job per `metrics_warning_interval_seconds`; one that does not answer is left out silently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from kubeforge_api.constants import LABEL_SERVING, SERVINGJOB_PLURAL
from kubeforge_api.server_settings import SERVER_PORT
from kubeforge_api.servingjob import Autoscaling, AutoscalingMetric
from pydantic import ValidationError

from ..kube import Kube, Misbehaved
from ..plan import Obj, Plan, World
from .context import Config, ServingProbe
from .decide import decide
from .load import judge_load

Key = tuple[str, str]
Lookup = Callable[[Key], Obj | None]


def referenced_jobs(spec: Obj) -> list[str]:
    """Names of the TrainingJobs a ServingJob spec refers to (main model and canary)."""
    sources = [spec.get("model") or {}, (spec.get("canary") or {}).get("model") or {}]
    return [str(s["trainingJobRef"]["name"]) for s in sources
            if isinstance(s, dict) and isinstance(s.get("trainingJobRef"), dict) and s["trainingJobRef"].get("name")]


def scaling_metric(spec: Obj) -> AutoscalingMetric | None:
    """The server metric a (not suspended) ServingJob scales on, if any; None for CPU or a bad spec."""
    if spec.get("suspend") or not isinstance(spec.get("autoscaling"), dict):
        return None
    try:
        a = Autoscaling.model_validate(spec["autoscaling"])
    except ValidationError:
        return None
    return a.metric if a.on_server_metrics else None


def ready_servers(world: World) -> list[tuple[str, str]]:
    """(name, IP) of every server pod that is ready and not being deleted."""
    return [(p["metadata"]["name"], str(p["status"]["podIP"])) for p in world.owned("Pod")
            if not p["metadata"].get("deletionTimestamp") and (p.get("status") or {}).get("podIP")
            and any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (p.get("status") or {}).get("conditions") or [])]


class ServingJobKind:
    kind = "ServingJob"
    plural = SERVINGJOB_PLURAL
    child_kinds: tuple[str, ...] = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Pod")
    owner_label = LABEL_SERVING
    related_kinds: tuple[str, ...] = ()
    server_port = SERVER_PORT

    def related(self, kind: str, obj: Obj) -> Obj | None:
        return None

    def __init__(self, cfg: Config, lookup: Lookup) -> None:
        self.cfg = cfg
        self.lookup = lookup
        self.polled: dict[Key, float] = {}
        self.warned: dict[Key, float] = {}

    def decide(self, world: World) -> Plan:
        return decide(world, self.cfg)

    def forget(self, key: Key) -> None:
        self.polled.pop(key, None)
        self.warned.pop(key, None)

    async def probe(self, world: World, kube: Kube) -> ServingProbe:
        meta = world.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        jobs = {name: self.lookup((key[0], name)) for name in referenced_jobs(world.obj.get("spec") or {})}
        metric = scaling_metric(world.obj.get("spec") or {})
        if metric is None or time.monotonic() - self.polled.get(key, -1e9) < self.cfg.autoscaling_sync_seconds:
            return ServingProbe(jobs)
        self.polled[key] = time.monotonic()
        load, problems = await self.read_load(ready_servers(world), metric, meta["name"], kube)
        return ServingProbe(jobs, load, self._warning(key, problems))

    async def read_load(self, servers: list[tuple[str, str]], metric: AutoscalingMetric, model: str,
                        kube: Kube) -> tuple[tuple[float, ...], list[str]]:
        """The gauge of each server that answered it well, and what the others did wrong (by pod)."""
        replies = await asyncio.gather(*(kube.read_metrics(ip, self.server_port) for _, ip in servers))
        values: list[float] = []
        problems: list[str] = []
        for (name, _), reply in zip(servers, replies, strict=True):
            if reply is None:
                continue
            judged = reply.problem if isinstance(reply, Misbehaved) else judge_load(reply, metric, model)
            if isinstance(judged, str):
                problems.append(f"pod {name} {judged}")
            else:
                values.append(judged)
        return tuple(values), problems

    def _warning(self, key: Key, problems: list[str]) -> str | None:
        """The Warning to post for misbehaving servers, unless one was posted for the job lately."""
        now = time.monotonic()
        if not problems or now - self.warned.get(key, -1e9) < self.cfg.metrics_warning_interval_seconds:
            return None
        self.warned[key] = now
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"the metrics endpoint of {problems[0]}{more}; its load is left out of autoscaling"
