"""A `Source` limited to a fixed set of namespaces: the dashboard of a namespaced install, whose
ServiceAccount holds a Role in each watched namespace and nothing cluster-wide (it may not list
namespaces, nor any kind across all of them). "Every namespace" means the watched ones, read one by
one and merged; a namespace outside them is forbidden without asking the API server. Nodes and
resource metrics are cluster-scoped: they are asked as they are, and the install's RBAC decides; so are
Kueue's queues, of which only the LocalQueues of the watched namespaces are shown."""

from __future__ import annotations

from typing import TypeVar

from kubeforge_api.servingjob import ServingJob
from kubeforge_api.trainingjob import TrainingJob

from .source import ErrorKind, EventInfo, Listing, NodeInfo, PodInfo, Queues, Source, SourceError, Usage

T = TypeVar("T")


def _merge(listings: list[Listing[T]]) -> Listing[T]:
    return Listing(items=[i for x in listings for i in x.items], problems=[p for x in listings for p in x.problems])


class ScopedSource:
    def __init__(self, inner: Source, namespaces: tuple[str, ...]) -> None:
        self.inner, self.scope = inner, tuple(dict.fromkeys(namespaces))

    @property
    def description(self) -> str:
        return f"{self.inner.description} (namespaces {', '.join(self.scope)})"

    def _within(self, namespaces: tuple[str, ...]) -> tuple[str, ...]:
        for ns in namespaces:
            if ns not in self.scope:
                raise SourceError(ErrorKind.FORBIDDEN, f"forbidden: namespace {ns} is not one the dashboard watches "
                                                       f"({', '.join(self.scope)})")
        return namespaces or self.scope

    def namespaces(self) -> list[str]:
        return list(self.scope)

    def training_jobs(self, namespaces: tuple[str, ...]) -> Listing[TrainingJob]:
        return _merge([self.inner.training_jobs((ns,)) for ns in self._within(namespaces)])

    def serving_jobs(self, namespaces: tuple[str, ...]) -> Listing[ServingJob]:
        return _merge([self.inner.serving_jobs((ns,)) for ns in self._within(namespaces)])

    def training_job(self, namespace: str, name: str) -> TrainingJob:
        self._within((namespace,))
        return self.inner.training_job(namespace, name)

    def serving_job(self, namespace: str, name: str) -> ServingJob:
        self._within((namespace,))
        return self.inner.serving_job(namespace, name)

    def pods(self, namespace: str, selector: dict[str, str]) -> list[PodInfo]:
        return [p for ns in self._within((namespace,) if namespace else ()) for p in self.inner.pods(ns, selector)]

    def events(self, namespace: str, names: frozenset[str]) -> list[EventInfo]:
        self._within((namespace,))
        return self.inner.events(namespace, names)

    def logs(self, namespace: str, pod: str, container: str | None, previous: bool, tail: int) -> str:
        self._within((namespace,))
        return self.inner.logs(namespace, pod, container, previous, tail)

    def nodes(self) -> list[NodeInfo]:
        return self.inner.nodes()

    def usage(self, selector: dict[str, str]) -> Usage | None:
        found = self.inner.usage(selector)
        if found is None:
            return None
        return Usage(nodes=found.nodes, pods={k: v for k, v in found.pods.items() if k[0] in self.scope})

    def queues(self) -> Queues | None:
        found = self.inner.queues()
        if found is None:
            return None
        return Queues(found.version, found.cluster_queues, [q for q in found.local_queues if q.namespace in self.scope])
