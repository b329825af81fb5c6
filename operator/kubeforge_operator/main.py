"""kopf wiring only: every trigger (job, pod and service events; startup) funnels into the
Reconciler, which does all the work. Run with `python -m kubeforge_operator`."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubeforge_api.constants import GROUP, LABEL_JOB, TRAININGJOB_PLURAL, VERSION
from prometheus_client import start_http_server

from .kube import Credentials, Kube
from .reconcile import Reconciler
from .settings import Settings
from .status import Config


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    c = Credentials.load()
    return kopf.ConnectionInfo(server=c.server, token=c.token, ca_path=c.ca_path, certificate_path=c.cert_path,
                               private_key_path=c.key_path, default_namespace=c.namespace)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg: Settings = memo["settings"]
    settings.posting.level = logging.WARNING  # our own Events describe state changes
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, addr="0.0.0.0")
    rec = Reconciler(Kube(Credentials.load()), Config(cfg.trainer_image, cfg.shm_size, cfg.restart_backoff_seconds,
                                                      cfg.restart_backoff_max_seconds), cfg.workers)
    memo["reconciler"] = rec
    await rec.prime(cfg.namespaces)
    rec.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    rec: Reconciler = memo["reconciler"]
    await rec.stop()
    await rec.kube.close()


@kopf.on.event(GROUP, VERSION, TRAININGJOB_PLURAL)
def job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo["reconciler"].on_job(event["type"], event["object"])


@kopf.on.event("v1", "pods", labels={LABEL_JOB: kopf.PRESENT})
def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo["reconciler"].on_pod(event["type"], event["object"])


@kopf.on.event("v1", "services", labels={LABEL_JOB: kopf.PRESENT})
def service_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo["reconciler"].on_service(event["type"], event["object"])
