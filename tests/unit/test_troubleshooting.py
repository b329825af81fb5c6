"""docs/troubleshooting.md documents exactly the reasons the operator can set, each with what to do."""

from __future__ import annotations

import re
from pathlib import Path

from kubeforge_api.compression import CompressionReason
from kubeforge_api.constants import Reason
from kubeforge_api.servingjob import ServingReason
from kubeforge_operator.observe import WAITING_REASONS

PAGE = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"
HEADING = re.compile(r"^### `(\w+)`\n(.*?)(?=^##|\Z)", re.M | re.S)


def sections() -> dict[str, str]:
    found = HEADING.findall(PAGE.read_text())
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"a reason is documented twice: {names}"
    return dict(found)


def reasons() -> set[str]:
    constants = {str(r) for enum in (Reason, ServingReason, CompressionReason) for r in enum}
    return constants | set(WAITING_REASONS)


def test_every_reason_the_operator_sets_is_documented_and_no_other() -> None:
    documented = set(sections())
    assert not reasons() - documented, f"missing from {PAGE.name}: {sorted(reasons() - documented)}"
    assert not documented - reasons(), f"{PAGE.name} documents unknown reasons: {sorted(documented - reasons())}"


def test_each_reason_says_what_it_means_and_what_to_do() -> None:
    for name, text in sections().items():
        assert "**Means:**" in text and "**Do:**" in text, name
