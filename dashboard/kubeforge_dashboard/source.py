"""The one data-access interface of the dashboard, and the plain records it returns.

Pages never talk to Kubernetes or to the file system: they ask a `Source`. Two implementations
exist: `kube.KubernetesSource` (read-only, the official client) and `local.LocalRunsSource` (the
run records `kubeforge run` writes); `memory.MemorySource` holds objects in memory (tests,
benchmarks). Kubeforge's own kinds come back as the typed API models of `kubeforge_api`; pods,
events and nodes as the small frozen records below (only what the pages show). Every failure is a
`SourceError` with a message meant for the user: pages show it instead of raising."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from kubeforge_api.servingjob import ServingJob
from kubeforge_api.trainingjob import TrainingJob

T = TypeVar("T")


class ErrorKind(StrEnum):
    UNREACHABLE = "unreachable"  # no kubeconfig, API server down, timeouts
    FORBIDDEN = "forbidden"  # RBAC said no
    NOT_FOUND = "not-found"
    UNREADABLE = "unreadable"  # an answer we could not understand


class SourceError(Exception):
    """A read that failed, with a message that says what and where."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Resources:
    """CPU in millicores, memory in bytes, GPUs as a count."""

    cpu_m: int = 0
    memory: int = 0
    gpus: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_m + other.cpu_m, self.memory + other.memory, self.gpus + other.gpus)


@dataclass(frozen=True)
class ContainerState:
    name: str
    ready: bool = False
    restarts: int = 0
    state: str = ""  # running | waiting | terminated
    reason: str = ""  # e.g. CrashLoopBackOff, OOMKilled, Error
    exit_code: int | None = None  # of the current container when terminated
    last_exit_code: int | None = None  # of the previous container (after a restart)
    last_reason: str = ""


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    phase: str = "Unknown"
    node: str = ""
    ip: str = ""
    ready: bool = False
    created: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    containers: tuple[ContainerState, ...] = ()
    message: str = ""  # e.g. the scheduler's reason for Pending
    requests: Resources = Resources()
    port: int | None = None  # the first declared container port
    uid: str = ""

    @property
    def restarts(self) -> int:
        return sum(c.restarts for c in self.containers)


@dataclass(frozen=True)
class EventInfo:
    time: str
    type: str  # Normal | Warning
    reason: str
    message: str
    object_kind: str
    object_name: str
    count: int = 1


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str  # NoSchedule | PreferNoSchedule | NoExecute
    value: str = ""
    added: str = ""  # timeAdded (NoExecute taints only)


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ready: bool
    capacity: Resources
    allocatable: Resources
    labels: dict[str, str] = field(default_factory=dict)
    ready_status: str = ""  # the Ready condition's status: True | False | Unknown ("" when it has none)
    ready_since: str = ""  # its lastTransitionTime
    ready_reason: str = ""  # its reason, e.g. NodeStatusUnknown or KubeletNotReady
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False  # cordoned


@dataclass(frozen=True)
class QuotaUse:
    """One resource of one flavor of a Kueue ClusterQueue, in the resource's base unit (CPU in cores,
    memory in bytes, others as counts): its nominal quota (spec.resourceGroups), what workloads hold
    reserved (status.flavorsReservation), what admitted workloads use (status.flavorsUsage), and how
    much of that is borrowed from the cohort. A resource used but not in the spec has nominal 0."""

    flavor: str
    resource: str
    nominal: float = 0.0
    reserved: float = 0.0
    used: float = 0.0
    borrowed: float = 0.0


@dataclass(frozen=True)
class ClusterQueueInfo:
    name: str
    cohort: str = ""
    pending: int = 0
    reserving: int = 0
    admitted: int = 0
    quotas: tuple[QuotaUse, ...] = ()
    active: str = ""  # the Active condition's status, with its reason when not True


@dataclass(frozen=True)
class LocalQueueInfo:
    namespace: str
    name: str
    cluster_queue: str
    pending: int = 0
    reserving: int = 0
    admitted: int = 0


@dataclass(frozen=True)
class Queues:
    """Kueue's queues (API group kueue.x-k8s.io, at the version the cluster serves)."""

    version: str
    cluster_queues: list[ClusterQueueInfo] = field(default_factory=list)
    local_queues: list[LocalQueueInfo] = field(default_factory=list)


@dataclass(frozen=True)
class Usage:
    """What is in use now, from the resource metrics API (metrics.k8s.io, served by metrics-server): per
    node, and per pod of a selection (keyed by namespace and name). CPU in millicores, memory in bytes."""

    nodes: dict[str, Resources] = field(default_factory=dict)
    pods: dict[tuple[str, str], Resources] = field(default_factory=dict)


@dataclass(frozen=True)
class Listing(Generic[T]):
    """Objects of one kind, plus one line per object that could not be read as its model."""

    items: list[T]
    problems: list[str] = field(default_factory=list)


class Source(Protocol):
    """Read-only access to everything the dashboard shows."""

    @property
    def description(self) -> str:
        """Where the data comes from, in a few words (shown in the sidebar)."""
        ...

    def namespaces(self) -> list[str]: ...

    def training_jobs(self, namespaces: tuple[str, ...]) -> Listing[TrainingJob]:
        """Jobs in `namespaces` (empty: every namespace); `status.history` may be left out (only
        `training_job` must return it)."""
        ...

    def serving_jobs(self, namespaces: tuple[str, ...]) -> Listing[ServingJob]: ...

    def training_job(self, namespace: str, name: str) -> TrainingJob: ...

    def serving_job(self, namespace: str, name: str) -> ServingJob: ...

    def pods(self, namespace: str, selector: dict[str, str]) -> list[PodInfo]:
        """Pods of `namespace` (empty: all) whose labels match `selector`."""
        ...

    def events(self, namespace: str, names: frozenset[str]) -> list[EventInfo]:
        """Events of `namespace` about the objects named in `names`."""
        ...

    def logs(self, namespace: str, pod: str, container: str | None, previous: bool, tail: int) -> str: ...

    def nodes(self) -> list[NodeInfo]: ...

    def usage(self, selector: dict[str, str]) -> Usage | None:
        """CPU and memory in use per node, and per pod of any namespace whose labels match `selector`;
        None when the source has no resource metrics (no metrics-server, or local runs)."""
        ...

    def queues(self) -> Queues | None:
        """Kueue's ClusterQueues and LocalQueues (all namespaces); None when Kueue is not installed
        (the cluster serves no kueue.x-k8s.io API group)."""
        ...
