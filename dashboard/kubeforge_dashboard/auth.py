"""Who is looking, and what they may see: the dashboard shows a user only what Kubernetes RBAC lets
that user read, whatever its own ServiceAccount may read.

Authentication is a Kubernetes bearer token (a ServiceAccount token from `kubectl create token`, an
OIDC ID token, whatever the API server accepts), checked with a TokenReview; authorization is a
SubjectAccessReview per (verb, resource, namespace) asked on the user's behalf. The dashboard's
ServiceAccount needs only `create` on both (the built-in ClusterRole `system:auth-delegator`), on top
of its read rights. `AuthorizedSource` puts the checks in front of a `Source`: a list across
namespaces keeps the namespaces the user may list; a read of one namespace the user may not read
fails as forbidden. Answers are remembered for a short time (`TTL_SECONDS`), the way an API server's
own webhook authorizer caches them; tokens are remembered only by their SHA-256."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from kubeforge_api.constants import GROUP, SERVINGJOB_PLURAL, TRAININGJOB_PLURAL
from kubeforge_api.servingjob import ServingJob
from kubeforge_api.trainingjob import TrainingJob

from .source import ErrorKind, EventInfo, Listing, NodeInfo, PodInfo, Queues, Source, SourceError, Usage

TTL_SECONDS = 30.0
MAX_ENTRIES = 4096
V = TypeVar("V")


class AuthMode(StrEnum):
    AUTO = "auto"  # token inside a cluster (a ServiceAccount is mounted), none elsewhere
    TOKEN = "token"
    NONE = "none"  # whoever reaches the dashboard sees what its credentials may read


@dataclass(frozen=True)
class Identity:
    """A user as the API server authenticated it (TokenReview's `status.user`)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Check:
    """One question for the authorizer: may the user `verb` `resource` (in `namespace`; "" for every
    namespace, or for a cluster-scoped resource)?"""

    verb: str
    group: str
    resource: str
    namespace: str = ""
    subresource: str = ""

    def __str__(self) -> str:
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        return f"{self.verb} {what}" + (f" in namespace {self.namespace}" if self.namespace else "")


class Reviewer(Protocol):
    def authenticate(self, token: str) -> Identity | None:
        """The token's user; None when the token is not valid. SourceError when no one can say."""
        ...

    def allowed(self, who: Identity, check: Check) -> bool:
        """Whether RBAC (or whatever authorizes the API server) allows it. SourceError when no one can say."""
        ...


class TtlCache(Generic[V]):
    """A bounded map whose entries expire; thread-safe."""

    def __init__(self, ttl: float = TTL_SECONDS, size: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and self.clock() < hit[0]:
                return hit[1]
        value = compute()
        with self._lock:
            self._entries[key] = (self.clock() + self.ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value


def token_of(authorization: str | None) -> str | None:
    """The bearer token of an `Authorization` header: `Bearer <token>`, or HTTP Basic with the token as the
    password (what a browser's sign-in prompt sends; the user name is ignored)."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or None
    return None


def _identity(user: dict[str, Any]) -> Identity:
    extra = tuple(sorted((str(k), tuple(str(x) for x in v)) for k, v in (user.get("extra") or {}).items()))
    return Identity(str(user.get("username", "")), str(user.get("uid", "")),
                    tuple(str(g) for g in user.get("groups") or ()), extra)


class KubernetesReviewer:
    """TokenReview and SubjectAccessReview through the dashboard's own API client, answers cached."""

    def __init__(self, api: Any, timeout: float = 5.0, ttl: float = TTL_SECONDS) -> None:
        from kubernetes import client  # only where a cluster is used

        self.authn = client.AuthenticationV1Api(api)
        self.authz = client.AuthorizationV1Api(api)
        self.timeout = timeout
        self._tokens: TtlCache[Identity | None] = TtlCache(ttl)
        self._answers: TtlCache[bool] = TtlCache(ttl)

    def _post(self, fn: Callable[..., Any], body: dict[str, Any], what: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            data = json.loads(fn(body=body, _preload_content=False, _request_timeout=self.timeout).data)
        except (ApiException, OSError, ValueError) as e:
            raise SourceError(ErrorKind.UNREACHABLE, f"cannot {what}: {type(e).__name__}") from e
        return data if isinstance(data, dict) else {}

    def authenticate(self, token: str) -> Identity | None:
        def review() -> Identity | None:
            body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
            status = self._post(self.authn.create_token_review, body, "review a token").get("status") or {}
            return _identity(status.get("user") or {}) if status.get("authenticated") else None

        return self._tokens.get(hashlib.sha256(token.encode()).hexdigest(), review)

    def allowed(self, who: Identity, check: Check) -> bool:
        def review() -> bool:
            attributes = {"verb": check.verb, "group": check.group, "resource": check.resource,
                          "subresource": check.subresource, "namespace": check.namespace}
            spec = {"user": who.username, "uid": who.uid, "groups": list(who.groups),
                    "extra": {k: list(v) for k, v in who.extra}, "resourceAttributes": attributes}
            body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
            answer = self._post(self.authz.create_subject_access_review, body, f"check whether you may {check}")
            return bool((answer.get("status") or {}).get("allowed"))

        return self._answers.get((who, check), review)


TRAININGJOBS = (GROUP, TRAININGJOB_PLURAL)
SERVINGJOBS = (GROUP, SERVINGJOB_PLURAL)
PODS, EVENTS, NODES = ("", "pods"), ("", "events"), ("", "nodes")
CLUSTERQUEUES, LOCALQUEUES = ("kueue.x-k8s.io", "clusterqueues"), ("kueue.x-k8s.io", "localqueues")


class AuthorizedSource:
    """`inner` as `who` may see it: every read checked against `who`'s rights, not the dashboard's."""

    def __init__(self, inner: Source, reviewer: Reviewer, who: Identity) -> None:
        self.inner, self.reviewer, self.who = inner, reviewer, who

    @property
    def description(self) -> str:
        return f"{self.inner.description}, as {self.who.username}"

    def _may(self, verb: str, what: tuple[str, str], namespace: str = "", subresource: str = "") -> bool:
        return self.reviewer.allowed(self.who, Check(verb, what[0], what[1], namespace, subresource))

    def _require(self, verb: str, what: tuple[str, str], namespace: str = "", subresource: str = "") -> None:
        if not self._may(verb, what, namespace, subresource):
            check = Check(verb, what[0], what[1], namespace, subresource)
            raise SourceError(ErrorKind.FORBIDDEN, f"forbidden: you ({self.who.username}) may not {check}")

    def _scope(self, what: tuple[str, str], namespaces: tuple[str, ...]) -> tuple[str, ...] | None:
        """The namespaces to list `what` in: () for all (the user may list it cluster-wide), None for none."""
        for ns in namespaces:
            self._require("list", what, ns)
        if namespaces or self._may("list", what):
            return namespaces
        mine = tuple(ns for ns in self.inner.namespaces() if self._may("list", what, ns))
        return mine or None

    def namespaces(self) -> list[str]:
        return [ns for ns in self.inner.namespaces()
                if self._may("list", TRAININGJOBS, ns) or self._may("list", SERVINGJOBS, ns)]

    def training_jobs(self, namespaces: tuple[str, ...]) -> Listing[TrainingJob]:
        scope = self._scope(TRAININGJOBS, namespaces)
        return Listing(items=[]) if scope is None else self.inner.training_jobs(scope)

    def serving_jobs(self, namespaces: tuple[str, ...]) -> Listing[ServingJob]:
        scope = self._scope(SERVINGJOBS, namespaces)
        return Listing(items=[]) if scope is None else self.inner.serving_jobs(scope)

    def training_job(self, namespace: str, name: str) -> TrainingJob:
        self._require("get", TRAININGJOBS, namespace)
        return self.inner.training_job(namespace, name)

    def serving_job(self, namespace: str, name: str) -> ServingJob:
        self._require("get", SERVINGJOBS, namespace)
        return self.inner.serving_job(namespace, name)

    def pods(self, namespace: str, selector: dict[str, str]) -> list[PodInfo]:
        if namespace or not self._may("list", PODS):
            if namespace:
                self._require("list", PODS, namespace)
            return [p for p in self.inner.pods(namespace, selector)
                    if namespace or self._may("list", PODS, p.namespace)]
        return self.inner.pods(namespace, selector)

    def events(self, namespace: str, names: frozenset[str]) -> list[EventInfo]:
        self._require("list", EVENTS, namespace)
        return self.inner.events(namespace, names)

    def logs(self, namespace: str, pod: str, container: str | None, previous: bool, tail: int) -> str:
        self._require("get", PODS, namespace, "log")
        return self.inner.logs(namespace, pod, container, previous, tail)

    def nodes(self) -> list[NodeInfo]:
        self._require("list", NODES)
        return self.inner.nodes()

    def usage(self, selector: dict[str, str]) -> Usage | None:
        self._require("list", NODES)
        found = self.inner.usage(selector)
        if found is None or self._may("list", PODS):
            return found
        return Usage(nodes=found.nodes, pods={k: v for k, v in found.pods.items() if self._may("list", PODS, k[0])})

    def queues(self) -> Queues | None:
        """ClusterQueues when `who` may list them; LocalQueues of the namespaces where `who` may list them.
        Whether Kueue is installed at all is no secret (API discovery tells every signed-in user)."""
        found = self.inner.queues()
        if found is None:
            return None
        self._require("list", CLUSTERQUEUES)
        if self._may("list", LOCALQUEUES):
            return found
        return Queues(found.version, found.cluster_queues,
                      [q for q in found.local_queues if self._may("list", LOCALQUEUES, q.namespace)])
