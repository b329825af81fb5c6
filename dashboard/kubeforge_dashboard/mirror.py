"""A list-then-watch mirror of one Kubeforge kind in one scope (a namespace, or all), the way a
client-go informer works: one list, then a watch stream applies each change to a dict of parsed
models, so an overview refresh reads memory instead of re-listing (a list of 500 jobs whose status
carries curves is about 12 MB to encode, send and decode). Hand-written because the official
client has no informer; the `Watch` helper does the streaming.

The first list happens in the caller's thread, so its failure (forbidden, unreachable) reaches the
page at once. Afterwards a daemon thread keeps the watch open; when it breaks it re-lists (410
Gone: the resourceVersion is too old); while it cannot, reads raise the last error. `stop()` ends
the thread at its next event or stream timeout."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from kubernetes import watch
from pydantic import BaseModel

from .kubeobjects import Obj, parse_all
from .source import Listing, SourceError

M = TypeVar("M", bound=BaseModel)
STREAM_SECONDS = 240
RETRY_SECONDS = 1.0


class Mirror(Generic[M]):
    def __init__(self, list_raw: Callable[[], tuple[list[Obj], str]], watch_fn: Callable[..., Any],
                 watch_args: tuple[Any, ...], parse: Callable[[Obj], M], kind: str,
                 prepare: Callable[[Obj], None] = lambda o: None) -> None:
        self._list_raw, self._watch_fn, self._watch_args = list_raw, watch_fn, watch_args
        self._parse, self._kind, self._prepare = parse, kind, prepare
        self._lock = threading.Lock()
        self._items: dict[str, M] = {}
        self._problems: dict[str, str] = {}
        self._error: SourceError | None = None
        self._stopped = threading.Event()
        self.last_read = time.monotonic()
        version = self._relist()  # raises SourceError to the first reader
        threading.Thread(target=self._run, args=(version,), daemon=True, name=f"mirror-{kind}").start()

    def snapshot(self) -> Listing[M]:
        self.last_read = time.monotonic()
        with self._lock:
            if self._error is not None:
                raise self._error
            return Listing(items=list(self._items.values()), problems=list(self._problems.values()))

    def stop(self) -> None:
        self._stopped.set()

    def _key(self, obj: Obj) -> str:
        meta = obj.get("metadata", {})
        return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")

    def _put(self, obj: Obj) -> None:
        self._prepare(obj)
        parsed = parse_all(self._parse, [obj], self._kind)
        key = self._key(obj)
        with self._lock:
            self._items.pop(key, None)
            self._problems.pop(key, None)
            if parsed.items:
                self._items[key] = parsed.items[0]
            else:
                self._problems[key] = parsed.problems[0]

    def _relist(self) -> str:
        items, version = self._list_raw()
        for obj in items:
            self._prepare(obj)
        parsed = {self._key(o): parse_all(self._parse, [o], self._kind) for o in items}
        with self._lock:
            self._items = {k: p.items[0] for k, p in parsed.items() if p.items}
            self._problems = {k: p.problems[0] for k, p in parsed.items() if p.problems}
            self._error = None
        return version

    def _stream(self, version: str) -> str:
        """Apply events until the stream ends; the resourceVersion to continue from."""
        w = watch.Watch()  # type: ignore[no-untyped-call]
        for event in w.stream(  # type: ignore[no-untyped-call]
                self._watch_fn, *self._watch_args, resource_version=version,
                              timeout_seconds=STREAM_SECONDS, allow_watch_bookmarks=True):
            if self._stopped.is_set():
                w.stop()  # type: ignore[no-untyped-call]
                break
            obj = event.get("object") or {}
            version = str(obj.get("metadata", {}).get("resourceVersion", version))
            if event.get("type") in ("ADDED", "MODIFIED"):
                self._put(obj)
            elif event.get("type") == "DELETED":
                with self._lock:
                    self._items.pop(self._key(obj), None)
                    self._problems.pop(self._key(obj), None)
        return version

    def _run(self, version: str) -> None:
        while not self._stopped.is_set():
            try:
                version = self._stream(version)
            except Exception:  # 410 Gone, a broken connection, an API server restart: list again
                version = self._retry_list()

    def _retry_list(self) -> str:
        while not self._stopped.is_set():
            try:
                return self._relist()
            except SourceError as e:
                with self._lock:
                    self._error = e
            with contextlib.suppress(Exception):
                self._stopped.wait(RETRY_SECONDS)
        return ""
