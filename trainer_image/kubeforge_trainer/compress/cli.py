"""`kubeforge compress MODEL_DIR --method ... --budget ... [--eval-data FILE]`: the compression stage
on an existing model, printing the report as a table (rich) and where it wrote, or, with --json, the
typed CompressionReport. MODEL_DIR is a Kubeforge artifact (trained by `kubeforge run` or elsewhere
in our format, evaluated on its recipe's held-out split) or a Hugging Face transformers directory,
evaluated on --eval-data.

Exit codes: 0 done (whatever the verdict), 78 invalid method, budget or artifact, 2 bad usage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kubeforge_api.compression import REPORT_FILE, CompressionReport, CompressionSpec, speed_phrase
from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from ..evaldata import FORMATS, EvalSource, infer_format

METHOD_SYNTAX = """\
methods (--method, repeatable, tried in order) are written NAME[:MODE][,key=value...]:
  quantize                                        dynamic int8 (Linear layers; MLPs, transformers)
  quantize:static,calibrationSamples=512          int8 weights and activations (CNNs, MLPs)
  quantize:dynamic,backend=torchao                torchao's int8 (backend: auto, eager, torchao)
  prune:structured,amount=0.5,fineTuneSteps=50    remove half the neurons/channels, then fine-tune
  prune:unstructured,amount=0.8                   zero 80 % of the weights (smaller zlib size only)
  distill,depth=1,width=64,steps=300,temperature=2,alpha=0.5   train a smaller student

A candidate is published when its metric stays within --budget and it is measurably faster at
batch 1 (--objective latency, by --min-speedup) or smaller (--objective size); the report
(report.json) and one artifact per candidate go to --output.

A Hugging Face model (a sequence or image classifier, or a causal LM) is evaluated on your data,
--eval-data, in one of these formats (--eval-format; by default the one its name implies):
  jsonl     one {"text": ..., "label": ...} per line, label a name of the model's id2label or an index
  images    a directory of LABEL/IMAGE files (.npy HxWxC uint8; PNG/JPEG too when Pillow is installed)
  tensors   a .safetensors file with `inputs` (token ids or pixel values) and `labels`
  text      plain text: a causal LM's perplexity over windows of up to 128 tokens
Only quantize (dynamic int8) applies to it; its int8 variant is a Kubeforge artifact that also
holds its config and tokenizer files. `--method quantize --method quantize:dynamic,backend=torchao
--select best` publishes the faster back end (torchao runs under torch.compile: a minute to compile
on a cold cache, faster on a CPU with AVX512-VNNI)."""

MODES: dict[str, tuple[str, dict[str, Any]]] = {"quantize": ("mode", {"dynamic": "dynamic", "static": "static"}),
         "prune": ("structured", {"structured": True, "unstructured": False})}


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_method(text: str) -> dict[str, Any]:
    """`prune:unstructured,amount=0.8` -> {"prune": {"structured": False, "amount": 0.8}}."""
    head, *pairs = text.split(",")
    name, _, mode = head.partition(":")
    body: dict[str, Any] = {}
    if mode:
        if name not in MODES or mode not in MODES[name][1]:
            raise ValueError(f"--method {text!r}: unknown mode {mode!r} for {name!r}")
        body[MODES[name][0]] = MODES[name][1][mode]
    student: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise ValueError(f"--method {text!r}: expected key=value, got {pair!r}")
        (student if name == "distill" and key in ("depth", "width") else body)[key] = _value(value)
    if student:
        body["student"] = student
    return {name: body}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubeforge compress", description=__doc__.split("\n\n")[0],
                                epilog=METHOD_SYNTAX, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", type=Path, help="model directory: a Kubeforge artifact (model.safetensors + "
                   "model-card.json) or a Hugging Face transformers directory (needs --eval-data)")
    p.add_argument("--method", action="append", required=True,
                   help="a method to try, e.g. quantize or prune:structured,amount=0.5 (repeatable; see below)")
    p.add_argument("--budget", type=float, default=0.01, help="largest allowed metric drop (accuracy 0.01 = 1 point)")
    p.add_argument("--relative", action="store_true", help="--budget is a fraction of the baseline metric")
    p.add_argument("--metric", choices=["accuracy", "perplexity", "evalLoss"], help="default: the recipe's")
    p.add_argument("--select", choices=["first", "best"], default="first",
                   help="publish the first candidate that passes, or the best one (default: first)")
    p.add_argument("--objective", choices=["latency", "size"], default="latency",
                   help="what compression is for: faster at batch 1, or smaller weights (default: latency)")
    p.add_argument("--min-speedup", type=float, help="objective latency: smallest batch-1 speed-up (default 1.0)")
    p.add_argument("--output", type=Path, help="where candidates + report.json go (default: ARTIFACT/../compressed)")
    p.add_argument("--storage", type=Path, help="root that dataset paths are relative to (default: ARTIFACT/..)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for timing (default: the usable CPUs)")
    p.add_argument("--eval-data", type=Path, help="your evaluation data (a file, or a directory of images)")
    p.add_argument("--eval-format", choices=list(FORMATS), help="its format (default: from the name; see below)")
    p.add_argument("--max-samples", type=int, default=2000,
                   help="examples (text: token windows) evaluated at most (default 2000)")
    p.add_argument("--json", action="store_true", help="print the typed CompressionReport as JSON")
    return p


def eval_source(args: argparse.Namespace) -> EvalSource | None:
    if args.eval_data is None:
        if args.eval_format:
            raise ValueError("--eval-format needs --eval-data")
        return None
    if args.max_samples < 1:
        raise ValueError("--max-samples must be at least 1")
    path = args.eval_data.resolve()
    return EvalSource(path, args.eval_format or infer_format(path), args.max_samples)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _speed(ratio: float | None) -> str:
    return "-" if ratio is None else speed_phrase(ratio)


def table(report: CompressionReport) -> Table:
    t = Table(title=f"compression of {report.parent.path} ({report.metric}, budget {report.budget.max_drop:g}"
                    f"{' relative' if report.budget.relative else ''}, objective {report.objective}, select "
                    f"{report.select}, {report.threads} threads, {report.rounds} rounds)")
    ms = "ms/decode step" if report.timing == "decode" else "ms"  # a causal LM is timed by its decode steps
    for col in ("", "method", "verdict", report.metric, "drop", "size KiB", "smaller", f"{ms} b1", f"{ms} b8",
                "speed b1", "speed b8", "artifact"):
        t.add_column(col, justify="left" if col in ("method", "verdict", "artifact") else "right")
    b = report.baseline
    t.add_row("", "baseline (fp32)", "-", _fmt(b.metric, ".4f"), "-", _fmt(b.size_bytes / 1024, ".1f"), "1.00x",
              _fmt(b.latency_ms.batch1, ".4g"), _fmt(b.latency_ms.batch8, ".4g"), "-", "-", report.parent.path)
    for i, c in enumerate(report.candidates):
        m = c.measured
        mark = "*" if i == report.chosen else ""
        sparse = (f"sparsity {c.sparsity:.0%}, zlib {c.compressed_size_bytes / 1024:.1f} KiB"
                  if c.sparsity is not None and c.compressed_size_bytes is not None else "")
        note = "; ".join(x for x in (c.error, sparse) if x)
        verdict = c.verdict.value + (f" ({c.rejection.value})" if c.rejection else "")
        t.add_row(mark, c.method, verdict, _fmt(m.metric if m else None, ".4f"), _fmt(c.drop, ".4f"),
                  _fmt(m.size_bytes / 1024 if m else None, ".1f"), _fmt(c.size_ratio, ".2f") + "x" * bool(c.size_ratio),
                  _fmt(m.latency_ms.batch1 if m else None, ".4g"), _fmt(m.latency_ms.batch8 if m else None, ".4g"),
                  _speed(c.speedup.batch1 if c.speedup else None), _speed(c.speedup.batch8 if c.speedup else None),
                  (c.artifact.path if c.artifact else "") + (f" ({note})" if note else ""))
    return t


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    console = Console(width=None if Console().is_terminal else 200)
    err = Console(stderr=True, soft_wrap=True)  # one error, one line: never wrapped at the terminal's width
    try:
        doc = {"methods": [parse_method(m) for m in args.method], "select": args.select, "objective": args.objective,
               **({"minSpeedup": args.min_speedup} if args.min_speedup is not None else {}),
               "accuracyBudget": {"maxDrop": args.budget, "relative": args.relative,
                                  **({"metric": args.metric} if args.metric else {})}}
        spec = CompressionSpec.model_validate(doc)
        source = eval_source(args)
    except ValidationError as e:
        from .entry import describe

        err.print(f"kubeforge compress: {describe(e, 'compression')}", markup=False)
        return EXIT_INVALID_CONFIG
    except ValueError as e:
        err.print(f"kubeforge compress: {e}", markup=False)
        return EXIT_INVALID_CONFIG
    from .entry import usable_cpus
    from .pipeline import CompressInputError, run

    artifact = args.artifact.resolve()
    storage = (args.storage or artifact.parent).resolve()
    output = (args.output or artifact.parent / "compressed").resolve()
    try:
        for what, path in (("ARTIFACT", artifact), ("--output", output)):  # the report names both relative to it
            if not path.is_relative_to(storage):
                raise CompressInputError(f"{what} {path} must be under the storage root {storage} (see --storage)")
        outcome = run(artifact, spec, output, storage, args.threads or usable_cpus(), eval_data=source)
    except CompressInputError as e:
        err.print(f"kubeforge compress: {e}", markup=False)
        return EXIT_INVALID_CONFIG
    if args.json:
        print(json.dumps(outcome.report.dump(), indent=2))
    else:
        report = outcome.report
        console.print(table(report))
        for c in report.candidates:  # the verdict in words, one line each
            if c.note:
                console.print(f"{c.method}: {c.verdict.value}, {c.note}", markup=False, soft_wrap=True)
        console.print(f"{report.reason.value}: {report.message}", markup=False, soft_wrap=True)
        for warning in report.warnings:
            console.print(f"warning: {warning}", markup=False, soft_wrap=True)
        written = sum(c.artifact is not None for c in report.candidates)
        console.print(f"wrote {written} candidate artifact{'s' * (written != 1)} and the report to "
                      f"{output / REPORT_FILE}" + (f"; published: {storage / report.artifact.path}"
                                                   if report.artifact else "; nothing published"),
                      markup=False, soft_wrap=True)
    return 0
