"""`make bench` never loses finished results: the report renders whatever parts exist, and a part
that failed or never ran shows as not measured instead of breaking the whole page."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType


def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", Path(__file__).parents[2] / "bench" / "report.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_trainer_table_keeps_finished_parts_and_marks_failed_ones() -> None:
    r = report()
    done = {"ratio_median": 0.98, "ratio_min": 0.9, "ratio_max": 1.1, "rounds": 5, "losses_equal_1e-5": True,
            "date": "2026-11-28 18:00 UTC"}
    lines = r._trainer_section({"machine": "m", "trainer_vs_loop_1ms": done,
                                "fsdp_vs_ddp": {"error": "RuntimeError: rank 1 | died\ntrace", "date": "d"}})
    text = "\n".join(lines)
    assert "0.980 (0.900-1.100, n=5) | yes | ≥ 0.97 | met" in text
    assert "not measured (RuntimeError: rank 1 / died)" in text  # a '|' would break the table
    assert text.count("**not measured**") == 5  # 1 ms concurrent, 10 ms, DDP, FSDP and MFU


def test_partial_operator_results_do_not_break_the_page() -> None:
    r = report()
    lines = r._operator_section({"machine": "m"}, datetime.now(UTC))
    assert any("Results incomplete" in line for line in lines)
    assert r._trainer_section(None)[2].startswith("Not measured yet")
