"""ServingJob spec/status models, the inference wire models and the server settings contract."""

from __future__ import annotations

from typing import Any

import pytest
from kubeforge_api.inference import InferenceRequest
from kubeforge_api.server_settings import ServerEnv, ServerSettings, cpu_threads
from kubeforge_api.servingjob import ServingJobSpec, ServingJobStatus, Variant, service_url
from pydantic import ValidationError

REF = {"trainingJobRef": {"name": "digits"}}


def spec(**fields: Any) -> ServingJobSpec:
    return ServingJobSpec.model_validate({"model": REF, **fields})


def test_defaults_and_camel_case() -> None:
    s = spec()
    assert s.model.training_job_ref is not None and s.model.training_job_ref.variant == Variant.BEST
    assert s.desired_replicas == 1 and s.batching.max_delay_ms == 0
    s = spec(autoscaling={"minReplicas": 2, "maxReplicas": 5}, batching={"maxBatchSize": 8, "maxDelayMs": 2})
    assert s.desired_replicas == 2 and s.dump()["batching"] == {"maxBatchSize": 8, "maxDelayMs": 2}
    assert spec(suspend=True, replicas=3).desired_replicas == 0
    assert ServingJobSpec.model_validate({"model": {"uri": "pvc://data/runs/digits/artifact"}}).model.uri
    s3 = ServingJobSpec.model_validate({"model": {"uri": "s3://models/bert/v1/", "secretRef": {"name": "s3"}}})
    assert s3.model.secret_ref is not None and s3.model.secret_ref.name == "s3"


@pytest.mark.parametrize("bad", [
    {"model": {}},
    {"model": {"uri": "pvc://data/x", **REF}},
    {"model": {"uri": "s3://bucket/x"}},
    {"model": {"uri": "pvc://data/x", "secretRef": {"name": "s3"}}},
    {"model": {"uri": "s3://bucket/a/../b", "secretRef": {"name": "s3"}}},
    {"model": {"uri": "pvc://data/../other", "secretRef": {"name": "s3"}}},
    {"model": {"uri": "pvc://data/./x"}},
    {"model": {"uri": "s3://Bucket/x", "secretRef": {"name": "s3"}}},
    {"model": {"uri": "s3://bucket/x", "secretRef": {"name": "Bad_Name"}}},
    {"model": {"uri": "pvc://Data/x"}},
    {"model": {"trainingJobRef": {"name": "digits", "variant": "latest"}}},
    {"model": REF, "replicas": 2, "autoscaling": {"maxReplicas": 3}},
    {"model": REF, "autoscaling": {"minReplicas": 4, "maxReplicas": 3}},
    {"model": REF, "batching": {"maxBatchSize": 0}},
    {"model": REF, "limits": {"requestTimeoutSeconds": 0}},
    {"model": REF, "canary": {"model": REF, "trafficPercent": 101}},
    {"model": REF, "unknownField": 1},
])
def test_invalid_specs_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ServingJobSpec.model_validate(bad)


def test_every_field_is_described() -> None:
    def walk(model: Any, seen: set[str]) -> None:
        if model.__name__ in seen or model.__module__ != "kubeforge_api.servingjob":
            return
        seen.add(model.__name__)
        for name, f in model.model_fields.items():
            assert f.description, f"{model.__name__}.{name} has no description"
            for arg in getattr(f.annotation, "__args__", (f.annotation,)):
                if isinstance(arg, type) and hasattr(arg, "model_fields"):
                    walk(arg, seen)

    walk(ServingJobSpec, set())
    walk(ServingJobStatus, set())


def test_status_round_trip() -> None:
    status = ServingJobStatus.model_validate({
        "observedGeneration": 3, "url": service_url("digits", "ml"), "replicas": 2, "readyReplicas": 1,
        "conditions": [{"type": "Ready", "status": "False", "reason": "ModelLoading"}],
        "model": {"uri": "pvc://data/a", "digest": "sha256:" + "0" * 64, "trainingJob": "digits",
                  "variant": "original"}})
    assert status.dump()["url"] == "http://digits.ml.svc.cluster.local"
    assert ServingJobStatus.model_validate(status.dump()) == status


def test_server_settings_from_spec_round_trip_through_env() -> None:
    s = ServerSettings.for_spec("digits", spec(batching={"maxBatchSize": 8}, limits={"maxQueueDepth": 10}))
    env = s.to_env()
    assert set(env) == {e.value for e in ServerEnv}
    assert env[ServerEnv.MODEL_NAME] == "digits" and env[ServerEnv.MAX_BATCH_SIZE] == "8"
    assert ServerSettings.from_env(env) == s
    assert ServerSettings.from_env({}) == ServerSettings()
    assert s.termination_grace_seconds >= s.shutdown_delay_seconds + s.request_timeout_seconds
    with pytest.raises(ValidationError):
        ServerSettings.from_env({ServerEnv.PORT: "http"})


def test_inference_request_wire_names() -> None:
    r = InferenceRequest.model_validate_json(
        b'{"id": "1", "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}')
    assert r.inputs[0].datatype == "FP32"
    with pytest.raises(ValidationError):
        InferenceRequest.model_validate_json(b'{"inputs": [{"name": "input", "shape": [1], "datatype": "F"}]}')


def test_torch_threads_follow_the_cpu_limit() -> None:
    assert [cpu_threads(q) for q in ("500m", "2", "1.5", 3, None, "lots")] == [1, 2, 2, 3, 0, 0]
    s = ServerSettings.for_spec("d", spec(resources={"limits": {"cpu": "1500m", "memory": "1Gi"}}))
    assert s.torch_threads == 2 and s.to_env()[ServerEnv.TORCH_THREADS] == "2"
    assert ServerSettings.for_spec("d", spec()).torch_threads == 0
