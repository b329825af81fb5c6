"""Pure: (ServingJob, its children, the referenced TrainingJobs) -> the next status and the actions
that get there. A pass is a checklist, as for a TrainingJob: each step may settle the decision
(returns True) or amend the status and let the next step look. Same world in, same plan out."""

from __future__ import annotations

from collections.abc import Callable

from kubeforge_api.constants import Reason
from kubeforge_api.servingjob import ServingConditionType, ServingReason

from ..plan import Plan, World
from ..transitions import EventRule, condition_events
from .context import Config, ServingPass
from .pod_policy import pod_policy_violated
from .readiness import ready_or_why_not
from .replicas import replicas_observed
from .resolution import model_unresolved
from .rollout import children_rolled_out
from .scaling import scaled_on_load
from .stopped import unloadable_model_stopped
from .validate import invalid_spec

Step = Callable[[ServingPass], bool]
STEPS: tuple[Step, ...] = (
    invalid_spec,  # nothing else can be read from a spec the models reject
    pod_policy_violated,  # pods the operator's settings forbid are never rolled out
    model_unresolved,  # nothing to serve yet: wait, keeping what serves
    unloadable_model_stopped,  # a model no server could load before any served: stop, do not crash-loop
    scaled_on_load,  # on a server metric: the replica count the load and the stabilization windows call for
    children_rolled_out,  # create, update and delete the children to match the spec
    replicas_observed,  # what is served and by how many
    ready_or_why_not,  # Ready and Degraded from what the servers report
)
EVENTS = EventRule(
    warning_reasons=frozenset({ServingReason.INVALID_SPEC, ServingReason.POD_POLICY_VIOLATION,
                               ServingReason.MODEL_NOT_FOUND, ServingReason.MODEL_LOAD_FAILED,
                               ServingReason.STORAGE_ACCESS_DENIED, ServingReason.STORAGE_UNAVAILABLE,
                               Reason.CREATE_REJECTED, Reason.NAME_CONFLICT}),
    trouble=frozenset({ServingConditionType.DEGRADED}),
)


def decide(world: World, cfg: Config) -> Plan:
    p = ServingPass(world, cfg)
    for step in STEPS:
        if step(p):
            break
    return _finish(p)


def _finish(p: ServingPass) -> Plan:
    p.plan.events = [*p.plan.events, *condition_events(p.old, p.status, EVENTS)]
    return p.plan
