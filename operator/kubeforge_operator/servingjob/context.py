"""One ServingJob decision in the making: the object, what was observed of it, the operator's
settings and the status being built. The policy steps read and amend a `ServingPass`; `decide`
runs them in order."""

from __future__ import annotations

from dataclasses import dataclass, field

from kubeforge_api.conditions import set_condition
from kubeforge_api.servingjob import ResolvedModel, ServingJobSpec, StoppedModel

from ..plan import Obj, ObjectRef, Plan, World, copy_json, ts
from ..podpolicy import PodPolicy
from .model import Unresolved

CHILD_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget")  # what it renders


@dataclass(frozen=True)
class Config:
    """The operator settings a ServingJob decision depends on."""

    default_image: str
    pod_policy: PodPolicy = field(default_factory=PodPolicy)
    autoscaling_sync_seconds: float = 5.0  # how often the servers' load is read while scaling on it
    metrics_warning_interval_seconds: float = 300.0  # at most one Warning per job for a misbehaving /metrics


@dataclass(frozen=True)
class ServingProbe:
    """What the probe learned this pass: the referenced TrainingJobs by name (None: absent), the load
    of each ready server that answered (None: not read this pass) and a Warning to post (rate-limited)."""

    jobs: dict[str, Obj | None]
    load: tuple[float, ...] | None = None
    warning: str | None = None


class ServingPass:
    """The ServingJob and its observed children; the steps fill in the spec and the models."""

    def __init__(self, world: World, cfg: Config) -> None:
        self.world, self.cfg = world, cfg
        self.ref = ObjectRef.of(world.obj)
        self.old: Obj = world.obj.get("status") or {}
        self.status: Obj = copy_json(self.old)
        self.status["observedGeneration"] = self.ref.generation
        self.plan = Plan(self.status)
        self.valid_spec: ServingJobSpec | None = None  # set by the validation step, the first one
        self.main: ResolvedModel | None = None  # set by the resolution step
        self.canary: ResolvedModel | Unresolved | None = None
        self.wanted: dict[tuple[str, str], Obj] = {}  # the children this pass renders, by (kind, name)
        self.stopped: StoppedModel | None = None  # set by the stop step: the main servers go to 0 replicas
        self.scaled_replicas: int | None = None  # set by the scaling step when it owns the replica count
        probe = world.probe
        self._jobs = probe.jobs if isinstance(probe, ServingProbe) else probe if isinstance(probe, dict) else {}
        self.load = probe.load if isinstance(probe, ServingProbe) else None
        self.load_warning = probe.warning if isinstance(probe, ServingProbe) else None

    @property
    def spec(self) -> ServingJobSpec:
        assert self.valid_spec is not None, "the validation step runs first"
        return self.valid_spec

    @property
    def jobs(self) -> dict[str, Obj | None]:
        """The TrainingJobs the models refer to, by name, as the probe read them (None: absent)."""
        return self._jobs

    def condition(self, ctype: str, value: bool, reason: str, message: str) -> None:
        self.status["conditions"] = set_condition(list(self.status.get("conditions") or []), ctype, value, reason,
                                                  message, ts(self.world.now), self.ref.generation)
