"""Pure, for every kind: the Events a pass posts for its condition changes, by one rule. A
condition whose status or reason changed is news, unless it turned False for an ordinary reason
(the condition that turned True says what happened). News is a Warning when the kind calls its
reason a warning or the condition is one whose True means trouble (Failed, Degraded...). The same
reason and message on two conditions is one Event (a Warning if either is). An object's state in
one word (`state_of`) is what the operator logs and counts when it changes."""

from __future__ import annotations

from dataclasses import dataclass

from .plan import Event, Obj


@dataclass(frozen=True)
class EventRule:
    """What a kind declares: its warning reasons and the condition types whose True is trouble."""

    warning_reasons: frozenset[str]
    trouble: frozenset[str]

    def is_warning(self, condition: Obj) -> bool:
        return condition.get("reason") in self.warning_reasons or \
            (condition["type"] in self.trouble and condition["status"] == "True")


def _changed(old: Obj | None, new: Obj) -> bool:
    return old is None or (old["status"], old.get("reason")) != (new["status"], new.get("reason"))


def condition_events(old_status: Obj, new_status: Obj, rule: EventRule) -> list[Event]:
    """The Events for the conditions that changed from `old_status` to `new_status`."""
    before = {c["type"]: c for c in old_status.get("conditions") or []}
    news: dict[tuple[str, str], bool] = {}  # (reason, message) -> warning
    for c in new_status.get("conditions") or []:
        if not _changed(before.get(c["type"]), c):
            continue
        warning = rule.is_warning(c)
        if c["status"] != "True" and not warning:
            continue
        what = (str(c.get("reason", "")), str(c.get("message", "")))
        news[what] = news.get(what, False) or warning
    return [Event("Warning" if warning else "Normal", reason, message) for (reason, message), warning in news.items()]


def state_of(status: Obj) -> str:
    """One word for where an object is: a TrainingJob's `state`, else the reason of its Ready condition."""
    if status.get("state"):
        return str(status["state"])
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return str(ready.get("reason", "")) if ready else ""


def message_of(status: Obj) -> str:
    """The message of the condition that says most about the state: a terminal or Ready one, else the first."""
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True"] or \
        list(status.get("conditions") or [])
    return str(conditions[-1].get("message", "")) if conditions else ""
