"""One schema source: the CRD, docs/api.md and the models' own validation all come from
kubeforge_api. The committed files equal what `make generate` writes, every field is described,
the schema is structural, every admission-corpus case is rejected by the models naming the field
the API server names, and every status the operator writes fits the status schema."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from admission_corpus import CORPUS
from kubeforge_api.codegen import KINDS, main, outputs
from kubeforge_api.contracts import ProgressDoc
from kubeforge_api.crd import Column, CrdKind, generate_crd
from kubeforge_api.model import Model, Rule, problems
from kubeforge_api.trainingjob import CRD, TrainingJob, TrainingJobSpec, TrainingJobStatus
from kubeforge_operator.plan import ObjectRef, World
from kubeforge_operator.render.trainingjob import members, render_pod
from kubeforge_operator.trainingjob.context import Config
from kubeforge_operator.trainingjob.decide import decide as decide_world
from pydantic import ConfigDict, Field, ValidationError

REPO = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def schema_nodes(node: Obj, path: str) -> list[tuple[str, Obj]]:
    """Every schema node under `node` with its `kubectl explain` path."""
    out = [(path, node)]
    for name, child in (node.get("properties") or {}).items():
        out += schema_nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += [(p, n) for p, n in schema_nodes(node["items"], path) if p != path]
    if isinstance(node.get("additionalProperties"), dict):
        out += [(p, n) for p, n in schema_nodes(node["additionalProperties"], f"{path}.*") if p != f"{path}.*"]
    return out


def root_schema() -> Obj:
    schema: Obj = generate_crd(CRD)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


# ---------- generated files ----------

def test_committed_crds_and_api_doc_are_what_make_generate_writes() -> None:
    stale = [str(p.relative_to(REPO)) for p, text in outputs(REPO).items() if p.read_text() != text]
    assert not stale, f"out of date, run `make generate`: {stale}"


def test_check_mode_catches_a_hand_edit_and_generate_repairs_it(tmp_path: Path) -> None:
    for p in outputs(REPO):
        copy = tmp_path / p.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, copy)
    assert main(["--root", str(tmp_path), "--check"]) == 0
    crd = tmp_path / "manifests" / "crds" / "kubeforge.dev_trainingjobs.yaml"
    crd.write_text(crd.read_text().replace("maximum: 256", "maximum: 512", 1))
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--root", str(tmp_path), "--check"]) == 0
    assert crd.read_text() == (REPO / "manifests" / "crds" / crd.name).read_text()


def test_api_doc_has_a_row_with_default_and_range_for_every_spec_field() -> None:
    doc = (REPO / "docs" / "api.md").read_text()
    spec_table = doc.split("<!-- BEGIN GENERATED TrainingJob.spec -->")[1].split("<!-- END GENERATED -->")[0]
    assert len([line for line in spec_table.splitlines() if line.startswith("| `")]) >= 66
    assert "| `runPolicy.backoffLimit` | integer | `3` | Range: 0 to 100. | Counted failures" in spec_table
    assert "| `env[].name` | string |  | Required. At most 128 characters. |" in spec_table
    assert "| `progress.samplesPerSecond` | number |" in doc
    assert "| `recipe.model` | string |  | Required. One of: mlp, cnn, gpt. |" in spec_table
    assert "- `spec.recipe.datasetPath`: recipe.datasetPath is required with dataset 'file'" in doc
    assert "- `spec` (on update): spec.recipe is immutable" not in doc  # it names spec.recipe
    assert "- `spec.recipe` (on update): spec.recipe is immutable" in doc
    assert "Immutable after creation" in doc  # the hand-written text around the tables stays


# ---------- the CRD schema ----------

def test_every_spec_and_status_field_is_described_with_its_default_and_range() -> None:
    schema = root_schema()
    nodes = schema_nodes(schema["properties"]["spec"], "spec") + schema_nodes(schema["properties"]["status"], "status")
    assert len([p for p, _ in nodes if p.startswith("spec.")]) >= 66
    for path, node in nodes:
        text = node.get("description", "")
        assert text, f"{path} has no description (kubectl explain would say <no description>)"
        if "default" in node and not isinstance(node["default"], dict):
            assert "Default: " in text, path
        if "maximum" in node:
            assert str(node["maximum"]) in text, path
        if "enum" in node:
            assert all(str(v) in text for v in node["enum"]), path


def test_the_schema_is_structural() -> None:
    allowed_untyped = ("x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")
    for path, node in schema_nodes(root_schema(), ""):
        for keyword in ("$ref", "anyOf", "allOf", "oneOf", "nullable", "title", "$defs"):
            assert keyword not in node, (path, keyword)
        assert "type" in node or any(node.get(k) for k in allowed_untyped), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("additionalProperties") is not False, path
        assert node.get("default") is not None or "default" not in node, path


def test_the_crd_declares_names_columns_and_the_status_subresource() -> None:
    crd = generate_crd(CRD)
    names, version = crd["spec"]["names"], crd["spec"]["versions"][0]
    assert names["shortNames"] == ["tj"] and names["categories"] == ["kubeforge"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["State"]["jsonPath"] == ".status.state" and columns["Reason"]["priority"] == 1
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    # The API server fills in the spec's own defaults (CEL rules read them), not those inside its
    # objects: the models apply those, so a stored spec says what its author wrote. explain still
    # states every default.
    assert spec["properties"]["nodes"]["default"] == 1 and spec["properties"]["strategy"]["default"] == "ddp"
    nested = [path for path, node in schema_nodes(spec, "spec") if "default" in node and path.count(".") > 1]
    assert nested == [] and "default" not in spec["properties"]["runPolicy"], nested
    backoff = spec["properties"]["runPolicy"]["properties"]["backoffLimit"]
    assert backoff["description"].endswith("Range: 0 to 100. Default: 3.")
    assert TrainingJobSpec.model_validate({"command": ["x"]}).run_policy.backoff_limit == 3
    assert "default" not in spec["properties"]["env"]["items"]["properties"]["value"]
    assert spec["properties"]["compression"]["properties"]["methods"]["maxItems"] == 8
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert "x-kubernetes-preserve-unknown-fields" not in status
    compression = status["properties"]["compression"]  # typed like the rest: the API server prunes the unknown
    assert "x-kubernetes-preserve-unknown-fields" not in compression
    assert compression["properties"]["candidates"]["maxItems"] == 8


def test_a_new_kind_declares_rules_and_columns_next_to_its_fields() -> None:
    class ToySpec(Model):
        crd_rules = (Rule("self.low <= self.high", "low must not exceed high", ".low",
                          check=lambda s: s.low <= s.high),)
        low: int = Field(default=0, ge=0, description="Lower end.")
        high: int = Field(default=1, le=9, description="Upper end.")
        mode: Literal["a", "b"] | None = Field(default=None, description="A mode.")

    class Labels(Model):
        model_config = ConfigDict(extra="allow")
        team: str = Field(default="", description="Owning team.")

    class Toy(Model):
        spec: ToySpec = Field(description="The toy's spec.")
        labels: Labels | None = Field(default=None, description="Known and unknown labels.")

    crd = generate_crd(CrdKind("example.dev", "v1", "Toy", "toys", Toy, short_names=("ty",),
                               columns=(Column("Low", "integer", ".spec.low"),)))
    version = crd["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert crd["metadata"]["name"] == "toys.example.dev" and "subresources" not in version
    assert spec["x-kubernetes-validations"] == [{"rule": "self.low <= self.high", "message": "low must not exceed high",
                                                 "fieldPath": ".low"}]
    assert spec["properties"]["mode"] == {"type": "string", "description": "A mode. One of: a, b.", "enum": ["a", "b"]}
    assert spec["properties"]["high"]["description"] == "Upper end. At most 9. Default: 1."
    labels = version["schema"]["openAPIV3Schema"]["properties"]["labels"]
    assert labels["x-kubernetes-preserve-unknown-fields"] is True and "team" in labels["properties"]
    with pytest.raises(ValidationError) as e:
        Toy.model_validate({"spec": {"low": 5, "high": 3}})
    assert problems(e.value) == [("spec.low", "low must not exceed high")]


def test_a_union_the_api_server_cannot_express_is_refused() -> None:
    class Bad(Model):
        value: int | list[str] = 0

    class BadKind(Model):
        spec: Bad

    with pytest.raises(ValueError, match="cannot express the union"):
        generate_crd(CrdKind("example.dev", "v1", "Bad", "bads", BadKind))


# ---------- the same verdict from the models ----------

def first_problem(doc: Obj) -> tuple[str, str] | None:
    try:
        TrainingJob.model_validate(doc)
    except ValidationError as e:
        return problems(e)[0]
    return None


def names_field(path: str, field: str) -> bool:
    return path == field or path.startswith((f"{field}.", f"{field}["))


@pytest.mark.parametrize(("case", "doc", "field"), CORPUS, ids=[c[0] for c in CORPUS])
def test_admission_corpus_is_rejected_by_the_models_naming_the_same_field(case: str, doc: Obj, field: str) -> None:
    problem = first_problem(doc)
    assert problem is not None, f"{case} was accepted by the models"
    assert names_field(problem[0], field), (case, problem)
    assert "errors.pydantic.dev" not in problem[1]


def test_every_sample_is_accepted_by_the_models() -> None:
    files = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
    docs = [d for p in files for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] == "TrainingJob"]
    assert docs
    for doc in docs:
        assert first_problem(doc) is None, doc["metadata"]["name"]


def test_error_paths_name_list_items_like_the_api_server() -> None:
    doc = {"metadata": {"name": "ok"}, "spec": {"command": ["x"], "env": [{"name": "A"}, {"name": "A"}]}}
    assert first_problem(doc) == ("spec.env[1]", "duplicate env name A")
    with pytest.raises(ValidationError) as e:
        TrainingJobSpec.model_validate({"recipe": {"model": "mlp", "dataset": "file"}})
    message = "recipe.datasetPath is required with dataset 'file'"
    assert problems(e.value, "spec") == [("spec.recipe.datasetPath", message)]


# ---------- the status schema fits what the operator writes ----------

CFG = Config(default_image="img", backoff_seconds=10, backoff_max_seconds=300)
PROGRESS_WIRE = {"step": 40, "totalSteps": 100, "epoch": 2, "percent": 40.0, "loss": 0.52,
                 "eval": {"loss": 0.6, "accuracy": 0.81}, "samplesPerSecond": 812.3, "etaSeconds": 12,
                 "lastCheckpointStep": 30, "history": [{"kind": "train", "step": 10, "loss": 1.2,
                                                        "samplesPerSecond": 800.0},
                                                       {"kind": "eval", "step": 20, "loss": 0.9, "accuracy": 0.7}]}
PROGRESS = ProgressDoc.model_validate(PROGRESS_WIRE)


def decide(job: Obj, pods: list[Any], service: bool, expected: frozenset[str], now: Any, cfg: Config,
           progress: ProgressDoc | None = None) -> Any:
    children = {"Pod": [{"kind": "Pod", **p} for p in pods], "Service": [{"kind": "Service"}] if service else []}
    return decide_world(World(job, children, frozenset(("Pod", n) for n in expected), now, progress), cfg)


def job(spec: Obj, status: Obj | None = None) -> Obj:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": spec, "status": status or {}}


def pod(spec: Obj, rank: int, phase: str, container_state: Obj | None = None) -> Obj:
    typed = TrainingJobSpec.model_validate(spec)
    p = render_pod(ObjectRef("demo", "ml", "u", 1), typed, members(typed)[rank], 0, "img", "1Gi")
    p["metadata"].update({"uid": f"p{rank}", "creationTimestamp": "2026-01-01T11:59:00Z"})
    p["status"] = {"phase": phase}
    if container_state:
        p["status"]["containerStatuses"] = [{"name": "trainer", "state": container_state}]
    return p


def statuses() -> list[Obj]:
    """Statuses of a job's life: created, running with progress, failed, restarting, succeeded, suspended."""
    recipe = {"nodes": 2, "storage": {"persistentVolumeClaim": {"claimName": "data"}},
              "recipe": {"model": "mlp", "dataset": "digits"}}
    out = [decide(job(recipe), [], False, frozenset(), NOW, CFG).status]
    running = [pod(recipe, r, "Running") for r in range(2)]
    out.append(decide(job(recipe, out[-1]), running, True, frozenset(), NOW, CFG, PROGRESS).status)
    killed = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-01-01T12:00:00Z"}}
    restarting = decide(job(recipe, out[-1]), [pod(recipe, 0, "Failed", killed), running[1]], True,
                        frozenset(), NOW, CFG).status
    result = json.dumps({"artifact": {"path": "model", "digest": "sha256:" + "ab" * 32, "sizeBytes": 10},
                         "progress": PROGRESS_WIRE})
    done = {"terminated": {"exitCode": 0, "reason": "Completed", "message": result}}
    succeeded = decide(job(recipe, out[-1]), [pod(recipe, r, "Succeeded", done) for r in range(2)], True,
                       frozenset(), NOW, CFG).status
    failed = decide(job({**recipe, "nodes": 1}), [pod({**recipe, "nodes": 1}, 0, "Failed", {"terminated": {
        "exitCode": 1, "reason": "Error", "message": "Traceback\nValueError: bad"}})], True, frozenset(), NOW, CFG)
    suspended = decide(job({**recipe, "runPolicy": {"suspend": True}}, out[-1]), [], True, frozenset(), NOW, CFG)
    invalid = decide(job({"nodes": 0}), [], False, frozenset(), NOW, CFG)
    return [*out, restarting, succeeded, failed.status, suspended.status, invalid.status]


def test_every_status_the_operator_writes_fits_the_status_schema() -> None:
    seen: set[str] = set()
    for status in statuses():
        TrainingJobStatus.model_validate(status)  # extra="forbid": a field the schema lacks would be pruned
        seen |= set(status)
    assert {"progress", "history", "lastCheckpoint", "artifact", "lastFailure", "restartCount", "replicaStatuses",
            "conditions", "state", "reason", "startTime", "completionTime", "observedGeneration"} <= seen


def test_a_finished_job_keeps_its_final_numbers_but_no_rate_or_eta() -> None:
    """Throughput and ETA only mean something while training runs; the curves keep the rate."""
    succeeded = statuses()[3]
    assert succeeded["state"] == "Succeeded"
    assert succeeded["progress"] == {"step": 40, "totalSteps": 100, "epoch": 2, "percent": "40.0%", "loss": 0.52,
                                     "eval": {"loss": 0.6, "accuracy": 0.81}}
    assert succeeded["history"]["samplesPerSecond"] == "10:800"


def test_kinds_listed_for_generation_are_all_the_crds() -> None:
    committed = {p.name for p in (REPO / "manifests" / "crds").glob("*.yaml") if p.name != "kustomization.yaml"}
    assert committed == {f"{k.group}_{k.plural}.yaml" for k in KINDS}
