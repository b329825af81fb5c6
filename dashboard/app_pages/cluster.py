"""Cluster: nodes with CPU, memory and GPU capacity, and what Kubeforge's pods request of them."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import streamlit as st
from kubeforge_api.constants import LABEL_MANAGED_BY, MANAGED_BY
from kubeforge_dashboard import ui
from kubeforge_dashboard.format import size
from kubeforge_dashboard.views import cluster


def main() -> None:
    st.title("Cluster")
    src = ui.source()
    if src is None:
        return
    st.sidebar.caption(f"Source: {src.description}")
    nodes = ui.read(src.nodes)
    if nodes is None:
        return
    if not nodes:
        st.info("The cluster has no nodes.")
        return
    pods = ui.read(lambda: src.pods("", {LABEL_MANAGED_BY: MANAGED_BY})) or []
    total, used = cluster.totals(nodes, pods)
    c1, c2, c3 = st.columns(3)
    c1.metric("CPU requested by Kubeforge", f"{used.cpu_m / 1000:g} of {total.cpu_m / 1000:g} cores")
    c2.metric("Memory requested by Kubeforge", f"{size(used.memory)} of {size(total.memory)}")
    c3.metric("GPUs requested by Kubeforge", f"{used.gpus} of {total.gpus}")
    frame = pd.DataFrame([asdict(r) for r in cluster.node_rows(nodes, pods)])
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        key: st.column_config.ProgressColumn(label, min_value=0.0, max_value=1.0, format="percent")
        for key, label in (("cpu_used", "CPU used"), ("memory_used", "memory used"), ("gpu_used", "GPUs used"))})
    st.subheader("By job")
    jobs = cluster.job_rows(pods)
    if jobs:
        st.dataframe(pd.DataFrame(jobs), hide_index=True, width="stretch")
    else:
        st.caption("No Kubeforge pod holds resources right now.")


main()
