"""`python -m kubeforge_server`: read the settings from the environment (the contract in
kubeforge_api.server_settings), serve on uvicorn (httptools with the connection limits of
`protocol`, uvloop), and shut down gracefully.

Shutdown on SIGTERM: readiness fails at once; requests are still served for
`shutdown_delay_seconds` (endpoints and load balancers drop the pod meanwhile); then the listener
closes and in-flight requests finish (up to `request_timeout_seconds`) before the process exits 0.
A second SIGTERM or a SIGINT skips the delay. A model that cannot be loaded ends the process with
EXIT_MODEL_NOT_FOUND or EXIT_MODEL_LOAD_FAILED and one line in the termination log; a load that
hangs cannot hold the exit up (the process ends `FATAL_EXIT_GRACE_SECONDS` later regardless)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import uvicorn
from kubeforge_api.server_settings import ServerSettings
from kubeforge_trainer.formats import load
from kubeforge_trainer.formats.kubeforge import load_kubeforge

from .app import App
from .metrics import Metrics
from .protocol import ConnectionLimits, guarded_protocol
from .service import Loader, ModelService

log = logging.getLogger("kubeforge_server")
FATAL_EXIT_GRACE_SECONDS = 10.0


class _Server(uvicorn.Server):
    """uvicorn with a readiness-first SIGTERM: drain the service, wait, then stop."""

    def __init__(self, config: uvicorn.Config, service: ModelService, delay_s: float) -> None:
        super().__init__(config)
        self.service, self.delay_s = service, delay_s
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.service.phase == "draining" or self._loop is None:
            super().handle_exit(sig, frame)
            return
        self.service.drain()
        log.info("SIGTERM: not ready; closing in %.1f s", self.delay_s)
        self._loop.call_soon_threadsafe(self._loop.call_later, self.delay_s, self._stop)

    def _stop(self) -> None:
        self.should_exit = True

    def fatal(self, code: int, message: str) -> None:
        log.error("cannot serve the model: %s", message)
        with contextlib.suppress(OSError):  # no termination log outside a pod: the log line is enough
            Path(self.service.settings.termination_log).write_text(message[:4000])
        self.exit_code = code
        self.should_exit = True
        watchdog = threading.Timer(FATAL_EXIT_GRACE_SECONDS, os._exit, (code,))  # a stuck loader thread
        watchdog.daemon = True  # would hold the interpreter's exit up forever
        watchdog.start()


def load_served(directory: Path) -> tuple[dict[str, Any], torch.nn.Module]:
    """A Kubeforge artifact through the one loader, in the form its back end serves it (as its report
    was timed): (model card, model). The server's own loader is `formats.load`, for every format."""
    loaded = load_kubeforge(directory)
    return loaded.card, loaded.model


def build(settings: ServerSettings, loader: Loader = load) -> _Server:
    """The configured server (not started): the seam benchmarks use to serve another loader."""
    holder: list[_Server] = []
    metrics = Metrics()
    service = ModelService(settings, loader, metrics, lambda code, msg: holder[0].fatal(code, msg))
    limits = ConnectionLimits(max_header_bytes=settings.max_header_bytes,
                              header_timeout_s=settings.header_timeout_seconds,
                              body_timeout_s=settings.body_timeout_seconds, max_connections=settings.max_connections,
                              on_refused=lambda status: metrics.count("connection", status))
    config = uvicorn.Config(App(service), host=settings.host, port=settings.port, loop="uvloop",
                            http=guarded_protocol(limits), timeout_keep_alive=settings.keep_alive_seconds,
                            lifespan="on", access_log=False, log_level="warning", server_header=False,
                            timeout_graceful_shutdown=int(settings.request_timeout_seconds) + 1, backlog=4096)
    holder.append(_Server(config, service, settings.shutdown_delay_seconds))
    return holder[0]


def main(loader: Loader = load) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServerSettings.from_env(os.environ)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    server = build(settings, loader)
    log.info("serving %s from %s on %s:%d", settings.model_name, settings.model_dir, settings.host, settings.port)
    server.run()
    return server.exit_code


if __name__ == "__main__":
    sys.exit(main())
