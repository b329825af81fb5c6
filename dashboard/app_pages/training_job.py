"""Training job: state, curves, timeline, pods with logs, events, artifact (and a LoRA fine-tune's
adapter), a fine-tune's evaluation before and after, and the compression report,
refreshed on a timer until the job has finished (then read once: nothing changes any more).

Reads per view: the job, its pods, the namespace's events, the ServingJobs (lineage) and the logs
of the one pod chosen (current and, after a crash, previous container): a bounded number,
whatever the job's history length or pod count."""

from __future__ import annotations

from dataclasses import asdict

import altair as alt
import pandas as pd
import streamlit as st
from kubeforge_api.constants import LABEL_JOB
from kubeforge_api.trainingjob import TrainingJob
from kubeforge_dashboard import ui
from kubeforge_dashboard.format import color
from kubeforge_dashboard.source import PodInfo, Source
from kubeforge_dashboard.ui import plain
from kubeforge_dashboard.views import training
from kubeforge_dashboard.views.compression import compression_view

LOG_TAIL = 200



def header(job: TrainingJob) -> None:
    st.title(f"TrainingJob {plain(job.metadata.name)}")
    st_ = job.status
    state = str(st_.state) if st_ and st_.state else "Pending"
    st.badge(plain(state), color=color(state))  # type: ignore[arg-type]
    st.caption(plain(f"namespace {job.metadata.namespace} · restarts {(st_.restart_count or 0) if st_ else 0}"
                     + (f" · reason {st_.reason}" if st_ and st_.reason else "")))
    p = st_.progress if st_ else None
    if p and p.step is not None and p.total_steps:
        st.progress(min(p.step / p.total_steps, 1.0), text=plain(training.progress_line(st_)))
    else:
        st.caption(plain(f"Progress: {training.progress_line(st_)}"))
    failure = training.failure_line(st_)
    if failure:
        (st.error if state == "Failed" else st.warning)(plain(f"Last failure: {failure}"))
        cause = training.failure_message(st_)
        if cause:  # the failing process's own words (its termination message): code, never Markdown
            st.code(cause, language=None)


def charts(job: TrainingJob) -> None:
    st.subheader("Metrics")
    curves = training.curves(job.status)
    if not curves:
        st.info("No metrics history yet: the job has not reported progress.")
        return
    for col, (name, points) in zip(st.columns(len(curves)), curves.items(), strict=False):
        frame = pd.DataFrame([asdict(p) for p in points])
        chart = alt.Chart(frame, title=name).mark_line(point=len(frame) < 30).encode(
            x=alt.X("step:Q", title="step"), y=alt.Y("value:Q", title=name, scale=alt.Scale(zero=False)),
            color=alt.Color("series:N", title=None))
        col.altair_chart(chart, width="stretch")


def logs(src: Source, job: TrainingJob, pods: list[PodInfo]) -> None:
    st.subheader("Logs")
    if not pods:
        st.caption("No pods to read logs from.")
        return
    names = [p.name for p in pods]
    chosen = st.selectbox("Pod", names, key="log_pod") or names[0]
    pod = next(p for p in pods if p.name == chosen)
    ns = job.metadata.namespace or ""
    text = ui.read(lambda: src.logs(ns, pod.name, None, False, LOG_TAIL))
    if text is not None:
        st.code(text or "(empty)", language=None)
    if training.crashed(pod):
        st.markdown(f"**Previous container of {plain(pod.name)}** (before its last restart)")
        prev = ui.read(lambda: src.logs(ns, pod.name, None, True, LOG_TAIL))
        if prev is not None:
            st.code(prev or "(empty)", language=None)


def compression(job: TrainingJob) -> None:
    view = compression_view(job.status.compression if job.status else None)
    if view is None:
        return
    st.subheader("Compression")
    if not view.rows:
        st.info(plain(view.verdict))
        return
    (st.success if view.compressed else st.warning)(plain(view.verdict))
    st.caption(plain(f"metric {view.metric}" + (f" · budget {view.budget}" if view.budget else "")))
    st.dataframe(pd.DataFrame([asdict(r) for r in view.rows]), hide_index=True, width="stretch")
    if view.artifact:
        st.caption("Published artifact")
        st.dataframe(pd.DataFrame(view.artifact, columns=["field", "value"]), hide_index=True)


def details(src: Source, job: TrainingJob) -> None:
    ns, name = job.metadata.namespace or "", job.metadata.name
    header(job)
    charts(job)
    left, right = st.columns(2)
    left.subheader("Spec")
    # dataframes, not st.table: table cells render Markdown, and a command's args are the tenant's
    left.dataframe(pd.DataFrame(training.spec_summary(job), columns=["field", "value"]), hide_index=True)
    right.subheader("Timeline")
    rows = training.timeline(job.status)
    if rows:
        right.dataframe(pd.DataFrame([asdict(r) for r in rows]), hide_index=True)
    else:
        right.caption("No conditions yet.")
    st.subheader("Pods")
    pods = ui.read(lambda: src.pods(ns, {LABEL_JOB: name})) or []
    if pods:
        st.dataframe(pd.DataFrame([asdict(r) for r in training.pod_rows(pods)]), hide_index=True, width="stretch")
    else:
        st.caption("No pods (not created yet, or cleaned up after the job finished).")
    st.subheader("Events")
    events = ui.read(lambda: src.events(ns, frozenset({name, *(p.name for p in pods)})))
    if events:
        st.dataframe(pd.DataFrame(training.event_rows(events)), hide_index=True, width="stretch")
    elif events is not None:
        st.caption("No events.")
    logs(src, job, pods)
    st.subheader("Checkpoint and artifact")
    st.text(f"Last checkpoint: {training.checkpoint_line(job.status)}")
    serving = ui.read(lambda: src.serving_jobs((ns,)))
    art = training.artifact_rows(job, serving.items if serving else [])
    if art:
        st.dataframe(pd.DataFrame(art, columns=["field", "value"]), hide_index=True, width="stretch")
    else:
        st.caption("No artifact yet: it appears when the job has succeeded.")
    evaluation = training.evaluation_rows(job.status)
    if evaluation:
        st.subheader("Evaluation")
        st.dataframe(pd.DataFrame(evaluation, columns=["metric", "before (base model)", "after", "change"]),
                     hide_index=True)
    compression(job)


def live(src: Source, ns: str, name: str, every: float) -> None:
    """The page of a job that has not finished, read again every `every` seconds; once the job has
    finished, the whole page runs once more, without the timer."""
    job = ui.read(lambda: src.training_job(ns, name))
    if job is None:
        return
    if training.finished(job.status):
        st.rerun()
    st.caption(f"Refreshing every {every:g} s while the job runs.")
    details(src, job)


def main() -> None:
    src = ui.source()
    if src is None:
        return
    namespaces = ui.namespace_selector(src)
    picked = ui.pick_job("TrainingJob", lambda: src.training_jobs(namespaces))
    if picked is None:
        return
    job = ui.read(lambda: src.training_job(*picked))
    if job is None:
        return
    if training.finished(job.status):
        details(src, job)
    else:
        every = ui.settings().refresh_seconds
        st.fragment(live, run_every=every)(src, *picked, every)


main()
