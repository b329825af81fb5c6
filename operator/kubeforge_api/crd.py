"""Pure: a kind's pydantic models -> its CustomResourceDefinition (a dict; `codegen` writes YAML).

pydantic's JSON Schema is turned into a Kubernetes *structural* schema: `$ref`s are inlined,
`X | None` becomes an optional X (no nulls), `int | str` becomes `x-kubernetes-int-or-string`,
JSON-Schema `exclusiveMinimum: n` becomes OpenAPI's `minimum: n, exclusiveMinimum: true`, a free-form
`dict[str, Any]` becomes `x-kubernetes-preserve-unknown-fields`, titles go and `None` defaults go.
Any schema keyword not listed in `ORDER` is an error, so a model feature the API server cannot
express is caught here rather than at `kubectl apply`. Every description gains its default and
range, so `kubectl explain` shows them. Hand-written because no maintained library targets
pydantic v2 -> apiextensions.k8s.io/v1 with CEL.

A kind declares everything next to its models (see trainingjob.py):

    class ServingJobSpec(Model):
        crd_rules = (Rule("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas",
                          ".minReplicas", check=lambda s: s.min_replicas <= s.max_replicas),)
        min_replicas: int = Field(default=1, ge=0, le=100, description="Fewest replicas.")
        ...
    class ServingJob(Model):            # apiVersion, kind, metadata, spec, status
        ...
    CRD = CrdKind(GROUP, VERSION, "ServingJob", "servingjobs", ServingJob, short_names=("sj",),
                  categories=("kubeforge",), columns=(Column("Ready", "string", ".status.ready"),))

and is added to `codegen.KINDS`; `make generate` then writes its CRD, and a docs/api.md marker
`<!-- BEGIN GENERATED ServingJob.spec -->` gets its table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

JsonDict = dict[str, Any]

# The keywords a structural schema may carry here, in the order they are written out.
ORDER = (
    "type", "description", "required", "enum", "default", "minimum", "exclusiveMinimum", "maximum",
    "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "minProperties", "maxProperties",
    "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-validations", "properties", "additionalProperties", "items",
)
# Standard fields of every object; the API server owns their schema.
STANDARD = {
    "apiVersion": {"type": "string", "description": (
        "APIVersion defines the versioned schema of this representation of an object.")},
    "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object "
                                              "represents."},
    "metadata": {"type": "object"},  # the API server owns it: a CRD may say nothing else about it
}


@dataclass(frozen=True)
class Column:
    """A printer column of `kubectl get` (priority 1: only with `-o wide`)."""

    name: str
    type: str
    json_path: str
    priority: int = 0

    def to_crd(self) -> JsonDict:
        out: JsonDict = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.priority:
            out["priority"] = self.priority
        return out


@dataclass(frozen=True)
class CrdKind:
    """Everything a CRD says besides the schema; `model` is the whole object (apiVersion, kind,
    metadata, spec and, when it has one, status, which then becomes a subresource)."""

    group: str
    version: str
    kind: str
    plural: str
    model: type[BaseModel]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()
    scope: str = "Namespaced"
    # False: the API server fills in the defaults of the spec's own fields only; those inside its
    # objects (e.g. spec.recipe.epochs) are applied by the models, which every reader of a spec
    # parses it with. `kubectl explain` and docs/api.md state every default either way.
    nested_defaults: bool = True

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"


def _ordered(node: JsonDict) -> JsonDict:
    unknown = set(node) - set(ORDER)
    if unknown:
        raise ValueError(f"schema keywords a CRD cannot carry: {sorted(unknown)} in {node}")
    return {k: node[k] for k in ORDER if k in node}


def _resolve(node: JsonDict, defs: JsonDict, seen: tuple[str, ...]) -> JsonDict:
    """Inline a `$ref` (or a one-item allOf); the referring node's own keys win."""
    node = dict(node)
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node.pop("allOf")[0], **node}
    if "$ref" not in node:
        return node
    name = node.pop("$ref").rsplit("/", 1)[-1]
    if name in seen:
        raise ValueError(f"recursive model {name}: a CRD schema cannot express it")
    return {**_convert(defs[name], defs, (*seen, name)), **node}


def _merge_union(node: JsonDict, defs: JsonDict, seen: tuple[str, ...]) -> JsonDict:
    """`X | None` -> X; `int | str` -> int-or-string (keeping the string's constraints)."""
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    branches = [_convert(b, defs, seen) for b in node["anyOf"] if b != {"type": "null"}]
    if len(branches) == 1:
        return {**branches[0], **outer}
    if sorted(b.get("type", "") for b in branches) == ["integer", "string"]:
        text = next(b for b in branches if b["type"] == "string")
        return {**{k: v for k, v in text.items() if k != "type"}, "x-kubernetes-int-or-string": True, **outer}
    raise ValueError(f"a CRD schema cannot express the union {node['anyOf']}")


def _convert(raw: JsonDict, defs: JsonDict, seen: tuple[str, ...] = ()) -> JsonDict:
    node = _resolve(raw, defs, seen)
    if "anyOf" in node:
        node = _merge_union(node, defs, seen)
    node.pop("title", None)
    if "description" in node:
        node["description"] = " ".join(node["description"].split())
    if "x-kubernetes-validations" in node:
        node["x-kubernetes-validations"] = [{k: v[k] for k in ("rule", "message", "fieldPath") if k in v}
                                            for v in node["x-kubernetes-validations"]]
    if "default" in node and node["default"] is None:
        del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound in ("Minimum", "Maximum"):
        if isinstance(node.get(f"exclusive{bound}"), int | float) and not isinstance(node[f"exclusive{bound}"], bool):
            node[bound.lower()] = node[f"exclusive{bound}"]
            node[f"exclusive{bound}"] = True
    if node.get("type") == "object":
        _object(node, defs, seen)
    if "items" in node:
        node["items"] = _convert(node["items"], defs, seen)
    return _ordered(node)


def _object(node: JsonDict, defs: JsonDict, seen: tuple[str, ...]) -> None:
    """Fields stay fields; extra="forbid" needs no keyword (the API server prunes or, with strict
    field validation, rejects unknown fields); extra="allow" and `dict[str, Any]` keep unknown fields."""
    extra = node.pop("additionalProperties", "properties" not in node)
    if "properties" in node:
        node["properties"] = {k: _convert(v, defs, seen) for k, v in node["properties"].items()}
    if extra is True:
        node["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(extra, dict):
        if "properties" in node:
            raise ValueError(f"a CRD schema cannot have both properties and additionalProperties: {node}")
        node["additionalProperties"] = _convert(extra, defs, seen)


def structural(model: type[BaseModel]) -> JsonDict:
    """The model's structural schema with the descriptions as written (no defaults/ranges added)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if value != "" else '""'


def limits(node: JsonDict) -> list[str]:
    """The node's allowed values and range in words."""
    out: list[str] = []
    if "enum" in node:
        out.append("One of: " + ", ".join(str(v) for v in node["enum"]) + ".")
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None and high is not None and not node.get("exclusiveMinimum"):
        out.append(f"Range: {_value(low)} to {_value(high)}.")
    else:
        if low is not None:
            out.append(f"{'Greater than' if node.get('exclusiveMinimum') else 'At least'} {_value(low)}.")
        if high is not None:
            out.append(f"At most {_value(high)}.")
    for key, unit in (("maxLength", "characters"), ("maxItems", "items"), ("maxProperties", "entries")):
        if key in node:
            out.append(f"At most {node[key]} {unit}.")
    return out


def default(node: JsonDict) -> str | None:
    """The node's scalar default as written in YAML, if it has one."""
    if "default" in node and not isinstance(node["default"], dict | list):
        return _value(node["default"])
    return None


def facts(node: JsonDict) -> list[str]:
    """Values, range and default in words: what `kubectl explain` shows after the description."""
    value = default(node)
    return [*limits(node), *([f"Default: {value}."] if value is not None else [])]


def explained(node: JsonDict) -> JsonDict:
    """A copy whose descriptions end with the node's facts (what `kubectl explain` prints)."""
    out = dict(node)
    extra = " ".join(facts(node))
    if extra:
        out["description"] = f"{node.get('description', '').rstrip()} {extra}".strip()
    if "properties" in out:
        out["properties"] = {k: explained(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = explained(out[key])
    return _ordered(out)


def without_defaults(node: JsonDict) -> JsonDict:
    """A copy of `node` with no `default` anywhere (descriptions keep saying them)."""
    out = {k: v for k, v in node.items() if k != "default"}
    if "properties" in out:
        out["properties"] = {k: without_defaults(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = without_defaults(out[key])
    return out


def own_defaults_only(node: JsonDict) -> JsonDict:
    """A copy of object schema `node` that keeps the defaults of its own fields and none below them."""
    fields = {}
    for name, child in node["properties"].items():
        kept = without_defaults(child)
        if "default" in child:
            kept["default"] = child["default"]
        fields[name] = _ordered(kept)
    return {**node, "properties": fields}


def _root_schema(kind: CrdKind) -> JsonDict:
    schema = explained(structural(kind.model))
    own = {k: v for k, v in schema["properties"].items() if k not in STANDARD}
    if not kind.nested_defaults and "spec" in own:
        own["spec"] = own_defaults_only(own["spec"])
    schema["properties"] = {**STANDARD, **own}
    return schema


def generate_crd(kind: CrdKind) -> JsonDict:
    """The CustomResourceDefinition of `kind` (apiextensions.k8s.io/v1)."""
    schema = _root_schema(kind)
    version: JsonDict = {"name": kind.version, "served": True, "storage": True}
    if "status" in schema["properties"]:
        version["subresources"] = {"status": {}}
    if kind.columns:
        version["additionalPrinterColumns"] = [c.to_crd() for c in kind.columns]
    version["schema"] = {"openAPIV3Schema": schema}
    names: JsonDict = {"kind": kind.kind, "listKind": f"{kind.kind}List", "plural": kind.plural,
                       "singular": kind.kind.lower()}
    if kind.short_names:
        names["shortNames"] = list(kind.short_names)
    if kind.categories:
        names["categories"] = list(kind.categories)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.name, "labels": {"app.kubernetes.io/part-of": "kubeforge"}},
        "spec": {"group": kind.group, "scope": kind.scope, "names": names, "versions": [version]},
    }
