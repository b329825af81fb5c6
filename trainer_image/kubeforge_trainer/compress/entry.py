"""`python -m kubeforge_trainer compress`: what the compression pod runs.

Contract (env, each overridable by the argument of the same meaning):

| env                          | argument     | meaning                                                         |
| ---------------------------- | ------------ | --------------------------------------------------------------- |
| KUBEFORGE_STORAGE_DIR        | --storage    | the job's storage root (claim mount + spec.storage.path)        |
| KUBEFORGE_COMPRESSION_SPEC   | --spec       | CompressionSpec JSON (`@file` reads a file); else:              |
| KUBEFORGE_SPEC               |              | the TrainingJob spec JSON, whose `compression` is used          |
| KUBEFORGE_COMPRESS_INPUT     | --artifact   | parent artifact dir, relative to storage (default `artifact`)   |
| KUBEFORGE_COMPRESS_OUTPUT    | --output     | output dir, relative to storage (default `compressed`)          |
| KUBEFORGE_COMPRESS_THREADS   | --threads    | torch threads for evaluation and timing (the operator sets the  |
|                              |              | whole CPUs the pod requests; capped by the usable CPUs)         |
| KUBEFORGE_COMPRESS_EVAL_DATA | --eval-data  | local path of spec.compression.evalData (its format and         |
|                              |              | maxSamples come from the spec; without one, from the file name) |

The parent may be a Kubeforge artifact (evaluated on its recipe's held-out split) or, for a command
job, a Hugging Face transformers directory, evaluated on the eval data; a torch.export program has
no applicable method (the stage reports CompressionFailed and exits 0).

Writes `<output>/<i>-<method>/` (one artifact per candidate) and `<output>/report.json`
(CompressionReport), and a CompressionTermination (<= 4 KiB) to /dev/termination-log when present.
Exit codes: 0 when the stage ran (published, rejected by the budget, or every method failed: the
termination message says which), 78 (EXIT_INVALID_CONFIG) for invalid input (spec, missing or
tampered artifact, data that differs from training), never retried; anything else is a crash."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from kubeforge_api.compression import (
    DEFAULT_INPUT,
    DEFAULT_OUTPUT,
    REPORT_FILE,
    CompressEnv,
    CompressionReason,
    CompressionSpec,
    CompressionTermination,
)
from kubeforge_api.constants import TERMINATION_LOG_PATH, Env
from kubeforge_api.exitcodes import EXIT_INVALID_CONFIG
from pydantic import ValidationError

from ..evaldata import EvalSource, infer_format
from ..train.cpus import available_cpus
from .pipeline import CompressInputError, NoApplicableMethod, run


def termination_log() -> Path:
    """The kubelet's termination-message file; local runs point it into the run folder."""
    return Path(os.environ.get(Env.TERMINATION_LOG, TERMINATION_LOG_PATH))


def describe(e: ValidationError, prefix: str = "spec.compression") -> str:
    """One line per error, each naming the field (camelCase path), e.g. `spec.compression.methods[0]...`."""
    lines = []
    for err in e.errors():
        path = prefix
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        lines.append(f"{path}: {err['msg']}")
    return "; ".join(lines)


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_for(arg: int | None, env: Mapping[str, str]) -> int:
    """Threads to evaluate and time with: --threads, else KUBEFORGE_COMPRESS_THREADS (the operator
    sets the whole CPUs the pod requests: what the scheduler guarantees; more threads would compete
    with neighbours and time their load), never more than the CPUs this process may use (affinity,
    CFS quota, limit); without either, those usable CPUs."""
    usable = available_cpus(env)
    try:
        asked = arg or int(env.get(CompressEnv.THREADS, "0"))
    except ValueError:
        asked = 0
    return max(1, min(usable, asked)) if asked > 0 else usable


def load_spec(text: str | None, env: Mapping[str, str]) -> CompressionSpec:
    """The spec from --spec / KUBEFORGE_COMPRESSION_SPEC, else spec.compression of KUBEFORGE_SPEC."""
    raw = text or env.get(CompressEnv.SPEC)
    try:
        if raw:
            doc = json.loads(Path(raw[1:]).read_text() if raw.startswith("@") else raw)
        elif env.get(CompressEnv.JOB_SPEC):
            doc = json.loads(env[CompressEnv.JOB_SPEC]).get("compression")
            if doc is None:
                raise ValueError("the TrainingJob spec has no spec.compression")
        else:
            raise ValueError(f"no compression spec: set {CompressEnv.SPEC} or {CompressEnv.JOB_SPEC}, or pass --spec")
        return CompressionSpec.model_validate(doc)
    except ValidationError as e:
        raise ValueError(describe(e)) from None
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"unreadable compression spec: {e}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kubeforge_trainer compress",
                                description="Compress a trained artifact (the TrainingJob compression stage).")
    p.add_argument("--storage", help=f"storage root (env {CompressEnv.STORAGE_DIR})")
    p.add_argument("--spec", help=f"CompressionSpec JSON or @file (env {CompressEnv.SPEC})")
    p.add_argument("--artifact", help=f"parent artifact, relative to storage (env {CompressEnv.INPUT})")
    p.add_argument("--output", help=f"output dir, relative to storage (env {CompressEnv.OUTPUT})")
    p.add_argument("--threads", type=int, help=f"torch threads (env {CompressEnv.THREADS})")
    p.add_argument("--eval-data", help=f"local path of the evaluation data (env {CompressEnv.EVAL_DATA})")
    return p


def eval_source(spec: CompressionSpec, arg: str | None, env: Mapping[str, str]) -> EvalSource | None:
    """The user's evaluation data: where it lies here (--eval-data, else KUBEFORGE_COMPRESS_EVAL_DATA),
    its format and bound from spec.compression.evalData (else the format its name implies)."""
    path = arg or env.get(CompressEnv.EVAL_DATA)
    if not path:
        if spec.eval_data is not None:
            raise ValueError(f"spec.compression.evalData is set but {CompressEnv.EVAL_DATA} is not: the data was "
                             "not mounted or fetched for this pod")
        return None
    if spec.eval_data is not None:
        return EvalSource(Path(path), spec.eval_data.format, spec.eval_data.max_samples)
    return EvalSource(Path(path), infer_format(Path(path)))


def _terminate(message: CompressionTermination) -> None:
    path = termination_log()
    with contextlib.suppress(OSError):  # outside a pod (and a local run) there is no termination log
        if path.exists() or Env.TERMINATION_LOG in os.environ:
            path.write_text(message.encode())


def main(argv: list[str], env: Mapping[str, str] = os.environ) -> int:
    args = _parser().parse_args(argv)
    storage = Path(args.storage or env.get(CompressEnv.STORAGE_DIR, "."))
    output = args.output or env.get(CompressEnv.OUTPUT, DEFAULT_OUTPUT)
    report_path = str(Path(output) / REPORT_FILE)
    try:
        spec = load_spec(args.spec, env)
        threads = threads_for(args.threads, env)
        outcome = run(storage / (args.artifact or env.get(CompressEnv.INPUT, DEFAULT_INPUT)), spec,
                      storage / output, storage, threads, eval_data=eval_source(spec, args.eval_data, env))
    except NoApplicableMethod as e:  # the stage's verdict on this model: nothing to try, nothing wrong
        print(f"kubeforge-compress: {e}", file=sys.stderr)
        _terminate(CompressionTermination(compressed=False, reason=CompressionReason.COMPRESSION_FAILED,
                                          message=str(e)[:512], report_path=""))
        return 0
    except (ValueError, CompressInputError) as e:
        print(f"kubeforge-compress: {e}", file=sys.stderr)
        _terminate(CompressionTermination(compressed=False, reason=CompressionReason.COMPRESSION_FAILED,
                                          message=str(e)[:512], report_path=""))
        return EXIT_INVALID_CONFIG
    term = CompressionTermination.from_report(outcome.report, report_path)
    _terminate(term)
    print(json.dumps({"compression": json.loads(term.encode())}), flush=True)
    return 0
