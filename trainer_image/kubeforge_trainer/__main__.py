"""`python -m kubeforge_trainer train`: the entry point torchrun starts in every training pod;
`python -m kubeforge_trainer compress`: the compression pod (see compress/entry.py).
Exit codes follow the operator's table: 0 done, 78 invalid config or data (never retried), 1 an
unexpected error. The process always leaves through `teardown.exit_now`, so a finished rank can
never turn into a SIGABRT at interpreter exit (see `train/teardown.py`)."""

from __future__ import annotations

import json
import sys
import traceback
from typing import NoReturn

from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG

from .checkpoint import CheckpointError
from .context import ConfigError, JobContext
from .progress import ProgressReporter


def train() -> int:
    from kubeforge_api.trainingjob import Strategy

    from .train.common import init_world, threads_for
    from .train.teardown import close_world

    try:
        ctx = JobContext.from_env()
    except ConfigError as e:
        print(f"kubeforge-trainer: {e}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    world = init_world(ctx.backend)
    threads = threads_for()
    print(f"kubeforge-trainer: rank {world.rank}/{world.size}, {threads} intra-op threads", file=sys.stderr, flush=True)
    reporter = ProgressReporter(ctx.storage / "metrics.jsonl", ctx.progress_port) if world.is_main else None
    try:
        if ctx.spec.strategy == Strategy.PIPELINE:
            from .train.pipeline import train as run
        elif ctx.spec.strategy == Strategy.PARAMETER_SERVER:
            from .train.parameter_server import train as run
        else:
            from .train.data_parallel import train as run
        result = run(ctx, world, reporter)
    except (ConfigError, CheckpointError) as e:
        print(f"kubeforge-trainer: {e}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    finally:
        if reporter:
            reporter.close()
    if world.is_main:
        print(json.dumps({"result": result}), flush=True)
    close_world(world)
    return 0


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "compress":
        from .compress.entry import main as compress

        return compress(sys.argv[2:])
    if len(sys.argv) < 2 or sys.argv[1] != "train":
        print("usage: python -m kubeforge_trainer train|compress   (run inside a TrainingJob pod)", file=sys.stderr)
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
