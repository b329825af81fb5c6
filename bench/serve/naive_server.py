"""The naive reference server for the serving benchmark: Starlette on uvicorn (httptools, uvloop),
the same model loaded through the same artifact loader, run inside each request handler, one request
at a time, with plain `json` parsing. Its `/v2/health/live` route doubles as the bare-Starlette no-op.

Usage: naive_server.py MODEL_DIR PORT [--int8]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench.serve.*
from bench.serve.serve_model import load


def make_app(model: torch.nn.Module) -> Starlette:
    async def infer(request: Request) -> Response:
        req = json.loads(await request.body())
        t = req["inputs"][0]
        x = torch.from_numpy(np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]))
        with torch.inference_mode():
            y = model(x).numpy()
        out = {"model_name": request.path_params["name"],
               "outputs": [{"name": "logits", "shape": list(y.shape), "datatype": "FP32",
                            "data": y.reshape(-1).tolist()}]}
        return Response(json.dumps(out).encode(), media_type="application/json")

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    return Starlette(routes=[Route("/v2/models/{name}/infer", infer, methods=["POST"]),
                             Route("/v2/health/live", live), Route("/v2/health/ready", live)])


def main() -> None:
    torch.set_num_threads(1)
    model = load(Path(sys.argv[1]), int8="--int8" in sys.argv)
    uvicorn.run(make_app(model), host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", http="httptools",
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
