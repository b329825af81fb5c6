"""Who may see what, through the pages (AppTest): when users must sign in, a user sees only what
Kubernetes RBAC lets that user read (SubjectAccessReview per namespace), never what the dashboard's
own ServiceAccount could; without a valid token the pages show nothing. The reviewer here stands in
for the API server; tests/component/test_dashboard_edge.py checks the HTTP edge and the real reviews'
wire format, tests/cluster/test_dashboard.py the whole of it on a real control plane."""

from __future__ import annotations

import dashboard_world as w
from kubeforge_dashboard.ui import IDENTITY_KEY, REVIEWER_KEY
from streamlit.testing.v1 import AppTest
from test_dashboard_pages import render, seen


def as_user(token: str | None, page: str = "overview", **query: str) -> tuple[AppTest, w.MemoryReviewer]:
    src, reviewer = w.tenants()
    who = reviewer.authenticate(token) if token else None
    session = {REVIEWER_KEY: reviewer, **({IDENTITY_KEY: who} if who else {})}
    return render(src, page, session=session, **query), reviewer


def names(at: AppTest) -> set[str]:
    return set(at.dataframe[0].value["Name"]) if at.dataframe else set()


def test_a_user_sees_only_the_namespaces_rbac_lets_them_read() -> None:
    at, _ = as_user("alice-token")
    assert "b-secret" not in names(at) and "digits-running" in names(at)
    assert at.multiselect(key="kubeforge_namespaces").options == ["ml"]  # team-b is not even offered
    assert "Signed in as alice" in seen(at)
    admin, _ = as_user("admin-token")
    assert {"b-secret", "digits-running"} <= names(admin)


def test_another_namespace_is_forbidden_by_name_too() -> None:
    at, reviewer = as_user("alice-token", "training", ns="team-b", name="b-secret")
    text = seen(at)
    assert "forbidden: you (alice) may not get trainingjobs in namespace team-b" in text
    assert "b-team-key" not in text and ("alice", "get trainingjobs in namespace team-b") in reviewer.asked
    logs, _ = as_user("alice-token", "training", ns="ml", name="digits-running")
    assert "step 120 loss 0.4213" in seen(logs)  # her own namespace: logs and all
    cluster, _ = as_user("alice-token", "cluster")
    assert "forbidden: you (alice) may not list nodes" in seen(cluster)


def test_a_user_without_rights_sees_no_job() -> None:
    at, _ = as_user("mallory-token")
    assert names(at) == set() and "No TrainingJobs or ServingJobs" in seen(at)
    serving, _ = as_user("mallory-token", "serving", ns="ml", name="digits-serving")
    assert "forbidden: you (mallory) may not get servingjobs in namespace ml" in seen(serving)


def test_without_a_valid_token_the_pages_show_nothing() -> None:
    for token in (None, "stolen-looking-token"):
        at, _ = as_user(token)
        text = seen(at)
        assert "Not signed in" in text and not at.dataframe and "digits" not in text
        page, _ = as_user(token, "training", ns="team-b", name="b-secret")
        assert "b-secret" not in seen(page) and "Not signed in" in seen(page)

