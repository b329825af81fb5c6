"""The controller's expectations: a child recorded before its create is waited for until seen, its
create fails, its owner is forgotten, or the TTL passes (then it may be created again)."""

from __future__ import annotations

from kubeforge_operator.controller import Expectations

JOB = ("ml", "digits")
POD = ("Pod", "digits-worker-0")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_expected_child_is_waited_for_until_it_is_seen() -> None:
    e = Expectations(ttl=30, clock=Clock())
    e.expect(JOB, POD)
    e.expect(JOB, ("Service", "digits-workers"))
    assert e.of(JOB) == {POD, ("Service", "digits-workers")}
    e.observed(JOB, POD)
    assert e.of(JOB) == {("Service", "digits-workers")}
    e.observed(JOB, ("Service", "digits-workers"))
    assert e.of(JOB) == frozenset() and JOB not in e.pending  # nothing kept for an owner with nothing pending


def test_a_child_never_seen_is_given_up_after_the_ttl_so_the_next_pass_creates_it_again() -> None:
    clock = Clock()
    e = Expectations(ttl=30, clock=clock)
    e.expect(JOB, POD)
    clock.now += 30
    assert e.of(JOB) == {POD}
    clock.now += 0.1
    assert e.of(JOB) == frozenset()


def test_owners_are_independent_and_forgetting_one_keeps_the_others() -> None:
    e = Expectations(ttl=30, clock=Clock())
    other = ("ml", "other")
    e.expect(JOB, POD)
    e.expect(other, ("Pod", "other-worker-0"))
    e.observed(other, POD)  # a child of another owner with the same name is not this one
    e.forget(JOB)
    assert e.of(JOB) == frozenset() and e.of(other) == {("Pod", "other-worker-0")}
