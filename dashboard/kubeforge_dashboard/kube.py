"""The Kubernetes implementation of `Source`: read-only, with the official `kubernetes` client.

Answers are read as raw JSON (`_preload_content=False`): the typed API models of kubeforge_api and
the records of `kubeobjects` are built from the same camelCase form the API server sends, and
skipping the client's own deserialisation keeps a 500-job overview fast. Every request is counted
in `calls` (by kind of request), so tests and benchmarks can hold the pages to a bounded number of
calls: the overview lists each kind once, whatever the number of jobs. With `mirror` (the default)
those lists come from a watch-fed `Mirror` per kind and scope: one list, then only change events,
so a refresh issues no list at all."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubeforge_api.constants import GROUP, SERVINGJOB_PLURAL, TRAININGJOB_PLURAL, VERSION
from kubeforge_api.servingjob import ServingJob
from kubeforge_api.trainingjob import TrainingJob
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import BaseModel

from .kubeobjects import (
    Obj,
    cluster_queue_info,
    event_info,
    local_queue_info,
    node_info,
    parse_all,
    pod_info,
    selector_string,
    usage_of,
)
from .mirror import Mirror
from .source import ErrorKind, EventInfo, Listing, NodeInfo, PodInfo, Queues, SourceError, Usage

LOG_LIMIT_BYTES = 256 * 1024
METRICS_GROUP, METRICS_VERSION = "metrics.k8s.io", "v1beta1"
KUEUE_GROUP = "kueue.x-k8s.io"
MAX_MIRRORS = 8
M = TypeVar("M", bound=BaseModel)


def _without_history(obj: Obj) -> None:
    """Lists feed the overview, which draws no curves: skip validating 4 x 200 points per job."""
    (obj.get("status") or {}).pop("history", None)


def connect(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An API client from the in-cluster ServiceAccount, else from the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except ConfigException:
        pass
    try:
        cfg = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=cfg)
        return client.ApiClient(cfg)
    except (ConfigException, OSError, TypeError, ValueError) as e:
        raise SourceError(ErrorKind.UNREACHABLE, f"no cluster access: cannot load a kubeconfig ({e})") from e


def _error(e: Exception, what: str) -> SourceError:
    if isinstance(e, ApiException):
        if e.status in (401, 403):
            return SourceError(ErrorKind.FORBIDDEN, f"forbidden: the dashboard may not {what} ({e.status} {e.reason})")
        if e.status == 404:
            return SourceError(ErrorKind.NOT_FOUND, f"not found: {what}")
        return SourceError(ErrorKind.UNREACHABLE, f"the API server failed to {what}: {e.status} {e.reason}")
    return SourceError(ErrorKind.UNREACHABLE, f"no cluster access: cannot {what} ({type(e).__name__}: {e})")


class KubernetesSource:
    """Reads Kubeforge's CRs, pods, events, logs and nodes from a cluster."""

    def __init__(self, api: client.ApiClient, timeout: float = 5.0, mirror: bool = True) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.timeout = timeout
        self.calls: Counter[str] = Counter()
        self.mirror = mirror  # lists of Kubeforge kinds from a watch-fed mirror (one list, then events)
        self._mirrors: dict[tuple[str, str], Mirror[Any]] = {}
        self._mirrors_lock = threading.Lock()

    @property
    def description(self) -> str:
        return f"Kubernetes API at {self.api.configuration.host}"

    def _call(self, kind: str, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.calls[kind] += 1
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
            return response.data
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            raise _error(e, what) from e

    def _json(self, kind: str, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
        body = self._call(kind, what, fn, *args, **kwargs)
        try:
            data = json.loads(body)
        except ValueError as e:
            raise SourceError(ErrorKind.UNREADABLE, f"unreadable answer when trying to {what}") from e
        if not isinstance(data, dict):
            raise SourceError(ErrorKind.UNREADABLE, f"unreadable answer when trying to {what}")
        return data

    def namespaces(self) -> list[str]:
        data = self._json("list namespaces", "list namespaces", self.core.list_namespace)
        return sorted(str(n["metadata"]["name"]) for n in data.get("items", []))

    def _list_raw(self, plural: str, namespace: str) -> tuple[list[Obj], str]:
        """One list of `plural` in `namespace` ("" for all) and its resourceVersion."""
        args: tuple[Any, ...] = (GROUP, VERSION, namespace, plural) if namespace else (GROUP, VERSION, plural)
        fn = self.custom.list_namespaced_custom_object if namespace else self.custom.list_cluster_custom_object
        data = self._json(f"list {plural}", f"list {plural} in " + (f"namespace {namespace}" if namespace
                                                                     else "all namespaces"), fn, *args)
        return list(data.get("items", [])), str(data.get("metadata", {}).get("resourceVersion", ""))

    def _mirrored(self, plural: str, namespaces: tuple[str, ...], parse: Callable[[Obj], M], kind: str,
                  prepare: Callable[[Obj], None]) -> Listing[M]:
        scope = namespaces[0] if len(namespaces) == 1 else ""
        with self._mirrors_lock:
            found = self._mirrors.get((plural, scope))
            if found is None:
                fn = self.custom.list_namespaced_custom_object if scope else self.custom.list_cluster_custom_object
                args = (GROUP, VERSION, scope, plural) if scope else (GROUP, VERSION, plural)
                found = Mirror(lambda: self._list_raw(plural, scope), fn, args, parse, kind, prepare)
                self._mirrors[(plural, scope)] = found
                while len(self._mirrors) > MAX_MIRRORS:  # the scope read longest ago goes
                    key = min(self._mirrors, key=lambda k: self._mirrors[k].last_read)
                    self._mirrors.pop(key).stop()
        listing: Listing[M] = found.snapshot()
        if not scope and namespaces:
            listing.items[:] = [i for i in listing.items if getattr(i, "metadata").namespace in namespaces]  # noqa: B009
        return listing

    def _list_custom(self, plural: str, namespaces: tuple[str, ...]) -> list[Obj]:
        # resourceVersion=0: served from the API server's watch cache, not a quorum read of etcd
        if len(namespaces) == 1:
            (ns,) = namespaces
            data = self._json(f"list {plural}", f"list {plural} in namespace {ns}",
                              self.custom.list_namespaced_custom_object, GROUP, VERSION, ns, plural,
                              resource_version="0")
            return list(data.get("items", []))
        data = self._json(f"list {plural}", f"list {plural} in all namespaces",
                          self.custom.list_cluster_custom_object, GROUP, VERSION, plural, resource_version="0")
        items = list(data.get("items", []))
        wanted = set(namespaces)
        return [i for i in items if not wanted or i.get("metadata", {}).get("namespace") in wanted]

    def training_jobs(self, namespaces: tuple[str, ...]) -> Listing[TrainingJob]:
        if self.mirror:
            return self._mirrored(TRAININGJOB_PLURAL, namespaces, TrainingJob.model_validate, "TrainingJob",
                                  _without_history)
        items = self._list_custom(TRAININGJOB_PLURAL, namespaces)
        for item in items:
            _without_history(item)
        return parse_all(TrainingJob.model_validate, items, "TrainingJob")

    def serving_jobs(self, namespaces: tuple[str, ...]) -> Listing[ServingJob]:
        if self.mirror:
            return self._mirrored(SERVINGJOB_PLURAL, namespaces, ServingJob.model_validate, "ServingJob",
                                  lambda o: None)
        return parse_all(ServingJob.model_validate, self._list_custom(SERVINGJOB_PLURAL, namespaces), "ServingJob")

    def _get_custom(self, plural: str, namespace: str, name: str) -> Obj:
        return self._json(f"get {plural}", f"read {plural} {namespace}/{name}",
                          self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name)

    def training_job(self, namespace: str, name: str) -> TrainingJob:
        obj = self._get_custom(TRAININGJOB_PLURAL, namespace, name)
        listing = parse_all(TrainingJob.model_validate, [obj], "TrainingJob")
        if listing.problems:
            raise SourceError(ErrorKind.UNREADABLE, listing.problems[0])
        return listing.items[0]

    def serving_job(self, namespace: str, name: str) -> ServingJob:
        obj = self._get_custom(SERVINGJOB_PLURAL, namespace, name)
        listing = parse_all(ServingJob.model_validate, [obj], "ServingJob")
        if listing.problems:
            raise SourceError(ErrorKind.UNREADABLE, listing.problems[0])
        return listing.items[0]

    def pods(self, namespace: str, selector: dict[str, str]) -> list[PodInfo]:
        sel = selector_string(selector)
        if namespace:
            data = self._json("list pods", f"list pods in namespace {namespace}", self.core.list_namespaced_pod,
                              namespace, label_selector=sel)
        else:
            data = self._json("list pods", "list pods in all namespaces", self.core.list_pod_for_all_namespaces,
                              label_selector=sel)
        return [pod_info(p) for p in data.get("items", [])]

    def events(self, namespace: str, names: frozenset[str]) -> list[EventInfo]:
        data = self._json("list events", f"list events in namespace {namespace}", self.core.list_namespaced_event,
                          namespace)
        events = [event_info(e) for e in data.get("items", [])]
        return sorted((e for e in events if e.object_name in names), key=lambda e: e.time)

    def logs(self, namespace: str, pod: str, container: str | None, previous: bool, tail: int) -> str:
        kwargs: dict[str, Any] = {"previous": previous, "tail_lines": tail, "limit_bytes": LOG_LIMIT_BYTES}
        if container:
            kwargs["container"] = container
        body = self._call("read logs", f"read the logs of pod {namespace}/{pod}"
                          + (" (previous container)" if previous else ""),
                          self.core.read_namespaced_pod_log, pod, namespace, **kwargs)
        return body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)

    def nodes(self) -> list[NodeInfo]:
        data = self._json("list nodes", "list nodes", self.core.list_node)
        return [node_info(n) for n in data.get("items", [])]

    def usage(self, selector: dict[str, str]) -> Usage | None:
        """From the resource metrics API; None when the cluster serves none (404, or 503 while metrics-server
        is not ready): the page then shows requests only."""
        try:
            nodes = self._json("list node metrics", "list node metrics (metrics.k8s.io)",
                               self.custom.list_cluster_custom_object, METRICS_GROUP, METRICS_VERSION, "nodes")
            pods = self._json("list pod metrics", "list pod metrics (metrics.k8s.io)",
                              self.custom.list_cluster_custom_object, METRICS_GROUP, METRICS_VERSION, "pods",
                              label_selector=selector_string(selector))
        except SourceError as e:
            if e.kind == ErrorKind.NOT_FOUND or "503" in e.message:
                return None
            raise
        return usage_of(list(nodes.get("items", [])), list(pods.get("items", [])))

    def _served_version(self, group: str) -> str | None:
        """The version of API `group` the cluster prefers, None when it serves no such group."""
        data = self._json("discover api groups", "discover the API groups", client.ApisApi(self.api).get_api_versions)
        for g in data.get("groups") or []:
            if g.get("name") == group:
                return str((g.get("preferredVersion") or {}).get("version") or g["versions"][0]["version"])
        return None

    def queues(self) -> Queues | None:
        """Kueue's queues at the version the cluster prefers (v1beta2 for Kueue v0.17; v1beta1 reads alike): one
        discovery call, then one list of ClusterQueues and one of LocalQueues in every namespace."""
        version = self._served_version(KUEUE_GROUP)
        if version is None:
            return None
        lists = {}
        for plural in ("clusterqueues", "localqueues"):
            data = self._json(f"list {plural}", f"list {plural}.{KUEUE_GROUP}", self.custom.list_cluster_custom_object,
                              KUEUE_GROUP, version, plural)
            lists[plural] = list(data.get("items", []))
        return Queues(version=f"{KUEUE_GROUP}/{version}",
                      cluster_queues=[cluster_queue_info(o) for o in lists["clusterqueues"]],
                      local_queues=[local_queue_info(o) for o in lists["localqueues"]])
