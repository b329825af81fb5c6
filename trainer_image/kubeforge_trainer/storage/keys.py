"""Pure: which local file each object under a prefix becomes. A key maps to the path below the
prefix; a key that would land outside the directory (an empty, `.` or `..` segment, an absolute
path, a NUL), nest deeper than `MAX_DEPTH`, name a segment longer than a file name may be, or turn a
file into a directory is refused, as are more than `MAX_OBJECTS` objects or more bytes than the
caller allows. Zero-byte "folder" markers (keys ending in `/`) are skipped."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

from .errors import unsafe

MAX_OBJECTS: Final = 10_000  # as many files as a model directory may hold (formats.identity)
MAX_DEPTH: Final = 32
MAX_SEGMENT_BYTES: Final = 255


@dataclass(frozen=True)
class Entry:
    """One object to copy: its key, its path below the destination, its size."""

    key: str
    path: PurePosixPath
    size: int


def directory_prefix(prefix: str) -> str:
    """The listing prefix for the objects under `prefix` (`a/b` -> `a/b/`; the bucket's root -> ``)."""
    return f"{prefix}/" if prefix else ""


def relative_path(key: str, under: str, uri: str) -> PurePosixPath:
    """The local path of `key`, listed under the listing prefix `under`."""
    if not key.startswith(under):
        raise unsafe(uri, f"the store listed {key!r}, which is not under the prefix")
    rest = key[len(under):]
    segments = rest.split("/")
    if any(s in ("", ".", "..") or "\x00" in s for s in segments):
        raise unsafe(uri, f"refusing key {key!r}: an empty, '.' or '..' path segment would escape the directory")
    if len(segments) > MAX_DEPTH:
        raise unsafe(uri, f"refusing key {key!r}: nested deeper than {MAX_DEPTH} directories")
    if any(len(s.encode()) > MAX_SEGMENT_BYTES for s in segments):
        raise unsafe(uri, f"refusing key {key!r}: a path segment longer than {MAX_SEGMENT_BYTES} bytes")
    return PurePosixPath(*segments)


def plan(objects: Iterable[tuple[str, int]], under: str, uri: str, max_bytes: int | None) -> list[Entry]:
    """The entries for `(key, size)` pairs listed under `under`, checked (see the module docstring)."""
    entries: list[Entry] = []
    total = 0
    for key, size in objects:
        if key.endswith("/") and size == 0:
            continue
        entries.append(Entry(key, relative_path(key, under, uri), size))
        total += size
        if len(entries) > MAX_OBJECTS:
            raise unsafe(uri, f"more than {MAX_OBJECTS} objects under the prefix")
        if max_bytes is not None and total > max_bytes:
            raise unsafe(uri, f"more than {max_bytes} bytes under the prefix (the limit)")
    _no_file_is_a_directory(entries, uri)
    return entries


def _no_file_is_a_directory(entries: list[Entry], uri: str) -> None:
    files = {e.path for e in entries}
    for e in entries:
        for parent in e.path.parents:
            if parent in files:
                raise unsafe(uri, f"refusing key {e.key!r}: {parent} is an object, so it cannot be a directory")


def single(key: str, size: int, max_bytes: int | None, uri: str) -> Entry:
    """The entry for a uri that names one object: its last segment, in the destination."""
    if max_bytes is not None and size > max_bytes:
        raise unsafe(uri, f"{size} bytes, more than the limit of {max_bytes}")
    name = key.rsplit("/", 1)[-1]
    return Entry(key, relative_path(name, "", uri), size)

