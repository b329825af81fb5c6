"""The last word on a TrainingJob status: its JSON never exceeds `MAX_STATUS_BYTES` (64 KiB),
whatever pods report. Every field is already bounded where it is read (progress document,
termination messages, conditions); this makes the sum a guarantee: the history curves are halved
until the status fits, then long messages are cut. Deterministic, so an unchanged world still
writes nothing."""

from __future__ import annotations

from .. import fastjson
from ..plan import Obj

MAX_STATUS_BYTES = 64 * 1024
SHORT_MESSAGE = 256  # characters a message keeps when the status must shrink


def size(status: Obj) -> int:
    """Bytes of `status` as the API server stores it (UTF-8 JSON)."""
    return len(fastjson.encode(status))


def _shrink_history(status: Obj) -> bool:
    """Every other point of every curve, the newest kept (a one-point curve goes); False when no
    point is left. Each call removes points, so the loop that calls it ends."""
    history = status.get("history") or {}
    if not any(history.values()):
        return False
    status["history"] = {k: v[::-1][::2][::-1] for k, v in history.items() if len(v) > 1}
    return True


def _cut_messages(status: Obj) -> None:
    for c in status.get("conditions") or []:
        c["message"] = str(c.get("message", ""))[:SHORT_MESSAGE]
    failure = status.get("lastFailure")
    if isinstance(failure, dict) and failure.get("message"):
        failure["message"] = str(failure["message"])[-SHORT_MESSAGE:]
    compression = status.get("compression")
    if isinstance(compression, dict) and compression.get("message"):
        compression["message"] = str(compression["message"])[:SHORT_MESSAGE]


def bound(status: Obj, limit: int = MAX_STATUS_BYTES) -> Obj:
    """`status`, reduced in place until it fits `limit` bytes (measured once when it fits, as on
    nearly every pass)."""
    if size(status) <= limit:
        return status
    while size(status) > limit and _shrink_history(status):
        pass
    if size(status) > limit:
        _cut_messages(status)
    return status
