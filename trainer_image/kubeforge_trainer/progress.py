"""Live progress of rank 0: a JSON `/progress` endpoint and Prometheus `/metrics` (prometheus_client,
a registry per reporter) on the progress
port, plus an append-only metrics history (`metrics.jsonl`) under the job's storage that the
operator and the dashboard read for loss curves.

The history is fenced like checkpoints (see checkpoint.py): every line is stamped with the attempt
that wrote it, lines reach the file only after a check of the fence (`fenced`: checkpoint.fenced_out
bound to the job's checkpoint directory), and an attempt that finds a newer one recorded appends
nothing more. `read_history` is the one reader: it drops what an older
attempt appended after a newer one's first line (the race the check leaves open), and the older
attempts' points that the newer one redoes (after the step it resumed from)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from kubeforge_api.constants import Env
from kubeforge_api.contracts import ProgressDoc
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

MAX_POINTS = 2000
FLUSH_SECONDS = 1.0  # train points reach the history file in batches: a flush per point costs ~2% of a 1 ms step


def attempt_of_env() -> int:
    """This process's attempt (`KUBEFORGE_ATTEMPT`, the fencing token); 0 outside a pod."""
    try:
        return max(int(os.environ.get(Env.ATTEMPT, "0")), 0)
    except ValueError:
        return 0


@dataclass
class Progress:
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    loss: float | None = None
    eval: dict[str, float] = field(default_factory=dict)
    samples_per_second: float = 0.0
    eta_seconds: float | None = None
    last_checkpoint_step: int | None = None
    resumed_from: int | None = None
    attempt: int = 0
    phase: str = "starting"  # starting | training | finished

    def dump(self) -> dict[str, Any]:
        """The wire form (the typed progress document of kubeforge_api.contracts, camelCase)."""
        percent = min(100.0, round(100.0 * self.step / self.total_steps, 1)) if self.total_steps else 0.0
        return ProgressDoc.model_validate({**asdict(self), "percent": percent}).dump()


class ProgressReporter:
    """Thread-safe holder of rank 0's progress, served over HTTP and appended to a history file."""

    def __init__(self, history: Path | None, port: int | None,
                 fenced: Callable[[], str | None] | None = None) -> None:
        """`fenced`: why this attempt may append nothing more (a newer one started), None while it may."""
        self.progress = Progress(attempt=attempt_of_env())  # from the first poll on: the operator fences by it
        self.lock = threading.Lock()
        self.history = history
        self.started = time.monotonic()
        self.points: deque[dict[str, Any]] = deque(maxlen=MAX_POINTS)  # recent history, served to the operator
        self._file: TextIO | None = None
        self._flushed = 0.0
        self._fenced_out, self._attempt = fenced, attempt_of_env()
        self._pending: list[str] = []  # stamped lines not yet checked against the fence
        self.fenced = False  # a newer attempt has started: the history gets nothing more from this one
        self.registry = CollectorRegistry(auto_describe=True)  # per reporter: never the process-global one
        self.registry.register(_ProgressCollector(self))
        self.server: ThreadingHTTPServer | None = None
        if port is not None:
            self.server = ThreadingHTTPServer(("0.0.0.0", port), self._handler())
            threading.Thread(target=self.server.serve_forever, name="progress", daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1]) if self.server else 0

    def update(self, **fields: Any) -> None:
        with self.lock:
            for k, v in fields.items():
                setattr(self.progress, k, v)

    def record(self, kind: str, **values: Any) -> None:
        """Append one point to the history ({"kind": "train"|"eval", "step": ..., "loss": ...})."""
        self.record_all([(kind, values)])

    def record_all(self, points: list[tuple[str, dict[str, Any]]]) -> None:
        """Append points of one step at once: a poll sees all or none of them (a poll asks for steps
        after the last it saw, so one between a step's train and eval points lost the eval point)."""
        now = round(time.time(), 3)
        stamped = [{"kind": kind, "time": now, **values} for kind, values in points]
        with self.lock:
            self.points.extend(stamped)
        if self.history is None or self.fenced:
            return
        self._pending.extend(json.dumps({**p, "attempt": self._attempt}) + "\n" for p in stamped)
        mono = time.monotonic()  # train points are written in batches: readers lag a second at most
        if any(kind != "train" for kind, _ in points) or mono - self._flushed >= FLUSH_SECONDS:
            self.flush()
            self._flushed = mono

    def flush(self) -> None:
        """Append the pending lines, unless a newer attempt is fenced in (then drop them, and all later ones)."""
        if self.history is None or not self._pending or self.fenced:
            return
        why = self._fenced_out() if self._fenced_out is not None else None
        if why is not None:
            self.fenced, self._pending = True, []
            print(f"kubeforge-trainer: metrics history: {why}", file=sys.stderr, flush=True)
            return
        if self._file is None:  # opened once: a batch costs a buffered write, not an open and a close
            self.history.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.history.open("a")
        self._file.write("".join(self._pending))
        self._file.flush()
        self._pending = []

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return self.progress.dump()

    def final(self) -> dict[str, Any]:
        """The progress plus the recent curve points, for the termination message."""
        self.flush()
        with self.lock:
            return {**self.progress.dump(), "history": list(self.points)}

    def since(self, step: int) -> list[dict[str, Any]]:
        with self.lock:
            return [p for p in self.points if p["kind"] in ("train", "eval") and p.get("step", 0) > step]

    def prometheus(self, accept: str = "") -> tuple[bytes, str]:
        """(body, content type) of the current progress as Prometheus text, or OpenMetrics when the
        scraper's Accept header asks for it; gauges are read at scrape time."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        reporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                if url.path == "/progress":
                    since = int(dict(urllib.parse.parse_qsl(url.query)).get("since", "-1"))
                    payload = {**reporter.snapshot(), "history": reporter.since(since)}
                    body, ctype = json.dumps(payload).encode(), "application/json"
                elif url.path == "/metrics":
                    body, ctype = reporter.prometheus(self.headers.get("Accept", ""))
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class _ProgressCollector(Collector):
    """Exposes a reporter's progress as gauges, read from its snapshot at scrape time (one source of
    truth, nothing to keep in sync on the training hot path)."""

    def __init__(self, reporter: ProgressReporter) -> None:
        self.reporter = reporter

    def collect(self) -> Iterable[Metric]:
        p = self.reporter.snapshot()  # the wire form (ProgressDoc): camelCase, unset optionals omitted
        gauges = [("step", "Optimizer steps completed", p["step"]),
                  ("total_steps", "Optimizer steps the run will take", p["totalSteps"]),
                  ("epoch", "Current epoch (0-based)", p["epoch"]),
                  ("samples_per_second", "Training throughput over the last logging interval",
                   p["samplesPerSecond"])]
        if p.get("loss") is not None:
            gauges.append(("loss", "Training loss at the last logged step", p["loss"]))
        for name, doc, value in gauges:
            yield GaugeMetricFamily(f"kubeforge_trainer_{name}", doc, value=float(value))
        evals = GaugeMetricFamily("kubeforge_trainer_eval", "Evaluation metrics at the last epoch end",
                                  labels=["metric"])
        for metric, value in p.get("eval", {}).items():
            evals.add_metric([metric], float(value))
        yield evals


def read_history(path: Path) -> list[dict[str, Any]]:
    """The accepted lines of a metrics history, in order: a line of an attempt older than one already
    seen is dropped, and when a newer attempt's first line arrives, the older attempts' points after
    the step it starts from (the step it resumed from, for its start marker) are dropped: it redoes them."""
    kept: list[dict[str, Any]] = []
    newest = -1
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            point = json.loads(line)
            attempt, step = int(point.get("attempt", 0)), int(point.get("step", 0))
        except (ValueError, TypeError, AttributeError):
            continue  # a torn last line of a killed writer
        if attempt < newest:
            continue
        if attempt > newest:
            cut = step if point.get("kind") == "start" else step - 1
            kept = [p for p in kept if p.get("kind") == "start" or int(p.get("step", 0)) <= cut]
            newest = attempt
        kept.append(point)
    return kept
