"""Cluster: each node's Ready condition (since when), taints, capacity and allocatable, and which jobs'
pods run on it; CPU, memory and GPUs Kubeforge's pods request of the nodes and, from the resource
metrics API when the cluster serves it, what is in use; Kueue's queues when Kueue is installed."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

import pandas as pd
import streamlit as st
from kubeforge_api.constants import LABEL_MANAGED_BY, MANAGED_BY
from kubeforge_dashboard import ui
from kubeforge_dashboard.format import size
from kubeforge_dashboard.source import NodeInfo, PodInfo, Queues, Source, SourceError, Usage
from kubeforge_dashboard.views import cluster
from kubeforge_dashboard.views import nodes as node_view
from kubeforge_dashboard.views import queues as queue_view

MAX_JOBS = 200
SHARES = {"cpu_requested_share": "CPU requested by Kubeforge", "cpu_in_use_share": "CPU in use",
          "memory_requested_share": "memory requested by Kubeforge", "memory_in_use_share": "memory in use",
          "gpus_requested_share": "GPUs requested by Kubeforge"}


def summary(nodes: list[NodeInfo], usage: Usage | None, pods: list[PodInfo]) -> None:
    total, requested = cluster.totals(nodes, pods)
    used = cluster.in_use(nodes, usage)
    c1, c2, c3, c4, c5 = st.columns(5)
    c1.metric("CPU in use", "n/a" if used is None else f"{used.cpu_m / 1000:.2f} of {total.cpu_m / 1000:g} cores",
              help="All pods on the nodes, from the resource metrics API (metrics-server).")
    c2.metric("CPU requested by Kubeforge", f"{requested.cpu_m / 1000:g} of {total.cpu_m / 1000:g} cores")
    c3.metric("Memory in use", "n/a" if used is None else f"{size(used.memory)} of {size(total.memory)}")
    c4.metric("Memory requested by Kubeforge", f"{size(requested.memory)} of {size(total.memory)}")
    c5.metric("GPUs requested by Kubeforge", f"{requested.gpus} of {total.gpus}")
    if used is None:
        st.caption("In use: not measured (the cluster serves no resource metrics API; install metrics-server).")


def left_out(count: int, what: str) -> None:
    if count > 0:
        st.caption(f"{count} more {what} not shown (the table is capped).")


def node_status(nodes: list[NodeInfo], pods: list[PodInfo], now: datetime) -> None:
    down = node_view.not_ready(nodes, now)
    if down:
        st.warning(ui.plain(down), icon="🔴")
    st.subheader("Nodes")
    table = node_view.node_table(nodes, pods, now)
    st.dataframe(pd.DataFrame(table.rows), hide_index=True, width="stretch")
    left_out(table.left_out, "nodes")


def quota_table(found: Queues) -> None:
    table = queue_view.quota_rows(found.cluster_queues)
    if not table.rows:
        return
    st.markdown("**Quota by flavor and resource**")
    st.dataframe(pd.DataFrame(table.rows), hide_index=True, width="stretch", column_config={
        "reserved of quota": st.column_config.ProgressColumn(
            "reserved of quota", min_value=0.0, max_value=1.0, format="percent",
            help="What workloads reserve of the nominal quota (full when borrowing from the cohort)")})
    left_out(table.left_out, "quota rows")


def kueue(src: Source) -> None:
    st.subheader("Queues (Kueue)")
    try:
        found = src.queues()
    except SourceError as e:
        ui.show_error(e)
        return
    if found is None:
        st.info("Kueue is not installed (the cluster serves no kueue.x-k8s.io API).")
        return
    pending, admitted = queue_view.totals(found.cluster_queues)
    st.caption(f"{len(found.cluster_queues)} ClusterQueues ({pending} workloads pending, {admitted} admitted) and "
               f"{len(found.local_queues)} LocalQueues, read as {found.version}.")
    cqs = queue_view.cluster_queue_rows(found.cluster_queues)
    if cqs.rows:
        st.markdown("**ClusterQueues**")
        st.dataframe(pd.DataFrame(cqs.rows), hide_index=True, width="stretch")
        left_out(cqs.left_out, "ClusterQueues")
    quota_table(found)
    lqs = queue_view.local_queue_rows(found.local_queues)
    if lqs.rows:
        st.markdown("**LocalQueues**")
        st.dataframe(pd.DataFrame(lqs.rows), hide_index=True, width="stretch")
        left_out(lqs.left_out, "LocalQueues")


def resources(nodes: list[NodeInfo], pods: list[PodInfo], usage: Usage | None) -> None:
    st.subheader("Resources by node")
    rows = cluster.node_rows(nodes, pods, usage)
    frame = pd.DataFrame([asdict(r) for r in rows[:node_view.MAX_NODES]])
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        key: st.column_config.ProgressColumn(label, min_value=0.0, max_value=1.0, format="percent")
        for key, label in SHARES.items()})
    left_out(len(rows) - len(frame), "nodes")
    st.subheader("By job")
    jobs = cluster.job_rows(pods, usage)
    if jobs:
        st.dataframe(pd.DataFrame(jobs[:MAX_JOBS]), hide_index=True, width="stretch")
        left_out(len(jobs) - MAX_JOBS, "jobs")
    else:
        st.caption("No Kubeforge pod holds resources right now.")


def live(src: Source) -> None:
    """Everything the page shows, read again on every refresh."""
    nodes = ui.read(src.nodes)
    if nodes is None:
        return
    if not nodes:
        st.info("The cluster has no nodes.")
        return
    selector = {LABEL_MANAGED_BY: MANAGED_BY}
    pods = ui.read(lambda: src.pods("", selector)) or []
    usage = ui.read(lambda: src.usage(selector))
    node_status(nodes, pods, datetime.now(UTC))
    summary(nodes, usage, pods)
    resources(nodes, pods, usage)
    kueue(src)


def main() -> None:
    st.title("Cluster")
    src = ui.source()
    if src is None:
        return
    st.sidebar.caption(f"Source: {ui.plain(src.description)}")
    every = ui.settings().refresh_seconds
    st.caption(f"Refreshes every {every:g} s.")
    st.fragment(live, run_every=every)(src)


main()
