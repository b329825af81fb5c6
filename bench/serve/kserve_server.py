"""KServe's own Python model server (`kserve.ModelServer`, REST v2 on its FastAPI/uvicorn stack)
serving the benchmark model, for the side-by-side comparison. Runs in its own environment
(`.bench/kserve-venv`, made by bench/serve/setup_kserve.sh) because kserve pins its own web stack;
torch and the artifact loader come from the project's environment through a .pth file.

Usage: kserve_server.py MODEL_DIR PORT  (model name `mlp`, gRPC off, one worker, latency logging off)"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import kserve
import numpy as np
import torch
from kserve import InferOutput, InferRequest, InferResponse
from kubeforge_trainer.artifacts import load_model


class Mlp(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.net: torch.nn.Module | None = None
        self.load()

    def load(self) -> bool:
        self.net = load_model(self.model_dir)[1]
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                response_headers: dict[str, str] | None = None) -> Any:
        assert self.net is not None
        x = torch.from_numpy(np.ascontiguousarray(payload.inputs[0].as_numpy(), dtype=np.float32))
        with torch.inference_mode():
            y = self.net(x).numpy()
        out = InferOutput(name="logits", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or "")


def main() -> None:
    torch.set_num_threads(1)
    model_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    sys.argv = sys.argv[:1]
    server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False)
    server.start([Mlp("mlp", model_dir)])


if __name__ == "__main__":
    main()
