"""Every plan a unit test makes is checked against the kind's status model: a status a pass
builds by hand that the CRD's schema would reject (a wrong name, type or bound) fails the test
that produced it, whichever test that is (tests/conftest.py applies it to tests/unit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubeforge_api.model import Model
from kubeforge_api.servingjob import ServingJobStatus
from kubeforge_api.trainingjob import TrainingJobStatus
from kubeforge_operator.plan import Plan
from kubeforge_operator.servingjob import decide as serving
from kubeforge_operator.trainingjob import decide as training


def _checked(finish: Callable[[Any], Plan], model: type[Model]) -> Callable[[Any], Plan]:
    def check(p: Any) -> Plan:
        plan = finish(p)
        model.model_validate(plan.status)
        return plan

    return check


def check_every_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training, "_finish", _checked(training._finish, TrainingJobStatus))
    monkeypatch.setattr(serving, "_finish", _checked(serving._finish, ServingJobStatus))
