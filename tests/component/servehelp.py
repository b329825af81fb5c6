"""Helpers for the inference-server tests: write a real artifact with the trainer's model builder
and `artifacts.write`, run `python -m kubeforge_server` as a process on a free port, and talk to it
over real HTTP (http.client, one keep-alive connection per caller)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from kubeforge_api.server_settings import ServerEnv
from kubeforge_operator.ports import free_port
from kubeforge_trainer import artifacts
from kubeforge_trainer.models import build

DIGITS_MLP = {"model": "mlp", "inputDim": 64, "hidden": 32, "layers": 2, "numClasses": 10}
SLOW_CNN = {"model": "cnn", "imageShape": [1, 8, 8], "channels": 256, "numClasses": 10}
TINY_GPT = {"model": "gpt", "vocab": 40, "dim": 16, "heads": 2, "layers": 1, "seqLen": 12}


def write_artifact(directory: Path, arch: dict[str, Any], seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build(arch)
    artifacts.write(directory, model.state_dict(), {"architecture": arch, "metrics": {}})
    return directory


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    model_dir: Path
    name: str = "digits"
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> Server:
        env = {**os.environ, ServerEnv.MODEL_DIR: str(self.model_dir), ServerEnv.MODEL_NAME: self.name,
               ServerEnv.HOST: "127.0.0.1", ServerEnv.PORT: str(self.port), ServerEnv.TORCH_THREADS: "1",
               ServerEnv.SHUTDOWN_DELAY_SECONDS: "0", **self.env}
        self.proc = subprocess.Popen([sys.executable, "-m", "kubeforge_server"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.stderr()
            try:
                if request(self.port, "GET", "/v2/health/ready").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s: {self.stderr()}")

    def stderr(self) -> str:
        if self.proc is None or self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")[-3000:]

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int, timeout: float = 30) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> Reply:
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            raise
        if r.getheader("connection", "").lower() == "close":
            self.conn.close()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, data)

    def close(self) -> None:
        self.conn.close()


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30) -> Reply:
    client = Client(port, timeout)
    try:
        return client.call(method, path, body, headers)
    finally:
        client.close()


def infer_body(rows: list[list[float]] | list[list[int]], datatype: str = "FP32", name: str = "input") -> bytes:
    shape = [len(rows), len(rows[0])]
    return json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype,
                                   "data": [v for row in rows for v in row]}]}).encode()
