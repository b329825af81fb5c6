"""The served model and its life cycle: load through the trainer's one artifact loader (off the
event loop, so liveness answers while a large model loads), check the weights' digest against the
one the operator resolved, warm-up inferences, then ready; not ready again from the first SIGTERM
(draining). Loading and warm-up together have a deadline (`load_timeout_seconds`). Inference
requests are parsed with the shared wire models (JSON or the binary tensor extension), checked
against the model card's signature, and batched; a large body is parsed, and a large answer
encoded, on a codec thread so the event loop keeps answering probes meanwhile."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from kubeforge_api.inference import SERVED_VERSION, ModelMetadata, ServerMetadata
from kubeforge_api.server_settings import EXIT_MODEL_LOAD_FAILED, EXIT_MODEL_NOT_FOUND, ServerSettings
from kubeforge_trainer.artifacts import CARD

from . import __version__, codec
from .batcher import Batcher
from .errors import NotFound, Unavailable
from .metrics import Metrics
from .signature import Signature, signature_of

log = logging.getLogger("kubeforge_server")
Loader = Callable[[Path], tuple[dict[str, Any], torch.nn.Module]]
PLATFORM = "kubeforge-pytorch"
EXTENSIONS = ["binary_tensor_data"]
# Bodies and answers below this size are parsed or encoded on the event loop (well under a
# millisecond; a thread hop would cost more), larger ones on the codec thread.
INLINE_CODEC_BYTES = 64 * 1024
JSON_BYTES_PER_ELEMENT = 12  # about what one FP32 value takes as JSON text
T = TypeVar("T")


class DigestMismatch(Exception):
    pass


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
        self._codec_pool = ThreadPoolExecutor(1, thread_name_prefix="codec")

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
        self._codec_pool.shutdown(wait=False, cancel_futures=True)

    async def _load(self) -> None:
        directory = Path(self.settings.model_dir)
        t0 = time.perf_counter()
        timeout = self.settings.load_timeout_seconds
        try:
            card, signature, batcher = await asyncio.wait_for(self._prepare(directory), timeout)
        except Exception as e:  # any failure to load or run the model is reported, never retried in-process
            code = EXIT_MODEL_NOT_FOUND if _missing(directory) else EXIT_MODEL_LOAD_FAILED
            why = (f"the model was not loaded and warmed up within {timeout:g} s (loadTimeoutSeconds)"
                   if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}")
            self.phase = Phase.FAILED
            self._on_fatal(code, why)
            return
        self.card, self.signature, self._batcher = card, signature, batcher
        batcher.start()
        if self.phase == Phase.LOADING:
            self.phase = Phase.READY
        log.info("model %s loaded from %s in %.2f s", self.name, directory, time.perf_counter() - t0)

    async def _prepare(self, directory: Path) -> tuple[dict[str, Any], Signature, Batcher]:
        """Load, check the digest, and warm up (batch 1 and 2: a compiled model then has every batch size)."""
        s = self.settings
        card, model = await asyncio.to_thread(self._loader, directory)
        digest = str((card.get("weights") or {}).get("digest", ""))
        if s.model_digest and digest != s.model_digest:
            raise DigestMismatch(f"weights digest mismatch: expected {s.model_digest}, found {digest or 'none'}")
        signature = signature_of(card, s.lm_logits)
        batcher = Batcher(_runner(model, signature.last_position), self.metrics, s.max_batch_size,
                          s.max_delay_ms / 1000, s.max_queue_depth)
        for rows in sorted({1, min(2, s.max_batch_size)}):
            await asyncio.to_thread(batcher.run_now, signature.example(rows))
        # Start the codec thread now: started by the first large request, it would take the GIL
        # from the event loop before the loop got back to waiting.
        await asyncio.get_running_loop().run_in_executor(self._codec_pool, int)
        return card, signature, batcher

    def check_model(self, name: str, version: str | None = None) -> None:
        if name != self.name:
            raise NotFound(f"model {name[:128]!r} not found; this server serves {self.name!r}")
        if version is not None and version != SERVED_VERSION:
            raise NotFound(f"model {self.name!r} has no version {version[:64]!r}; it serves version {SERVED_VERSION}")

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name="kubeforge", version=__version__, extensions=EXTENSIONS)

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        self.check_model(name, version)
        if self.signature is None:
            raise Unavailable(f"model {self.name!r} is still loading")
        digest = str(self.card.get("weights", {}).get("digest", ""))
        return ModelMetadata(name=self.name, platform=PLATFORM, versions=[SERVED_VERSION],
                             inputs=[self.signature.input.metadata()], outputs=[self.signature.output.metadata()],
                             parameters={"digest": digest, "architecture": str(self.card["architecture"]["model"])})

    async def infer(self, name: str, version: str | None, body: bytes, header_length: bytes | None) -> codec.Encoded:
        """The inference response for a request body (`header_length`: its Inference-Header-Content-Length)."""
        t0 = time.perf_counter()
        self.check_model(name, version)
        if self._batcher is None or self.signature is None:
            raise Unavailable(f"model {self.name!r} is still loading")
        s, sig = self.settings, self.signature
        request = await self._codec(len(body), codec.parse, body, header_length, sig, s.max_batch_size,
                                    s.max_output_elements)
        y = await self._batcher.submit(request.x, s.request_timeout_seconds)
        answer = await self._codec(y.size * JSON_BYTES_PER_ELEMENT, codec.encode, self.name, request.request_id,
                                   sig.output, y, request.binary_output)
        self.metrics.total_seconds.observe(time.perf_counter() - t0)
        return answer

    async def _codec(self, size: int, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the event loop when `size` bytes are few, else on the codec thread."""
        if size < INLINE_CODEC_BYTES:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._codec_pool, functools.partial(fn, *args))


def _runner(model: torch.nn.Module, last_position: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """The model on the GPU when the pod has one (resources: nvidia.com/gpu), else on the CPU; int8
    (quantized) models run on the CPU, where their kernels are. With `last_position` the output
    [N, T, ...] keeps position T - 1 only (sliced on the device, before the copy)."""
    quantized = any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
    device = torch.device("cuda" if torch.cuda.is_available() and not quantized else "cpu")
    model = model.to(device)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(x).to(device))
            y: np.ndarray = (out[:, -1] if last_position else out).float().cpu().numpy()
        return y

    return run


def _missing(directory: Path) -> bool:
    return not (directory / CARD).is_file()

