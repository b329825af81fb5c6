"""The cluster page's Kueue tables: each ClusterQueue's pending and admitted workloads and cohort; its
quota per flavor and resource (what workloads reserve and admitted ones use against the nominal quota,
and what is borrowed from the cohort); each LocalQueue's pending and admitted workloads. Pure: the
queues in, rows out.

Bounded: at most `limit` rows per table (queues with pending workloads first, then by name), each
table saying how many it left out."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice

from ..format import size
from ..source import ClusterQueueInfo, LocalQueueInfo, QuotaUse

MAX_CLUSTER_QUEUES = 100
MAX_QUOTA_ROWS = 300
MAX_LOCAL_QUEUES = 200
BYTES = ("memory", "ephemeral-storage", "hugepages-")


@dataclass(frozen=True)
class Table:
    rows: list[dict[str, object]] = field(default_factory=list)
    left_out: int = 0


def amount(resource: str, value: float) -> str:
    """A quota amount in the resource's unit: cores for CPU, sizes for memory and storage, else a count."""
    if resource == "cpu":
        return f"{round(value, 3):g}"
    if resource.startswith(BYTES):
        return size(round(value))
    return f"{value:g}"


def share(q: QuotaUse) -> float | None:
    """Reserved over nominal quota, 0..1 (past 1 is borrowing, shown full); None without a quota."""
    return min(q.reserved / q.nominal, 1.0) if q.nominal > 0 else None


def _capped(rows: list[dict[str, object]], limit: int) -> Table:
    return Table(rows[:limit], max(len(rows) - limit, 0))


def _busy_first(pending: int, name: str) -> tuple[bool, str]:
    return pending == 0, name


def cluster_queue_rows(queues: list[ClusterQueueInfo], limit: int = MAX_CLUSTER_QUEUES) -> Table:
    ordered = sorted(queues, key=lambda q: _busy_first(q.pending, q.name))
    return _capped([{"cluster queue": q.name, "cohort": q.cohort, "pending": q.pending, "admitted": q.admitted,
                     "reserving": q.reserving, "active": q.active} for q in ordered], limit)


def quota_row(queue: str, q: QuotaUse) -> dict[str, object]:
    return {"cluster queue": queue, "flavor": q.flavor, "resource": q.resource,
            "nominal quota": amount(q.resource, q.nominal), "reserved": amount(q.resource, q.reserved),
            "in use (admitted)": amount(q.resource, q.used), "borrowed": amount(q.resource, q.borrowed),
            "reserved of quota": share(q)}


def quota_rows(queues: list[ClusterQueueInfo], limit: int = MAX_QUOTA_ROWS) -> Table:
    """One row per (cluster queue, flavor, resource), in the order of the queues' table."""
    ordered = sorted(queues, key=lambda q: _busy_first(q.pending, q.name))
    rows = [quota_row(cq.name, q) for cq, q in islice(((cq, q) for cq in ordered for q in cq.quotas), limit)]
    return Table(rows, sum(len(cq.quotas) for cq in queues) - len(rows))


def local_queue_rows(queues: list[LocalQueueInfo], limit: int = MAX_LOCAL_QUEUES) -> Table:
    ordered = sorted(queues, key=lambda q: (q.pending == 0, q.namespace, q.name))
    return _capped([{"namespace": q.namespace, "local queue": q.name, "cluster queue": q.cluster_queue,
                     "pending": q.pending, "admitted": q.admitted, "reserving": q.reserving} for q in ordered], limit)


def totals(queues: list[ClusterQueueInfo]) -> tuple[int, int]:
    """(pending, admitted) workloads over every ClusterQueue."""
    return sum(q.pending for q in queues), sum(q.admitted for q in queues)
