"""`make demo` tells the whole story on a cluster of its own: every sample trained, the digits model
compressed within its budget, served, and answering real inference requests."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.embedded("make demo starts an embedded cluster of its own")


def test_demo_runs_every_stage_to_done() -> None:
    samples = str(REPO / "manifests" / "samples")
    out = subprocess.run([sys.executable, "-m", "minicluster", "demo", "--samples", samples],
                         capture_output=True, text=True, timeout=1200, cwd=REPO)
    story = out.stdout
    assert out.returncode == 0, story + out.stderr
    for job in ("digits", "digits-small", "env-check", "allreduce"):
        assert f"tj/{job}: Succeeded (Completed)" in story, story
    published = r"compressed \(quantize-dynamic\): accuracy 0\.\d+ -> 0\.\d+, [\d.]+x faster at batch 1"
    assert re.search(published, story), story  # a faster model or none: never a slower one
    assert "sj/digits-serving: Ready=True (ModelLoaded); url http://digits-serving.default.svc.cluster.local" in story
    right = re.search(r"(\d)/8 digits right", story)
    assert right and int(right.group(1)) >= 6, story
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+$", story, re.MULTILINE), story
    assert len(story.splitlines()) < 40, story  # short: state changes, not every poll
