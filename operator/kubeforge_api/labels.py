"""Label and annotation keys and label values as the pod API checks them, stated once for the CRD
(patterns and CEL over map keys, which a structural schema cannot constrain otherwise) and for the
models (the same checks in Python)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

from .model import LABEL_VALUE_PATTERN, QUALIFIED_NAME_PATTERN, RESERVED_KEY_PATTERN, Rule

MAX_KEY_LENGTH = 317  # a 253-character DNS prefix, '/', a 63-character name
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
QualifiedName = Annotated[str, Field(min_length=1, max_length=MAX_KEY_LENGTH, pattern=QUALIFIED_NAME_PATTERN)]


def qualified(key: str) -> bool:
    return len(key) <= MAX_KEY_LENGTH and re.fullmatch(QUALIFIED_NAME_PATTERN, key) is not None


def reserved(key: str) -> bool:
    return re.match(RESERVED_KEY_PATTERN, key) is not None


def _attr(field: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", field).lower()


def key_syntax_rule(field: str, what: str) -> Rule:
    """Every key of the map `field` is a qualified name, in CEL and in Python."""
    return Rule(f"!has(self.{field}) || self.{field}.all(k, size(k) <= {MAX_KEY_LENGTH} && "
                f"k.matches(r'{QUALIFIED_NAME_PATTERN}'))",
                f"every {what} key must be a qualified name (an optional DNS prefix and '/', "
                "then at most 63 characters of A-Z, a-z, 0-9, '-', '_', '.')", f".{field}",
                check=lambda t: all(qualified(k) for k in getattr(t, _attr(field))))


def reserved_keys_rule(field: str, what: str) -> Rule:
    """No key of the map `field` lies in a reserved domain, in CEL and in Python."""
    return Rule(f"!has(self.{field}) || self.{field}.all(k, !k.matches(r'{RESERVED_KEY_PATTERN}'))",
                f"{what} keys under kubernetes.io/, k8s.io/ and kubeforge.dev/ (and their subdomains) are reserved",
                f".{field}", check=lambda t: not any(reserved(k) for k in getattr(t, _attr(field))))
