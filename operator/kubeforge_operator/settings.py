"""The operator's one typed settings object, loaded once from the environment at startup and
passed explicitly to whatever needs it."""

from __future__ import annotations

import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .podpolicy import DEFAULT_NODE_SELECTOR_KEYS, DEFAULT_TOLERATION_KEYS, PodPolicy
from .servingjob.context import Config as ServingConfig
from .trainingjob.context import Config


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBEFORGE_", frozen=True)

    trainer_image: str = "kubeforge/trainer:0.1.0"
    namespaces: list[str] = Field(default_factory=list, description="watch only these; empty = cluster-wide")
    denied_namespaces: list[str] = Field(default_factory=lambda: ["kube-system"], description=(
        "never act on objects in these namespaces, whatever a user creates there"))
    restart_backoff_seconds: float = Field(default=10.0, gt=0, description="first gang-restart delay; doubles")
    restart_backoff_max_seconds: float = Field(default=300.0, gt=0)
    node_fence_seconds: float = Field(default=0.0, ge=0, le=3600, description=(
        "how long a node must have been lost (NotReady or tainted unreachable) before the pods of older attempts on "
        "it are force-deleted; 0: at once, the node lifecycle controller's grace has already passed"))
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="0 disables the metrics server")
    liveness_port: int = Field(default=8081, ge=0, le=65535)
    workers: int = Field(default=32, ge=1, le=256, description=(
        "jobs reconciled concurrently; a pass mostly waits on the API server (status, then Service, then pods)"))
    shm_size: str = "1Gi"
    log_format: str = Field(default="json", pattern="^(json|plain)$")
    leader_election_namespace: str = Field(default="", description=(
        "the namespace of the Lease that replicas elect their one acting leader with (the operator's own); "
        "empty = no leader election, for a single operator process"))
    lease_name: str = "kubeforge-operator"
    pod_name: str = Field(default_factory=socket.gethostname, description="this replica's identity in the Lease")
    progress_interval_seconds: float = Field(default=5.0, gt=0, description="at most one progress poll per job per "
                                             "interval")
    progress_warning_interval_seconds: float = Field(default=300.0, gt=0, description=(
        "at most one Warning Event per job per interval for a misbehaving progress endpoint (TrainingJob) or "
        "metrics endpoint (ServingJob autoscaling on a server metric)"))
    autoscaling_sync_seconds: float = Field(default=5.0, gt=0, le=600, description=(
        "how often the servers' load is read and the replica count decided while a ServingJob autoscales on a "
        "server metric (waitingRequests, kvCacheUsage)"))
    kueue: bool | None = Field(default=None, description=(
        "whether TrainingJobs labelled kueue.x-k8s.io/queue-name are queued by Kueue; unset = detected once at start "
        "(the API server serves Kueue's Workload API, kueue.x-k8s.io/v1beta2)"))
    # What job authors may put into pods (kubeforge_operator.podpolicy); a violation fails the job.
    allowed_priority_classes: list[str] = Field(default_factory=list, description="PriorityClasses pods may name")
    allowed_toleration_keys: list[str] = Field(default_factory=lambda: list(DEFAULT_TOLERATION_KEYS))
    allowed_node_selector_keys: list[str] = Field(default_factory=lambda: list(DEFAULT_NODE_SELECTOR_KEYS))
    allow_image_pull_secrets: bool = Field(default=False, description="whether pods may name imagePullSecrets")
    allowed_label_keys: list[str] = Field(default_factory=list, description=(
        "pod label keys a job may set; empty = any key outside the reserved domains"))

    def policy(self, kueue: bool = False) -> Config:
        """The part of the settings a TrainingJob decision depends on (`kueue`: whether Kueue is installed)."""
        return Config(self.trainer_image, self.shm_size, self.restart_backoff_seconds,
                      self.restart_backoff_max_seconds, self.progress_interval_seconds,
                      progress_warning_interval_seconds=self.progress_warning_interval_seconds,
                      node_fence_seconds=self.node_fence_seconds, pod_policy=self.pod_policy(), kueue=kueue)

    def serving_policy(self) -> ServingConfig:
        """The part of the settings a ServingJob decision (and its probe) depends on."""
        return ServingConfig(self.trainer_image, self.pod_policy(), self.autoscaling_sync_seconds,
                             self.progress_warning_interval_seconds)

    def pod_policy(self) -> PodPolicy:
        return PodPolicy(frozenset(self.allowed_priority_classes), frozenset(self.allowed_toleration_keys),
                         frozenset(self.allowed_node_selector_keys), self.allow_image_pull_secrets,
                         frozenset(self.allowed_label_keys))
