"""`python -m kubeforge_trainer train`: the entry point torchrun starts in every training pod;
`python -m kubeforge_trainer compress`: the compression pod (see compress/entry.py).
Exit codes follow the operator's table: 0 done, 78 invalid config or data (never retried)."""

from __future__ import annotations

import json
import sys

from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG

from .checkpoint import CheckpointError
from .context import ConfigError, JobContext
from .progress import ProgressReporter


def train() -> int:
    from kubeforge_api.trainingjob import Strategy

    from .train.common import init_world, threads_for

    try:
        ctx = JobContext.from_env()
    except ConfigError as e:
        print(f"kubeforge-trainer: {e}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    world = init_world(ctx.backend)
    threads_for(world)
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
    return 0


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "compress":
        from .compress.entry import main as compress

        return compress(sys.argv[2:])
    if len(sys.argv) < 2 or sys.argv[1] != "train":
        print("usage: python -m kubeforge_trainer train|compress   (run inside a TrainingJob pod)", file=sys.stderr)
        return 2
    return train()


if __name__ == "__main__":
    sys.exit(main())
