"""The `kubeforge` command: argument parsing, one-line errors and the terminal view. `run` hands the
job to `localrun` (the operator's policy on local processes); nothing here decides anything."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from kubeforge_api.constants import State
from kubeforge_api.model import problems
from kubeforge_api.trainingjob import TrainingJob, TrainingJobSpec
from kubeforge_operator.localrun import LocalRun, drive
from kubeforge_operator.plan import Obj, Plan
from kubeforge_operator.render.trainingjob import members
from kubeforge_operator.spec_errors import explain
from kubeforge_operator.trainingjob.validate import semantic_errors
from pydantic import ValidationError

DEFAULT_RUNS = Path.home() / ".kubeforge" / "runs"
EXIT_INTERRUPTED = 130
RUN_LOCALLY = ("TrainingJob", "PersistentVolumeClaim")  # a claim's part is played by the run's storage folder


class UserError(Exception):
    """Something the user can fix; printed as one line, no traceback."""


def load_job(path: Path) -> Obj:
    """The one TrainingJob in `path`, checked by the same models the operator uses."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as e:
        raise UserError(f"{path}: {e.strerror.lower() if e.strerror else e}") from None
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 0
        raise UserError(f"{path}:{line}: not valid YAML: {e.problem}") from None
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "TrainingJob"]
    if len(jobs) != 1:
        kinds = ", ".join(str(d.get("kind")) if isinstance(d, dict) else type(d).__name__ for d in docs) or "nothing"
        raise UserError(f"{path}: expected exactly one TrainingJob, found {len(jobs)} (the file holds: {kinds})")
    for other in (d for d in docs if not (isinstance(d, dict) and d.get("kind") in RUN_LOCALLY)):
        print(f"kubeforge: {path}: ignoring {_named(other)}: `kubeforge run` runs a TrainingJob only",
              file=sys.stderr)
    doc = jobs[0]
    if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
        raise UserError(f"{path}: the TrainingJob has no metadata.name")
    try:  # the whole object, as the API server checks it (name length, spec, cross-field rules)
        spec = TrainingJob.model_validate({**doc, "status": None}).spec
    except ValidationError as e:
        raise UserError("\n".join(f"{path}: {explain(p, m, TrainingJobSpec)}" for p, m in problems(e))) from None
    errors = semantic_errors(spec)
    if errors:
        raise UserError("\n".join(f"{path}: {err}" for err in errors))
    return doc


def _named(doc: object) -> str:
    """`ServingJob digits` for a document of the file, as the user wrote it."""
    if not isinstance(doc, dict):
        return f"a {type(doc).__name__}"
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    return f"{doc.get('kind') or 'an object without kind'}{' ' + str(name) if name else ''}"


def eta_text(progress: Obj) -> str:
    """The trainer's ETA (from its smoothed throughput, as in `status.progress`), e.g. `ETA 0:01:05`."""
    eta, left = progress.get("etaSeconds"), progress.get("totalSteps", 0) - progress.get("step", 0)
    if eta is None or left <= 0:
        return ""
    minutes, seconds = divmod(int(eta), 60)
    return f"ETA {minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


class Display:
    """A live progress bar on a terminal (rich), a line per 10 % otherwise; Warning events as lines.
    The ETA is the trainer's (smoothed), not one the bar estimates from irregular updates."""

    def __init__(self, quiet: bool) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self.quiet, self.tty, self.shown = quiet, sys.stdout.isatty(), -1
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            TextColumn("{task.fields[detail]}"), TextColumn("{task.fields[eta]}"),
                            disable=quiet or not self.tty)
        self.task = self.bar.add_task("training", total=None, detail="", eta="")

    def __call__(self, run: LocalRun, plan: Plan) -> None:
        for e in plan.events:
            if e.type == "Warning":
                self.bar.console.print(f"kubeforge: {e.reason}: {e.message}", highlight=False, soft_wrap=True)
        p = run.status.get("progress")
        if self.quiet or not p or not p.get("totalSteps"):
            return
        metrics = {"loss": p["loss"]} if "loss" in p else {}
        detail = " ".join(f"{k} {v:.4g}" for k, v in {**metrics, **p.get("eval", {})}.items())
        self.bar.update(self.task, completed=p["step"], total=p["totalSteps"], detail=f"step {p['step']} {detail}",
                        eta=eta_text(p))
        tenth = int(float(p["percent"].rstrip("%")) // 10)
        if not self.tty and tenth > self.shown:
            print(f"{p['percent']:>6} step {p['step']}/{p['totalSteps']} {detail} {eta_text(p)}".rstrip(), flush=True)
            self.shown = tenth

    def __enter__(self) -> Display:
        self.bar.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.bar.stop()


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(path: Path, runs: Path, storage: Path | None, quiet: bool, claims: Path | None = None) -> int:
    doc = load_job(path)
    job = LocalRun.create(doc, runs, storage, claims)
    job.job["file"] = str(path.resolve())
    n = len(members(TrainingJobSpec.model_validate(doc.get("spec") or {})))
    print(f"kubeforge: running {job.job['metadata']['name']} ({n} local process{'es' * (n != 1)}); "
          f"record: {job.save()}")
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell starting us in the background ignores it
        signal.signal(sig, _interrupt)
    try:
        with Display(quiet) as display:
            drive(job, display)
    except KeyboardInterrupt:
        job.stop_all()
        job.save(State.INTERRUPTED)
        print(f"kubeforge: interrupted; every process stopped; logs: {job.root / 'logs'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    job.save()
    return _summary(job)


def _summary(job: LocalRun) -> int:
    st = job.status
    if st.get("state") == State.SUCCEEDED:
        art = st.get("artifact")
        where = f"; artifact {job.storage / 'artifact'} ({art['digest']})" if art else f"; logs {job.root / 'logs'}"
        print(f"kubeforge: {job.job['metadata']['name']} Succeeded{where}")
        return 0
    failure = st.get("lastFailure") or {}
    print(f"kubeforge: {job.job['metadata']['name']} Failed ({st.get('reason', '')}): "
          f"{_failed_message(st)}; see {job.root / 'logs' / (failure.get('pod', '') + '.log')}", file=sys.stderr)
    return 1


def _failed_message(status: Obj) -> str:
    return next((c.get("message", "") for c in status.get("conditions") or [] if c["type"] == "Failed"), "")


def _version() -> str:
    try:
        return version("kubeforge")
    except PackageNotFoundError:
        return "unknown"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kubeforge", description="Train, compress and serve PyTorch models.")
    ap.add_argument("--version", action="version", version=f"kubeforge {_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a TrainingJob YAML on this machine, as the operator would in a cluster")
    r.add_argument("file", type=Path, help="a YAML file holding one TrainingJob")
    r.add_argument("--runs-dir", type=Path, default=Path(os.environ.get("KUBEFORGE_RUNS_DIR", DEFAULT_RUNS)),
                   help="where run folders (logs, storage, run.json) go (default: %(default)s)")
    r.add_argument("--storage", type=Path, help="storage directory (default: inside the run's folder)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--claims", type=Path, default=Path(os.environ.get("KUBEFORGE_CLAIMS_DIR", "claims")),
                   help="pvc://CLAIM/PATH is read from CLAIMS/CLAIM/PATH (default: %(default)s); s3:// uris are "
                   "copied with this machine's AWS_* environment")
    u = sub.add_parser("push", help="upload a model directory to s3://BUCKET/PREFIX (credentials from AWS_*)")
    u.add_argument("directory", type=Path, help="a Kubeforge artifact, Hugging Face or torch.export directory")
    u.add_argument("uri", help="s3://BUCKET/PREFIX (the bucket is created if missing)")
    c = sub.add_parser("compress", add_help=False,
                       help="compress a model (a Kubeforge artifact, or a Hugging Face directory with "
                       "--eval-data) within an accuracy budget (see `kubeforge compress -h`)")
    c.add_argument("rest", nargs=argparse.REMAINDER)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compress"]:  # the trainer's own command line, all of it (-h and options first included:
        from kubeforge_trainer.compress.cli import main as compress  # REMAINDER does not take those); needs torch

        return compress(argv[1:])
    args = parser().parse_args(argv)
    if args.cmd == "push":
        from .push import push  # needs torch (the model formats)

        return push(args.directory, args.uri)
    try:
        return run(args.file, args.runs_dir, args.storage, args.quiet, args.claims)
    except UserError as e:
        print("\n".join(f"kubeforge: {line}" for line in str(e).splitlines()), file=sys.stderr)
        return 2
