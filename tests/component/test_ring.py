"""The ring all-gather and reduce-scatter that FSDP uses on gloo agree with gloo's collectives on
2 and 3 ranks (the trainer tests cover 2 ranks end to end; 3 takes the longer ring)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ring_worker.py")
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


@pytest.mark.parametrize("ranks", [2, 3])
def test_rings_match_gloo_collectives(ranks: int) -> None:
    out = subprocess.run([TORCHRUN, "--standalone", f"--nproc-per-node={ranks}", str(WORKER)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert out.stdout.count("ring ok") == ranks
