"""The operator survives being killed at random points without creating duplicate pods, and a
reconcile pass over an unchanged world writes nothing."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections import defaultdict
from typing import Any

import kopf
import pytest
from conftest import Cluster, wait_condition
from kubeforge_operator.controller import Controller
from kubeforge_operator.kube import Kube
from kubeforge_operator.trainingjob.context import Config
from kubeforge_operator.trainingjob.kind import TrainingJobKind
from minicluster.operator_process import OperatorProcess
from test_trainingjob import TJ, command_job, create_job

pytestmark = pytest.mark.embedded("kills and restarts the operator's local process")

Obj = dict[str, Any]


class PodRecorder:
    """Every pod ADDED/MODIFIED/DELETED in a namespace, from one watch."""

    def __init__(self, cluster: Cluster, ns: str) -> None:
        self.cluster = cluster
        self.path = f"/api/v1/namespaces/{ns}/pods"
        self.events: list[tuple[str, Obj]] = []
        self.stop = threading.Event()
        rv = cluster.client.get(self.path)["metadata"]["resourceVersion"]
        self.thread = threading.Thread(target=self._run, args=(rv,), daemon=True)
        self.thread.start()

    def _run(self, rv: str) -> None:
        while not self.stop.is_set():
            for etype, obj in self.cluster.client.watch(self.path, rv, timeout=30):
                if etype == "ERROR":  # e.g. 410 Gone: list again
                    rv = self.cluster.client.get(self.path)["metadata"]["resourceVersion"]
                    break
                rv = obj["metadata"]["resourceVersion"]
                if etype != "BOOKMARK":  # the API server sends one as a watch times out: no pod in it
                    self.events.append((etype, obj))
                if self.stop.is_set():
                    return

    def uids_per_incarnation(self) -> dict[tuple[str, str], set[str]]:
        """(pod name, attempt) -> pod uids ever seen."""
        out: dict[tuple[str, str], set[str]] = defaultdict(set)
        for _, obj in self.events:
            meta = obj["metadata"]
            out[(meta["name"], meta["labels"].get("kubeforge.dev/attempt", ""))].add(meta["uid"])
        return out


def test_killing_the_operator_at_random_points_creates_no_duplicates(cluster: Cluster, operator: OperatorProcess,
                                                                     namespace: str) -> None:
    recorder = PodRecorder(cluster, namespace)
    flaky = ("import os, signal, time\n"
             "time.sleep(1.5)\n"
             "if os.environ['KUBEFORGE_ATTEMPT'] == '0' and os.environ['PET_NODE_RANK'] == '1':\n"
             "    os.kill(os.getpid(), signal.SIGKILL)\n"
             "time.sleep(3)\n")
    steady = "import time; time.sleep(4)"
    names = [f"chaos-{i}" for i in range(5)]
    for i, name in enumerate(names):
        create_job(cluster, namespace, command_job(name, flaky if i % 2 == 0 else steady, 2))
    rng = random.Random(7)
    try:
        for _ in range(10):
            time.sleep(rng.uniform(0.2, 1.5))
            operator.kill(signal.SIGKILL)
            operator.start(timeout=180)  # a busy machine may take long to start Python
        for name in names:
            wait_condition(cluster, namespace, name, "Succeeded", 180)
    finally:
        recorder.stop.set()
    duplicates = {k: v for k, v in recorder.uids_per_incarnation().items() if len(v) > 1}
    assert not duplicates
    for i, name in enumerate(names):
        st = cluster.client.get(TJ.format(ns=namespace) + f"/{name}")["status"]
        assert st["restartCount"] == (1 if i % 2 == 0 else 0), (name, st)


def test_a_pass_over_an_unchanged_job_makes_zero_writes(cluster: Cluster, operator: OperatorProcess,
                                                        namespace: str) -> None:
    create_job(cluster, namespace, command_job("quiet", "import time; time.sleep(600)", 2))
    create_job(cluster, namespace, command_job("done", "print('ok')", 1))
    wait_condition(cluster, namespace, "quiet", "Running", 60)
    wait_condition(cluster, namespace, "done", "Succeeded", 60)

    async def passes() -> dict[str, int]:
        os.environ["KUBECONFIG"] = str(operator.kubeconfig)
        login = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
        kube = Kube(lambda: login)
        events: list[str] = []
        rec = Controller(TrainingJobKind(Config("kubeforge/trainer:0.1.0")), kube,
                         lambda _obj, _type, reason, _msg: events.append(reason))
        try:
            await rec.prime([namespace])
            for name in ("quiet", "done"):
                rec.on_object(None, cluster.client.get(TJ.format(ns=namespace) + f"/{name}"))
                plan = await rec.reconcile((namespace, name))
                assert plan is not None and not plan.create and not plan.delete and not plan.update
            assert not events
            return dict(kube.writes)
        finally:
            await kube.close()

    time.sleep(1)  # let the running operator settle its own last write
    assert asyncio.run(passes()) == {}


class CrashingKind(TrainingJobKind):
    """A TrainingJob policy with a bug: every pass raises."""

    def decide(self, world: Any) -> Any:
        raise KeyError("spec.thing")


def test_a_kind_whose_passes_crash_says_so_on_the_object(cluster: Cluster, operator: OperatorProcess) -> None:
    """A user learns from the object itself that the operator cannot reconcile it, and the next pass
    that completes takes the condition away. (kube-system: the running operator never acts there.)"""
    ns, name = "kube-system", "crashy"
    create_job(cluster, ns, command_job(name, "print(1)", 1, runPolicy={"suspend": True}))
    path = TJ.format(ns=ns) + f"/{name}"

    async def run(kind: TrainingJobKind) -> list[Obj]:
        os.environ["KUBECONFIG"] = str(operator.kubeconfig)
        login = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
        kube = Kube(lambda: login)
        rec = Controller(kind, kube, lambda *_: None)
        try:
            await rec.prime([ns])
            rec.start()
            rec.on_object(None, cluster.client.get(path))
            for _ in range(100):
                await asyncio.sleep(0.1)
                conditions = (cluster.client.get(path).get("status") or {}).get("conditions") or []
                if any(c["type"] == "Reconciled" for c in conditions) == isinstance(kind, CrashingKind):
                    return list(conditions)
            raise AssertionError(f"no settled status: {conditions}")
        finally:
            await rec.stop()
            await kube.close()

    try:
        crashed = asyncio.run(run(CrashingKind(Config("img"))))
        [reconciled] = [c for c in crashed if c["type"] == "Reconciled"]
        assert (reconciled["status"], reconciled["reason"]) == ("False", "ReconcileError")
        assert "KeyError: 'spec.thing'" in reconciled["message"], reconciled
        healed = asyncio.run(run(TrainingJobKind(Config("img"))))
        assert {c["type"] for c in healed} == {"Suspended"}, healed
    finally:
        cluster.client.delete(path)
