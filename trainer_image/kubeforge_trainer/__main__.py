"""`python -m kubeforge_trainer train`: the entry point torchrun starts in every training pod (a recipe
or a fine-tune);
`python -m kubeforge_trainer compress`: the compression pod (see compress/entry.py).
Exit codes follow the operator's table: 0 done, 78 invalid config or data (never retried), 1 an
unexpected error. The process always leaves through `teardown.exit_now`, so a finished rank can
never turn into a SIGABRT at interpreter exit (see `train/teardown.py`)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import traceback
from typing import NoReturn

from kubeforge_api.constants import Env
from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG

from . import fencewatch
from .checkpoint import CheckpointError, fenced_out
from .context import ConfigError, JobContext
from .progress import ProgressReporter


def invalid(error: Exception) -> int:
    """A configuration or data error: one line on stderr and in the termination message (so
    `kubectl describe` and `kubeforge run` say why), and the exit code that is never retried."""
    line = f"kubeforge-trainer: {' '.join(str(error).split())}"[:1024]
    print(line, file=sys.stderr, flush=True)
    from .termination import termination_log

    with contextlib.suppress(OSError):
        path = termination_log()
        if path.exists() or Env.TERMINATION_LOG in os.environ:
            path.write_text(line)
    return EXIT_INVALID_CONFIG


def launch(argv: list[str]) -> int:
    """`python -m kubeforge_trainer launch`: torchrun (configured by the PET_* env) over `train`,
    in this process, exiting with the code of the first rank that failed rather than torchrun's 1,
    so a configuration error (78) stays permanent and a killed rank (128+N) stays retryable."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--module", "kubeforge_trainer", "train", *argv])
        return 0
    except ChildFailedError as e:
        first = min(e.failures.values(), key=lambda f: f.timestamp)
        return first.exitcode if first.exitcode > 0 else 128 - first.exitcode


def train() -> int:
    from kubeforge_api.trainingjob import Strategy

    from .train.common import init_world, threads_for
    from .train.stopping import STOPPED_EXIT_CODE, Stopped
    from .train.teardown import close_world

    try:
        ctx = JobContext.from_env()
    except ConfigError as e:
        return invalid(e)
    world = init_world(ctx.backend)
    fencewatch.enable()  # an attempt's processes stop once a newer attempt is recorded
    threads = threads_for()
    print(f"kubeforge-trainer: rank {world.rank}/{world.size}, {threads} intra-op threads", file=sys.stderr, flush=True)
    fenced = functools.partial(fenced_out, ctx.storage / "checkpoints")  # the history is fenced like checkpoints
    reporter = ProgressReporter(ctx.storage / "metrics.jsonl", ctx.progress_port, fenced) if world.is_main else None
    try:
        if ctx.spec.finetune is not None:
            from .finetune import train as run
        elif ctx.spec.strategy == Strategy.PIPELINE:
            from .train.pipeline import train as run
        elif ctx.spec.strategy == Strategy.PARAMETER_SERVER:
            from .train.parameter_server import train as run
        else:
            from .train.data_parallel import train as run
        result = run(ctx, world, reporter)
    except (ConfigError, CheckpointError) as e:
        return invalid(e)
    except Stopped as e:  # told to go (SIGTERM): the step it stopped at is checkpointed
        print(f"kubeforge-trainer: rank {world.rank} {e}", file=sys.stderr, flush=True)
        close_world(world)
        return STOPPED_EXIT_CODE
    finally:
        if reporter:
            reporter.close()
    if world.is_main:
        print(json.dumps({"result": result}), flush=True)
    close_world(world)
    return 0


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "launch":
        return launch(sys.argv[2:])
    if len(sys.argv) >= 2 and sys.argv[1] == "compress":
        from .compress.entry import main as compress

        return compress(sys.argv[2:])
    if len(sys.argv) < 2 or sys.argv[1] != "train":
        print("usage: python -m kubeforge_trainer launch|train|compress   (inside a TrainingJob pod)", file=sys.stderr)
        return 2
    return train()


def entry() -> NoReturn:
    """Run `main` and exit with its code (1 and a traceback for an unexpected exception)."""
    from .train.teardown import exit_now

    try:
        code = main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:  # any crash still leaves through exit_now, with its traceback
        traceback.print_exc()
        code = 1
    exit_now(code)


if __name__ == "__main__":
    entry()
