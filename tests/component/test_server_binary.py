"""The Open Inference Protocol's binary tensor extension and versioned paths, against the real server
process: `tritonclient` with its defaults (binary inputs and outputs) gets the values the JSON path
gives; raw binary requests are checked as strictly as JSON ones; `/versions/1/` paths serve, an
unknown version is 404 with the protocol's error body; a fuzz run of binary requests never sees a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubeforge_api.inference import InferenceResponse
from kubeforge_api.server_settings import ServerEnv
from kubeforge_trainer.artifacts import load_model
from servehelp import DIGITS_MLP, TINY_GPT, Client, Server, infer_body, request, write_artifact

INFER = "/v2/models/digits/infer"
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def mlp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("mlp") / "artifact", DIGITS_MLP)


@pytest.fixture(scope="module")
def server(mlp_dir: Path) -> Iterator[Server]:
    s = Server(mlp_dir, env={ServerEnv.MAX_BATCH_SIZE: "16"}).start()
    yield s
    assert s.stop() == 0


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 64), dtype=np.float32)


def json_answer(port: int, x: np.ndarray, path: str = INFER) -> np.ndarray:
    r = request(port, "POST", path, infer_body(x.tolist()))
    assert r.status == 200, r.body
    out = InferenceResponse.model_validate_json(r.body).outputs[0]
    return np.array(out.data, dtype=np.float32).reshape(out.shape)


def binary_body(x: np.ndarray, datatype: str = "FP32", outputs: list[dict[str, object]] | None = None,
                size: int | None = None) -> tuple[bytes, dict[str, str]]:
    raw = x.astype("<f4" if datatype == "FP32" else "<i8").tobytes()
    doc: dict[str, object] = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": datatype,
                                          "parameters": {"binary_data_size": len(raw) if size is None else size}}]}
    if outputs is not None:
        doc["outputs"] = outputs
    head = json.dumps(doc).encode()
    return head + raw, {HEADER: str(len(head))}


def test_tritonclient_default_binary_call_equals_json(server: Server) -> None:
    import tritonclient.http as triton

    x = rows(5, seed=1)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        inp = triton.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)  # binary_data=True: the client's default
        result = client.infer("digits", [inp], outputs=[triton.InferRequestedOutput("logits", binary_data=True)])
        assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 5 * 10 * 4
        np.testing.assert_array_equal(result.as_numpy("logits"), json_answer(server.port, x))
        bare = client.infer("digits", [inp])  # no outputs named: the client asks every output as binary
        np.testing.assert_array_equal(bare.as_numpy("logits"), json_answer(server.port, x))
        versioned = client.infer("digits", [inp], model_version="1")
        np.testing.assert_array_equal(versioned.as_numpy("logits"), json_answer(server.port, x))
        assert client.is_model_ready("digits", "1") and not client.is_model_ready("digits", "2")
        assert client.get_model_metadata("digits", "1")["versions"] == ["1"]
    finally:
        client.close()


def test_binary_output_of_a_json_request(server: Server) -> None:
    x = rows(3, seed=2)
    body = json.dumps({"parameters": {"binary_data_output": True}, "inputs": [
        {"name": "input", "shape": [3, 64], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}).encode()
    r = request(server.port, "POST", INFER, body)
    assert r.status == 200, r.body
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.body[:n])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 3 * 10 * 4} and "data" not in head["outputs"][0]
    got = np.frombuffer(r.body[n:], dtype="<f4").reshape(head["outputs"][0]["shape"])
    np.testing.assert_array_equal(got, json_answer(server.port, x))


def test_binary_input_with_json_output(server: Server) -> None:
    x = rows(4, seed=3)
    body, headers = binary_body(x, outputs=[{"name": "logits", "parameters": {"binary_data": False}}])
    r = request(server.port, "POST", INFER, body, headers)
    assert r.status == 200, r.body
    assert "inference-header-content-length" not in r.headers
    out = InferenceResponse.model_validate_json(r.body).outputs[0]
    np.testing.assert_array_equal(np.array(out.data, dtype=np.float32).reshape(out.shape),
                                  json_answer(server.port, x))


def test_malformed_binary_requests_get_422(server: Server) -> None:
    x = rows(2, seed=4)
    good, headers = binary_body(x)
    n = int(headers[HEADER])
    cases = [
        (good[:-4], headers, "bytes follow"),  # shorter than binary_data_size
        (good + b"\0\0\0\0", headers, "bytes follow"),  # trailing bytes
        (*binary_body(x, size=7), "bytes follow"),  # binary_data_size is not what follows
        (*binary_body(x, size=-1), "byte count"),
        (good, {HEADER: "abc"}, "Inference-Header-Content-Length"),
        (good, {HEADER: str(len(good) + 1)}, "Inference-Header-Content-Length"),
        (good, {HEADER: "0"}, "Inference-Header-Content-Length"),
        (good, {HEADER: str(n - 3)}, "invalid request"),  # cuts the JSON header
        (good, {}, "invalid request"),  # binary bytes without the header: not JSON
        (*binary_body(np.full((1, 64), np.nan, dtype=np.float32)), "finite"),
        (*binary_body(np.full((1, 64), np.inf, dtype=np.float32)), "finite"),
    ]
    for body, hdrs, says in cases:
        r = request(server.port, "POST", INFER, body, hdrs)
        assert r.status == 422, (hdrs, r.body)
        assert says in r.json()["error"] and "\n" not in r.json()["error"]
    shape_lie = json.dumps({"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32",
                                        "parameters": {"binary_data_size": 2 * 64 * 4}}]}).encode()
    r = request(server.port, "POST", INFER, shape_lie + x.tobytes(), {HEADER: str(len(shape_lie))})
    assert r.status == 422 and "needs 768 bytes" in r.json()["error"]
    both = json.dumps({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": [0.0] * 128,
                                   "parameters": {"binary_data_size": 2 * 64 * 4}}]}).encode()
    r = request(server.port, "POST", INFER, both + x.tobytes(), {HEADER: str(len(both))})
    assert r.status == 422 and "both data" in r.json()["error"]


def test_version_paths(server: Server) -> None:
    p = server.port
    x = rows(2, seed=5)
    np.testing.assert_array_equal(json_answer(p, x, "/v2/models/digits/versions/1/infer"), json_answer(p, x))
    assert request(p, "GET", "/v2/models/digits/versions/1/ready").status == 200
    meta = request(p, "GET", "/v2/models/digits/versions/1").json()
    assert meta["name"] == "digits" and meta["versions"] == ["1"]
    for method, path in [("POST", "/v2/models/digits/versions/2/infer"), ("GET", "/v2/models/digits/versions/2"),
                         ("GET", "/v2/models/digits/versions/2/ready"), ("GET", "/v2/models/digits/versions/"),
                         ("POST", "/v2/models/other/versions/1/infer")]:
        r = request(p, method, path, infer_body(x.tolist()) if method == "POST" else None)
        assert r.status == 404, (path, r.body)
        assert set(r.json()) == {"error"} and r.json()["error"], path
    assert "version 1" in request(p, "GET", "/v2/models/digits/versions/2").json()["error"]
    assert json.loads(request(p, "GET", "/v2").body)["extensions"] == ["binary_tensor_data"]


def test_gpt_takes_binary_int64_token_ids(tmp_path: Path) -> None:
    model_dir = write_artifact(tmp_path / "gpt", TINY_GPT)
    s = Server(model_dir, name="gpt").start()
    try:
        ids = np.array([[1, 2, 3], [4, 5, 39]], dtype=np.int64)
        body, headers = binary_body(ids, "INT64", outputs=[{"name": "logits", "parameters": {"binary_data": True}}])
        r = request(s.port, "POST", "/v2/models/gpt/infer", body, headers)
        assert r.status == 200, r.body
        n = int(r.headers["inference-header-content-length"])
        shape = json.loads(r.body[:n])["outputs"][0]["shape"]
        with torch.inference_mode():
            want = load_model(model_dir)[1](torch.from_numpy(ids))[:, -1].numpy()
        np.testing.assert_allclose(np.frombuffer(r.body[n:], dtype="<f4").reshape(shape), want, rtol=1e-4, atol=1e-5)
        bad, headers = binary_body(np.array([[1, 40]], dtype=np.int64), "INT64")  # 40 >= vocab
        r = request(s.port, "POST", "/v2/models/gpt/infer", bad, headers)
        assert r.status == 422 and "0..39" in r.json()["error"]
    finally:
        assert s.stop() == 0


@pytest.fixture(scope="module")
def fuzz_client(server: Server) -> Iterator[Client]:
    client = Client(server.port)
    yield client
    client.close()


_size = st.one_of(st.integers(-3, 600), st.just(2 * 64 * 4), st.booleans(), st.text(max_size=3), st.none())
_header = st.one_of(st.none(), st.integers(-2, 400).map(str), st.text("0123456789 +-x.", max_size=6), st.just("head"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(size=_size, header=_header, tail=st.binary(max_size=600), rows=st.integers(0, 3),
       datatype=st.sampled_from(["FP32", "INT64", "FP16"]), out=st.sampled_from([None, True, False, "yes", 1]))
def test_fuzz_binary_requests_never_5xx(fuzz_client: Client, size: object, header: str | None, tail: bytes,
                                        rows: int, datatype: str, out: object) -> None:
    doc: dict[str, object] = {"inputs": [{"name": "input", "shape": [rows, 64], "datatype": datatype,
                                          "parameters": {} if size is None else {"binary_data_size": size}}]}
    if out is not None:
        doc["outputs"] = [{"name": "logits", "parameters": {"binary_data": out}}]
    head = json.dumps(doc).encode()
    headers = {} if header is None else {HEADER: str(len(head)) if header == "head" else header}
    r = fuzz_client.call("POST", INFER, head + tail, headers)
    assert r.status < 500, (doc, header, len(tail), r.status, r.body[:300])
    if r.status != 200:
        err = json.loads(r.body)
        assert set(err) == {"error"} and err["error"] and "\n" not in err["error"]
