"""Teardown never aborts: many short 2-rank gloo runs (DDP and FSDP) that end the way the trainer
ends, each rank a full interpreter; every rank must finish its work and exit 0, and C++ must never
report a terminate. A finished rank that died with SIGABRT (exit 134) would be read by the operator
as a retryable failure and restart a gang that had already finished."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("teardown_worker.py")
RUNS_PER_STRATEGY = 15  # x2 strategies: 30 runs, 60 rank exits


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_many_short_runs_all_exit_zero(strategy: str) -> None:
    out = subprocess.run([sys.executable, str(WORKER), strategy, str(RUNS_PER_STRATEGY)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    exits = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"run"')]
    assert len(exits) == 2 * RUNS_PER_STRATEGY
    bad = [e for e in exits if e["exit"] != 0 or '"finished": true' not in e["output"]
           or "terminate called" in e["output"] or "Fatal Python error" in e["output"]]
    assert not bad, "\n".join(f"run {e['run']} rank {e['rank']}: exit {e['exit']}\n{e['output']}" for e in bad)
