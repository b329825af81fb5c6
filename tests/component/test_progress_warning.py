"""A misbehaving progress endpoint (a real HTTP server as rank 0) earns its job one Warning Event,
not one per poll, and the job keeps reconciling: deadlines and suspend still act in the same pass.
The TrainingJob kind's probe and its pure decision run as the controller runs them."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubeforge_api.trainingjob import TrainingJobSpec
from kubeforge_operator.kube import Kube
from kubeforge_operator.plan import ObjectRef, Plan, World, ts
from kubeforge_operator.render.trainingjob import members, render_pod
from kubeforge_operator.trainingjob.context import Config
from kubeforge_operator.trainingjob.kind import TrainingJobKind
from scripted_http import Reply, scripted_server

Obj = dict[str, Any]
NOW = datetime.now(UTC)
VALID = {"step": 5, "totalSteps": 10, "percent": 50.0, "loss": 0.5, "history": [{"kind": "train", "step": 5}]}
REPLIES: dict[str, Reply] = {
    "ok": (200, {}, json.dumps(VALID).encode()),
    "redirect": (302, {"Location": "http://127.0.0.1:1/internal"}, b""),
    "gzip": (200, {"Content-Encoding": "gzip"}, gzip.compress(json.dumps(VALID).encode())),
    "oversize": (200, {}, b'{"eval": {' + b",".join(b'"k%d": 1' % i for i in range(20_000)) + b"}}"),
    "notjson": (200, {}, b"<html>hello</html>"),
    "invalid": (200, {}, json.dumps({**VALID, "percent": 300, "loss": "abc"}).encode()),
}
WORDS = {"redirect": "redirect", "gzip": "gzip", "oversize": "more than 65536 bytes", "notjson": "not JSON",
         "invalid": "not a valid progress document"}
mode = {"now": "ok"}
WARNING = "ProgressEndpointMisbehaving"


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with scripted_server(lambda _path: REPLIES[mode["now"]]) as bound:
        yield bound


def world(run_policy: Obj | None = None) -> World:
    spec: Obj = {"recipe": {"model": "mlp", "dataset": "digits"}, "runPolicy": run_policy or {}}
    typed = TrainingJobSpec.model_validate(spec)
    pod = render_pod(ObjectRef("demo", "ml", "u", 1), typed, members(typed)[0], 0, "img", "1Gi")
    pod["metadata"].update({"uid": "uid-0", "creationTimestamp": ts(NOW - timedelta(seconds=600))})
    pod["status"] = {"phase": "Running", "podIP": "127.0.0.1"}
    job = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1}, "spec": spec,
           "status": {"restartCount": 0, "startTime": ts(NOW - timedelta(seconds=600)), "state": "Running"}}
    return World(job, {"Pod": [pod], "Service": [{"kind": "Service"}]}, frozenset(), NOW)


def passes(port: int, w: World, count: int, warn_every: float = 300.0, pause: float = 0.05) -> list[Plan]:
    """`count` passes of one job as the controller runs them (probe, then decide), `pause` apart."""
    kind = TrainingJobKind(Config("img", progress_interval_seconds=0.01, progress_warning_interval_seconds=warn_every))
    kind.progress_port = port

    async def run() -> list[Plan]:
        kube = Kube(lambda: None)
        plans = []
        try:
            for _ in range(count):
                probe = await kind.probe(w, kube)
                plans.append(kind.decide(World(w.obj, w.children, w.expected, w.now, probe)))
                await asyncio.sleep(pause)
        finally:
            await kube.close()
        return plans

    return asyncio.run(run())


def warnings(plans: list[Plan]) -> list[str]:
    return [e.message for p in plans for e in p.events if e.reason == WARNING and e.type == "Warning"]


@pytest.mark.parametrize("behaviour", sorted(WORDS))
def test_a_misbehaving_endpoint_gets_one_warning_not_one_per_poll(port: int, behaviour: str) -> None:
    mode["now"] = behaviour
    plans = passes(port, world(), 6)
    [message] = warnings(plans)
    assert WORDS[behaviour] in message and "demo-node-0" in message and "\n" not in message, message
    assert all("progress" not in p.status for p in plans)  # nothing it said reached the status


def test_the_warning_comes_again_after_the_interval(port: int) -> None:
    mode["now"] = "redirect"
    started = time.monotonic()
    plans = passes(port, world(), 8, warn_every=0.3, pause=0.1)
    assert 2 <= len(warnings(plans)) <= 1 + int((time.monotonic() - started) / 0.3)


@pytest.mark.parametrize(("run_policy", "check"), [
    ({"activeDeadlineSeconds": 60}, lambda p: p.status["reason"] == "DeadlineExceeded" and p.delete),
    ({"suspend": True}, lambda p: p.status["state"] == "Suspended" and p.delete),
])
def test_the_job_keeps_reconciling_while_its_endpoint_misbehaves(port: int, run_policy: Obj, check: Any) -> None:
    mode["now"] = "oversize"
    [plan] = passes(port, world(run_policy), 1)
    assert check(plan), plan
    assert warnings([plan])


def test_a_well_behaved_endpoint_gets_no_warning(port: int) -> None:
    mode["now"] = "ok"
    plans = passes(port, world(), 3)
    assert not warnings(plans)
    assert plans[-1].status["progress"]["step"] == 5
