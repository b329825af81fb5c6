"""KServe's own Python model server (`kserve.ModelServer`, REST v2 on its FastAPI/uvicorn stack) serving
a Hugging Face text classifier directory, for the side-by-side comparison in bench_serve_hf.py. Written
the way a KServe user would write it, and fairly: the model and its fast tokenizer are loaded once with
transformers (local files only, no remote code); `predict` tokenizes the request's strings with the
model's own tokenizer (truncated at its max length, padded to the longest), runs the model under
`inference_mode` and answers `logits` (FP32) and `label` (BYTES), as Kubeforge's server does. KServe's
Python server has no batcher of its own: each request runs the model once, on its event loop.

Runs in its own environment (`.bench/kserve-venv`, made by bench/serve/setup_kserve.sh) because kserve
pins its own web stack; torch and transformers come from the project's environment through a .pth file.

Usage: kserve_hf_server.py MODEL_DIR PORT  (model name `bert`, gRPC off, one worker, latency logging off)"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import kserve
import numpy as np
import torch
from kserve import InferOutput, InferRequest, InferResponse
from transformers import AutoModelForSequenceClassification, AutoTokenizer

MODEL_NAME = "bert"


class TextClassifier(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.model: Any = None
        self.tokenizer: Any = None
        self.labels: dict[int, str] = {}
        self.load()

    def load(self) -> bool:
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True, trust_remote_code=False)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.model_dir, local_files_only=True, trust_remote_code=False).eval()
        self.labels = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                response_headers: dict[str, str] | None = None) -> Any:
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in _strings(payload)]
        enc = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(**enc).logits
        y = logits.numpy()
        names = np.array([self.labels.get(i, str(i)).encode() for i in y.argmax(axis=-1).tolist()], dtype=object)
        out = InferOutput(name="logits", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=False)
        label = InferOutput(name="label", shape=[len(texts)], datatype="BYTES")
        label.set_data_from_numpy(names, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[out, label], response_id=payload.id or "")


def _strings(payload: InferRequest) -> list[Any]:
    """The `text` input's strings: as sent in JSON (a list), or decoded from the binary extension."""
    inp = payload.inputs[0]
    if isinstance(inp.data, list):
        return list(inp.data)
    return list(inp.as_numpy().reshape(-1))


def main() -> None:
    torch.set_num_threads(1)
    model_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    sys.argv = sys.argv[:1]
    server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False)
    server.start([TextClassifier(MODEL_NAME, model_dir)])


if __name__ == "__main__":
    main()
