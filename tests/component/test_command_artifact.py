"""The command wrapper: what a user's script saves to $KUBEFORGE_OUTPUT_DIR becomes the artifact in
the termination message (format, digest, size); nothing saved is no artifact; an empty or
unrecognisable directory fails with exit code 78 and one line; the child's exit code and signals
pass through."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kubeforge_api.contracts import parse_result
from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG
from kubeforge_api.storage import ModelFormat
from kubeforge_trainer.formats.identity import identify

SAVE_HF = """
import os, transformers
config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, num_labels=2)
transformers.BertForSequenceClassification(config).save_pretrained(os.environ["KUBEFORGE_OUTPUT_DIR"])
"""


def run(tmp: Path, script: str, output: bool = True) -> tuple[subprocess.CompletedProcess[str], Path]:
    log = tmp / "termination-log"
    env = {**os.environ, "KUBEFORGE_TERMINATION_LOG": str(log)}
    if output:
        env["KUBEFORGE_OUTPUT_DIR"] = str(tmp / "artifact")
    done = subprocess.run([sys.executable, "-m", "kubeforge_trainer.command", "--", sys.executable, "-c", script],
                          env=env, capture_output=True, text=True, timeout=120)
    return done, log


def test_a_saved_hugging_face_model_is_the_artifact(tmp_path: Path) -> None:
    done, log = run(tmp_path, SAVE_HF)
    assert done.returncode == 0, done.stderr
    result = parse_result(log.read_text())
    assert result is not None and result.artifact is not None
    expected = identify(tmp_path / "artifact")
    assert result.artifact.format == ModelFormat.HF_TRANSFORMERS and result.artifact.path == "artifact"
    assert (result.artifact.digest, result.artifact.size_bytes) == (expected.digest, expected.size_bytes)


def test_the_scripts_own_progress_is_kept_beside_the_artifact(tmp_path: Path) -> None:
    progress = json.dumps({"progress": {"step": 7, "totalSteps": 7, "phase": "finished"}})
    script = SAVE_HF + f"open(os.environ['KUBEFORGE_TERMINATION_LOG'], 'w').write({progress!r})\n"
    done, log = run(tmp_path, script)
    assert done.returncode == 0, done.stderr
    result = parse_result(log.read_text())
    assert result is not None and result.progress is not None and result.progress.step == 7
    assert result.artifact is not None


def test_nothing_saved_is_no_artifact_and_no_pod_output_outside_rank_0(tmp_path: Path) -> None:
    done, log = run(tmp_path, "print('trained, saved nothing')")
    assert done.returncode == 0 and not log.exists()
    done, log = run(tmp_path, "import os; assert 'KUBEFORGE_OUTPUT_DIR' not in os.environ", output=False)
    assert done.returncode == 0 and not log.exists()


def test_an_empty_or_unknown_output_directory_fails_with_one_line(tmp_path: Path) -> None:
    done, log = run(tmp_path, "import os; os.makedirs(os.environ['KUBEFORGE_OUTPUT_DIR'])")
    assert done.returncode == EXIT_INVALID_CONFIG
    assert log.read_text() == "$KUBEFORGE_OUTPUT_DIR (artifact/) is empty: save the model there, or do not create " \
                              "the directory"
    done, log = run(tmp_path, "import os; open(os.environ['KUBEFORGE_OUTPUT_DIR'] + '/weights.bin', 'w').write('x')")
    assert done.returncode == EXIT_INVALID_CONFIG
    line = log.read_text()
    assert "\n" not in line and "not a model directory" in line and str(tmp_path) not in line


def test_exit_codes_and_signals_pass_through(tmp_path: Path) -> None:
    done, _ = run(tmp_path, "raise SystemExit(3)")
    assert done.returncode == 3
    marker = tmp_path / "got-sigterm"
    script = (f"import signal, time, pathlib\nsignal.signal(signal.SIGTERM, lambda *a: "
              f"(pathlib.Path({str(marker)!r}).write_text('x'), exit(143)))\nprint('ready', flush=True)\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-m", "kubeforge_trainer.command", "--", sys.executable, "-c", script],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143 and marker.exists() and time.monotonic() - t0 < 20
