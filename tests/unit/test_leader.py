"""Leader election on a Lease: who may write it when, and candidates taking turns on an in-memory API."""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import pytest
from kubeforge_operator.kube import ApiError, Kube
from kubeforge_operator.leader import LeaderElector, Timing, claim, released

Obj = dict[str, Any]
NOW = "2026-01-01T00:00:00.000000Z"


def test_a_missing_or_released_lease_is_taken_at_once() -> None:
    assert claim(None, "a", False, NOW, 15) == {"holderIdentity": "a", "leaseDurationSeconds": 15,
                                                "acquireTime": NOW, "renewTime": NOW, "leaseTransitions": 0}
    spec = released({"holderIdentity": "b", "leaseTransitions": 3, "renewTime": "x"}, NOW)
    assert (claim(spec, "a", False, NOW, 15) or {})["holderIdentity"] == "a"


def test_another_holder_keeps_a_fresh_lease_and_loses_an_expired_one() -> None:
    spec = {"holderIdentity": "b", "leaseTransitions": 3, "renewTime": "x", "acquireTime": "x"}
    assert claim(spec, "a", False, NOW, 15) is None
    taken = claim(spec, "a", True, NOW, 15) or {}
    assert (taken["holderIdentity"], taken["leaseTransitions"], taken["acquireTime"]) == ("a", 4, NOW)


def test_the_holder_renews_keeping_its_acquire_time() -> None:
    spec = {"holderIdentity": "a", "leaseTransitions": 1, "renewTime": "x", "acquireTime": "t0"}
    assert claim(spec, "a", False, NOW, 15) == {**spec, "renewTime": NOW, "leaseDurationSeconds": 15}


class FakeApi:
    """One Lease with a resourceVersion compare-and-swap, as the API server keeps it."""

    def __init__(self) -> None:
        self.lease: Obj | None = None
        self.down: set[str] = set()  # identities whose requests fail (a partitioned replica)
        self.caller = ""

    async def request(self, method: str, path: str, body: Any = None) -> Obj:
        if self.caller in self.down:
            raise OSError("unreachable")
        if method == "GET":
            if self.lease is None:
                raise ApiError(404, "{}")
            return copy.deepcopy(self.lease)
        if (method == "POST") != (self.lease is None) or (
                self.lease and body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]):
            raise ApiError(409, "{}")
        version = int(self.lease["metadata"]["resourceVersion"]) + 1 if self.lease else 1
        self.lease = {"metadata": {"name": "l", "resourceVersion": str(version)}, "spec": copy.deepcopy(body["spec"])}
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def elector(api: FakeApi, me: str, clock: Clock) -> LeaderElector:
    class As:  # the fake API learns which candidate calls
        async def request(self, method: str, path: str, body: Any = None) -> Obj:
            api.caller = me
            return await api.request(method, path, body)

    return LeaderElector(cast(Kube, As()), "ns", "l", me, Timing(duration=15, renew_deadline=10, retry=0.01), clock)


def test_a_standby_takes_over_only_after_the_record_stood_still_for_the_duration() -> None:
    api, clock = FakeApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)

    async def scenario() -> None:
        assert await a.try_once()
        assert not await b.try_once()
        clock.t = 14
        assert await a.try_once()  # renewed: b's observation starts again
        assert not await b.try_once()
        clock.t = 28
        assert not await b.try_once()
        clock.t = 29
        assert await b.try_once()
        assert (api.lease or {})["spec"]["leaseTransitions"] == 1
        assert not await a.try_once()

    asyncio.run(scenario())


def test_the_holder_steps_down_when_another_holds_or_its_deadline_passes() -> None:
    api, clock = FakeApi(), Clock()
    a, b = elector(api, "a", clock), elector(api, "b", clock)

    async def scenario() -> None:
        await a.acquire()
        assert api.lease is not None
        api.lease["spec"]["holderIdentity"] = "b"  # e.g. a long pause, after which b took over
        await asyncio.wait_for(a.keep(), 5)
        api.lease["spec"]["holderIdentity"] = "a"
        again = elector(api, "a", clock)  # as the restarted process
        await again.acquire()
        api.down.add("a")

        async def tick() -> None:
            while True:
                await asyncio.sleep(0.005)
                clock.t += 1

        ticking = asyncio.create_task(tick())
        await asyncio.wait_for(again.keep(), 5)  # no renewal for 10 s of its clock
        ticking.cancel()
        assert clock.t >= 10
        api.down.clear()
        await again.release()
        assert await b.try_once()  # released: no waiting

    asyncio.run(scenario())


@pytest.mark.parametrize("holder", ["a", ""])
def test_release_writes_only_a_lease_this_candidate_holds(holder: str) -> None:
    api, clock = FakeApi(), Clock()
    api.lease = {"metadata": {"name": "l", "resourceVersion": "7"},
                 "spec": {"holderIdentity": holder or "b", "leaseDurationSeconds": 15}}
    asyncio.run(elector(api, "a", clock).release())
    assert api.lease["metadata"]["resourceVersion"] == ("8" if holder else "7")
