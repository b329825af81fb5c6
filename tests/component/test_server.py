"""The inference server as a real process over real HTTP: every Open Inference Protocol endpoint,
every error status, outputs equal to the model in-process, concurrent callers each get their own
rows back, queue-full and timeout answers, metrics, an independent OIP client (tritonclient),
graceful drain on SIGTERM, load failures, and a fuzz run that never sees a 5xx."""

from __future__ import annotations

import functools
import http.client
import json
import re
import string
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubeforge_api.inference import InferenceResponse, ModelMetadata
from kubeforge_api.server_settings import EXIT_MODEL_LOAD_FAILED, EXIT_MODEL_NOT_FOUND, ServerEnv
from kubeforge_server.__main__ import load_served
from kubeforge_trainer import artifacts
from kubeforge_trainer.artifacts import load_model
from kubeforge_trainer.variants import encoded
from kubeforge_trainer.variants.quantize import Frozen, TorchaoBackend, torchao_available
from servehelp import (
    DIGITS_MLP,
    SLOW_CNN,
    TINY_GPT,
    Client,
    Server,
    infer_body,
    request,
    write_artifact,
)

INFER = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def mlp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("mlp") / "artifact", DIGITS_MLP)


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("cnn") / "artifact", SLOW_CNN)


@pytest.fixture(scope="module")
def server(mlp_dir: Path) -> Iterator[Server]:
    s = Server(mlp_dir, env={ServerEnv.MAX_BATCH_SIZE: "16", ServerEnv.MAX_REQUEST_BYTES: "65536"}).start()
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def slow(cnn_dir: Path) -> Iterator[Server]:
    """A CNN slow enough (256 channels: ~0.1 s per 64 rows on one core) for batches to form."""
    s = Server(cnn_dir, env={ServerEnv.MAX_BATCH_SIZE: "256"}).start()
    yield s
    assert s.stop() == 0


def rows(n: int, seed: int, width: int = 64) -> list[list[float]]:
    return np.random.default_rng(seed).random((n, width), dtype=np.float32).round(4).tolist()  # type: ignore[no-any-return]


@functools.cache
def _model(model_dir: Path) -> torch.nn.Module:
    return load_model(model_dir)[1]


def expected(model_dir: Path, x: list[list[float]]) -> np.ndarray:
    model = _model(model_dir)
    with torch.inference_mode():
        return model(torch.tensor(x, dtype=torch.float32)).numpy()  # type: ignore[no-any-return]


def outputs(body: bytes) -> np.ndarray:
    out = InferenceResponse.model_validate_json(body).outputs[0]
    return np.array(out.data, dtype=np.float32).reshape(out.shape)


def test_health_and_metadata(server: Server) -> None:
    p = server.port
    assert request(p, "GET", "/v2/health/live").status == 200
    assert request(p, "GET", "/v2/health/ready").status == 200
    assert request(p, "GET", "/v2/models/digits/ready").status == 200
    meta = request(p, "GET", "/v2").json()
    assert meta["name"] == "kubeforge" and meta["version"]
    model = ModelMetadata.model_validate_json(request(p, "GET", "/v2/models/digits").body)
    assert [(t.name, t.datatype, t.shape) for t in model.inputs] == [("input", "FP32", [-1, 64])]
    assert [(t.name, t.datatype, t.shape) for t in model.outputs] == [("logits", "FP32", [-1, 10])]
    assert model.parameters is not None and str(model.parameters["digest"]).startswith("sha256:")
    for path in ("/v2/models/other", "/v2/models/other/ready", "/v2/nothing", "/"):
        r = request(p, "GET", path)
        assert r.status == 404 and r.json()["error"], path


def test_infer_equals_model_in_process(server: Server, mlp_dir: Path) -> None:
    x = rows(5, seed=1)
    r = request(server.port, "POST", INFER, infer_body(x))
    assert r.status == 200, r.body
    resp = InferenceResponse.model_validate_json(r.body)
    assert resp.model_name == "digits" and resp.outputs[0].name == "logits" and resp.outputs[0].shape == [5, 10]
    np.testing.assert_allclose(outputs(r.body), expected(mlp_dir, x), rtol=1e-5, atol=1e-5)
    nested = json.dumps({"id": "n1", "inputs": [{"name": "input", "shape": [5, 64], "datatype": "FP32", "data": x}],
                         "outputs": [{"name": "logits"}]}).encode()
    r2 = request(server.port, "POST", INFER, nested)
    assert r2.status == 200 and r2.json()["id"] == "n1"
    np.testing.assert_allclose(outputs(r2.body), outputs(r.body), rtol=1e-6)


def test_concurrent_callers_get_their_own_rows(slow: Server, cnn_dir: Path) -> None:
    inputs = [rows(1 + i % 3, seed=100 + i) for i in range(48)]
    want = [expected(cnn_dir, x) for x in inputs]

    def call(i: int) -> np.ndarray:
        client = Client(slow.port)
        try:
            r = client.call("POST", "/v2/models/digits/infer", infer_body(inputs[i]))
            assert r.status == 200, r.body
            return outputs(r.body)
        finally:
            client.close()

    before = _metric(slow.port, "kubeforge_inference_batch_size_count")
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(call, range(48)))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    batches = _metric(slow.port, "kubeforge_inference_batch_size_count") - before
    assert batches < 48, "16 concurrent callers on a busy model should have been batched"


BAD_REQUESTS = [
    (b"not json", "invalid request"),
    (b"{}", "inputs"),
    (b'{"inputs": []}', "inputs"),
    (b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32"}]}', "data"),
    (b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP16", "data": []}]}', "datatype FP32"),
    (b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "NOPE", "data": []}]}', "datatype"),
    (b'{"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": []}]}', "shape"),
    (b'{"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": [1.0]}]}', "elements"),
    (b'{"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": []}]}', "unknown input"),
    (b'{"inputs": [{"name": "input", "shape": [17, 64], "datatype": "FP32", "data": []}]}', "batch size"),
    (b'{"inputs": [{"name": "input", "shape": [0, 64], "datatype": "FP32", "data": []}]}', "batch size"),
    (b'{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": ["a"]}]}', "shape"),
    (b'{"extra": 1, "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": []}]}', "extra"),
]


@pytest.mark.parametrize(("body", "says"), BAD_REQUESTS)
def test_malformed_requests_get_422(server: Server, body: bytes, says: str) -> None:
    r = request(server.port, "POST", INFER, body)
    assert r.status == 422, (body, r.body)
    assert says in r.json()["error"] and "\n" not in r.json()["error"]


def test_values_are_checked(server: Server) -> None:
    def one(data: list[object]) -> int:
        return request(server.port, "POST", INFER, json.dumps({"inputs": [
            {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": data}]}).encode()).status

    assert one([0.5] * 64) == 200
    assert one(["0.5"] * 64) == 422
    assert one([True] * 64) == 422
    assert one([1e39] * 64) == 422  # overflows FP32
    assert one([10**400] * 64) == 422  # an integer beyond any float: 422, not 500
    assert one([2**128] * 64) == 422  # an integer beyond FP32
    assert request(server.port, "POST", INFER, b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": '
                   b'"FP32", "data": [' + b",".join([b"NaN"] * 64) + b"]}]}").status == 422


def test_other_http_errors(server: Server) -> None:
    big = infer_body(rows(16, seed=2)) + b" " * 70000
    r = request(server.port, "POST", INFER, big)
    assert r.status == 413 and "maxRequestBytes" in r.json()["error"]
    r = request(server.port, "POST", "/v2/models/other/infer", infer_body(rows(1, seed=3)))
    assert r.status == 404 and "other" in r.json()["error"]
    r = request(server.port, "GET", INFER)
    assert r.status == 405 and r.json()["error"]
    r = request(server.port, "POST", "/v2/health/ready")
    assert r.status == 405


def test_queue_full_503_and_timeout_504(cnn_dir: Path) -> None:
    s = Server(cnn_dir, env={ServerEnv.MAX_BATCH_SIZE: "1024", ServerEnv.MAX_QUEUE_DEPTH: "1",
                             ServerEnv.REQUEST_TIMEOUT_SECONDS: "1"}).start()
    try:
        heavy = infer_body(rows(1024, seed=4))  # about 2 s of model time on an idle core, more on a busy one
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(request, s.port, "POST", INFER, heavy)  # occupies the model
            _wait_metric(s.port, "kubeforge_inference_latency_seconds_count{stage=\"queue\"}", 1)
            second = pool.submit(request, s.port, "POST", INFER, heavy)  # waits in the queue
            _wait_metric(s.port, "kubeforge_inference_queue_depth", 1)
            third = request(s.port, "POST", INFER, heavy)
            assert third.status == 503 and third.headers.get("retry-after") == "1", third.body
            assert "queue is full" in third.json()["error"]
            # The first request was already in the model: it is answered 504 only if the model took longer than
            # the timeout (how long depends on the machine); the queued one waited past it in any case.
            assert first.result().status in (200, 504)
            assert second.result().status == 504 and "requestTimeoutSeconds" in second.result().json()["error"]
        _wait_metric(s.port, 'kubeforge_inference_latency_seconds_count{stage="inference"}', 1)  # model idle again
        assert request(s.port, "POST", INFER, infer_body(rows(1, seed=5))).status == 200  # still serving
    finally:
        assert s.stop() == 0


def test_metrics(server: Server) -> None:
    request(server.port, "POST", INFER, infer_body(rows(3, seed=6)))
    request(server.port, "POST", INFER, b"{}")
    text = request(server.port, "GET", "/metrics").body.decode()
    assert _value(text, 'kubeforge_inference_requests_total{code="200",endpoint="infer"}') >= 1
    assert _value(text, 'kubeforge_inference_requests_total{code="422",endpoint="infer"}') >= 1
    assert _value(text, "kubeforge_inference_queue_depth") == 0
    assert _value(text, 'kubeforge_inference_batch_size_bucket{le="4.0"}') >= 1
    for stage in ("queue", "inference", "total"):
        assert _value(text, f'kubeforge_inference_latency_seconds_count{{stage="{stage}"}}') >= 1


def test_tritonclient_calls_it(server: Server, mlp_dir: Path) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    meta = client.get_model_metadata("digits")
    assert meta["inputs"][0]["shape"] == [-1, 64]
    x = np.array(rows(4, seed=7), dtype=np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    result = client.infer("digits", [inp], outputs=[triton.InferRequestedOutput("logits", binary_data=False)])
    np.testing.assert_allclose(result.as_numpy("logits"), expected(mlp_dir, x.tolist()), rtol=1e-5, atol=1e-5)
    client.close()


def test_gpt_takes_int64_token_ids(tmp_path: Path) -> None:
    """A causal LM answers the logits of the last position ([N, vocab]), as the model computes them."""
    model_dir = write_artifact(tmp_path / "gpt", TINY_GPT)
    s = Server(model_dir, name="gpt").start()
    try:
        infer = "/v2/models/gpt/infer"
        ids = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
        r = request(s.port, "POST", infer, infer_body(ids, "INT64"))
        assert r.status == 200, r.body
        assert InferenceResponse.model_validate_json(r.body).outputs[0].shape == [2, 40]
        with torch.inference_mode():
            want = _model(model_dir)(torch.tensor(ids))[:, -1].numpy()
        np.testing.assert_allclose(outputs(r.body), want, rtol=1e-4, atol=1e-5)
        assert request(s.port, "POST", infer, infer_body([[1, 2, 40]], "INT64")).status == 422  # >= vocab
        assert request(s.port, "POST", infer, infer_body([[1, 2, -1]], "INT64")).status == 422
        assert request(s.port, "POST", infer, infer_body([list(range(13))], "INT64")).status == 422  # > seqLen
        assert request(s.port, "POST", infer, infer_body([[1.0, 2.0]], "FP32")).status == 422
        assert request(s.port, "POST", infer, infer_body([[2**70]], "INT64")).status == 422
    finally:
        assert s.stop() == 0


def test_gpt_outputs_are_bounded(tmp_path: Path) -> None:
    """Every position's logits only when the server is configured so, and never beyond the output cap:
    422 before the model runs."""
    model_dir = write_artifact(tmp_path / "gpt", TINY_GPT)
    s = Server(model_dir, name="gpt", env={ServerEnv.LM_LOGITS: "all", ServerEnv.MAX_OUTPUT_ELEMENTS: "400"}).start()
    try:
        infer = "/v2/models/gpt/infer"
        ids = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]  # 2 x 5 x 40 = 400 elements
        r = request(s.port, "POST", infer, infer_body(ids, "INT64"))
        assert r.status == 200, r.body
        with torch.inference_mode():
            want = _model(model_dir)(torch.tensor(ids)).numpy()
        np.testing.assert_allclose(outputs(r.body), want, rtol=1e-4, atol=1e-5)
        assert request(s.port, "GET", "/v2/models/gpt").json()["outputs"][0]["shape"] == [-1, -1, 40]
        r = request(s.port, "POST", infer, infer_body([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]], "INT64"))
        assert r.status == 422 and "480 elements" in r.json()["error"] and "maxOutputElements" in r.json()["error"]
    finally:
        assert s.stop() == 0


def test_sigterm_drains_in_flight_requests(cnn_dir: Path) -> None:
    s = Server(cnn_dir, env={ServerEnv.MAX_BATCH_SIZE: "256", ServerEnv.SHUTDOWN_DELAY_SECONDS: "2"}).start()
    assert s.proc is not None
    body = infer_body(rows(256, seed=8))  # 12 of these: about 5 s of model time, longer than the delay
    with ThreadPoolExecutor(12) as pool:
        in_flight = [pool.submit(request, s.port, "POST", INFER, body) for _ in range(12)]
        _wait_metric(s.port, "kubeforge_inference_latency_seconds_count{stage=\"queue\"}", 1)
        s.proc.terminate()
        deadline = time.monotonic() + 1.5
        while request(s.port, "GET", "/v2/health/ready").status != 503:  # readiness drops at once
            assert time.monotonic() < deadline
        during = request(s.port, "POST", INFER, infer_body(rows(1, seed=9)))  # still served in the delay
        statuses = [f.result().status for f in in_flight]
    assert statuses == [200] * 12 and during.status == 200
    assert s.proc.wait(timeout=30) == 0


def test_missing_model_exits_with_reason(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    s = Server(tmp_path / "absent", env={ServerEnv.TERMINATION_LOG: str(log)}).start(wait_ready=False)
    assert s.proc is not None and s.proc.wait(timeout=60) == EXIT_MODEL_NOT_FOUND
    assert "model-card.json" in log.read_text()


def test_tampered_weights_fail_to_load(tmp_path: Path) -> None:
    model_dir = write_artifact(tmp_path / "m", DIGITS_MLP)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    log = tmp_path / "termination-log"
    s = Server(model_dir, env={ServerEnv.TERMINATION_LOG: str(log)}).start(wait_ready=False)
    assert s.proc is not None and s.proc.wait(timeout=60) == EXIT_MODEL_LOAD_FAILED
    assert "digest" in log.read_text()


def _value(text: str, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert m, f"{sample} not in metrics"
    return float(m.group(1))


def _metric(port: int, sample: str) -> float:
    return _value(request(port, "GET", "/metrics").body.decode(), sample)


def _wait_metric(port: int, sample: str, at_least: float, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while _metric(port, sample) < at_least:
        assert time.monotonic() < deadline, f"{sample} never reached {at_least}"
        time.sleep(0.01)



# --- fuzz: arbitrary methods, paths and bodies never get a 5xx --------------------------------------

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                     max_leaves=12)
_numbers = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                     st.text(max_size=3), st.none())
_tensor = st.fixed_dictionaries(
    {"name": st.sampled_from(["input", "x", ""]),
     "shape": st.lists(st.integers(-3, 70), max_size=4) | st.just([2, 64]) | st.just([1, 64]),
     "datatype": st.sampled_from(["FP32", "INT64", "FP16", "BOOL", "BYTES", "fp32", "X"]),
     "data": st.lists(_numbers, max_size=130) | st.lists(st.lists(_numbers, max_size=64), max_size=3) | _json},
    optional={"parameters": _json, "extra": _json})
_request = st.fixed_dictionaries(
    {"inputs": st.lists(_tensor, max_size=2) | _json},
    optional={"id": _json, "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}), max_size=2),
              "parameters": _json})


@st.composite
def _near_valid(draw: st.DrawFn) -> bytes:
    """A well-formed request for the digits MLP (1..18 rows; 16 is maxBatchSize) with at most one mutation."""
    n = draw(st.integers(1, 18))
    data: list[object] = np.random.default_rng(draw(st.integers(0, 2**16))).random(n * 64).round(3).tolist()
    mutation = draw(st.sampled_from(["none", "none", "none", "string", "nan", "drop", "bool", "null", "huge"]))
    if mutation != "none":
        k = draw(st.integers(0, len(data) - 1))
        value = {"string": "1", "nan": float("nan"), "bool": True, "null": None, "huge": 1e300}.get(mutation)
        data = data[:k] + data[k + 1:] if mutation == "drop" else [*data[:k], value, *data[k + 1:]]
    tensor = {"name": "input", "shape": [n, 64], "datatype": "FP32", "data": data}
    return json.dumps({"id": draw(st.text(max_size=4)), "inputs": [tensor]}).encode()


_body = st.one_of(_near_valid(), _request.map(lambda d: json.dumps(d).encode()),
                  _json.map(lambda d: json.dumps(d).encode()), st.binary(max_size=200), st.just(b""))
_path = st.one_of(st.sampled_from(["/v2/models/digits", "/v2/models/digits/ready", "/v2", "/metrics",
                                   "/v2/health/ready", "/v2/health/live", "/v2/models/other/infer",
                                   "/v2/models//infer", "/v2/models/digits/versions/1/infer", INFER]),
                  st.text(alphabet=string.ascii_letters + string.digits + "-_./%", max_size=30).map(lambda p: "/" + p))
_method = st.sampled_from(["POST", "GET", "PUT", "DELETE", "HEAD"])


@pytest.fixture(scope="module")
def fuzz_client(server: Server) -> Iterator[Client]:
    client = Client(server.port)
    yield client
    client.close()


def _check(client: Client, method: str, path: str, body: bytes | None) -> int:
    try:
        r = client.call(method, path, body)
    except (http.client.HTTPException, OSError):  # the server closed a keep-alive connection: reconnect once
        client.conn.close()
        r = client.call(method, path, body)
    assert r.status < 500, (method, path, (body or b"")[:300], r.status, r.body)
    if r.status >= 400 and method != "HEAD":
        err = json.loads(r.body)
        assert set(err) == {"error"} and err["error"] and "\n" not in err["error"]
    return r.status


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(body=_body)
def test_fuzz_infer_never_5xx(fuzz_client: Client, body: bytes) -> None:
    _check(fuzz_client, "POST", INFER, body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(method=_method, path=_path, body=_body)
def test_fuzz_routes_never_5xx(fuzz_client: Client, method: str, path: str, body: bytes) -> None:
    _check(fuzz_client, method, path, body if method not in ("GET", "HEAD") else None)


def test_fuzz_reached_the_model(server: Server) -> None:
    """The fuzz runs above exercised both the model (200) and the validation (422)."""
    text = request(server.port, "GET", "/metrics").body.decode()
    assert _value(text, 'kubeforge_inference_requests_total{code="200",endpoint="infer"}') >= 40
    assert _value(text, 'kubeforge_inference_requests_total{code="422",endpoint="infer"}') >= 300


@pytest.mark.skipif(not torchao_available(), reason="torchao is not installed")
def test_a_torchao_artifact_is_served_compiled_at_every_batch_size(mlp_dir: Path, tmp_path: Path) -> None:
    """The server runs a torchao variant in the form its compression report timed (compiled, warmed up at
    batch 1 and 2 before it is ready), and answers every batch size as the eager variant would."""
    card, model = load_model(mlp_dir)
    state = encoded(TorchaoBackend().dynamic(model), "int8-dynamic", "torchao")
    artifacts.write(tmp_path / "torchao", state, {"architecture": card["architecture"], "metrics": {},
                                                  "compression": {"encoding": "int8-dynamic", "backend": "torchao"}})
    s = Server(tmp_path / "torchao").start(wait_ready=False)
    try:
        s.wait_ready(timeout=600)  # two compilations on a cold inductor cache
        for n in (1, 2, 5, 16):
            x = rows(n, seed=n)
            r = request(s.port, "POST", INFER, infer_body(x))
            assert r.status == 200, r.body
            np.testing.assert_allclose(outputs(r.body), expected(tmp_path / "torchao", x), rtol=1e-4, atol=1e-4)
    finally:
        assert s.stop() == 0
    assert isinstance(load_served(tmp_path / "torchao")[1], Frozen)
