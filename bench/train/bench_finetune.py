"""Fine-tuning benchmark on CPU, side by side and interleaved (each round runs every side once, in turn,
the order reversed every other round):

1. LoRA vs full fine-tuning of the same ~25 M-parameter Llama-style model on the same data and steps
   (2 ranks, DDP over gloo):
   trainable share, training tokens/s, peak memory (the process's peak RSS, and the part above the
   floor a process reaches by only importing torch, transformers and peft) and the final eval loss;
2. Kubeforge's loop (`python -m kubeforge_trainer train`, LoRA) vs a hand-written transformers + peft
   loop over the same rows in the same order (transformers' own loss, AdamW, warm-up + cosine,
   clipping): both at once, one process and one thread each, so a neighbour's burst slows both alike;
   training tokens/s over the window where both train, and whether their losses agree;
3. packing vs one example per row on long-tailed chat data (60 % of the conversations one turn, the
   rest two to seven): tokens/s and eval loss, the unpacked side taking as many rows per step as the
   packed side holds examples.

Tokens/s counts real (not padding) tokens from the end of the second optimizer step to the end of the
last (the first steps of a process pay for page faults and kernel set-up; start-up, evaluation and
export are left out), the same way on every side. Ratios are medians over the rounds with min-max.
Eval losses come from one longer run a side (they are deterministic).

The base model is made here, never downloaded: a random Llama (9 layers, width 512, a byte-level BPE
tokenizer trained locally) pre-trained by the trainer itself on plain sentences and on conversations
whose answers read "it is WORD"; the fine-tunes teach it "the answer is: WORD". It is built once per
configuration and kept in the user's cache. Writes bench/results/finetune.json."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: the tests' tiny-model builders resolve from the repository root
from tests.llm_models import chat_jsonl, text_jsonl, tiny_llama  # noqa: E402

Obj = dict[str, Any]
RESULTS = REPO / "bench" / "results" / "finetune.json"
MODEL = {"layers": 9, "hidden": 512, "intermediate": 1376, "heads": 8}
MAX_LEN = 256
WARMUP = 2  # steps left out of every rate (see steady_rate)
RANKS = 2  # the timed sides train under torchrun, DDP over gloo, one thread a rank
PAIR_STEPS = 20  # the trainer and the loop side by side: enough steps to overlap past their warm-up
TORCHRUN = str(Path(sys.executable).parent / "torchrun")
# Adapters on every linear layer (rank 4: 1.2 % of the weights train), at 10x the full fine-tune's rate.
LORA = {"rank": 4, "alpha": 8, "dropout": 0.0,
        "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
LORA_LR, FULL_LR = 1e-2, 1e-3
FLOOR_SCRIPT = ("import resource, torch, transformers, peft, kubeforge_trainer.finetune.run; "
                "from transformers import LlamaForCausalLM; "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")


def finetune_job(data_file: str, steps: int, batch: int, procs: int = RANKS, **extra: Any) -> Obj:
    finetune = {"model": {"uri": "pvc://bench/base"},
                "data": {"uri": f"pvc://bench/{data_file}", "format": "messages"},
                "evalData": {"uri": "pvc://bench/eval.jsonl"}, "maxSeqLength": MAX_LEN, "batchSize": batch,
                "maxSteps": steps, "learningRate": LORA_LR, "warmupSteps": 2, "method": "lora", "lora": LORA, **extra}
    if finetune["method"] == "full":
        del finetune["lora"]
    return {"strategy": "ddp", "nodes": 1, "procsPerNode": procs, "finetune": finetune,
            "checkpoint": {"intervalSteps": 10_000_000, "keep": 1}}


def environment(job: Obj, model: Path, data: Path, evals: Path | None, storage: Path) -> dict[str, str]:
    env = {**os.environ, "KUBEFORGE_SPEC": json.dumps(job), "KUBEFORGE_STORAGE_DIR": str(storage),
           "KUBEFORGE_PROGRESS_PORT": "0", "KUBEFORGE_TERMINATION_LOG": str(storage / "termination-log"),
           "KUBEFORGE_FINETUNE_MODEL_DIR": str(model), "KUBEFORGE_FINETUNE_DATA": str(data)}
    if evals is not None:
        env["KUBEFORGE_FINETUNE_EVAL_DATA"] = str(evals)
    return env


def measured(cmd: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Run `cmd` to the end: (stdout, its peak RSS in MiB, from the kernel's accounting of that child)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read()
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[-1]} exited {proc.returncode}: {err.read()[-3000:]}")
    return text, usage.ru_maxrss / 1024


def command(job: Obj, script: list[str]) -> list[str]:
    procs = int(job["procsPerNode"])
    return [TORCHRUN, "--standalone", f"--nproc-per-node={procs}", *script] if procs > 1 else [sys.executable, *script]


def step_tokens(job: Obj, model: Path, data: Path, evals: Path) -> list[int]:
    """Real tokens of each optimizer step of `job` (all ranks), as the trainer's data order has them."""
    from kubeforge_api.trainingjob import TrainingJobSpec
    from kubeforge_trainer.finetune.batches import global_rows, plan, tokens
    from kubeforge_trainer.finetune.run import Inputs, prepare

    ft = TrainingJobSpec.model_validate(job).finetune
    assert ft is not None
    rows = prepare(ft, Inputs(model, data, evals)).train
    p = plan(len(rows), ft.batch_size, 1, int(job["procsPerNode"]), ft.epochs, ft.max_steps)
    return [tokens(global_rows(rows, p, ft.seed, step)) for step in range(p.total_steps)]


def steady_rate(marks: list[float], counts: list[int]) -> float:
    """Tokens/s from the end of the warm-up steps to the end of the last step: the first steps of a
    process pay for page faults and kernel set-up, which would swamp a short run."""
    return sum(counts[WARMUP:]) / (marks[-1] - marks[WARMUP - 1])


def ours(job: Obj, model: Path, data: Path, evals: Path) -> Obj:
    with tempfile.TemporaryDirectory(prefix="kf-ft-bench-") as storage:
        out, rss = measured(command(job, ["-m", "kubeforge_trainer", "train"]),
                            environment(job, model, data, evals, Path(storage)))
        rows = [json.loads(line) for line in (Path(storage) / "metrics.jsonl").read_text().splitlines()]
    result = json.loads(next(line for line in out.splitlines() if line.startswith('{"result"')))["result"]
    train = [r for r in rows if r["kind"] == "train"]
    return {"tokens_per_second": steady_rate([r["time"] for r in train], step_tokens(job, model, data, evals)),
            "peak_rss_mib": rss, "fraction": result["fraction"], "eval_before": result["before"]["evalLoss"],
            "eval_after": result["after"]["evalLoss"], "losses": [r["loss"] for r in train]}


def handwritten(job: Obj, model: Path, data: Path, evals: Path) -> Obj:
    with tempfile.TemporaryDirectory(prefix="kf-ft-loop-") as storage:
        env = environment(job, model, data, evals, Path(storage))
        out, rss = measured(command(job, [__file__, "--handwritten"]), env)
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mib": rss}


def rate_between(marks: list[float], counts: list[int], t0: float, t1: float) -> float:
    """Tokens/s of the steps that ended inside the wall-clock window [t0, t1]."""
    inside = [i for i, t in enumerate(marks) if t0 <= t <= t1]
    first, last = inside[0], inside[-1]
    return sum(counts[first + 1 : last + 1]) / (marks[last] - marks[first])


def concurrently(job: Obj, model: Path, data: Path, evals: Path) -> Obj:
    """The trainer and the hand-written loop at the same time, one process and one thread each: both
    see the same neighbours' load, so their rates over the window where both train (past their
    warm-up steps) compare fairly on a shared machine. Returns the ratio and both losses."""
    single = {"KUBEFORGE_CPU_LIMIT_MILLICORES": "1000"}
    with tempfile.TemporaryDirectory(prefix="kf-ft-pair-") as tmp:
        a_env = {**environment(job, model, data, evals, Path(tmp) / "ours"), **single}
        b_env = {**environment(job, model, data, evals, Path(tmp) / "loop"), **single}
        a = subprocess.Popen(command(job, ["-m", "kubeforge_trainer", "train"]), env=a_env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        b = subprocess.Popen(command(job, [__file__, "--handwritten"]), env=b_env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        out_b, err_b = b.communicate(timeout=1800)
        _, err_a = a.communicate(timeout=1800)
        if a.returncode or b.returncode:
            raise RuntimeError(f"trainer {a.returncode}: {err_a[-2000:]}\nloop {b.returncode}: {err_b[-2000:]}")
        rows = [json.loads(line) for line in (Path(tmp) / "ours" / "metrics.jsonl").read_text().splitlines()]
    loop = json.loads(out_b.strip().splitlines()[-1])
    ours_marks = [r["time"] for r in rows if r["kind"] == "train"]
    counts = step_tokens(job, model, data, evals)
    t0, t1 = max(ours_marks[WARMUP - 1], loop["marks"][WARMUP - 1]), min(ours_marks[-1], loop["marks"][-1])
    if t1 - t0 < 5.0:
        raise RuntimeError(f"the two runs overlapped only {t1 - t0:.1f} s past warm-up: give them more steps")
    ratio = rate_between(ours_marks, counts, t0, t1) / rate_between(loop["marks"], loop["counts"], t0, t1)
    return {"ratio": ratio, "overlap_seconds": t1 - t0, "losses": [r["loss"] for r in rows if r["kind"] == "train"],
            "loop_losses": loop["losses"]}


def import_floor() -> float:
    """Peak RSS (MiB) of a process that only imports what a fine-tune imports."""
    return measured([sys.executable, "-c", FLOOR_SCRIPT], dict(os.environ))[1]


def _hf_batch(rows: list[Any], pad: int) -> dict[str, torch.Tensor]:
    """The hand-written loop's own collation: right padding, positions restarting per example, and
    labels unshifted for transformers' loss (which shifts them itself)."""
    seqs = [[t for e in row for t in e.input_ids] or [pad] for row in rows]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(rows), width), pad)
    labels = torch.full((len(rows), width), -100)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            ids[r, at : at + n] = torch.tensor(e.input_ids)
            labels[r, at + 1 : at + n] = torch.tensor(e.labels[: n - 1])
            pos[r, at : at + n] = torch.arange(n)
            at += n
        pos[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


def handwritten_main() -> None:
    """The baseline: a plain transformers + peft loop under DDP, same rows and order as the trainer's
    (its data preparation is shared, so both see the same tokens)."""
    import torch.distributed as dist
    from kubeforge_api.trainingjob import TrainingJobSpec
    from kubeforge_trainer.finetune.batches import global_rows, plan, targets, tokens
    from kubeforge_trainer.finetune.run import Inputs, prepare
    from kubeforge_trainer.train.common import init_world, threads_for
    from kubeforge_trainer.train.teardown import close_world, exit_now
    from peft import LoraConfig, get_peft_model
    from torch.nn.parallel import DistributedDataParallel
    from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

    threads_for()
    world = init_world("gloo")
    ft = TrainingJobSpec.model_validate(json.loads(os.environ["KUBEFORGE_SPEC"])).finetune
    assert ft is not None
    data = prepare(ft, Inputs.from_env(ft))
    torch.manual_seed(ft.seed)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(os.environ["KUBEFORGE_FINETUNE_MODEL_DIR"]),
                          LoraConfig(r=ft.lora.rank, lora_alpha=int(ft.lora.alpha), lora_dropout=ft.lora.dropout,
                                     target_modules=list(ft.lora.target_modules), task_type="CAUSAL_LM"))
    model = DistributedDataParallel(peft) if world.size > 1 else peft
    params = [p for p in model.parameters() if p.requires_grad]
    p = plan(len(data.train), ft.batch_size, 1, world.size, ft.epochs, ft.max_steps)
    opt = torch.optim.AdamW(params, lr=ft.learning_rate, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, ft.warmup_steps, p.total_steps)
    model.train()
    marks, counts, losses = [], [], []
    for step in range(p.total_steps):
        rows = global_rows(data.train, p, ft.seed, step)
        mine = rows[world.rank * ft.batch_size : (world.rank + 1) * ft.batch_size]
        # transformers divides the summed loss by this; DDP then averages over the ranks
        loss = model(**_hf_batch(mine, data.pad_id), num_items_in_batch=targets(rows) / world.size,
                     use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        reported = loss.detach()
        if world.size > 1:
            dist.all_reduce(reported)
        losses.append(float(reported) / world.size)
        marks.append(time.time())  # what the trainer's history records after each step
        counts.append(tokens(rows))
    if world.is_main:
        print(json.dumps({"tokens_per_second": steady_rate(marks, counts), "losses": losses, "marks": marks,
                          "counts": counts}), flush=True)
    close_world(world)
    exit_now(0)


PRETRAIN: Obj = {"batch": 8, "learningRate": 2e-3, "warmupSteps": 3}


def pretrain(root: Path, steps: int) -> Path:
    """The base, an 'instruct' model of sorts: a random Llama trained by the trainer (full, packed,
    `text`) on plain sentences and on conversations rendered with the chat template whose answers are
    phrased "it is WORD". The fine-tunes then teach it to answer "the answer is: WORD"."""
    from transformers import AutoTokenizer

    tiny_llama(root / "random", **MODEL)
    tokenizer = AutoTokenizer.from_pretrained(root / "random", local_files_only=True)
    chat_jsonl(root / "style.jsonl", 800, seed=11, turns=(1, 4), lead="it is ")
    with (root / "text.jsonl").open("w") as f:
        for line in (root / "style.jsonl").read_text().splitlines():
            rendered = tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=False)
            f.write(json.dumps({"text": rendered}) + "\n")
    text_jsonl(root / "sentences.jsonl", 200, seed=7, sentences=(2, 8))
    with (root / "text.jsonl").open("a") as f:
        f.write((root / "sentences.jsonl").read_text())
    job = finetune_job("text.jsonl", steps, PRETRAIN["batch"], 1, method="full", evalData=None, evalFraction=0.02,
                       data={"uri": "pvc://bench/text.jsonl", "format": "text"}, learningRate=PRETRAIN["learningRate"],
                       warmupSteps=PRETRAIN["warmupSteps"])
    began = time.perf_counter()
    out, _ = measured([sys.executable, "-m", "kubeforge_trainer", "train"],
                      environment(job, root / "random", root / "text.jsonl", None, root / "pretrain"))
    result = json.loads(next(line for line in out.splitlines() if line.startswith('{"result"')))["result"]
    print(f"pre-trained the base in {time.perf_counter() - began:.0f} s: eval loss "
          f"{result['before']['evalLoss']:.3f} -> {result['after']['evalLoss']:.3f}", flush=True)
    return root / "pretrain" / "artifact"


def cached_base(steps: int) -> Path:
    """The pre-trained base, built once per configuration and kept in the user's cache (it is the same
    model every time: everything that makes it is seeded)."""
    recipe = json.dumps({"model": MODEL, "steps": steps, **PRETRAIN, "max": MAX_LEN,
                         "builders": (REPO / "tests" / "llm_models.py").read_text()}, sort_keys=True)
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    base = home / "kubeforge" / "bench-finetune" / hashlib.sha256(recipe.encode()).hexdigest()[:16]
    if not (base / "config.json").is_file():
        with tempfile.TemporaryDirectory(prefix="kf-ft-base-") as tmp:
            built = pretrain(Path(tmp), steps)
            base.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(base, ignore_errors=True)
            shutil.copytree(built, base.with_suffix(".tmp"), dirs_exist_ok=True)
            os.replace(base.with_suffix(".tmp"), base)
    return base


def data_setup(root: Path, base: Path) -> Obj:
    """Long-tailed chat data and eval data; how many examples a packed row holds on average."""
    from kubeforge_api.finetune import Finetune
    from kubeforge_trainer.finetune.run import Inputs, prepare

    chat_jsonl(root / "chat.jsonl", 400, seed=3, turns=(2, 7), single=0.6)
    chat_jsonl(root / "eval.jsonl", 16, seed=4, turns=(2, 7), single=0.6)
    ft = Finetune.model_validate(finetune_job("chat.jsonl", 1, 1, 1)["finetune"])
    packed = prepare(ft, Inputs(base, root / "chat.jsonl", root / "eval.jsonl"))
    examples = sum(len(row) for row in packed.train)
    lengths = sorted(len(e.input_ids) for row in packed.train for e in row)
    return {"examples": examples, "packed_rows": len(packed.train), "per_row": examples / len(packed.train),
            "tokens_median": lengths[len(lengths) // 2], "tokens_max": lengths[-1]}


def jobs(steps: int, batch: int, per_row: float, procs: int = RANKS) -> dict[str, Obj]:
    """The sides, each at its usual learning rate (adapters at 10x the full fine-tune's); the unpacked
    side takes as many rows per step as the packed side holds examples, so both see the same data.
    `pair` is the trainer and the hand-written loop at once (one process each, more steps)."""
    unpacked = finetune_job("chat.jsonl", steps, max(batch, round(batch * per_row)), procs, packing=False,
                            learningRate=LORA_LR)
    return {"lora": finetune_job("chat.jsonl", steps, batch, procs, learningRate=LORA_LR),
            "full": finetune_job("chat.jsonl", steps, batch, procs, method="full", learningRate=FULL_LR),
            "unpacked": unpacked, "pair": finetune_job("chat.jsonl", PAIR_STEPS, batch, 1, learningRate=LORA_LR)}


def run_side(name: str, job: Obj, root: Path, base: Path) -> Obj:
    side = concurrently if name == "pair" else ours
    return side(job, base, root / "chat.jsonl", root / "eval.jsonl")


def spread(values: list[float]) -> Obj:
    return {"ratio_median": statistics.median(values), "ratio_min": min(values), "ratio_max": max(values),
            "ratios": values}


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def summarize(runs: dict[str, list[Obj]], quality: dict[str, Obj], floor: float) -> Obj:
    lora, full, pair, unpacked = (runs[k] for k in ("lora", "full", "pair", "unpacked"))
    n = len(lora)
    rss = [lora[i]["peak_rss_mib"] / full[i]["peak_rss_mib"] for i in range(n)]
    above = [(lora[i]["peak_rss_mib"] - floor) / (full[i]["peak_rss_mib"] - floor) for i in range(n)]
    diffs = [max(abs(a - b) for a, b in zip(r["losses"], r["loop_losses"], strict=True)) for r in pair]
    evals = {k: {"before": v["eval_before"], "after": v["eval_after"]} for k, v in quality.items()}
    return {
        "lora_vs_full": {
            **spread([lora[i]["tokens_per_second"] / full[i]["tokens_per_second"] for i in range(n)]), "rounds": n,
            "peak_rss": spread(rss), "peak_rss_above_import_floor": spread(above),
            "peak_rss_mib": {"lora": statistics.median(r["peak_rss_mib"] for r in lora),
                             "full": statistics.median(r["peak_rss_mib"] for r in full), "import_floor": floor},
            "trainable_fraction": lora[0]["fraction"], "eval_loss": {"lora": evals["lora"], "full": evals["full"]},
            "eval_loss_relative_difference": relative(evals["lora"]["after"], evals["full"]["after"])},
        "trainer_vs_handwritten": {
            **spread([r["ratio"] for r in pair]), "rounds": n, "overlap_seconds": [r["overlap_seconds"] for r in pair],
            "max_loss_difference": max(diffs), "losses_equal_1e-5": max(diffs) <= 1e-5,
            "method": "both at once, one process and one thread each, rates over the window where both train"},
        "packing_vs_unpacked": {
            **spread([lora[i]["tokens_per_second"] / unpacked[i]["tokens_per_second"] for i in range(n)]),
            "rounds": n, "eval_loss": {"packed": evals["lora"], "unpacked": evals["unpacked"]},
            "eval_loss_relative_difference": relative(evals["lora"]["after"], evals["unpacked"]["after"])},
    }


def speed_rounds(root: Path, base: Path, sides: dict[str, Obj], rounds: int) -> dict[str, list[Obj]]:
    runs: dict[str, list[Obj]] = {}
    for r in range(rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):  # A B C D, then D C B A
            result = run_side(name, sides[name], root, base)
            runs.setdefault(name, []).append(result)
            said = (f"trainer / loop {result['ratio']:.3f} over {result['overlap_seconds']:.0f} s" if name == "pair"
                    else f"{result['tokens_per_second']:.0f} tokens/s, {result['peak_rss_mib']:.0f} MiB")
            print(f"round {r} {name}: {said}", flush=True)
    return runs


def quality_runs(root: Path, base: Path, sides: dict[str, Obj]) -> dict[str, Obj]:
    """Longer runs for the eval losses (deterministic: one run a side, one process)."""
    out = {}
    for name in ("lora", "full", "unpacked"):
        out[name] = run_side(name, sides[name], root, base)
        print(f"quality {name}: eval loss {out[name]['eval_before']:.4f} -> {out[name]['eval_after']:.4f}",
              flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handwritten", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps of each timed fine-tune")
    parser.add_argument("--quality-steps", type=int, default=80, help="optimizer steps of the eval-loss runs")
    parser.add_argument("--batch", type=int, default=2, help="packed rows per step and rank")
    parser.add_argument("--pretrain-steps", type=int, default=60)
    args = parser.parse_args()
    if args.handwritten:
        handwritten_main()
        return 0
    started = time.perf_counter()
    base = cached_base(args.pretrain_steps)
    with tempfile.TemporaryDirectory(prefix="kf-ft-bench-") as tmp:
        root = Path(tmp)
        setup = {**data_setup(root, base), "model": MODEL, "max_seq_length": MAX_LEN, "steps": args.steps,
                 "quality_steps": args.quality_steps, "batch": args.batch, "pretrain_steps": args.pretrain_steps,
                 "params": sum(t.numel() for t in _weights(base).values()), "lora": LORA, "lr": {
                     "lora": LORA_LR, "full": FULL_LR}}
        print(f"setup: {json.dumps(setup)}", flush=True)
        runs = speed_rounds(root, base, jobs(args.steps, args.batch, setup["per_row"]), args.rounds)
        # one process with the global batch: the same arithmetic as the ranks, in less time
        quality = quality_runs(root, base, jobs(args.quality_steps, args.batch * RANKS, setup["per_row"], 1))
        summary = summarize(runs, quality, import_floor())
    machine = f"{os.cpu_count()}-core CPU, torch {torch.__version__}"
    doc = {"machine": machine, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "setup": setup,
           **summary, "seconds": round(time.perf_counter() - started)}
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2), flush=True)
    return 0


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


if __name__ == "__main__":
    sys.exit(main())
