"""Fuzz the parsers of what pods say (progress documents, termination messages): whatever bytes
arrive, they never raise, and whatever they accept is within bounds."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubeforge_api.contracts import (
    MAX_EVAL_KEYS,
    MAX_HISTORY_POINTS,
    MAX_STEP,
    ProgressDoc,
    TrainingResult,
    parse_progress,
    parse_result,
)

numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=20), st.booleans(), st.none())
json_values = st.one_of(numbers, st.lists(numbers, max_size=4),
                        st.dictionaries(st.text(max_size=6), st.one_of(numbers, st.lists(numbers, max_size=3)),
                                        max_size=4))
KEYS = ["step", "totalSteps", "epoch", "percent", "loss", "eval", "samplesPerSecond", "etaSeconds",
        "lastCheckpointStep", "attempt", "phase", "history", "artifact", "progress", "path", "digest", "sizeBytes"]
documents = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), json_values, max_size=12)


def encode(doc: Any, nest: int) -> bytes:
    text = json.dumps(doc, allow_nan=True)
    return ("[" * nest + text + "]" * nest).encode()


def bounded_progress(doc: ProgressDoc) -> None:
    assert 0 <= doc.step <= MAX_STEP and 0 <= doc.percent <= 100 and len(doc.eval) <= MAX_EVAL_KEYS
    assert all(math.isfinite(v) for v in doc.eval.values()) and len(doc.history) <= MAX_HISTORY_POINTS
    assert doc.loss is None or math.isfinite(doc.loss)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.integers(min_value=0, max_value=3000), st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_progress_parser_never_raises_and_never_lets_out_of_bounds_values_through(doc: dict[str, Any], nest: int,
                                                                                   encoding: str) -> None:
    body = encode(doc, nest if nest > 2900 else 0)
    for raw in (body, body.decode().encode(encoding, errors="replace")):
        parsed = parse_progress(raw)
        if parsed is not None:
            bounded_progress(parsed)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.booleans())
def test_termination_parser_never_raises_and_keeps_paths_and_digests_clean(doc: dict[str, Any],
                                                                            wrap: bool) -> None:
    message = json.dumps({"artifact": doc, "progress": doc} if wrap else doc, allow_nan=True)
    result = parse_result(message)
    if result is None:
        return
    assert isinstance(result, TrainingResult)
    if result.artifact is not None:
        assert ".." not in result.artifact.path.split("/") and not result.artifact.path.startswith("/")
        assert result.artifact.digest.startswith("sha256:") and len(result.artifact.digest) == 71
    if result.progress is not None:
        bounded_progress(result.progress)


def test_known_attacks_are_refused() -> None:
    digest = "sha256:" + "a" * 64
    for artifact in ({"path": "../../team-b/prod-model", "digest": digest, "sizeBytes": 1},
                     {"path": "model?x=1#frag", "digest": digest, "sizeBytes": 1},
                     {"path": "model", "digest": {"a": 1}, "sizeBytes": 1},
                     {"path": "model", "digest": digest, "sizeBytes": -5}):
        assert parse_result(json.dumps({"artifact": artifact})) is None
    assert parse_result(json.dumps({"progress": {"step": 10**17}})) is None
    assert parse_result(json.dumps({"progress": {"percent": "x" * 300}})) is None
    assert parse_progress(b'{"step": 1, "loss": NaN}') is None
