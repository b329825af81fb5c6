"""`make demo`: the whole pipeline on the embedded cluster, told in a few lines.

The embedded cluster and the operator (under its own ServiceAccount) start; every sample in the
samples folder is applied (TrainingJobs, and ServingJobs of a job's compressed model and of a fine-tuned
language model);
the demo prints each object's state changes, then what a user came for: accuracy before and after
compression and its speedup (the job's compression report), the ServingJob's URL, and real inference
requests answered by a server, and the dashboard's URL (the dashboard runs against the cluster).
`--keep` leaves it all running.

Requests go to the Service's ClusterIP when it routes on this machine, else to a server pod's IP
(the embedded cluster may run without kube-proxy)."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubeforge_api.compression import Summary, speed_phrase
from kubeforge_api.inference import PATH_INFER, Datatype, InferenceRequest, InferenceResponse, RequestInput
from kubeforge_api.trainingjob import CompressionStatus
from kubeforge_dashboard import launch as dashboard

from .launch import start_cluster
from .operator_process import OperatorProcess, install, kubectl, operator_kubeconfig

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")
SERVING_STUCK = ("ModelNotFound", "ModelLoadFailed", "InvalidSpec")  # Ready=False that waiting will not fix
SERVER_PORT = 8080
STORE_SECRET = "s3-credentials"
REQUESTS = 8


def demo(samples: Path, keep: bool, timeout: float = 900) -> int:
    print("starting the embedded cluster (the first run builds the control plane)...", flush=True)
    cluster = start_cluster()
    op: OperatorProcess | None = None
    try:
        admin = cluster.kubeconfig
        print(f"cluster ready in {cluster.info['seconds']} s; KUBECONFIG={admin}", flush=True)
        install(admin)
        op = OperatorProcess(operator_kubeconfig(admin, cluster.root / "operator.kubeconfig"),
                             cluster.root / "operator.log", {"KUBEFORGE_RESTART_BACKOFF_SECONDS": "2"}).start()
        store_secret(admin, cluster.info.get("objectStore"))
        files = sorted(samples.glob("*.yaml"))
        now, later = split_samples(files)
        kubectl(admin, "apply", "-f", "-", input=yaml.safe_dump_all(now))
        print(f"applied {', '.join(f.name for f in files)}\n", flush=True)
        seen = follow(admin, timeout)
        if later:  # fine-tunes and ServingJobs of s3:// models read what the jobs above made
            kubectl(admin, "apply", "-f", "-", input=yaml.safe_dump_all(later))
            follow(admin, timeout, seen)
        ok = report_training(admin) & report_serving(admin)
        board = open_dashboard(cluster.root, admin)
        if keep and op.proc is not None:
            groups = " ".join(f"-{pid}" for pid in (cluster.proc.pid, op.proc.pid, board and board.pid) if pid)
            print(f"\nkept running: export KUBECONFIG={admin}; stop with: kill -- {groups}")
        return 0 if ok and board is not None else 1
    except subprocess.CalledProcessError as e:
        print(e.stderr)
        return 1
    finally:
        if not keep:
            dashboard.stop(cluster.root / "dashboard")
            if op is not None:
                op.stop()
            cluster.stop()


def store_secret(admin: Path, store: Obj | None) -> None:
    """The Secret the samples name for the object store (`s3-credentials`), holding this cluster's keys."""
    if not store:
        return
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": STORE_SECRET, "namespace": "default"},
              "stringData": {"AWS_ACCESS_KEY_ID": store["accessKey"], "AWS_SECRET_ACCESS_KEY": store["secretKey"],
                             "AWS_ENDPOINT_URL": store["inClusterEndpoint"],
                             "AWS_REGION": store.get("region", "us-east-1")}}
    kubectl(admin, "apply", "-f", "-", input=json.dumps(secret))


def split_samples(files: list[Path]) -> tuple[list[Obj], list[Obj]]:
    """The samples' documents: those applied at once, and those that read what the first ones make,
    applied once those TrainingJobs have finished: fine-tunes (their base model and data come from a
    job), ServingJobs of what a fine-tune makes and ServingJobs of s3:// models (a job publishes them)."""
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    fine_tunes = {d["metadata"]["name"] for d in docs
                  if d["kind"] == "TrainingJob" and "finetune" in (d.get("spec") or {})}
    later = [d for d in docs if _reads_what_jobs_make(d, fine_tunes)]
    return [d for d in docs if d not in later], later


def _reads_what_jobs_make(doc: Obj, fine_tunes: set[str]) -> bool:
    spec = doc.get("spec") or {}
    if doc["kind"] == "TrainingJob":
        return "finetune" in spec
    model = spec.get("model") or {}
    return doc["kind"] == "ServingJob" and (str(model.get("uri", "")).startswith("s3://")
                                            or (model.get("trainingJobRef") or {}).get("name") in fine_tunes)


def open_dashboard(root: Path, admin: Path) -> dashboard.Running | None:
    """The dashboard in the background against this cluster; None (saying why) when it does not start."""
    try:
        board = dashboard.start(root / "dashboard", env={"KUBECONFIG": str(admin)})
    except RuntimeError as e:
        print(f"\ndashboard: not started ({e})")
        return None
    print(f"\ndashboard: {board.url}")
    return board


# ------------------------------------------------------------------------------------------ following


def items(admin: Path, kind: str) -> list[Obj]:
    return list(json.loads(kubectl(admin, "get", kind, "-o", "json"))["items"])


def condition(obj: Obj, ctype: str) -> Obj | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == ctype), None)


def serving_state(sj: Obj) -> str:
    ready = condition(sj, "Ready")
    return f"Ready={ready['status']} ({ready['reason']})" if ready else "Pending"


def snapshot(admin: Path) -> dict[str, str]:
    """Each object's state in one phrase: `tj/NAME` -> state (reason), `sj/NAME` -> Ready=... (reason)."""
    out = {f"tj/{j['metadata']['name']}": f"{j.get('status', {}).get('state', 'Pending')} "
           f"({j.get('status', {}).get('reason', '')})" for j in items(admin, "tj")}
    out.update({f"sj/{s['metadata']['name']}": serving_state(s) for s in items(admin, "sj")})
    return out


def settled(admin: Path) -> bool:
    """Every TrainingJob terminal, every ServingJob ready (or stuck for a reason waiting cannot fix)."""
    jobs, servers = items(admin, "tj"), items(admin, "sj")
    trained = bool(jobs) and all(j.get("status", {}).get("state") in TERMINAL for j in jobs)
    served = all((c := condition(s, "Ready")) and (c["status"] == "True" or c["reason"] in SERVING_STUCK)
                 for s in servers)
    return trained and served


def follow(admin: Path, timeout: float, seen: dict[str, str] | None = None) -> dict[str, str]:
    """Print one line per state change (since `seen`) until everything settles or `timeout` passes;
    returns the states seen."""
    start, seen = time.monotonic(), dict(seen or {})
    while time.monotonic() - start < timeout:
        for name, state in snapshot(admin).items():
            if seen.get(name) != state:
                print(f"{time.monotonic() - start:5.0f}s  {name:<34} {state}", flush=True)
                seen[name] = state
        if settled(admin):
            return seen
        time.sleep(1)
    print(f"timed out after {timeout:.0f} s", flush=True)
    return seen


# ------------------------------------------------------------------------------------------ the story


def report_training(admin: Path) -> bool:
    print()
    jobs = items(admin, "tj")
    for j in jobs:
        st = j.get("status", {})
        acc = (st.get("progress") or {}).get("eval", {}).get("accuracy")
        print(f"tj/{j['metadata']['name']}: {st.get('state')} ({st.get('reason', '')})"
              f"{f'; accuracy {acc:.3f}' if acc is not None else ''}{evaluation_text(st)}")
        if st.get("compression"):
            print(f"  {compression_line(j)}")
    return bool(jobs) and all(j.get("status", {}).get("state") == "Succeeded" for j in jobs)


def evaluation_text(status: Obj) -> str:
    """A fine-tune's eval perplexity before and after, and what share of the model trained."""
    ev = status.get("evaluation") or {}
    before, after = (ev.get(k) or {} for k in ("before", "after"))
    if "perplexity" not in before or "perplexity" not in after:
        return ""
    share = f", {ev['trainableFraction']:.1%} of the weights trained" if "trainableFraction" in ev else ""
    return f"; eval perplexity {before['perplexity']:.2f} -> {after['perplexity']:.2f}{share}"


def compression_line(job: Obj) -> str:
    """Accuracy before -> after, the speed-up and the size ratio, from the typed `status.compression`."""
    comp = CompressionStatus.model_validate(job["status"]["compression"])
    chosen = next((c for c in comp.candidates or [] if c.verdict == "accepted"), None)
    if chosen is None:
        return f"compression: nothing published ({comp.reason}: {comp.message or ''})"
    base = comp.baseline or Summary()
    before, after = ("?" if v is None else f"{v:.3f}" for v in (base.metric, chosen.metric))
    line = f"compressed ({chosen.method}): {comp.metric} {before} -> {after}"
    if chosen.speedup is not None:  # in words: '2.1x faster', never a speed-up below one
        line += (f", {speed_phrase(chosen.speedup.batch1)} at batch 1 and {speed_phrase(chosen.speedup.batch8)} "
                 "at batch 8")
    if base.size_bytes and chosen.size_bytes:
        line += f", {base.size_bytes / chosen.size_bytes:.1f}x smaller"
    return line


def report_serving(admin: Path) -> bool:
    ok = True
    for sj in items(admin, "sj"):
        name, st = sj["metadata"]["name"], sj.get("status", {})
        ready = condition(sj, "Ready")
        print(f"sj/{name}: {serving_state(sj)}; url {st.get('url', '-')}")
        if not ready or ready["status"] != "True":
            ok = False
            continue
        ok &= send_requests(admin, sj)
    return ok


def endpoints(admin: Path, sj: Obj) -> list[tuple[str, str]]:
    """(what, host) to try: the Service's ClusterIP first, then each ready server pod's IP."""
    ns, name = sj["metadata"]["namespace"], sj["metadata"]["name"]
    svc = json.loads(kubectl(admin, "get", "svc", name, "-n", ns, "-o", "json"))
    out = [("Service ClusterIP", svc["spec"]["clusterIP"])] if svc["spec"].get("clusterIP", "None") != "None" else []
    pods = json.loads(kubectl(admin, "get", "pods", "-n", ns, "-l", f"kubeforge.dev/serving-name={name}",
                              "-o", "json"))["items"]
    return out + [(f"pod {p['metadata']['name']}", p["status"]["podIP"]) for p in pods
                  if p.get("status", {}).get("podIP") and p["status"].get("phase") == "Running"]


def infer(host: str, model: str, rows: list[list[float]], timeout: float = 5) -> list[int]:
    """One Open Inference Protocol request; the predicted class of each row."""
    body = InferenceRequest(inputs=[RequestInput(name="input", shape=[len(rows), len(rows[0])],
                                                 datatype=Datatype.FP32, data=[v for r in rows for v in r])])
    req = urllib.request.Request(f"http://{host}:{SERVER_PORT}{PATH_INFER.format(name=model)}", body.dump_json(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out = InferenceResponse.model_validate_json(r.read()).outputs[0]
    width = out.shape[-1]
    return [argmax(out.data[i * width:(i + 1) * width]) for i in range(len(rows))]


def argmax(values: list[Any]) -> int:
    return max(range(len(values)), key=values.__getitem__)


# Sentences for the text-classifier sample, and the label each should get (its script's words).
TEXTS = [("the movie was lovely and the day so warm", "positive"), ("this food felt awful and quite cold", "negative"),
         ("a superb song and a happy room", "positive"), ("the service was rude and the room so grim", "negative")]


def metadata(host: str, model: str, timeout: float = 2) -> Obj:
    with urllib.request.urlopen(f"http://{host}:{SERVER_PORT}/v2/models/{model}", timeout=timeout) as r:
        return dict(json.loads(r.read()))


def classify(host: str, model: str, text: str) -> str:
    """One text through a Hugging Face classifier: its label."""
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}],
            "outputs": [{"name": "label"}]}
    req = urllib.request.Request(f"http://{host}:{SERVER_PORT}{PATH_INFER.format(name=model)}",
                                 json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return str(json.loads(r.read())["outputs"][0]["data"][0])


# Questions for a language model (the fine-tune sample's kind of conversation).
QUESTIONS = ["what colour is it? ada trains the red kettle near the river.",
             "which thing? bo paints the green lantern near the garden.",
             "what colour is it? cy fixes the blue engine near the model."]


def is_language_model(host: str, model: str) -> bool:
    """Whether the server answers the OpenAI routes for `model` (a causal language model)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{SERVER_PORT}/v1/models/{model}", timeout=2):
            return True
    except urllib.error.HTTPError:
        return False


def chat(host: str, model: str, question: str, stream: bool) -> str:
    """One greedy chat completion's text, whole or concatenated from its server-sent events."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 16,
            "temperature": 0, "stream": stream}
    req = urllib.request.Request(f"http://{host}:{SERVER_PORT}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        if not stream:
            return str(json.loads(r.read())["choices"][0]["message"]["content"])
        events = [line[6:] for line in r.read().decode().splitlines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def requests_for(host: str, name: str) -> tuple[str, list[tuple[Any, Any]], Any]:
    """(what the requests are, (input, expected answer) pairs, the function that answers one) for the model's kind."""
    if is_language_model(host, name):  # right: an answer, streamed the same as whole
        return "chat answers (streamed = whole)", [(q, True) for q in QUESTIONS], \
            lambda q: bool(whole := chat(host, name, q, False)) and chat(host, name, q, True) == whole
    if any(i["datatype"] == "BYTES" for i in metadata(host, name)["inputs"]):
        return "sentences", list(TEXTS), lambda text: classify(host, name, text)
    from kubeforge_trainer.data import digits

    data = digits()
    pairs = list(zip(data.x_eval[:REQUESTS].tolist(), data.y_eval[:REQUESTS].tolist(), strict=True))
    return "digits", pairs, lambda row: infer(host, name, [row])[0]


def send_requests(admin: Path, sj: Obj) -> bool:
    """A few requests of the kind the model takes through the first endpoint that answers."""
    name = sj["metadata"]["name"]
    for what, host in endpoints(admin, sj):
        try:
            kind, pairs, answer = requests_for(host, name)
        except (OSError, urllib.error.URLError):
            print(f"  {what} {host} does not answer here (no Service routing?); trying the next endpoint")
            continue
        times, right = [], 0
        for x, expected in pairs:
            t0 = time.perf_counter()
            right += answer(x) == expected
            times.append((time.perf_counter() - t0) * 1000)
        print(f"  {len(pairs)} requests to {what} ({host}:{SERVER_PORT}): {right}/{len(pairs)} {kind} right, "
              f"median latency {statistics.median(times):.1f} ms")
        return right > 0
    print("  no endpoint answered")
    return False
