"""The compression stage: load the parent artifact, evaluate it, make one candidate per method,
gate each on the accuracy budget (select first: stop at the first accepted; best: try all), time
the baseline and every candidate together (interleaved), write every candidate as an artifact and
the report next to them, and name the published one."""

from __future__ import annotations

import copy
import json
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
    CompressionReason,
    CompressionReport,
    CompressionSpec,
    Latency,
    Measured,
    Method,
    Verdict,
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
from ..variants.quantize import QuantizeError, backend
from . import measure, prune
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
    if card.get("dataset", {}).get("digest") not in (None, data.digest):
        raise CompressInputError(f"the dataset the recipe names differs from the one {parent.name} was trained on")
    return card, model, recipe, data


def _ref(directory: Path, storage: Path, info: dict[str, Any]) -> ArtifactRef:
    try:
        path = str(directory.resolve().relative_to(storage.resolve()))
    except ValueError:
        path = str(directory)
    return ArtifactRef(path=path, digest=info["digest"], size_bytes=info["sizeBytes"])


def run(parent: Path, spec: CompressionSpec, out_dir: Path, storage: Path, threads: int,
        rounds: int = 7) -> Outcome:
    torch.set_num_threads(threads)
    card, teacher, recipe, data = _load_parent(parent, storage)
    metric = spec.accuracy_budget.metric or ("perplexity" if data.task == "lm" else "accuracy")
    higher = metric == "accuracy"
    base_metrics = measure.metrics(teacher, data, recipe)
    made: list[Made | None] = []
    cands: list[Candidate] = []
    for method in spec.methods:
        if spec.select == "first" and any(c.verdict == Verdict.ACCEPTED for c in cands):
            made.append(None)
            cands.append(Candidate(method=method.label(), parameters=method.parameters(), verdict=Verdict.SKIPPED))
            continue
        try:
            m = make(method, teacher, card["architecture"], data, recipe)
        except (QuantizeError, ValueError, RuntimeError, NotImplementedError) as e:
            made.append(None)
            cands.append(Candidate(method=method.label(), parameters=method.parameters(), verdict=Verdict.FAILED,
                                   error=(str(e).splitlines() or [type(e).__name__])[0][:1024]))
            continue
        got = measure.metrics(m.model, data, recipe)
        drop = drop_of(base_metrics[metric], got[metric], higher, spec.accuracy_budget.relative)
        verdict = Verdict.ACCEPTED if drop <= spec.accuracy_budget.max_drop + 1e-12 else Verdict.REJECTED
        made.append(m)
        cands.append(Candidate(method=method.label(), parameters=method.parameters(), verdict=verdict, drop=drop,
                               measured=Measured(metric=got[metric], metrics=got, size_bytes=0, parameters=0,
                                                 latency_ms=Latency(batch1=0, batch8=0))))
    return _finish(parent, card, teacher, data, spec, metric, higher, base_metrics, made, cands, out_dir, storage,
                   threads, rounds)


def _choose(spec: CompressionSpec, cands: list[Candidate]) -> int | None:
    ok = [i for i, c in enumerate(cands) if c.verdict == Verdict.ACCEPTED and c.measured]
    if not ok:
        return None
    if spec.select == "first":
        return ok[0]
    return min(ok, key=lambda i: cands[i].measured.latency_ms.batch1)  # type: ignore[union-attr]


def _reason(cands: list[Candidate], chosen: int | None, metric: str) -> tuple[CompressionReason, str]:
    if chosen is not None:
        c = cands[chosen]
        assert c.measured and c.speedup
        return CompressionReason.COMPRESSED, (
            f"{c.method}: {metric} {c.measured.metric:.4g} (drop {c.drop:.4g}), {c.size_ratio:.2f}x smaller, "
            f"{c.speedup.batch1:.2f}x faster at batch 1")
    if any(c.verdict == Verdict.REJECTED for c in cands):
        worst = ", ".join(f"{c.method} drop {c.drop:.4g}" for c in cands if c.verdict == Verdict.REJECTED)
        return CompressionReason.ACCURACY_BUDGET_EXCEEDED, f"no candidate within the accuracy budget ({worst})"
    errors = "; ".join(f"{c.method}: {c.error}" for c in cands if c.error)
    return CompressionReason.COMPRESSION_FAILED, f"every method failed ({errors})"[:1024]


def _finish(parent: Path, card: dict[str, Any], teacher: nn.Module, data: Data, spec: CompressionSpec, metric: str,
            higher: bool, base_metrics: dict[str, float], made: list[Made | None], cands: list[Candidate],
            out_dir: Path, storage: Path, threads: int, rounds: int) -> Outcome:
    live = [(i, m) for i, m in enumerate(made) if m is not None]
    served = [serving_form(m.backend, m.encoding, m.model) for _, m in live]  # timed as the server runs them
    times = measure.latencies([teacher, *served], data, rounds)
    base_bytes = (parent / card["weights"]["file"]).stat().st_size
    base = Measured(metric=base_metrics[metric], metrics=base_metrics, size_bytes=base_bytes,
                    parameters=sum(p.numel() for p in teacher.state_dict().values()),
                    latency_ms=Latency(batch1=times[0][1], batch8=times[0][8]))
    blobs: dict[int, tuple[dict[str, torch.Tensor], bytes]] = {}
    for (i, m), t in zip(live, times[1:], strict=True):
        state = encoded(m.model, m.encoding, m.backend)
        blob = weights_bytes(state)
        blobs[i] = (state, blob)
        lat = Latency(batch1=t[1], batch8=t[8])
        before = cands[i].measured
        assert before is not None
        measured = before.model_copy(update={"size_bytes": len(blob), "latency_ms": lat,
                                                        "parameters": stored_parameters(state)})
        extra: dict[str, Any] = {}
        if "sparsity" in m.extra:
            extra = {"sparsity": m.extra["sparsity"], "compressed_size_bytes": len(zlib.compress(blob, 6))}
        cands[i] = cands[i].model_copy(update={
            "measured": measured, "size_ratio": base_bytes / len(blob), **extra,
            "speedup": Latency(batch1=base.latency_ms.batch1 / lat.batch1, batch8=base.latency_ms.batch8 / lat.batch8)})
    parent_ref = ArtifactRef(path=_ref(parent, storage, {"digest": card["weights"]["digest"], "sizeBytes": 0}).path,
                             digest=card["weights"]["digest"],
                             size_bytes=sum(f.stat().st_size for f in parent.iterdir() if f.is_file()))
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, m in live:
        directory = out_dir / f"{i}-{cands[i].method}"
        variant_card = _card(card, m, cands[i], parent_ref, metric)
        info = artifacts.write(directory, blobs[i][0], variant_card)
        cands[i] = cands[i].model_copy(update={"artifact": _ref(directory, storage, info)})
    chosen = _choose(spec, cands)
    reason, message = _reason(cands, chosen, metric)
    report = CompressionReport(
        metric=metric, higher_is_better=higher, budget=spec.accuracy_budget, select=spec.select, threads=threads,
        parent=parent_ref, baseline=base, candidates=cands, chosen=chosen,
        artifact=cands[chosen].artifact if chosen is not None else None, reason=reason, message=message)
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
