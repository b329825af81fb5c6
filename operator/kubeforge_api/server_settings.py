"""The container contract between the operator's Deployment renderer and the inference server
(`python -m kubeforge_server`): the env vars the renderer sets, their meanings and defaults, the
port, probe paths, the model mount and the shutdown timing. The renderer builds a `ServerSettings`
with `for_spec` and passes `to_env()`; the server reads it back with `from_env`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .inference import PATH_LIVE, PATH_READY
from .servingjob import ServingJobSpec

SERVER_COMMAND: Final = ("python", "-m", "kubeforge_server")
SERVER_CONTAINER_NAME: Final = "server"
SERVER_PORT: Final = 8080
SERVER_PORT_NAME: Final = "http"
MODEL_MOUNT: Final = "/kubeforge/model"  # the artifact directory, mounted read-only (PVC subPath)
LIVENESS_PATH: Final = PATH_LIVE
READINESS_PATH: Final = PATH_READY
TERMINATION_LOG: Final = "/dev/termination-log"  # one line on a failed load (ModelNotFound / ModelLoadFailed)
EXIT_MODEL_NOT_FOUND: Final = 66  # sysexits EX_NOINPUT: the model directory or card is missing
EXIT_MODEL_LOAD_FAILED: Final = 65  # sysexits EX_DATAERR: digest mismatch, not safetensors, wrong shapes
DIGEST_PATTERN: Final = r"^(sha256:[0-9a-f]{64})?$"  # the weights digest the operator resolved ("" = unchecked)
DEFAULT_MAX_BUFFERED_BYTES: Final = 64 * 1024 * 1024
BUFFERED_REQUESTS: Final = 4  # for_spec: the body budget holds at least this many largest requests
KV_CACHE_SHARE: Final = 4  # for_spec: without spec.llm.kvCacheBytes the KV cache gets 1/4 of the memory limit
QUANTITY_SCALE: Final = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20,
                         "Gi": 2**30, "Ti": 2**40}


class ServerEnv(StrEnum):
    """Environment of the server container (all optional; defaults in ServerSettings)."""

    MODEL_DIR = "KUBEFORGE_MODEL_DIR"
    MODEL_NAME = "KUBEFORGE_MODEL_NAME"
    HOST = "KUBEFORGE_SERVER_HOST"
    PORT = "KUBEFORGE_SERVER_PORT"
    MAX_BATCH_SIZE = "KUBEFORGE_MAX_BATCH_SIZE"
    MAX_DELAY_MS = "KUBEFORGE_MAX_DELAY_MS"
    MAX_REQUEST_BYTES = "KUBEFORGE_MAX_REQUEST_BYTES"
    MAX_QUEUE_DEPTH = "KUBEFORGE_MAX_QUEUE_DEPTH"
    REQUEST_TIMEOUT_SECONDS = "KUBEFORGE_REQUEST_TIMEOUT_SECONDS"
    SHUTDOWN_DELAY_SECONDS = "KUBEFORGE_SHUTDOWN_DELAY_SECONDS"
    TORCH_THREADS = "KUBEFORGE_TORCH_THREADS"
    TERMINATION_LOG = "KUBEFORGE_TERMINATION_LOG"
    MODEL_DIGEST = "KUBEFORGE_MODEL_DIGEST"
    LOAD_TIMEOUT_SECONDS = "KUBEFORGE_LOAD_TIMEOUT_SECONDS"
    MAX_HEADER_BYTES = "KUBEFORGE_MAX_HEADER_BYTES"
    HEADER_TIMEOUT_SECONDS = "KUBEFORGE_HEADER_TIMEOUT_SECONDS"
    BODY_TIMEOUT_SECONDS = "KUBEFORGE_BODY_TIMEOUT_SECONDS"
    KEEP_ALIVE_SECONDS = "KUBEFORGE_KEEP_ALIVE_SECONDS"
    MAX_CONNECTIONS = "KUBEFORGE_MAX_CONNECTIONS"
    MAX_BUFFERED_BYTES = "KUBEFORGE_MAX_BUFFERED_BYTES"
    MAX_OUTPUT_ELEMENTS = "KUBEFORGE_MAX_OUTPUT_ELEMENTS"
    LM_LOGITS = "KUBEFORGE_LM_LOGITS"
    KV_CACHE_BYTES = "KUBEFORGE_KV_CACHE_BYTES"
    KV_BLOCK_TOKENS = "KUBEFORGE_KV_BLOCK_TOKENS"
    LLM_MAX_RUNNING = "KUBEFORGE_LLM_MAX_RUNNING"
    LLM_STEP_TOKENS = "KUBEFORGE_LLM_STEP_TOKENS"
    LLM_MAX_WAITING = "KUBEFORGE_LLM_MAX_WAITING"
    PREFIX_CACHING = "KUBEFORGE_PREFIX_CACHING"


class ServerSettings(BaseModel):
    """One typed settings object, loaded once at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_dir: str = Field(default=MODEL_MOUNT, max_length=4096, description="Artifact directory.")
    model_name: str = Field(default="model", min_length=1, max_length=253, description=(
        "Open Inference Protocol model name (the ServingJob's name)."))
    host: str = Field(default="0.0.0.0", max_length=255, description="Listen address.")
    port: int = Field(default=SERVER_PORT, ge=0, le=65535, description="Listen port (0: any free port).")
    max_batch_size: int = Field(default=32, ge=1, le=4096, description="Most rows per model call.")
    max_delay_ms: int = Field(default=0, ge=0, le=10_000, description="Batch wait when idle; 0 = opportunistic.")
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1024**3, description="413 above.")
    max_queue_depth: int = Field(default=1024, ge=1, le=1_000_000, description="503 above.")
    request_timeout_seconds: float = Field(default=30.0, gt=0, le=3600, description="504 after.")
    shutdown_delay_seconds: float = Field(default=5.0, ge=0, le=300, description=(
        "After SIGTERM: readiness fails at once, requests are still served this long (so endpoints "
        "drop the pod), then the listener closes and in-flight requests drain."))
    torch_threads: int = Field(default=0, ge=0, le=1024, description="Intra-op threads; 0 = torch's default.")
    termination_log: str = Field(default=TERMINATION_LOG, max_length=4096, description=(
        "File that receives one line when the model cannot be loaded (the pod's terminationMessagePath)."))
    model_digest: str = Field(default="", pattern=DIGEST_PATTERN, description=(
        "The weights digest the operator resolved (status.model.digest); a model whose weights have "
        "another digest is refused. Empty: the card's own digest is checked only."))
    load_timeout_seconds: float = Field(default=900.0, gt=0, le=86_400, description=(
        "Loading plus warm-up must finish within this; else the server exits (ModelLoadFailed)."))
    max_header_bytes: int = Field(default=64 * 1024, ge=4096, le=1024**2, description=(
        "Request line plus headers; 431 above, at once."))
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600, description=(
        "A connection must deliver a request's headers within this (408, or closed if it sent nothing)."))
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600, description=(
        "A request's body must arrive within this after its headers (408)."))
    keep_alive_seconds: int = Field(default=5, ge=1, le=3600, description=(
        "An idle keep-alive connection is closed after this."))
    max_connections: int = Field(default=512, ge=1, le=100_000, description=(
        "Open connections; a further one is answered 503 and closed at once."))
    max_buffered_bytes: int = Field(default=DEFAULT_MAX_BUFFERED_BYTES, ge=1024, le=64 * 1024**3, description=(
        "Request body bytes all connections together may hold; a body beyond it gets 503."))
    max_output_elements: int = Field(default=1024 * 1024, ge=1, le=1024**3, description=(
        "Most output tensor elements one request may ask for; 422 above (checked before the model runs)."))
    lm_logits: Literal["last", "all"] = Field(default="last", description=(
        "Causal language models: logits of the last position only ([N, vocab]) or of every position "
        "([N, T, vocab])."))
    kv_cache_bytes: int = Field(default=0, ge=0, le=1024**4, description=(
        "Causal language models: bytes of the paged KV cache (keys and values of every layer), allocated "
        "in blocks; 0 = a quarter of the memory (no more than the longest context for every running sequence)."))
    kv_block_tokens: int = Field(default=16, ge=1, le=1024, description=(
        "Causal language models: tokens per KV-cache block (the unit of allocation and of prefix caching)."))
    llm_max_running: int = Field(default=64, ge=1, le=4096, description=(
        "Causal language models: most sequences in the running batch of one decode step."))
    llm_step_tokens: int = Field(default=256, ge=16, le=65_536, description=(
        "Causal language models: most tokens one model step computes (decodes first, then prompt chunks): "
        "long prompts are prefilled in chunks so running streams keep flowing."))
    llm_max_waiting: int = Field(default=256, ge=0, le=1_000_000, description=(
        "Causal language models: requests waiting for KV-cache blocks or a batch place; 429 beyond."))
    prefix_caching: bool = Field(default=True, description=(
        "Causal language models: reuse the KV-cache blocks of a shared prompt prefix (block hashing)."))

    @model_validator(mode="after")
    def _budget_holds_a_request(self) -> ServerSettings:
        if self.max_buffered_bytes < self.max_request_bytes:
            raise ValueError(f"max_buffered_bytes ({self.max_buffered_bytes}) is below max_request_bytes "
                             f"({self.max_request_bytes}): no request of the largest size could be read")
        return self

    def to_env(self) -> dict[str, str]:
        """Env var name -> value, for the container spec."""
        return {env.value: str(getattr(self, env.name.lower())) for env in ServerEnv}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerSettings:
        return cls.model_validate({e.name.lower(): env[e.value] for e in ServerEnv if e.value in env})

    @classmethod
    def for_spec(cls, name: str, spec: ServingJobSpec, model_dir: str = MODEL_MOUNT,
                 model_digest: str | None = None) -> ServerSettings:
        """The settings a ServingJob's Deployment passes to its servers; `model_digest` is the digest
        the operator resolved for the model it mounts (status.model.digest)."""
        b, lim, llm = spec.batching, spec.limits, spec.llm
        cpu = spec.resources.limits.get("cpu", spec.resources.requests.get("cpu"))
        return cls(model_dir=model_dir, model_name=name, max_batch_size=b.max_batch_size,
                   max_delay_ms=b.max_delay_ms, max_request_bytes=lim.max_request_bytes,
                   max_queue_depth=lim.max_queue_depth, request_timeout_seconds=lim.request_timeout_seconds,
                   torch_threads=cpu_threads(cpu), model_digest=model_digest or "",
                   max_buffered_bytes=max(DEFAULT_MAX_BUFFERED_BYTES, BUFFERED_REQUESTS * lim.max_request_bytes),
                   kv_cache_bytes=kv_cache_budget(spec), kv_block_tokens=llm.kv_block_tokens,
                   llm_max_running=llm.max_running_requests, llm_step_tokens=llm.step_tokens,
                   llm_max_waiting=llm.max_waiting_requests, prefix_caching=llm.prefix_caching)

    @property
    def termination_grace_seconds(self) -> int:
        """terminationGracePeriodSeconds that lets a SIGTERM'd server finish: the shutdown delay, the
        longest request, and a margin for closing."""
        return math.ceil(self.shutdown_delay_seconds + self.request_timeout_seconds + 5)


def kv_cache_budget(spec: ServingJobSpec) -> int:
    """`spec.llm.kvCacheBytes`, or a `KV_CACHE_SHARE` of the memory limit when that is 0 and a limit is set;
    0 (the server decides) without a memory limit and on GPU pods, whose cache lives in GPU memory."""
    if spec.llm.kv_cache_bytes or spec.resources.gpus:
        return spec.llm.kv_cache_bytes
    limit = memory_bytes(spec.resources.limits.get("memory"))
    return limit // KV_CACHE_SHARE if limit else 0


def memory_bytes(quantity: int | str | None) -> int:
    """Bytes of a Kubernetes memory quantity ("1Gi", "500M", "1e9", 4096); 0 when unset or unreadable."""
    if quantity is None:
        return 0
    text = str(quantity).strip()
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti|e[0-9]+)?", text)
    if match is None:
        return 0
    number, suffix = float(match.group(1)), match.group(2) or ""
    scale = 10 ** int(suffix[1:]) if suffix.startswith("e") else QUANTITY_SCALE[suffix]
    return int(number * scale)


def cpu_threads(quantity: int | str | None) -> int:
    """Torch threads for a Kubernetes CPU quantity ("500m" -> 1, "2" -> 2, 1.5 -> 2); 0 (torch's
    default) when unset, since a container sees every host core but may only use its limit."""
    if quantity is None:
        return 0
    text = str(quantity).strip()
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        return 0
    return min(1024, max(1, math.ceil(cores)))
