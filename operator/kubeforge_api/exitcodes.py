"""The one exit-code table: how a failed training container is treated. Shared by the operator
(gang restarts, backoffLimit) and the trainer (which exits with these codes on purpose)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

EXIT_INVALID_CONFIG: Final = 78  # sysexits EX_CONFIG: the recipe or data is wrong; never retried


class FailureClass(StrEnum):
    DISRUPTION = "disruption"  # eviction, preemption, node drain: retried, not counted
    RETRYABLE = "retryable"  # retried, counted against backoffLimit
    PERMANENT = "permanent"  # the job fails at once


def classify(exit_code: int, reason: str = "", disrupted: bool = False) -> FailureClass:
    """| exit code / signal                  | class      |
    | ----------------------------------- | ---------- |
    | pod has DisruptionTarget, or deleted | disruption |
    | reason OOMKilled                     | retryable  |
    | 128-255 (killed by a signal)         | retryable  |
    | 78 (invalid config or data)          | permanent  |
    | other 1-127 (the program failed)     | permanent  |
    Codes 1-127 mean the program itself failed, so a retry would fail again (Kubeflow's
    `restartPolicy: ExitCode` draws the same line)."""
    if disrupted:
        return FailureClass.DISRUPTION
    if reason == "OOMKilled" or exit_code >= 128:
        return FailureClass.RETRYABLE
    return FailureClass.PERMANENT
