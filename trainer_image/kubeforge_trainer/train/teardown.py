"""Ending a training process so that a finished rank always exits with the code it chose.

Why a finished gloo rank could die with SIGABRT (seen as "terminate called without an active
exception" after rank 0 had printed its result): gloo runs each collective on a worker thread of
the process group, and that thread drops its reference to the finished work (and so to the tensors
of that collective) only after it has woken the caller. If the main thread meanwhile returns and
the interpreter starts finalizing, the worker's release of the last C++ reference to a tensor that
has a Python object must take the GIL; during finalization CPython ends such a thread with
`pthread_exit`, whose forced unwind crosses a `noexcept` destructor: `std::terminate`, SIGABRT.
`destroy_process_group()` alone does not prevent it: it only joins those worker threads when the
process group's last reference goes away, and DDP's reducer (and FSDP's state) keep theirs until
exit. The operator would read the SIGABRT (exit 134) as a retryable failure and restart a gang that
had finished.

So every rank ends the same way: `close_world` (a barrier, so no rank closes its connections while
a peer still has a collective in flight, then `destroy_process_group` while the interpreter is
fully alive), and the process leaves with `exit_now`, which flushes what we own and exits without
interpreter finalization (the one phase in which a worker thread's GIL request kills the process).
Artifacts, checkpoints and history files are written and closed before this point."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn

import torch.distributed as dist

from .common import World


def close_world(world: World) -> None:
    """Leave the process group together with the peers (call on the success path of every rank;
    on a failure path a peer may be gone and the barrier would wait for the timeout)."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_now(code: int) -> NoReturn:
    """Flush stdout, stderr and logging, then exit with `code`, skipping interpreter finalization."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe: nothing left to flush
            stream.flush()
    os._exit(code)
