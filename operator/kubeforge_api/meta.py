"""Kind-agnostic pieces of every Kubeforge resource: the object metadata the models check and the
Kubernetes-style condition of `status.conditions[]` (the shape `conditions.set_condition` writes)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from .model import Model

# Pod host names derive from the job name (`<job>-node-<i>.<job>`): longer names break DNS labels.
MAX_NAME_LENGTH = 45
NAME_TOO_LONG = f"metadata.name must be at most {MAX_NAME_LENGTH} characters (pod host names derive from it)"


class ObjectMeta(Model):
    """Standard object metadata; only what the models check is typed, the rest passes through."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(default="", description="The object's name, unique in its namespace.")
    namespace: str | None = Field(default=None, description="The object's namespace.")


class Condition(Model):
    """One observation of the object's state, as Kubernetes API conventions define it."""

    type: str = Field(max_length=316, description="Condition type, e.g. Running, Succeeded, Failed, Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: str | None = Field(default=None, max_length=1024,
                               description="CamelCase reason for the last transition (a programmatic identifier).")
    message: str | None = Field(default=None, description="Human-readable details of the last transition.")
    last_transition_time: str | None = Field(default=None, description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, ge=0, description=(
        "The metadata.generation the condition was set for."))
