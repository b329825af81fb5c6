"""An in-memory `Source`: objects given up front, optional failures per kind of read. Used by the
page tests (realistic jobs, pods, events and logs without a cluster) and by the benchmarks; it
counts calls the same way `KubernetesSource` does."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kubeforge_api.servingjob import ServingJob
from kubeforge_api.trainingjob import TrainingJob

from .kubeobjects import matches
from .source import ErrorKind, EventInfo, Listing, NodeInfo, PodInfo, Queues, SourceError, Usage


@dataclass
class MemorySource:
    training: list[TrainingJob] = field(default_factory=list)
    serving: list[ServingJob] = field(default_factory=list)
    pod_list: list[PodInfo] = field(default_factory=list)
    event_list: list[EventInfo] = field(default_factory=list)
    log_text: dict[tuple[str, bool], str] = field(default_factory=dict)  # (pod, previous) -> text
    node_list: list[NodeInfo] = field(default_factory=list)
    usage_now: Usage | None = None  # None: no metrics API
    queue_state: Queues | None = None  # None: Kueue not installed
    failures: dict[str, SourceError] = field(default_factory=dict)  # read kind -> error it raises
    problems: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)

    @property
    def description(self) -> str:
        return "in-memory objects"

    def _read(self, kind: str) -> None:
        self.calls[kind] += 1
        if kind in self.failures:
            raise self.failures[kind]

    def namespaces(self) -> list[str]:
        self._read("namespaces")
        names = {j.metadata.namespace or "" for j in self.training} | {j.metadata.namespace or "" for j in self.serving}
        return sorted(n for n in names if n)

    def training_jobs(self, namespaces: tuple[str, ...]) -> Listing[TrainingJob]:
        self._read("training_jobs")
        items = [j for j in self.training if not namespaces or j.metadata.namespace in namespaces]
        return Listing(items=items, problems=list(self.problems))

    def serving_jobs(self, namespaces: tuple[str, ...]) -> Listing[ServingJob]:
        self._read("serving_jobs")
        return Listing(items=[j for j in self.serving if not namespaces or j.metadata.namespace in namespaces])

    def training_job(self, namespace: str, name: str) -> TrainingJob:
        self._read("training_job")
        for j in self.training:
            if (j.metadata.namespace, j.metadata.name) == (namespace, name):
                return j
        raise SourceError(ErrorKind.NOT_FOUND, f"not found: TrainingJob {namespace}/{name}")

    def serving_job(self, namespace: str, name: str) -> ServingJob:
        self._read("serving_job")
        for j in self.serving:
            if (j.metadata.namespace, j.metadata.name) == (namespace, name):
                return j
        raise SourceError(ErrorKind.NOT_FOUND, f"not found: ServingJob {namespace}/{name}")

    def pods(self, namespace: str, selector: dict[str, str]) -> list[PodInfo]:
        self._read("pods")
        return [p for p in self.pod_list if (not namespace or p.namespace == namespace) and matches(p.labels, selector)]

    def events(self, namespace: str, names: frozenset[str]) -> list[EventInfo]:
        self._read("events")
        return sorted((e for e in self.event_list if e.object_name in names), key=lambda e: e.time)

    def logs(self, namespace: str, pod: str, container: str | None, previous: bool, tail: int) -> str:
        self._read("logs")
        if (pod, previous) not in self.log_text:
            raise SourceError(ErrorKind.NOT_FOUND, f"not found: logs of pod {namespace}/{pod}"
                              + (" (previous container)" if previous else ""))
        return "\n".join(self.log_text[(pod, previous)].splitlines()[-tail:])

    def nodes(self) -> list[NodeInfo]:
        self._read("nodes")
        return list(self.node_list)

    def usage(self, selector: dict[str, str]) -> Usage | None:
        self._read("usage")
        if self.usage_now is None:
            return None
        wanted = {(p.namespace, p.name) for p in self.pod_list if matches(p.labels, selector)}
        pods = {k: v for k, v in self.usage_now.pods.items() if k in wanted}
        return Usage(nodes=dict(self.usage_now.nodes), pods=pods)

    def queues(self) -> Queues | None:
        self._read("queues")
        return self.queue_state
