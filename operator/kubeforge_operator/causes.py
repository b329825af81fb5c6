"""Pure: the line of a failed container's termination text (its log's tail, as the kubelet keeps
it) that says why it failed. A user's script under torchrun ends its log with torchrun's banner
(`=====`, `Root Cause`, `exitcode : 1`...), which says that it failed, not why; the cause is the
last exception line above it (`ZeroDivisionError: division by zero`, `python: can't open file`),
with torchrun's per-rank prefixes (`[rank0]:`) taken off."""

from __future__ import annotations

import re

RANK_PREFIX = re.compile(r"^\[(?:rank|default)?\d+\]:\s?")
EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Interrupt|Exit|Failure)(?::\s.*)?$")
NOT_FOUND = re.compile(r"can't open file|No such file or directory|command not found|not found in \$PATH")
BANNER = re.compile(r"^(=+|-+|Failures:|Root Cause.*|\[\d+\]:|<NO_OTHER_FAILURES>|\S+ FAILED|"
                    r"(time|host|rank|exitcode|error_file|traceback)\s*:.*|"
                    r".*ChildFailedError.*|[EWI]\d{4} \d\d:\d\d:\d\d.*)$")  # torchrun's own report and log lines
MAX_CAUSE = 300


def _lines(text: str) -> list[str]:
    return [RANK_PREFIX.sub("", line).strip() for line in text.splitlines()]


def cause(text: str) -> str:
    """The line that says why, or the last line that is not part of torchrun's banner ("" if none)."""
    lines = [line for line in _lines(text) if line and not BANNER.match(line)]
    for line in reversed(lines):
        if EXCEPTION.match(line) or NOT_FOUND.search(line):
            return line[:MAX_CAUSE]
    return lines[-1][:MAX_CAUSE] if lines else ""
