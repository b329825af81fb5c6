"""kopf wiring only: login, startup and shutdown, and every watch event (our kinds and the children
they own) routed into the controller core, which does all the work. `python -m kubeforge_operator`."""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
from kubeforge_api.constants import GROUP, LABEL_MANAGED_BY, MANAGED_BY, TRAININGJOB_PLURAL, VERSION
from prometheus_client import start_http_server

from .controller import Controller
from .kube import Kube
from .plan import Obj
from .settings import Settings
from .trainingjob.kind import TrainingJobKind

MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own logins, first that applies: the official client when installed (kubeconfig exec
    plugins and auth providers), the in-cluster service account, the kubeconfig. The API adapter
    uses what this returns: one credential source."""
    for method in (kopf.login_via_client, kopf.login_with_service_account, kopf.login_with_kubeconfig):
        info = method(**kwargs)
        if info is not None:
            memo["connection"] = info
            return info
    return None


def post_event(obj: Obj, type_: str, reason: str, message: str) -> None:
    kopf.event(cast(Any, obj), type=type_, reason=reason, message=message[:1024])  # kopf reads its metadata only


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg: Settings = memo["settings"]
    settings.posting.level = logging.WARNING  # our own Events describe state changes
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, addr="0.0.0.0")
    kube = Kube(lambda: memo["connection"])
    memo["controllers"] = {"TrainingJob": Controller(TrainingJobKind(cfg.policy()), kube, post_event, cfg.workers)}
    memo["kube"] = kube
    for controller in memo["controllers"].values():
        await controller.prime(cfg.namespaces)
        controller.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for controller in memo["controllers"].values():
        await controller.stop()
    await memo["kube"].close()


@kopf.on.event(GROUP, VERSION, TRAININGJOB_PLURAL)
def trainingjob_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo["controllers"]["TrainingJob"].on_object(event["type"], event["object"])


def _child_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    for controller in memo["controllers"].values():
        controller.on_child(event["type"], event["object"])


for _resource in (("v1", "pods"), ("v1", "services")):
    kopf.on.event(*_resource, labels=MANAGED)(_child_event)
