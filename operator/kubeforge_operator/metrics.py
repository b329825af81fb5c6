"""Prometheus metrics of the operator (served on settings.metrics_port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOBS_CREATED = Counter("kubeforge_trainingjobs_created_total", "TrainingJobs whose pods were created", ["namespace"])
JOBS_SUCCEEDED = Counter("kubeforge_trainingjobs_succeeded_total", "TrainingJobs that succeeded", ["namespace"])
JOBS_FAILED = Counter("kubeforge_trainingjobs_failed_total", "TrainingJobs that failed", ["namespace"])
JOBS_RESTARTED = Counter("kubeforge_trainingjobs_restarted_total", "Gang restarts of TrainingJobs", ["namespace"])
RECONCILE_SECONDS = Histogram(
    "kubeforge_reconcile_duration_seconds", "Time of one reconcile pass",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
API_WRITES = Counter("kubeforge_api_writes_total", "Mutating API requests made by the reconciler", ["verb", "kind"])
