"""The dashboard's one settings object, read once from the environment, and what it implies: the
`Source` (the cluster of the current kubeconfig or the in-cluster ServiceAccount, limited to the
watched namespaces when there are some; or the local runs when there is no cluster: `source=auto`
probes with one namespace list), and whether users must sign in (kubeforge_dashboard.auth)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from .auth import AuthMode, KubernetesReviewer, Reviewer
from .cache import CachingSource
from .local import LocalRunsSource
from .scope import ScopedSource
from .source import ErrorKind, Source, SourceError

DEFAULT_RUNS: Final = Path.home() / ".kubeforge" / "runs"
SERVICE_ACCOUNT_TOKEN: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class SettingsEnv(StrEnum):
    SOURCE = "KUBEFORGE_DASHBOARD_SOURCE"
    NAMESPACES = "KUBEFORGE_DASHBOARD_NAMESPACES"
    WATCH_NAMESPACES = "KUBEFORGE_DASHBOARD_WATCH_NAMESPACES"
    AUTH = "KUBEFORGE_DASHBOARD_AUTH"
    REFRESH_SECONDS = "KUBEFORGE_DASHBOARD_REFRESH_SECONDS"
    CACHE_TTL_SECONDS = "KUBEFORGE_DASHBOARD_CACHE_TTL_SECONDS"
    API_TIMEOUT_SECONDS = "KUBEFORGE_DASHBOARD_API_TIMEOUT_SECONDS"
    RUNS_DIR = "KUBEFORGE_RUNS_DIR"  # the same variable `kubeforge run` reads
    KUBECONFIG = "KUBECONFIG"


class SourceKind(StrEnum):
    AUTO = "auto"
    KUBERNETES = "kubernetes"
    LOCAL = "local"


class DashboardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: SourceKind = Field(default=SourceKind.AUTO, description="Where to read jobs from.")
    namespaces: tuple[str, ...] = Field(default=(), description="Namespaces selected at start; empty: all.")
    watch_namespaces: tuple[str, ...] = Field(default=(), description=(
        "The only namespaces the dashboard reads (a namespaced install's); empty: every namespace."))
    auth: AuthMode = Field(default=AuthMode.AUTO, description=(
        "token: users sign in with a Kubernetes bearer token and see what their RBAC allows; none: no sign-in; "
        "auto: token inside a cluster, none elsewhere."))
    refresh_seconds: float = Field(default=5.0, ge=1, le=3600, description="Auto-refresh period of live views.")
    cache_ttl_seconds: float = Field(default=2.0, ge=0, le=600, description="How long an API answer is reused.")
    api_timeout_seconds: float = Field(default=5.0, gt=0, le=120, description="Timeout of one API request.")
    runs_dir: Path = Field(default=DEFAULT_RUNS, description="Folder of local run records.")
    kubeconfig: str | None = Field(default=None, description="Kubeconfig file; default: the client's default.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> DashboardSettings:
        values: dict[str, object] = {}
        pairs = ((SettingsEnv.SOURCE, "source"), (SettingsEnv.REFRESH_SECONDS, "refresh_seconds"),
                 (SettingsEnv.AUTH, "auth"), (SettingsEnv.CACHE_TTL_SECONDS, "cache_ttl_seconds"),
                 (SettingsEnv.API_TIMEOUT_SECONDS, "api_timeout_seconds"), (SettingsEnv.RUNS_DIR, "runs_dir"),
                 (SettingsEnv.KUBECONFIG, "kubeconfig"))
        for var, key in pairs:
            if env.get(var):
                values[key] = env[var]
        for var, key in ((SettingsEnv.NAMESPACES, "namespaces"), (SettingsEnv.WATCH_NAMESPACES, "watch_namespaces")):
            if env.get(var):
                values[key] = tuple(n.strip() for n in env[var].split(",") if n.strip())
        return cls.model_validate(values)

    def sign_in(self, env: Mapping[str, str] = os.environ) -> bool:
        """Whether users must sign in: `auth`, with `auto` meaning "when running inside a cluster"."""
        if self.auth == AuthMode.AUTO:
            return bool(env.get("KUBERNETES_SERVICE_HOST")) and SERVICE_ACCOUNT_TOKEN.is_file()
        return self.auth == AuthMode.TOKEN


def _reachable(source: Source) -> bool:
    """Whether the API server answers at all (a 403 still means there is a cluster)."""
    try:
        source.namespaces()
    except SourceError as e:
        return e.kind != ErrorKind.UNREACHABLE
    return True


def make_source(settings: DashboardSettings) -> Source:
    """The configured source behind a short-lived cache. With `auto`, a cluster that cannot be
    reached (or no kubeconfig at all) means the local runs."""
    local = LocalRunsSource(settings.runs_dir)
    if settings.source == SourceKind.LOCAL:
        return CachingSource(local, settings.cache_ttl_seconds)
    from .kube import KubernetesSource, connect  # the client is only imported when a cluster is used

    try:
        kube = KubernetesSource(connect(settings.kubeconfig), timeout=settings.api_timeout_seconds)
    except SourceError:
        if settings.source == SourceKind.KUBERNETES:
            raise
        return CachingSource(local, settings.cache_ttl_seconds)
    scoped: Source = ScopedSource(kube, settings.watch_namespaces) if settings.watch_namespaces else kube
    if settings.source == SourceKind.AUTO and not _reachable(scoped):
        return CachingSource(local, settings.cache_ttl_seconds)
    return CachingSource(scoped, settings.cache_ttl_seconds)


@functools.lru_cache(maxsize=4)
def make_reviewer(settings: DashboardSettings) -> Reviewer:
    """The process's one reviewer per settings (the HTTP edge and the pages share its answers)."""
    from .kube import connect

    return KubernetesReviewer(connect(settings.kubeconfig), timeout=settings.api_timeout_seconds)
