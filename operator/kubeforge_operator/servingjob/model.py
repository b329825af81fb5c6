"""Pure: a ServingJob's model source -> the concrete artifact to serve (uri, digest, lineage), or
why there is none yet. A TrainingJob that has not succeeded yet means wait, not fail. Whatever a
TrainingJob's status holds (its pods report it), resolution never raises: an artifact whose uri
or digest is not valid is "not found", with the reason."""

from __future__ import annotations

from dataclasses import dataclass

from kubeforge_api.conditions import is_true
from kubeforge_api.constants import ConditionType
from kubeforge_api.model import problems
from kubeforge_api.servingjob import ModelSource, ResolvedModel, ServingReason, Variant
from pydantic import ValidationError

from ..plan import Obj


@dataclass(frozen=True)
class Unresolved:
    reason: ServingReason
    message: str


def _artifact(job: Obj, variant: Variant) -> tuple[Obj | None, Variant]:
    status = job.get("status") or {}
    compressed = (status.get("compression") or {}).get("artifact")
    if variant == Variant.ORIGINAL:
        return status.get("artifact"), Variant.ORIGINAL
    if variant == Variant.COMPRESSED:
        return compressed, Variant.COMPRESSED
    return (compressed, Variant.COMPRESSED) if compressed else (status.get("artifact"), Variant.ORIGINAL)


def resolve(source: ModelSource, jobs: dict[str, Obj | None]) -> ResolvedModel | Unresolved:
    """`jobs` holds the referenced TrainingJob by name (None when it does not exist)."""
    if source.uri is not None:
        return ResolvedModel(uri=source.uri)
    ref = source.training_job_ref
    assert ref is not None
    job = jobs.get(ref.name)
    if job is None:
        return Unresolved(ServingReason.MODEL_NOT_READY, f"waiting for TrainingJob {ref.name} to exist")
    conds = (job.get("status") or {}).get("conditions") or []
    if is_true(conds, ConditionType.FAILED):
        return Unresolved(ServingReason.MODEL_NOT_FOUND, f"TrainingJob {ref.name} failed; it has no model to serve")
    if not is_true(conds, ConditionType.SUCCEEDED):
        return Unresolved(ServingReason.MODEL_NOT_READY, f"waiting for TrainingJob {ref.name} to succeed")
    artifact, variant = _artifact(job, ref.variant)
    if not isinstance(artifact, dict) or not artifact:
        return Unresolved(ServingReason.MODEL_NOT_FOUND, _no_artifact(ref.name, ref.variant))
    uri = str(artifact.get("uri", ""))
    if not uri.startswith("pvc://"):
        return Unresolved(ServingReason.MODEL_NOT_FOUND, f"the artifact of TrainingJob {ref.name} is not on a "
                                                         f"claim ({uri}): give the job spec.storage")
    try:
        return ResolvedModel(uri=uri, digest=artifact.get("digest"), training_job=ref.name, variant=variant)
    except ValidationError as e:
        why = "; ".join(f"{path}: {message}" for path, message in problems(e, "artifact"))
        return Unresolved(ServingReason.MODEL_NOT_FOUND, f"the {variant.value} artifact of TrainingJob {ref.name} "
                                                         f"is not valid: {why}")


def _no_artifact(job: str, variant: Variant) -> str:
    """Why there is nothing to serve, and the fix."""
    if variant == Variant.COMPRESSED:
        return (f"TrainingJob {job} published no compressed artifact (see its Compressed condition): "
                f"serve variant: best or original")
    return f"TrainingJob {job} has no {variant.value} artifact"
