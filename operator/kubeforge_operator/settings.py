"""The operator's one typed settings object, loaded once from the environment at startup and
passed explicitly to whatever needs it."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .trainingjob.context import Config


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBEFORGE_", frozen=True)

    trainer_image: str = "kubeforge/trainer:0.1.0"
    namespaces: list[str] = Field(default_factory=list, description="watch only these; empty = cluster-wide")
    denied_namespaces: list[str] = Field(default_factory=lambda: ["kube-system"], description=(
        "never act on objects in these namespaces, whatever a user creates there"))
    restart_backoff_seconds: float = Field(default=10.0, gt=0, description="first gang-restart delay; doubles")
    restart_backoff_max_seconds: float = Field(default=300.0, gt=0)
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="0 disables the metrics server")
    liveness_port: int = Field(default=8081, ge=0, le=65535)
    workers: int = Field(default=32, ge=1, le=256, description=(
        "jobs reconciled concurrently; a pass mostly waits on the API server (status, then Service, then pods)"))
    shm_size: str = "1Gi"
    log_format: str = Field(default="json", pattern="^(json|plain)$")
    progress_interval_seconds: float = Field(default=5.0, gt=0, description="at most one progress poll per job per "
                                             "interval")

    def policy(self) -> Config:
        """The part of the settings a TrainingJob decision depends on."""
        return Config(self.trainer_image, self.shm_size, self.restart_backoff_seconds,
                      self.restart_backoff_max_seconds, self.progress_interval_seconds)
