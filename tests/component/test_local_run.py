"""`kubeforge run`: the same TrainingJob YAML as local processes, with the operator's rendering."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
