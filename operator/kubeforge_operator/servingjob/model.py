"""Pure: a ServingJob's model source -> the concrete artifact to serve (uri, credentials, digest,
format, lineage), or why there is none yet. A TrainingJob that has not succeeded yet means wait,
not fail. A TrainingJob's artifact is served from its claim; one that lived only in the job's pods
(an emptyDir) is served from the copy published to `spec.output`, with that Secret. Whatever a
TrainingJob's status holds (its pods report it), resolution never raises: an artifact whose uri
or digest is not valid is "not found", with the reason."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubeforge_api.conditions import is_true
from kubeforge_api.constants import ConditionType
from kubeforge_api.model import problems
from kubeforge_api.servingjob import ModelSource, ResolvedModel, ServingReason, Variant
from kubeforge_api.storage import DOT_SEGMENT, is_s3, valid_uri
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
        return ResolvedModel(uri=source.uri, secret_ref=source.secret_ref)
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
    where = _location(job, artifact)
    if isinstance(where, str):
        return Unresolved(ServingReason.MODEL_NOT_FOUND, f"the {variant.value} artifact of TrainingJob {ref.name} "
                                                         f"{where}")
    try:
        return ResolvedModel.model_validate({
            "uri": where[0], "secretRef": where[1], "digest": artifact.get("digest"), "format": artifact.get("format"),
            "sizeBytes": artifact.get("sizeBytes"), "trainingJob": ref.name, "variant": variant})
    except ValidationError as e:
        why = "; ".join(f"{path}: {message}" for path, message in problems(e, "artifact"))
        return Unresolved(ServingReason.MODEL_NOT_FOUND, f"the {variant.value} artifact of TrainingJob {ref.name} "
                                                         f"is not valid: {why}")


def _location(job: Obj, artifact: Obj) -> tuple[str, Obj | None] | str:
    """Where to serve an artifact from: (its claim's uri, no Secret), else (the copy published to
    spec.output, the job's output Secret); or why neither can be served."""
    uri, published = str(artifact.get("uri") or ""), str(artifact.get("publishedUri") or "")
    if uri.startswith("pvc://"):
        return (uri, None) if _clean(uri) else f"has an invalid uri ({uri})"
    if not published:
        return f"is not on a claim ({uri}) and was not published: give the job spec.storage or spec.output"
    secret = ((job.get("spec") or {}).get("output") or {}).get("secretRef")
    if not is_s3(published) or not _clean(published) or not isinstance(secret, dict):
        return f"was published to {published}, which cannot be served (an s3:// uri with spec.output.secretRef)"
    return published, secret


def _clean(uri: str) -> bool:
    return valid_uri(uri) and re.search(DOT_SEGMENT, uri) is None


def _no_artifact(job: str, variant: Variant) -> str:
    """Why there is nothing to serve, and the fix."""
    if variant == Variant.COMPRESSED:
        return (f"TrainingJob {job} published no compressed artifact (see its Compressed condition): "
                f"serve variant: best or original")
    return f"TrainingJob {job} has no {variant.value} artifact"
