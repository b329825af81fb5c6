"""The language-model sections of docs/benchmarks.md judge what the issues ask: int8 decode speed-up
through the compression stage and through the engine (>= 1.5x, bounds inclusive) at a perplexity
increase of at most 2 %, the serving goals against B0 and B1, and the fine-tuning goals, with the
correctness goals named as tests, never as met."""

from __future__ import annotations

import json
from pathlib import Path

from bench.compress.goals_llm_int8 import SECTION as LLM_INT8
from bench.serve.goals_llm import SECTION as LLM
from bench.train.goals_finetune import SECTION as FINETUNE

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def test_int8_goals_bound_decode_speed_and_perplexity() -> None:
    results = json.loads((RESULTS / "llm_int8.json").read_text())
    results["stage"]["speedup_batch1"]["median"] = 1.5
    results["stage"]["perplexity"]["increase"] = 0.02
    results["serving"]["ratio_median"] = 1.5
    judged = [row for row in LLM_INT8.rows(results) if row.goal is not None]
    assert [row.met for row in judged] == [True, True, True]
    results["stage"]["speedup_batch1"]["median"] = 1.49
    results["stage"]["perplexity"]["increase"] = 0.0201
    results["serving"]["ratio_median"] = 1.49
    assert [row.met for row in LLM_INT8.rows(results) if row.goal is not None] == [False, False, False]


def test_serving_goals_read_each_ratio_and_the_ttft_difference_both_ways() -> None:
    results = json.loads((RESULTS / "llm.json").read_text())
    results["results"]["server_vs_client_ttft_p50"]["median"] = 0.89
    [ttft] = [row for row in LLM.rows(results) if "server-reported" in row.what]
    assert ttft.met is False
    results["results"]["throughput_vs_b0"]["median"] = 10.0
    assert LLM.rows(results)[0].met is True


def test_fine_tuning_correctness_goals_are_tests_not_verdicts() -> None:
    rows = FINETUNE.rows(json.loads((RESULTS / "finetune.json").read_text()))
    tests = [row for row in rows if row.missing]
    assert len(tests) == 3 and all("tests/component/" in row.missing and row.met is None for row in tests)
