"""Streamlit glue shared by the pages: the session's `Source` (one per process, or one a test put
into the session state), seen as the signed-in user may see it when users must sign in (the user's
token is the one the HTTP edge checked on this session's websocket: kubeforge_dashboard.gate), the
namespace selector, the selected job from the query string, and errors shown as messages instead of
exceptions.

Everything a tenant can write (names, messages, reasons, report fields, args) reaches the page as
plain text: in code blocks, tables, or through `plain()` where an element renders Markdown (titles,
captions, alerts, badges, link labels). No tenant string is ever Markdown: it could load images
from anywhere, show links, or draw giant headings."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import streamlit as st
from kubeforge_api.servingjob import ServingJob
from kubeforge_api.trainingjob import TrainingJob

from .auth import AuthorizedSource, Identity, Reviewer, token_of
from .history import ServingHistory
from .settings import DashboardSettings, make_reviewer, make_source
from .source import ErrorKind, Listing, Source, SourceError

SOURCE_KEY = "kubeforge_source"  # a test may put its own Source here before the first run
HISTORY_KEY = "kubeforge_history"  # and its own ServingHistory here
REVIEWER_KEY, IDENTITY_KEY = "kubeforge_reviewer", "kubeforge_identity"  # and who signed in, checked how
SETTINGS_KEY = "kubeforge_settings"
NAMESPACES_KEY = "kubeforge_namespaces"
T = TypeVar("T")
# Every ASCII punctuation character: CommonMark (and the GFM, directive, math and autolink extensions
# Streamlit's renderer adds) treats a backslash-escaped one as a literal character.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def plain(text: object) -> str:
    """Markdown that shows `text` literally, on one line: whitespace runs (newlines included) become
    one space and every ASCII punctuation character is escaped, so no link, image, heading, list,
    emphasis, HTML, directive (`:red[...]`), math or autolink (`www.x.org`, `http://...`) can form."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", " ".join(str(text).split()))


@st.cache_resource(show_spinner=False)
def _process_source() -> Source:
    return make_source(settings())


@st.cache_resource(show_spinner=False)
def _process_history() -> ServingHistory:
    return ServingHistory()


def serving_history() -> ServingHistory:
    """The ServingJobs' throughput and latency over time, shared by every session of the process."""
    found = st.session_state.get(HISTORY_KEY)
    return found if isinstance(found, ServingHistory) else _process_history()


def settings() -> DashboardSettings:
    found = st.session_state.get(SETTINGS_KEY)
    return found if isinstance(found, DashboardSettings) else DashboardSettings.from_env()


def _signed_in(reviewer: Reviewer) -> Identity | None:
    """The user whose token this session's websocket carried (None after saying why there is none)."""
    found = st.session_state.get(IDENTITY_KEY)
    if isinstance(found, Identity):
        return found
    token = token_of(st.context.headers.get("Authorization"))
    try:
        who = reviewer.authenticate(token) if token else None
    except SourceError as e:
        show_error(e)
        return None
    if who is None:
        st.error("Not signed in: reload the page and sign in with any user name and a Kubernetes bearer token as "
                 "the password.", icon="🔒")
    return who


def source() -> Source | None:
    """The session's source as the signed-in user may see it, or None after showing why there is none."""
    found = st.session_state.get(SOURCE_KEY)
    base: Source | None = found
    if base is None:
        try:
            base = _process_source()
        except SourceError as e:
            show_error(e)
            return None
    reviewer = st.session_state.get(REVIEWER_KEY)
    if reviewer is None:
        if not settings().sign_in():
            return base
        reviewer = make_reviewer(settings())
    who = _signed_in(reviewer)
    if who is None:
        return None
    st.sidebar.caption(f"Signed in as {plain(who.username)}")
    return AuthorizedSource(base, reviewer, who)


HINTS = {
    ErrorKind.UNREACHABLE: "Check the kubeconfig (KUBECONFIG) and that the API server is up; "
                           "without a cluster, `make dashboard` shows the local runs.",
    ErrorKind.FORBIDDEN: "RBAC decides what the dashboard shows (yours when you signed in, else its "
                         "ServiceAccount's); pick another namespace or ask for the right.",
    ErrorKind.NOT_FOUND: "It may have been deleted; go back to the overview.",
    ErrorKind.UNREADABLE: "The object does not match this dashboard's API version.",
}


def show_error(e: SourceError) -> None:
    st.error(f"{plain(e.message)}\n\n{HINTS.get(e.kind, '')}", icon="🚫" if e.kind == ErrorKind.FORBIDDEN else "⚠️")


def read(fn: Callable[[], T]) -> T | None:
    """`fn()`, or None after showing its SourceError."""
    try:
        return fn()
    except SourceError as e:
        show_error(e)
        return None


def namespace_selector(src: Source) -> tuple[str, ...]:
    """The sidebar's namespace choice (empty: all namespaces), kept across pages."""
    st.sidebar.caption(f"Source: {plain(src.description)}")
    try:
        options = src.namespaces()
    except SourceError as e:
        st.sidebar.warning(f"Cannot list namespaces ({plain(e.message)}); type them instead.")
        typed = st.sidebar.text_input("Namespaces (comma-separated)", key="kubeforge_ns_text")
        return tuple(n.strip() for n in typed.split(",") if n.strip())
    if NAMESPACES_KEY not in st.session_state:
        st.session_state[NAMESPACES_KEY] = [n for n in settings().namespaces if n in options]
    chosen = st.sidebar.multiselect("Namespaces", options, key=NAMESPACES_KEY, placeholder="all namespaces")
    return tuple(chosen)


def selected_job() -> tuple[str, str] | None:
    """(namespace, name) from the query string (`?ns=...&name=...`)."""
    ns, name = st.query_params.get("ns"), st.query_params.get("name")
    return (ns, name) if ns and name else None


def pick_job(kind: str, listing: Callable[[], Listing[TrainingJob] | Listing[ServingJob]]) -> tuple[str, str] | None:
    """(namespace, name) of the job a page shows: from the query string, else chosen from `listing()`."""
    chosen = selected_job()
    if chosen:
        return chosen
    jobs = read(listing)
    if jobs is None:
        return None
    if not jobs.items:
        st.info(f"No {kind}s to show yet.")
        return None
    names = [f"{j.metadata.namespace}/{j.metadata.name}" for j in jobs.items]
    ns, _, name = (st.selectbox(kind, names) or names[0]).partition("/")
    return ns, name
