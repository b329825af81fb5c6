"""`kubeforge run` details a new user meets: the progress bar on a terminal when `maxSteps` cuts the
epochs, the final progress in run.json, a whole `lastFailure`, camelCase records, `(1 local
process)`, the log folder of a successful command job, `--version` and help on every argument."""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubeforge_cli.main import main, parser

KUBEFORGE = str(Path(sys.executable).parent / "kubeforge")


def job_file(tmp: Path, spec: str, name: str = "one") -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(f"apiVersion: kubeforge.dev/v1alpha1\nkind: TrainingJob\nmetadata: {{name: {name}}}\n"
                    f"spec:\n{spec}")
    return path


def record(runs: Path) -> dict[str, Any]:
    (path,) = list(runs.glob("*/run.json"))
    return dict(json.loads(path.read_text()))


def keys(node: Any) -> list[str]:
    """Every key of a JSON document, nested ones too."""
    if isinstance(node, dict):
        return [k for k, v in node.items() for k in [k, *keys(v)]]
    return [k for v in node for k in keys(v)] if isinstance(node, list) else []


def on_a_terminal(argv: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal as stdout and stderr; (exit code, everything it wrote)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL,
                            env={**os.environ, "COLUMNS": "160", "TERM": "xterm"})
    os.close(follower)
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([leader], [], [], 0.5)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: every writer exited
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=30), out.decode(errors="replace")


def test_max_steps_shows_the_bar_on_a_terminal_and_run_json_keeps_the_final_progress(tmp_path: Path) -> None:
    path = job_file(tmp_path, "  recipe: {model: mlp, dataset: digits, epochs: 500, maxSteps: 30}\n")
    code, out = on_a_terminal([KUBEFORGE, "run", str(path), "--runs-dir", str(tmp_path / "r")])
    assert code == 0, out
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)  # the bar redraws with terminal escapes
    assert re.search(r"training .*100% step 30 loss", plain), plain
    progress = record(tmp_path / "r")["status"]["progress"]
    assert (progress["step"], progress["totalSteps"], progress["percent"]) == (30, 30, "100.0%")
    assert "loss" in progress and {"accuracy", "evalLoss"} <= set(progress["eval"])


def test_a_failure_is_recorded_whole_in_camel_case_and_said_on_one_line(tmp_path: Path) -> None:
    script = "import sys; print('bad input: x', file=sys.stderr); sys.exit(3)"
    path = job_file(tmp_path, f"  command: [python, -c, {json.dumps(script)}]\n")
    out = subprocess.run([KUBEFORGE, "run", str(path), "--runs-dir", str(tmp_path / "r")], capture_output=True,
                         text=True, timeout=120)
    rec = record(tmp_path / "r")
    failure = rec["status"]["lastFailure"]
    assert out.returncode == 1 and rec["state"] == "Failed"
    assert {k: failure[k] for k in ("pod", "container", "exitCode", "reason", "message")} == {
        "pod": "one-node-0", "container": "trainer", "exitCode": 3, "reason": "Error", "message": "bad input: x"}
    assert [k for k in keys(rec) if "_" in k] == []  # run.json and status: one spelling, camelCase
    warning = [line for line in out.stdout.splitlines() if line.startswith("kubeforge: ExitCode:")]
    assert warning == ["kubeforge: ExitCode: pod one-node-0 container trainer exited with code 3 (Error): "
                       "bad input: x"]  # one line, not wrapped at 80 columns


def test_a_one_process_command_job_says_process_and_prints_its_log_folder(tmp_path: Path) -> None:
    path = job_file(tmp_path, "  command: [python, -c, \"print('hello')\"]\n")
    out = subprocess.run([KUBEFORGE, "run", str(path), "--runs-dir", str(tmp_path / "r")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("kubeforge: running one (1 local process); record: ")
    logs = Path(record(tmp_path / "r")["logs"])
    assert lines[-1] == f"kubeforge: one Succeeded; logs {logs}" and (logs / "one-node-0.log").read_text() == "hello\n"


def test_version_and_help_on_every_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and re.fullmatch(r"kubeforge \S+\n", capsys.readouterr().out)
    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    run = commands.choices["run"]
    assert all(a.help for a in run._actions), [a.dest for a in run._actions if not a.help]
