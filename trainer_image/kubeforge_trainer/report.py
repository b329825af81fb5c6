"""Progress and metrics from your own training script (a TrainingJob with `command`): report them
here and `kubectl get tj` (progress, metric), `status.progress`, the loss curves and the dashboard
show them as they do for a built-in recipe. Only global rank 0 (torchrun's `RANK`) reports; on
every other rank each call does nothing, so the same script runs everywhere.

    from kubeforge_trainer.report import Report

    report = Report(total_steps=1000, batch_size=64)
    for step in range(1, 1001):
        ...
        report.step(step, loss=loss.item())
        if step % 100 == 0:
            report.evaluate(step, accuracy=accuracy, evalLoss=eval_loss)
            report.checkpoint(step)
    report.finish()

Any other process may serve the same document itself: `GET /progress?since=STEP` on port
`$KUBEFORGE_PROGRESS_PORT`, answering the JSON of `kubeforge_api.contracts.ProgressDoc`."""

from __future__ import annotations

import os
import time

from kubeforge_api.constants import Env

from .progress import ProgressReporter
from .rate import SmoothedRate
from .termination import termination_log
from .train.common import say, termination_message

EVAL_METRICS = ("evalLoss", "accuracy", "perplexity")  # the curves the operator keeps besides loss


class Report:
    """Rank 0's progress: served to the operator while the script runs, the final numbers in the
    pod's termination message at `finish()`."""

    def __init__(self, total_steps: int, batch_size: int = 0, steps_per_epoch: int = 0) -> None:
        port = os.environ.get(Env.PROGRESS_PORT)
        self.rank0 = int(os.environ.get("RANK", "0")) == 0
        self.reporter = ProgressReporter(None, int(port) if port else None) if self.rank0 else None
        self.total, self.batch, self.per_epoch = total_steps, batch_size, steps_per_epoch
        self.rate, self.last = SmoothedRate(), (time.perf_counter(), 0)
        if self.reporter:
            self.reporter.update(total_steps=total_steps, phase="training",
                                 attempt=int(os.environ.get(Env.ATTEMPT, "0")))

    def step(self, step: int, loss: float | None = None) -> None:
        """An optimizer step done (1-based), with its training loss."""
        if self.reporter is None:
            return
        now = time.perf_counter()
        seconds, samples = now - self.last[0], (step - self.last[1]) * self.batch
        self.last = (now, step)
        speed = self.rate.update(samples, seconds) if self.batch else 0.0
        epoch = (step - 1) // self.per_epoch if self.per_epoch else 0
        self.reporter.update(step=step, epoch=epoch, loss=loss, samples_per_second=speed,
                             eta_seconds=self.rate.eta((self.total - step) * self.batch) if self.batch else None)
        self.reporter.record("train", step=step, **({"loss": loss} if loss is not None else {}))

    def evaluate(self, step: int, **metrics: float) -> None:
        """Evaluation results at `step` (e.g. accuracy, evalLoss, perplexity): the job's metric."""
        if self.reporter is None:
            return
        self.reporter.update(eval={k: float(v) for k, v in metrics.items()})
        self.reporter.record("eval", step=step, **{k: float(v) for k, v in metrics.items() if k in EVAL_METRICS})
        say(f"step {step}/{self.total}: " + " ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    def checkpoint(self, step: int) -> None:
        """A checkpoint written at `step`."""
        if self.reporter is not None:
            self.reporter.update(last_checkpoint_step=step)
            say(f"checkpoint at step {step}")

    def finish(self) -> None:
        """Training is over: the final progress goes into the termination message the operator reads."""
        if self.reporter is None:
            return
        self.reporter.update(phase="finished", eta_seconds=None)
        termination_log().write_text(termination_message(None, self.reporter.final()))
        self.reporter.close()
