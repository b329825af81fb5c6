"""The served model and its life cycle: load through the trainer's model formats (`formats.load`: a
Kubeforge artifact, a Hugging Face transformers directory or a torch.export program; off the event
loop, so liveness answers while a large model loads), check the directory's identity digest against
the one the operator resolved, warm-up inferences, then ready; not ready again from the first SIGTERM
(draining). Loading and warm-up together have a deadline (`load_timeout_seconds`). Inference
requests are parsed with the shared wire models (JSON or the binary tensor extension), checked
against the model's signature, and batched; a large body is parsed, and a large answer
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

import torch
from kubeforge_api.inference import (
    PARAM_ALTERNATIVE_INPUTS,
    PARAM_ARCHITECTURE,
    PARAM_DIGEST,
    PARAM_FORMAT,
    PARAM_MAX_TOKENS,
    PARAM_TASK,
    SERVED_VERSION,
    ModelMetadata,
    Parameters,
    ServerMetadata,
)
from kubeforge_api.server_settings import EXIT_MODEL_LOAD_FAILED, EXIT_MODEL_NOT_FOUND, ServerSettings
from kubeforge_trainer.formats import Loaded
from kubeforge_trainer.formats.kubeforge import describe
from kubeforge_trainer.formats.loading import missing

from . import __version__, codec
from .batcher import Batcher
from .errors import InvalidInput, NotFound, Unavailable
from .llm import serving as llm_serving
from .llm.errors import NotReady, RouteNotFound
from .metrics import Metrics
from .runners import runner
from .signature import Signature, metadata, signature_for

log = logging.getLogger("kubeforge_server")
# A loader returns the loaded model, or (model card, model) of a Kubeforge artifact (benchmark loaders).
Loader = Callable[[Path], Loaded | tuple[dict[str, Any], torch.nn.Module]]
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
        self.loaded: Loaded | None = None
        self.signature: Signature | None = None
        self._batcher: Batcher | None = None
        self.llm: llm_serving.LanguageModel | None = None  # a causal LM's engine (the OpenAI-compatible routes)
        self._no_llm = "the model is still loading"
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
        if self.llm is not None:
            await asyncio.to_thread(self.llm.engine.stop)
        self._codec_pool.shutdown(wait=False, cancel_futures=True)

    async def _load(self) -> None:
        directory = Path(self.settings.model_dir)
        t0 = time.perf_counter()
        timeout = self.settings.load_timeout_seconds
        try:
            loaded, signature, batcher, (self.llm, self._no_llm) = await asyncio.wait_for(
                self._prepare(directory), timeout)
        except Exception as e:  # any failure to load or run the model is reported, never retried in-process
            code = EXIT_MODEL_NOT_FOUND if missing(directory) else EXIT_MODEL_LOAD_FAILED
            why = (f"the model was not loaded and warmed up within {timeout:g} s (loadTimeoutSeconds)"
                   if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}")
            self.phase = Phase.FAILED
            self._on_fatal(code, why)
            return
        self.loaded, self.signature, self._batcher = loaded, signature, batcher
        batcher.start()
        if self.phase == Phase.LOADING:
            self.phase = Phase.READY
        log.info("model %s (%s) loaded from %s in %.2f s", self.name, loaded.format, directory,
                 time.perf_counter() - t0)

    async def _prepare(self, directory: Path) -> tuple[Loaded, Signature, Batcher,
                                                       tuple[llm_serving.LanguageModel | None, str]]:
        """Load, check the digest, and warm up (batch 1 and 2: a compiled model then has every batch size;
        a causal LM's generation engine too)."""
        s = self.settings
        loaded = _as_loaded(await asyncio.to_thread(self._loader, directory))
        if s.model_digest and loaded.digest != s.model_digest:
            raise DigestMismatch(f"{loaded.format} model digest mismatch: expected {s.model_digest}, "
                                 f"found {loaded.digest or 'none'}")
        signature = signature_for(loaded, s.lm_logits)
        max_batch = min(s.max_batch_size, signature.max_rows or s.max_batch_size)
        batcher = Batcher(await asyncio.to_thread(runner, loaded, signature), self.metrics, max_batch,
                          s.max_delay_ms / 1000, s.max_queue_depth)
        for rows in sorted({1, min(2, max_batch)}):
            await asyncio.to_thread(batcher.run_now, signature.example(rows))
        # Start the codec thread now: started by the first large request, it would take the GIL
        # from the event loop before the loop got back to waiting.
        await asyncio.get_running_loop().run_in_executor(self._codec_pool, int)
        return loaded, signature, batcher, await llm_serving.prepare(loaded, s, self.metrics.registry)

    def language_model(self) -> llm_serving.LanguageModel:
        """The served causal LM's engine, or the OpenAI-compatible error why there is none."""
        if self.llm is not None:
            return self.llm
        if self.phase == Phase.LOADING:
            raise NotReady(self._no_llm)
        raise RouteNotFound(f"the OpenAI-compatible routes serve causal language models: {self._no_llm}")

    def check_model(self, name: str, version: str | None = None) -> None:
        if name != self.name:
            raise NotFound(f"model {name[:128]!r} not found; this server serves {self.name!r}")
        if version is not None and version != SERVED_VERSION:
            raise NotFound(f"model {self.name!r} has no version {version[:64]!r}; it serves version {SERVED_VERSION}")

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name="kubeforge", version=__version__, extensions=EXTENSIONS)

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        """The model's inputs and outputs; `parameters` say its digest, format, architecture and task, and
        for a model with another input form, that form (`alternative_inputs`)."""
        self.check_model(name, version)
        if self.signature is None or self.loaded is None:
            raise Unavailable(f"model {self.name!r} is still loading")
        sig, loaded = self.signature, self.loaded
        params: Parameters = {PARAM_DIGEST: loaded.digest, PARAM_FORMAT: str(loaded.format),
                              PARAM_ARCHITECTURE: loaded.architecture, PARAM_TASK: str(loaded.task)}
        if sig.alternatives:
            params[PARAM_ALTERNATIVE_INPUTS] = "; ".join(", ".join(
                f"{t.name} {t.datatype} {list(t.shape)}" for t in form) for form in sig.alternatives)
        if loaded.max_length is not None:
            params[PARAM_MAX_TOKENS] = loaded.max_length
        return ModelMetadata(name=self.name, platform=PLATFORM, versions=[SERVED_VERSION],
                             inputs=[metadata(t) for t in sig.inputs], outputs=[metadata(t) for t in sig.outputs],
                             parameters=params)

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
        assert isinstance(y, dict)
        elements = sum(y[name].size for name, _ in request.outputs)
        if elements > s.max_output_elements:  # sizes only the model could tell
            raise InvalidInput(f"the outputs hold {elements} elements, more than {s.max_output_elements} "
                               "(maxOutputElements); send fewer rows or shorter sequences")
        answer = await self._codec(elements * JSON_BYTES_PER_ELEMENT, codec.encode, self.name, request.request_id,
                                   sig, y, request.outputs)
        self.metrics.total_seconds.observe(time.perf_counter() - t0)
        return answer

    async def _codec(self, size: int, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the event loop when `size` bytes are few, else on the codec thread."""
        if size < INLINE_CODEC_BYTES:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._codec_pool, functools.partial(fn, *args))


def _as_loaded(result: Loaded | tuple[dict[str, Any], torch.nn.Module]) -> Loaded:
    """A loader's result as a Loaded: a (card, model) pair is a Kubeforge artifact's."""
    if isinstance(result, Loaded):
        return result
    card, model = result
    return describe(card, model)
