"""The pydantic base of every API model, and the declarations that make one model the single
source of both validation layers: a `Rule` is a cross-field check written once as CEL (which the
CRD generator puts into `x-kubernetes-validations`) and once as Python (which the models run),
sharing one message and one field path, so `kubectl apply` and `kubeforge run` give the same
verdict naming the same field. `problems()` turns a pydantic error into those field paths."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Rule:
    """One cross-field rule of a model.

    `cel` runs in the API server (`self` is the object the model describes, `oldSelf` its stored
    version on updates); `check` is the same predicate in Python over the model instance, or None
    when only the API server can judge (rules over `oldSelf`). `field_path` (relative, e.g.
    `.recipe`) is the field both layers name; `error_path` overrides it for the models where CEL
    cannot point at the field (e.g. `.metadata.name`, which a CRD schema does not describe)."""

    cel: str
    message: str
    field_path: str = ""
    check: Callable[[Any], bool] | None = None
    error_path: str | None = None

    def to_cel(self) -> JsonDict:
        out: JsonDict = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


class RuleViolation(ValueError):
    """A broken rule; `path` (relative to the model that raised it) is the field it names."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


def _schema_extra(schema: JsonDict, cls: type[Any]) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "crd_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.to_cel() for r in rules]


class Model(BaseModel):
    """camelCase on the wire, unknown fields rejected, immutable. A subclass lists its cross-field
    rules in `crd_rules`; they run after field validation, in order, and the first broken one is
    reported (the API server reports all of them)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
                              json_schema_extra=_schema_extra)
    crd_rules: ClassVar[tuple[Rule, ...]] = ()

    def dump(self) -> dict[str, Any]:
        """The camelCase wire form, without unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @model_validator(mode="after")
    def _check_rules(self) -> Model:
        for rule in type(self).crd_rules:
            if rule.check is not None and not rule.check(self):
                path = rule.field_path if rule.error_path is None else rule.error_path
                raise RuleViolation(path, rule.message)
        return self


def omit_default(schema: JsonDict) -> None:
    """`json_schema_extra` for a field whose Python default the API server must not fill in."""
    schema.pop("default", None)


def list_map(*keys: str) -> JsonDict:
    """`json_schema_extra` for a list keyed like a map (at most one item per key)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


TERMINATION_LIMIT = 4096  # bytes the kubelet keeps of a termination message
Finite = Annotated[float, Field(allow_inf_nan=False, ge=-1e15, le=1e15)]  # JSON has no NaN or infinity
NonNegative = Annotated[float, Field(allow_inf_nan=False, ge=0, le=1e15)]
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
RELATIVE_PATH = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def _clean_relative(v: str) -> str:
    if not RELATIVE_PATH.match(v) or any(part in (".", "..") for part in v.split("/")):
        raise ValueError("must be a clean relative path (no '..', no query, no leading '/')")
    return v


def _sha256(v: str) -> str:
    if not DIGEST.match(v):
        raise ValueError("must be 'sha256:' followed by 64 lowercase hex digits")
    return v


# Paths and digests a pod reports about what it wrote: checked as strictly wherever they arrive.
RelativePath = Annotated[str, Field(max_length=512), AfterValidator(_clean_relative)]
Sha256Digest = Annotated[str, AfterValidator(_sha256)]
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|e[0-9]+)?$"
# Label and annotation keys and label values as the pod API checks them (an optional DNS prefix, then a name).
QUALIFIED_NAME_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                          r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
# Keys under these domains (and their subdomains) belong to Kubernetes and to the operator:
# AppArmor, seccomp and every key the operator selects pods by live there.
RESERVED_KEY_PATTERN = r"^([^/]*\.)?(kubernetes\.io|k8s\.io|kubeforge\.dev)/"


MAX_INT_OR_STRING_LENGTH = 64


def _int_or_string(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be an integer or a string")
    if isinstance(value, str) and len(value) > MAX_INT_OR_STRING_LENGTH:
        raise ValueError(f"must be at most {MAX_INT_OR_STRING_LENGTH} characters")
    return value


def _quantity(value: Any) -> int | str:
    checked = _int_or_string(value)
    if isinstance(checked, str) and not re.fullmatch(QUANTITY_PATTERN, checked):
        raise ValueError(f"{checked!r} is not a quantity (e.g. 2, 500m, 4Gi)")
    return checked


IntOrString = Annotated[int | str, PlainValidator(_int_or_string),
                        WithJsonSchema({"x-kubernetes-int-or-string": True, "maxLength": MAX_INT_OR_STRING_LENGTH})]
Quantity = Annotated[int | str, PlainValidator(_quantity),
                     WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN})]


def _join(path: str, loc: tuple[int | str, ...]) -> str:
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def problems(exc: ValidationError, root: str = "") -> list[tuple[str, str]]:
    """(field path, message) per error, with API-server style paths: `spec.env[0].value`."""
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        path = _join(root, tuple(err["loc"]))
        cause = (err.get("ctx") or {}).get("error")
        message = err["msg"]
        if isinstance(cause, RuleViolation):
            path += cause.path if path or not cause.path.startswith(".") else cause.path[1:]
            message = str(cause)
        elif isinstance(cause, ValueError):
            message = str(cause)
        out.append((path, message))
    return out


class Resources(Model):
    """Of a pod. `nvidia.com/gpu` selects NCCL and adds a GPU toleration; otherwise gloo."""

    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=16,
                                        description="Resource limits, e.g. cpu, memory, nvidia.com/gpu.")
    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=16,
                                          description="Resource requests, e.g. cpu, memory.")

    @property
    def gpus(self) -> int:
        return int(self.limits.get("nvidia.com/gpu", self.requests.get("nvidia.com/gpu", 0)))
