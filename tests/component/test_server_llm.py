"""A causal language model served as a real process and driven by the official `openai` client:
completions and chat, whole and streamed (chunks concatenate to the whole answer), greedy answers
equal to `generate()` in-process, stop strings, seeds, usage, the model list; bad requests answered
4xx with OpenAI's error object; a client that disconnects frees its KV-cache blocks (seen in the
token metrics); the waiting bound answers 429; a reader that never reads does not hold other streams
up; the Open Inference Protocol routes still serve the same model."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch
from kubeforge_api.server_settings import ServerEnv
from llm_models import tiny_llama
from servehelp import Server, request
from transformers import AutoModelForCausalLM, AutoTokenizer

NAME = "tiny-llm"
PROMPT = "ada trains the red kettle near the river. bo"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("llm") / "model")


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[Server]:
    s = Server(model_dir, name=NAME).start()
    try:
        yield s
    finally:
        assert s.stop() == 0


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0, timeout=60)


def metric(port: int, name: str) -> float:
    """The value of one `kubeforge:` series (summed over labels)."""
    text = request(port, "GET", "/metrics").body.decode()
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    assert values, f"{name} not in /metrics"
    return sum(values)


def wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def reference(model_dir: Path, prompt_ids: list[int], new: int) -> tuple[str, int]:
    """Single-stream greedy `generate()` in this process: (text, tokens)."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        x = torch.tensor([prompt_ids])
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, do_sample=False)
    ids = out[0, len(prompt_ids):].tolist()
    return tok.decode(ids, skip_special_tokens=True), len(ids)


def test_completions_whole_and_streamed_equal_generate(client: openai.OpenAI, model_dir: Path) -> None:
    assert [m.id for m in client.models.list()] == [NAME]
    whole = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=24, temperature=0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompt_ids = tok(PROMPT)["input_ids"]
    text, count = reference(model_dir, prompt_ids, 24)
    assert whole.choices[0].text == text
    assert whole.usage is not None
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (len(prompt_ids), count)
    assert whole.choices[0].finish_reason == ("length" if count == 24 else "stop")
    chunks = list(client.completions.create(model=NAME, prompt=PROMPT, max_tokens=24, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1  # really streamed
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == count
    ids = client.completions.create(model=NAME, prompt=prompt_ids, max_tokens=24, temperature=0)
    assert ids.choices[0].text == text  # token ids as the prompt


def test_chat_whole_and_streamed(client: openai.OpenAI, model_dir: Path) -> None:
    messages = [{"role": "system", "content": "answer briefly."}, {"role": "user", "content": "which thing?"}]
    whole = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20, temperature=0)  # type: ignore[arg-type]
    tok = AutoTokenizer.from_pretrained(model_dir)
    templated = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(templated, add_special_tokens=False)["input_ids"]
    text, count = reference(model_dir, prompt_ids, 20)
    assert whole.choices[0].message.content == text and whole.choices[0].message.role == "assistant"
    assert whole.usage is not None and (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (
        len(prompt_ids), count)
    stream = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20, temperature=0,  # type: ignore[arg-type]
                                            stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_stop_strings_seeds_and_sampling(client: openai.OpenAI) -> None:
    full = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=30, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    assert len(full) > 8
    stop = full[4:7]
    cut = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=30, temperature=0, stop=[stop, "\x00"],
                                    extra_body={"ignore_eos": True})
    assert cut.choices[0].text == full[:full.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=30, temperature=0, stop=stop,
                                         stream=True, extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text

    def sampled(seed: int) -> str:
        return client.completions.create(model=NAME, prompt=PROMPT, max_tokens=16, temperature=1.5, top_p=0.9,
                                         seed=seed, extra_body={"ignore_eos": True}).choices[0].text

    assert sampled(7) == sampled(7)
    assert len({sampled(s) for s in range(4)}) > 1


def test_bad_requests_get_openai_errors(client: openai.OpenAI, server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="a", max_tokens=2)
    assert e.value.code == "model_not_found"
    cases = [
        (b'{"model": "tiny-llm", "prompt": "a"', None),  # malformed JSON
        (b'[1, 2]', None),
        (b'{"model": "tiny-llm", "prompt": "a", "temperature": 3}', "temperature"),
        (b'{"model": "tiny-llm", "prompt": "a", "n": 2}', "n"),
        (b'{"model": "tiny-llm", "prompt": "a", "logprobs": 2}', "logprobs"),
        (b'{"model": "tiny-llm", "prompt": "a", "max_tokens": 0}', "max_tokens"),
        (b'{"model": "tiny-llm", "prompt": "a", "max_tokens": 4096}', "max_tokens"),  # beyond the context
        (b'{"model": "tiny-llm", "prompt": [1, 99999]}', "prompt"),  # beyond the vocabulary
        (b'{"model": "tiny-llm", "prompt": ""}', "prompt"),
        (b'{"model": "tiny-llm", "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}', "stop"),
        (json.dumps({"model": NAME, "prompt": [5] * 4096}).encode(), "prompt"),  # the prompt fills the context
        (b'{"model": "tiny-llm", "messages": []}', "prompt"),  # chat fields on the completions route
    ]
    for body, param in cases:
        r = request(server.port, "POST", "/v1/completions", body, {"content-type": "application/json"})
        assert r.status == 400, (body, r.body)
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        assert error["param"] == param, (body, error)
    chat = request(server.port, "POST", "/v1/chat/completions",
                   b'{"model": "tiny-llm", "messages": [{"role": "robot", "content": "x"}]}')
    assert chat.status == 400 and chat.json()["error"]["param"] == "messages"
    assert request(server.port, "GET", "/v1/completions").status == 405
    assert request(server.port, "GET", "/v1/embeddings").json()["error"]["type"] == "invalid_request_error"
    assert request(server.port, "GET", f"/v1/models/{NAME}").json()["id"] == NAME
    assert request(server.port, "GET", "/v1/models/other").status == 404


def test_token_metrics_and_prefix_cache(client: openai.OpenAI, server: Server) -> None:
    prompt_before = metric(server.port, "kubeforge:prompt_tokens_total")
    hits_before = metric(server.port, "kubeforge:prefix_cache_hits_total")
    long_prompt = " ".join([PROMPT] * 6)
    usages = [client.completions.create(model=NAME, prompt=long_prompt, max_tokens=4, temperature=0).usage
              for _ in range(2)]
    assert all(u is not None for u in usages)
    prompt_tokens = sum(u.prompt_tokens for u in usages if u is not None)
    assert metric(server.port, "kubeforge:prompt_tokens_total") - prompt_before == prompt_tokens
    assert metric(server.port, "kubeforge:prefix_cache_hits_total") - hits_before >= 16  # the second reused blocks
    for name in ("time_to_first_token_seconds_count", "inter_token_latency_seconds_count",
                 "e2e_request_latency_seconds_count", "generation_tokens_total", "prefix_cache_queries_total"):
        assert metric(server.port, f"kubeforge:{name}") > 0, name
    assert metric(server.port, "kubeforge:num_requests_running") == 0
    assert metric(server.port, "kubeforge:kv_cache_usage_perc") == 0


def _open_stream(port: int, max_tokens: int, rcvbuf: int | None = None) -> socket.socket:
    """A raw streaming request (the caller reads, or does not)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    body = json.dumps({"model": NAME, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "ignore_eos": True}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(body), body))
    return sock


def test_disconnect_frees_kv_blocks(server: Server) -> None:
    sock = _open_stream(server.port, 3000)
    received = b""
    while b"data: " not in received:  # tokens are flowing
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    wait_for(lambda: metric(server.port, "kubeforge:kv_cache_usage_perc") > 0)
    assert metric(server.port, "kubeforge:num_requests_running") == 1
    sock.close()
    wait_for(lambda: metric(server.port, "kubeforge:kv_cache_usage_perc") == 0, timeout=5)
    assert metric(server.port, "kubeforge:num_requests_running") == 0


def test_a_reader_that_never_reads_holds_no_other_stream_up(client: openai.OpenAI, server: Server) -> None:
    stalled = _open_stream(server.port, 3000, rcvbuf=4096)
    try:
        wait_for(lambda: metric(server.port, "kubeforge:num_requests_running") == 1)
        for _ in range(3):
            answer = client.completions.create(model=NAME, prompt="bo", max_tokens=40, temperature=0,
                                               extra_body={"ignore_eos": True})
            assert answer.usage is not None and answer.usage.completion_tokens == 40
    finally:
        stalled.close()
    wait_for(lambda: metric(server.port, "kubeforge:num_requests_running") == 0)


def test_open_inference_protocol_routes_still_serve_the_model(server: Server) -> None:
    body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [PROMPT]}]}).encode()
    r = request(server.port, "POST", f"/v2/models/{NAME}/infer", body)
    assert r.status == 200, r.body
    assert r.json()["outputs"][0]["shape"][0] == 1


def test_waiting_bound_answers_429(model_dir: Path) -> None:
    s = Server(model_dir, name=NAME, env={ServerEnv.LLM_MAX_RUNNING: "1", ServerEnv.LLM_MAX_WAITING: "1"}).start()
    held = []
    try:
        held.append(_open_stream(s.port, 3000))
        wait_for(lambda: metric(s.port, "kubeforge:num_requests_running") == 1)
        held.append(_open_stream(s.port, 8))
        wait_for(lambda: metric(s.port, "kubeforge:num_requests_waiting") == 1)
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        conn.request("POST", "/v1/completions", json.dumps({"model": NAME, "prompt": "a", "max_tokens": 2}))
        r = conn.getresponse()
        assert r.status == 429 and r.getheader("retry-after") == "1"
        assert json.loads(r.read())["error"]["type"] == "rate_limit_error"
        conn.close()
        held.pop(0).close()  # the running one leaves: the waiting one runs and finishes
        wait_for(lambda: metric(s.port, "kubeforge:num_requests_waiting") == 0)
        reply = client_for(s).completions.create(model=NAME, prompt="a", max_tokens=2)
        assert reply.usage is not None and reply.usage.prompt_tokens == 1
    finally:
        for sock in held:
            sock.close()
        assert s.stop() == 0


def client_for(s: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{s.port}/v1", api_key="unused", max_retries=0, timeout=60)
