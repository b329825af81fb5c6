"""The cause of a failed container, read from its termination text: the exception line a user's
script raised, not torchrun's banner that ends the log (the sample is a real torchrun log tail)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubeforge_operator.causes import cause
from kubeforge_operator.observe import view

TORCHRUN_TAIL = (Path(__file__).parent / "data" / "torchrun-zerodivision.txt").read_text()


@pytest.mark.parametrize(("text", "expected"), [
    (TORCHRUN_TAIL, "ZeroDivisionError: division by zero"),
    ("python: can't open file '/job/train.py': [Errno 2] No such file or directory",
     "python: can't open file '/job/train.py': [Errno 2] No such file or directory"),
    ("[rank1]: Traceback (most recent call last):\n[rank1]:   File \"t.py\", line 3\n"
     "[rank1]: torch.OutOfMemoryError: CUDA out of memory", "torch.OutOfMemoryError: CUDA out of memory"),
    ("loss 0.3\nsaving\nexiting with 3", "exiting with 3"),
    ("=====\nRoot Cause (first observed failure):\n=====", ""),
], ids=["torchrun banner", "missing script", "rank prefixes", "no exception: last line", "banner only"])
def test_the_cause_is_the_line_that_says_why(text: str, expected: str) -> None:
    assert cause(text) == expected


def test_a_failed_pod_carries_the_cause_even_beyond_the_kept_tail_of_its_message() -> None:
    pod = {"metadata": {"name": "j-node-0", "labels": {}}, "status": {"phase": "Failed", "containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": TORCHRUN_TAIL}}}]}}
    failure = view(pod).failure
    assert failure is not None and "ZeroDivisionError" not in failure.message  # the banner alone fills 512 chars
    assert failure.cause == "ZeroDivisionError: division by zero"
