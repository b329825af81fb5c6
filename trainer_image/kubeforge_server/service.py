"""The served model and its life cycle: load through the trainer's one artifact loader (off the
event loop, so liveness answers while a large model loads), warm-up inferences, then ready;
not ready again from the first SIGTERM (draining). Inference requests are parsed with the shared
wire models, checked against the model card's signature, and batched."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kubeforge_api.inference import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ResponseOutput,
    ServerMetadata,
)
from kubeforge_api.server_settings import EXIT_MODEL_LOAD_FAILED, EXIT_MODEL_NOT_FOUND, ServerSettings
from kubeforge_trainer.artifacts import CARD
from pydantic import ValidationError

from . import __version__
from .batcher import Batcher
from .errors import InvalidInput, NotFound, Unavailable
from .metrics import Metrics
from .signature import Signature, decode, signature_of

log = logging.getLogger("kubeforge_server")
Loader = Callable[[Path], tuple[dict[str, Any], torch.nn.Module]]
PLATFORM = "kubeforge-pytorch"


class Phase(StrEnum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class ModelService:
    def __init__(self, settings: ServerSettings, loader: Loader, metrics: Metrics,
                 on_fatal: Callable[[int, str], None]) -> None:
        self.settings, self.metrics = settings, metrics
        self._loader, self._on_fatal = loader, on_fatal
        self.phase = Phase.LOADING
        self.card: dict[str, Any] = {}
        self.signature: Signature | None = None
        self._batcher: Batcher | None = None
        self._load_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.settings.model_name

    @property
    def ready(self) -> bool:
        return self.phase == Phase.READY

    def start(self) -> None:
        """Begin loading in the background; `ready` turns true after the warm-up inference."""
        self._load_task = asyncio.get_running_loop().create_task(self._load(), name="load-model")

    def drain(self) -> None:
        """Fail readiness from now on (requests are still answered until the server closes)."""
        if self.phase != Phase.FAILED:
            self.phase = Phase.DRAINING

    async def stop(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self._batcher is not None:
            await self._batcher.stop()

    async def _load(self) -> None:
        directory = Path(self.settings.model_dir)
        t0 = time.perf_counter()
        s = self.settings
        try:
            card, model = await asyncio.to_thread(self._loader, directory)
            signature = signature_of(card)
            batcher = Batcher(_runner(model), self.metrics, s.max_batch_size, s.max_delay_ms / 1000,
                              s.max_queue_depth)
            for rows in sorted({1, min(2, s.max_batch_size)}):  # warm-up at batch 1 and 2: a compiled model
                await asyncio.to_thread(batcher.run_now, signature.example(rows))  # then has every batch size
        except Exception as e:  # any failure to load or run the model is reported, never retried in-process
            code = EXIT_MODEL_NOT_FOUND if _missing(directory) else EXIT_MODEL_LOAD_FAILED
            self.phase = Phase.FAILED
            self._on_fatal(code, f"{type(e).__name__}: {e}")
            return
        self.card, self.signature, self._batcher = card, signature, batcher
        batcher.start()
        if self.phase == Phase.LOADING:
            self.phase = Phase.READY
        log.info("model %s loaded from %s in %.2f s", self.name, directory, time.perf_counter() - t0)

    def check_model(self, name: str) -> None:
        if name != self.name:
            raise NotFound(f"model {name[:128]!r} not found; this server serves {self.name!r}")

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name="kubeforge", version=__version__)

    def model_metadata(self, name: str) -> ModelMetadata:
        self.check_model(name)
        if self.signature is None:
            raise Unavailable(f"model {self.name!r} is still loading")
        digest = str(self.card.get("weights", {}).get("digest", ""))
        return ModelMetadata(name=self.name, platform=PLATFORM, versions=[],
                             inputs=[self.signature.input.metadata()], outputs=[self.signature.output.metadata()],
                             parameters={"digest": digest, "architecture": str(self.card["architecture"]["model"])})

    async def infer(self, name: str, body: bytes) -> bytes:
        """An inference response body for a request body."""
        t0 = time.perf_counter()
        self.check_model(name)
        if self._batcher is None or self.signature is None:
            raise Unavailable(f"model {self.name!r} is still loading")
        try:
            request = InferenceRequest.model_validate_json(body)
        except ValidationError as e:
            raise InvalidInput(_one_line(e)) from None
        x = decode(request, self.signature, self.settings.max_batch_size)
        y = await self._batcher.submit(x, self.settings.request_timeout_seconds)
        out = self.signature.output
        response = InferenceResponse.model_construct(
            model_name=self.name, id=request.id, outputs=[ResponseOutput.model_construct(
                name=out.name, shape=list(y.shape), datatype=out.datatype, data=y.reshape(-1).tolist())])
        self.metrics.total_seconds.observe(time.perf_counter() - t0)
        return response.dump_json()


def _runner(model: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """The model on the GPU when the pod has one (resources: nvidia.com/gpu), else on the CPU; int8
    (quantized) models run on the CPU, where their kernels are."""
    quantized = any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
    device = torch.device("cuda" if torch.cuda.is_available() and not quantized else "cpu")
    model = model.to(device)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y: np.ndarray = model(torch.from_numpy(x).to(device)).float().cpu().numpy()
        return y

    return run


def _missing(directory: Path) -> bool:
    return not (directory / CARD).is_file()


def _one_line(e: ValidationError) -> str:
    err = e.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"invalid request: {where}: {err['msg']}{more}"
