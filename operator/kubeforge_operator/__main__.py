"""Entry point: `python -m kubeforge_operator` runs the operator with settings from KUBEFORGE_* env."""

from __future__ import annotations

import logging

import kopf

from . import main as handlers  # noqa: F401 (registers the kopf handlers)
from .settings import Settings


def run() -> None:
    settings = Settings()
    kopf.configure(log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not one line per handled event
    memo = kopf.Memo(settings=settings)
    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    kopf.run(standalone=True, clusterwide=not settings.namespaces, namespaces=settings.namespaces,
             liveness_endpoint=liveness, memo=memo)


if __name__ == "__main__":
    run()
