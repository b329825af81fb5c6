"""Serving benchmark, side by side and interleaved on this machine (method: the shared research notes
on model serving). Every server runs pinned to core 0 with one torch thread; the load generator
(wrk, one thread) runs pinned to core 1.

Servers, all serving the same artifact (MLP 256-2048-2048-10, one 256-float row per request, JSON):
- naive: Starlette on uvicorn running the model inside each handler (bench/serve/naive_server.py);
  its `/v2/health/live` is the bare-Starlette no-op;
- ours: `python -m kubeforge_server` (opportunistic batching), and the same with the int8 model;
- kserve: KServe's own Python model server (`kserve.ModelServer`), when it can be installed in its
  own environment (`.bench/kserve-venv`, see bench/serve/kserve_server.py).

Before timing, each server answers concurrent distinct inputs and every answer is compared with the
model in-process. Then `--rounds` rounds, each measuring every (server, concurrency) point once in
a rotated order. Writes bench/results/serve.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kubeforge_operator.ports import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench.serve.*
from bench.serve.serve_model import load, write

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "bench" / "serve"
KSERVE_PY = REPO / ".bench" / "kserve-venv" / "bin" / "python"
SERVER_CORE, LOAD_CORE = "0", "1"
Obj = dict[str, Any]

WRK_SCRIPT = """
wrk.method = "{method}"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format('\\nRESULT {{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"non2xx": %d, "errors": %d}}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), summary.errors.status, summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
end
"""


@dataclass
class Target:
    name: str
    port: int
    infer_path: str
    proc: subprocess.Popen[bytes]


def start(name: str, cmd: list[str], env: dict[str, str], port: int, model: str) -> Target:
    full = ["taskset", "-c", SERVER_CORE, *cmd]
    base = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO / "operator"), str(REPO / "trainer_image"), os.environ.get("PYTHONPATH", "")])}
    log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server) a file, not a pipe: never blocks
    proc = subprocess.Popen(full, env={**base, **env}, stdout=log, stderr=subprocess.STDOUT)
    target = Target(name, port, f"/v2/models/{model}/infer", proc)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{name} exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200 and (name != "kserve" or _model_ready(port, model)):
                    return target
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready")


def _model_ready(port: int, model: str) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{model}/ready", timeout=2) as r:
        return bool(r.status == 200)


def body_for(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()


def post(port: int, path: str, body: bytes) -> Obj:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return dict(json.loads(r.read()))


def verify(target: Target, model: torch.nn.Module, tolerance: float, n: int = 64) -> float:
    """Concurrent distinct inputs; the largest deviation of any answer from the in-process model."""
    xs = [np.random.default_rng(i).random((1, 256), dtype=np.float32) for i in range(n)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda x: post(target.port, target.infer_path, body_for(x)), xs))
    worst = 0.0
    for x, a in zip(xs, answers, strict=True):
        got = np.array(a["outputs"][0]["data"], dtype=np.float32)
        with torch.inference_mode():
            want = model(torch.from_numpy(x)).numpy().reshape(-1)
        worst = max(worst, float(np.abs(got - want).max()))
    if worst > tolerance:
        raise AssertionError(f"{target.name}: answers differ from the model in-process by {worst}")
    return worst


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its descendants so far."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir() for c in (t / "children").read_text().split()]
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measure(t: Target, path: str, conc: int, seconds: float, body: bytes | None) -> Obj:
    """wrk against a target, plus requests per CPU-second the server used: on a shared machine a
    server's CPU share varies with its thread count and the neighbours, its work per request does not."""
    before = cpu_seconds(t.proc.pid)
    r = wrk(t.port, path, conc, seconds, body)
    cpu = cpu_seconds(t.proc.pid) - before
    return {**r, "cpu_s": cpu, "per_cpu_s": r["requests"] / cpu if cpu > 0 else 0.0}


def wrk(port: int, path: str, conc: int, seconds: float, body: bytes | None) -> Obj:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT.format(method="POST" if body else "GET", body=(body or b"").decode()))
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conc}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
           "-s", f.name, f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    os.unlink(f.name)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")
    r = json.loads(line[len("RESULT "):])
    if r["non2xx"] or r["errors"]:
        raise RuntimeError(f"wrk saw {r['non2xx']} non-2xx answers and {r['errors']} socket errors on {path}")
    return {"requests": r["requests"], "rps": r["requests"] / (r["duration_us"] / 1e6), "p50_ms": r["p50_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000}


def launch_all(model_dir: Path, kserve: bool) -> dict[str, Target]:
    py = sys.executable
    ours_env = {"KUBEFORGE_MODEL_DIR": str(model_dir), "KUBEFORGE_MODEL_NAME": "mlp", "KUBEFORGE_SERVER_HOST":
                "127.0.0.1", "KUBEFORGE_TORCH_THREADS": "1", "KUBEFORGE_MAX_BATCH_SIZE": "64"}
    plan: list[tuple[str, list[str], dict[str, str]]] = [
        ("naive", [py, str(HERE / "naive_server.py"), str(model_dir)], {}),
        ("ours", [py, "-m", "kubeforge_server"], ours_env),
        ("ours_int8", [py, str(HERE / "ours_int8.py")], ours_env),
    ]
    if kserve:
        plan.append(("kserve", [str(KSERVE_PY), str(HERE / "kserve_server.py"), str(model_dir)], {}))
    targets = {}
    for name, cmd, env in plan:
        port = free_port()
        if name in ("naive", "kserve"):
            cmd = [*cmd, str(port)]
        targets[name] = start(name, cmd, {**env, "KUBEFORGE_SERVER_PORT": str(port)}, port, "mlp")
    return targets


POINTS: list[tuple[str, int | str]] = [
    ("naive", 1), ("ours", 1), ("naive", 32), ("ours", 32), ("ours_int8", 32), ("ours_int8", 1), ("kserve", 1),
    ("kserve", 32), ("naive", "noop"), ("ours", "noop")]


def one_round(targets: dict[str, Target], body: bytes, seconds: float, shift: int) -> dict[str, Obj]:
    points = [p for p in POINTS if p[0] in targets]
    points = points[shift % len(points):] + points[:shift % len(points)]
    out: dict[str, Obj] = {}
    for name, conc in points:
        t = targets[name]
        if conc == "noop":
            out[f"{name}_noop"] = measure(t, "/v2/health/live", 32, seconds, None)
        else:
            out[f"{name}_c{conc}"] = measure(t, t.infer_path, int(conc), seconds, body)
    return out


def spread(values: list[float]) -> Obj:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


def summarize(rounds: list[dict[str, Obj]]) -> Obj:
    def ratio(a: str, b: str, key: str = "rps") -> Obj:
        return spread([r[a][key] / r[b][key] for r in rounds])

    def raw(point: str) -> Obj:
        return {k: spread([r[point][k] for r in rounds]) for k in ("rps", "p50_ms", "p99_ms", "per_cpu_s")}

    res: Obj = {
        "points": {p: raw(p) for p in rounds[0]},
        "throughput_c32_vs_naive": ratio("ours_c32", "naive_c32"),
        "p99_c32_vs_naive": ratio("ours_c32", "naive_c32", "p99_ms"),
        "p50_c1_vs_naive": ratio("ours_c1", "naive_c1", "p50_ms"),
        "int8_throughput_c32_vs_naive_fp32": ratio("ours_int8_c32", "naive_c32"),
        "noop_vs_starlette": ratio("ours_noop", "naive_noop"),
        "per_cpu_throughput_c32_vs_naive": ratio("ours_c32", "naive_c32", "per_cpu_s"),
        "per_cpu_int8_throughput_c32_vs_naive_fp32": ratio("ours_int8_c32", "naive_c32", "per_cpu_s"),
        "per_cpu_noop_vs_starlette": ratio("ours_noop", "naive_noop", "per_cpu_s"),
    }
    if "kserve_c1" in rounds[0]:
        for c in (1, 32):
            res[f"kserve_throughput_c{c}"] = ratio(f"ours_c{c}", f"kserve_c{c}")
            res[f"per_cpu_kserve_throughput_c{c}"] = ratio(f"ours_c{c}", f"kserve_c{c}", "per_cpu_s")
            res[f"kserve_p50_c{c}"] = ratio(f"ours_c{c}", f"kserve_c{c}", "p50_ms")
            res[f"kserve_p99_c{c}"] = ratio(f"ours_c{c}", f"kserve_c{c}", "p99_ms")
    return res


def kserve_status() -> tuple[bool, str]:
    if not KSERVE_PY.exists():
        return False, "KServe's environment (.bench/kserve-venv) is missing; see bench/serve/kserve_server.py"
    out = subprocess.run([str(KSERVE_PY), "-c", "import importlib.metadata as m, kserve; print(m.version('kserve'))"],
                         capture_output=True, text=True)
    if out.returncode:
        return False, f"kserve does not import: {out.stderr.strip().splitlines()[-1:]}"
    return True, f"kserve {out.stdout.strip()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install -y wrk)")
    kserve, kserve_note = kserve_status()
    work = Path(tempfile.mkdtemp(prefix="kf-bench-serve-"))
    model_dir = write(work / "artifact")
    targets = launch_all(model_dir, kserve)
    try:
        fp32, int8 = load(model_dir), load(model_dir, int8=True)
        # dynamic int8 quantizes activations with a scale per batch, so batched answers differ slightly
        checked = {name: verify(t, *((int8, 2e-2) if name == "ours_int8" else (fp32, 1e-4)))
                   for name, t in targets.items()}
        body = body_for(np.random.default_rng(0).random((1, 256), dtype=np.float32))
        for t in targets.values():  # warm-up
            wrk(t.port, t.infer_path, 32, 1.0, body)
        rounds = [one_round(targets, body, args.seconds, i) for i in range(args.rounds)]
    finally:
        for t in targets.values():
            t.proc.terminate()
            t.proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    result = {"machine": f"{os.cpu_count()}-core CPU, server on core {SERVER_CORE}, wrk on core {LOAD_CORE}, "
                         f"torch {torch.__version__}, 1 torch thread", "python": platform.python_version(),
              "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "model": "MLP 256-2048-2048-10, one 256-float row per request (JSON)", "seconds_per_point":
              args.seconds, "kserve": kserve_note, "max_answer_deviation": checked, **summarize(rounds),
              "rounds": rounds}
    out = REPO / "bench" / "results" / "serve.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("rounds", "points")}, indent=2))


if __name__ == "__main__":
    main()
