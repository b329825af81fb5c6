"""The pydantic pieces of where models and data live: the credentials Secret a `secretRef` names, and
the rule that a uri field has no `.` or `..` segment (the names and patterns are in `storage`)."""

from __future__ import annotations

import re

from pydantic import Field
from pydantic.alias_generators import to_camel

from .model import Model, Rule
from .storage import DNS1123_NAME_PATTERN, DOT_SEGMENT


class SecretRef(Model):
    """A Secret in the same namespace holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and
    optionally AWS_ENDPOINT_URL and AWS_REGION. Only the storage initializer sees its values."""

    name: str = Field(max_length=253, pattern=DNS1123_NAME_PATTERN, description="Name of the Secret.")


def clean_uri_rule(field: str) -> Rule:
    """The rule that a uri field (camelCase `field` of the model) has no `.` or `..` segment: both
    kinds of uri become local paths (a volume's subPath, the initializer's destination)."""
    camel = to_camel(field)
    return Rule(f"!has(self.{camel}) || !self.{camel}.matches('{DOT_SEGMENT}')",
                f"{camel} must not contain '.' or '..' path segments", f".{camel}",
                check=lambda m: getattr(m, field) is None or re.search(DOT_SEGMENT, getattr(m, field)) is None)
