"""The compression stage: load the parent artifact, evaluate it, make one candidate per method,
evaluate it, time it against the baseline (interleaved rounds, in the form the server runs it) and
judge it (`gate`: the accuracy budget, then faster or smaller as the objective asks; select first:
stop at the first accepted; best: try all), write every candidate as an artifact and the report
next to them, and name the published one."""

from __future__ import annotations

import copy
import json
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from kubeforge_api.compression import (
    REPORT_FILE,
    ArtifactRef,
    Candidate,
    CompressionReport,
    CompressionSpec,
    Latency,
    Measured,
    Method,
    Verdict,
    speed_phrase,
)
from kubeforge_api.trainingjob import Recipe
from pydantic import ValidationError
from torch import nn

from .. import artifacts
from ..context import ConfigError
from ..data import Data
from ..data import load as load_data
from ..variants import encoded, serving_form, weights_bytes
from ..variants.codec import stored_parameters
from ..variants.quantize import QuantizeError, backend, slow_int8_cause
from . import gate, measure, prune
from .distill import distill


class CompressInputError(Exception):
    """The parent artifact, its data or the spec cannot be used (exit 78, never retried)."""


@dataclass
class Made:
    """One candidate before measurement: the model, how to store it, and what the card records."""

    model: nn.Module
    arch: dict[str, Any]
    encoding: str = "fp32"
    backend: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # the stored tensors, once encoded


@dataclass
class Outcome:
    report: CompressionReport
    models: list[nn.Module | None]  # in-memory candidates, index-aligned with report.candidates


def make(method: Method, teacher: nn.Module, arch: dict[str, Any], data: Data, recipe: Recipe) -> Made:
    """Apply one method to a copy of the teacher."""
    model = copy.deepcopy(teacher).eval()
    if method.quantize:
        q = method.quantize
        b = backend(q.backend, q.mode)
        n = min(q.calibration_samples, len(data.x_train))
        out = b.dynamic(model) if q.mode == "dynamic" else b.static(model, data.x_train[:n])
        return Made(out, arch, f"int8-{q.mode}", b.name)
    if method.prune:
        p = method.prune
        if p.structured:
            shapes = prune.structured(model, arch, p.amount)
            prune.fine_tune(model, data, recipe, p.fine_tune_steps)
            return Made(model, {**arch, "shapes": shapes})
        params = prune.unstructured(model, p.amount)
        prune.fine_tune(model, data, recipe, p.fine_tune_steps)
        prune.fold(params)
        return Made(model, arch, extra={"sparsity": prune.sparsity(model)})
    assert method.distill is not None
    s_arch, student = distill(teacher, arch, method.distill, data, recipe)
    return Made(student, s_arch)


def drop_of(base: float, value: float, higher_is_better: bool, relative: bool) -> float:
    d = base - value if higher_is_better else value - base
    return d / abs(base) if relative and base else d


def _load_parent(parent: Path, storage: Path) -> tuple[dict[str, Any], nn.Module, Recipe, Data]:
    try:
        card, model = artifacts.load_model(parent)
        recipe = Recipe.model_validate(card["recipe"])
        data = load_data(recipe, storage)
    except (artifacts.ArtifactError, ConfigError, ValidationError, KeyError) as e:
        raise CompressInputError(f"cannot compress {parent.name}: {e}") from None
    encoding = (card.get("compression") or {}).get("encoding", "fp32")
    if encoding != "fp32":
        origin = ((card.get("lineage") or {}).get("parent") or {}).get("path")
        raise CompressInputError(
            f"cannot compress {parent.name}: it is already compressed ({encoding}, by "
            f"{card['compression'].get('method', '?')}); compress the fp32 model it was made from"
            + (f" ({origin})" if origin else ""))
    if card.get("dataset", {}).get("digest") not in (None, data.digest):
        raise CompressInputError(f"the dataset the recipe names differs from the one {parent.name} was trained on")
    return card, model, recipe, data


def _ref(directory: Path, storage: Path, info: dict[str, Any]) -> ArtifactRef:
    try:
        path = str(directory.resolve().relative_to(storage.resolve()))
    except ValueError:
        raise CompressInputError(f"{directory} is not under the storage root {storage}") from None
    return ArtifactRef(path=path, digest=info["digest"], size_bytes=info["sizeBytes"])


@dataclass
class Stage:
    """What the steps of one run share: the parent, the spec, the baseline's numbers and warnings."""

    parent: Path
    card: dict[str, Any]
    teacher: nn.Module
    recipe: Recipe
    data: Data
    spec: CompressionSpec
    rounds: int
    metric: str = ""
    base_metrics: dict[str, float] = field(default_factory=dict)
    base_bytes: int = 0
    base_samples: list[measure.Samples] = field(default_factory=list)  # the baseline's rounds, every session
    warnings: list[str] = field(default_factory=list)

    @property
    def higher(self) -> bool:
        return self.metric == "accuracy"


def run(parent: Path, spec: CompressionSpec, out_dir: Path, storage: Path, threads: int,
        rounds: int = 7) -> Outcome:
    """Make, evaluate, time and judge one candidate per method in order; write them and the report."""
    torch.set_num_threads(threads)
    st = Stage(parent, *_load_parent(parent, storage), spec=spec, rounds=rounds)
    st.metric = spec.accuracy_budget.metric or ("perplexity" if st.data.task == "lm" else "accuracy")
    st.base_metrics = measure.metrics(st.teacher, st.data, st.recipe)
    st.base_bytes = (parent / st.card["weights"]["file"]).stat().st_size
    made: list[Made | None] = []
    cands: list[Candidate] = []
    for method in spec.methods:
        if spec.select == "first" and any(c.verdict == Verdict.ACCEPTED for c in cands):
            made.append(None)
            cands.append(Candidate(method=method.label(), parameters=method.parameters(), verdict=Verdict.SKIPPED))
            continue
        try:
            m = make(method, st.teacher, st.card["architecture"], st.data, st.recipe)
        except (QuantizeError, ValueError, RuntimeError, NotImplementedError) as e:
            made.append(None)
            cands.append(Candidate(method=method.label(), parameters=method.parameters(), verdict=Verdict.FAILED,
                                   error=(str(e).splitlines() or [type(e).__name__])[0][:1024]))
            continue
        made.append(m)
        cands.append(_judged(st, method, m))
    return _finish(st, made, cands, out_dir, storage, threads)


def _judged(st: Stage, method: Method, m: Made) -> Candidate:
    """Evaluate, encode and time one candidate (interleaved with the baseline, in the form the server
    runs it), then judge it."""
    got = measure.metrics(m.model, st.data, st.recipe)
    drop = drop_of(st.base_metrics[st.metric], got[st.metric], st.higher, st.spec.accuracy_budget.relative)
    m.state = encoded(m.model, m.encoding, m.backend)
    blob = weights_bytes(m.state)
    timed = measure.session([st.teacher, serving_form(m.backend, m.encoding, m.model)], st.data, st.rounds)
    base, own = timed.samples
    st.base_samples.append(base)
    if timed.attempts > 1:
        st.warnings.append(f"{method.label()}: timed {timed.attempts} times (a batch-1 call took longer than a "
                           "batch-8 call: the machine was busy)")
    extra: dict[str, Any] = {}
    if "sparsity" in m.extra:
        extra = {"sparsity": m.extra["sparsity"], "compressed_size_bytes": len(zlib.compress(blob, 6))}
    cand = Candidate(method=method.label(), parameters=method.parameters(), verdict=Verdict.ACCEPTED,
                     drop=drop if math.isnan(drop) else round(drop, 6), speedup=measure.speedup(base, own),
                     size_ratio=measure.sig(st.base_bytes / len(blob), 3), **extra,
                     measured=Measured(metric=got[st.metric], metrics=got, size_bytes=len(blob),
                                       parameters=stored_parameters(m.state), latency_ms=measure.latency(own)))
    warning = _slow_backend(m, cand)
    if warning:
        st.warnings.append(f"{cand.method}: {warning}")
    return gate.judge(cand, st.spec, bool(timed.invalid), warning)


def _slow_backend(m: Made, cand: Candidate) -> str:
    """A warning when an int8 back end is measurably slower than fp32 here: it is off its fast path."""
    spread = cand.speedup.batch1_spread if cand.speedup else None
    if not m.backend or spread is None or spread.high >= 1.0:
        return ""
    assert cand.speedup is not None
    cause = slow_int8_cause(m.backend)
    return (f"the int8 back end {m.backend} is {speed_phrase(cand.speedup.batch1)} than fp32 on this machine"
            + (f" ({cause})" if cause else ""))


def _baseline(st: Stage) -> Measured:
    pooled = {b: [x for s in st.base_samples for x in s[b]] for b in measure.BATCHES}
    lat = measure.latency(pooled) if st.base_samples else Latency(batch1=0, batch8=0)
    return Measured(metric=st.base_metrics[st.metric], metrics=st.base_metrics, size_bytes=st.base_bytes,
                    parameters=sum(p.numel() for p in st.teacher.state_dict().values()), latency_ms=lat)


def _finish(st: Stage, made: list[Made | None], cands: list[Candidate], out_dir: Path, storage: Path,
            threads: int) -> Outcome:
    """Write every measured candidate as an artifact, choose, and write the report."""
    parent_ref = ArtifactRef(path=_ref(st.parent, storage, {"digest": st.card["weights"]["digest"], "sizeBytes": 0}
                                       ).path, digest=st.card["weights"]["digest"],
                             size_bytes=sum(f.stat().st_size for f in st.parent.iterdir() if f.is_file()))
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(made):
        if m is None:
            continue
        directory = out_dir / f"{i}-{cands[i].method}"
        info = artifacts.write(directory, m.state, _card(st.card, m, cands[i], parent_ref, st.metric))
        cands[i] = cands[i].model_copy(update={"artifact": _ref(directory, storage, info)})
    chosen = gate.choose(st.spec, cands)
    reason, message = gate.outcome(cands, chosen, st.metric)
    spec = st.spec
    report = CompressionReport(
        metric=st.metric, higher_is_better=st.higher, budget=spec.accuracy_budget, select=spec.select,
        threads=threads, parent=parent_ref, baseline=_baseline(st), candidates=cands, chosen=chosen,
        artifact=cands[chosen].artifact if chosen is not None else None, reason=reason, message=message,
        objective=spec.objective, min_speedup=spec.min_speedup, rounds=st.rounds, warnings=st.warnings[:16])
    tmp = out_dir / (REPORT_FILE + ".tmp")
    tmp.write_text(json.dumps(report.dump(), indent=2))
    os.replace(tmp, out_dir / REPORT_FILE)
    return Outcome(report, [m.model if m else None for m in made])


def _card(parent: dict[str, Any], m: Made, cand: Candidate, parent_ref: ArtifactRef, metric: str) -> dict[str, Any]:
    keep: dict[str, Any] = {k: parent[k] for k in ("dataset", "recipe", "strategy") if k in parent}
    assert cand.measured is not None
    return {**keep, "architecture": m.arch, "metrics": cand.measured.metrics,
            "lineage": {**parent.get("lineage", {}), "parent": parent_ref.dump(), "method": cand.method,
                        "parameters": cand.parameters},
            "compression": {"method": cand.method, "parameters": cand.parameters, "encoding": m.encoding,
                            "backend": m.backend, "engine": torch.backends.quantized.engine if m.backend else "",
                            "metric": metric, "report": cand.model_copy(update={"artifact": None}).dump()}}
