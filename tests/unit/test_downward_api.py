"""The node agent's downward API gives `resourceFieldRef` values as the kubelet does: the quantity
in units of the divisor, rounded up (the trainer sizes its threads from `limits.cpu` in millicores)."""

from __future__ import annotations

import pytest
from minicluster.containers import resource_field

RESOURCES = {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "250m"}}


@pytest.mark.parametrize(("resource", "divisor", "value"), [
    ("limits.cpu", "1m", "2000"), ("limits.cpu", None, "2"), ("requests.cpu", "1m", "250"),
    ("requests.cpu", "1", "1"), ("limits.memory", "1Mi", "1024"), ("requests.memory", "1", "0"),
])
def test_resource_fields_are_in_units_of_the_divisor_rounded_up(resource: str, divisor: str | None,
                                                                value: str) -> None:
    assert resource_field(RESOURCES, resource, divisor) == value
