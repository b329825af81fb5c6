"""Cluster: nodes with CPU, memory and GPU capacity, what Kubeforge's pods request of them and, from
the resource metrics API when the cluster serves it, what is in use."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import streamlit as st
from kubeforge_api.constants import LABEL_MANAGED_BY, MANAGED_BY
from kubeforge_dashboard import ui
from kubeforge_dashboard.format import size
from kubeforge_dashboard.source import NodeInfo, PodInfo, Usage
from kubeforge_dashboard.views import cluster

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


def main() -> None:
    st.title("Cluster")
    src = ui.source()
    if src is None:
        return
    st.sidebar.caption(f"Source: {ui.plain(src.description)}")
    nodes = ui.read(src.nodes)
    if nodes is None:
        return
    if not nodes:
        st.info("The cluster has no nodes.")
        return
    selector = {LABEL_MANAGED_BY: MANAGED_BY}
    pods = ui.read(lambda: src.pods("", selector)) or []
    usage = ui.read(lambda: src.usage(selector))
    summary(nodes, usage, pods)
    frame = pd.DataFrame([asdict(r) for r in cluster.node_rows(nodes, pods, usage)])
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        key: st.column_config.ProgressColumn(label, min_value=0.0, max_value=1.0, format="percent")
        for key, label in SHARES.items()})
    st.subheader("By job")
    jobs = cluster.job_rows(pods, usage)
    if jobs:
        st.dataframe(pd.DataFrame(jobs), hide_index=True, width="stretch")
    else:
        st.caption("No Kubeforge pod holds resources right now.")


main()
