"""Checkpoint, then stop, when the pod is told to go. A SIGTERM (a Kueue preemption, a suspend, a
drain, torchrun stopping its workers for an elastic resize) becomes a request the training loop
honours at a step boundary, so the work since the last periodic checkpoint is not lost.

The ranks must stop at the same step (a checkpoint is collective for sharded models), so they agree
with one one-element all-reduce started after each step and read after the next: it overlaps a
step and costs no wait. Every rank then checkpoints that step and the process leaves with 143
(128 + SIGTERM). A rank that does not reach an agreement within `STOP_WAIT_S` (stuck in a collective
with a peer that is gone) exits at once with the same code, as SIGTERM's default would have, so a
gang restart never waits out the pod's grace period for it; nothing is written then."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from .common import World

STOPPED_EXIT_CODE = 128 + signal.SIGTERM
STOP_WAIT_S = 10.0  # from SIGTERM to the ranks' agreement; longer means a rank is stuck: leave without a checkpoint


class Stopped(Exception):
    """Raised by a training loop after it checkpointed the step at which its ranks agreed to stop."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step} on SIGTERM, after checkpointing it")
        self.step = step


class StopRequest:
    """SIGTERM sets the request; `agreed()`, called by every rank once per step, says when all stop."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.requested = False
        self.flag = torch.zeros(1)
        self.pending: Any = None
        self.deadline: threading.Timer | None = None
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            self.requested = True
            self.deadline = threading.Timer(STOP_WAIT_S, os._exit, (STOPPED_EXIT_CODE,))
            self.deadline.daemon = True
            self.deadline.start()

    def _agree(self) -> bool:
        """All ranks stop here: the checkpoint that follows may take as long as the grace period allows."""
        if self.deadline is not None:
            self.deadline.cancel()
        return True

    def agreed(self) -> bool:
        """Whether every rank stops after this step (the same answer on every rank)."""
        if self.world.size == 1:
            return self.requested and self._agree()
        if self.pending is not None:
            self.pending.wait()
            self.pending = None
            if self.flag.item() > 0:
                return self._agree()
        self.flag = torch.tensor([1.0 if self.requested else 0.0])
        self.pending = dist.all_reduce(self.flag, op=dist.ReduceOp.MAX, async_op=True)
        return False

    def settle(self) -> None:
        """Wait for the last agreement in flight (before the loop's ranks go on to other collectives)."""
        if self.pending is not None:
            self.pending.wait()
            self.pending = None
