"""kopf wiring only: login, startup and shutdown, and every watch event (our kinds and the children
they own) routed into the controller core, which does all the work. `python -m kubeforge_operator`."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import signal
import types
from typing import Any, cast

import kopf
from kubeforge_api.constants import (
    GROUP,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    SERVINGJOB_PLURAL,
    TRAININGJOB_PLURAL,
    VERSION,
)
from prometheus_client import start_http_server

from . import fastjson
from .controller import Controller, PostEvent
from .kube import KUEUE_API, Kube, kopf_session
from .leader import LeaderElector
from .plan import Obj
from .render.workload import KUEUE_GROUP
from .servingjob.kind import ServingJobKind, referenced_jobs
from .settings import Settings
from .trainingjob.kind import TrainingJobKind

MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}


def connect(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """kopf's own logins, first that applies: the official client when installed (kubeconfig exec
    plugins and auth providers), the in-cluster service account, the kubeconfig. kopf and the API
    adapter both log in through here (again after a 401): one credential source."""
    for method in (kopf.login_via_client, kopf.login_with_service_account, kopf.login_with_kubeconfig):
        info = method(settings=settings, logger=logging.getLogger("kubeforge.login"))
        if info is not None:
            return info
    raise kopf.LoginError("no credentials: neither in a cluster nor a kubeconfig ($KUBECONFIG, ~/.kube/config)")


@kopf.on.login()
async def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.AiohttpSession:
    """kopf's session, from the same credentials, keeps idle connections as long as the adapter's:
    with aiohttp's default (15 s), Events posted after a pause each paid a new TLS handshake."""
    info = await asyncio.to_thread(connect, settings)  # exec plugins may take seconds: off the event loop
    return kopf.AiohttpSession(server=info.server, default_namespace=info.default_namespace,
                               priority=info.priority, expiration=info.expiration,
                               aiohttp_session=kopf_session(info))


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: every handler here is a raw-event handler, which needs no diff, yet kopf would
    otherwise deep-copy each object on every watch event to build one (a quarter of the operator's
    CPU under load). Nothing is stored on objects either. Must change if a change handler is added."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def event_poster(memo: kopf.Memo) -> PostEvent:
    """Events go through kopf's poster, which needs the context of kopf's own handlers (kept by them)."""

    def post(obj: Obj, type_: str, reason: str, message: str) -> None:
        context: contextvars.Context | None = memo["kopf_context"].get("context")
        if context is not None:  # kopf reads only the object's apiVersion, kind and metadata
            context.run(kopf.event, cast(Any, obj), type=type_, reason=reason, message=message[:1024])

    return post


def _keep_context(memo: kopf.Memo) -> None:
    """Handlers get a shallow copy of the operator's memo: the holder dict is the shared part."""
    holder = memo["kopf_context"]
    if "context" not in holder:  # copied once, not on every watch event
        holder["context"] = contextvars.copy_context()


def use_fast_json() -> None:
    """kopf's watch streams and API replies are decoded by `fastjson` from now on (idempotent)."""
    from kopf._cogs.clients import api  # the module whose `json.loads` decodes every watch event

    if getattr(getattr(api, "json"), "loads", None) is not fastjson.loads:  # noqa: B009 (kopf does not export it)
        setattr(api, "json", types.SimpleNamespace(**{**vars(json), "loads": fastjson.loads}))  # noqa: B010


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg: Settings = memo["settings"]
    settings.posting.level = logging.WARNING  # our own Events describe state changes
    settings.persistence.diffbase_storage = NoDiffBase()
    use_fast_json()  # before the watchers start: they decode every event through it
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # Namespaced mode watches exactly the namespaces named: listing all of them needs a cluster-wide
    # grant that a Role per namespace does not give, and kopf would retry the refused list at start.
    settings.scanning.disabled = bool(cfg.namespaces)
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, addr="0.0.0.0")
    kube = Kube(lambda: connect(settings))
    memo["kopf_context"] = {}
    kueue = cfg.kueue if cfg.kueue is not None else await kube.serves(KUEUE_API, "workloads")
    logging.getLogger("kubeforge.kueue").info("Kueue's Workload API %s is %s: queued TrainingJobs %s", KUEUE_API,
                                              "served" if kueue else "not served", "run when admitted" if kueue
                                              else "wait (KueueNotInstalled)")
    training = Controller(TrainingJobKind(cfg.policy(kueue)), kube, event_poster(memo), cfg.workers,
                          denied_namespaces=frozenset(cfg.denied_namespaces))
    serving = Controller(ServingJobKind(cfg.serving_policy(), training.objs.get), kube,
                         event_poster(memo), cfg.workers, denied_namespaces=frozenset(cfg.denied_namespaces))
    memo["controllers"] = {"TrainingJob": training, "ServingJob": serving}
    memo["kube"] = kube
    for controller in memo["controllers"].values():
        controller.start()  # workers wait until their controller is primed
    if not cfg.leader_election_namespace:
        await prime(memo, cfg.namespaces)
        return
    memo["elector"] = LeaderElector(kube, cfg.leader_election_namespace, cfg.lease_name, cfg.pod_name)
    memo["leading"] = asyncio.create_task(lead(memo, cfg.namespaces))


async def prime(memo: kopf.Memo, namespaces: list[str]) -> None:
    for controller in memo["controllers"].values():
        await controller.prime(namespaces)


async def lead(memo: kopf.Memo, namespaces: list[str]) -> None:
    """A replica watches (its caches stay warm) but acts only while it holds the Lease. Losing it stops
    every worker at once, and the process exits so that it starts again as a fresh candidate."""
    elector: LeaderElector = memo["elector"]
    try:
        await elector.acquire()
        await prime(memo, namespaces)
        await elector.keep()
    except Exception:
        logging.getLogger("kubeforge.leader").exception("leading failed")
    for controller in memo["controllers"].values():
        await controller.stop()
    os.kill(os.getpid(), signal.SIGTERM)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "leading" in memo:
        memo["leading"].cancel()
    for controller in memo["controllers"].values():
        await controller.stop()
    if "elector" in memo:  # after the workers stopped: the next leader starts without waiting
        await memo["elector"].release()
    await memo["kube"].close()


@kopf.on.event(GROUP, VERSION, TRAININGJOB_PLURAL)
async def trainingjob_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _keep_context(memo)
    job = event["object"]
    memo["controllers"]["TrainingJob"].on_object(event["type"], job)
    name = job["metadata"]["name"]  # ServingJobs waiting for this job's model look again
    memo["controllers"]["ServingJob"].enqueue_related(
        job["metadata"]["namespace"], lambda sj: name in referenced_jobs(sj.get("spec") or {}))


@kopf.on.event(GROUP, VERSION, SERVINGJOB_PLURAL)
async def servingjob_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _keep_context(memo)
    memo["controllers"]["ServingJob"].on_object(event["type"], event["object"])


async def _child_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Async, like every handler here: caches and queues are touched only from the event loop."""
    for controller in memo["controllers"].values():
        controller.on_child(event["type"], event["object"])


def _related_handler(kind: str) -> Any:
    async def _related_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        for controller in memo["controllers"].values():
            controller.on_related(event["type"], {"kind": kind, **event["object"]})

    return _related_event


# Kueue's kinds are watched only where its CRDs exist (kopf serves no resource the API server lacks);
# a controller caches them only when its kind relates to them, i.e. when Kueue was detected at start.
RELATED_RESOURCES = ((("v1", "nodes"), "Node"), ((KUEUE_GROUP, "v1beta2", "resourceflavors"), "ResourceFlavor"),
                     ((KUEUE_GROUP, "v1beta2", "workloadpriorityclasses"), "WorkloadPriorityClass"))
for _related, _kind in RELATED_RESOURCES:
    kopf.on.event(*_related)(_related_handler(_kind))
CHILD_RESOURCES = (("v1", "pods"), ("v1", "services"), ("apps", "v1", "deployments"),
                   ("autoscaling", "v2", "horizontalpodautoscalers"), ("policy", "v1", "poddisruptionbudgets"),
                   (KUEUE_GROUP, "v1beta2", "workloads"))
for _resource in CHILD_RESOURCES:
    kopf.on.event(*_resource, labels=MANAGED)(_child_event)
