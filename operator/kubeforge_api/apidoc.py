"""Pure: a kind's models -> the field-reference tables of docs/api.md.

docs/api.md is its own template: the hand-written text stays, and everything between
`<!-- BEGIN GENERATED Kind.section -->` and `<!-- END GENERATED -->` (section `spec` or `status`)
is replaced by a table of every field under that section (path, type, default, range, meaning),
taken from the same structural schema as the CRD, so the page and `kubectl explain` agree;
section `rules` lists every CEL rule with the field it names."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from .crd import CrdKind, JsonDict, default, limits, structural

MARKER = re.compile(r"(<!-- BEGIN GENERATED (\w+)\.(\w+) -->\n)(.*?)(<!-- END GENERATED -->)", re.DOTALL)


def type_of(node: JsonDict) -> str:
    """A short type name: `integer`, `[]object`, `map[string]string`, `int-or-string`, `object (free-form)`."""
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return "object (free-form)"
    if node.get("type") == "array":
        return "[]" + type_of(node["items"])
    if node.get("type") == "object" and "additionalProperties" in node:
        return "map[string]" + type_of(node["additionalProperties"])
    return str(node.get("type", ""))


def rows(node: JsonDict, prefix: str = "") -> Iterator[tuple[str, JsonDict, bool]]:
    """(path, schema, required) of every field under `node`, depth first: `env[].name`, `history.*`."""
    required = set(node.get("required") or [])
    for name, child in (node.get("properties") or {}).items():
        path = f"{prefix}{name}"
        yield path, child, name in required
        yield from _below(child, path)


def _below(node: JsonDict, path: str) -> Iterator[tuple[str, JsonDict, bool]]:
    if node.get("type") == "array" and "properties" in node["items"]:
        yield from rows(node["items"], f"{path}[].")
    elif isinstance(node.get("additionalProperties"), dict) and "properties" in node["additionalProperties"]:
        yield from rows(node["additionalProperties"], f"{path}.*.")
    else:
        yield from rows(node, f"{path}.")


def _rules(node: JsonDict, path: str) -> Iterator[tuple[str, JsonDict]]:
    for rule in node.get("x-kubernetes-validations") or []:
        yield path + rule.get("fieldPath", ""), rule
    for name, child in (node.get("properties") or {}).items():
        yield from _rules(child, f"{path}.{name}" if path else name)
    for key, suffix in (("items", "[]"), ("additionalProperties", ".*")):
        if isinstance(node.get(key), dict):
            yield from _rules(node[key], path + suffix)


def rule_list(root: JsonDict, kind: str) -> str:
    """Every CEL rule of the kind as a bullet: the field it names (or the kind) and its message."""
    lines = []
    for path, rule in _rules(root, ""):
        when = " (on update)" if "oldSelf" in rule["rule"] else ""
        lines.append(f"- `{path or kind}`{when}: {rule['message']}")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(section: JsonDict) -> str:
    """The markdown table of every field of `section` (a structural schema)."""
    lines = ["| field | type | default | values | meaning |", "| --- | --- | --- | --- | --- |"]
    for path, node, required in rows(section):
        value = default(node)
        values = (["Required."] if required else []) + limits(node)
        lines.append(" | ".join([
            f"| `{path}`", type_of(node), f"`{value}`" if value is not None else "",
            _cell(" ".join(values)), _cell(node.get("description", "")) + " |",
        ]))
    return "\n".join(lines) + "\n"


def fill(template: str, kinds: Sequence[CrdKind]) -> str:
    """`template` with every generated block replaced by the current table."""
    schemas = {k.kind: structural(k.model) for k in kinds}

    def replace(m: re.Match[str]) -> str:
        kind, section = m.group(2), m.group(3)
        if kind in schemas and section == "rules":
            return f"{m.group(1)}{rule_list(schemas[kind], kind)}{m.group(5)}"
        if kind not in schemas or section not in schemas[kind]["properties"]:
            raise ValueError(f"docs marker names an unknown section: {kind}.{section}")
        return f"{m.group(1)}{table(schemas[kind]['properties'][section])}{m.group(5)}"

    return MARKER.sub(replace, template)
