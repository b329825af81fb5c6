"""Leader election on a `coordination.k8s.io` Lease, by client-go's rules, so that of several operator
replicas exactly one acts. A candidate takes the Lease when it is missing, released (no holder), or when
its record has not changed for `leaseDurationSeconds` as measured by the candidate's own clock since it
first saw that record (no clock of another machine is trusted). The holder renews every `retry` seconds
and steps down once no renewal succeeded for `renew_deadline` seconds; the deadline is shorter than the
duration, so a holder has stopped before any other candidate may take over. Writes carry the Lease's
resourceVersion: of two candidates racing for it, one wins and the other gets 409.

Hand-written, not kopf's peering: peering pauses operators of lower priority but lets peers of equal
priority (the replicas of one Deployment) run together, and it is not a lock."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

from .kube import ApiError, Kube
from .plan import Obj

log = logging.getLogger("kubeforge.leader")
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


@dataclass(frozen=True)
class Timing:
    """client-go's defaults: a Lease lasts 15 s, its holder gives up 10 s after its last renewal."""

    duration: int = 15
    renew_deadline: float = 10.0
    retry: float = 2.0


def micro_time(now: datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claim(spec: Obj | None, me: str, expired: bool, now: str, duration: int) -> Obj | None:
    """The Lease spec candidate `me` writes next, or None when another holder's record is still fresh.
    `spec` is the Lease's current spec (None when there is no Lease); `expired` says whether its record
    has stayed unchanged for its duration, as `me` observed it."""
    current = spec or {}
    holder = current.get("holderIdentity") or ""
    if holder == me:
        return {**current, "renewTime": now, "leaseDurationSeconds": duration}
    if holder and not expired:
        return None
    transitions = int(current.get("leaseTransitions") or 0) + (1 if holder else 0)
    return {"holderIdentity": me, "leaseDurationSeconds": duration, "acquireTime": now, "renewTime": now,
            "leaseTransitions": transitions}


def released(spec: Obj, now: str) -> Obj:
    """The spec a holder writes when it steps down on purpose: no holder, so a candidate takes over at once."""
    return {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": now}


class LeaderElector:
    """One candidate for the Lease `namespace/name`."""

    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, timing: Timing = Timing(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.path = LEASES.format(namespace=namespace)
        self.name = name
        self.identity = identity
        self.timing = timing
        self.clock = clock
        self.observed: tuple[str, str, int] | None = None  # (holder, renewTime, duration) last seen
        self.observed_at = 0.0
        self.holder = ""

    def _observe(self, spec: Obj | None) -> bool:
        """Record what the Lease says now; True when its record is older than its duration (as seen here)."""
        spec = spec or {}
        record = (str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""),
                  int(spec.get("leaseDurationSeconds") or self.timing.duration))
        if record != self.observed:
            self.observed, self.observed_at = record, self.clock()
        self.holder = record[0]
        return self.clock() - self.observed_at >= record[2]

    async def try_once(self) -> bool:
        """Acquire or renew once; True when this candidate holds the Lease afterwards."""
        try:
            lease: Obj | None = await self.kube.request("GET", f"{self.path}/{self.name}")
        except ApiError as e:
            if e.status != 404:
                raise
            lease = None
        spec = (lease or {}).get("spec")
        expired = self._observe(spec)
        new = claim(spec, self.identity, expired, micro_time(datetime.now(UTC)), self.timing.duration)
        if new is None:
            return False
        try:
            if lease is None:
                await self.kube.request("POST", self.path, {"metadata": {"name": self.name}, "spec": new})
            else:  # the resourceVersion makes this a compare-and-swap
                await self.kube.request("PUT", f"{self.path}/{self.name}", {**lease, "spec": new})
        except ApiError as e:
            if e.status == 409:  # another candidate wrote first
                return False
            raise
        self._observe(new)
        return True

    async def _attempt(self, timeout: float) -> bool:
        try:
            return await asyncio.wait_for(self.try_once(), timeout=max(timeout, 0.1))
        except (ApiError, OSError, aiohttp.ClientError, TimeoutError) as e:
            log.warning("lease %s: %s", self.name, e)
            return False

    async def acquire(self) -> None:
        """Return once this candidate holds the Lease."""
        while not await self._attempt(self.timing.renew_deadline):
            await asyncio.sleep(self.timing.retry)
        log.warning("lease %s acquired by %s; this replica acts now", self.name, self.identity)

    async def keep(self) -> None:
        """Renew the Lease; return when leadership is lost (another holder, or the renew deadline passed)."""
        last = self.clock()
        while True:
            await asyncio.sleep(self.timing.retry)
            started = self.clock()
            if await self._attempt(self.timing.renew_deadline - (started - last)):
                last = started
            elif self.holder not in ("", self.identity) or self.clock() - last >= self.timing.renew_deadline:
                log.error("lease %s lost by %s (holder now %r)", self.name, self.identity, self.holder)
                return

    async def release(self) -> None:
        """Give the Lease up, if this candidate holds it, so that another takes over without waiting."""
        try:
            lease = await self.kube.request("GET", f"{self.path}/{self.name}")
            if lease.get("spec", {}).get("holderIdentity") == self.identity:
                spec = released(lease["spec"], micro_time(datetime.now(UTC)))
                await self.kube.request("PUT", f"{self.path}/{self.name}", {**lease, "spec": spec})
                log.warning("lease %s released by %s", self.name, self.identity)
        except (ApiError, OSError, aiohttp.ClientError) as e:
            log.warning("lease %s not released: %s", self.name, e)
