"""`kubeforge run`: the same TrainingJob YAML as local processes, with the operator's rendering."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"
KUBEFORGE = str(Path(sys.executable).parent / "kubeforge")


def run(sample: str, runs: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBEFORGE, "run", str(SAMPLES / sample), "--runs-dir", str(runs), *extra],
                          capture_output=True, text=True, timeout=600)


def record(runs: Path) -> dict[str, object]:
    (path,) = list(runs.glob("*/run.json"))
    return dict(json.loads(path.read_text()))


def test_recipe_job_runs_locally_with_progress_checkpoints_and_artifact(tmp_path: Path) -> None:
    out = run("trainingjob-digits-ddp.yaml", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "100.0% step 176/176" in out.stdout  # the progress line of the last tenth
    rec = record(tmp_path)
    assert rec["state"] == "Succeeded" and rec["restartCount"] == 0
    storage = Path(str(rec["storage"]))
    card = json.loads((storage / "artifact" / "model-card.json").read_text())
    assert card["metrics"]["accuracy"] >= 0.9 and card["lineage"]["uid"] == rec["uid"]
    assert list((storage / "checkpoints").glob("step-*"))
    assert (storage / "metrics.jsonl").exists()


def test_command_job_sees_loopback_wiring_and_bad_files_are_refused(tmp_path: Path) -> None:
    out = run("trainingjob-env-check.yaml", tmp_path / "ok")
    assert out.returncode == 0, out.stdout + out.stderr
    logs = Path(str(record(tmp_path / "ok")["logs"]))
    fields = dict(kv.split("=", 1) for kv in (logs / "env-check-node-2.log").read_text().split())
    assert fields["PET_MASTER_ADDR"] == "127.0.0.1" and fields["PET_NODE_RANK"] == "2"
    bad = tmp_path / "bad.yaml"
    bad.write_text((SAMPLES / "trainingjob-env-check.yaml").read_text().replace("nodes: 3", "nodes: -3"))
    out = run(str(bad), tmp_path / "bad")
    assert out.returncode != 0 and "nodes" in out.stderr


def job_file(tmp: Path, script: str, run_policy: str = "{}") -> Path:
    path = tmp / "job.yaml"
    path.write_text(f"""apiVersion: kubeforge.dev/v1alpha1
kind: TrainingJob
metadata: {{name: table}}
spec:
  nodes: 2
  command: [python, -c, {json.dumps(script)}]
  runPolicy: {run_policy}
""")
    return path


ATTEMPT_CODE = ("import os, sys; codes = {codes}; "
                "sys.exit(codes[min(int(os.environ['KUBEFORGE_ATTEMPT']), len(codes) - 1)])")


@pytest.mark.parametrize(("codes", "policy", "state", "reason", "restarts"), [
    ([200, 0], "{}", "Succeeded", "Completed", 1),  # retryable, then fine: one gang restart
    ([1], "{}", "Failed", "ExitCode", 0),  # the program failed: never retried
    ([78], "{}", "Failed", "ExitCode", 0),  # invalid configuration: never retried
    ([137], "{backoffLimit: 1}", "Failed", "BackoffLimitExceeded", 1),  # killed by a signal, each attempt
])
def test_local_restarts_follow_the_operators_policy(tmp_path: Path, codes: list[int], policy: str, state: str,
                                                    reason: str, restarts: int) -> None:
    script = ATTEMPT_CODE.format(codes=codes)
    out = subprocess.run([KUBEFORGE, "run", str(job_file(tmp_path, script, policy)), "--runs-dir", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    rec = record(tmp_path / "r")
    status = dict(rec["status"])  # type: ignore[arg-type]
    assert (rec["state"], status["reason"], status["restartCount"]) == (state, reason, restarts), out.stderr
    assert out.returncode == (0 if state == "Succeeded" else 1)
    if state == "Failed":
        assert status["lastFailure"]["exitCode"] == codes[-1] and "Traceback" not in out.stderr
        assert out.stderr.strip().splitlines()[-1].startswith("kubeforge: table Failed")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_every_process_and_records_interrupted(tmp_path: Path, sig: signal.Signals) -> None:
    script = "import time; print('kubeforge: training', flush=True); time.sleep(300)"  # outlives any signal delay
    proc = subprocess.Popen([KUBEFORGE, "run", str(job_file(tmp_path, script)), "--runs-dir", str(tmp_path / "r")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120

    def training() -> bool:  # both ranks say so in their logs once they run (no fixed sleep: a busy machine varies)
        logs = list((tmp_path / "r").glob("*/logs/*.log"))
        return len(logs) == 2 and all("kubeforge: training" in log.read_text(errors="replace") for log in logs)

    while not training() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and err.strip().splitlines() == [err.strip().splitlines()[-1]]
    assert "interrupted" in err
    rec = record(tmp_path / "r")
    assert rec["state"] == "Interrupted"
    storage = str(rec["storage"]).encode()
    survivors = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if storage in environ.read_bytes():
                survivors.append(environ.parent.name)
        except OSError:
            continue
    assert not survivors, f"processes of the run survived Ctrl-C: {survivors}"


def test_local_run_compresses_after_training_like_the_operator(tmp_path: Path) -> None:
    out = run("servingjob-digits.yaml", tmp_path)  # the TrainingJob of the file; the ServingJob needs a cluster
    assert out.returncode == 0, out.stdout + out.stderr
    rec = record(tmp_path)
    status = dict(rec["status"])  # type: ignore[arg-type]
    compressed = next(c for c in status["conditions"] if c["type"] == "Compressed")
    assert compressed["status"] == "True", status
    storage = Path(str(rec["storage"]))
    published = storage / status["compression"]["artifact"]["uri"].split("/runs/digits-small/", 1)[1]
    card = json.loads((published / "model-card.json").read_text())
    assert card["weights"]["digest"] == status["compression"]["artifact"]["digest"]
    assert (storage / "compressed" / "report.json").exists() and (storage / "artifact" / "model.safetensors").exists()
    report = json.loads((storage / "compressed" / "report.json").read_text())  # the status summarizes it
    [cand], [full] = status["compression"]["candidates"], report["candidates"]
    assert status["compression"]["baseline"] == {k: report["baseline"][k] for k in ("metric", "sizeBytes", "latencyMs")}
    assert (cand["method"], cand["verdict"], cand["speedup"], cand["drop"]) == (
        full["method"], "accepted", full["speedup"], full["drop"])
    assert cand["parameters"] == {k: str(v) for k, v in full["parameters"].items()} and cand["parameters"]


def test_a_candidate_over_budget_is_rejected_and_training_results_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("""apiVersion: kubeforge.dev/v1alpha1
kind: TrainingJob
metadata: {name: tight}
spec:
  recipe: {model: mlp, dataset: digits, epochs: 3}
  storage: {persistentVolumeClaim: {claimName: local}}
  compression:
    methods: [{distill: {student: {depth: 1, width: 4}, steps: 1}}]
    accuracyBudget: {maxDrop: 0.001}
""")
    out = subprocess.run([KUBEFORGE, "run", str(path), "--runs-dir", str(tmp_path / "r")], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    status = dict(record(tmp_path / "r")["status"])  # type: ignore[arg-type]
    compressed = next(c for c in status["conditions"] if c["type"] == "Compressed")
    assert (status["state"], compressed["status"], compressed["reason"]) == ("Succeeded", "False",
                                                                             "AccuracyBudgetExceeded")
    assert status["artifact"]["digest"].startswith("sha256:") and "artifact" not in status["compression"]


def test_the_trainers_own_reason_and_exit_code_reach_the_user(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("""apiVersion: kubeforge.dev/v1alpha1
kind: TrainingJob
metadata: {name: nodata}
spec:
  nodes: 2
  recipe: {model: gpt, dataset: file, datasetPath: corpus/missing.txt}
""")
    out = subprocess.run([KUBEFORGE, "run", str(path), "--runs-dir", str(tmp_path / "r")], capture_output=True,
                         text=True, timeout=300)
    status = dict(record(tmp_path / "r")["status"])  # type: ignore[arg-type]
    assert out.returncode == 1 and status["reason"] == "ExitCode" and status["restartCount"] == 0
    assert status["lastFailure"]["exitCode"] == 78  # carried through torchrun: a configuration error
    assert "does not exist" in status["lastFailure"]["message"] and "ChildFailedError" not in out.stderr
    assert "does not exist" in out.stderr.splitlines()[-1]
