"""No two processes of one rank step at once across attempts. Refused writes (checkpoint.py) keep an old
attempt's output out; this keeps its processes from stepping beside the new ones:

- every process of an attempt runs a watcher thread that checks the fence every `POLL_SECONDS` and
  ends the process the moment a newer attempt is recorded; while it may go on, the thread touches
  the attempt's liveness stamp (`.alive-a<attempt>` beside `fence.json`);
- a new attempt, once recorded, waits before its first step until the older attempts' stamps have
  been still for `QUIET_SECONDS` (their watchers have seen the fence and stopped them), unless they
  were already silent when the fence was written (their processes were gone: a crash, a killed node,
  an ordinary restart), which costs nothing.

A partitioned node's processes keep running, so only this makes them stop before their successors
step; a process frozen longer than the quiet wait is the limit it cannot see past."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG

POLL_SECONDS = 0.5
STALE_SECONDS = 4 * POLL_SECONDS  # an attempt silent this long when the fence was written has no live process
QUIET_SECONDS = 3 * POLL_SECONDS  # stamps still this long: every old watcher has seen the fence
MAX_WAIT_SECONDS = 30.0  # a stamp that keeps moving (storage clock trouble) holds a new attempt no longer

_watched: set[Path] = set()
_lock = threading.Lock()
_enabled = threading.Event()


def enable() -> None:
    """Let `watch` start watchers in this process: the trainer's entry point does, a test's process does not
    (it plays several attempts in one process, and a watcher ends the process)."""
    _enabled.set()


def stamp_path(root: Path, attempt: int) -> Path:
    return root / f".alive-a{attempt}"


def _older_stamps_mtime(root: Path, attempt: int) -> float | None:
    """The newest liveness stamp of any attempt older than `attempt`, or None when there is none."""
    times = []
    for path in root.glob(".alive-a*"):
        suffix = path.name.removeprefix(".alive-a")
        if suffix.isdigit() and int(suffix) < attempt:
            with contextlib.suppress(OSError):
                times.append(path.stat().st_mtime)
    return max(times, default=None)


def outlive_older(root: Path, fence_file: Path, attempt: int) -> float:
    """Wait until no process of an older attempt can still step; the seconds waited."""
    newest = _older_stamps_mtime(root, attempt)
    try:
        fenced_at = fence_file.stat().st_mtime  # the storage's clock, like the stamps'
    except OSError:
        return 0.0
    if newest is None or fenced_at - newest > STALE_SECONDS:
        return 0.0
    start = now = time.monotonic()
    still_since = start
    while now - still_since < QUIET_SECONDS and now - start < MAX_WAIT_SECONDS:
        time.sleep(POLL_SECONDS / 2)
        now, seen = time.monotonic(), _older_stamps_mtime(root, attempt)
        if seen != newest:
            newest, still_since = seen, now
    return now - start


def watch(root: Path, attempt: int, fenced: Callable[[], str | None]) -> None:
    """Start this process's watcher for `root` (once, when enabled): it ends the process when `fenced` gives a
    reason."""
    with _lock:
        if not _enabled.is_set() or root in _watched:
            return
        _watched.add(root)
    threading.Thread(target=_watch_loop, args=(stamp_path(root, attempt), fenced), name="fence-watch",
                     daemon=True).start()


def _watch_loop(stamp: Path, fenced: Callable[[], str | None]) -> None:
    while True:
        if reason := fenced():
            print(f"kubeforge-trainer: {reason}; this process stops now", file=sys.stderr, flush=True)
            os._exit(EXIT_INVALID_CONFIG)  # as a refused checkpoint write ends it; nobody reads an old attempt's code
        with contextlib.suppress(OSError):  # storage trouble: the checkpoint writes report it
            stamp.touch()
        time.sleep(POLL_SECONDS)
