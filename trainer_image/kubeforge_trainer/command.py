"""`python -m kubeforge_trainer.command -- USER COMMAND...`: how a TrainingJob runs the user's own
command (with the operator's trainer image). It runs the command as a child (signals forwarded,
its exit code kept), and when it succeeds on the pod that has `$KUBEFORGE_OUTPUT_DIR` (node rank
0), records what the script saved there in the termination message, as a recipe's artifact is
recorded: format, digest and size. A script that saved nothing (the directory does not exist)
succeeds without an artifact; a directory that exists but holds no loadable model fails the pod
with exit code 78 (a permanent failure) and one line saying why."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from kubeforge_api.constants import Env
from kubeforge_api.contracts import ArtifactInfo, TrainingResult, parse_result
from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG

from .formats.identity import FormatError, identify
from .termination import termination_log

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class OutputError(Exception):
    """The output directory holds no model Kubeforge can record (one line)."""


def run_child(argv: list[str]) -> int:
    """The child's exit code, or 128 + N when a signal killed it (the shell's convention)."""
    child = subprocess.Popen(argv)

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    code = child.wait()
    return 128 - code if code < 0 else code


def recorded_output(output: Path) -> ArtifactInfo | None:
    """The artifact for what the script saved, None when it saved nothing."""
    if not output.exists():
        return None
    try:
        if not any(output.iterdir()):
            raise OutputError(f"${Env.OUTPUT_DIR} ({output.name}/) is empty: save the model there, or do not "
                              f"create the directory")
        found = identify(output)
    except FormatError as e:
        raise OutputError(f"${Env.OUTPUT_DIR}: {str(e).replace(str(output), output.name + '/')}") from None
    except OSError as e:
        raise OutputError(f"${Env.OUTPUT_DIR} ({output.name}/) cannot be read: {e.strerror}") from None
    return ArtifactInfo(path=output.name, digest=found.digest, size_bytes=found.size_bytes, format=found.format)


def write_result(artifact: ArtifactInfo) -> None:
    """Add the artifact to the termination message the script may have written (its final progress)."""
    log = termination_log()
    with contextlib.suppress(OSError):  # outside a pod (a local run without a run folder) there is none
        previous = parse_result(log.read_text()) if log.is_file() else None
        result = (previous or TrainingResult()).model_copy(update={"artifact": artifact})
        log.write_text(result.model_dump_json(by_alias=True, exclude_none=True))


def write_error(line: str) -> None:
    print(line, file=sys.stderr)
    with contextlib.suppress(OSError):
        termination_log().write_text(line)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m kubeforge_trainer.command -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    try:
        code = run_child(argv)
    except OSError as e:
        print(f"cannot run {argv[0]!r}: {e.strerror}", file=sys.stderr)
        return 127
    output = os.environ.get(Env.OUTPUT_DIR)
    if code != 0 or not output:
        return code
    try:
        artifact = recorded_output(Path(output))
    except OutputError as e:
        write_error(str(e))
        return EXIT_INVALID_CONFIG
    if artifact is not None:
        write_result(artifact)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
