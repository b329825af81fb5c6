"""Step: when every worker pod succeeded, rank 0's termination message (typed, validated) gives
the final progress and the artifact, and the job is `Succeeded`. Checked after failures (a failed
peer outranks a finished rank) and before creation (nothing is recreated for a finished gang)."""

from __future__ import annotations

from kubeforge_api.constants import ROLE_NODE, ConditionType, Reason
from kubeforge_api.contracts import TrainingResult
from kubeforge_api.trainingjob import Artifact

from .context import Pass
from .elastic import rank0_name
from .progress import apply_progress


def record_result(p: Pass, result: TrainingResult) -> None:
    if result.progress is not None:
        apply_progress(p.status, result.progress)
    for key, info in (("artifact", result.artifact), ("adapterArtifact", result.adapter_artifact)):
        if info is not None:
            published = (p.status.get(key) or {}).get("publishedUri")  # the publish stage's, kept
            p.status[key] = Artifact(uri=f"{p.storage_uri}/{info.path}", digest=info.digest,
                                     size_bytes=info.size_bytes, format=info.format, published_uri=published).dump()
    if result.evaluation is not None:
        p.status["evaluation"] = result.evaluation.dump()


def workers_done(p: Pass) -> bool:
    """Every worker pod of the current attempt succeeded (an elastic job: node rank 0 did, and no
    other worker still runs; one waiting to scale out never joins a finished run)."""
    workers = [v for v in p.current if v.role == ROLE_NODE]
    if p.spec.elastic is not None:
        return any(v.name == rank0_name(p) and v.phase == "Succeeded" for v in workers) and \
            not any(v.running for v in workers)
    return len(workers) == p.spec.nodes and all(v.phase == "Succeeded" for v in workers)


def record_rank0(p: Pass) -> None:
    """What rank 0's termination message says (the artifact, the final progress), into the status."""
    rank0 = next((v for v in p.current if v.role == ROLE_NODE and v.rank == 0), None)
    if rank0 is not None and rank0.result is not None:
        record_result(p, rank0.result)


def succeeded(p: Pass) -> bool:
    if not workers_done(p):
        return False
    record_rank0(p)
    done = sum(v.role == ROLE_NODE and v.phase == "Succeeded" for v in p.current)
    p.terminal(ConditionType.SUCCEEDED, Reason.COMPLETED, f"all {done} worker pods succeeded")
    p.cleanup(p.policy.clean_pod_policy)
    return True
