"""The serving job page's view model: readiness (conditions), replicas per track, the served model's
lineage (with a link to its TrainingJob) and the canary split; a language model's token metrics as
tiles and chart rows. Pure: typed API models in, rows out. Latency and rates come from `metrics`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from kubeforge_api.constants import LABEL_TRACK
from kubeforge_api.servingjob import ModelSource, ResolvedModel, ServingJob

from ..history import Point
from ..metrics import TokenView
from ..source import PodInfo
from .overview import serving_state

MAIN, CANARY = "main", "canary"


@dataclass(frozen=True)
class TrackRow:
    track: str
    model: str
    digest: str
    training_job: str
    traffic_percent: int
    replicas: str  # ready/existing


@dataclass(frozen=True)
class ServingHeader:
    state: str
    reason: str
    url: str
    replicas: str
    conditions: list[tuple[str, str, str, str]]  # type, status, reason, message


def header(job: ServingJob) -> ServingHeader:
    state, reason = serving_state(job)
    st = job.status
    conds = [(c.type, str(c.status), c.reason or "", c.message or "") for c in (st.conditions if st else [])]
    ready, existing = (st.ready_replicas, st.replicas) if st else (0, 0)
    return ServingHeader(state, reason, (st.url or "") if st else "",
                         f"{ready} ready of {existing} (desired {desired_replicas(job)})", conds)


def desired_replicas(job: ServingJob) -> int:
    """What the operator last decided when it scales on a server metric, else what the spec asks."""
    scaled = job.status.autoscaling if job.status else None
    return scaled.desired_replicas if scaled is not None else job.spec.desired_replicas


def _source_text(src: ModelSource) -> str:
    if src.training_job_ref is not None:
        return f"TrainingJob {src.training_job_ref.name} ({src.training_job_ref.variant})"
    return src.uri or ""


def _resolved(model: ResolvedModel | None, wanted: ModelSource) -> tuple[str, str, str]:
    if model is None:
        return f"waiting for {_source_text(wanted)}", "", (wanted.training_job_ref.name if wanted.training_job_ref
                                                          else "")
    return model.uri, model.digest or "", model.training_job or ""


def tracks(job: ServingJob) -> list[TrackRow]:
    """Main and canary: model, lineage, share of traffic, replicas."""
    st, canary = job.status, job.spec.canary
    percent = canary.traffic_percent if canary else 0
    uri, digest, tj = _resolved(st.model if st else None, job.spec.model)
    rows = [TrackRow(MAIN, uri, digest, tj, 100 - percent,
                     f"{st.ready_replicas}/{st.replicas}" if st else "0/0")]
    if canary is not None:
        cs = st.canary if st else None
        uri, digest, tj = _resolved(cs.model if cs else None, canary.model)
        rows.append(TrackRow(CANARY, uri, digest, tj, percent, f"{cs.ready_replicas}/{cs.replicas}" if cs else "0/0"))
    return rows


def lineage_links(job: ServingJob) -> list[tuple[str, tuple[str, str]]]:
    """(label, (namespace, name)) of each TrainingJob whose artifact a track serves: the training page's
    query (`page_link` spells it as a URL)."""
    ns = job.metadata.namespace or ""
    return [(f"{t.track}: TrainingJob {t.training_job}", (ns, t.training_job)) for t in tracks(job) if t.training_job]


def server_pods(pods: list[PodInfo], track: str | None = None) -> list[PodInfo]:
    """Ready servers (of one track, or all), the ones worth scraping or asking."""
    return [p for p in pods if p.ready and p.ip and (track is None or p.labels.get(LABEL_TRACK, MAIN) == track)]


def pod_rows(pods: list[PodInfo]) -> list[dict[str, object]]:
    return [{"pod": p.name, "track": p.labels.get(LABEL_TRACK, MAIN), "phase": p.phase, "ready": p.ready,
             "node": p.node, "ip": p.ip, "restarts": p.restarts,
             "reason": ", ".join(c.reason or c.last_reason for c in p.containers if c.reason or c.last_reason)}
            for p in sorted(pods, key=lambda p: (p.labels.get(LABEL_TRACK, MAIN), p.name))]


def history_rows(points: list[Point]) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Long-form rows (time, series, value) for two charts: requests and errors per second, and p50 and p99
    latency in ms (intervals without requests have no latency)."""
    rates: list[dict[str, object]] = []
    latency: list[dict[str, object]] = []
    for p in points:
        t = datetime.fromtimestamp(p.time, UTC)
        rates += [{"time": t, "series": "requests/s", "value": p.requests_per_second},
                  {"time": t, "series": "5xx/s", "value": p.errors_per_second}]
        latency += [{"time": t, "series": name, "value": v} for name, v in (("p50", p.p50_ms), ("p99", p.p99_ms))
                    if v is not None]
    return rates, latency


@dataclass(frozen=True)
class Tile:
    label: str
    value: str
    help: str


def _rate(v: float | None) -> str:
    return "measuring..." if v is None else f"{v:,.1f}/s" if v < 1e6 else f"{v:.3g}/s"


def _ms(v: float | None, none: str) -> str:
    return none if v is None else f"{v:,.1f} ms" if v < 1e6 else f"{v:.3g} ms"


def _percent(v: float | None, none: str) -> str:
    return none if v is None else f"{100 * v:.1f} %"


def token_tiles(t: TokenView) -> list[Tile]:
    """A language model's load now, in eight tiles (two rows of four)."""
    quiet = "no tokens yet" if t.window == "since start" else f"none in the {t.window}"
    kv = _percent(t.kv_usage_mean, "not reported")
    if t.kv_usage_max is not None and t.replicas > 1:
        kv += f" (max {_percent(t.kv_usage_max, '')})"
    return [
        Tile("Generated tokens/s", _rate(t.generation_per_second), f"{t.generation_tokens:,} generated since start"),
        Tile("Prompt tokens/s", _rate(t.prompt_per_second), "prompt tokens admitted per second"),
        Tile("TTFT p50", _ms(t.ttft_p50_ms, quiet), f"time to first token, {t.window}"),
        Tile("TTFT p99", _ms(t.ttft_p99_ms, quiet), f"time to first token, {t.window}"),
        Tile("ITL p50", _ms(t.itl_p50_ms, quiet), f"inter-token latency, {t.window}"),
        Tile("KV cache", kv, "share of KV-cache blocks in use, mean over the replicas"),
        Tile("Running / waiting", f"{t.running:,} / {t.waiting:,}", "requests in the running batch / in the queue"),
        Tile("Prefix-cache hits", _percent(t.prefix_hit_rate, "no lookups yet"),
             "share of looked-up prompt tokens found in the prefix cache"),
    ]


TOKEN_CHARTS = (("Tokens per second", "per second"), ("Token latency", "ms"), ("Cache", "%"),
                ("Requests", "requests"))


def token_history_rows(points: list[Point]) -> dict[str, list[dict[str, object]]]:
    """Long-form rows (time, series, value) per chart of TOKEN_CHARTS: generated and prompt tokens/s; TTFT
    p50 and p99 and inter-token p50 in ms; KV-cache usage (mean and max over replicas) and prefix-cache hits
    in %; requests running and waiting. A series has no row where its interval measured nothing."""
    charts: dict[str, list[dict[str, object]]] = {title: [] for title, _ in TOKEN_CHARTS}
    for p in points:
        k = p.tokens
        if k is None:
            continue
        t = datetime.fromtimestamp(p.time, UTC)
        values: dict[str, tuple[tuple[str, float | None], ...]] = {
            "Tokens per second": (("generated", k.generation_per_second), ("prompt", k.prompt_per_second)),
            "Token latency": (("TTFT p50", k.ttft_p50_ms), ("TTFT p99", k.ttft_p99_ms), ("ITL p50", k.itl_p50_ms)),
            "Cache": (("KV usage (mean)", None if k.kv_usage_mean is None else 100 * k.kv_usage_mean),
                      ("KV usage (max)", None if k.kv_usage_max is None else 100 * k.kv_usage_max),
                      ("prefix hits", None if k.prefix_hit_rate is None else 100 * k.prefix_hit_rate)),
            "Requests": (("running", float(k.running)), ("waiting", float(k.waiting))),
        }
        for title, series in values.items():
            charts[title] += [{"time": t, "series": name, "value": v} for name, v in series if v is not None]
    return charts
