"""`make demo` tells the whole story on a cluster of its own: every sample trained, the digits model
compressed within its budget, served, and answering real inference requests; the text classifier a
command job's script saved served from its claim and from the object store it was published to; a
LoRA fine-tune of a base model another job made, with its perplexity before and after."""

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
    for job in ("digits", "digits-small", "env-check", "allreduce", "text-classifier", "llm-base", "chat-lora"):
        assert f"tj/{job}: Succeeded (Completed)" in story, story
    published = r"compressed \(quantize-dynamic\): accuracy 0\.\d+ -> 0\.\d+, [\d.]+x faster at batch 1"
    assert re.search(published, story), story  # a faster model or none: never a slower one
    assert "sj/digits-serving: Ready=True (ModelLoaded); url http://digits-serving.default.svc.cluster.local" in story
    right = re.search(r"(\d)/8 digits right", story)
    assert right and int(right.group(1)) >= 6, story
    for name in ("text-classifier-serving", "text-classifier-s3"):
        assert f"sj/{name}: Ready=True (ModelLoaded)" in story, story
    assert len(re.findall(r"4/4 sentences right", story)) == 2, story
    assert re.search(r"tj/chat-lora: Succeeded \(Completed\); eval perplexity [\d.]+ -> [\d.]+, [\d.]+% of the "
                     r"weights trained", story), story
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+$", story, re.MULTILINE), story
    assert len(story.splitlines()) < 70, story  # short: state changes, not every poll
