"""The compression contract: bad specs are refused with the field named, the recipe check, the
defaults, and a termination message that always fits the kubelet's 4 KiB."""

from __future__ import annotations

from typing import Any

import pytest
from kubeforge_api.compression import (
    AccuracyBudget,
    ArtifactRef,
    Candidate,
    CompressionReason,
    CompressionReport,
    CompressionSpec,
    CompressionTermination,
    Latency,
    Measured,
    Rejection,
    Spread,
    Verdict,
    check_against_recipe,
)
from pydantic import ValidationError


def spec(**kw: Any) -> CompressionSpec:
    return CompressionSpec.model_validate({"methods": [{"quantize": {}}], **kw})


@pytest.mark.parametrize(("doc", "field"), [
    ({"methods": []}, "methods"),
    ({"methods": [{"prune": {"amount": 0.99}}]}, "amount"),
    ({"methods": [{"prune": {"amount": 0}}]}, "amount"),
    ({"methods": [{"quantize": {"mode": "int4"}}]}, "mode"),
    ({"methods": [{"quantize": {"calibrationSamples": 1}}]}, "calibrationSamples"),
    ({"methods": [{"distill": {"temperature": 0}}]}, "temperature"),
    ({"methods": [{"distill": {"alpha": 1.5}}]}, "alpha"),
    ({"methods": [{"distill": {"student": {"depth": 0}}}]}, "depth"),
    ({"methods": [{"quantize": {}}] * 9}, "methods"),
    ({"methods": [{"quantize": {}}], "select": "fastest"}, "select"),
    ({"methods": [{"quantize": {}}], "accuracyBudget": {"maxDrop": -1}}, "maxDrop"),
    ({"methods": [{"quantize": {}}], "accuracyBudget": {"metric": "f1"}}, "metric"),
    ({"methods": [{"quantise": {}}]}, "quantise"),
    ({"methods": [{"quantize": {}}], "objective": "speed"}, "objective"),
    ({"methods": [{"quantize": {}}], "minSpeedup": 0.9}, "minSpeedup"),
    ({"methods": [{"quantize": {}}], "minSpeedup": 1e6}, "minSpeedup"),
])
def test_bad_specs_are_refused_naming_the_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as e:
        CompressionSpec.model_validate(doc)
    assert any(field in [str(p) for p in err["loc"]] for err in e.value.errors()), e.value.errors()


def test_a_method_sets_exactly_one_kind() -> None:
    docs: list[dict[str, Any]] = [{}, {"quantize": {}, "prune": {}}]
    for doc in docs:
        with pytest.raises(ValidationError, match="exactly one of quantize, prune, distill"):
            CompressionSpec.model_validate({"methods": [doc]})


def test_defaults_and_wire_form() -> None:
    s = spec()
    assert s.select == "first" and s.accuracy_budget.max_drop == 0.01 and not s.accuracy_budget.relative
    m = s.methods[0]
    assert m.label() == "quantize-dynamic" and m.parameters() == {"mode": "dynamic", "backend": "auto",
                                                                  "calibrationSamples": 256}
    assert CompressionSpec.model_validate(s.dump()) == s


def test_check_against_recipe_names_the_field() -> None:
    ok = spec(accuracyBudget={"metric": "accuracy"})
    assert check_against_recipe(ok, "mlp", "digits") == []
    errors = check_against_recipe(ok, "gpt", "text")
    assert len(errors) == 1 and errors[0].startswith("spec.compression.accuracyBudget.metric")
    static = CompressionSpec.model_validate({"methods": [{"prune": {}}, {"quantize": {"mode": "static"}}]})
    assert check_against_recipe(static, "cnn", "digits") == []
    assert check_against_recipe(static, "gpt", "text")[0].startswith("spec.compression.methods[1].quantize.mode")
    torchao = CompressionSpec.model_validate({"methods": [{"quantize": {"mode": "static", "backend": "torchao"}}]})
    assert any("backend" in e for e in check_against_recipe(torchao, "cnn", "digits"))


def report(n: int, message: str) -> CompressionReport:
    spread = Spread(low=1.2, high=1.3)
    lat = Latency(batch1=1.234567, batch8=9.87654, batch1_spread=spread, batch8_spread=spread)
    meas = Measured(metric=0.97, metrics={"accuracy": 0.97, "evalLoss": 0.1}, size_bytes=10**9, parameters=10**8,
                    latency_ms=lat)
    ref = ArtifactRef(path="compressed/" + "x" * 400, digest="sha256:" + "a" * 64, size_bytes=10**9)
    cands = [Candidate(method="prune-unstructured", parameters={"amount": 0.5}, verdict=Verdict.REJECTED,
                       measured=meas, drop=0.5, speedup=lat, artifact=ref, rejection=Rejection.NOT_FASTER,
                       note="n" * 512) for _ in range(n)]
    return CompressionReport(metric="accuracy", higher_is_better=True, budget=AccuracyBudget(), select="best",
                             threads=2, parent=ref, baseline=meas, candidates=cands, chosen=0, artifact=ref,
                             reason=CompressionReason.COMPRESSED, message=message)


@pytest.mark.parametrize("n", [1, 8])
def test_termination_message_fits_4k(n: int) -> None:
    r = report(n, "m" * 1024)
    text = CompressionTermination.from_report(r, "compressed/report.json").encode()
    assert len(text.encode()) <= 4096
    back = CompressionTermination.model_validate_json(text)
    assert back.compressed and back.chosen == "prune-unstructured" and back.artifact == r.artifact
    assert back.reason == CompressionReason.COMPRESSED


def test_non_finite_numbers_never_reach_the_status() -> None:
    """A diverged candidate (perplexity inf, drop nan) is summarized without them: JSON, and so the API
    server, has no NaN or infinity; a termination message that carries them is refused."""
    r = report(1, "diverged")
    r = r.model_copy(update={"candidates": [r.candidates[0].model_copy(update={
        "drop": float("nan"), "measured": r.baseline.model_copy(update={"metric": float("inf")})})]})
    text = CompressionTermination.from_report(r, "compressed/report.json").encode()
    assert "NaN" not in text and "Infinity" not in text
    [cand] = CompressionTermination.model_validate_json(text).candidates
    assert cand.metric is None and cand.drop is None and cand.latency_ms == r.baseline.latency_ms
    hostile = text.replace('"verdict":"rejected"', '"verdict":"rejected","drop":NaN')
    with pytest.raises(ValidationError):
        CompressionTermination.model_validate_json(hostile)


def test_the_status_holds_every_field_of_the_termination_message() -> None:
    """`CompressionStatus.reported` copies the message field by field (extra fields are refused)."""
    from kubeforge_api.trainingjob import CompressionStatus

    assert set(CompressionTermination.model_fields) <= set(CompressionStatus.model_fields)
    term = CompressionTermination.from_report(report(2, "ok"), "compressed/report.json")
    status = CompressionStatus.reported(term, "pvc://models/runs/x", attempts=1)
    assert status.artifact is not None and status.artifact.uri == f"pvc://models/runs/x/{term.artifact.path}"


def test_a_size_objective_survives_its_own_dump_with_defaults() -> None:
    """The compression pod re-reads the spec the operator dumped, defaults included (minSpeedup 1)."""
    spec = CompressionSpec.model_validate({"methods": [{"quantize": {}}], "objective": "size"})
    assert CompressionSpec.model_validate(spec.model_dump(by_alias=True)).objective == "size"


def test_a_perplexity_increase_budget_is_a_relative_budget_on_perplexity() -> None:
    spec = CompressionSpec.model_validate({"methods": [{"quantize": {}}],
                                           "accuracyBudget": {"maxPerplexityIncrease": 0.02}})
    b = spec.accuracy_budget
    assert (b.metric, b.max_drop, b.relative) == ("perplexity", 0.02, True)
    assert CompressionSpec.model_validate(spec.model_dump(by_alias=True)).accuracy_budget == b
    with pytest.raises(ValidationError, match="maxPerplexityIncrease judges perplexity"):
        CompressionSpec.model_validate({"methods": [{"quantize": {}}],
                                        "accuracyBudget": {"maxPerplexityIncrease": 0.02, "metric": "accuracy"}})
