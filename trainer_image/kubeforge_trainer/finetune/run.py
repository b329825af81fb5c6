"""A fine-tune from start to finish on every rank: inputs from the env (where the operator mounted or
copied the base model and the data), data checked and encoded before the model loads, the model
built and wrapped, resumed from the newest checkpoint when there is one, evaluated before training,
trained, evaluated after, and exported by rank 0 with the termination message."""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from kubeforge_api.finetune import DATA_ENV, EVAL_DATA_ENV, MODEL_DIR_ENV, Finetune
from kubeforge_api.trainingjob import Strategy

from ..context import ConfigError, JobContext
from ..progress import ProgressReporter
from ..termination import termination_log
from ..train.common import World, barrier, seed_all
from ..train.stopping import Stopped, StopRequest
from . import state
from .batches import Plan, Row, global_rows, make_rows, plan, tokens
from .encode import Example, check_tokenizer, encode
from .export import export, file_digest, gather
from .loop import Trainer
from .model import check_limits, check_packing, load_base, load_tokenizer, trainable_fraction, with_method, wrap
from .records import read
from .report import Log, evaluation, termination_message

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Inputs:
    model_dir: Path
    data: Path
    eval_data: Path | None

    @classmethod
    def from_env(cls, ft: Finetune, env: Mapping[str, str] = os.environ) -> Inputs:
        missing = [name for name in (MODEL_DIR_ENV, DATA_ENV) if not env.get(name)]
        if ft.eval_data is not None and not env.get(EVAL_DATA_ENV):
            missing.append(EVAL_DATA_ENV)
        if missing:
            raise ConfigError(f"{', '.join(missing)} not set: the fine-tune's inputs were not mounted")
        eval_data = Path(env[EVAL_DATA_ENV]) if ft.eval_data is not None else None
        return cls(Path(env[MODEL_DIR_ENV]), Path(env[DATA_ENV]), eval_data)


@dataclass(frozen=True)
class Data:
    tokenizer: PreTrainedTokenizerBase
    train: list[Row]
    eval: list[Row]
    pad_id: int
    digests: dict[str, str]


def hold_back(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded `fraction` of the examples for evaluation (at least one); the rest train, in order."""
    if len(examples) < 2:
        raise ConfigError("finetune.data: at least 2 usable records are needed to hold some back for evaluation")
    count = min(len(examples) - 1, max(1, round(len(examples) * fraction)))
    chosen = set(torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))[:count].tolist())
    return ([e for i, e in enumerate(examples) if i not in chosen], [e for i, e in enumerate(examples) if i in chosen])


def prepare(ft: Finetune, inputs: Inputs) -> Data:
    tokenizer = load_tokenizer(inputs.model_dir, ft.model.uri)
    check_tokenizer(tokenizer, ft.data.format, ft.data.uri)
    train = encode(tokenizer, read(inputs.data, ft.data.format, ft.data.uri), ft.max_seq_length, ft.data.uri)
    digests = {"data": file_digest(inputs.data)}
    if ft.eval_data is not None and inputs.eval_data is not None:
        check_tokenizer(tokenizer, ft.eval_data.format, ft.eval_data.uri)
        evals = encode(tokenizer, read(inputs.eval_data, ft.eval_data.format, ft.eval_data.uri), ft.max_seq_length,
                       ft.eval_data.uri)
        digests["evalData"] = file_digest(inputs.eval_data)
    else:
        train, evals = hold_back(train, ft.eval_fraction, ft.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Data(tokenizer, make_rows(train, ft.max_seq_length, ft.packing),
                make_rows(evals, ft.max_seq_length, ft.packing), int(pad or 0), digests)


def build(ctx: JobContext, world: World, ft: Finetune, inputs: Inputs, data: Data) -> tuple[Trainer, float]:
    """The wrapped model, its optimizer and schedule; and the share of parameters that train."""
    from transformers import get_cosine_schedule_with_warmup

    seed_all(ft.seed)  # the same adapter initialisation on every rank
    base = load_base(inputs.model_dir, ft.model.uri)
    check_limits(base, ft.max_seq_length)
    if ft.packing:
        check_packing(base, data.tokenizer)
    model = with_method(base, ft)
    fraction = trainable_fraction(model)
    device = torch.device(f"cuda:{world.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    model = wrap(model.to(device), ctx.spec.strategy, world)
    p = plan(len(data.train), ft.batch_size, ft.gradient_accumulation, world.size, ft.epochs, ft.max_steps)
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=ft.learning_rate,
                                  weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, ft.warmup_steps, p.total_steps)
    sharded = ctx.spec.strategy == Strategy.FSDP and world.size > 1
    return Trainer(model, optimizer, scheduler, p, world, data.pad_id, ft.packing, sharded, ft.seed, device), fraction


def position(p: Plan, data: Data) -> dict[str, Any]:
    """What a step number means: a checkpoint resumes only where it means the same."""
    return {"globalBatch": p.global_batch, "rows": len(data.train), "digests": data.digests}


def resume(ctx: JobContext, trainer: Trainer, data: Data, lora: bool) -> dict[str, Any] | None:
    meta = state.load(ctx.storage / "checkpoints", trainer.world, trainer.model, trainer.optimizer,
                      trainer.scheduler, lora)
    if meta is not None and meta.get("position") != position(trainer.plan, data):
        raise ConfigError(f"the checkpoint at step {meta['step']} was written for other data or another global batch "
                          f"({meta.get('position')} vs {position(trainer.plan, data)}); delete its checkpoints to "
                          "start over")
    return meta


@dataclass
class Progress:
    before: dict[str, float]
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def loop(ctx: JobContext, trainer: Trainer, data: Data, log: Log, start: int, progress: Progress, lora: bool) -> None:
    ft, p = ctx.spec.finetune, trainer.plan
    assert ft is not None
    stop = StopRequest(trainer.world)
    for step in range(start, p.total_steps):
        rows = global_rows(data.train, p, ft.seed, step)
        began = time.perf_counter()
        loss = trainer.mean_loss(trainer.step(step, rows), rows)
        progress.seconds += time.perf_counter() - began
        progress.tokens += tokens(rows)
        done, epoch = step + 1, step // p.steps_per_epoch
        lr = float(trainer.scheduler.get_last_lr()[0])
        log.stepped(done, epoch, loss, lr, sum(1 for r in rows if r), progress.tokens_per_second)
        if done % p.steps_per_epoch == 0 and done < p.total_steps:
            log.evaluated(done, epoch, trainer.evaluate(data.eval), f"epoch {epoch}")
        stopping = done < p.total_steps and stop.agreed()  # on SIGTERM: checkpoint this step, then stop
        if (done % ctx.spec.checkpoint.interval_steps == 0 or stopping) and done < p.total_steps:
            meta = {"position": position(p, data), "before": progress.before, "tokens": progress.tokens,
                    "seconds": progress.seconds}
            state.save(ctx.storage / "checkpoints", trainer.world, trainer.model, trainer.optimizer,
                       trainer.scheduler, done, meta, ctx.spec.checkpoint.keep, lora)
            log.checkpointed(done)
        if stopping:
            raise Stopped(done)
    stop.settle()


def base_digest(directory: Path) -> str | None:
    """The base model directory's digest, or None where it cannot be taken (e.g. a cache of links)."""
    from ..formats.identity import FormatError, identify

    try:
        return identify(directory).digest
    except (FormatError, OSError):
        return None


def lineage(ctx: JobContext, ft: Finetune, inputs: Inputs, data: Data, fraction: float) -> dict[str, Any]:
    return {"baseModel": {"uri": ft.model.uri, "digest": base_digest(inputs.model_dir)},
            "data": {"uri": ft.data.uri, "format": ft.data.format, "digest": data.digests["data"]},
            "evalData": ({"uri": ft.eval_data.uri, "digest": data.digests["evalData"]} if ft.eval_data else
                         {"heldOutFraction": ft.eval_fraction}),
            "method": ft.method, "settings": ft.dump(), "trainableFraction": fraction,
            "strategy": ctx.spec.strategy.value, "trainingJob": {
                "name": ctx.name, "namespace": ctx.namespace, "uid": ctx.uid, "generation": ctx.generation,
                "attempt": ctx.attempt}}


def finish(ctx: JobContext, world: World, reporter: ProgressReporter | None, inputs: Inputs, data: Data,
           trained: dict[str, torch.Tensor], facts: dict[str, Any]) -> dict[str, Any] | None:
    """Rank 0: export, then the termination message. Returns the result (None on other ranks)."""
    ft = ctx.spec.finetune
    if not world.is_main or ft is None:
        return None
    ev = evaluation(facts["before"], facts["after"], facts["fraction"], facts["tokensPerSecond"])
    about = {**lineage(ctx, ft, inputs, data, facts["fraction"]), "evaluation": ev.dump()}
    artifact, adapter = export(ctx.storage, inputs.model_dir, ft, trained, data.tokenizer, about)
    result = {"artifact": artifact.dump(), "evaluation": ev.dump(), **({"adapterArtifact": adapter.dump()}
                                                                      if adapter else {})}
    final = {**reporter.final(), "phase": "finished"} if reporter else {}
    with contextlib.suppress(OSError):  # outside a pod (tests, local runs without one) there is no log
        termination_log().write_text(termination_message(result, final))
    if reporter:
        reporter.update(phase="finished")
    return result


def train(ctx: JobContext, world: World, reporter: ProgressReporter | None) -> dict[str, Any]:
    ft = ctx.spec.finetune
    assert ft is not None
    lora = ft.method == "lora"
    inputs = Inputs.from_env(ft)
    data = prepare(ft, inputs)
    trainer, fraction = build(ctx, world, ft, inputs, data)
    meta = resume(ctx, trainer, data, lora)
    start = int(meta["step"]) if meta else 0
    log = Log(reporter, ctx, start, trainer.plan.total_steps, start if meta else None)
    if meta is None:
        progress = Progress(trainer.evaluate(data.eval))
        log.evaluated(0, 0, progress.before, "before training")
    else:
        progress = Progress(meta["before"], int(meta["tokens"]), float(meta["seconds"]))
    loop(ctx, trainer, data, log, start, progress, lora)
    after = trainer.evaluate(data.eval)
    log.evaluated(trainer.plan.total_steps, max(0, trainer.plan.total_steps - 1) // trainer.plan.steps_per_epoch,
                  after, "after training")
    trained = gather(trainer.model, lora)
    steps = trainer.plan.total_steps
    del trainer  # the export loads a copy of the base of its own: the training copy and its optimizer go first
    gc.collect()
    facts = {"before": progress.before, "after": after, "fraction": fraction,
             "tokensPerSecond": progress.tokens_per_second}
    result = finish(ctx, world, reporter, inputs, data, trained, facts)
    barrier(world)
    return {"steps": steps, "resumedFrom": start if meta else None, **facts, **(result or {})}
