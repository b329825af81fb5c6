"""Kubeforge dashboard entry point: `streamlit run dashboard/streamlit_app.py`.

A multipage app (`st.navigation`): the overview of every job, one page per training job and per
serving job (selected with `?ns=...&name=...`), and the cluster's nodes. Configuration comes from
the environment (kubeforge_dashboard.settings). `serve.py` runs it behind the dashboard's HTTP edge."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Kubeforge", page_icon="⚙️", layout="wide")
pages = [
    st.Page("app_pages/overview.py", title="Overview", icon="📋", url_path="overview", default=True),
    st.Page("app_pages/training_job.py", title="Training job", icon="🏋️", url_path="training"),
    st.Page("app_pages/serving_job.py", title="Serving job", icon="🚀", url_path="serving"),
    st.Page("app_pages/cluster.py", title="Cluster", icon="🖥️", url_path="cluster"),
]
st.navigation(pages).run()
