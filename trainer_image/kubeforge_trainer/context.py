"""What a training process knows about its job: the validated spec (the same pydantic models as the
CRD), identity for lineage, where storage is, and its place in the gang; read once from the env
contract the operator (or `kubeforge run`) sets."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kubeforge_api.constants import Env
from kubeforge_api.trainingjob import TrainingJobSpec
from pydantic import ValidationError


class ConfigError(Exception):
    """The job cannot run as configured; the process exits with EXIT_INVALID_CONFIG (never retried)."""


@dataclass(frozen=True)
class JobContext:
    spec: TrainingJobSpec
    name: str
    namespace: str
    uid: str
    generation: int
    attempt: int
    storage: Path
    progress_port: int
    backend: str
    role: str = "node"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> JobContext:
        try:
            spec = TrainingJobSpec.model_validate(json.loads(env[Env.SPEC]))
        except KeyError:
            raise ConfigError(f"{Env.SPEC} is not set: run under a TrainingJob or `kubeforge run`") from None
        except (ValueError, ValidationError) as e:
            raise ConfigError(f"invalid TrainingJob spec: {e}") from None
        if spec.recipe is None and spec.finetune is None:
            raise ConfigError("this entry point runs recipes and fine-tunes; the job has neither spec.recipe nor "
                              "spec.finetune")
        return cls(
            spec=spec, name=env.get(Env.JOB_NAME, "local"), namespace=env.get(Env.JOB_NAMESPACE, "default"),
            uid=env.get(Env.JOB_UID, ""), generation=int(env.get(Env.JOB_GENERATION, "1")),
            attempt=int(env.get(Env.ATTEMPT, "0")), storage=Path(env.get(Env.STORAGE_DIR, "./kubeforge-storage")),
            progress_port=int(env.get(Env.PROGRESS_PORT, "0")), backend=env.get(Env.DIST_BACKEND, "gloo"),
            role=env.get(Env.ROLE, "node"))
