"""One TrainingJob decision in the making: the job, what was observed of it, the policy settings,
and the status being built. The policy steps read and amend a `Pass`; `decide` runs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kubeforge_api.conditions import set_condition
from kubeforge_api.constants import ROLE_COMPRESS, ROLE_PUBLISH, STAGE_ROLES, ConditionType, State
from kubeforge_api.contracts import ProgressDoc, storage_uri
from kubeforge_api.trainingjob import CleanPodPolicy, RunPolicy, TrainingJobSpec

from ..observe import Failure, PodView, view
from ..plan import ChildRef, Obj, ObjectRef, Plan, World, copy_json, ts
from ..podpolicy import PodPolicy

if TYPE_CHECKING:
    from collections.abc import Iterable


# Fields of status.progress that only mean something while training runs.
RUNNING_ONLY_PROGRESS = ("samplesPerSecond", "etaSeconds")


@dataclass(frozen=True)
class Config:
    """The operator settings a TrainingJob decision depends on."""

    default_image: str
    shm_size: str = "1Gi"
    backoff_seconds: float = 10.0
    backoff_max_seconds: float = 300.0
    progress_interval_seconds: float = 5.0
    progress_warning_interval_seconds: float = 300.0  # at most one Warning per job for a misbehaving endpoint
    kueue: bool = False  # whether the cluster serves Kueue's Workload API (jobs may then be queued)
    node_fence_seconds: float = 0.0  # how long a node is lost before its pods of older attempts are force-deleted
    # None: no allow-lists (local runs, where pods are processes)
    pod_policy: PodPolicy | None = field(default_factory=PodPolicy)


@dataclass(frozen=True)
class ProgressProbe:
    """What the progress probe learned this pass: the document, and a Warning to post (rate-limited)."""

    doc: ProgressDoc | None
    warning: str | None = None


class Pass:
    """The job and its observed pods (sorted: the same world in any order gives the same plan)."""

    def __init__(self, world: World, cfg: Config) -> None:
        self.world, self.cfg, self.now = world, cfg, world.now
        self.job = world.obj
        self.ref = ObjectRef.of(world.obj)
        self.gen = self.ref.generation
        self.old: Obj = world.obj.get("status") or {}
        self.status: Obj = copy_json(self.old)
        self.status["observedGeneration"] = self.gen
        self.plan = Plan(self.status)
        self.pods = sorted((view(p) for p in world.owned("Pod")), key=lambda v: (v.role, v.rank, v.attempt, v.name))
        self.service_exists = bool(world.owned("Service"))
        self.expected = frozenset(name for kind, name in world.expected if kind == "Pod")
        self.service_expected = any(kind == "Service" for kind, _ in world.expected)
        probe = world.probe if isinstance(world.probe, ProgressProbe) else ProgressProbe(
            world.probe if isinstance(world.probe, ProgressDoc) else None)
        self.progress: ProgressDoc | None = probe.doc
        self.progress_warning = probe.warning
        self.valid_spec: TrainingJobSpec | None = None  # set by the validation step, the first one

    # ----- what was observed -----
    @property
    def spec(self) -> TrainingJobSpec:
        assert self.valid_spec is not None, "the validation step runs first"
        return self.valid_spec

    @property
    def policy(self) -> RunPolicy:
        return self.spec.run_policy

    @property
    def restarts(self) -> int:
        return int(self.status.get("restartCount", 0))

    @property
    def disruptions(self) -> int:
        return int(self.status.get("disruptions", 0))

    @property
    def storage_uri(self) -> str:
        """Where the job's storage lives, as artifact uris name it."""
        storage = self.spec.storage
        claim = storage.persistent_volume_claim if storage else None
        return storage_uri(claim.claim_name if claim else None, storage.path if storage else "", self.ref.namespace,
                           self.ref.name)

    @property
    def current(self) -> list[PodView]:
        """Pods of the gang's current attempt."""
        return [v for v in self.pods if v.attempt == self.restarts and v.role not in STAGE_ROLES]

    @property
    def stale(self) -> list[PodView]:
        return [v for v in self.pods if v.attempt != self.restarts and v.role not in STAGE_ROLES]

    @property
    def compressor(self) -> PodView | None:
        """The compression stage's pod (its latest try)."""
        return max((v for v in self.pods if v.role == ROLE_COMPRESS), key=lambda v: v.attempt, default=None)

    @property
    def publisher(self) -> PodView | None:
        """The publish stage's pod (its latest try)."""
        return max((v for v in self.pods if v.role == ROLE_PUBLISH), key=lambda v: v.attempt, default=None)

    @property
    def conds(self) -> list[Obj]:
        return list(self.status.get("conditions") or [])

    # ----- amending status and plan -----
    def set(self, ctype: ConditionType, value: bool, reason: str, message: str) -> None:
        self.status["conditions"] = set_condition(self.conds, ctype, value, reason, message, ts(self.now), self.gen)

    def set_if_present(self, ctype: ConditionType, value: bool, reason: str, message: str) -> None:
        if any(c["type"] == ctype for c in self.conds):
            self.set(ctype, value, reason, message)

    def delete(self, pods: Iterable[PodView]) -> None:
        self.plan.delete = [ChildRef("Pod", v.name, v.uid) for v in pods if not v.deleting]

    def cleanup(self, policy: CleanPodPolicy, keep: str = "") -> None:
        """Delete pods as `cleanPodPolicy` says once the job ended; `keep` names a pod kept for its logs."""
        if policy == CleanPodPolicy.NONE:
            return
        self.delete(v for v in self.pods if v.name != keep and not (policy == CleanPodPolicy.RUNNING and v.finished))

    def terminal(self, ctype: ConditionType, reason: str, message: str) -> None:
        self.set(ctype, True, reason, message)
        self.set(ConditionType.RUNNING, False, reason, message)
        self.set_if_present(ConditionType.RESTARTING, False, reason, message)
        self.status["state"] = State.SUCCEEDED if ctype == ConditionType.SUCCEEDED else State.FAILED
        self.status["reason"] = reason
        self.status.setdefault("completionTime", ts(self.now))
        for key in RUNNING_ONLY_PROGRESS:  # nothing runs any more: no rate, no ETA
            (self.status.get("progress") or {}).pop(key, None)

    def fail(self, reason: str, message: str, failure: Failure | None = None, kill_all: bool = False) -> bool:
        """End the job Failed; pods go as cleanPodPolicy says (all that still run when `kill_all`),
        except the pod whose failure ended the job, which stays for `kubectl logs`."""
        self.terminal(ConditionType.FAILED, reason, message)
        if failure is not None:
            self.status["lastFailure"] = failure.dump()
        policy = self.policy.clean_pod_policy
        if kill_all and policy == CleanPodPolicy.NONE:
            policy = CleanPodPolicy.RUNNING
        self.cleanup(policy, keep=failure.pod if failure else "")
        return True
