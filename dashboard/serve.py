"""The dashboard's server: `streamlit run dashboard/serve.py` (what `make dashboard` and the image run).

Streamlit serves the app of `streamlit_app.py` as usual, behind Kubeforge's HTTP edge
(kubeforge_dashboard.gate): middleware that sees every request, the page, its code and its
websocket, before Streamlit does. `streamlit run dashboard/streamlit_app.py` still serves the pages,
without that edge."""

from __future__ import annotations

import streamlit as st
from kubeforge_dashboard.gate import middleware

app = st.App("streamlit_app.py", middleware=middleware())
