"""Serving job: readiness, replicas per track, model lineage, canary split, throughput and latency
from the servers' /metrics (now and over time; for a language model its token rates, time to first
token, inter-token latency, KV-cache usage, queue and prefix-cache hits), and a form that sends an
Open Inference Protocol request. Everything but the form refreshes on a timer: a ServingJob is live
until it is deleted."""

from __future__ import annotations

import time
from dataclasses import asdict

import altair as alt
import pandas as pd
import streamlit as st
from kubeforge_api.constants import LABEL_SERVING
from kubeforge_api.servingjob import ServingJob
from kubeforge_dashboard import metrics, servers, ui
from kubeforge_dashboard.format import color
from kubeforge_dashboard.history import Point
from kubeforge_dashboard.source import PodInfo, Source
from kubeforge_dashboard.ui import plain
from kubeforge_dashboard.views import serving
from streamlit.delta_generator import DeltaGenerator

TRAINING_PAGE, OVERVIEW_PAGE = "app_pages/training_job.py", "app_pages/overview.py"



def header(job: ServingJob) -> None:
    h = serving.header(job)
    st.title(f"ServingJob {plain(job.metadata.name)}")
    st.badge(plain(h.state), color=color(h.state))  # type: ignore[arg-type]
    st.caption(plain(f"namespace {job.metadata.namespace} · replicas {h.replicas}"
                     + (f" · {h.url}" if h.url else "")))
    if h.reason:
        st.warning(plain(h.reason))
    if h.conditions:
        st.dataframe(pd.DataFrame(h.conditions, columns=["condition", "status", "reason", "message"]),
                     hide_index=True, width="stretch")


def tracks(job: ServingJob) -> None:
    st.subheader("Model and traffic")
    st.dataframe(pd.DataFrame([asdict(t) for t in serving.tracks(job)]), hide_index=True, width="stretch")
    for label, (ns, name) in serving.lineage_links(job):
        st.page_link(TRAINING_PAGE, label=plain(f"Lineage: {label}"), query_params={"ns": ns, "name": name})


def scrape(ready: list[PodInfo]) -> dict[str, metrics.Scrape]:
    """Each ready server's metrics by pod, saying (in our words) which could not be read."""
    scrapes: dict[str, metrics.Scrape] = {}
    now = time.time()
    for pod, result in servers.scrape_all(ready):
        if isinstance(result, servers.ServerError):
            st.warning(plain(f"Metrics of {pod.name} unreadable: {result.message}"))
            continue
        try:
            scrapes[pod.name] = metrics.parse(result, now)
        except metrics.MetricsError as e:  # our words, never the text's
            st.warning(plain(f"Metrics of {pod.name} unreadable: {e}"))
    return scrapes


def over_time(points: list[Point]) -> None:
    if len(points) < 2:
        st.caption(f"Throughput and latency over time fill in as the page refreshes "
                   f"(every {ui.settings().refresh_seconds:g} s).")
        return
    rates, latency_ms = serving.history_rows(points)
    left, right = st.columns(2)
    for col, rows, title, unit in ((left, rates, "Throughput", "per second"), (right, latency_ms, "Latency", "ms")):
        if not rows:
            col.caption(f"{title}: no requests in the last {len(points)} intervals.")
            continue
        chart(col, rows, title, unit, len(points))


def chart(col: DeltaGenerator, rows: list[dict[str, object]], title: str, unit: str, points: int) -> None:
    frame = pd.DataFrame(rows)
    line = alt.Chart(frame, title=title).mark_line(point=points < 30).encode(
        x=alt.X("time:T", title=None), y=alt.Y("value:Q", title=unit), color=alt.Color("series:N", title=None))
    col.altair_chart(line, width="stretch")


def tokens(view: metrics.TokenView, points: list[Point]) -> None:
    """A language model's panel: its load now in tiles, then over time."""
    st.subheader("Language model")
    tiles = serving.token_tiles(view)
    for row in (tiles[:4], tiles[4:]):
        for col, tile in zip(st.columns(4), row, strict=True):
            col.metric(tile.label, tile.value, help=tile.help)
    st.caption(f"Latency percentiles {view.window}, rates over the last interval, across {view.replicas} "
               f"server{'s' if view.replicas != 1 else ''}.")
    if sum(p.tokens is not None for p in points) < 2:
        st.caption(f"Token rates, latency and cache use over time fill in as the page refreshes "
                   f"(every {ui.settings().refresh_seconds:g} s).")
        return
    rows = serving.token_history_rows(points)
    for pair in (serving.TOKEN_CHARTS[:2], serving.TOKEN_CHARTS[2:]):
        for col, (title, unit) in zip(st.columns(2), pair, strict=True):
            if rows[title]:
                chart(col, rows[title], title, unit, len(points))
            else:
                col.caption(f"{title}: nothing measured in the last {len(points)} intervals.")


def latency(key: str, pods: list[PodInfo]) -> None:
    ready = serving.server_pods(pods)
    if not ready:
        st.info("No ready server to read metrics from.")
        return
    scrapes = scrape(ready)
    if not scrapes:
        return
    view, points = ui.serving_history().add(key, scrapes)
    if view.tokens is not None:
        tokens(view.tokens, points)
        if not view.requests:  # a language model answered no Open Inference Protocol request: no empty tiles
            return
        st.subheader("Open Inference Protocol")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Requests", view.requests, help=f"{view.errors} answered with 5xx")
    c2.metric("Rate", "measuring..." if view.rate_per_second is None else f"{view.rate_per_second:.2f}/s")
    c3.metric("p50 latency", "no requests yet" if view.p50_ms is None else f"{view.p50_ms:.1f} ms")
    c4.metric("p99 latency", "no requests yet" if view.p99_ms is None else f"{view.p99_ms:.1f} ms")
    st.caption(f"Percentiles {view.window}, over {len(scrapes)} of {len(ready)} ready servers.")
    over_time(points)


def try_it(job: ServingJob, pods: list[PodInfo]) -> None:
    st.subheader("Try it")
    names = [t.track for t in serving.tracks(job)]
    track = st.radio("Track", names, horizontal=True) if len(names) > 1 else serving.MAIN
    ready = serving.server_pods(pods, track)
    if not ready:
        st.info(f"No ready {track} server to ask.")
        return
    model = job.metadata.name
    meta_key = f"kubeforge_meta_{job.metadata.namespace}_{model}_{track}"
    if meta_key not in st.session_state:
        try:
            st.session_state[meta_key] = servers.metadata(ready[0], model)
        except servers.ServerError as e:
            st.session_state[meta_key] = None
            st.caption(plain(f"Model metadata unavailable: {e.message}"))
    meta = st.session_state[meta_key]
    with st.form("infer"):
        text = st.text_area("Input rows (one per line, numbers separated by commas)", servers.default_input(meta))
        sent = st.form_submit_button("Send inference request")
    if not sent:
        return
    try:
        response = servers.infer(ready[0], model, servers.request_for(servers.parse_rows(text), meta))
    except (ValueError, servers.ServerError) as e:
        st.error(plain(f"Request failed: {getattr(e, 'message', e)}"))
        return
    st.success(plain(f"Answered by {ready[0].name} (model {response.model_name})"))
    rows = servers.answer_rows(response)
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    with st.expander("Response JSON"):
        st.json(response.model_dump(exclude_none=True))


def live(src: Source, ns: str, name: str) -> tuple[ServingJob, list[PodInfo]] | None:
    """Everything that changes while the job serves: status, tracks, servers, throughput and latency."""
    job = ui.read(lambda: src.serving_job(ns, name))
    if job is None:
        return None
    header(job)
    tracks(job)
    pods = ui.read(lambda: src.pods(ns, {LABEL_SERVING: name})) or []
    st.subheader("Servers")
    if pods:
        st.dataframe(pd.DataFrame(serving.pod_rows(pods)), hide_index=True, width="stretch")
    st.subheader("Traffic and latency")
    latency(f"{ns}/{name}", pods)
    return job, pods


def main() -> None:
    src = ui.source()
    if src is None:
        return
    namespaces = ui.namespace_selector(src)
    picked = ui.pick_job("ServingJob", lambda: src.serving_jobs(namespaces))
    if picked is None:
        return
    every = ui.settings().refresh_seconds
    shown = st.fragment(live, run_every=every)(src, *picked)
    if shown is None:
        return
    st.caption(f"Refreshes every {every:g} s.")
    try_it(*shown)
    st.page_link(OVERVIEW_PAGE, label="Back to the overview")


main()
