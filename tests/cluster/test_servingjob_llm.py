"""A causal language model served by a ServingJob on the real control plane: the official `openai`
client (completions and chat, whole and streamed, the model named after the ServingJob) gets the same
text streamed as whole at temperature 0, and autoscaling on waiting requests (the operator reading the
servers' own gauges, no HPA) adds a replica while more streams wait than the target and removes it once
they are gone. The load is small: one running sequence per server (`llm.maxRunningRequests: 1`), so a
few concurrent streams are enough to wait."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from conftest import Cluster, wait_for
from llm_models import tiny_llama
from minicluster.operator_process import OperatorProcess
from test_models_you_bring import claim, create, ready, ready_ips
from test_servingjob import get

pytestmark = [pytest.mark.cluster, pytest.mark.embedded("writes the model through the claim's hostPath")]
Obj = dict[str, Any]
NAME = "chat"
PROMPT = "ada trains the red kettle near the river. bo"
MESSAGES: list[Any] = [{"role": "system", "content": "answer briefly."}, {"role": "user", "content": "which thing?"}]


def client(ip: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{ip}:8080/v1", api_key="unused", max_retries=0, timeout=120)


@contextmanager
def streams(ip: str, clients: int) -> Iterator[threading.Event]:
    """`clients` threads streaming long greedy completions back to back until the block ends."""
    stop = threading.Event()

    def run() -> None:
        c = client(ip)
        while not stop.is_set():
            try:
                for _ in c.completions.create(model=NAME, prompt=PROMPT, max_tokens=512, temperature=0, stream=True,
                                              extra_body={"ignore_eos": True}):
                    if stop.is_set():
                        break
            except openai.OpenAIError:
                stop.wait(0.5)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield stop
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)


def events(cluster: Cluster, ns: str, reason: str) -> list[str]:
    items = cluster.client.get(f"/api/v1/namespaces/{ns}/events?fieldSelector=reason%3D{reason}")["items"]
    return [str(e.get("message", "")) for e in items if e.get("involvedObject", {}).get("name") == NAME]


def test_a_language_model_answers_the_openai_client_and_scales_on_waiting_requests(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    tiny_llama(claim(cluster, namespace, "llm") / "tiny")
    create(cluster, namespace, "servingjobs", {"kind": "ServingJob", "metadata": {"name": NAME}, "spec": {
        "model": {"uri": "pvc://llm/tiny"},
        "llm": {"maxRunningRequests": 1, "kvCacheBytes": 8 * 1024 * 1024},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "metric": "waitingRequests", "targetWaitingRequests": 1,
                        "scaleDownStabilizationSeconds": 5},
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}})
    ready(cluster, namespace, NAME)
    (ip,) = ready_ips(cluster, namespace, NAME)
    c = client(ip)
    assert [m.id for m in c.models.list()] == [NAME]

    whole = c.completions.create(model=NAME, prompt=PROMPT, max_tokens=24, temperature=0)
    chunks = list(c.completions.create(model=NAME, prompt=PROMPT, max_tokens=24, temperature=0, stream=True))
    assert whole.choices[0].text and "".join(x.choices[0].text for x in chunks if x.choices) == whole.choices[0].text
    assert whole.usage is not None and whole.usage.completion_tokens > 0
    chat = c.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=20, temperature=0)
    streamed = list(c.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=20, temperature=0,
                                              stream=True))
    answer = chat.choices[0].message.content
    assert answer and "".join(x.choices[0].delta.content or "" for x in streamed if x.choices) == answer
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="another", prompt=PROMPT, max_tokens=4)

    sj = get(cluster, namespace, "servingjobs", NAME)
    assert sj["status"]["autoscaling"]["desiredReplicas"] == 1, sj["status"]
    deployment = cluster.client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{NAME}")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["KUBEFORGE_LLM_MAX_RUNNING"], env["KUBEFORGE_KV_CACHE_BYTES"]) == ("1", str(8 * 1024 * 1024))
    hpas = cluster.client.get(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers")["items"]
    assert not hpas  # the operator scales on the servers' gauges itself

    with streams(ip, clients=4):  # one runs, three wait: ceil(3 / 1) = 2, clamped to maxReplicas
        scaled = wait_for(lambda: (s := get(cluster, namespace, "servingjobs", NAME)["status"]).get(
            "readyReplicas") == 2 and s, 240, 1, what="a second server under load")
    st = scaled["autoscaling"]
    assert st["metric"] == "waitingRequests" and st["desiredReplicas"] == 2, scaled
    assert any(m.startswith("New size: 2 (was 1)") for m in events(cluster, namespace, "SuccessfulRescale"))

    wait_for(lambda: get(cluster, namespace, "servingjobs", NAME)["status"]["autoscaling"]["desiredReplicas"] == 1,
             180, 1, what="the replica to be removed once nothing waits")
    wait_for(lambda: get(cluster, namespace, "servingjobs", NAME)["status"].get("replicas") == 1, 180, 1,
             what="the Deployment back at one server")
    assert not events(cluster, namespace, "MetricsEndpointMisbehaving")
