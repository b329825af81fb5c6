"""Pure: (ServingJob, its children, the referenced TrainingJobs) -> the next status and actions.
The steps of a pass: read the spec; resolve the model(s); render the children that should exist;
create what is missing, update what changed (by the hash of its rendered form), delete what should
not exist; then say what the servers report: Ready when one serves, Degraded when a revision
cannot load its model (rolling updates never take the serving revision down, maxUnavailable 0)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kubeforge_api.conditions import set_condition
from kubeforge_api.constants import ANNOTATION_SPEC_HASH, LABEL_TRACK
from kubeforge_api.server_settings import EXIT_MODEL_LOAD_FAILED, EXIT_MODEL_NOT_FOUND
from kubeforge_api.servingjob import (
    ResolvedModel,
    ServingConditionType,
    ServingJobSpec,
    ServingReason,
    service_url,
)
from pydantic import ValidationError

from ..plan import ChildRef, Event, Obj, Plan, World, copy_json, ts
from ..podpolicy import PodPolicy, violation
from ..render.servingjob import (
    CANARY,
    MAIN,
    ModelVolume,
    render_deployment,
    render_hpa,
    render_pdb,
    render_service,
    split,
)
from ..render.trainingjob import JobRef
from ..trainingjob.validate import spec_errors
from .model import Unresolved, resolve

WAIT_FOR_MODEL_SECONDS = 5.0
WARNING_REASONS = {ServingReason.INVALID_SPEC, ServingReason.POD_POLICY_VIOLATION}
LOAD_FAILURES = {EXIT_MODEL_LOAD_FAILED: ServingReason.MODEL_LOAD_FAILED,
                 EXIT_MODEL_NOT_FOUND: ServingReason.MODEL_NOT_FOUND}


@dataclass(frozen=True)
class Config:
    default_image: str
    pod_policy: PodPolicy = field(default_factory=PodPolicy)


@dataclass(frozen=True)
class Verdict:
    """The Ready and Degraded conditions of a pass."""

    ready: bool
    reason: str
    message: str
    degraded: tuple[str, str] | None = None  # (reason, message) when a revision cannot serve


class ServingPass:
    """Builds the next status of one ServingJob."""

    def __init__(self, world: World, cfg: Config) -> None:
        self.world, self.cfg = world, cfg
        self.ref = JobRef.of(world.obj)
        self.old: Obj = world.obj.get("status") or {}
        self.status: Obj = copy_json(self.old)
        self.status["observedGeneration"] = self.ref.generation
        self.plan = Plan(self.status)

    def condition(self, ctype: str, value: bool, reason: str, message: str) -> None:
        self.status["conditions"] = set_condition(list(self.status.get("conditions") or []), ctype, value, reason,
                                                  message, ts(self.world.now), self.ref.generation)

    def have(self) -> dict[tuple[str, str], Obj]:
        return {(k, o["metadata"]["name"]): o for k in ("Deployment", "Service", "HorizontalPodAutoscaler",
                                                         "PodDisruptionBudget") for o in self.world.owned(k)}


def desired(ref: JobRef, spec: ServingJobSpec, main: ResolvedModel, canary: ResolvedModel | None,
            image: str) -> list[Obj]:
    """Every child that should exist when the model is resolved."""
    main_n, canary_n = split(spec.desired_replicas, spec.canary.traffic_percent if spec.canary else 0)
    hpa = spec.autoscaling is not None and not spec.suspend
    out = [render_service(ref), render_pdb(ref),
           render_deployment(ref, spec, MAIN, ModelVolume.parse(main.uri), image, None if hpa else main_n)]
    if canary is not None:
        out.append(render_deployment(ref, spec, CANARY, ModelVolume.parse(canary.uri), image, canary_n))
    if hpa:
        out.append(render_hpa(ref, spec))
    return out


def reconcile_children(p: ServingPass, want: list[Obj], keep: set[str]) -> None:
    """Create the missing (unless just created), update the changed, delete the unwanted (but kinds in `keep`)."""
    plan, have = p.plan, p.have()
    wanted = {(o["kind"], o["metadata"]["name"]): o for o in want}
    for key, obj in wanted.items():
        current = have.get(key)
        if current is None:
            if key not in p.world.expected:
                plan.create.append(obj)
        elif (current["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH) != \
                obj["metadata"]["annotations"][ANNOTATION_SPEC_HASH]:
            plan.update.append(obj)
    for (kind, name), obj in have.items():
        if (kind, name) not in wanted and kind not in keep:
            plan.delete.append(ChildRef(kind, name, obj["metadata"].get("uid", "")))


def load_failure(pods: list[Obj]) -> tuple[str, str] | None:
    """A server that exited because its model cannot be loaded: (reason, its one-line message)."""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            for state in (cs.get("state") or {}, cs.get("lastState") or {}):
                t = state.get("terminated") or {}
                if t.get("exitCode") in LOAD_FAILURES:
                    message = (t.get("message") or "").strip().splitlines()
                    name = pod["metadata"]["name"]
                    return LOAD_FAILURES[t["exitCode"]], f"pod {name}: {message[-1] if message else 'cannot load'}"
    return None


def verdict(spec: ServingJobSpec, world: World) -> Verdict:
    """Ready when at least one server of the main track serves; Degraded when a server cannot load."""
    deployments = {d["metadata"]["name"]: d for d in world.owned("Deployment")}
    main = deployments.get(world.obj["metadata"]["name"]) or {}
    ready = int((main.get("status") or {}).get("readyReplicas", 0))
    failure = load_failure(world.owned("Pod"))
    if world.refusals:  # what the API server refused outranks what the servers say
        r = world.refusals[0]
        failure = (r.reason, f"the API server refused to create {r.message}")
    if spec.suspend:
        return Verdict(False, ServingReason.SUSPENDED, "the ServingJob is suspended; its servers are scaled to 0")
    if ready:
        st = main.get("status") or {}
        rolling = int(st.get("updatedReplicas", 0)) < int(st.get("replicas", 0)) or \
            int(st.get("observedGeneration", 0)) < int(main["metadata"].get("generation", 0))
        reason = ServingReason.ROLLOUT_IN_PROGRESS if rolling else ServingReason.MODEL_LOADED
        return Verdict(True, reason, f"{ready} server(s) ready", failure)
    if failure:
        return Verdict(False, failure[0], failure[1], failure)
    return Verdict(False, ServingReason.MODEL_LOADING, "the servers are loading the model")


def decide(world: World, cfg: Config) -> Plan:
    p = ServingPass(world, cfg)
    try:
        spec = ServingJobSpec.model_validate(world.obj.get("spec") or {})
    except ValidationError as e:
        p.condition(ServingConditionType.READY, False, ServingReason.INVALID_SPEC, spec_errors(e))
        return _finish(p)
    forbidden = violation(spec.pod_template, cfg.pod_policy)
    if forbidden is not None:  # nothing is rolled out with it; what serves already keeps serving
        p.condition(ServingConditionType.READY, False, ServingReason.POD_POLICY_VIOLATION, forbidden)
        return _finish(p)
    jobs = world.probe if isinstance(world.probe, dict) else {}
    main = resolve(spec.model, jobs)
    canary = resolve(spec.canary.model, jobs) if spec.canary else None
    p.status["url"] = service_url(p.ref.name, p.ref.namespace)
    if isinstance(main, Unresolved):
        reconcile_children(p, [render_service(p.ref), render_pdb(p.ref)], keep={"Deployment"})
        p.condition(ServingConditionType.READY, False, main.reason, main.message)
        p.plan.requeue(WAIT_FOR_MODEL_SECONDS)
        return _finish(p)
    canary_model = canary if isinstance(canary, ResolvedModel) else None
    reconcile_children(p, desired(p.ref, spec, main, canary_model, cfg.default_image), keep=set())
    _observe(p, spec, main, canary)
    return _finish(p)


def _observe(p: ServingPass, spec: ServingJobSpec, main: ResolvedModel,
             canary: ResolvedModel | Unresolved | None) -> None:
    tracks = {(d["metadata"].get("labels") or {}).get(LABEL_TRACK): d.get("status") or {}
              for d in p.world.owned("Deployment")}
    p.status["model"] = main.dump()
    p.status["replicas"] = int(tracks.get(MAIN, {}).get("replicas", 0))
    p.status["readyReplicas"] = int(tracks.get(MAIN, {}).get("readyReplicas", 0))
    if spec.canary is not None:
        p.status["canary"] = {"trafficPercent": spec.canary.traffic_percent,
                              "replicas": int(tracks.get(CANARY, {}).get("replicas", 0)),
                              "readyReplicas": int(tracks.get(CANARY, {}).get("readyReplicas", 0)),
                              **({"model": canary.dump()} if isinstance(canary, ResolvedModel) else {})}
    else:
        p.status.pop("canary", None)
    v = verdict(spec, p.world)
    p.condition(ServingConditionType.READY, v.ready, v.reason, v.message)
    degraded = v.degraded
    if degraded is None and isinstance(canary, Unresolved):
        degraded = (canary.reason, f"canary: {canary.message}")
    if degraded:
        p.condition(ServingConditionType.DEGRADED, True, degraded[0], degraded[1])
    else:
        p.condition(ServingConditionType.DEGRADED, False, v.reason, "every server that should serve does")


def _finish(p: ServingPass) -> Plan:
    old = {c["type"]: c for c in p.old.get("conditions") or []}
    for c in p.status.get("conditions") or []:
        prev = old.get(c["type"])
        if prev is None or (prev["status"], prev.get("reason")) != (c["status"], c.get("reason")):
            warn = (c["type"] == ServingConditionType.DEGRADED and c["status"] == "True") or \
                c.get("reason") in WARNING_REASONS
            p.plan.events.append(Event("Warning" if warn else "Normal", c.get("reason", ""), c.get("message", "")))
    return p.plan
