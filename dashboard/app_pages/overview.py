"""Overview: every TrainingJob and ServingJob of the chosen namespaces, refreshed on a timer."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st
from kubeforge_dashboard import ui
from kubeforge_dashboard.source import Source, SourceError
from kubeforge_dashboard.views import overview

COLUMNS = {"badge": "State", "kind": "Kind", "namespace": "Namespace", "name": "Name", "progress": "Progress",
           "eta": "ETA", "size": "Size", "restarts": "Restarts", "age": "Age", "reason": "Reason", "link": "Open"}


def table(src: Source, namespaces: tuple[str, ...], text: str, states: list[str], kinds: list[str], key: str,
          descending: bool) -> None:
    try:
        tjs, sjs = src.training_jobs(namespaces), src.serving_jobs(namespaces)
    except SourceError as e:
        ui.show_error(e)
        return
    for problem in [*tjs.problems, *sjs.problems]:
        st.warning(ui.plain(f"Skipped an unreadable object: {problem}"))
    all_rows = overview.rows(tjs.items, sjs.items, datetime.now(UTC))
    where = ", ".join(namespaces) or "any namespace"
    if not all_rows:
        st.info(f"No TrainingJobs or ServingJobs in {ui.plain(where)} yet. Create one with "
                "`kubectl apply -f manifests/samples/trainingjob-digits-ddp.yaml` (or `kubeforge run` it locally).")
        return
    cols = st.columns(max(len(overview.counts(all_rows)), 1))
    for col, (state, n) in zip(cols, overview.counts(all_rows).items(), strict=False):
        col.metric(state, n)
    shown = overview.sort(overview.filtered(all_rows, text, frozenset(states), frozenset(kinds)), key, descending)
    st.caption(ui.plain(f"{len(shown)} of {len(all_rows)} jobs in {where}, as of {datetime.now(UTC):%H:%M:%S} UTC"))
    frame = pd.DataFrame([{c: getattr(r, c) for c in COLUMNS} for r in shown], columns=list(COLUMNS))
    st.dataframe(frame.rename(columns=COLUMNS), hide_index=True, width="stretch", column_config={
        "Progress": st.column_config.ProgressColumn("Progress", min_value=0.0, max_value=1.0, format="percent"),
        "Open": st.column_config.LinkColumn("Open", display_text="details"),
    })


def main() -> None:
    st.title("Kubeforge jobs")
    src = ui.source()
    if src is None:
        return
    namespaces = ui.namespace_selector(src)
    c1, c2, c3, c4, c5 = st.columns([3, 3, 2, 2, 1])
    text = c1.text_input("Filter", placeholder="name or reason contains...", key="ov_filter")
    states = c2.multiselect("State", ["Pending", "Created", "Running", "Restarting", "Succeeded", "Failed",
                                      "Suspended", "Ready", "NotReady", "Degraded", "Interrupted"], key="ov_states")
    kinds = c3.multiselect("Kind", [overview.TRAINING, overview.SERVING], key="ov_kinds")
    key = c4.selectbox("Sort by", overview.SORT_KEYS, key="ov_sort")
    descending = c5.toggle("Reverse", key="ov_reverse")
    st.fragment(table, run_every=ui.settings().refresh_seconds)(src, namespaces, text, states, kinds, key or "age",
                                                                 descending)


main()
