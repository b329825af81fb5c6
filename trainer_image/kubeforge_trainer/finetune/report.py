"""What rank 0 tells the world while a fine-tune runs and when it ends: progress (loss, sequences/s,
ETA, and in `eval` the eval loss, perplexity and training tokens/s) and history points for the
operator and the dashboard, one log line per evaluation and checkpoint, and the typed termination
message: the merged model, the adapter, the evaluation and the final progress with as much of the
curve as fits."""

from __future__ import annotations

import time
from typing import Any

from kubeforge_api.contracts import MAX_HISTORY_POINTS, TrainingResult
from kubeforge_api.finetune import Evaluation
from kubeforge_api.model import TERMINATION_LIMIT

from ..context import JobContext
from ..progress import ProgressReporter
from ..rate import SmoothedRate
from ..train.common import say, thin

HISTORY_KEYS = ("kind", "step", "loss", "evalLoss", "perplexity")


class Log:
    """Rank 0's reporting (a no-op elsewhere: `reporter` is None)."""

    def __init__(self, reporter: ProgressReporter | None, ctx: JobContext, start: int, total: int,
                 resumed_from: int | None) -> None:
        self.reporter, self.total = reporter, total
        self.rate = SmoothedRate()
        self.eval: dict[str, float] = {}
        self.t_last = time.perf_counter()
        if reporter is None:
            return
        reporter.update(total_steps=total, step=start, phase="training", attempt=ctx.attempt,
                        last_checkpoint_step=resumed_from, resumed_from=resumed_from)
        reporter.record("start", step=start, attempt=ctx.attempt, resumedFrom=resumed_from)
        say(f"attempt {ctx.attempt}: resumed from the checkpoint at step {resumed_from}, {total - start} steps to go"
            if resumed_from is not None else f"fine-tuning {total} steps")

    def evaluated(self, step: int, epoch: int, metrics: dict[str, float], label: str) -> None:
        self.eval.update(metrics)
        if self.reporter is None:
            return
        self.reporter.update(eval=dict(self.eval))
        self.reporter.record("eval", step=step, epoch=epoch, **metrics)
        say(f"{label} (step {step}): eval loss {metrics['evalLoss']:.4f}, perplexity {metrics['perplexity']:.4g}")

    def stepped(self, done: int, epoch: int, loss: float, lr: float, sequences: int, tokens_per_second: float) -> None:
        if self.reporter is None:
            return
        now = time.perf_counter()
        seconds, self.t_last = max(now - self.t_last, 1e-9), now
        self.eval["tokensPerSecond"] = tokens_per_second
        self.reporter.update(step=done, epoch=epoch, loss=loss, eval=dict(self.eval),
                             samples_per_second=self.rate.update(sequences, seconds),
                             eta_seconds=self.rate.eta((self.total - done) * sequences))
        self.reporter.record("train", step=done, loss=loss, samplesPerSecond=sequences / seconds, lr=lr)

    def checkpointed(self, step: int) -> None:
        if self.reporter is not None:
            self.reporter.update(last_checkpoint_step=step)
            say(f"checkpoint at step {step}")


def termination_message(result: dict[str, Any], final: dict[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """The typed result (artifact, adapterArtifact, evaluation, progress) within the kubelet's limit,
    the curve thinned evenly per kind until it fits."""
    points = [p for p in final.get("history", []) if p.get("kind") in ("train", "eval")]
    while True:
        slim = [{k: round(v, 5) if isinstance(v, float) else v for k, v in p.items() if k in HISTORY_KEYS}
                for p in points]
        if len(slim) <= MAX_HISTORY_POINTS:
            doc = TrainingResult.model_validate({**result, "progress": {**final, "history": slim}})
            message = doc.model_dump_json(by_alias=True, exclude_none=True)
            if len(message) <= limit or not points:
                return message
        points = thin(points)


def evaluation(before: dict[str, float], after: dict[str, float], fraction: float,
               tokens_per_second: float) -> Evaluation:
    def point(m: dict[str, float]) -> dict[str, float]:
        return {"loss": m["evalLoss"], "perplexity": m["perplexity"]}

    return Evaluation.model_validate({"before": point(before), "after": point(after), "trainableFraction": fraction,
                                      "tokensPerSecond": tokens_per_second})
