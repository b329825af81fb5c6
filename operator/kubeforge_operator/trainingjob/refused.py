"""Step: a child the API server refused to create (a Pod Security violation, an unknown
PriorityClass, an exceeded quota, a name someone else's object holds) fails the job with the API
server's own words, instead of retrying forever: the job cannot run as written."""

from __future__ import annotations

from .context import Pass


def create_refused(p: Pass) -> bool:
    if not p.world.refusals:
        return False
    first = p.world.refusals[0]
    return p.fail(first.reason, f"the API server refused to create {first.message}", kill_all=True)
