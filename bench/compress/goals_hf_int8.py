"""What the Hugging Face int8 benchmark (bench_hf_int8.py) measures: its section of docs/benchmarks.md,
read from bench/results/hf_int8.json. Its one goal is the accuracy budget the compression stage ran
with (accuracyBudget.maxDrop 0.01: at most 1 point); its speed-ups (fp32 time over int8 time, in the
form a server calls the model, interleaved rounds) are context until goals are set for them."""

from __future__ import annotations

from bench.rows import Bound, Goal, Obj, Row, Section, Value, ratio, unmeasured

BENCHMARK = "hf_int8"
GOALS = {"drop": Goal(ours=Bound("<=", 1, " point"))}
FORMS = {"int8": "dynamic int8 (eager back end)", "torchao": "torchao int8 under torch.compile"}


def _speedup(e: Obj, form: str, batch: int) -> Row:
    what = f"{FORMS[form]}, batch {batch}, token ids as the server pads them: speed-up vs fp32"
    part = e.get(form, {}).get(f"batch{batch}") if isinstance(e.get(form), dict) else None
    why = unmeasured(part, "ratio_median")
    if why or not isinstance(part, dict):
        return Row(BENCHMARK, what, missing=why)
    return Row(BENCHMARK, what, baseline=f"fp32 {part['base_ms']:.2f} ms", ours=f"{form} {part['other_ms']:.2f} ms",
               ratio=ratio(part, unit="x"))


def rows(r: Obj) -> list[Row]:
    e = r["hf_int8"]
    m = e["metric"]
    out = [Row(BENCHMARK, f"dynamic int8 through the compression stage, judged on {m['eval_samples']} JSONL eval rows: "
               "accuracy drop", baseline=f"fp32 {100 * m['fp32_accuracy']:.2f} %",
               ours=Value(m["drop_points"], digits=2, unit=" points",
                          detail=f" (int8 {100 * m['int8_accuracy']:.2f} %; the stage: {m['verdict']})"),
               goal=GOALS["drop"]),
           Row(BENCHMARK, "the stage's own speed-up at batch 1 and size ratio (its report)",
               ours=f"{m['stage_speedup_batch1']:.2f}x faster, {m['size_ratio']:.2f}x smaller")]
    if "loaded_agreement" in m:
        out.append(Row(BENCHMARK, "the published artifact loaded back through the one loader: eval rows whose "
                       "class agrees with fp32", ours=Value(m["loaded_agreement"], digits=3)))
    out += [_speedup(e, form, b) for form in FORMS for b in (1, 8) if form != "torchao" or "torchao" in e]
    rel = e.get("torchao_vs_eager")
    if isinstance(rel, dict):
        out += [Row(BENCHMARK, f"torchao compiled vs the eager back end, batch {b} (same rounds)",
                    ratio=ratio(rel[f"batch{b}"], unit="x")) for b in (1, 8) if f"batch{b}" in rel]
    return out


def facts(r: Obj) -> list[str]:
    model = r["hf_int8"]["model"]
    return [f"model BERT-style classifier, {model['layers']} layers of width {model['hidden']}, "
            f"{model['parameters'] / 1e6:.1f} M parameters, trained {model['train_steps']} steps",
            f"torch threads: {r['hf_int8'].get('threads', 1)}"]


SECTION = Section(BENCHMARK, "Compression of a Hugging Face classifier (CPU)", GOALS, rows, facts,
                  run="bench/compress/bench_hf_int8.py")
